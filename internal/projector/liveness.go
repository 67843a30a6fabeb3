package projector

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// ErrStalled is what Stalled returns when a lane made no progress for Config.StallAfter while records
// were waiting: a call that hangs (a database or broker connection that stopped answering without
// closing) or a client stuck in a deadlock. Nothing but a restart helps then, so /healthz reports it.
var ErrStalled = fmt.Errorf("consume loop stalled")

// progress is what liveness knows of one lane: when it last moved, whether it holds a batch, and how far
// behind each partition it applies was at its last commit. (What it knows of the lane's committer, the
// committer holds.)
type progress struct {
	// loopAt and fetchAt are the unix nanoseconds of the lane's last step (an attempt at a step
	// returned, a batch began or ended) and of the last return of a fetch of its partitions. They are
	// apart because fetching runs ahead of the lane: records that keep arriving must not hide a batch
	// that hangs.
	loopAt, fetchAt atomic.Int64
	inBatch         atomic.Bool
	// awaitingCommit is set while the lane waits for room in its commit queue: its liveness is then the
	// committer's.
	awaitingCommit atomic.Bool

	mu  sync.Mutex
	lag map[int]int64 // by partition, the lane's partitions of the current generation only
}

// moved records a step of the lane: an attempt at a step returned, a batch began or ended.
func (l *lane) moved() { l.progress.loopAt.Store(time.Now().UnixNano()) }

// Stalled returns nil while every lane and its committer are live: each moved within
// Config.StallAfter, or has nothing to do (the lane: no batch in hand, every partition it applies caught
// up at its last commit; the committer: no applied batch waiting for its offsets). Otherwise it returns
// an error wrapping ErrStalled that names the lane and says for how long and why records are waiting. A
// commit that keeps failing is not a stall (each attempt is a step; readiness reports it); one that
// never returns is. A lane that stalls does not hold the others, but one stalled lane is enough to
// report: its partitions wait.
func (p *Projector) Stalled() error {
	var errs []error
	for _, l := range p.lanes {
		if err := l.stalled(p.cfg.StallAfter); err != nil {
			errs = append(errs, fmt.Errorf("lane %d: %w", l.id, err))
		}
	}
	return errors.Join(errs...)
}

func (l *lane) stalled(after time.Duration) error {
	if c := l.currentCommitter(); c != nil {
		if n := c.waiting.Load(); n > 0 {
			if idle := time.Since(time.Unix(0, c.at.Load())); idle > after {
				return fmt.Errorf("%w: no offset commit returned for %s while %d applied batches wait for one", ErrStalled,
					idle.Round(time.Second), n)
			}
		}
	}
	if l.progress.awaitingCommit.Load() {
		return nil // the lane waits for the committer, which is live
	}
	if l.progress.inBatch.Load() {
		idle := time.Since(time.Unix(0, l.progress.loopAt.Load()))
		if idle <= after {
			return nil
		}
		step := l.step()
		if step == "" {
			step = "a batch"
		}
		return fmt.Errorf("%w: no progress for %s at %s", ErrStalled, idle.Round(time.Second), step)
	}
	idle := time.Since(time.Unix(0, max(l.progress.fetchAt.Load(), l.progress.loopAt.Load())))
	if idle <= after {
		return nil
	}
	l.progress.mu.Lock()
	defer l.progress.mu.Unlock()
	var behind int64
	for _, n := range l.progress.lag {
		behind += n
	}
	if behind == 0 {
		return nil
	}
	return fmt.Errorf("%w: no record fetched for %s while %d wait", ErrStalled, idle.Round(time.Second), behind)
}

// committedLag records, after a commit, how far behind its partition's end each last record was.
func (l *lane) committedLag(last []kafkago.Message) {
	l.progress.mu.Lock()
	defer l.progress.mu.Unlock()
	for _, m := range last {
		lag := max(0, m.HighWaterMark-m.Offset-1)
		l.progress.lag[m.Partition] = lag
		l.p.metrics.consumerLag.WithLabelValues(strconv.Itoa(m.Partition)).Set(float64(lag))
	}
}

// assigned starts a generation of the lane: its partitions are parts, it forgets the lag of the others.
func (l *lane) assigned(parts []int) {
	l.progress.mu.Lock()
	defer l.progress.mu.Unlock()
	l.progress.lag = make(map[int]int64, len(parts))
	l.m.partitions.Set(float64(len(parts)))
}

// owned forgets the lag of the partitions this member no longer owns, in the gauge: a partition handed
// to another member is that member's to report.
func (p *Projector) owned(partitions []int) {
	p.ownedMu.Lock()
	defer p.ownedMu.Unlock()
	keep := make(map[int]bool, len(partitions))
	for _, part := range partitions {
		keep[part] = true
	}
	for part := range p.reported {
		if !keep[part] {
			p.metrics.consumerLag.DeleteLabelValues(strconv.Itoa(part))
		}
	}
	p.reported = keep
}

// progressFetcher notes every return of FetchMessage as the lane's fetch progress.
type progressFetcher struct {
	fetcher
	l *lane
}

func (f progressFetcher) FetchMessage(ctx context.Context) (kafkago.Message, error) {
	m, err := f.fetcher.FetchMessage(ctx)
	f.l.progress.fetchAt.Store(time.Now().UnixNano())
	return m, err
}
