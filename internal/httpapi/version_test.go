package httpapi

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
)

// TestVersionInvariant: while projector batches (store.ApplyBatch, two writers as during a rebalance)
// and API mutations (setUnread, clearUnread, delete through the handler) commit concurrently, a client
// that keeps syncing from the highest version it has seen (include_deleted=1, sometimes with a limit)
// ends up with exactly the rows in the database, every field and version included: it never misses a
// committed change (contract §3.6).
func TestVersionInvariant(t *testing.T) {
	f := newFixture(t, mysql.Options{}, Options{})
	const uid = "u1"
	channels := []conversation.Channel{{ID: "g1", Type: 2}, {ID: "g2", Type: 2}, {ID: "g3", Type: 2}, {ID: "g:4", Type: 4},
		{ID: "p1", Type: 1}, {ID: "p2", Type: 1}, {ID: "p3", Type: 1}}
	var seqMu sync.Mutex
	nextSeq := map[conversation.Channel]int64{}
	message := func(r *rand.Rand) conversation.Event {
		ch := channels[r.IntN(len(channels))]
		seqMu.Lock()
		nextSeq[ch]++
		seq := nextSeq[ch]
		seqMu.Unlock()
		from := "other"
		if r.IntN(4) == 0 {
			from = uid // own message from another device
		}
		if ch.Type == conversation.ChannelTypePerson {
			if from == uid {
				return f.person(uid, ch.ID, seq)
			}
			return f.person(ch.ID, uid, seq)
		}
		m := conversation.Message{MessageSeq: seq, FromUID: from, ChannelID: ch.ID, ChannelType: ch.Type, Subscribers: []string{uid, "other"}}
		if r.IntN(4) > 0 {
			m.Header = redDot
		}
		return f.msg(m)
	}

	ctx, stop := context.WithTimeout(context.Background(), 3*time.Second)
	defer stop()
	var wg sync.WaitGroup
	var batches, mutations, conflicts atomic.Int64
	errs := make(chan error, 16)
	for w := range 2 { // projector writers
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for ctx.Err() == nil {
				events := make([]conversation.Event, 1+r.IntN(4))
				for i := range events {
					events[i] = message(r)
				}
				_, err := f.store.ApplyBatch(context.Background(), events)
				switch {
				case errors.Is(err, conversation.ErrConflict):
					conflicts.Add(1) // nothing committed; the projector would retry the batch
				case err != nil:
					errs <- fmt.Errorf("apply batch: %w", err)
					return
				default:
					batches.Add(1)
				}
			}
		})
	}
	for w := range 2 { // API writers
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 2))
			paths := []string{"/conversations/setUnread", "/conversations/clearUnread", "/conversations/delete"}
			for ctx.Err() == nil {
				ch := channels[r.IntN(len(channels))]
				path := paths[r.IntN(len(paths))]
				status, body := post(t, f.handler, path, syncReq{"uid": uid, "channel_id": ch.ID, "channel_type": ch.Type, "unread": r.IntN(3)})
				switch {
				case status == http.StatusServiceUnavailable:
					conflicts.Add(1) // a conflict that outlasted the store's retries: nothing committed
				case status != http.StatusOK:
					errs <- fmt.Errorf("%s: %d %s", path, status, body)
					return
				default:
					mutations.Add(1)
				}
			}
		})
	}

	// The client: a view of the user's conversations, kept current by incremental syncs only.
	view := map[conversation.Channel]syncItem{}
	var maxVersion int64
	syncs := 0
	syncOnce := func(limit int) int {
		items := syncOK(t, f.handler, syncReq{"uid": uid, "version": maxVersion, "include_deleted": 1, "msg_count": 1, "limit": limit})
		for _, it := range items {
			if it.Version <= maxVersion {
				t.Fatalf("sync from version %d returned %s/%d at version %d", maxVersion, it.ChannelID, it.ChannelType, it.Version)
			}
			view[conversation.Channel{ID: it.ChannelID, Type: it.ChannelType}] = it
		}
		for _, it := range items {
			maxVersion = max(maxVersion, it.Version)
		}
		syncs++
		return len(items)
	}
	r := rand.New(rand.NewPCG(9, 9))
	for ctx.Err() == nil {
		syncOnce([]int{0, 0, 1, 3}[r.IntN(4)])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for syncOnce(2) > 0 { // writers are done: drain what is left, in small pages
	}

	rows, _, err := f.store.UserRows(context.Background(), uid)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d batches, %d API mutations, %d conflicts, %d syncs, %d rows", batches.Load(), mutations.Load(), conflicts.Load(), syncs, len(rows))
	if batches.Load() == 0 || mutations.Load() == 0 {
		t.Fatal("the writers did nothing")
	}
	if len(view) != len(rows) {
		t.Errorf("client holds %d conversations, database %d", len(view), len(rows))
	}
	for _, row := range rows {
		got, ok := view[conversation.Channel{ID: row.ChannelID, Type: row.ChannelType}]
		want := newSyncItem(&row, nil)
		got.Recents, want.Recents = nil, nil
		if !ok || !reflect.DeepEqual(got, want) {
			t.Errorf("client view %+v\n          database %+v", got, want)
		}
	}
}
