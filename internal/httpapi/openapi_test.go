package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/gin-gonic/gin"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
)

const openAPIPath = "../../docs/openapi.yaml"

func loadOpenAPI(t *testing.T) (*openapi3.T, routers.Router) {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile(openAPIPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		t.Fatalf("docs/openapi.yaml is not valid OpenAPI: %v", err)
	}
	doc.Servers = nil // match requests to any host
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return doc, router
}

type apiCall struct {
	name, method, path, body string
	header                   []string
	validRequest             bool // the request itself must satisfy the document
	status                   int
}

// TestOpenAPI: docs/openapi.yaml is valid, lists exactly the handler's routes, and describes the real
// requests and responses of the running handler (openapi3filter), errors included. 404 and 405, which
// no path of the document can carry, are checked against its Error schema.
func TestOpenAPI(t *testing.T) {
	doc, router := loadOpenAPI(t)
	const token = "openapi-token"
	auth := []string{"Authorization", "Bearer " + token}
	f := newFixture(t, mysql.Options{}, Options{Token: token})
	f.apply(f.person("alice", "u1", 1), f.person("u1", "alice", 2), f.group("g1", 1, "u2", "u1", "u2"),
		f.msg(conversation.Message{MessageSeq: 2, FromUID: "", ChannelID: "g1", ChannelType: 2, Subscribers: []string{"u1", "u2"}, Payload: []byte{}}),
		f.group("g2", 1, "u2", "u1", "u2"))
	mutateOK(t, tokenAuth{f.handler, token}, "/conversations/delete", syncReq{"uid": "u1", "channel_id": "g2", "channel_type": 2})

	t.Run("routes match the document", func(t *testing.T) {
		var inDoc, inHandler []string
		for path, item := range doc.Paths.Map() {
			for method := range item.Operations() {
				inDoc = append(inDoc, method+" "+path)
			}
		}
		for _, r := range f.handler.(*gin.Engine).Routes() {
			inHandler = append(inHandler, r.Method+" "+r.Path)
		}
		slices.Sort(inDoc)
		slices.Sort(inHandler)
		if !slices.Equal(inDoc, inHandler) {
			t.Fatalf("document has %v\nhandler has %v", inDoc, inHandler)
		}
	})

	calls := []apiCall{
		{"full sync", "POST", "/conversation/sync", `{"uid":"u1","version":0,"last_msg_seqs":"g1:2:1","msg_count":20}`, auth, true, 200},
		{"sync with nulls and extras", "POST", "/conversation/sync", `{"uid":"u1","version":null,"last_msg_seqs":null,"msg_count":null,"only_unread":null,"exclude_channel_types":null,"include_deleted":null,"limit":null,"larges":[]}`, auth, true, 200},
		{"incremental sync with everything", "POST", "/conversation/sync", `{"uid":"u1","version":1,"msg_count":1,"only_unread":0,"exclude_channel_types":[3,4],"include_deleted":1,"limit":10}`, auth, true, 200},
		{"sync of a user with nothing", "POST", "/conversation/sync", `{"uid":"nobody","msg_count":5}`, auth, true, 200},
		{"sync empty uid", "POST", "/conversation/sync", `{"uid":""}`, auth, false, 400},
		{"sync wrong type", "POST", "/conversation/sync", `{"uid":"u1","msg_count":"5"}`, auth, false, 400},
		{"sync malformed last_msg_seqs", "POST", "/conversation/sync", `{"uid":"u1","last_msg_seqs":"g1"}`, auth, true, 400},
		{"sync without token", "POST", "/conversation/sync", `{"uid":"u1"}`, nil, true, 401},
		{"sync too large", "POST", "/conversation/sync", `{"uid":"u1","x":"` + strings.Repeat("x", maxBodyBytes) + `"}`, auth, true, 413},
		{"setUnread", "POST", "/conversations/setUnread", `{"uid":"u1","channel_id":"g1","channel_type":2,"unread":2,"message_seq":2}`, auth, true, 200},
		{"setUnread without unread", "POST", "/conversations/setUnread", `{"uid":"u1","channel_id":"g1","channel_type":2}`, auth, true, 200},
		{"setUnread negative", "POST", "/conversations/setUnread", `{"uid":"u1","channel_id":"g1","channel_type":2,"unread":-1}`, auth, false, 400},
		{"setUnread wrong token", "POST", "/conversations/setUnread", `{"uid":"u1","channel_id":"g1","channel_type":2}`, []string{"Authorization", "Bearer nope"}, true, 401},
		{"delete", "POST", "/conversations/delete", `{"uid":"u1","channel_id":"alice","channel_type":1}`, auth, true, 200},
		{"delete unknown", "POST", "/conversations/delete", `{"uid":"u1","channel_id":"zz","channel_type":2}`, auth, true, 200},
		{"delete no channel", "POST", "/conversations/delete", `{"uid":"u1"}`, auth, false, 400},
		{"clearUnread", "POST", "/conversations/clearUnread", `{"uid":"u1","channel_id":"g1","channel_type":2}`, auth, true, 200},
		{"clearUnread malformed JSON", "POST", "/conversations/clearUnread", `{"uid"`, auth, false, 400},
		{"healthz", "GET", "/healthz", "", nil, true, 200},
		{"readyz", "GET", "/readyz", "", nil, true, 200},
		{"metrics", "GET", "/metrics", "", nil, true, 200},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) { checkOpenAPI(t, router, f.handler, c) })
	}

	// Server faults come from a store that fails.
	for _, tc := range []struct {
		err    error
		status int
	}{
		{fmt.Errorf("%w: connection refused", conversation.ErrUnavailable), 503},
		{fmt.Errorf("Error 1064: syntax"), 500},
	} {
		h, store := newFake(t, Options{})
		store.err = tc.err
		for _, c := range []apiCall{
			{"sync", "POST", "/conversation/sync", `{"uid":"u1","msg_count":3}`, nil, true, tc.status},
			{"setUnread", "POST", "/conversations/setUnread", `{"uid":"u1","channel_id":"g1","channel_type":2,"unread":0}`, nil, true, tc.status},
			{"delete", "POST", "/conversations/delete", `{"uid":"u1","channel_id":"g1","channel_type":2}`, nil, true, tc.status},
			{"clearUnread", "POST", "/conversations/clearUnread", `{"uid":"u1","channel_id":"g1","channel_type":2}`, nil, true, tc.status},
		} {
			t.Run(fmt.Sprintf("%s %d", c.name, tc.status), func(t *testing.T) { checkOpenAPI(t, router, h, c) })
		}
		if tc.status == 503 {
			t.Run("readyz 503", func(t *testing.T) {
				checkOpenAPI(t, router, h, apiCall{"readyz", "GET", "/readyz", "", nil, true, 503})
			})
		}
	}

	// 404 and 405 are on no path of the document: their bodies must match its Error schema.
	errSchema := doc.Components.Schemas["Error"].Value
	for _, c := range []struct{ method, path string }{{"POST", "/conversation/nope"}, {"GET", "/conversation/sync"}, {"DELETE", "/healthz"}} {
		status, body := do(t, f.handler, c.method, c.path, nil, auth...)
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatalf("%s %s: %v", c.method, c.path, err)
		}
		if err := errSchema.VisitJSON(v); err != nil || (status != 404 && status != 405) {
			t.Fatalf("%s %s: %d %s: %v", c.method, c.path, status, body, err)
		}
	}
}

func checkOpenAPI(t *testing.T, router routers.Router, h http.Handler, c apiCall) {
	t.Helper()
	ctx := context.Background()
	newReq := func() *http.Request {
		req := httptest.NewRequest(c.method, c.path, strings.NewReader(c.body))
		if c.body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		for i := 0; i+1 < len(c.header); i += 2 {
			req.Header.Set(c.header[i], c.header[i+1])
		}
		return req
	}
	req := newReq()
	route, params, err := router.FindRoute(req)
	if err != nil {
		t.Fatalf("the document has no route for %s %s: %v", c.method, c.path, err)
	}
	input := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, IncludeResponseStatus: true}}
	if c.validRequest && len(c.body) < maxBodyBytes {
		if err := openapi3filter.ValidateRequest(ctx, input); err != nil {
			t.Fatalf("the document rejects the request %s: %v", c.body, err)
		}
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, newReq())
	if w.Code != c.status {
		t.Fatalf("status %d, want %d: %s", w.Code, c.status, clip(w.Body.String()))
	}
	input.Request = newReq()
	if err := openapi3filter.ValidateResponse(ctx, &openapi3filter.ResponseValidationInput{
		RequestValidationInput: input,
		Status:                 w.Code,
		Header:                 w.Header(),
		Body:                   io.NopCloser(bytes.NewReader(w.Body.Bytes())),
		Options:                input.Options,
	}); err != nil {
		t.Fatalf("the document rejects the answer %d %s: %v", w.Code, clip(w.Body.String()), err)
	}
}

// tokenAuth adds a bearer token to every request.
type tokenAuth struct {
	h     http.Handler
	token string
}

func (ta tokenAuth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r.Header.Set("Authorization", "Bearer "+ta.token)
	ta.h.ServeHTTP(w, r)
}
