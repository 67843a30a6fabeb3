package httpapi

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ from the handler's answers")

// normalize re-indents JSON with sorted keys, keeping every number's literal text, so a golden file
// compares by value and JSON type, not by layout.
func normalize(t testing.TB, raw []byte) []byte {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, raw)
	}
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(out, '\n')
}

// golden compares doc with testdata/<name>.json, or rewrites the file under -update.
func golden(t *testing.T, name string, doc map[string]json.RawMessage) {
	t.Helper()
	raw, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	got := normalize(t, raw)
	path := filepath.Join("testdata", name+".json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestGolden -update to create it)", err)
	}
	if !bytes.Equal(normalize(t, want), got) {
		t.Errorf("%s differs from the handler's answer (go test -run TestGolden -update rewrites it after review):\n--- want\n%s\n--- got\n%s", path, want, got)
	}
}

// exchange sends body to path and returns the golden document of the request and its answer.
func exchange(t *testing.T, h http.Handler, path, body string, header ...string) (map[string]json.RawMessage, int) {
	t.Helper()
	status, resp := post(t, h, path, body, header...)
	return map[string]json.RawMessage{
		"path":     json.RawMessage(`"` + path + `"`),
		"request":  json.RawMessage(body),
		"status":   json.RawMessage(strings.TrimSpace(string(mustJSON(t, status)))),
		"response": json.RawMessage(resp),
	}, status
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGolden pins the exact wire format of every endpoint: field names, JSON types, versions from a
// fixed clock. Each mutation's file also holds the incremental sync that shows its effect.
func TestGolden(t *testing.T) {
	f := newFixture(t, mysql.Options{Now: func() time.Time { return fixedNow }}, Options{Token: "golden-token"})
	auth := []string{"Authorization", "Bearer golden-token"}
	f.apply(
		f.person("alice", "u1", 1),
		f.msg(conversation.Message{MessageSeq: 2, FromUID: "u1", ChannelID: "alice", ChannelType: 1, Payload: []byte("hello"),
			MessageID: 1<<60 + 7, Setting: 1, Expire: 3600, Header: redDot}),
		f.person("alice", "u1", 3),
	)
	f.apply(
		f.group("g1", 1, "u2", "u1", "u2"),
		f.msg(conversation.Message{MessageSeq: 2, FromUID: "u2", ChannelID: "g1", ChannelType: 2, Subscribers: []string{"u1", "u2"},
			Payload: []byte{}}), // red_dot 0, empty payload
		f.group("g2", 1, "u3", "u1", "u3"),
	)
	// Same timestamp as alice's last message: ties go by channel_id.
	f.apply(f.msg(conversation.Message{MessageSeq: 3, FromUID: "u2", ChannelID: "g1", ChannelType: 2, Timestamp: baseTS + 3,
		Subscribers: []string{"u1", "u2"}, Header: redDot}))
	mustStatus := func(doc map[string]json.RawMessage, status, want int) map[string]json.RawMessage {
		t.Helper()
		if status != want {
			t.Fatalf("%s %s: status %d, want %d: %s", doc["path"], doc["request"], status, want, doc["response"])
		}
		return doc
	}
	version := func() int64 {
		items := syncOK(t, tokenHandler{f.handler}, syncReq{"uid": "u1", "include_deleted": 1})
		var v int64
		for _, it := range items {
			v = max(v, it.Version)
		}
		return v
	}

	t.Run("sync", func(t *testing.T) {
		doc, status := exchange(t, f.handler, "/conversation/sync", `{"uid":"u1","version":0,"last_msg_seqs":"","msg_count":2}`, auth...)
		golden(t, "sync", mustStatus(doc, status, 200))
	})
	t.Run("sync_incremental", func(t *testing.T) {
		doc, status := exchange(t, f.handler, "/conversation/sync",
			`{"uid":"u1","version":`+string(mustJSON(t, version()-1))+`,"last_msg_seqs":"alice:1:2|g1:2:1","msg_count":10,"larges":[]}`, auth...)
		golden(t, "sync_incremental", mustStatus(doc, status, 200))
	})
	for _, tc := range []struct{ name, path, body string }{
		{"setUnread", "/conversations/setUnread", `{"uid":"u1","channel_id":"g1","channel_type":2,"unread":1,"message_seq":3}`},
		{"clearUnread", "/conversations/clearUnread", `{"uid":"u1","channel_id":"alice","channel_type":1}`},
		{"delete", "/conversations/delete", `{"uid":"u1","channel_id":"g2","channel_type":2}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := version()
			doc, status := exchange(t, f.handler, tc.path, tc.body, auth...)
			mustStatus(doc, status, 200)
			after, status := exchange(t, f.handler, "/conversation/sync",
				`{"uid":"u1","version":`+string(mustJSON(t, before))+`,"msg_count":1,"include_deleted":1}`, auth...)
			doc["sync_after"] = mustStatus(after, status, 200)["response"]
			golden(t, tc.name, doc)
		})
	}
	t.Run("errors", func(t *testing.T) {
		doc := map[string]json.RawMessage{}
		for _, tc := range []struct {
			name, path, body string
			header           []string
		}{
			{"sync_empty_uid", "/conversation/sync", `{"uid":"","msg_count":1}`, auth},
			{"sync_bad_last_msg_seqs", "/conversation/sync", `{"uid":"u1","last_msg_seqs":"g1:2:15|u2:1"}`, auth},
			{"sync_wrong_type", "/conversation/sync", `{"uid":"u1","version":"12"}`, auth},
			{"setUnread_no_channel", "/conversations/setUnread", `{"uid":"u1","unread":0}`, auth},
			{"setUnread_negative", "/conversations/setUnread", `{"uid":"u1","channel_id":"g1","channel_type":2,"unread":-1}`, auth},
			{"delete_no_token", "/conversations/delete", `{"uid":"u1","channel_id":"g1","channel_type":2}`, nil},
			{"not_found", "/conversation/syncs", `{}`, auth},
		} {
			one, _ := exchange(t, f.handler, tc.path, tc.body, tc.header...)
			doc[tc.name] = mustJSON(t, one)
		}
		golden(t, "errors", doc)
	})
}

// tokenHandler adds the golden test's token to requests of helpers that send none.
type tokenHandler struct{ h http.Handler }

func (th tokenHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r.Header.Set("Authorization", "Bearer golden-token")
	th.h.ServeHTTP(w, r)
}
