package projector

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/refmodel"
	"github.com/convsync/conversations/internal/testenv"
)

// concurrentStore is a Store that notes how many ApplyBatch calls ran at once, at most.
type concurrentStore struct {
	Store
	now, peak atomic.Int64
	calls     atomic.Int64
}

func (s *concurrentStore) ApplyBatch(ctx context.Context, events []conversation.Event) (conversation.BatchResult, error) {
	n := s.now.Add(1)
	defer s.now.Add(-1)
	for p := s.peak.Load(); n > p && !s.peak.CompareAndSwap(p, n); p = s.peak.Load() {
	}
	s.calls.Add(1)
	return s.Store.ApplyBatch(ctx, events)
}

// Four lanes apply a stream whose every channel reaches the same six users (person chats between them and
// groups of all of them, spread over four partitions), so the lanes' transactions keep changing rows of
// the same users at once: they must not deadlock for good, must apply every message exactly once (the
// reference model's state), and must give each user versions in commit order, so that a client that
// syncs incrementally all along (asking only for versions above the highest it saw) ends with exactly
// what a full sync shows.
func TestLanesOnTheSameUsersKeepExactlyOnceAndVersions(t *testing.T) {
	t.Parallel()
	brokers, topic, dlq := integration(t, 4)
	store, _ := testenv.Store(t, mysql.Options{})
	const users = 6
	var uids []string
	for i := range users {
		uids = append(uids, fmt.Sprintf("u%d", i))
	}
	rng := rand.New(rand.NewPCG(16, 4))
	seqs := map[string]int64{}
	var recs []record
	for range 2400 {
		if rng.IntN(2) == 0 {
			g := fmt.Sprintf("g%d", rng.IntN(8))
			seqs[g]++
			recs = append(recs, groupMsg(t, g, seqs[g], uids[rng.IntN(users)], uids))
			continue
		}
		a, b := uids[rng.IntN(users)], uids[rng.IntN(users)]
		if a == b {
			continue
		}
		k := conversation.PersonKey(a, b)
		seqs[k]++
		recs = append(recs, personMsg(t, a, b, seqs[k]))
	}
	// A few redeliveries: applied once.
	for range 50 {
		recs = append(recs, recs[rng.IntN(len(recs))])
	}
	model := refmodel.New(refmodel.Options{})
	for _, r := range recs {
		if err := model.Apply(r.value); err != nil {
			t.Fatal(err)
		}
	}
	produce(t, brokers, topic, recs...)

	type client struct {
		version int64
		rows    map[conversation.ConvKey]conversation.Row
	}
	clients := make([]*client, users)
	syncOnce := func(i int) error {
		c := clients[i]
		all, _, err := store.UserRows(context.Background(), uids[i])
		if err != nil {
			return err
		}
		for _, r := range conversation.Select(all, conversation.Query{UID: uids[i], Version: c.version, IncludeDeleted: true,
			NowMS: time.Now().UnixMilli()}) {
			c.rows[r.ConvKey] = r
			c.version = max(c.version, r.Version)
		}
		return nil
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	errs := make(chan error, users)
	for i := range users {
		clients[i] = &client{rows: map[conversation.ConvKey]conversation.Row{}}
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := syncOnce(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}

	cs := &concurrentStore{Store: store}
	group := testenv.Name("group.")
	p, _ := newProjector(t, Config{Brokers: brokers, Topic: topic, DLQTopic: dlq, GroupID: group, Lanes: 4, BatchMaxRecords: 20}, cs)
	start(t, p)
	waitCommittedToEnd(t, brokers, group, topic, 4, 90*time.Second)
	close(stop)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	rep, err := refmodel.Compare(t.Context(), store.DB().DB, model)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mismatches != 0 {
		t.Fatalf("database differs from the model: %s", rep)
	}
	if peak := cs.peak.Load(); peak < 2 {
		t.Fatalf("at most %d batches applied at once, want the lanes to overlap", peak)
	}
	for i, uid := range uids {
		if err := syncOnce(i); err != nil {
			t.Fatal(err)
		}
		all, _, err := store.UserRows(t.Context(), uid)
		if err != nil {
			t.Fatal(err)
		}
		all = conversation.Select(all, conversation.Query{UID: uid, IncludeDeleted: true})
		if len(all) != len(clients[i].rows) {
			t.Errorf("%s: the client holds %d conversations, a full sync has %d", uid, len(clients[i].rows), len(all))
		}
		for _, want := range all {
			got := clients[i].rows[want.ConvKey]
			if got.Unread != want.Unread || got.LastMsgSeq != want.LastMsgSeq || got.ReadedToMsgSeq != want.ReadedToMsgSeq {
				t.Errorf("%s: the client missed a change of %v: holds unread %d last %d, full sync unread %d last %d", uid,
					want.ConvKey, got.Unread, got.LastMsgSeq, want.Unread, want.LastMsgSeq)
			}
		}
	}
	t.Logf("records=%d batches=%d peak concurrent batches=%d; compared rows=%d messages=%d", len(recs), cs.calls.Load(),
		cs.peak.Load(), rep.Rows, rep.Messages)
}
