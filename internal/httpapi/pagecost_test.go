package httpapi

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/readcache"
)

// handlerReads is how many rows the server's storage handlers read for the session (the sum of its
// Handler_read_* counters): index lookups, next and previous entries, scans.
func (s *session) handlerReads() int64 {
	s.t.Helper()
	rows, err := s.store.DB().QueryContext(context.Background(), `SHOW SESSION STATUS LIKE 'Handler_read%'`)
	if err != nil {
		s.t.Fatal(err)
	}
	defer rows.Close()
	var sum int64
	for rows.Next() {
		var name string
		var n int64
		if err := rows.Scan(&name, &n); err != nil {
			s.t.Fatal(err)
		}
		sum += n
	}
	if err := rows.Err(); err != nil {
		s.t.Fatal(err)
	}
	return sum
}

// rowsRead returns how many rows the session's statements read while fn ran, and fails if the pool
// changed connection meanwhile.
func (s *session) rowsRead(fn func()) int64 { return s.during(s.handlerReads, fn) }

// TestSyncPagesQueryCost: a user with 5,000 conversations syncs them in pages (incremental sync from
// version 1 with limit 200, each page asking above the highest version of the one before) without any
// statement reading all 5,000 rows: the rows the server reads for a page, counted by its own
// Handler_read_* counters, stay within a few times the page answered, recents included. The pages together are
// exactly the user's conversations, each page what conversation.Select answers from all of the rows.
// A full sync, which does read the whole list, shows that the count sees such a read.
func TestSyncPagesQueryCost(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cached bool
	}{{"store", false}, {"rows cache in front", true}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, mysql.Options{MaxOpenConns: 1, LargeChannelMembers: 3}, Options{MaxConversations: 1000})
			if tc.cached { // lists above MaxRowsPerUser (2,000 by default) are not kept: pages are read
				var err error
				if f.handler, err = New(f.store, readcache.NewRows(f.store, readcache.RowsOptions{}), f.store, Options{MaxConversations: 1000}); err != nil {
					t.Fatal(err)
				}
			}
			const n, limit = 5_000, 200
			// 300 conversations of one version first (a page never splits a version, so the first one holds
			// all of them), then 25 per version: pages end inside ties.
			for lo, hi := 0, 300; lo < n; lo, hi = hi, hi+25 {
				var events []conversation.Event
				for i := lo; i < hi; i++ {
					events = append(events, f.group(fmt.Sprintf("g%04d", i), 1, "u2", "u1", "u2"))
				}
				f.apply(events...)
			}
			// Followers of three large channels, and 100 tombstones that the pages leave out.
			for i := range 3 {
				id := fmt.Sprintf("L%d", i)
				f.apply(conversation.Event{Membership: &conversation.Membership{Channel: conversation.Channel{ID: id, Type: 2},
					UIDs: []string{"u1", "u2", "u3", "u4"}, Added: true}})
				f.apply(f.msg(conversation.Message{MessageSeq: 1, FromUID: "u2", ChannelID: id, ChannelType: 2, Header: redDot}))
			}
			for i := 0; i < n; i += 50 {
				if status, raw := post(t, f.handler, "/conversations/delete", syncReq{"uid": "u1", "channel_id": fmt.Sprintf("g%04d", i), "channel_type": 2}); status != 200 {
					t.Fatalf("delete: %d %s", status, raw)
				}
			}
			s := &session{t: t, store: f.store}

			if full := s.rowsRead(func() { syncOK(t, f.handler, syncReq{"uid": "u1", "msg_count": 1}) }); full < n {
				t.Fatalf("a full sync read %d rows: the count does not see a whole-list read of %d", full, n)
			}
			seen := map[string]int{}
			v, pages := int64(1), 0
			for {
				var items []syncItem
				body := syncReq{"uid": "u1", "version": v, "limit": limit, "msg_count": 1}
				read := s.rowsRead(func() { items = syncOK(t, f.handler, body) })
				pages++
				t.Logf("page %d above version %d: %d conversations, %d rows read", pages, v, len(items), read)
				if bound := int64(5*len(items) + 100); read > bound || read >= n {
					t.Fatalf("page %d read %d rows for %d conversations, want at most %d (the user has %d)", pages, read, len(items), bound, n)
				}
				all, version, err := f.store.UserRows(context.Background(), "u1")
				if err != nil {
					t.Fatal(err)
				}
				want := conversation.Select(all, conversation.Query{UID: "u1", Version: v, Limit: limit, UserVersion: version, NowMS: 1})
				if got, exp := channelIDs(items), channelIDsOfRows(want); !slices.Equal(got, exp) {
					t.Fatalf("page %d: %d conversations %v..., want %d: %v...", pages, len(got), head(got), len(exp), head(exp))
				}
				next := v
				for _, it := range items {
					seen[it.ChannelID]++
					next = max(next, it.Version)
				}
				if len(items) < limit || next == v {
					break
				}
				v = next
			}
			if want := n - n/50 + 3; len(seen) != want {
				t.Fatalf("the pages hold %d conversations, want %d", len(seen), want)
			}
			for id, k := range seen {
				if k > 1 && id[0] != 'L' { // only large channels' conversations may repeat (contract §5)
					t.Fatalf("%s came in %d pages", id, k)
				}
			}
			if want := (n - n/50) / (limit + 25); pages < want { // a page may run past limit to the end of a version
				t.Fatalf("%d pages, want at least %d", pages, want)
			}
		})
	}
}

func channelIDs(items []syncItem) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.ChannelID
	}
	slices.Sort(out)
	return out
}

func channelIDsOfRows(rows []conversation.Row) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.ChannelID
	}
	slices.Sort(out)
	return out
}

func head(ids []string) []string { return ids[:min(5, len(ids))] }
