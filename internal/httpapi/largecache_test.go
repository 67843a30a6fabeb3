package httpapi

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/readcache"
)

// TestSyncQueryCostLargeCached: an API replica that holds large channels' states, kept current by the
// commits' announcements, serves a follower's sync with no statement at all (TestSyncQueryCostLarge:
// one more than a plain user's without them), and what a commit announces (a new message, a late one)
// is what it then serves.
func TestSyncQueryCostLargeCached(t *testing.T) {
	var rows *readcache.Rows
	var large *readcache.Large
	f := newFixture(t, mysql.Options{MaxOpenConns: 1, LargeChannelMembers: 3, OnCommit: func(_ context.Context, c conversation.Changes) {
		if rows != nil {
			for u, v := range c.Versions {
				rows.Notify(u, v)
			}
			large.Apply(c.Channels)
		}
	}}, Options{MaxConversations: 1000})
	var events []conversation.Event
	for i := range 150 {
		events = append(events, f.group(fmt.Sprintf("s%03d", i), 1, "u2", "u1", "u2"))
	}
	for i := range 50 {
		events = append(events, conversation.Event{Membership: &conversation.Membership{
			Channel: conversation.Channel{ID: fmt.Sprintf("L%02d", i), Type: 2}, UIDs: []string{"u1", "u2", "u3", "u4"}, Added: true}})
	}
	f.apply(events...)
	events = events[:0]
	for i := range 50 {
		for _, seq := range []int64{1, 3, 2} { // 2 arrives late
			events = append(events, f.msg(conversation.Message{MessageSeq: seq, FromUID: "u2", ChannelID: fmt.Sprintf("L%02d", i),
				ChannelType: 2, Header: conversation.Header{RedDot: 1}}))
		}
	}
	f.apply(events...)

	large = readcache.NewLarge(f.store, readcache.LargeOptions{MaxAge: time.Minute})
	rows = readcache.NewRows(f.store, readcache.RowsOptions{MaxAge: time.Minute, Large: large})
	h, err := New(f.store, rows, f.store, Options{MaxConversations: 1000})
	if err != nil {
		t.Fatal(err)
	}
	s := &session{t: t, store: f.store}
	sync := func(step string, wantTrips, wantUnread, wantLast int64) {
		t.Helper()
		var items []syncItem
		got := s.roundTrips(func() { items = syncOK(t, h, syncReq{"uid": "u1"}) })
		n := 0
		for _, it := range items {
			if it.ChannelID[0] != 'L' {
				continue
			}
			n++
			unread, last := int64(3), int64(3)
			if it.ChannelID == "L00" {
				unread, last = wantUnread, wantLast
			}
			if it.Unread != unread || it.LastMsgSeq != last {
				t.Errorf("%s: %s unread %d, last %d; want %d and %d", step, it.ChannelID, it.Unread, it.LastMsgSeq, unread, last)
			}
		}
		if n != 50 || len(items) != 200 {
			t.Fatalf("%s: %d conversations, %d large; want 200 and 50", step, len(items), n)
		}
		if wantTrips >= 0 && got != wantTrips {
			t.Errorf("%s: %d round trips, want %d", step, got, wantTrips)
		}
	}
	sync("first sync loads", -1, 3, 3)
	sync("current replica", 0, 3, 3)
	for _, seq := range []int64{5, 4} { // 4 arrives late, in its own commit
		f.apply(f.msg(conversation.Message{MessageSeq: seq, FromUID: "u2", ChannelID: "L00", ChannelType: 2,
			Header: conversation.Header{RedDot: 1}}))
		sync(fmt.Sprintf("after message %d, announced", seq), 0, 3+(6-seq), 5)
	}
}
