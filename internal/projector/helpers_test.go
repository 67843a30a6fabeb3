package projector

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/testenv"
	"github.com/convsync/conversations/internal/topicadmin"
)

// testLog discards logs unless TEST_LOG=1.
func testLog() *slog.Logger {
	if os.Getenv("TEST_LOG") == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newProjector returns a Projector on fresh metrics, with test-speed backoffs unless cfg sets them.
func newProjector(t testing.TB, cfg Config, store Store) (*Projector, *prometheus.Registry) {
	t.Helper()
	if cfg.RetryMinBackoff == 0 {
		cfg.RetryMinBackoff, cfg.RetryMaxBackoff = 20*time.Millisecond, 200*time.Millisecond
	}
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(cfg, store, m, testLog())
	if err != nil {
		t.Fatal(err)
	}
	return p, reg
}

// running is a Projector running in the background.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

// start runs p until stop or the end of the test.
func start(t testing.TB, p *Projector) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- p.Run(ctx) }()
	t.Cleanup(func() { _ = r.stop(t) })
	return r
}

// stop cancels the run and returns Run's error; a second call returns nil.
func (r *running) stop(t testing.TB) error {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if !ok {
			return nil
		}
		close(r.done)
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return 30s after its context was cancelled")
		return nil
	}
}

// record is an event to produce, keyed by its storage key.
type record struct {
	key   string
	value []byte
}

// msgRecord is a message.sent record.
func msgRecord(t testing.TB, m map[string]any) record {
	t.Helper()
	v, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	e, err := conversation.DecodeEvent(v, time.Now(), 0)
	if err != nil {
		t.Fatalf("test event %s is invalid: %v", v, err)
	}
	return record{key: e.Key().Key, value: v}
}

// groupMsg is a red-dot message seq in group channel ch, from from, to subscribers (nil: the membership).
func groupMsg(t testing.TB, ch string, seq int64, from string, subscribers []string) record {
	m := map[string]any{"message_id": 1_000_000 + seq, "client_msg_no": ch + "-" + itoa(seq), "message_seq": seq,
		"from_uid": from, "channel_id": ch, "channel_type": 2, "timestamp": 1_700_000_000 + seq,
		"header": map[string]int{"red_dot": 1}, "payload": "aGk="}
	if subscribers != nil {
		m["subscribers"] = subscribers
	}
	return msgRecord(t, m)
}

// personMsg is a red-dot message seq of the person channel between from and to.
func personMsg(t testing.TB, from, to string, seq int64) record {
	return msgRecord(t, map[string]any{"message_id": 2_000_000 + seq, "client_msg_no": from + ">" + to + "-" + itoa(seq),
		"message_seq": seq, "from_uid": from, "channel_id": to, "channel_type": 1, "timestamp": 1_700_000_000 + seq,
		"header": map[string]int{"red_dot": 1}})
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// produce writes records to topic, synchronously, each record's key choosing its partition.
func produce(t testing.TB, brokers []string, topic string, recs ...record) {
	t.Helper()
	if err := produceErr(brokers, topic, recs...); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// produceErr is produce for goroutines other than the test's.
// produceRounds produces rounds in the background, pause apart, and closes the returned channel when
// done (a failure is reported through t).
func produceRounds(t *testing.T, brokers []string, topic string, rounds [][]record, pause time.Duration) <-chan struct{} {
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for _, round := range rounds {
			if err := produceErr(brokers, topic, round...); err != nil {
				t.Errorf("produce: %v", err)
				return
			}
			time.Sleep(pause)
		}
	}()
	return produced
}

func produceErr(brokers []string, topic string, recs ...record) error {
	w := &kafkago.Writer{Addr: kafkago.TCP(brokers...), Topic: topic, Balancer: &kafkago.Hash{},
		RequiredAcks: kafkago.RequireAll, BatchTimeout: time.Millisecond, BatchSize: 1000}
	defer w.Close()
	msgs := make([]kafkago.Message, len(recs))
	for i, r := range recs {
		msgs[i] = kafkago.Message{Key: []byte(r.key), Value: r.value}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return w.WriteMessages(ctx, msgs...)
}

// endOffsets returns the offset after the last record of each partition of topic.
func endOffsets(t testing.TB, brokers []string, topic string, partitions int) map[int]int64 {
	t.Helper()
	out, err := topicadmin.EndOffsets(t.Context(), &kafkago.Client{Addr: kafkago.TCP(brokers...), Timeout: 10 * time.Second}, topic)
	if err != nil || len(out) != partitions {
		t.Fatalf("end offsets of %s = %v (%v), want %d partitions", topic, out, err, partitions)
	}
	return out
}

// committed returns the group's committed offset of each partition of topic (-1: none).
func committed(t testing.TB, brokers []string, group, topic string, partitions int) map[int]int64 {
	t.Helper()
	out, err := topicadmin.CommittedOffsets(t.Context(), &kafkago.Client{Addr: kafkago.TCP(brokers...), Timeout: 10 * time.Second}, group, topic)
	if err != nil || len(out) != partitions {
		t.Fatalf("committed offsets of %s = %v (%v), want %d partitions", group, out, err, partitions)
	}
	return out
}

// waitCommittedToEnd waits until the group committed every partition of topic up to its end.
func waitCommittedToEnd(t testing.TB, brokers []string, group, topic string, partitions int, timeout time.Duration) {
	t.Helper()
	end := endOffsets(t, brokers, topic, partitions)
	testenv.Eventually(t, timeout, "group "+group+" committed to the end of every partition", func() bool {
		got := committed(t, brokers, group, topic, partitions)
		for p, e := range end {
			if e > 0 && got[p] != e {
				return false
			}
		}
		return true
	})
}

// metricValue sums the samples of metric name whose labels include the given name=value pairs.
func metricValue(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			case m.Histogram != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

// readAll reads n records of partition 0 of topic from its start.
func readAll(t testing.TB, brokers []string, topic string, n int) []kafkago.Message {
	t.Helper()
	r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out := make([]kafkago.Message, 0, n)
	for len(out) < n {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("read %s: got %d of %d records: %v", topic, len(out), n, err)
		}
		out = append(out, m)
	}
	return out
}

// convRow is what the tests compare of a conversation row (versions differ between runs by design).
type convRow struct {
	UID             string `db:"uid"`
	ChannelID       string `db:"channel_id"`
	ChannelType     uint8  `db:"channel_type"`
	Unread          int64  `db:"unread"`
	ReadedToMsgSeq  int64  `db:"readed_to_msg_seq"`
	LastMsgSeq      int64  `db:"last_msg_seq"`
	LastClientMsgNo string `db:"last_client_msg_no"`
	IsDeleted       int    `db:"is_deleted"`
}

// rows returns every conversation row of the store, in primary-key order.
func rows(t testing.TB, s *mysql.Store) []convRow {
	t.Helper()
	var out []convRow
	if err := s.DB().Select(&out, `SELECT uid, channel_id, channel_type, unread, readed_to_msg_seq, last_msg_seq,
		last_client_msg_no, is_deleted FROM conversations ORDER BY uid, channel_id, channel_type`); err != nil {
		t.Fatal(err)
	}
	return out
}

// rowMap indexes rows by "uid/channel_id/channel_type".
func rowMap(rs []convRow) map[string]convRow {
	m := make(map[string]convRow, len(rs))
	for _, r := range rs {
		m[r.UID+"/"+r.ChannelID+"/"+itoa(int64(r.ChannelType))] = r
	}
	return m
}

// fakeStore is a Store whose ApplyBatch runs a hook; it records the size of each successful batch.
type fakeStore struct {
	mu      sync.Mutex
	apply   func(ctx context.Context, call int, events []conversation.Event) error
	calls   int
	batches []int
	events  int
}

func (f *fakeStore) ApplyBatch(ctx context.Context, events []conversation.Event) (conversation.BatchResult, error) {
	f.mu.Lock()
	f.calls++
	call := f.calls
	f.mu.Unlock()
	if f.apply != nil {
		if err := f.apply(ctx, call, events); err != nil {
			return conversation.BatchResult{}, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.batches = append(f.batches, len(events))
	f.events += len(events)
	return conversation.BatchResult{Applied: len(events)}, nil
}

func (f *fakeStore) applied() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.events
}

var errDown = fmt.Errorf("fake store: %w", conversation.ErrUnavailable)

// integration returns the test broker and fresh topics (skipping, or failing under REQUIRE_INTEGRATION,
// without a broker).
func integration(t testing.TB, partitions int) (brokers []string, topic, dlq string) {
	t.Helper()
	brokers = testenv.KafkaBrokers(t)
	ts := testenv.Topics(t, brokers, partitions)
	topic, dlq = ts.Events, ts.DLQ
	return brokers, topic, dlq
}
