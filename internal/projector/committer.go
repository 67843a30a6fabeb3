package projector

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// Offsets are committed off the critical path. A synchronous commit is a round trip to the group
// coordinator (~6 ms) during which the next batch would wait, so once a batch reached its end the lane
// hands its offsets to its committer and goes on. The committer commits in the background, one commit at
// a time and in the order batches were handed over, coalescing whatever queued meanwhile into one commit
// of the newest offset per partition. The queue is bounded (Config.UncommittedBatches): when commits fail
// or hang, the lane waits for room instead of running further ahead of its committed offsets.

// appliedBatch is what the committer needs of a batch that reached its end.
type appliedBatch struct {
	last    []kafkago.Message // the last record of each partition in the batch
	records int
	batches int
}

// merge adds b, handed over after a: b's offset of a partition replaces a's, whatever its value (after a
// rebalance a partition may be delivered again from an older offset, and the newest batch says where the
// member now stands, as a synchronous commit per batch would have left it).
func (a appliedBatch) merge(b appliedBatch) appliedBatch {
	out := appliedBatch{records: a.records + b.records, batches: a.batches + b.batches}
	idx := map[int]int{}
	for _, m := range append(append([]kafkago.Message(nil), a.last...), b.last...) {
		if i, ok := idx[m.Partition]; ok {
			out.last[i] = m
			continue
		}
		idx[m.Partition] = len(out.last)
		out.last = append(out.last, m)
	}
	return out
}

// committer commits the offsets of applied batches in the background (see above).
type committer struct {
	commit func(ctx context.Context, msgs ...kafkago.Message) error
	// committed is called after each successful commit, with what it covered.
	committed func(appliedBatch)
	failures  interface{ Inc() }
	log       *slog.Logger

	minBackoff, maxBackoff time.Duration

	queue chan appliedBatch
	// waiting counts the batches handed over whose offsets are neither committed nor dropped; at is the
	// unix nanoseconds of the committer's last step (an attempt returned, or work came to it idle).
	// Liveness reads both: offsets waiting and no step for long is a hung commit.
	waiting atomic.Int64
	at      atomic.Int64
	// failing is set from a failed attempt until a commit succeeds: readiness reads it.
	failing atomic.Bool
}

func newCommitter(capacity int, commit func(context.Context, ...kafkago.Message) error,
	committed func(appliedBatch), failures interface{ Inc() }, minBackoff, maxBackoff time.Duration, log *slog.Logger) *committer {
	return &committer{commit: commit, committed: committed, failures: failures, log: log,
		minBackoff: minBackoff, maxBackoff: maxBackoff, queue: make(chan appliedBatch, capacity)}
}

// hand queues an applied batch's offsets for commit. It waits while the queue is full (commits are
// failing or slow) and returns ctx's error if ctx ends first; then the batch was not handed over and
// its offsets will not be committed.
func (c *committer) hand(ctx context.Context, b appliedBatch) error {
	if c.waiting.Add(int64(b.batches)) == int64(b.batches) {
		c.at.Store(time.Now().UnixNano()) // an idle committer gets work: its clock starts now
	}
	select {
	case c.queue <- b:
		return nil
	default:
	}
	select {
	case c.queue <- b:
		return nil
	case <-ctx.Done():
		c.waiting.Add(-int64(b.batches))
		return ctx.Err()
	}
}

// full reports whether hand would wait.
func (c *committer) full() bool { return len(c.queue) == cap(c.queue) }

// run commits what is handed over until the queue is closed and drained, and returns nil then. When ctx
// ends first (the shutdown grace ran out) it returns an error wrapping ErrAbandoned that counts the
// applied records whose offsets were not committed: they will be delivered again, harmlessly.
func (c *committer) run(ctx context.Context) error {
	for {
		b, ok := <-c.queue
		if !ok {
			return nil
		}
		c.at.Store(time.Now().UnixNano())
		for more := true; more; {
			select {
			case next, ok := <-c.queue:
				if !ok {
					more = false
					break
				}
				b = b.merge(next)
			default:
				more = false
			}
		}
		if err := c.commitRetrying(ctx, b); err != nil {
			for next := range c.queue { // the lane closes the queue once it has stopped
				b = b.merge(next)
			}
			return fmt.Errorf("%w: offsets of %d applied records in %d batches not committed: %w", ErrAbandoned,
				b.records, b.batches, err)
		}
	}
}

// commitRetrying commits b's offsets, retrying failures with backoff until one succeeds or ctx ends. A
// lane's committer lives for one generation of the group, during which the lane owns its partitions:
// a commit is retried until it succeeds or the generation ended and its grace ran out (then the offsets
// are dropped, and the partitions' next owner replays those records, harmlessly).
func (c *committer) commitRetrying(ctx context.Context, b appliedBatch) error {
	for attempt := 1; ; attempt++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		err := c.commit(ctx, b.last...)
		c.at.Store(time.Now().UnixNano())
		if err == nil {
			if attempt > 1 {
				c.log.Info("recovered", "step", "commit", "attempts", attempt)
			}
			c.committed(b)
			c.done(b)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.failures.Inc()
		c.failing.Store(true)
		wait := backoff(c.minBackoff, c.maxBackoff, attempt)
		c.log.Warn("offset commit failed, retrying", "step", "commit", "attempt", attempt, "retry_in", wait.String(),
			"batches", b.batches, "error", err.Error())
		if !sleep(ctx, wait) {
			return ctx.Err()
		}
	}
}

// done marks b's batches as no longer waiting.
func (c *committer) done(b appliedBatch) {
	c.waiting.Add(-int64(b.batches))
	c.failing.Store(false)
}
