// Package projector consumes the events topic into the read model (contract §1 and §3). It is the only
// code that knows the delivery semantics: fetch a batch of records, dead-letter the ones that can never
// be applied, apply the others in one store transaction, and only then commit the batch's offsets.
//
// A member of the consumer group applies the partitions it owns in Config.Lanes lanes (lane.go): each
// generation of the group, its partitions are dealt to the lanes, and each lane is a sequence of
// batches over its partitions only, concurrent with the other lanes. A partition belongs to one lane
// for the whole generation, so its records are applied in offset order one batch after the other, and
// the rules below hold per partition, in each lane, as they did with a single loop. Each lane commits
// its offsets in the background (committer.go): it starts the next batch while the previous one's
// offsets are committed.
//
// Ack rules, i.e. when a record's offset is committed:
//   - Only once the record reached one of its two ends: its event was applied by a store transaction that
//     committed, or the record itself was written to the dead-letter topic with acks from all in-sync
//     replicas. Nothing else acknowledges a record: no timeout, no error, no shutdown, no rebalance. (A
//     message that has no effect by rule, contract §3.2, is applied by not sending it to the store; it is
//     counted.)
//   - A batch's offsets are handed to its lane's committer only after every record of the batch reached
//     its end, and the committer commits them asynchronously: one commit at a time, in the order batches
//     were handed over, several queued batches coalesced into one commit of each partition's offset in
//     the latest of them (a partition's records come in offset order, so that offset covers the earlier
//     batches' records of the partition, all of which reached their end).
//   - At most Config.UncommittedBatches applied batches of a lane wait for their commit; past that the
//     lane waits for its committer before it starts another batch, so a failing or hung commit holds the
//     lane rather than letting applied-but-uncommitted records (the replay after a crash) grow without
//     bound.
//   - A failure never skips a record. A store error of any kind (unreachable, lock conflict, other) and
//     a failed dead-letter write are retried, the same batch again, a failed commit the same offsets
//     again (with any newer ones queued meanwhile only after it succeeded), with exponential backoff and
//     jitter, until they succeed or the lane stops; readiness is false meanwhile. The other lanes go on
//     meanwhile: their partitions do not wait for a failing one.
//   - A lane stops when the context ends (shutdown) or its generation does (a rebalance): the batch in
//     flight finishes and the committer commits what the lane applied, both within
//     Config.ShutdownTimeout; records fetched but not yet in a batch are dropped uncommitted. Only then
//     does the member leave or rejoin the group, so a partition's next owner starts at the offset after
//     the last record this member applied: the handover replays nothing in the usual case. Whatever was
//     left when the grace ran out is not committed (ErrAbandoned at shutdown, a warning at a rebalance).
//   - A batch that is never committed (a crash, a grace that ran out) is delivered again. That is safe:
//     the store applies each (storage key, message_seq) once, so replayed events change nothing. A
//     replayed bad record is dead-lettered again: the dead-letter topic is at least once, the read model
//     is exactly once.
//
// Several Projectors in one consumer group share the topic's partitions; the group deals them to
// members, each member to its lanes.
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
	// Lanes is how many lanes apply the member's partitions concurrently (default DefaultLanes; more
	// than the partitions a member owns leaves some idle). Each lane holds a database connection while
	// it applies a batch.
	Lanes int
	// SlowBatch, when > 0, logs a batch at WARN ("slow batch", with its stages and steps) when its
	// oldest record took that long or more from being fetched to the batch's end (its offsets handed to
	// the committer), or a record of it that long from its timestamp to being fetched, and counts it in
	// conv_projector_slow_batches_total. Zero logs none.
	SlowBatch time.Duration
	// TimeSteps, when set, returns a context that makes the store time the steps of a batch applied
	// with it: wrap decorates the attempt's conversation.BatchTx, step is told the store's own steps
	// (internal/mysql.WithBatchTiming). They show in conv_projector_batch_step_seconds and the
	// slow-batch log; without it only the stages do.
	TimeSteps func(ctx context.Context, wrap func(conversation.BatchTx) conversation.BatchTx, step func(string, time.Duration)) context.Context
	// RetryMinBackoff and RetryMaxBackoff bound the wait between two attempts at a failing step
	// (defaults 100ms and 5s).
	RetryMinBackoff, RetryMaxBackoff time.Duration
}

// DefaultLanes is the lanes of a member unless Config.Lanes says otherwise, chosen by measurement
// (docs/benchmarks.md, projector.lanes.speedup).
const DefaultLanes = 2

// MaxLanes bounds Config.Lanes, and with it the lane label's values on the metrics.
const MaxLanes = 32

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
		c.MaxEventBytes = DefaultMaxEventBytes
	}
	if c.StallAfter <= 0 {
		c.StallAfter = 2 * time.Minute
	}
	if c.Lanes <= 0 {
		c.Lanes = DefaultLanes
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
	if c.Lanes > MaxLanes {
		errs = append(errs, fmt.Errorf("%d lanes, want at most %d", c.Lanes, MaxLanes))
	}
	return errors.Join(errs...)
}

// fetcher hands out the records of a partition, in offset order.
type fetcher interface {
	FetchMessage(ctx context.Context) (kafkago.Message, error)
}

// partitionFetcher is what a lane uses of a partition's *kafkago.Reader.
type partitionFetcher interface {
	fetcher
	Close() error
}

// writer is what the lanes use of *kafkago.Writer.
type writer interface {
	WriteMessages(ctx context.Context, msgs ...kafkago.Message) error
	Close() error
}

// Projector runs the consume-apply-commit lanes of one consumer group member. Run it once.
type Projector struct {
	cfg         Config
	store       Store
	groupConfig kafkago.ConsumerGroupConfig
	// partitionReader returns a reader of one assigned partition, from its assigned offset.
	partitionReader func(kafkago.PartitionAssignment) (partitionFetcher, error)
	dlq             writer
	metrics         *Metrics
	log             *slog.Logger
	lanes           []*lane

	// joining is set while joining the group keeps failing, for readiness.
	joining atomic.Bool
	// reported are the partitions whose lag this member reports (those of its current generation).
	ownedMu  sync.Mutex
	reported map[int]bool
}

// New returns a Projector reading cfg.Topic in group cfg.GroupID. It connects nothing yet: Run joins the
// group. It returns an error when cfg is incomplete or invalid.
func New(cfg Config, store Store, metrics *Metrics, log *slog.Logger) (*Projector, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("projector config: %w", err)
	}
	dialer := cfg.Kafka.Dialer()
	dialer.ClientID = "conv-projector"
	errorLog := kafkago.LoggerFunc(func(format string, args ...any) {
		log.Warn("kafka consumer", "detail", fmt.Sprintf(format, args...))
	})
	gc := kafkago.ConsumerGroupConfig{
		ID:      cfg.GroupID,
		Brokers: cfg.Brokers,
		Dialer:  dialer,
		Topics:  []string{cfg.Topic},
		// A new group starts at the beginning: no event is skipped because the projector started late.
		StartOffset: kafkago.FirstOffset,
		// Another instance joining or leaving the group is noticed within a second, not three.
		HeartbeatInterval: time.Second,
		SessionTimeout:    cfg.SessionTimeout,
		// The group waits this long for its members to rejoin: room for a lane to finish its batch in
		// flight and commit (ShutdownTimeout) before this member rejoins.
		RebalanceTimeout: max(30*time.Second, cfg.ShutdownTimeout+10*time.Second),
		JoinGroupBackoff: max(time.Second, cfg.RetryMinBackoff),
		ErrorLogger:      errorLog,
	}
	if err := gc.Validate(); err != nil {
		return nil, fmt.Errorf("kafka consumer group config: %w", err)
	}
	rc := kafkago.ReaderConfig{
		Brokers:  cfg.Brokers,
		Topic:    cfg.Topic,
		MinBytes: 1,
		// A record over MaxEventBytes must still arrive, to be dead-lettered rather than stall its partition.
		MaxBytes:    max(4<<20, 2*cfg.MaxEventBytes),
		MaxWait:     500 * time.Millisecond,
		Dialer:      dialer,
		ErrorLogger: errorLog,
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
		// The lanes retry the whole write themselves, with their own backoff and readiness.
		MaxAttempts: 3,
	}
	p := &Projector{
		cfg:         cfg,
		store:       store,
		groupConfig: gc,
		partitionReader: func(a kafkago.PartitionAssignment) (partitionFetcher, error) {
			c := rc
			c.Partition = a.ID
			r := kafkago.NewReader(c)
			if err := r.SetOffset(a.Offset); err != nil {
				_ = r.Close()
				return nil, fmt.Errorf("read partition %d from offset %d: %w", a.ID, a.Offset, err)
			}
			return r, nil
		},
		dlq:     dlq,
		metrics: metrics,
		log:     log,
	}
	for i := range cfg.Lanes {
		p.lanes = append(p.lanes, newLane(p, i))
	}
	return p, nil
}

// Failing returns the step that keeps failing and is being retried in some lane (dead_letter or apply
// in its batches, else commit in its committer), or join when joining the group keeps failing; "" when
// none. While it is set the projector is not ready.
func (p *Projector) Failing() string {
	for _, l := range p.lanes {
		if step := l.step(); step != "" {
			return step
		}
	}
	if p.joining.Load() {
		return "join"
	}
	return ""
}

// ErrAbandoned is returned by Run when, Config.ShutdownTimeout after the context ended, a batch in
// flight was still not applied or the offsets of applied batches were still not committed. Those
// records were not committed and will be delivered again.
var ErrAbandoned = errors.New("batches abandoned at shutdown, uncommitted")

// Run consumes until ctx is done, then lets each lane finish its batch in flight and commit the offsets
// of the batches it applied, both within Config.ShutdownTimeout, leaves the group and closes its Kafka
// clients. It returns nil after a clean stop, an error wrapping ErrAbandoned when a batch had to be
// abandoned uncommitted, or an error closing the clients. Errors while running are retried, never
// returned (see the package's ack rules).
func (p *Projector) Run(ctx context.Context) (err error) {
	for _, l := range p.lanes {
		l.moved()
	}
	group, err := kafkago.NewConsumerGroup(p.groupConfig)
	if err != nil {
		return fmt.Errorf("kafka consumer group: %w", err)
	}
	// Closing the group at shutdown ends the generation in hand; the group waits for its lanes to
	// finish (they see ctx end too) before it leaves, so their last commits still count.
	closed := make(chan error, 1)
	stopClosing := context.AfterFunc(ctx, func() { closed <- group.Close() })
	defer func() {
		if stopClosing() { // ctx never ended: Run returns for another reason
			closed <- group.Close()
		}
		err = errors.Join(err, <-closed, p.dlq.Close())
	}()
	for attempt := 1; ; attempt++ {
		gen, err := group.Next(ctx)
		if ctx.Err() != nil || errors.Is(err, kafkago.ErrGroupClosed) {
			return nil
		}
		if err != nil {
			// The group backs off between attempts itself (JoinGroupBackoff).
			p.joining.Store(true)
			p.log.Warn("joining the consumer group failed", "attempt", attempt, "error", err.Error())
			continue
		}
		if attempt > 1 && p.joining.Swap(false) {
			p.log.Info("recovered", "step", "join", "attempts", attempt)
		}
		attempt = 0
		if err := p.generation(ctx, gen); err != nil {
			if ctx.Err() != nil {
				return err
			}
			p.log.Warn("rebalance: lanes left records uncommitted, to be delivered again", "error", err.Error())
		}
	}
}

// generation runs the lanes over the partitions gen assigns this member, until gen ends (a rebalance)
// or ctx does, and returns once every lane stopped: what they left uncommitted, as an error wrapping
// ErrAbandoned.
func (p *Projector) generation(ctx context.Context, gen *kafkago.Generation) error {
	p.metrics.generations.Inc()
	parts := gen.Assignments[p.cfg.Topic]
	ids := make([]int, len(parts))
	for i, a := range parts {
		ids[i] = a.ID
	}
	p.owned(ids)
	p.log.Info("generation starts", "generation", gen.ID, "partitions", ids, "lanes", len(p.lanes))
	byLane := spread(parts, len(p.lanes))
	done := make(chan error, 1)
	// One function for all lanes: the generation ends when any function started on it returns.
	gen.Start(func(gctx context.Context) {
		errs := make([]error, len(p.lanes))
		var wg sync.WaitGroup
		for i, l := range p.lanes {
			wg.Go(func() { errs[i] = l.run(ctx, gctx, gen, byLane[i]) })
		}
		wg.Wait()
		if ctx.Err() != nil {
			// Shutdown: returning before the group is closed would let it rejoin first.
			<-gctx.Done()
		}
		done <- errors.Join(errs...)
	})
	return <-done
}

// transient reports whether a store error may go away by itself: the database unreachable, or lock
// conflicts that outlasted the store's own retries. Those are retried for as long as they last.
func transient(err error) bool {
	return errors.Is(err, conversation.ErrUnavailable) || errors.Is(err, conversation.ErrConflict)
}

// sum adds up what two transactions did.
func sum(a, b conversation.BatchResult) conversation.BatchResult {
	return conversation.BatchResult{Applied: a.Applied + b.Applied, Duplicates: a.Duplicates + b.Duplicates,
		BelowWindow: a.BelowWindow + b.BelowWindow, Skipped: a.Skipped + b.Skipped,
		Memberships: a.Memberships + b.Memberships, RowsWritten: a.RowsWritten + b.RowsWritten,
		CommitTime: a.CommitTime + b.CommitTime}
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
