package projector

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/probes"
	"github.com/convsync/conversations/internal/testenv"
	"github.com/convsync/conversations/internal/topicadmin"
)

// limitWriter is a dead-letter topic whose broker refuses any write of more than limit value bytes in
// total, as a real one refuses a record batch over max.message.bytes.
type limitWriter struct {
	limit   int
	written []kafkago.Message
}

func (w *limitWriter) WriteMessages(_ context.Context, msgs ...kafkago.Message) error {
	n := 0
	for _, m := range msgs {
		n += len(m.Value)
	}
	if n > w.limit {
		errs := make(kafkago.WriteErrors, len(msgs))
		for i := range errs {
			errs[i] = kafkago.MessageSizeTooLarge
		}
		return errs
	}
	w.written = append(w.written, msgs...)
	return nil
}

func (w *limitWriter) Close() error { return nil }

func TestWritePendingReducesOnlyLettersTooLargeAlone(t *testing.T) {
	const limit = 20 << 10
	letter := func(n int) kafkago.Message {
		return deadLetter(kafkago.Message{Topic: "events", Partition: 3, Offset: int64(n), Key: []byte("k"),
			Value: bytes.Repeat([]byte("v"), n), Headers: []kafkago.Header{{Key: "trace", Value: []byte("t")}}},
			conversation.ReasonTooLarge, errors.New("too large"))
	}
	tests := []struct {
		name        string
		sizes       []int
		wantReduced int
	}{
		{name: "just under the limit is written whole", sizes: []int{limit}},
		{name: "just over the limit is written reduced", sizes: []int{limit + 1}, wantReduced: 1},
		{name: "a batch over the limit whose letters each fit is written whole", sizes: []int{limit - 10, limit - 10, 10}},
		{name: "only the letter over the limit is reduced", sizes: []int{100, 5 * limit, 100}, wantReduced: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &limitWriter{limit: limit}
			var pending []kafkago.Message
			for _, n := range tt.sizes {
				pending = append(pending, letter(n))
			}
			left, reduced, err := writePending(t.Context(), w, pending)
			if err != nil || len(left) != 0 || reduced != tt.wantReduced {
				t.Fatalf("left %d, reduced %d, err %v; want all written, %d reduced", len(left), reduced, err, tt.wantReduced)
			}
			if len(w.written) != len(tt.sizes) {
				t.Fatalf("written %d letters, want %d: one per record", len(w.written), len(tt.sizes))
			}
			for _, m := range w.written {
				h := headers(m)
				n, _ := strconv.Atoi(h[HeaderSourceOffset]) // the letter's original size, by construction
				whole := n <= limit
				if whole {
					if len(m.Value) != n || h["trace"] != "t" || h[HeaderValueBytes] != "" {
						t.Errorf("letter of %d bytes: value %d bytes, headers %v; want it whole", n, len(m.Value), h)
					}
					continue
				}
				if len(m.Value) != ReducedValueBytes || h[HeaderValueBytes] != strconv.Itoa(n) || h["trace"] != "" ||
					h[HeaderReason] != conversation.ReasonTooLarge || h[HeaderSourceTopic] != "events" ||
					h[HeaderSourcePartition] != "3" || string(m.Key) != "k" {
					t.Errorf("reduced letter of %d bytes: value %d bytes, key %q, headers %v", n, len(m.Value), m.Key, h)
				}
			}
		})
	}
}

func headers(m kafkago.Message) map[string]string {
	h := map[string]string{}
	for _, x := range m.Headers {
		h[x.Key] = string(x.Value)
	}
	return h
}

// Records at both size limits, on a real broker: MaxEventBytes (the projector's) and the dead-letter
// topic's max.message.bytes, here smaller than the events topic's so that letters reach it. Every record
// reaches an end, the partition does not stall, and the good records around them are applied.
func TestEveryRecordReachesAnEndAtBothSizeLimits(t *testing.T) {
	t.Parallel()
	brokers, topic, _ := integration(t, 1)
	const maxEvent, dlqLimit = 16 << 10, 64 << 10
	dlq := testenv.Name("test.small-dlq.")
	testenv.DeleteTopicsAtCleanup(t, brokers, dlq)
	if err := topicadmin.Ensure(t.Context(), nil, brokers, topicadmin.Topic{Name: dlq, Partitions: 1, MaxMessageBytes: dlqLimit}); err != nil {
		t.Fatal(err)
	}
	eventsLimit, err := topicadmin.MaxMessageBytes(t.Context(), nil, brokers, topic)
	if err != nil {
		t.Fatal(err)
	}
	store, _ := testenv.Store(t, mysql.Options{})

	random := func(n int) []byte { // incompressible, so that gzip does not bring it under a limit
		b := make([]byte, n)
		_, _ = rand.Read(b)
		return b
	}
	underMaxEvent := groupMsg(t, "g1", 2, "alice", []string{"bob"})
	underMaxEvent.value = bytes.Replace(underMaxEvent.value, []byte(`"payload":"aGk="`),
		[]byte(`"payload":"`+string(bytes.Repeat([]byte("aGlo"), (maxEvent-len(underMaxEvent.value))/4+1))+`"`), 1)
	if len(underMaxEvent.value) > maxEvent || len(underMaxEvent.value) < maxEvent-8 {
		t.Fatalf("the event just under MaxEventBytes has %d bytes", len(underMaxEvent.value))
	}
	bad := []struct {
		name  string
		value []byte
		whole bool
	}{
		{"just over MaxEventBytes", random(maxEvent + 1), true},
		{"just under the dead-letter limit", random(dlqLimit - 2<<10), true},
		{"just over the dead-letter limit", random(dlqLimit + 1), false},
		{"just under the events topic's limit", random(eventsLimit - 512), false},
	}
	recs := []record{groupMsg(t, "g1", 1, "alice", []string{"bob"}), underMaxEvent}
	for i, b := range bad {
		recs = append(recs, record{key: "big-" + strconv.Itoa(i), value: b.value})
	}
	produceSized(t, brokers, topic, kafkago.Compression(0), recs...)
	// over MaxEventBytes only once decompressed: whole again in the dead-letter topic, compressed
	zipped := bytes.Repeat([]byte("z"), 4<<20)
	produceSized(t, brokers, topic, kafkago.Gzip, record{key: "gzip", value: zipped})
	produceSized(t, brokers, topic, kafkago.Compression(0), groupMsg(t, "g1", 3, "alice", []string{"bob"}))

	group := testenv.Name("group.")
	p, reg := newProjector(t, Config{Brokers: brokers, Topic: topic, DLQTopic: dlq, GroupID: group, MaxEventBytes: maxEvent}, store)
	start(t, p)
	waitCommittedToEnd(t, brokers, group, topic, 1, 60*time.Second)

	letters := readAll(t, brokers, dlq, len(bad)+1)
	for i, m := range letters {
		h := headers(m)
		if h[HeaderReason] != conversation.ReasonTooLarge || h[HeaderSourceOffset] != strconv.Itoa(i+2) {
			t.Errorf("letter %d: headers %v, want too_large from offset %d", i, h, i+2)
		}
		want, whole, name := zipped, true, "gzip record"
		if i < len(bad) {
			want, whole, name = bad[i].value, bad[i].whole, bad[i].name
		}
		switch {
		case whole && (!bytes.Equal(m.Value, want) || h[HeaderValueBytes] != ""):
			t.Errorf("%s: letter of %d bytes, want the whole record's %d", name, len(m.Value), len(want))
		case !whole && (!bytes.Equal(m.Value, want[:ReducedValueBytes]) || h[HeaderValueBytes] != strconv.Itoa(len(want))):
			t.Errorf("%s: letter of %d bytes, %s=%q; want a reduced one of %d", name, len(m.Value), HeaderValueBytes, h[HeaderValueBytes], len(want))
		}
	}
	r := rowMap(rows(t, store))["bob/g1/2"]
	if r.Unread != 3 || r.LastMsgSeq != 3 {
		t.Errorf("bob's row: unread %d, last_msg_seq %d; want the 3 good records applied", r.Unread, r.LastMsgSeq)
	}
	if got := metricValue(t, reg, "conv_projector_dead_letters_reduced_total"); got != 2 {
		t.Errorf("dead_letters_reduced_total = %v, want 2", got)
	}
}

// A record just under the events topic's own limit is dead-lettered whole: the dead-letter topic that
// testenv creates (as migrate does) fits it plus the headers.
func TestARecordTheEventsTopicAcceptsIsDeadLetteredWhole(t *testing.T) {
	t.Parallel()
	brokers, topic, dlq := integration(t, 1)
	eventsLimit, err := topicadmin.MaxMessageBytes(t.Context(), nil, brokers, topic)
	if err != nil {
		t.Fatal(err)
	}
	store, _ := testenv.Store(t, mysql.Options{})
	value := make([]byte, eventsLimit-200) // the record batch's own overhead is less than 200 bytes
	_, _ = rand.Read(value)
	produceSized(t, brokers, topic, kafkago.Compression(0), record{key: "big", value: value}, groupMsg(t, "g1", 1, "alice", []string{"bob"}))
	group := testenv.Name("group.")
	p, reg := newProjector(t, Config{Brokers: brokers, Topic: topic, DLQTopic: dlq, GroupID: group}, store)
	start(t, p)
	waitCommittedToEnd(t, brokers, group, topic, 1, 60*time.Second)
	letters := readAll(t, brokers, dlq, 1)
	if !bytes.Equal(letters[0].Value, value) {
		t.Errorf("letter of %d bytes, want the whole record's %d", len(letters[0].Value), len(value))
	}
	if got := metricValue(t, reg, "conv_projector_dead_letters_reduced_total"); got != 0 {
		t.Errorf("dead_letters_reduced_total = %v, want 0", got)
	}
	kafka := probes.NewKafka(brokers, topic, dlq, nil)
	defer kafka.Close()
	if got := kafka.CheckDeadLetter(t.Context()); got != "ok" {
		t.Errorf("readiness dead_letter = %q, want ok", got)
	}
}

// produceSized writes records in one call, as large as the broker accepts, compressed with codec.
func produceSized(t testing.TB, brokers []string, topic string, codec kafkago.Compression, recs ...record) {
	t.Helper()
	w := &kafkago.Writer{Addr: kafkago.TCP(brokers...), Topic: topic, Balancer: &kafkago.Hash{}, RequiredAcks: kafkago.RequireAll,
		BatchTimeout: time.Millisecond, BatchSize: 1, BatchBytes: 64 << 20, Compression: codec}
	defer w.Close()
	for _, r := range recs {
		if err := w.WriteMessages(t.Context(), kafkago.Message{Key: []byte(r.key), Value: r.value}); err != nil {
			t.Fatalf("produce %d bytes: %v", len(r.value), fmt.Errorf("%w", err))
		}
	}
}
