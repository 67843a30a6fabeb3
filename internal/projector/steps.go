package projector

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/convsync/conversations/internal/conversation"
)

// Steps of a batch. The store's transaction runs conversation.RunBatch on a conversation.BatchTx; when
// the store lets the steps be timed (Config.TimeSteps: internal/mysql.WithBatchTiming), each BatchTx
// method is a step under its own name, and so are the store's own begin, flush (its queued
// writes' round trip), commit and retry_wait. They show in conv_projector_batch_step_seconds and
// in the slow-batch log, which is how a batch's apply time is told apart: the database's reads, its
// writes, or waits for another lane's locks (docs/operations.md).

// Step names (the step label of conv_projector_batch_step_seconds).
const (
	stepBegin           = "begin"
	stepLockChannels    = "lock_channels"
	stepAppliedMessages = "applied_messages"
	stepMembers         = "members"
	stepRowsForUpdate   = "rows_for_update"
	stepLateSince       = "late_since"
	stepBumpVersions    = "bump_versions"
	stepWriteRows       = "write_rows"
	stepWriteChannels   = "write_channels"
	stepFlush           = "flush"
	stepCommit          = "commit"
	stepRetryWait       = "retry_wait"
)

// BatchSteps are the steps of a batch (the step label of conv_projector_batch_step_seconds), in the
// order a batch takes them.
var BatchSteps = []string{stepBegin, stepLockChannels, stepAppliedMessages, stepMembers, stepRowsForUpdate, stepLateSince,
	stepBumpVersions, stepWriteRows, stepWriteChannels, stepFlush, stepCommit, stepRetryWait}

// stepTimer observes a lane's steps into the step histogram and adds them up per batch for the
// slow-batch log. A lane applies one batch at a time, so it needs no lock.
type stepTimer struct {
	observers map[string]prometheus.Observer
	vec       *prometheus.HistogramVec
	lane      string
	// batch is the current batch's time per step, summed over its attempts and its calls.
	batch map[string]time.Duration
}

func newStepTimer(vec *prometheus.HistogramVec, lane string) *stepTimer {
	t := &stepTimer{observers: map[string]prometheus.Observer{}, vec: vec, lane: lane, batch: map[string]time.Duration{}}
	for _, s := range BatchSteps {
		t.observers[s] = vec.WithLabelValues(lane, s)
	}
	return t
}

// reset starts a new batch.
func (t *stepTimer) reset() { clear(t.batch) }

// observe notes that step took d.
func (t *stepTimer) observe(step string, d time.Duration) {
	o, ok := t.observers[step]
	if !ok { // a step the store added: its name is still from code, so the label values stay few
		o = t.vec.WithLabelValues(t.lane, step)
		t.observers[step] = o
	}
	o.Observe(d.Seconds())
	t.batch[step] += d
}

// wrap decorates a BatchTx so that each of its methods is timed.
func (t *stepTimer) wrap(tx conversation.BatchTx) conversation.BatchTx { return timedTx{tx: tx, t: t} }

// attrs returns the current batch's steps in ms, in batch order, for the slow-batch log.
func (t *stepTimer) attrs() []any {
	var out []any
	names := append([]string(nil), BatchSteps...)
	for s := range t.batch {
		if !slices.Contains(names, s) {
			names = append(names, s)
		}
	}
	for _, s := range names {
		if d, ok := t.batch[s]; ok {
			out = append(out, slog.Float64(s, msOf(d)))
		}
	}
	return out
}

func msOf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// timedTx is a conversation.BatchTx that times each call of tx's methods as a step.
type timedTx struct {
	tx conversation.BatchTx
	t  *stepTimer
}

func (x timedTx) since(step string, start time.Time) { x.t.observe(step, time.Since(start)) }

func (x timedTx) LockChannels(ctx context.Context, keys []conversation.ChannelKey) (map[conversation.ChannelKey]conversation.ChannelState, error) {
	defer x.since(stepLockChannels, time.Now())
	return x.tx.LockChannels(ctx, keys)
}

func (x timedTx) AppliedMessages(ctx context.Context, keys []conversation.MessageKey) (map[conversation.MessageKey]bool, error) {
	defer x.since(stepAppliedMessages, time.Now())
	return x.tx.AppliedMessages(ctx, keys)
}

func (x timedTx) Members(ctx context.Context, whole []conversation.ChannelKey, named []conversation.Member) (map[conversation.ChannelKey][]string, error) {
	defer x.since(stepMembers, time.Now())
	return x.tx.Members(ctx, whole, named)
}

func (x timedTx) RowsForUpdate(ctx context.Context, keys []conversation.ConvKey) (map[conversation.ConvKey]conversation.Row, error) {
	defer x.since(stepRowsForUpdate, time.Now())
	return x.tx.RowsForUpdate(ctx, keys)
}

func (x timedTx) LateSince(ctx context.Context, since map[conversation.ChannelKey]int64) (map[conversation.ChannelKey][]conversation.LateMsg, error) {
	defer x.since(stepLateSince, time.Now())
	return x.tx.LateSince(ctx, since)
}

func (x timedTx) BumpVersions(ctx context.Context, uids []string) (map[string]int64, error) {
	defer x.since(stepBumpVersions, time.Now())
	return x.tx.BumpVersions(ctx, uids)
}

func (x timedTx) WriteRows(ctx context.Context, rows []conversation.Row) error {
	defer x.since(stepWriteRows, time.Now())
	return x.tx.WriteRows(ctx, rows)
}

func (x timedTx) WriteChannels(ctx context.Context, w conversation.ChannelWrites) error {
	defer x.since(stepWriteChannels, time.Now())
	return x.tx.WriteChannels(ctx, w)
}

var _ conversation.BatchTx = timedTx{}
