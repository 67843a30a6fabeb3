package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/conversation"
)

// lane is one sequence of batches over a subset of the partitions this member owns (Config.Lanes). The
// lanes of a member apply their batches concurrently, each batch in its own store transaction; a
// partition belongs to one lane for a whole generation of the group, so each partition's records are
// still applied in offset order, one batch after the other, and every ack rule holds per partition
// exactly as it did with one loop. A lane that fails or hangs holds only its own partitions: each lane
// has its own look-ahead, batches, retries, poison isolation and committer.
type lane struct {
	id    int
	p     *Projector
	log   *slog.Logger
	m     laneMetrics
	steps *stepTimer
	// cur is the batch in hand, for the slow-batch log; only the lane's loop touches it.
	cur batchClock

	// failing names the lane's step being retried ("" when none), for readiness.
	failing atomic.Pointer[string]
	// progress is for liveness (Stalled) and the lag gauge.
	progress progress

	mu sync.Mutex
	// committer commits the offsets of the batches the lane applied in the current generation; nil
	// before the first.
	committer *committer
}

func newLane(p *Projector, id int) *lane {
	name := strconv.Itoa(id)
	l := &lane{id: id, p: p, log: p.log.With("lane", id), m: p.metrics.lane(name), steps: newStepTimer(p.metrics.stepSeconds, name)}
	l.progress.lag = map[int]int64{}
	return l
}

func (l *lane) currentCommitter() *committer {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.committer
}

// step returns the lane's step that keeps failing: its own (dead_letter or apply), else its committer's
// (commit), "" when none.
func (l *lane) step() string {
	if step := l.failing.Load(); step != nil {
		return *step
	}
	if c := l.currentCommitter(); c != nil && c.failing.Load() {
		return "commit"
	}
	return ""
}

// committedOffsets commits offsets through a generation of the group (kafkago.Generation).
type committedOffsets interface {
	CommitOffsets(offsets map[string]map[int]int64) error
}

// newCommitter starts the lane's committer for a generation: it commits the offset after each last
// record through gen.
func (l *lane) newCommitter(gen committedOffsets) *committer {
	topic := l.p.cfg.Topic
	commit := func(_ context.Context, msgs ...kafkago.Message) error {
		start := time.Now()
		offsets := make(map[int]int64, len(msgs))
		for _, m := range msgs {
			offsets[m.Partition] = m.Offset + 1 // a committed offset is the next record to read
		}
		err := gen.CommitOffsets(map[string]map[int]int64{topic: offsets})
		if err == nil {
			l.m.since(stageOffsetCommit, start)
		}
		return err
	}
	c := newCommitter(l.p.cfg.UncommittedBatches, commit, l.committed, l.p.metrics.commitFailures,
		l.p.cfg.RetryMinBackoff, l.p.cfg.RetryMaxBackoff, l.log)
	l.mu.Lock()
	l.committer = c
	l.mu.Unlock()
	return c
}

// committed accounts for a successful offset commit covering b.
func (l *lane) committed(b appliedBatch) {
	l.p.metrics.commits.Add(float64(b.batches))
	l.p.metrics.recordsCommitted.Add(float64(b.records))
	l.committedLag(b.last)
}

// run applies the records of parts, each read from its assigned offset, until the generation ends (gen
// is done: a rebalance) or ctx does (shutdown). Then it finishes the batch in flight and lets its
// committer commit what the lane applied, both within Config.ShutdownTimeout, and returns: records
// fetched but not yet in a batch are dropped uncommitted, for the partitions' next owner to read from
// the committed offsets. It returns an error wrapping ErrAbandoned when a batch or some applied
// batches' offsets had to be abandoned uncommitted (they will be delivered again, harmlessly).
func (l *lane) run(ctx, gen context.Context, offsets committedOffsets, parts []kafkago.PartitionAssignment) (err error) {
	ids := make([]int, len(parts))
	for i, a := range parts {
		ids[i] = a.ID
	}
	l.assigned(ids)
	if len(parts) == 0 {
		select { // a lane without partitions waits for the next generation
		case <-ctx.Done():
		case <-gen.Done():
		}
		return nil
	}
	l.log.Info("lane starts", "partitions", ids)
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	defer context.AfterFunc(gen, stop)()

	c := l.newCommitter(offsets)
	cctx, stopCommitting := graceContext(lctx, l.p.cfg.ShutdownTimeout)
	var committing sync.WaitGroup
	var commitErr error
	committing.Go(func() { commitErr = c.run(cctx) })
	defer func() {
		close(c.queue) // the lane has stopped: nothing more is handed over
		committing.Wait()
		stopCommitting()
		err = errors.Join(err, commitErr)
		// Offsets it abandoned are the next owner's to replay, not a commit this lane still waits for.
		l.mu.Lock()
		l.committer = nil
		l.mu.Unlock()
	}()

	queue := make(chan fetched, l.p.cfg.BatchMaxRecords)
	fctx, stopFetching := context.WithCancel(lctx)
	var fetching sync.WaitGroup
	for _, a := range parts {
		r, err := l.p.partitionReader(a)
		if err != nil {
			stopFetching()
			fetching.Wait()
			return err
		}
		fetching.Go(func() {
			defer r.Close()
			fetchInto(fctx, progressFetcher{r, l}, queue, l.p.cfg.RetryMinBackoff, l.p.cfg.RetryMaxBackoff)
		})
	}
	defer func() {
		stopFetching()
		fetching.Wait()
	}()

	b := &batcher{in: queue, maxRecords: l.p.cfg.BatchMaxRecords, maxBytes: l.p.cfg.BatchMaxBytes, linger: l.p.cfg.BatchMaxWait}
	for {
		batch, fetchErr := b.next(lctx)
		if len(batch) > 0 {
			if err := l.process(lctx, l.started(batch)); err != nil {
				return err
			}
		}
		if lctx.Err() != nil {
			return nil
		}
		if fe, ok := errors.AsType[*fetchError](fetchErr); ok {
			l.log.Warn("fetch failed", "attempt", fe.attempt, "error", fe.Error())
		}
	}
}

// batchClock is where the batch in hand spent its time so far, for the slow-batch log.
type batchClock struct {
	start                               time.Time     // the batch started (its records left the queue)
	oldest                              time.Time     // its first record fetched
	maxFetch                            time.Duration // the longest of its records' fetch stage
	maxQueue                            time.Duration // the longest of its records' queue stage
	decode, apply, dbCommit, commitWait time.Duration
	attempts                            int
}

// started records how long the batch's records took to be fetched and then to wait for the batch, and
// returns them; it starts the lane's clock of the batch.
func (l *lane) started(batch []fetched) []kafkago.Message {
	now := time.Now()
	l.cur = batchClock{start: now, oldest: now}
	l.steps.reset()
	msgs := make([]kafkago.Message, len(batch))
	fetch, queue := l.m.stages[stageFetch], l.m.stages[stageQueue]
	for i, f := range batch {
		msgs[i] = f.msg
		if !f.msg.Time.IsZero() {
			d := max(0, f.taken.Sub(f.msg.Time))
			fetch.Observe(d.Seconds())
			l.cur.maxFetch = max(l.cur.maxFetch, d)
		}
		queue.Observe(now.Sub(f.taken).Seconds())
		if f.taken.Before(l.cur.oldest) {
			l.cur.oldest = f.taken
		}
	}
	l.cur.maxQueue = now.Sub(l.cur.oldest)
	return msgs
}

// slowBatch logs the batch just handed to the committer when its oldest record took Config.SlowBatch or
// more from being fetched to its offsets handed over (the queue behind the previous batch included), or
// one of its records that long from its timestamp to being fetched: with each stage and step of the
// batch, it says what a record that waited was waiting for.
func (l *lane) slowBatch(msgs []kafkago.Message) {
	if l.p.cfg.SlowBatch <= 0 {
		return
	}
	now := time.Now()
	if now.Sub(l.cur.oldest) < l.p.cfg.SlowBatch && l.cur.maxFetch < l.p.cfg.SlowBatch {
		return
	}
	l.p.metrics.slowBatches.Inc()
	parts := map[int]bool{}
	for _, m := range msgs {
		parts[m.Partition] = true
	}
	c := l.cur
	l.log.Warn("slow batch", "records", len(msgs), "partitions", slices.Sorted(maps.Keys(parts)),
		"age_ms", msOf(now.Sub(c.oldest)), "took_ms", msOf(now.Sub(c.start)), "max_fetch_ms", msOf(c.maxFetch),
		"max_queue_ms", msOf(c.maxQueue), "decode_ms", msOf(c.decode), "apply_ms", msOf(c.apply),
		"db_commit_ms", msOf(c.dbCommit), "commit_wait_ms", msOf(c.commitWait), "attempts", c.attempts,
		slog.Group("steps_ms", l.steps.attrs()...))
}

// process takes one batch to its end: dead letters written, events applied, offsets handed to the
// committer. It returns an error only when ctx ended and the grace period ran out first; then the
// batch's offsets were not handed over.
func (l *lane) process(ctx context.Context, msgs []kafkago.Message) error {
	l.p.metrics.recordsConsumed.Add(float64(len(msgs)))
	l.m.batchSize.Observe(float64(len(msgs)))
	bctx, cancel := graceContext(ctx, l.p.cfg.ShutdownTimeout)
	defer cancel()
	l.moved()
	l.progress.inBatch.Store(true)
	defer func() {
		l.moved()
		l.progress.inBatch.Store(false)
	}()

	decodeStart := time.Now()
	events, srcs, dead := l.decode(msgs)
	l.cur.decode = time.Since(decodeStart)
	if err := l.deadLetter(bctx, dead); err != nil {
		return abandoned(msgs, "dead_letter", err)
	}
	// Messages that have no effect by rule never reach the store (contract §3.2).
	events, srcs, skipped := l.filter(events, srcs)
	res := conversation.BatchResult{}
	if len(events) > 0 {
		var err error
		if res, err = l.apply(bctx, events, srcs); err != nil {
			return abandoned(msgs, "apply", err)
		}
	}
	res.Skipped = skipped
	l.p.metrics.observe(res)
	// Only the wait for room in the commit queue is on the critical path (commit_wait); the commit
	// itself is timed apart (offset_commit).
	start := time.Now()
	c := l.currentCommitter()
	if c.full() {
		l.progress.awaitingCommit.Store(true)
		defer l.progress.awaitingCommit.Store(false)
	}
	if err := c.hand(bctx, appliedBatch{last: lastPerPartition(msgs), records: len(msgs), batches: 1}); err != nil {
		return abandoned(msgs, "commit", err)
	}
	l.cur.commitWait = time.Since(start)
	l.m.since(stageCommitWait, start)
	l.slowBatch(msgs)
	return nil
}

// deadLetter writes dead letters until they are all written (retrying any failure; a letter too large
// for the dead-letter topic is written reduced) and counts them by reason.
func (l *lane) deadLetter(ctx context.Context, dead []kafkago.Message) error {
	pending := dead
	if err := l.retry(ctx, "dead_letter", l.p.metrics.dlqFailures, func(ctx context.Context) error {
		var err error
		var reduced int
		pending, reduced, err = writePending(ctx, l.p.dlq, pending)
		if reduced > 0 {
			l.p.metrics.reducedLetters.Add(float64(reduced))
			l.log.Warn("dead letters over the dead-letter topic's size limit, written reduced", "count", reduced,
				"dlq_topic", l.p.cfg.DLQTopic)
		}
		return err
	}); err != nil {
		return err
	}
	for _, d := range dead {
		l.p.metrics.deadLettered.WithLabelValues(reasonOf(d)).Inc()
	}
	return nil
}

// filter drops the messages that have no effect by rule (Config.Skip), keeping srcs aligned.
func (l *lane) filter(events []conversation.Event, srcs []kafkago.Message) ([]conversation.Event, []kafkago.Message, int) {
	return conversation.FilterAlong(&l.p.cfg.Skip, events, srcs)
}

// apply applies the batch's events in one transaction, retrying failures with backoff. After
// PoisonAttempts failures in a row that are not transient, the batch is isolated: applied in halves,
// recursively, in event order, until the events that fail alone are found; those are dead-lettered as
// apply_failed and the others applied. A transient failure at any point is retried as such, and resets
// the count. It returns an error only when ctx ends first; then the batch's offsets must not move.
func (l *lane) apply(ctx context.Context, events []conversation.Event, srcs []kafkago.Message) (conversation.BatchResult, error) {
	var res conversation.BatchResult
	nonTransient := 0
	err := l.retry(ctx, "apply", l.m.applyFailures, func(ctx context.Context) error {
		if nonTransient >= l.p.cfg.PoisonAttempts {
			r, err := l.isolate(ctx, events, srcs)
			res = r
			return err
		}
		start := time.Now()
		r, err := l.applyBatch(ctx, events)
		switch {
		case err == nil:
			l.p.metrics.applySeconds.Observe(time.Since(start).Seconds())
			res = r
		case transient(err):
			nonTransient = 0
		default:
			nonTransient++
		}
		return err
	})
	return res, err
}

// applyBatch is the store's ApplyBatch, observing the apply and database commit stages of a success,
// and the steps of every attempt when the store lets them be timed.
func (l *lane) applyBatch(ctx context.Context, events []conversation.Event) (conversation.BatchResult, error) {
	start := time.Now()
	if l.p.cfg.TimeSteps != nil {
		ctx = l.p.cfg.TimeSteps(ctx, l.steps.wrap, l.steps.observe)
	}
	res, err := l.p.store.ApplyBatch(ctx, events)
	took := time.Since(start)
	l.cur.attempts++
	l.cur.apply += took
	if err == nil {
		l.cur.apply -= res.CommitTime
		l.cur.dbCommit += res.CommitTime
		l.m.stages[stageApply].Observe((took - res.CommitTime).Seconds())
		l.m.stages[stageDBCommit].Observe(res.CommitTime.Seconds())
	}
	return res, err
}

// isolate applies events in halves, recursively and in order, dead-letters each event that fails alone
// with an error that is not transient, and returns the sum of what the applied parts did. A transient
// error stops it: the caller retries, and the parts already applied are then duplicates, which change
// nothing (the store applies each (storage key, message_seq) once, and membership changes re-applied
// in order end in the same state).
func (l *lane) isolate(ctx context.Context, events []conversation.Event, srcs []kafkago.Message) (conversation.BatchResult, error) {
	r, err := l.applyBatch(ctx, events)
	l.moved()
	switch {
	case err == nil:
		return r, nil
	case transient(err) || ctx.Err() != nil:
		return r, err
	case len(events) == 1:
		m := srcs[0]
		l.p.metrics.isolated.Inc()
		l.log.Error("record fails alone, dead-lettered", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset,
			"reason", ReasonApplyFailed, "class", errorClass(err), "error", err.Error())
		letter := deadLetter(m, ReasonApplyFailed, err)
		letter.Headers = append(letter.Headers, kafkago.Header{Key: HeaderErrorClass, Value: []byte(errorClass(err))})
		return conversation.BatchResult{}, l.deadLetter(ctx, []kafkago.Message{letter})
	}
	half := len(events) / 2
	left, err := l.isolate(ctx, events[:half], srcs[:half])
	if err != nil {
		return left, err
	}
	right, err := l.isolate(ctx, events[half:], srcs[half:])
	return sum(left, right), err
}

// retry runs op until it succeeds or ctx ends, waiting an exponential, jittered backoff between attempts.
// Each failure is counted and logged once; readiness says which step is failing until it succeeds.
func (l *lane) retry(ctx context.Context, step string, failures interface{ Inc() }, op func(context.Context) error) error {
	for attempt := 1; ; attempt++ {
		err := op(ctx)
		l.moved()
		if err == nil {
			if attempt > 1 {
				l.failing.Store(nil)
				l.log.Info("recovered", "step", step, "attempts", attempt)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		failures.Inc()
		l.failing.Store(&step)
		wait := backoff(l.p.cfg.RetryMinBackoff, l.p.cfg.RetryMaxBackoff, attempt)
		l.log.Warn("step failed, retrying the batch", "step", step, "attempt", attempt, "retry_in", wait.String(),
			"kind", errorKind(err), "error", err.Error())
		if !sleep(ctx, wait) {
			return ctx.Err()
		}
	}
}

// spread deals the partitions of a generation to n lanes: sorted by id, the i-th to lane i mod n, so
// each lane gets a fair share of them whatever ids the group assigned.
func spread(parts []kafkago.PartitionAssignment, n int) [][]kafkago.PartitionAssignment {
	sorted := slices.SortedFunc(slices.Values(parts), func(a, b kafkago.PartitionAssignment) int { return a.ID - b.ID })
	out := make([][]kafkago.PartitionAssignment, n)
	for i, a := range sorted {
		out[i%n] = append(out[i%n], a)
	}
	return out
}

func abandoned(msgs []kafkago.Message, step string, err error) error {
	return fmt.Errorf("%w: %d records, at step %s: %w", ErrAbandoned, len(msgs), step, err)
}
