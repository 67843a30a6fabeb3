// Package projector consumes the events topic into the read model (contract §1 and §3). It is the only
// code that knows the delivery semantics: fetch a batch of records, dead-letter the ones that can never
// be applied, apply the others in one store transaction, and only then commit the batch's offsets.
// The offset commit runs in the background (committer.go): the loop starts the next batch while the
// previous one's offsets are committed.
//
// Ack rules, i.e. when a record's offset is committed:
//   - Only once the record reached one of its two ends: its event was applied by a store transaction that
//     committed, or the record itself was written to the dead-letter topic with acks from all in-sync
//     replicas. Nothing else acknowledges a record: no timeout, no error, no shutdown. (A message that has
//     no effect by rule, contract §3.2, is applied by not sending it to the store; it is counted.)
//   - A batch's offsets are handed to the committer only after every record of the batch reached its
//     end, and the committer commits them asynchronously: one commit at a time, in the order batches
//     were handed over, several queued batches coalesced into one commit of each partition's offset in
//     the latest of them (a partition's records come in offset order, so that offset covers the earlier
//     batches' records of the partition, all of which reached their end).
//   - At most Config.UncommittedBatches applied batches wait for their commit; past that the loop waits
//     for the committer before it starts another batch, so a failing or hung commit holds the loop
//     rather than letting applied-but-uncommitted records (the replay after a crash) grow without bound.
//   - A failure never skips a record. A store error of any kind (unreachable, lock conflict, other) and
//     a failed dead-letter write are retried, the same batch again, a failed commit the same offsets
//     again (with any newer ones queued meanwhile only after it succeeded), with exponential backoff and
//     jitter, until they succeed or the context ends; readiness is false meanwhile. A commit that keeps
//     failing for a partition this member no longer owns (a rebalance moved it) is dropped for that
//     partition: its new owner commits its own offsets.
//   - A batch that is never committed (a crash, a shutdown that outlasted its grace, an acknowledgement
//     dropped after a rebalance) is delivered again. That is safe: the store applies each (storage key,
//     message_seq) once, so replayed events change nothing. A replayed bad record is dead-lettered again:
//     the dead-letter topic is at least once, the read model is exactly once.
//   - At shutdown the batch in flight finishes and the committer drains its queue, both within
//     Config.ShutdownTimeout after the context ended; whatever is left then is not committed (ErrAbandoned).
//
// Several Projectors in one consumer group share the topic's partitions; a rebalance may hand a
// partition over with uncommitted records, which the new owner replays, harmlessly.
package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/kafkaconn"
)

// Store is what the projector needs of the read model. ApplyBatch must apply a batch in one transaction
// and exactly once per (storage key, message_seq): after it returns nil every event's effect is
// committed, after an error nothing of the batch is (internal/mysql.Store is one). Its errors are logged
// as they are, so they must carry no bound values.
type Store interface {
	ApplyBatch(ctx context.Context, events []conversation.Event) (conversation.BatchResult, error)
}

// Config says where the projector reads and writes and how it batches. The zero value of each tunable
// picks the default named on it; Brokers, Topic, DLQTopic and GroupID are required.
type Config struct {
	Brokers []string
	// Kafka is how to connect to the brokers (TLS, SASL); nil connects in plaintext.
	Kafka *kafkaconn.Conn
	// Topic is the events topic (contract §1).
	Topic string
	// DLQTopic receives the records that can never be applied (contract §1.3).
	DLQTopic string
	// GroupID is the consumer group; projectors sharing it share the partitions.
	GroupID string
	// SessionTimeout is how long the group waits for a silent member (one that crashed) before giving
	// its partitions to the others (default 10s; the broker bounds it, 6s..30min by default).
	SessionTimeout time.Duration
	// BatchMaxRecords bounds a batch's number of records (default 5000), and how many records are fetched
	// ahead while a batch is applied. Under a backlog, larger batches coalesce more effects per row: a busy
	// group's members get one write per batch, not one per message. Under light load a batch is whatever
	// arrived while the previous one was applied, far fewer.
	BatchMaxRecords int
	// BatchMaxBytes bounds a batch's record keys and values, in bytes (default 16 MiB); a record larger
	// than this is a batch of its own.
	BatchMaxBytes int
	// BatchMaxWait, when > 0, lets a batch linger that long after its first record for more to arrive
	// (default 0: a batch is the records already fetched, applied at once; see fetch.go).
	BatchMaxWait time.Duration
	// MaxEventBytes: a record value over this size is dead-lettered as too_large (default 1 MiB).
	MaxEventBytes int
	// Skip lists the channel types whose messages are stored for nobody (contract §3.2).
	Skip conversation.SkipSet
	// ShutdownTimeout is how long the in-flight batch may still take to apply, and the committer to
	// commit the offsets of the batches applied, once the context is done (default 10s). After that what
	// is left is abandoned uncommitted.
	ShutdownTimeout time.Duration
	// UncommittedBatches bounds how many applied batches may wait for their offset commit before the
	// loop waits for the committer (default 4). A crash replays at most these, the one being committed
	// and the one in flight.
	UncommittedBatches int
	// PoisonAttempts is how many times in a row a batch may fail with an error that is not transient
	// before it is isolated: split until the records that fail alone are found and dead-lettered as
	// apply_failed (default 5).
	PoisonAttempts int
	// StallAfter is how long the loop may make no progress while records wait (a batch in hand, or
	// records behind the last commit of a partition it owns) before Stalled reports it (default 2m):
	// far longer than any batch takes, so only a hung call or a stuck client trips it.
	StallAfter time.Duration
	// AssignmentCheckInterval is how often the member asks the group which partitions it owns, to drop
	// the others from the lag gauge and from liveness (default 10s).
	AssignmentCheckInterval time.Duration
	// RetryMinBackoff and RetryMaxBackoff bound the wait between two attempts at a failing step
	// (defaults 100ms and 5s).
	RetryMinBackoff, RetryMaxBackoff time.Duration
}

func (c Config) withDefaults() Config {
	if c.BatchMaxRecords <= 0 {
		c.BatchMaxRecords = 5000
	}
	if c.SessionTimeout <= 0 {
		c.SessionTimeout = 10 * time.Second
	}
	if c.BatchMaxBytes <= 0 {
		c.BatchMaxBytes = 16 << 20
	}
	if c.MaxEventBytes <= 0 {
		c.MaxEventBytes = 1 << 20
	}
	if c.StallAfter <= 0 {
		c.StallAfter = 2 * time.Minute
	}
	if c.AssignmentCheckInterval <= 0 {
		c.AssignmentCheckInterval = 10 * time.Second
	}
	if c.PoisonAttempts <= 0 {
		c.PoisonAttempts = 5
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.UncommittedBatches <= 0 {
		c.UncommittedBatches = 4
	}
	if c.RetryMinBackoff <= 0 {
		c.RetryMinBackoff = 100 * time.Millisecond
	}
	if c.RetryMaxBackoff < c.RetryMinBackoff {
		c.RetryMaxBackoff = max(5*time.Second, c.RetryMinBackoff)
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("no Kafka brokers"))
	}
	if c.Topic == "" {
		errs = append(errs, errors.New("no events topic"))
	}
	if c.DLQTopic == "" {
		errs = append(errs, errors.New("no dead-letter topic"))
	}
	if c.DLQTopic != "" && c.DLQTopic == c.Topic {
		errs = append(errs, errors.New("the dead-letter topic must differ from the events topic"))
	}
	if c.GroupID == "" {
		errs = append(errs, errors.New("no consumer group id"))
	}
	return errors.Join(errs...)
}

// fetcher hands out the records of the group's partitions, in offset order per partition.
type fetcher interface {
	FetchMessage(ctx context.Context) (kafkago.Message, error)
}

// reader is what the loop uses of *kafkago.Reader.
type reader interface {
	fetcher
	CommitMessages(ctx context.Context, msgs ...kafkago.Message) error
	Close() error
}

// writer is what the loop uses of *kafkago.Writer.
type writer interface {
	WriteMessages(ctx context.Context, msgs ...kafkago.Message) error
	Close() error
}

// Projector runs the consume-apply-commit loop of one consumer group member. Run it once.
type Projector struct {
	cfg          Config
	store        Store
	readerConfig kafkago.ReaderConfig
	reader       reader // set by Run: a kafka-go group reader joins its group as soon as it exists
	dlq          writer
	metrics      *Metrics
	log          *slog.Logger

	// failing names the loop's step being retried ("" when none), for readiness.
	failing atomic.Pointer[string]
	// committer commits the offsets of the batches the loop applied.
	committer *committer
	// progress is for liveness (Stalled) and the lag gauge; clientID finds this member in its group.
	progress progress
	clientID string
}

// New returns a Projector reading cfg.Topic in group cfg.GroupID. It connects nothing yet: Run joins the
// group. It returns an error when cfg is incomplete or invalid.
func New(cfg Config, store Store, metrics *Metrics, log *slog.Logger) (*Projector, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("projector config: %w", err)
	}
	clientID := newClientID()
	dialer := cfg.Kafka.Dialer()
	dialer.ClientID = clientID
	rc := kafkago.ReaderConfig{
		Brokers: cfg.Brokers,
		GroupID: cfg.GroupID,
		Topic:   cfg.Topic,
		// A new group starts at the beginning: no event is skipped because the projector started late.
		StartOffset: kafkago.FirstOffset,
		// 0 makes CommitMessages synchronous: it returns once the group coordinator stored the offsets,
		// which is what lets the loop say a batch is done.
		CommitInterval: 0,
		QueueCapacity:  cfg.BatchMaxRecords,
		MinBytes:       1,
		// A record over MaxEventBytes must still arrive, to be dead-lettered rather than stall its partition.
		MaxBytes: max(4<<20, 2*cfg.MaxEventBytes),
		MaxWait:  500 * time.Millisecond,
		// Another instance joining or leaving the group is noticed within a second, not three.
		HeartbeatInterval: time.Second,
		SessionTimeout:    cfg.SessionTimeout,
		Dialer:            dialer,
		ErrorLogger: kafkago.LoggerFunc(func(format string, args ...any) {
			log.Warn("kafka consumer", "detail", fmt.Sprintf(format, args...))
		}),
	}
	if err := rc.Validate(); err != nil { // kafkago.NewReader panics on an invalid config
		return nil, fmt.Errorf("kafka reader config: %w", err)
	}
	dlq := &kafkago.Writer{
		Addr:      kafkago.TCP(cfg.Brokers...),
		Topic:     cfg.DLQTopic,
		Transport: cfg.Kafka.Transport(),
		// One key's dead letters stay in one partition, in order.
		Balancer:     &kafkago.Hash{},
		RequiredAcks: kafkago.RequireAll,
		// Writes are synchronous; without this a lone dead letter would wait a second for company.
		BatchTimeout: 5 * time.Millisecond,
		BatchSize:    cfg.BatchMaxRecords,
		// Dead letters carry their original value whatever its size; the broker has the last word, and a
		// letter it refuses for size is written reduced (writePending).
		BatchBytes: int64(max(16<<20, 2*cfg.MaxEventBytes)),
		// A record that came compressed (a gzip record over MaxEventBytes once decompressed) fits the
		// dead-letter topic's limit again only compressed; dead letters are rare, the CPU is no concern.
		Compression: kafkago.Gzip,
		// The loop retries the whole write itself, with its own backoff and readiness.
		MaxAttempts: 3,
	}
	p := &Projector{
		cfg:          cfg,
		store:        timedStore{store, metrics},
		readerConfig: rc,
		dlq:          dlq,
		metrics:      metrics,
		log:          log,
		clientID:     clientID,
	}
	p.progress.lag = map[int]int64{}
	p.committer = newCommitter(cfg.UncommittedBatches,
		func(ctx context.Context, msgs ...kafkago.Message) error { return p.reader.CommitMessages(ctx, msgs...) },
		p.owns, p.committed, metrics.commitFailures, cfg.RetryMinBackoff, cfg.RetryMaxBackoff, log)
	return p, nil
}

// committed accounts for a successful offset commit covering b.
func (p *Projector) committed(b appliedBatch) {
	p.metrics.commits.Add(float64(b.batches))
	p.metrics.recordsCommitted.Add(float64(b.records))
	p.committedLag(b.last)
}

// Failing returns the step that keeps failing and is being retried (dead_letter or apply in the batch
// loop, else commit in the committer), "" when none: while it is set the projector is not ready.
func (p *Projector) Failing() string {
	if step := p.failing.Load(); step != nil {
		return *step
	}
	if p.committer.failing.Load() {
		return "commit"
	}
	return ""
}

// ErrAbandoned is returned by Run when, Config.ShutdownTimeout after the context ended, the batch in
// flight was still not applied or the offsets of applied batches were still not committed. Those
// records were not committed and will be delivered again.
var ErrAbandoned = errors.New("batches abandoned at shutdown, uncommitted")

// Run consumes until ctx is done, then lets the batch in flight finish and the committer commit the
// offsets of the batches applied, both within Config.ShutdownTimeout, leaves the group and closes its
// Kafka clients. It returns nil after a clean stop, an error wrapping ErrAbandoned when a batch had to
// be abandoned uncommitted, or an error closing the clients. Errors while running are retried, never
// returned (see the package's ack rules).
func (p *Projector) Run(ctx context.Context) (err error) {
	p.reader = timedReader{kafkago.NewReader(p.readerConfig), p.metrics}
	p.moved()
	defer func() {
		// Closing the reader leaves the group, so the partitions move to another member at once.
		err = errors.Join(err, p.reader.Close(), p.dlq.Close())
	}()
	cctx, stopCommitting := graceContext(ctx, p.cfg.ShutdownTimeout)
	var committing sync.WaitGroup
	var commitErr error
	committing.Go(func() { commitErr = p.committer.run(cctx) })
	defer func() { // before the reader closes: the last offsets are committed through it
		close(p.committer.queue) // the loop has returned: nothing more is handed over
		committing.Wait()
		stopCommitting()
		err = errors.Join(err, commitErr)
	}()
	wctx, stopWatching := context.WithCancel(ctx)
	var watching sync.WaitGroup
	watching.Go(func() { p.watchAssignment(wctx) })
	defer func() {
		stopWatching()
		watching.Wait()
	}()
	fctx, stopFetching := context.WithCancel(ctx)
	queue, fetching := prefetch(fctx, progressFetcher{p.reader, p}, p.cfg.BatchMaxRecords, p.cfg.RetryMinBackoff, p.cfg.RetryMaxBackoff)
	defer func() {
		stopFetching()
		fetching() // before the reader closes
	}()
	b := &batcher{in: queue, maxRecords: p.cfg.BatchMaxRecords, maxBytes: p.cfg.BatchMaxBytes, linger: p.cfg.BatchMaxWait}
	for {
		batch, fetchErr := b.next(ctx)
		if len(batch) > 0 {
			if err := p.process(ctx, p.started(batch)); err != nil {
				return err
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if fe, ok := errors.AsType[*fetchError](fetchErr); ok {
			p.log.Warn("fetch failed", "attempt", fe.attempt, "error", fe.Error())
		}
	}
}

// started records how long the batch's records took to be fetched and then to wait for the batch, and
// returns them.
func (p *Projector) started(batch []fetched) []kafkago.Message {
	now := time.Now()
	msgs := make([]kafkago.Message, len(batch))
	fetch, queue := p.metrics.stageSeconds.WithLabelValues(stageFetch), p.metrics.stageSeconds.WithLabelValues(stageQueue)
	for i, f := range batch {
		msgs[i] = f.msg
		if !f.msg.Time.IsZero() {
			fetch.Observe(max(0, f.taken.Sub(f.msg.Time).Seconds()))
		}
		queue.Observe(now.Sub(f.taken).Seconds())
	}
	return msgs
}

// timedStore observes the apply and database commit stages of each successful batch.
type timedStore struct {
	Store
	metrics *Metrics
}

func (s timedStore) ApplyBatch(ctx context.Context, events []conversation.Event) (conversation.BatchResult, error) {
	start := time.Now()
	res, err := s.Store.ApplyBatch(ctx, events)
	if err == nil {
		s.metrics.stageSeconds.WithLabelValues(stageApply).Observe((time.Since(start) - res.CommitTime).Seconds())
		s.metrics.stageSeconds.WithLabelValues(stageDBCommit).Observe(res.CommitTime.Seconds())
	}
	return res, err
}

// timedReader observes the offset commit stage: each commit, off the critical path, which may cover
// several batches.
type timedReader struct {
	reader
	metrics *Metrics
}

func (r timedReader) CommitMessages(ctx context.Context, msgs ...kafkago.Message) error {
	start := time.Now()
	err := r.reader.CommitMessages(ctx, msgs...)
	if err == nil {
		r.metrics.since(stageOffsetCommit, start)
	}
	return err
}

// process takes one batch to its end: dead letters written, events applied, offsets handed to the
// committer. It returns an error only when ctx ended and the grace period ran out first; then the
// batch's offsets were not handed over.
func (p *Projector) process(ctx context.Context, msgs []kafkago.Message) error {
	p.metrics.recordsConsumed.Add(float64(len(msgs)))
	p.metrics.batchSize.Observe(float64(len(msgs)))
	bctx, cancel := graceContext(ctx, p.cfg.ShutdownTimeout)
	defer cancel()
	p.moved()
	p.progress.inBatch.Store(true)
	defer func() {
		p.moved()
		p.progress.inBatch.Store(false)
	}()

	events, srcs, dead := p.decode(msgs)
	if err := p.deadLetter(bctx, dead); err != nil {
		return p.abandoned(msgs, "dead_letter", err)
	}
	// Messages that have no effect by rule never reach the store (contract §3.2).
	events, srcs, skipped := p.filter(events, srcs)
	res := conversation.BatchResult{}
	if len(events) > 0 {
		var err error
		if res, err = p.apply(bctx, events, srcs); err != nil {
			return p.abandoned(msgs, "apply", err)
		}
	}
	res.Skipped = skipped
	p.metrics.observe(res)
	// Only the wait for room in the commit queue is on the critical path (commit_wait); the commit
	// itself is timed by timedReader (offset_commit).
	start := time.Now()
	if p.committer.full() {
		p.progress.awaitingCommit.Store(true)
		defer p.progress.awaitingCommit.Store(false)
	}
	if err := p.committer.hand(bctx, appliedBatch{last: lastPerPartition(msgs), records: len(msgs), batches: 1}); err != nil {
		return p.abandoned(msgs, "commit", err)
	}
	p.metrics.since(stageCommitWait, start)
	return nil
}

// deadLetter writes dead letters until they are all written (retrying any failure; a letter too large
// for the dead-letter topic is written reduced) and counts them by reason.
func (p *Projector) deadLetter(ctx context.Context, dead []kafkago.Message) error {
	pending := dead
	if err := p.retry(ctx, "dead_letter", p.metrics.dlqFailures, func(ctx context.Context) error {
		var err error
		var reduced int
		pending, reduced, err = writePending(ctx, p.dlq, pending)
		if reduced > 0 {
			p.metrics.reducedLetters.Add(float64(reduced))
			p.log.Warn("dead letters over the dead-letter topic's size limit, written reduced", "count", reduced,
				"dlq_topic", p.cfg.DLQTopic)
		}
		return err
	}); err != nil {
		return err
	}
	for _, d := range dead {
		p.metrics.deadLettered.WithLabelValues(reasonOf(d)).Inc()
	}
	return nil
}

// filter drops the messages that have no effect by rule (Config.Skip), keeping srcs aligned.
func (p *Projector) filter(events []conversation.Event, srcs []kafkago.Message) ([]conversation.Event, []kafkago.Message, int) {
	keptEvents, keptSrcs := events[:0], srcs[:0]
	for i, e := range events {
		if e.Message != nil && !p.cfg.Skip.Projected(e.Message) {
			continue
		}
		keptEvents, keptSrcs = append(keptEvents, e), append(keptSrcs, srcs[i])
	}
	return keptEvents, keptSrcs, len(events) - len(keptEvents)
}

// transient reports whether a store error may go away by itself: the database unreachable, or lock
// conflicts that outlasted the store's own retries. Those are retried for as long as they last.
func transient(err error) bool {
	return errors.Is(err, conversation.ErrUnavailable) || errors.Is(err, conversation.ErrConflict)
}

// apply applies the batch's events in one transaction, retrying failures with backoff. After
// PoisonAttempts failures in a row that are not transient, the batch is isolated: applied in halves,
// recursively, in event order, until the events that fail alone are found; those are dead-lettered as
// apply_failed and the others applied. A transient failure at any point is retried as such, and resets
// the count. It returns an error only when ctx ends first; then the batch's offsets must not move.
func (p *Projector) apply(ctx context.Context, events []conversation.Event, srcs []kafkago.Message) (conversation.BatchResult, error) {
	var res conversation.BatchResult
	nonTransient := 0
	err := p.retry(ctx, "apply", p.metrics.applyFailures, func(ctx context.Context) error {
		if nonTransient >= p.cfg.PoisonAttempts {
			r, err := p.isolate(ctx, events, srcs)
			res = r
			return err
		}
		start := time.Now()
		r, err := p.store.ApplyBatch(ctx, events)
		switch {
		case err == nil:
			p.metrics.applySeconds.Observe(time.Since(start).Seconds())
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

// isolate applies events in halves, recursively and in order, dead-letters each event that fails alone
// with an error that is not transient, and returns the sum of what the applied parts did. A transient
// error stops it: the caller retries, and the parts already applied are then duplicates, which change
// nothing (the store applies each (storage key, message_seq) once, and membership changes re-applied
// in order end in the same state).
func (p *Projector) isolate(ctx context.Context, events []conversation.Event, srcs []kafkago.Message) (conversation.BatchResult, error) {
	r, err := p.store.ApplyBatch(ctx, events)
	p.moved()
	switch {
	case err == nil:
		return r, nil
	case transient(err) || ctx.Err() != nil:
		return r, err
	case len(events) == 1:
		m := srcs[0]
		p.metrics.isolated.Inc()
		p.log.Error("record fails alone, dead-lettered", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset,
			"reason", ReasonApplyFailed, "class", errorClass(err), "error", err.Error())
		letter := deadLetter(m, ReasonApplyFailed, err)
		letter.Headers = append(letter.Headers, kafkago.Header{Key: HeaderErrorClass, Value: []byte(errorClass(err))})
		return conversation.BatchResult{}, p.deadLetter(ctx, []kafkago.Message{letter})
	}
	half := len(events) / 2
	left, err := p.isolate(ctx, events[:half], srcs[:half])
	if err != nil {
		return left, err
	}
	right, err := p.isolate(ctx, events[half:], srcs[half:])
	return sum(left, right), err
}

// sum adds up what two transactions did.
func sum(a, b conversation.BatchResult) conversation.BatchResult {
	return conversation.BatchResult{Applied: a.Applied + b.Applied, Duplicates: a.Duplicates + b.Duplicates,
		BelowWindow: a.BelowWindow + b.BelowWindow, Skipped: a.Skipped + b.Skipped,
		Memberships: a.Memberships + b.Memberships, RowsWritten: a.RowsWritten + b.RowsWritten,
		CommitTime: a.CommitTime + b.CommitTime}
}

func (p *Projector) abandoned(msgs []kafkago.Message, step string, err error) error {
	return fmt.Errorf("%w: %d records, at step %s: %w", ErrAbandoned, len(msgs), step, err)
}

// lastPerPartition returns the last record of each partition in msgs: committing it commits the
// partition's records before it, since a batch holds each partition's records in offset order.
func lastPerPartition(msgs []kafkago.Message) []kafkago.Message {
	idx := map[int]int{}
	var last []kafkago.Message
	for _, m := range msgs {
		if i, ok := idx[m.Partition]; ok {
			last[i] = m
			continue
		}
		idx[m.Partition] = len(last)
		last = append(last, m)
	}
	return last
}

// retry runs op until it succeeds or ctx ends, waiting an exponential, jittered backoff between attempts.
// Each failure is counted and logged once; readiness says which step is failing until it succeeds.
func (p *Projector) retry(ctx context.Context, step string, failures interface{ Inc() }, op func(context.Context) error) error {
	for attempt := 1; ; attempt++ {
		err := op(ctx)
		p.moved()
		if err == nil {
			if attempt > 1 {
				p.failing.Store(nil)
				p.log.Info("recovered", "step", step, "attempts", attempt)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		failures.Inc()
		p.failing.Store(&step)
		wait := backoff(p.cfg.RetryMinBackoff, p.cfg.RetryMaxBackoff, attempt)
		p.log.Warn("step failed, retrying the batch", "step", step, "attempt", attempt, "retry_in", wait.String(),
			"kind", errorKind(err), "error", err.Error())
		if !sleep(ctx, wait) {
			return ctx.Err()
		}
	}
}

// backoff is the wait before retry number attempt (1-based): min doubled per attempt up to max, of
// which a random half is jitter, so instances that failed together do not retry in lockstep.
func backoff(lo, hi time.Duration, attempt int) time.Duration {
	d := lo
	for i := 1; i < attempt && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// graceContext returns a context that outlives ctx by grace: the batch in flight when a shutdown begins
// may still finish, but not forever.
func graceContext(ctx context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	gctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(grace, cancel)
		context.AfterFunc(gctx, func() { t.Stop() })
	})
	return gctx, func() {
		stop()
		cancel()
	}
}

// errorClass names the class of a store error that is not transient, for an apply_failed dead letter:
// invalid (the store refused a value), else the Go type of the innermost error, e.g. *mysql.MySQLError.
func errorClass(err error) string {
	if errors.Is(err, conversation.ErrInvalid) {
		return "invalid"
	}
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return fmt.Sprintf("%T", err)
		}
		err = next
	}
}

// errorKind classifies a failure for the log: unavailable (the store cannot be reached), conflict (lost
// lock conflicts), or other.
func errorKind(err error) string {
	switch {
	case errors.Is(err, conversation.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, conversation.ErrConflict):
		return "conflict"
	default:
		return "other"
	}
}
