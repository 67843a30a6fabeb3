package httpapi

import (
	"context"
	"fmt"
	"testing"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
)

// session counts the statements of the store's one pooled connection through the server's own counter
// (SHOW SESSION STATUS 'Questions'), so every round trip counts, whichever code issued it.
type session struct {
	t     *testing.T
	store *mysql.Store
}

func (s *session) questions() int64 {
	s.t.Helper()
	var name string
	var n int64
	if err := s.store.DB().QueryRowContext(context.Background(), `SHOW SESSION STATUS LIKE 'Questions'`).Scan(&name, &n); err != nil {
		s.t.Fatal(err)
	}
	return n
}

func (s *session) connectionID() int64 {
	s.t.Helper()
	var id int64
	if err := s.store.DB().QueryRowContext(context.Background(), `SELECT CONNECTION_ID()`).Scan(&id); err != nil {
		s.t.Fatal(err)
	}
	return id
}

// roundTrips returns how many statements fn sent, and fails if the pool changed connection meanwhile.
func (s *session) roundTrips(fn func()) int64 { return s.during(s.questions, fn) }

// during returns how much the session counter read grew while fn ran, less what one read of it adds
// (measured rather than assumed), and fails if the pool changed connection meanwhile.
func (s *session) during(counter func() int64, fn func()) int64 {
	s.t.Helper()
	id := s.connectionID()
	a := counter()
	b := counter()
	fn()
	c := counter()
	if s.connectionID() != id {
		s.t.Fatal("the pool switched connections: the count is not of one session")
	}
	return c - b - (b - a)
}

// TestSyncQueryCost: a sync costs a bounded number of round trips whatever the number of
// conversations: at most 2 for the rows, plus one per 250 recents ranges, none for msg_count 0.
func TestSyncQueryCost(t *testing.T) {
	// One connection, so the session counter sees every statement the sync sends.
	f := newFixture(t, mysql.Options{MaxOpenConns: 1}, Options{MaxConversations: 1000})
	const n = 600
	var events []conversation.Event
	for i := range n {
		events = append(events, f.group(fmt.Sprintf("g%03d", i), 1, "u2", "u1", "u2"))
	}
	f.apply(events...)
	s := &session{t: t, store: f.store}
	v := syncOK(t, f.handler, syncReq{"uid": "u1"})[0].Version

	// A few more rows, each with its own version, so that a limit actually limits.
	for i := range 20 {
		f.apply(f.group(fmt.Sprintf("h%02d", i), 1, "u2", "u1", "u2"))
	}
	for _, tc := range []struct {
		name    string
		body    syncReq
		recents bool
	}{
		{"full sync, msg_count 0", syncReq{"uid": "u1"}, false},
		{"full sync, msg_count 5", syncReq{"uid": "u1", "msg_count": 5}, true},
		{"full sync with last_msg_seqs", syncReq{"uid": "u1", "msg_count": 5, "last_msg_seqs": "g001:2:0|g002:2:1"}, true},
		{"incremental sync with limit", syncReq{"uid": "u1", "version": v, "limit": 10, "msg_count": 5}, true},
		{"incremental sync, everything", syncReq{"uid": "u1", "version": 1, "msg_count": 1, "include_deleted": 1}, true},
		{"unknown user", syncReq{"uid": "nobody", "msg_count": 5}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var items []syncItem
			got := s.roundTrips(func() { items = syncOK(t, f.handler, tc.body) })
			limit := int64(2) // the rows
			if tc.recents {
				limit += int64((len(items) + 249) / 250)
			}
			t.Logf("%d conversations in %d round trips (bound %d)", len(items), got, limit)
			if got < 1 || got > limit {
				t.Fatalf("%d round trips for %d conversations, want 1..%d", got, len(items), limit)
			}
		})
	}
}

// TestSyncQueryCostLarge: a user in 200 conversations of which 50 are large channels (contract §5)
// pays one statement more than for plain rows, whatever the number of large channels, late messages
// included.
func TestSyncQueryCostLarge(t *testing.T) {
	f := newFixture(t, mysql.Options{MaxOpenConns: 1, LargeChannelMembers: 3}, Options{MaxConversations: 1000})
	var events []conversation.Event
	for i := range 150 {
		events = append(events, f.group(fmt.Sprintf("s%03d", i), 1, "u2", "u1", "u2"))
	}
	for i := range 50 {
		id := fmt.Sprintf("L%02d", i)
		events = append(events, conversation.Event{Membership: &conversation.Membership{
			Channel: conversation.Channel{ID: id, Type: 2}, UIDs: []string{"u1", "u2", "u3", "u4"}, Added: true}})
	}
	f.apply(events...)
	events = events[:0]
	for i := range 50 {
		id := fmt.Sprintf("L%02d", i)
		for _, seq := range []int64{1, 3, 2} { // 2 arrives late
			events = append(events, f.msg(conversation.Message{MessageSeq: seq, FromUID: "u2", ChannelID: id, ChannelType: 2,
				Header: conversation.Header{RedDot: 1}}))
		}
	}
	f.apply(events...)
	s := &session{t: t, store: f.store}
	for _, tc := range []struct {
		name string
		body syncReq
	}{
		{"full sync, msg_count 0", syncReq{"uid": "u1"}},
		{"full sync, msg_count 5", syncReq{"uid": "u1", "msg_count": 5}},
		{"incremental sync", syncReq{"uid": "u1", "version": 1, "msg_count": 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var items []syncItem
			got := s.roundTrips(func() { items = syncOK(t, f.handler, tc.body) })
			large := 0
			for _, it := range items {
				if it.ChannelID[0] == 'L' {
					large++
					if it.Unread != 3 || it.LastMsgSeq != 3 {
						t.Fatalf("%s: unread %d, last %d; want 3 and 3", it.ChannelID, it.Unread, it.LastMsgSeq)
					}
				}
			}
			limit := int64(2 + 1) // the rows, the large channels' states
			if tc.body["msg_count"] != nil {
				limit += int64((len(items) + 249) / 250)
			}
			t.Logf("%d conversations (%d large) in %d round trips (bound %d)", len(items), large, got, limit)
			if large != 50 || len(items) != 200 {
				t.Fatalf("%d conversations, %d large; want 200 and 50", len(items), large)
			}
			if got < 1 || got > limit {
				t.Fatalf("%d round trips, want 1..%d", got, limit)
			}
		})
	}
}
