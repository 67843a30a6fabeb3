package projector

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/convsync/conversations/internal/conversation"
)

// Metrics are the projector's Prometheus metrics, all named conv_projector_*. Counters of what a batch
// did move only once its transaction committed, so a retried batch is counted once.
type Metrics struct {
	recordsConsumed prometheus.Counter
	// recordsCommitted counts records whose offsets are committed: with recordsConsumed it shows the
	// backlog inside the projector, and the benchmark's steady-rate search reads it.
	recordsCommitted prometheus.Counter
	messagesApplied  prometheus.Counter
	duplicates       prometheus.Counter
	belowWindow      prometheus.Counter
	skipped          prometheus.Counter
	memberships      prometheus.Counter
	rowsWritten      prometheus.Counter
	deadLettered     *prometheus.CounterVec
	reducedLetters   prometheus.Counter
	isolated         prometheus.Counter
	batchSize        *prometheus.HistogramVec
	applySeconds     prometheus.Histogram
	applyFailures    *prometheus.CounterVec
	dlqFailures      prometheus.Counter
	commitFailures   prometheus.Counter
	consumerLag      *prometheus.GaugeVec
	commits          prometheus.Counter
	stageSeconds     *prometheus.HistogramVec
	lanePartitions   *prometheus.GaugeVec
	generations      prometheus.Counter
	stepSeconds      *prometheus.HistogramVec
	slowBatches      prometheus.Counter
}

// batchRecordsBuckets are the buckets of conv_projector_batch_records. They reach the largest batch
// bound the projector accepts (BATCH_MAX_RECORDS up to 50000), so a full batch of the default 5000
// is not lumped into +Inf with everything above 2500.
var batchRecordsBuckets = []float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000}

// NewMetrics creates the metrics and registers them with reg. It fails when reg already holds them: give
// each Projector in a process its own registry.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "conv", Subsystem: "projector", Name: name, Help: help})
	}
	m := &Metrics{
		recordsConsumed:  counter("records_consumed_total", "Records fetched from the events topic (a redelivered record counts again)."),
		recordsCommitted: counter("records_committed_total", "Records whose batch reached its end and whose offsets were committed."),
		messagesApplied:  counter("messages_applied_total", "message.sent events applied for the first time."),
		duplicates:       counter("duplicates_skipped_total", "Messages whose (storage key, message_seq) was already applied."),
		belowWindow:      counter("below_window_total", "Messages older than their channel's kept window, treated as already applied."),
		skipped:          counter("skipped_total", "Messages with no effect by rule: no_persist, sync_once or a skipped channel type."),
		memberships:      counter("memberships_applied_total", "channel.subscribers.* events applied."),
		rowsWritten:      counter("rows_written_total", "Conversation rows inserted or updated."),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "conv", Subsystem: "projector",
			Name: "dead_lettered_total", Help: "Bad records sent to the dead-letter topic, by reason."}, []string{"reason"}),
		reducedLetters: counter("dead_letters_reduced_total",
			"Dead letters the dead-letter topic refused for size, written reduced (headers and a prefix of the value)."),
		isolated: counter("poison_records_total",
			"Records that decoded but failed alone to apply, with an error that is not transient: dead-lettered as apply_failed."),
		batchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "conv", Subsystem: "projector",
			Name: "batch_records", Help: "Records per batch, by lane.", Buckets: batchRecordsBuckets}, []string{"lane"}),
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "conv", Subsystem: "projector",
			Name: "apply_seconds", Help: "Duration of a successful store transaction applying one batch.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		applyFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "conv", Subsystem: "projector",
			Name: "apply_failures_total", Help: "Failed attempts to apply a batch (each is retried), by lane."}, []string{"lane"}),
		dlqFailures:    counter("dead_letter_failures_total", "Failed attempts to write a batch's dead letters (each is retried)."),
		commitFailures: counter("commit_failures_total", "Failed attempts to commit offsets (each is retried, in the background)."),
		consumerLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "conv", Subsystem: "projector",
			Name: "consumer_lag", Help: "Records behind the partition's end after the last committed batch."}, []string{"partition"}),
		commits: counter("commits_total", "Batches whose offsets were committed."),
		stageSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "conv", Subsystem: "projector",
			Name: "stage_seconds", Help: "Where a record's time goes, by stage: fetch (record timestamp to fetched, per " +
				"record), queue (fetched to its batch starting, per record), decode, apply (the store transaction up to its " +
				"commit), db_commit, commit_wait (per batch: the loop waiting for room in the offset commit queue, the only " +
				"part of the offset commit on a record's way), offset_commit (per commit, in the background; one may cover " +
				"several batches), by lane.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16)}, []string{"lane", "stage"}),
		lanePartitions: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "conv", Subsystem: "projector",
			Name: "lane_partitions", Help: "Partitions of the events topic each lane applies in the current generation of the group."},
			[]string{"lane"}),
		generations: counter("generations_total", "Generations of the consumer group this member took part in (each rebalance starts one)."),
		stepSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "conv", Subsystem: "projector",
			Name: "batch_step_seconds", Help: "Duration of each step of a batch's store transaction, per call and attempt: begin, " +
				"the conversation.BatchTx methods (lock_channels, applied_messages, members, rows_for_update, late_since, " +
				"bump_versions, write_rows, write_channels; with several statements per round trip the writes only queue " +
				"there), flush (the queued writes' round trip), commit, retry_wait (backoff before retrying a conflict), by lane.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}, []string{"lane", "step"}),
		slowBatches: counter("slow_batches_total", "Batches logged as slow: their oldest record took SLOW_BATCH or more "+
			"from fetched to its offsets handed to the committer."),
	}
	for _, r := range append(conversation.DeadLetterReasons(), ReasonApplyFailed) {
		m.deadLettered.WithLabelValues(r) // every reason shows from the start, at 0, so rate() works at once
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.recordsConsumed, m.recordsCommitted, m.messagesApplied, m.duplicates, m.belowWindow,
		m.skipped, m.memberships, m.rowsWritten, m.deadLettered, m.reducedLetters, m.isolated, m.batchSize, m.applySeconds, m.applyFailures,
		m.dlqFailures, m.commitFailures, m.consumerLag, m.commits, m.stageSeconds, m.lanePartitions, m.generations,
		m.stepSeconds, m.slowBatches} {
		errs = append(errs, reg.Register(c))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Metrics) observe(res conversation.BatchResult) {
	m.messagesApplied.Add(float64(res.Applied))
	m.duplicates.Add(float64(res.Duplicates))
	m.belowWindow.Add(float64(res.BelowWindow))
	m.skipped.Add(float64(res.Skipped))
	m.memberships.Add(float64(res.Memberships))
	m.rowsWritten.Add(float64(res.RowsWritten))
}

// Stages of a record's way through the projector (conv_projector_stage_seconds).
const (
	stageFetch        = "fetch"
	stageQueue        = "queue"
	stageDecode       = "decode"
	stageApply        = "apply"
	stageDBCommit     = "db_commit"
	stageCommitWait   = "commit_wait"
	stageOffsetCommit = "offset_commit"
)

// laneMetrics are the metrics one lane observes under its own label ("0", "1", …: at most Config.Lanes
// values, so the series stay few).
type laneMetrics struct {
	stages        map[string]prometheus.Observer
	batchSize     prometheus.Observer
	applyFailures prometheus.Counter
	partitions    prometheus.Gauge
}

// lane returns lane's metrics; each of its series shows from the start.
func (m *Metrics) lane(lane string) laneMetrics {
	lm := laneMetrics{stages: map[string]prometheus.Observer{}, batchSize: m.batchSize.WithLabelValues(lane),
		applyFailures: m.applyFailures.WithLabelValues(lane), partitions: m.lanePartitions.WithLabelValues(lane)}
	for _, st := range []string{stageFetch, stageQueue, stageDecode, stageApply, stageDBCommit, stageCommitWait, stageOffsetCommit} {
		lm.stages[st] = m.stageSeconds.WithLabelValues(lane, st)
	}
	return lm
}

// since observes the time since start as the stage's duration.
func (lm laneMetrics) since(stage string, start time.Time) {
	lm.stages[stage].Observe(time.Since(start).Seconds())
}
