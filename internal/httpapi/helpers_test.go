package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/testenv"
)

// baseTS is the timestamp (seconds) test messages start from.
const baseTS = 1700000000

// fixedNow is the store clock of tests that compare versions exactly.
var fixedNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// fixture is a handler on a fresh real database, and the means to fill it through the projector's
// write path.
type fixture struct {
	t       testing.TB
	store   *mysql.Store
	handler http.Handler
	skip    conversation.SkipSet
	nextID  atomic.Int64
}

func newFixture(t testing.TB, storeOpts mysql.Options, opts Options) *fixture {
	t.Helper()
	store, _ := testenv.Store(t, storeOpts)
	h, err := New(store, store, store, opts)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, store: store, handler: h, skip: conversation.DefaultSkipSet()}
	f.nextID.Store(1000)
	return f
}

// apply commits events through store.ApplyBatch, as the projector does: what has no effect by rule is
// dropped first.
func (f *fixture) apply(events ...conversation.Event) {
	f.t.Helper()
	events, _ = f.skip.Filter(events)
	if _, err := f.store.ApplyBatch(context.Background(), events); err != nil {
		f.t.Fatalf("apply batch: %v", err)
	}
}

// msg fills the fields a test does not care about: a fresh message_id, client_msg_no "c<seq>", a
// timestamp of baseTS+seq and a payload. The header is left as given (red_dot 0 unless set).
func (f *fixture) msg(m conversation.Message) conversation.Event {
	if m.MessageID == 0 {
		m.MessageID = f.nextID.Add(1)
	}
	if m.ClientMsgNo == "" {
		m.ClientMsgNo = fmt.Sprintf("c%d", m.MessageSeq)
	}
	if m.Timestamp == 0 {
		m.Timestamp = baseTS + m.MessageSeq
	}
	if m.Payload == nil {
		m.Payload = fmt.Appendf(nil, `{"type":1,"content":"m%d"}`, m.MessageSeq)
	}
	return conversation.Event{Message: &m}
}

// redDot is the header of a message that counts toward unread.
var redDot = conversation.Header{RedDot: 1}

// group is a message to group channel ch from "from", delivered to subs.
func (f *fixture) group(ch string, seq int64, from string, subs ...string) conversation.Event {
	return f.msg(conversation.Message{MessageSeq: seq, FromUID: from, ChannelID: ch, ChannelType: conversation.ChannelTypeGroup,
		Subscribers: subs, Header: redDot})
}

// person is a message from "from" addressed to "to" (a person channel).
func (f *fixture) person(from, to string, seq int64) conversation.Event {
	return f.msg(conversation.Message{MessageSeq: seq, FromUID: from, ChannelID: to, ChannelType: conversation.ChannelTypePerson, Header: redDot})
}

// do sends one request to h and returns the status and body.
func do(t testing.TB, h http.Handler, method, path string, body any, header ...string) (int, []byte) {
	t.Helper()
	var r *bytes.Reader
	switch b := body.(type) {
	case nil:
		r = bytes.NewReader(nil)
	case string:
		r = bytes.NewReader([]byte(b))
	case []byte:
		r = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(raw)
	}
	req := httptest.NewRequest(method, path, r)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Code, w.Body.Bytes()
}

func post(t testing.TB, h http.Handler, path string, body any, header ...string) (int, []byte) {
	t.Helper()
	return do(t, h, http.MethodPost, path, body, header...)
}

// syncOK posts a sync and decodes the answer strictly: any field the test types do not know fails.
func syncOK(t testing.TB, h http.Handler, body any) []syncItem {
	t.Helper()
	status, raw := post(t, h, "/conversation/sync", body)
	if status != http.StatusOK {
		t.Fatalf("sync %v: status %d: %s", body, status, raw)
	}
	if !bytes.HasPrefix(raw, []byte("[")) {
		t.Fatalf("sync answer is not a bare array: %s", raw)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var items []syncItem
	if err := dec.Decode(&items); err != nil {
		t.Fatalf("decode sync answer: %v\n%s", err, raw)
	}
	return items
}

func mutateOK(t testing.TB, h http.Handler, path string, body any) {
	t.Helper()
	status, raw := post(t, h, path, body)
	if status != http.StatusOK || string(raw) != `{"status":200}` {
		t.Fatalf("%s %v: %d %s, want 200 {\"status\":200}", path, body, status, raw)
	}
}

// seqs lists the message_seq of each recent, in order.
func seqs(it syncItem) []int64 {
	out := make([]int64, len(it.Recents))
	for i, m := range it.Recents {
		out[i] = m.MessageSeq
	}
	return out
}

// ids lists the "channel_id/channel_type" of each item, in order.
func ids(items []syncItem) string {
	var b strings.Builder
	for i, it := range items {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s/%d", it.ChannelID, it.ChannelType)
	}
	return b.String()
}

func find(t testing.TB, items []syncItem, channelID string, typ uint8) syncItem {
	t.Helper()
	for _, it := range items {
		if it.ChannelID == channelID && it.ChannelType == typ {
			return it
		}
	}
	t.Fatalf("no conversation %s/%d in %s", channelID, typ, ids(items))
	return syncItem{}
}

// fakeStore is an in-memory Store and Recents for tests that need no database: decoding, errors, fuzzing.
type fakeStore struct {
	rows    []conversation.Row
	msgs    map[conversation.ChannelKey][]conversation.Message
	err     error // returned by every call when set
	panics  bool  // every call panics when set
	updated []conversation.ConvKey
}

func (s *fakeStore) ReadList(context.Context, conversation.Query) (conversation.ListRead, error) {
	if s.panics {
		panic("fake store: boom")
	}
	if s.err != nil {
		return conversation.ListRead{}, s.err
	}
	return conversation.ListRead{Rows: s.rows}, nil
}

func (s *fakeStore) ReadRecents(_ context.Context, _ string, ranges []conversation.SeqRange) (conversation.RecentsRead, error) {
	if s.err != nil {
		return conversation.RecentsRead{}, s.err
	}
	out := map[conversation.ChannelKey][]conversation.Message{}
	for _, r := range ranges {
		for _, m := range s.msgs[r.Channel] {
			if m.MessageSeq > r.After && m.MessageSeq <= r.UpTo && len(out[r.Channel]) < r.Count {
				out[r.Channel] = append(out[r.Channel], m)
			}
		}
	}
	return conversation.RecentsRead{Messages: out}, nil
}

func (s *fakeStore) Update(_ context.Context, key conversation.ConvKey, change func(conversation.Row, int64) (conversation.Row, bool)) (conversation.Row, error) {
	if s.panics {
		panic("fake store: boom")
	}
	if s.err != nil {
		return conversation.Row{}, s.err
	}
	s.updated = append(s.updated, key)
	for _, r := range s.rows {
		if r.ConvKey == key {
			next, _ := change(r, 1)
			return next, nil
		}
	}
	return conversation.Row{}, conversation.ErrNotFound
}

func (s *fakeStore) Ping(context.Context) error { return s.err }

// newFake returns a handler on a fake store holding one person and one group conversation of u1.
func newFake(t testing.TB, opts Options) (http.Handler, *fakeStore) {
	t.Helper()
	s := &fakeStore{
		rows: []conversation.Row{
			{ConvKey: conversation.ConvKey{UID: "u1", ChannelID: "u2", ChannelType: 1}, Unread: 1, LastMsgSeq: 2, LastClientMsgNo: "c2", Timestamp: baseTS + 2, Version: 5},
			{ConvKey: conversation.ConvKey{UID: "u1", ChannelID: "g1", ChannelType: 2}, LastMsgSeq: 1, LastClientMsgNo: "c1", Timestamp: baseTS + 1, Version: 4},
		},
		msgs: map[conversation.ChannelKey][]conversation.Message{
			conversation.ChannelKeyOf("u1", conversation.Channel{ID: "u2", Type: 1}): {
				{MessageID: 12, ClientMsgNo: "c2", MessageSeq: 2, FromUID: "u2", ChannelID: "u1", ChannelType: 1, Timestamp: baseTS + 2, Header: conversation.Header{RedDot: 1}, Payload: []byte("hi")},
				{MessageID: 11, ClientMsgNo: "c1", MessageSeq: 1, FromUID: "u1", ChannelID: "u2", ChannelType: 1, Timestamp: baseTS + 1},
			},
			{Key: "g1", Type: 2}: {{MessageID: 21, ClientMsgNo: "c1", MessageSeq: 1, FromUID: "u3", ChannelID: "g1", ChannelType: 2, Timestamp: baseTS + 1}},
		},
	}
	h, err := New(s, s, s, opts)
	if err != nil {
		t.Fatal(err)
	}
	return h, s
}
