package readcache_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/readcache"
	"github.com/convsync/conversations/internal/storetest"
	"github.com/convsync/conversations/internal/testenv"
)

func message(ch string, seq int64, from string, subs ...string) conversation.Event {
	return conversation.Event{Message: &conversation.Message{MessageID: seq, MessageSeq: seq, FromUID: from, ChannelID: ch,
		ChannelType: 2, Timestamp: 1700000000 + seq, Header: conversation.Header{RedDot: 1}, Subscribers: subs}}
}

// countingStore counts the full reads that reach the store.
type countingStore struct {
	*mysql.Store
	fullReads int
}

func (c *countingStore) UserRows(ctx context.Context, uid string) ([]conversation.Row, int64, error) {
	c.fullReads++
	return c.Store.UserRows(ctx, uid)
}

// RawUserRows is how the cache reads a list from a store that derives large channels (LargeSource).
func (c *countingStore) RawUserRows(ctx context.Context, uid string) ([]conversation.Row, int64, error) {
	c.fullReads++
	return c.Store.RawUserRows(ctx, uid)
}

func TestRowsNeverServesAStaleList(t *testing.T) {
	s, _ := testenv.Store(t, mysql.Options{})
	src := &countingStore{Store: s}
	c := readcache.NewRows(src, readcache.RowsOptions{})
	ctx := context.Background()
	apply := func(events ...conversation.Event) {
		t.Helper()
		if _, err := s.ApplyBatch(ctx, events); err != nil {
			t.Fatal(err)
		}
	}
	unread := func() int64 {
		t.Helper()
		rows, _, err := readcache.RowsOf(c.ReadList(ctx, conversation.Query{UID: "bob"}))
		if err != nil {
			t.Fatal(err)
		}
		direct, _, err := s.UserRows(ctx, "bob")
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != len(direct) || (len(rows) > 0 && rows[0] != direct[0]) {
			t.Fatalf("cache %+v, store %+v", rows, direct)
		}
		var n int64
		for _, r := range rows {
			n += r.Unread
		}
		return n
	}
	if got := unread(); got != 0 || src.fullReads != 1 {
		t.Fatalf("empty user: unread %d, %d reads", got, src.fullReads)
	}
	apply(message("g1", 1, "alice", "alice", "bob"))
	if got := unread(); got != 1 || src.fullReads != 2 {
		t.Errorf("after a message: unread %d, %d reads; want 1 and a reload", got, src.fullReads)
	}
	if got := unread(); got != 1 || src.fullReads != 2 {
		t.Errorf("unchanged: unread %d, %d reads; want 1 from the cache", got, src.fullReads)
	}
	// A change through another path (the API's mutation) is seen at once too.
	if _, err := s.Update(ctx, conversation.ConvKey{UID: "bob", ChannelID: "g1", ChannelType: 2},
		func(r conversation.Row, _ int64) (conversation.Row, bool) { return conversation.SetUnread(r, 0) }); err != nil {
		t.Fatal(err)
	}
	if got := unread(); got != 0 || src.fullReads != 3 {
		t.Errorf("after setUnread: unread %d, %d reads; want 0 and a reload", got, src.fullReads)
	}
	// A message to someone else does not cost bob a reload.
	apply(message("g2", 1, "alice", "alice", "carol"))
	if got := unread(); got != 0 || src.fullReads != 3 {
		t.Errorf("unrelated change: unread %d, %d reads", got, src.fullReads)
	}
}

// TestRecentsFollowTheStoresAnnouncements: with the store's commit announcements applied, as the change
// feed does, the recents cache answers exactly what the store does after a late message lands inside a
// cached stretch and after the window prunes messages the cache holds.
func TestRecentsFollowTheStoresAnnouncements(t *testing.T) {
	var c *readcache.Recents
	s, _ := testenv.Store(t, mysql.Options{RecentsWindow: 8, OnCommit: func(_ context.Context, ch conversation.Changes) { c.Apply(ch.Windows) }})
	c = readcache.NewRecents(s, readcache.RecentsOptions{Fill: 10, MaxAge: time.Hour})
	ctx := context.Background()
	g1 := conversation.ChannelKey{Key: "g1", Type: 2}
	apply := func(seqs ...int64) {
		t.Helper()
		var events []conversation.Event
		for _, seq := range seqs {
			events = append(events, message("g1", seq, "alice", "alice", "bob"))
		}
		if _, err := s.ApplyBatch(ctx, events); err != nil {
			t.Fatal(err)
		}
	}
	check := func(step string, upTo int64) {
		t.Helper()
		for after := int64(0); after < upTo; after++ {
			for _, count := range []int{1, 2, 5, 10} {
				r := []conversation.SeqRange{{Channel: g1, After: after, UpTo: upTo, Count: count}}
				got, err := readcache.MessagesOf(c.ReadRecents(ctx, "u1", r))
				if err != nil {
					t.Fatal(err)
				}
				want, err := s.Recents(ctx, r)
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(storetest.Seqs(got[g1])) != fmt.Sprint(storetest.Seqs(want[g1])) {
					t.Fatalf("%s: after %d count %d: cache %v, store %v", step, after, count, storetest.Seqs(got[g1]), storetest.Seqs(want[g1]))
				}
			}
		}
	}
	apply(1, 2, 4, 6, 7) // 3 and 5 come late
	check("loaded", 7)
	apply(5)
	check("late message inside the cached stretch", 7)
	apply(3)
	check("late message at its bottom", 7)
	apply(8, 9, 10, 11) // the window keeps seqs 4..11
	check("pruned", 7)
	check("pruned, newest", 11)
}

// TestRowsLargeChannelsAreReadAfresh: conversations of large channels change with their channel, not
// with the user's version, so a list that follows one, even before it has any conversation there (a
// member who joined and received nothing yet), is never served from memory.
func TestRowsLargeChannelsAreReadAfresh(t *testing.T) {
	for _, maxAge := range []time.Duration{0, time.Minute} {
		t.Run(fmt.Sprint("max age ", maxAge), func(t *testing.T) {
			s, _ := testenv.Store(t, mysql.Options{LargeChannelMembers: 3})
			ch := "big"
			c := readcache.NewRows(s, readcache.RowsOptions{MaxAge: maxAge})
			ctx := context.Background()
			join := conversation.Event{Membership: &conversation.Membership{Channel: conversation.Channel{ID: ch, Type: 2},
				UIDs: []string{"ann", "bea", "cid", "dan"}, Added: true}}
			if _, err := s.ApplyBatch(ctx, []conversation.Event{join}); err != nil {
				t.Fatal(err)
			}
			visible := func() []conversation.Row {
				rows, _, err := readcache.RowsOf(c.ReadList(ctx, conversation.Query{UID: "ann"}))
				if err != nil {
					t.Fatal(err)
				}
				return conversation.Select(rows, conversation.Query{UID: "ann"})
			}
			if got := visible(); len(got) != 0 {
				t.Fatalf("before any message: %+v", got)
			}
			for seq := int64(1); seq <= 2; seq++ {
				if _, err := s.ApplyBatch(ctx, []conversation.Event{message(ch, seq, "bea")}); err != nil {
					t.Fatal(err)
				}
				got := visible()
				if len(got) != 1 || got[0].Unread != seq {
					t.Fatalf("after message %d: %+v, want one conversation with unread %d", seq, got, seq)
				}
			}
		})
	}
}
