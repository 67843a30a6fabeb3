package httpapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/convsync/conversations/internal/conversation"
)

func TestStatusOf(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		status int
		msg    string
	}{
		{"client error", badRequest("uid is longer than %d bytes", 64), 400, "uid is longer than 64 bytes"},
		{"wrapped client error", fmt.Errorf("decode: %w", errTooLarge), 413, errTooLarge.msg},
		{"unreachable store", fmt.Errorf("select: %w: dial tcp 10.0.0.7:3306: connect: connection refused", conversation.ErrUnavailable), 503, msgUnavailable},
		{"lost lock conflicts", fmt.Errorf("%w: Error 1213 (40001): Deadlock found", conversation.ErrConflict), 503, msgUnavailable},
		{"deadline", fmt.Errorf("select: %w", context.DeadlineExceeded), 503, msgUnavailable},
		{"SQL error", errors.New("Error 1054 (42S22): Unknown column 'secret' in 'field list'"), 500, msgInternal},
		{"domain not found reaching the mapper", conversation.ErrNotFound, 500, msgInternal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, msg := statusOf(tc.err)
			if status != tc.status || msg != tc.msg {
				t.Fatalf("statusOf = %d %q, want %d %q", status, msg, tc.status, tc.msg)
			}
		})
	}
}

// TestServerFaults: store errors become 500/503 with the fixed messages; nothing of the error's text
// (SQL, driver, addresses) reaches the client, and the fault is logged once.
func TestServerFaults(t *testing.T) {
	secret := "Error 1146: Table 'convdb.conversations' doesn't exist; dial tcp 10.1.2.3:3306"
	for _, tc := range []struct {
		name   string
		err    error
		status int
		msg    string
	}{
		{"unavailable", fmt.Errorf("%w: %s", conversation.ErrUnavailable, secret), 503, msgUnavailable},
		{"conflict", fmt.Errorf("%w: %s", conversation.ErrConflict, secret), 503, msgUnavailable},
		{"other", errors.New(secret), 500, msgInternal},
	} {
		for _, req := range []struct{ path, body string }{
			{"/conversation/sync", `{"uid":"u1","msg_count":5}`},
			{"/conversations/setUnread", `{"uid":"u1","channel_id":"g1","channel_type":2,"unread":0}`},
			{"/conversations/delete", `{"uid":"u1","channel_id":"g1","channel_type":2}`},
			{"/conversations/clearUnread", `{"uid":"u1","channel_id":"g1","channel_type":2}`},
		} {
			t.Run(tc.name+" "+req.path, func(t *testing.T) {
				var logs bytes.Buffer
				h, store := newFake(t, Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
				store.err = tc.err
				w := httptest.NewRecorder()
				h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, req.path, strings.NewReader(req.body)))
				if w.Code != tc.status {
					t.Fatalf("status %d, want %d", w.Code, tc.status)
				}
				if msg := checkErrorShape(t, w.Code, w.Header().Get("Content-Type"), w.Body.Bytes()); msg != tc.msg {
					t.Fatalf("msg %q, want %q", msg, tc.msg)
				}
				if n := strings.Count(logs.String(), `"msg":"request failed"`); n != 1 {
					t.Fatalf("fault logged %d times, want once:\n%s", n, logs.String())
				}
			})
		}
	}
}

// TestRecentsFault: rows come back, then recents fail: the answer is a 503, never a partial array.
func TestRecentsFault(t *testing.T) {
	s := &fakeStore{rows: []conversation.Row{{ConvKey: conversation.ConvKey{UID: "u1", ChannelID: "g1", ChannelType: 2}, LastMsgSeq: 3}}}
	h, err := New(s, s, &failingRecents{err: fmt.Errorf("%w: connection reset", conversation.ErrUnavailable)}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	status, body := post(t, h, "/conversation/sync", `{"uid":"u1","msg_count":1}`)
	if status != http.StatusServiceUnavailable {
		t.Fatalf("status %d: %s", status, body)
	}
	checkErrorShape(t, status, contentTypeJSON, body)
	// msg_count 0 needs no recents at all.
	if status, body := post(t, h, "/conversation/sync", `{"uid":"u1","msg_count":0}`); status != http.StatusOK {
		t.Fatalf("msg_count 0: status %d: %s", status, body)
	}
}

type failingRecents struct{ err error }

func (f *failingRecents) ReadRecents(context.Context, string, []conversation.SeqRange) (conversation.RecentsRead, error) {
	return conversation.RecentsRead{}, f.err
}

// TestPanicRecovery: a panicking handler answers 500 JSON, is logged with its stack and counted, and
// the server goes on answering.
func TestPanicRecovery(t *testing.T) {
	var logs bytes.Buffer
	h, store := newFake(t, Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	store.panics = true
	for _, path := range []string{"/conversation/sync", "/conversations/delete"} {
		status, body := post(t, h, path, `{"uid":"u1","channel_id":"g1","channel_type":2}`)
		if status != http.StatusInternalServerError {
			t.Fatalf("%s: status %d: %s", path, status, body)
		}
		if msg := checkErrorShape(t, status, contentTypeJSON, body); msg != msgInternal {
			t.Fatalf("msg %q", msg)
		}
	}
	if !strings.Contains(logs.String(), `"msg":"handler panicked"`) || !strings.Contains(logs.String(), "fake store: boom") ||
		!strings.Contains(logs.String(), `"stack":`) {
		t.Fatalf("panic not logged with value and stack:\n%s", logs.String())
	}
	store.panics = false
	if status, _ := post(t, h, "/conversation/sync", `{"uid":"u1"}`); status != http.StatusOK {
		t.Fatalf("after a panic: status %d", status)
	}
	_, metrics := do(t, h, http.MethodGet, "/metrics", nil)
	if !strings.Contains(string(metrics), "conv_api_panics_total 2") {
		t.Fatal("panics not counted")
	}
}

// TestBearerToken: with a token set, API calls need "Authorization: Bearer <token>"; health, readiness
// and metrics do not. Without one configured, no header is needed.
func TestBearerToken(t *testing.T) {
	const token = "s3cr3t-t0ken"
	var logs bytes.Buffer
	h, _ := newFake(t, Options{Token: token, Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	body := `{"uid":"u1","channel_id":"g1","channel_type":2}`
	for _, tc := range []struct {
		name, header string
		status       int
	}{
		{"missing", "", 401},
		{"wrong token", "Bearer wrong", 401},
		{"token prefix", "Bearer " + token[:5], 401},
		{"token with suffix", "Bearer " + token + "x", 401},
		{"no scheme", token, 401},
		{"basic scheme", "Basic " + token, 401},
		{"empty bearer", "Bearer ", 401},
		{"right token", "Bearer " + token, 200},
		{"scheme is case-insensitive", "bearer " + token, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/conversation/sync", "/conversations/setUnread", "/conversations/delete", "/conversations/clearUnread"} {
				var hdr []string
				if tc.header != "" {
					hdr = []string{"Authorization", tc.header}
				}
				req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
				for i := 0; i < len(hdr); i += 2 {
					req.Header.Set(hdr[i], hdr[i+1])
				}
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != tc.status {
					t.Fatalf("%s: status %d, want %d", path, w.Code, tc.status)
				}
				if tc.status == 401 {
					checkErrorShape(t, w.Code, w.Header().Get("Content-Type"), w.Body.Bytes())
					if !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer") {
						t.Fatalf("no WWW-Authenticate challenge")
					}
				}
			}
		})
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if status, body := do(t, h, http.MethodGet, path, nil); status != http.StatusOK {
			t.Fatalf("%s without a token: %d %s", path, status, body)
		}
	}
	if strings.Contains(logs.String(), token[:5]) {
		t.Fatalf("the token reached the log:\n%s", logs.String())
	}
	open, _ := newFake(t, Options{})
	if status, _ := post(t, open, "/conversation/sync", `{"uid":"u1"}`); status != http.StatusOK {
		t.Fatalf("no token configured: status %d", status)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	h, store := newFake(t, Options{})
	for _, path := range []string{"/healthz", "/readyz"} {
		status, body := do(t, h, http.MethodGet, path, nil)
		if status != http.StatusOK || string(body) != `{"status":200}` {
			t.Fatalf("%s: %d %s", path, status, body)
		}
	}
	store.err = fmt.Errorf("%w: dial tcp 127.0.0.1:3306: connection refused", conversation.ErrUnavailable)
	status, body := do(t, h, http.MethodGet, "/readyz", nil)
	if status != http.StatusServiceUnavailable {
		t.Fatalf("readyz with the database down: %d %s", status, body)
	}
	checkErrorShape(t, status, contentTypeJSON, body)
	if status, _ := do(t, h, http.MethodGet, "/healthz", nil); status != http.StatusOK {
		t.Fatalf("healthz must not depend on the database: %d", status)
	}
}

// TestMetricsAndAccessLog: requests are counted by route and status, timed by route, and logged with
// method, route, status and duration only; unknown paths share one "unmatched" label.
func TestMetricsAndAccessLog(t *testing.T) {
	var logs bytes.Buffer
	h, _ := newFake(t, Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	post(t, h, "/conversation/sync", `{"uid":"u1","msg_count":3}`)
	post(t, h, "/conversation/sync", `{"uid":""}`)
	post(t, h, "/no/such/path/1", `{}`)
	post(t, h, "/no/such/path/2", `{}`)
	_, body := do(t, h, http.MethodGet, "/metrics", nil)
	for _, want := range []string{
		`conv_api_requests_total{route="/conversation/sync",status="200"} 1`,
		`conv_api_requests_total{route="/conversation/sync",status="400"} 1`,
		`conv_api_requests_total{route="unmatched",status="404"} 2`,
		`conv_api_request_seconds_count{route="/conversation/sync"} 2`,
		`go_goroutines`, `process_`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	line := strings.SplitN(logs.String(), "\n", 2)[0]
	for _, want := range []string{`"msg":"http request"`, `"method":"POST"`, `"route":"/conversation/sync"`, `"status":200`, `"duration_ms":`} {
		if !strings.Contains(line, want) {
			t.Errorf("access log line %s lacks %s", line, want)
		}
	}
	if strings.Contains(logs.String(), "u1") || strings.Contains(logs.String(), "/no/such/path") {
		t.Errorf("access log holds request data:\n%s", logs.String())
	}
}
