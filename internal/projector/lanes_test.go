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

// A rebalance hands lanes' partitions over cleanly: when a second member joins mid-stream, and again when
// the first one leaves, each lane finishes its batch in flight and commits it before its member rejoins,
// so the partitions' next owners start after what was applied. Nothing is applied twice (the store
// reports no duplicate), nothing is lost, and the lanes of both members applied records.
func TestARebalanceHandsLanesPartitionsOverWithoutReplay(t *testing.T) {
	t.Parallel()
	brokers, topic, dlq := integration(t, 4)
	store, _ := testenv.Store(t, mysql.Options{})
	const groups, perGroup = 16, 40
	var rounds [][]record
	for r := range perGroup {
		var round []record
		for g := range groups {
			round = append(round, groupMsg(t, fmt.Sprintf("g%d", g), int64(r+1), "bot", []string{"u1", "u2", fmt.Sprintf("v%d", g)}))
		}
		rounds = append(rounds, round)
	}
	cfg := Config{Brokers: brokers, Topic: topic, DLQTopic: dlq, GroupID: testenv.Name("group."), Lanes: 2, BatchMaxRecords: 8}
	countA, countB := &countingStore{Store: store}, &countingStore{Store: store}
	a, regA := newProjector(t, cfg, countA)
	b, regB := newProjector(t, cfg, countB)
	runA := start(t, a)

	produced := produceRounds(t, brokers, topic, rounds, 50*time.Millisecond)
	testenv.Eventually(t, 20*time.Second, "A applied records", func() bool { return countA.applied() > 0 })
	start(t, b)
	testenv.Eventually(t, 30*time.Second, "B applied records", func() bool { return countB.applied() > 0 })
	if err := runA.stop(t); err != nil {
		t.Fatalf("A stopped with %v", err)
	}
	<-produced
	if t.Failed() {
		return
	}
	waitCommittedToEnd(t, brokers, cfg.GroupID, topic, 4, 60*time.Second)

	applied := metricValue(t, regA, "conv_projector_messages_applied_total") + metricValue(t, regB, "conv_projector_messages_applied_total")
	dups := metricValue(t, regA, "conv_projector_duplicates_skipped_total") + metricValue(t, regB, "conv_projector_duplicates_skipped_total")
	if applied != groups*perGroup || dups != 0 {
		t.Fatalf("applied %v messages and skipped %v duplicates, want %d and 0: a handover replayed records", applied, dups, groups*perGroup)
	}
	for _, r := range rows(t, store) {
		if r.UID != "bot" && (r.Unread != perGroup || r.LastMsgSeq != perGroup) {
			t.Fatalf("row %+v: want unread and last_msg_seq %d", r, perGroup)
		}
	}
	gens := metricValue(t, regA, "conv_projector_generations_total") + metricValue(t, regB, "conv_projector_generations_total")
	t.Logf("A applied %d events, B %d; %v generations in all", countA.applied(), countB.applied(), gens)
}

// A lane whose batch keeps failing holds only its own partitions: the other lane goes on applying and
// committing its partitions to their end meanwhile, readiness says which step fails, and once the store
// recovers the stuck lane catches up.
func TestAFailingLaneDoesNotStopTheOthers(t *testing.T) {
	t.Parallel()
	brokers, topic, dlq := integration(t, 2)
	produce(t, brokers, topic, groupMsg(t, "stuck", 1, "alice", []string{"bob"}))
	end := endOffsets(t, brokers, topic, 2)
	stuckPart := 0
	if end[1] > 0 {
		stuckPart = 1
	}
	// Records of other channels, until some are in the other partition.
	var others []record
	for i := 0; len(others) < 40; i++ {
		others = append(others, groupMsg(t, fmt.Sprintf("free%d", i), 1, "alice", []string{"bob"}))
	}
	produce(t, brokers, topic, others...)
	end = endOffsets(t, brokers, topic, 2)
	if end[1-stuckPart] == 0 {
		t.Fatal("no record landed in the other partition")
	}

	var broken atomic.Bool
	broken.Store(true)
	store := &fakeStore{apply: func(_ context.Context, _ int, events []conversation.Event) error {
		for _, e := range events {
			if e.Message != nil && e.Message.ChannelID == "stuck" && broken.Load() {
				return errDown
			}
		}
		return nil
	}}
	group := testenv.Name("group.")
	p, _ := newProjector(t, Config{Brokers: brokers, Topic: topic, DLQTopic: dlq, GroupID: group, Lanes: 2}, store)
	start(t, p)
	testenv.Eventually(t, 30*time.Second, "the free lane committed its partition to the end", func() bool {
		return committed(t, brokers, group, topic, 2)[1-stuckPart] == end[1-stuckPart]
	})
	if got := committed(t, brokers, group, topic, 2)[stuckPart]; got > 0 {
		t.Fatalf("the stuck partition's committed offset moved to %d while its batch failed", got)
	}
	if step := p.Failing(); step != "apply" {
		t.Fatalf("Failing = %q while a lane retries its batch, want apply", step)
	}
	broken.Store(false)
	waitCommittedToEnd(t, brokers, group, topic, 2, 30*time.Second)
	testenv.Eventually(t, 10*time.Second, "readiness recovered", func() bool { return p.Failing() == "" })
}
