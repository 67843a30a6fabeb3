package projector

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// ErrStalled is what Stalled returns when the loop made no progress for Config.StallAfter while records
// were waiting: a call that hangs (a database or broker connection that stopped answering without
// closing) or a client stuck in a deadlock. Nothing but a restart helps then, so /healthz reports it.
var ErrStalled = fmt.Errorf("consume loop stalled")

// progress is what liveness knows of the loop: when it last moved, whether it holds a batch, and how far
// behind each partition it owns was at its last commit. (What it knows of the committer, the committer
// holds.)
type progress struct {
	// loopAt and fetchAt are the unix nanoseconds of the loop's last step (an attempt at a step
	// returned, a batch began or ended) and of the last return of a fetch. They are apart because
	// fetching runs ahead of the loop: records that keep arriving must not hide a batch that hangs.
	loopAt, fetchAt atomic.Int64
	inBatch         atomic.Bool
	// awaitingCommit is set while the loop waits for room in the commit queue: its liveness is then the
	// committer's.
	awaitingCommit atomic.Bool

	mu       sync.Mutex
	lag      map[int]int64 // by partition, owned partitions only
	assigned map[int]bool  // the partitions the group last said this member owns; nil: not known yet
}

// moved records a step of the loop: an attempt at a step returned, a batch began or ended.
func (p *Projector) moved() { p.progress.loopAt.Store(time.Now().UnixNano()) }

// Stalled returns nil while the loop and the committer are live: each moved within Config.StallAfter, or
// has nothing to do (the loop: no batch in hand, every partition it owns caught up at its last commit;
// the committer: no applied batch waiting for its offsets). Otherwise it returns an error wrapping
// ErrStalled that says for how long and why records are waiting. A commit that keeps failing is not a
// stall (each attempt is a step; readiness reports it); one that never returns is.
func (p *Projector) Stalled() error {
	c := p.committer
	if n := c.waiting.Load(); n > 0 {
		if idle := time.Since(time.Unix(0, c.at.Load())); idle > p.cfg.StallAfter {
			return fmt.Errorf("%w: no offset commit returned for %s while %d applied batches wait for one", ErrStalled,
				idle.Round(time.Second), n)
		}
	}
	if p.progress.awaitingCommit.Load() {
		return nil // the loop waits for the committer, which is live
	}
	if p.progress.inBatch.Load() {
		idle := time.Since(time.Unix(0, p.progress.loopAt.Load()))
		if idle <= p.cfg.StallAfter {
			return nil
		}
		step := p.Failing()
		if step == "" {
			step = "a batch"
		}
		return fmt.Errorf("%w: no progress for %s at %s", ErrStalled, idle.Round(time.Second), step)
	}
	idle := time.Since(time.Unix(0, max(p.progress.fetchAt.Load(), p.progress.loopAt.Load())))
	if idle <= p.cfg.StallAfter {
		return nil
	}
	p.progress.mu.Lock()
	defer p.progress.mu.Unlock()
	var behind int64
	for _, n := range p.progress.lag {
		behind += n
	}
	if behind == 0 {
		return nil
	}
	return fmt.Errorf("%w: no record fetched for %s while %d wait", ErrStalled, idle.Round(time.Second), behind)
}

// committedLag records, after a commit, how far behind its partition's end each last record was.
func (p *Projector) committedLag(last []kafkago.Message) {
	p.progress.mu.Lock()
	defer p.progress.mu.Unlock()
	for _, m := range last {
		lag := max(0, m.HighWaterMark-m.Offset-1)
		p.progress.lag[m.Partition] = lag
		p.metrics.consumerLag.WithLabelValues(strconv.Itoa(m.Partition)).Set(float64(lag))
	}
}

// owned forgets the lag of the partitions this member no longer owns, in the gauge and for liveness: a
// partition handed to another member is that member's to report.
func (p *Projector) owned(partitions []int) {
	p.progress.mu.Lock()
	defer p.progress.mu.Unlock()
	p.progress.assigned = map[int]bool{}
	for _, part := range partitions {
		p.progress.assigned[part] = true
	}
	for part := range p.progress.lag {
		if !slices.Contains(partitions, part) {
			delete(p.progress.lag, part)
			p.metrics.consumerLag.DeleteLabelValues(strconv.Itoa(part))
		}
	}
}

// owns reports whether this member owns partition, as far as the last assignment check knows (true
// before the first).
func (p *Projector) owns(partition int) bool {
	p.progress.mu.Lock()
	defer p.progress.mu.Unlock()
	return p.progress.assigned == nil || p.progress.assigned[partition]
}

// progressFetcher notes every return of FetchMessage as progress.
type progressFetcher struct {
	fetcher
	p *Projector
}

func (f progressFetcher) FetchMessage(ctx context.Context) (kafkago.Message, error) {
	m, err := f.fetcher.FetchMessage(ctx)
	f.p.progress.fetchAt.Store(time.Now().UnixNano())
	return m, err
}

// newClientID names this member in the group, so that watchAssignment can find its partitions.
func newClientID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "conv-projector-" + hex.EncodeToString(b)
}

// watchAssignment asks the group coordinator, every Config.AssignmentCheckInterval, which partitions of
// the events topic this member owns, and forgets the others (owned). It only acts on a stable group: in
// the middle of a rebalance assignments are empty for everyone.
func (p *Projector) watchAssignment(ctx context.Context) {
	transport := p.cfg.Kafka.Transport()
	defer transport.CloseIdleConnections()
	client := &kafkago.Client{Addr: kafkago.TCP(p.cfg.Brokers...), Timeout: 5 * time.Second, Transport: transport}
	t := time.NewTicker(p.cfg.AssignmentCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if parts, ok := p.assignment(ctx, client); ok {
			p.owned(parts)
		}
	}
}

// assignment returns the partitions of the events topic the group assigns to this member, and false when
// the group is not stable or the coordinator did not answer.
func (p *Projector) assignment(ctx context.Context, c *kafkago.Client) ([]int, bool) {
	res, err := c.DescribeGroups(ctx, &kafkago.DescribeGroupsRequest{GroupIDs: []string{p.cfg.GroupID}})
	if err != nil || len(res.Groups) != 1 || res.Groups[0].Error != nil || res.Groups[0].GroupState != "Stable" {
		return nil, false
	}
	var parts []int
	for _, m := range res.Groups[0].Members {
		if m.ClientID != p.clientID {
			continue
		}
		for _, t := range m.MemberAssignments.Topics {
			if t.Topic == p.cfg.Topic {
				parts = append(parts, t.Partitions...)
			}
		}
	}
	return parts, true
}
