package projector

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/conversation"
)

// fakeCommits records the offsets of each commit attempt and answers with hook's error (nil hook:
// success).
type fakeCommits struct {
	mu    sync.Mutex
	calls [][]string // "partition@offset" per attempt, in order
	hook  func(call int, msgs []kafkago.Message) error

	committedMu sync.Mutex
	committed   []appliedBatch
}

func (f *fakeCommits) commit(_ context.Context, msgs ...kafkago.Message) error {
	f.mu.Lock()
	f.calls = append(f.calls, at(msgs...))
	call := len(f.calls)
	f.mu.Unlock()
	if f.hook == nil {
		return nil
	}
	return f.hook(call, msgs)
}

func (f *fakeCommits) attempts() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeCommits) done(b appliedBatch) {
	f.committedMu.Lock()
	defer f.committedMu.Unlock()
	f.committed = append(f.committed, b)
}

type count struct{ n atomic.Int64 }

func (c *count) Inc() { c.n.Add(1) }

// newTestCommitter returns a committer of capacity batches on f, with a 1ms backoff.
func newTestCommitter(capacity int, f *fakeCommits, failures *count) *committer {
	return newCommitter(capacity, f.commit, f.done, failures, time.Millisecond, time.Millisecond, testLog())
}

// at names records as "partition@offset".
func at(msgs ...kafkago.Message) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, fmt.Sprintf("%d@%d", m.Partition, m.Offset))
	}
	return out
}

// batchAt is an applied batch of records records whose last records are the given partition/offset pairs.
func batchAt(records int, partOffsets ...int) appliedBatch {
	b := appliedBatch{records: records, batches: 1}
	for i := 0; i+1 < len(partOffsets); i += 2 {
		b.last = append(b.last, kafkago.Message{Partition: partOffsets[i], Offset: int64(partOffsets[i+1])})
	}
	return b
}

// runCommitter runs c.run(ctx) in the background; the returned func closes the queue (the loop stopped)
// and returns run's error.
func runCommitter(ctx context.Context, c *committer) (stop func() error) {
	done := make(chan error, 1)
	go func() { done <- c.run(ctx) }()
	return func() error {
		close(c.queue)
		return <-done
	}
}

// Batches handed over while a commit is in flight are committed together afterwards, each partition at
// the newest offset handed over.
func TestCommitterCoalescesWhatQueuedDuringACommit(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	f := &fakeCommits{hook: func(call int, _ []kafkago.Message) error {
		if call == 1 {
			close(entered)
			<-release
		}
		return nil
	}}
	c := newTestCommitter(4, f, &count{})
	stop := runCommitter(t.Context(), c)
	ctx := t.Context()
	if err := c.hand(ctx, batchAt(3, 0, 5)); err != nil {
		t.Fatal(err)
	}
	<-entered
	for _, b := range []appliedBatch{batchAt(4, 0, 7, 1, 3), batchAt(2, 0, 9)} {
		if err := c.hand(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	if err := stop(); err != nil {
		t.Fatalf("run = %v, want nil after the queue was drained", err)
	}
	want := [][]string{{"0@5"}, {"0@9", "1@3"}}
	if got := f.attempts(); !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("commits %v, want %v", got, want)
	}
	if len(f.committed) != 2 || f.committed[1].batches != 2 || f.committed[1].records != 6 {
		t.Fatalf("committed %+v, want the first batch, then the other two (6 records) in one commit", f.committed)
	}
	if n := c.waiting.Load(); n != 0 {
		t.Fatalf("waiting = %d after every commit succeeded, want 0", n)
	}
}

// A failing commit is retried, the same offsets, and readiness says so; newer batches wait in the queue
// (they are not merged into the retried commit), and once the queue is full the loop's hand waits.
func TestCommitterRetriesAFailedCommitAndHoldsTheLoopWhenFull(t *testing.T) {
	var broken atomic.Bool
	broken.Store(true)
	attempts := make(chan int, 1000)
	f := &fakeCommits{hook: func(call int, _ []kafkago.Message) error {
		attempts <- call
		if broken.Load() {
			return errors.New("fake commit: coordinator not available")
		}
		return nil
	}}
	failures := &count{}
	c := newTestCommitter(1, f, failures)
	stop := runCommitter(t.Context(), c)
	if err := c.hand(t.Context(), batchAt(1, 0, 1)); err != nil {
		t.Fatal(err)
	}
	<-attempts
	<-attempts // the first failure was recorded before the second attempt
	if !c.failing.Load() {
		t.Fatal("failing = false while commits fail, want true (not ready)")
	}
	if err := c.hand(t.Context(), batchAt(1, 0, 2)); err != nil { // the queue's one place
		t.Fatal(err)
	}
	full, cancel := context.WithCancel(t.Context())
	cancel() // hand must give up at once: it can only wait
	if err := c.hand(full, batchAt(1, 0, 3)); !errors.Is(err, context.Canceled) {
		t.Fatalf("hand with the queue full = %v, want it to wait (context.Canceled)", err)
	}
	if n := c.waiting.Load(); n != 2 {
		t.Fatalf("waiting = %d, want 2 (the batch refused is not counted)", n)
	}
	broken.Store(false)
	if err := stop(); err != nil {
		t.Fatalf("run = %v, want nil", err)
	}
	got := f.attempts()
	for _, a := range got[:len(got)-2] {
		if !slices.Equal(a, []string{"0@1"}) {
			t.Fatalf("attempts %v: a retry committed other offsets than the failed ones", got)
		}
	}
	if last := got[len(got)-1]; !slices.Equal(last, []string{"0@2"}) {
		t.Fatalf("last commit %v, want the queued batch's 0@2", last)
	}
	if c.failing.Load() || failures.n.Load() < 1 {
		t.Fatalf("failing = %v, failures = %d after recovery, want false and at least 1", c.failing.Load(), failures.n.Load())
	}
}

// A commit that fails is retried whole: every partition of it, none dropped (a lane owns its partitions
// for the whole generation its committer lives in).
func TestCommitterRetriesEveryPartitionOfTheCommit(t *testing.T) {
	f := &fakeCommits{hook: func(call int, _ []kafkago.Message) error {
		if call < 3 {
			return errors.New("fake commit: rebalance in progress")
		}
		return nil
	}}
	c := newTestCommitter(4, f, &count{})
	stop := runCommitter(t.Context(), c)
	if err := c.hand(t.Context(), batchAt(5, 0, 4, 1, 6)); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatalf("run = %v, want nil", err)
	}
	for _, a := range f.attempts() {
		if !slices.Equal(a, []string{"0@4", "1@6"}) {
			t.Fatalf("attempts %v, want every one to commit both partitions", f.attempts())
		}
	}
}

func TestCommitterAtShutdown(t *testing.T) {
	t.Run("what was handed over before the loop stopped is committed", func(t *testing.T) {
		f := &fakeCommits{}
		c := newTestCommitter(4, f, &count{})
		for _, b := range []appliedBatch{batchAt(1, 0, 1), batchAt(1, 1, 8)} {
			if err := c.hand(t.Context(), b); err != nil {
				t.Fatal(err)
			}
		}
		close(c.queue) // the loop stopped
		if err := c.run(t.Context()); err != nil {
			t.Fatalf("run = %v, want nil", err)
		}
		if got := f.attempts(); !slices.EqualFunc(got, [][]string{{"0@1", "1@8"}}, slices.Equal) {
			t.Fatalf("commits %v, want both batches in one", got)
		}
	})
	t.Run("offsets still failing when the grace ends are abandoned", func(t *testing.T) {
		ctx, graceOver := context.WithCancel(t.Context())
		f := &fakeCommits{hook: func(int, []kafkago.Message) error {
			graceOver()
			return errors.New("fake commit: coordinator not available")
		}}
		c := newTestCommitter(4, f, &count{})
		for _, b := range []appliedBatch{batchAt(2, 0, 1), batchAt(3, 0, 4)} {
			if err := c.hand(t.Context(), b); err != nil {
				t.Fatal(err)
			}
		}
		close(c.queue)
		err := c.run(ctx)
		if !errors.Is(err, ErrAbandoned) {
			t.Fatalf("run = %v, want ErrAbandoned", err)
		}
		if len(f.committed) != 0 {
			t.Fatalf("committed %+v, want nothing", f.committed)
		}
	})
}

func TestAppliedBatchMergeKeepsTheNewestOffsetPerPartition(t *testing.T) {
	// After a rebalance a partition may come back from an older offset: the later batch still wins.
	got := batchAt(2, 0, 9, 2, 4).merge(batchAt(3, 1, 2, 0, 3))
	if want := []string{"0@3", "2@4", "1@2"}; !slices.Equal(at(got.last...), want) || got.records != 5 || got.batches != 2 {
		t.Fatalf("merge = %v (%d records, %d batches), want %v (5, 2)", at(got.last...), got.records, got.batches, want)
	}
}

// process hands a batch's offsets to the committer only once the batch was applied, and waits for room
// in the commit queue rather than running further ahead.
func TestProcessHandsOverOnlyAppliedBatches(t *testing.T) {
	msgs := func(t *testing.T) []kafkago.Message {
		a, b := groupMsg(t, "g1", 1, "alice", []string{"bob"}), groupMsg(t, "g2", 1, "alice", []string{"bob"})
		return []kafkago.Message{{Partition: 0, Offset: 10, Value: a.value}, {Partition: 1, Offset: 3, Value: b.value},
			{Partition: 0, Offset: 11, Value: a.value}}
	}
	newP := func(t *testing.T, store Store, capacity int) *lane {
		p, _ := newProjector(t, Config{Brokers: []string{"unused:1"}, Topic: "t", DLQTopic: "d", GroupID: "g",
			ShutdownTimeout: time.Millisecond, UncommittedBatches: capacity}, store)
		l := p.lanes[0]
		l.newCommitter(&fakeGeneration{})
		return l
	}
	stopped := func(t *testing.T) context.Context {
		ctx, cancel := context.WithCancel(t.Context())
		cancel() // a shutdown began, the 1ms grace runs
		return ctx
	}
	t.Run("applied", func(t *testing.T) {
		p := newP(t, &fakeStore{}, 1)
		if err := p.process(t.Context(), msgs(t)); err != nil {
			t.Fatal(err)
		}
		b := <-p.committer.queue
		if got := at(b.last...); !slices.Equal(got, []string{"0@11", "1@3"}) || b.records != 3 || b.batches != 1 {
			t.Fatalf("handed %v (%d records, %d batches), want [0@11 1@3] (3, 1)", got, b.records, b.batches)
		}
	})
	t.Run("not applied when the grace ends", func(t *testing.T) {
		p := newP(t, &fakeStore{apply: func(context.Context, int, []conversation.Event) error { return errDown }}, 1)
		if err := p.process(stopped(t), msgs(t)); !errors.Is(err, ErrAbandoned) {
			t.Fatalf("process = %v, want ErrAbandoned", err)
		}
		if len(p.committer.queue) != 0 || p.committer.waiting.Load() != 0 {
			t.Fatalf("%d batches queued, %d waiting, want none: nothing was applied", len(p.committer.queue), p.committer.waiting.Load())
		}
	})
	t.Run("applied, but the commit queue stays full until the grace ends", func(t *testing.T) {
		store := &fakeStore{}
		p := newP(t, store, 1)
		if err := p.committer.hand(t.Context(), batchAt(1, 0, 9)); err != nil {
			t.Fatal(err)
		}
		err := p.process(stopped(t), msgs(t))
		if !errors.Is(err, ErrAbandoned) {
			t.Fatalf("process = %v, want ErrAbandoned", err)
		}
		if store.applied() != 3 || len(p.committer.queue) != 1 || p.committer.waiting.Load() != 1 {
			t.Fatalf("applied %d, %d queued, %d waiting; want 3 applied and only the earlier batch queued",
				store.applied(), len(p.committer.queue), p.committer.waiting.Load())
		}
		if p.progress.awaitingCommit.Load() {
			t.Fatal("awaitingCommit still set after process returned")
		}
	})
}

func TestFailingReportsTheCommitterAfterTheLoop(t *testing.T) {
	p, _ := newProjector(t, Config{Brokers: []string{"unused:1"}, Topic: "t", DLQTopic: "d", GroupID: "g", Lanes: 2}, &fakeStore{})
	if got := p.Failing(); got != "" {
		t.Fatalf("Failing = %q, want none", got)
	}
	p.joining.Store(true)
	if got := p.Failing(); got != "join" {
		t.Fatalf("Failing = %q with joining the group failing, want join", got)
	}
	l := p.lanes[1]
	l.newCommitter(&fakeGeneration{}).failing.Store(true)
	if got := p.Failing(); got != "commit" {
		t.Fatalf("Failing = %q with a lane's commits failing, want commit", got)
	}
	apply := "apply"
	l.failing.Store(&apply)
	if got := p.Failing(); got != "apply" {
		t.Fatalf("Failing = %q with both failing, want the lane's step (apply)", got)
	}
}

// fakeGeneration records the offsets committed through it.
type fakeGeneration struct {
	mu      sync.Mutex
	commits []map[int]int64
	err     error
}

func (g *fakeGeneration) CommitOffsets(offsets map[string]map[int]int64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, parts := range offsets {
		g.commits = append(g.commits, parts)
	}
	return g.err
}
