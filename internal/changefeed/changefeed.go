// Package changefeed announces committed changes to API replicas over a Kafka topic and follows those
// announcements, so a replica can serve what it caches without asking the database whether it moved.
package changefeed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/kafkaconn"
)

// usersPerRecord bounds one change record, so a batch that changed many users is a few records.
const usersPerRecord = 500

// changeRecord is the value of a change-feed record: users whose conversation list changed, each with
// the version the change gave it.
type changeRecord struct {
	Versions map[string]int64 `json:"versions"`
}

// Publisher writes the change feed: after a transaction committed, which users' conversation lists
// changed and to which version. Readers of the feed (API replicas) use it to know when a cached list is
// out of date without asking the database. Delivery is best effort: a record lost to a crash between the
// commit and the write is why readers also bound the age of what they cache.
type Publisher struct {
	w         *kafkago.Writer
	log       *slog.Logger
	published prometheus.Counter
	failures  prometheus.Counter
}

// NewPublisher returns a publisher to topic, with its metrics registered in reg. It connects
// lazily, on the first Publish.
func NewPublisher(kc *kafkaconn.Conn, brokers []string, topic string, log *slog.Logger, reg prometheus.Registerer) (*Publisher, error) {
	p := &Publisher{
		log: log,
		published: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "conv", Subsystem: "changes",
			Name: "published_total", Help: "User versions announced on the change feed."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "conv", Subsystem: "changes",
			Name: "publish_failures_total", Help: "Change-feed writes that failed (readers then rely on their cache age bound)."}),
	}
	if err := errors.Join(reg.Register(p.published), reg.Register(p.failures)); err != nil {
		return nil, err
	}
	p.w = &kafkago.Writer{
		Addr:         kafkago.TCP(brokers...),
		Topic:        topic,
		Transport:    kc.Transport(),
		RequiredAcks: kafkago.RequireOne,
		// A publish follows a commit the caller waits on: do not hold it for a fuller batch.
		BatchTimeout: 2 * time.Millisecond,
		MaxAttempts:  3,
	}
	return p, nil
}

// AfterCommit publishes the versions a transaction committed, as a mysql.Options.OnCommit hook: a
// failure is logged and counted, not returned, since the commit stands whatever happens here.
func (p *Publisher) AfterCommit(ctx context.Context, versions map[string]int64) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := p.Publish(ctx, versions); err != nil {
		p.failures.Inc()
		p.log.Warn("change feed publish failed", "users", len(versions), "error", err.Error())
		return
	}
	p.published.Add(float64(len(versions)))
}

// Publish writes the versions, usersPerRecord users to a record, and returns when the broker has them.
func (p *Publisher) Publish(ctx context.Context, versions map[string]int64) error {
	if len(versions) == 0 {
		return nil
	}
	uids := make([]string, 0, len(versions))
	for u := range versions {
		uids = append(uids, u)
	}
	slices.Sort(uids)
	var msgs []kafkago.Message
	for chunk := range slices.Chunk(uids, usersPerRecord) {
		rec := changeRecord{Versions: make(map[string]int64, len(chunk))}
		for _, u := range chunk {
			rec.Versions[u] = versions[u]
		}
		v, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		msgs = append(msgs, kafkago.Message{Value: v})
	}
	if err := p.w.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("publish changes: %w", err)
	}
	return nil
}

// Close flushes and closes the writer.
func (p *Publisher) Close() error { return p.w.Close() }

// Follower reads the change feed.
type Follower struct {
	readers []*kafkago.Reader
	log     *slog.Logger
}

// NewFollower prepares to read every partition of the change feed from its current end. It fails
// when the brokers cannot be reached or the topic does not exist; then nothing is followed.
func NewFollower(ctx context.Context, kc *kafkaconn.Conn, brokers []string, topic string, log *slog.Logger) (*Follower, error) {
	if len(brokers) == 0 {
		return nil, errors.New("no Kafka brokers configured")
	}
	conn, err := kc.Dialer().DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		return nil, fmt.Errorf("dial Kafka %s: %w", brokers[0], err)
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		return nil, fmt.Errorf("read partitions of %s: %w", topic, err)
	}
	f := &Follower{log: log}
	for _, part := range parts {
		r := kafkago.NewReader(kafkago.ReaderConfig{
			Brokers: brokers, Topic: topic, Partition: part.ID, MinBytes: 1, MaxBytes: 4 << 20, MaxWait: time.Second,
			Dialer: kc.Dialer(),
			ErrorLogger: kafkago.LoggerFunc(func(format string, args ...any) {
				log.Warn("change feed", "detail", fmt.Sprintf(format, args...))
			}),
		})
		if err := r.SetOffset(kafkago.LastOffset); err != nil {
			r.Close()
			f.Close()
			return nil, fmt.Errorf("follow %s/%d: %w", topic, part.ID, err)
		}
		f.readers = append(f.readers, r)
	}
	return f, nil
}

// Run calls notify for each user version the feed announces until ctx ends, then closes the readers.
// Read errors are logged and retried.
func (f *Follower) Run(ctx context.Context, notify func(uid string, version int64)) {
	var wg sync.WaitGroup
	for _, r := range f.readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.follow(ctx, r, notify)
		}()
	}
	wg.Wait()
	f.Close()
}

func (f *Follower) follow(ctx context.Context, r *kafkago.Reader, notify func(uid string, version int64)) {
	for {
		m, err := r.ReadMessage(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil { // the reader retries broker faults itself; this is rarer, so pause and go on
			f.log.Warn("change feed read failed", "partition", r.Config().Partition, "error", err.Error())
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		var rec changeRecord
		if err := json.Unmarshal(m.Value, &rec); err != nil {
			f.log.Warn("change feed record skipped", "partition", m.Partition, "offset", m.Offset, "error", err.Error())
			continue
		}
		for uid, v := range rec.Versions {
			notify(uid, v)
		}
	}
}

// Close closes the readers.
func (f *Follower) Close() {
	for _, r := range f.readers {
		_ = r.Close()
	}
}
