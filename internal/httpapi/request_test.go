package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// checkErrorShape asserts a WuKongIM error answer: JSON {"msg": "...", "status": <the HTTP status>},
// nothing else, with a JSON content type.
func checkErrorShape(t testing.TB, status int, contentType string, body []byte) string {
	t.Helper()
	if !strings.HasPrefix(contentType, "application/json") {
		t.Errorf("content type %q, want application/json", contentType)
	}
	var got map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("error body is not a JSON object: %v: %s", err, body)
	}
	msg, ok := got["msg"].(string)
	if !ok || msg == "" || len(got) != 2 || got["status"] != float64(status) {
		t.Fatalf("error body %s, want exactly {\"msg\":<non-empty string>,\"status\":%d}", body, status)
	}
	return msg
}

type badInput struct {
	name   string
	path   string
	body   string
	status int
	msg    string // a substring the message must hold
}

func badInputs() []badInput {
	const sync, set, del, clr = "/conversation/sync", "/conversations/setUnread", "/conversations/delete", "/conversations/clearUnread"
	long := func(n int) string { return strings.Repeat("x", n) }
	return []badInput{
		{"sync malformed JSON", sync, `{"uid":`, 400, "not valid JSON"},
		{"sync trailing garbage", sync, `{"uid":"u1"} x`, 400, "not valid JSON"},
		{"sync empty body", sync, ``, 400, "JSON object"},
		{"sync whitespace body", sync, " \n", 400, "JSON object"},
		{"sync array body", sync, `[{"uid":"u1"}]`, 400, "JSON object"},
		{"sync string body", sync, `"u1"`, 400, "JSON object"},
		{"sync null body", sync, `null`, 400, "UID cannot be empty"},
		{"sync no uid", sync, `{"version":0}`, 400, "UID cannot be empty"},
		{"sync empty uid", sync, `{"uid":""}`, 400, "UID cannot be empty"},
		{"sync null uid", sync, `{"uid":null,"msg_count":1}`, 400, "UID cannot be empty"},
		{"sync uid over 64 bytes", sync, `{"uid":"` + long(65) + `"}`, 400, "uid is longer than 64 bytes"},
		{"sync uid not UTF-8", sync, `{"uid":"u` + "\xff" + `1"}`, 400, "uid is not valid UTF-8"},
		{"sync uid a lone surrogate", sync, `{"uid":"u\udc001"}`, 400, "uid is not valid UTF-8"},
		{"sync last_msg_seqs not UTF-8", sync, `{"uid":"u1","last_msg_seqs":"g` + "\xc3" + `:2:15"}`, 400, "last_msg_seqs is not valid UTF-8"},
		{"sync uid a number", sync, `{"uid":1}`, 400, "uid must be a string"},
		{"sync version a string", sync, `{"uid":"u1","version":"1"}`, 400, "version must be an integer"},
		{"sync version a fraction", sync, `{"uid":"u1","version":1.5}`, 400, "version must be an integer"},
		{"sync version overflows", sync, `{"uid":"u1","version":1e40}`, 400, "version must be an integer"},
		{"sync version a bool", sync, `{"uid":"u1","version":true}`, 400, "version must be an integer"},
		{"sync msg_count a string", sync, `{"uid":"u1","msg_count":"20"}`, 400, "msg_count must be an integer"},
		{"sync last_msg_seqs a number", sync, `{"uid":"u1","last_msg_seqs":5}`, 400, "last_msg_seqs must be a string"},
		{"sync last_msg_seqs missing seq", sync, `{"uid":"u1","last_msg_seqs":"g1:2:15|u2:1"}`, 400, `last_msg_seqs: malformed entry "u2:1"`},
		{"sync last_msg_seqs bad type", sync, `{"uid":"u1","last_msg_seqs":"g1:0:15"}`, 400, `malformed entry "g1:0:15"`},
		{"sync last_msg_seqs negative seq", sync, `{"uid":"u1","last_msg_seqs":"g1:2:-3"}`, 400, `malformed entry "g1:2:-3"`},
		{"sync last_msg_seqs no channel", sync, `{"uid":"u1","last_msg_seqs":":2:3"}`, 400, `malformed entry ":2:3"`},
		{"sync only_unread 2", sync, `{"uid":"u1","only_unread":2}`, 400, "only_unread must be 0 or 1"},
		{"sync only_unread a bool", sync, `{"uid":"u1","only_unread":true}`, 400, "only_unread must be an integer"},
		{"sync include_deleted -1", sync, `{"uid":"u1","include_deleted":-1}`, 400, "include_deleted must be 0 or 1"},
		{"sync negative limit", sync, `{"uid":"u1","version":5,"limit":-1}`, 400, "limit must be >= 0"},
		{"sync exclude_channel_types not an array", sync, `{"uid":"u1","exclude_channel_types":2}`, 400, "exclude_channel_types must be an array of integers"},
		{"sync exclude_channel_types strings", sync, `{"uid":"u1","exclude_channel_types":["2"]}`, 400, "exclude_channel_types"},
		{"sync exclude_channel_types 0", sync, `{"uid":"u1","exclude_channel_types":[0]}`, 400, "exclude_channel_types: 0 is outside 1..255"},
		{"sync exclude_channel_types 256", sync, `{"uid":"u1","exclude_channel_types":[1,256]}`, 400, "256 is outside 1..255"},

		{"setUnread malformed JSON", set, `{"uid":"u1",`, 400, "not valid JSON"},
		{"setUnread empty uid", set, `{"uid":"","channel_id":"g1","channel_type":2,"unread":0}`, 400, "UID cannot be empty"},
		{"setUnread no channel_id", set, `{"uid":"u1","channel_type":2,"unread":0}`, 400, "channel_id or channel_type cannot be empty"},
		{"setUnread no channel_type", set, `{"uid":"u1","channel_id":"g1","unread":0}`, 400, "channel_id or channel_type cannot be empty"},
		{"setUnread channel_type 256", set, `{"uid":"u1","channel_id":"g1","channel_type":256}`, 400, "channel_type must be 1..255"},
		{"setUnread channel_type -1", set, `{"uid":"u1","channel_id":"g1","channel_type":-1}`, 400, "channel_type must be 1..255"},
		{"setUnread channel_type a string", set, `{"uid":"u1","channel_id":"g1","channel_type":"2"}`, 400, "channel_type must be an integer"},
		{"setUnread negative unread", set, `{"uid":"u1","channel_id":"g1","channel_type":2,"unread":-1}`, 400, "unread cannot be negative"},
		{"setUnread unread a string", set, `{"uid":"u1","channel_id":"g1","channel_type":2,"unread":"1"}`, 400, "unread must be an integer"},
		{"setUnread channel_id over 128 bytes", set, `{"uid":"u1","channel_id":"` + long(129) + `","channel_type":2}`, 400, "channel_id is longer than 128 bytes"},
		{"setUnread person channel_id over 64 bytes", set, `{"uid":"u1","channel_id":"` + long(65) + `","channel_type":1}`, 400, "channel_id is longer than 64 bytes"},
		{"setUnread channel_id not UTF-8", set, `{"uid":"u1","channel_id":"g` + "\xe2\x82" + `","channel_type":2}`, 400, "channel_id is not valid UTF-8"},
		{"delete uid a lone high surrogate", del, `{"uid":"\ud800","channel_id":"g1","channel_type":2}`, 400, "uid is not valid UTF-8"},
		{"setUnread uid over 64 bytes", set, `{"uid":"` + long(65) + `","channel_id":"g1","channel_type":2}`, 400, "uid is longer than 64 bytes"},
		{"delete empty body", del, ``, 400, "JSON object"},
		{"delete no uid", del, `{"channel_id":"g1","channel_type":2}`, 400, "UID cannot be empty"},
		{"delete no channel", del, `{"uid":"u1"}`, 400, "channel_id or channel_type cannot be empty"},
		{"delete channel_id a number", del, `{"uid":"u1","channel_id":7,"channel_type":2}`, 400, "channel_id must be a string"},
		{"clearUnread no channel", clr, `{"uid":"u1","channel_id":""}`, 400, "channel_id or channel_type cannot be empty"},
		{"clearUnread array body", clr, `[]`, 400, "JSON object"},

		{"sync body over 1 MiB", sync, `{"uid":"u1","x":"` + long(maxBodyBytes) + `"}`, 413, "over 1048576 bytes"},
		{"setUnread body over 1 MiB", set, `{"uid":"u1","x":"` + long(maxBodyBytes) + `"}`, 413, "over 1048576 bytes"},
		{"unknown path", "/conversation/nope", `{}`, 404, "not found"},
		{"trailing slash is another path", sync + "/", `{"uid":"u1"}`, 404, "not found"},
	}
}

func TestBadInputs(t *testing.T) {
	h, store := newFake(t, Options{})
	for _, tc := range badInputs() {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, tc.path, strings.NewReader(tc.body))
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, clip(w.Body.String()))
			}
			msg := checkErrorShape(t, w.Code, w.Header().Get("Content-Type"), w.Body.Bytes())
			if !strings.Contains(msg, tc.msg) {
				t.Fatalf("msg %q does not contain %q", msg, tc.msg)
			}
		})
	}
	if len(store.updated) != 0 {
		t.Fatalf("bad inputs reached the store: %v", store.updated)
	}
}

// TestBodyLimitWithoutContentLength: a chunked body (no Content-Length) over 1 MiB is cut at the limit.
func TestBodyLimitWithoutContentLength(t *testing.T) {
	h, _ := newFake(t, Options{})
	body := io2reader(`{"uid":"u1","x":"` + strings.Repeat("x", 2*maxBodyBytes) + `"}`)
	req := httptest.NewRequest(http.MethodPost, "/conversation/sync", body)
	req.ContentLength = -1
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413", w.Code)
	}
	checkErrorShape(t, w.Code, w.Header().Get("Content-Type"), w.Body.Bytes())
}

// io2reader hides the length of a body, as a chunked request does.
func io2reader(s string) *struct{ *strings.Reader } {
	return &struct{ *strings.Reader }{strings.NewReader(s)}
}

func TestMethodNotAllowed(t *testing.T) {
	h, _ := newFake(t, Options{})
	for _, tc := range []struct{ method, path string }{
		{http.MethodGet, "/conversation/sync"},
		{http.MethodPut, "/conversations/setUnread"},
		{http.MethodDelete, "/conversations/delete"},
		{http.MethodPost, "/healthz"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.path, nil)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != http.StatusMethodNotAllowed {
				t.Fatalf("status %d, want 405", w.Code)
			}
			if w.Header().Get("Allow") == "" {
				t.Error("no Allow header")
			}
			if msg := checkErrorShape(t, w.Code, w.Header().Get("Content-Type"), w.Body.Bytes()); msg != "method not allowed" {
				t.Fatalf("msg %q", msg)
			}
		})
	}
}

// TestLenientRequests: what real clients send and WuKongIM accepts is accepted: unknown fields, nulls,
// absent optional fields, message_seq of any type on mutations.
func TestLenientRequests(t *testing.T) {
	h, _ := newFake(t, Options{})
	for _, tc := range []struct{ name, path, body string }{
		{"sync only uid and msg_count", "/conversation/sync", `{"uid":"u1","msg_count":10}`},
		{"sync null last_msg_seqs", "/conversation/sync", `{"uid":"u1","version":0,"last_msg_seqs":null,"msg_count":20}`},
		{"sync every optional field null", "/conversation/sync", `{"uid":"u1","version":null,"last_msg_seqs":null,"msg_count":null,"only_unread":null,"exclude_channel_types":null,"include_deleted":null,"limit":null}`},
		{"sync unknown fields", "/conversation/sync", `{"uid":"u1","larges":[{"channel_id":"g1","channel_type":2}],"message_seq":3,"device_uuid":"d"}`},
		{"sync empty last_msg_seqs", "/conversation/sync", `{"uid":"u1","last_msg_seqs":""}`},
		{"sync negative version and msg_count", "/conversation/sync", `{"uid":"u1","version":-5,"msg_count":-1}`},
		{"sync huge msg_count and limit", "/conversation/sync", `{"uid":"u1","version":1,"msg_count":9223372036854775807,"limit":9223372036854775807}`},
		{"setUnread with message_seq", "/conversations/setUnread", `{"uid":"u1","channel_id":"g1","channel_type":2,"unread":0,"message_seq":12}`},
		{"setUnread message_seq a string", "/conversations/setUnread", `{"uid":"u1","channel_id":"g1","channel_type":2,"unread":3,"message_seq":"x"}`},
		{"setUnread without unread", "/conversations/setUnread", `{"uid":"u1","channel_id":"g1","channel_type":2}`},
		{"setUnread null unread", "/conversations/setUnread", `{"uid":"u1","channel_id":"g1","channel_type":2,"unread":null}`},
		{"setUnread unknown conversation", "/conversations/setUnread", `{"uid":"u1","channel_id":"nope","channel_type":2,"unread":1}`},
		{"delete unknown conversation", "/conversations/delete", `{"uid":"u9","channel_id":"g1","channel_type":2}`},
		{"clearUnread with extras", "/conversations/clearUnread", `{"uid":"u1","channel_id":"u2","channel_type":1,"message_seq":2,"extra":{}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := post(t, h, tc.path, tc.body)
			if status != http.StatusOK {
				t.Fatalf("status %d: %s", status, body)
			}
			if tc.path != "/conversation/sync" && string(body) != `{"status":200}` {
				t.Fatalf("body %s, want {\"status\":200}", body)
			}
		})
	}
}

// checkAnswer is the fuzz property of every endpoint: a JSON answer, never a 5xx, and either the
// success shape or the error shape.
func checkAnswer(t *testing.T, path string, w *httptest.ResponseRecorder) {
	t.Helper()
	switch {
	case w.Code >= 500:
		t.Fatalf("%s answered %d: %s", path, w.Code, w.Body.Bytes())
	case w.Code != http.StatusOK:
		checkErrorShape(t, w.Code, w.Header().Get("Content-Type"), w.Body.Bytes())
	case path == "/conversation/sync":
		var items []map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &items); err != nil || items == nil {
			t.Fatalf("sync answered 200 with %s (%v), want a JSON array", w.Body.Bytes(), err)
		}
	default:
		if w.Body.String() != `{"status":200}` {
			t.Fatalf("%s answered 200 with %s", path, w.Body.Bytes())
		}
	}
}

func fuzzSeeds(f *testing.F, path string) {
	for _, tc := range badInputs() {
		if tc.path == path && tc.status != http.StatusRequestEntityTooLarge {
			f.Add([]byte(tc.body))
		}
	}
	for _, s := range []string{`{"uid":"u1","version":0,"last_msg_seqs":"g1:2:1|u2:1:1","msg_count":20}`,
		`{"uid":"u1","version":4,"limit":1,"include_deleted":1,"only_unread":1,"exclude_channel_types":[3]}`,
		`{"uid":"u1","channel_id":"g1","channel_type":2,"unread":2}`, `{"uid":"\u0000","channel_id":"\ud800","channel_type":1}`} {
		f.Add([]byte(s))
	}
}

// FuzzSyncRequest: no body makes sync panic or answer 5xx; every answer has one of the two shapes.
func FuzzSyncRequest(f *testing.F) {
	fuzzSeeds(f, "/conversation/sync")
	h, _ := newFake(f, Options{})
	f.Fuzz(func(t *testing.T, body []byte) {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/conversation/sync", bytes.NewReader(body)))
		checkAnswer(t, "/conversation/sync", w)
	})
}

// FuzzMutationRequest: the same property for setUnread, delete and clearUnread.
func FuzzMutationRequest(f *testing.F) {
	fuzzSeeds(f, "/conversations/setUnread")
	fuzzSeeds(f, "/conversations/delete")
	paths := []string{"/conversations/setUnread", "/conversations/delete", "/conversations/clearUnread"}
	h, _ := newFake(f, Options{})
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, p := range paths {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, p, bytes.NewReader(body)))
			checkAnswer(t, p, w)
		}
	})
}
