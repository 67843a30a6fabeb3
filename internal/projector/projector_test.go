package projector

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/conversation"
)

// chanFetcher hands out what is sent on its channel, like a reader whose records trickle in.
type chanFetcher chan kafkago.Message

func (c chanFetcher) FetchMessage(ctx context.Context) (kafkago.Message, error) {
	select {
	case <-ctx.Done():
		return kafkago.Message{}, ctx.Err()
	case m := <-c:
		return m, nil
	}
}

// queued is a prefetch queue holding outcomes, as if they had been fetched while a batch was applied.
func queued(outcomes ...fetched) chan fetched {
	c := make(chan fetched, len(outcomes)+1)
	for _, f := range outcomes {
		c <- f
	}
	return c
}

func records(n, size int) []fetched {
	out := make([]fetched, n)
	for i := range out {
		out[i] = fetched{msg: kafkago.Message{Offset: int64(i), Value: make([]byte, size)}}
	}
	return out
}

func offsets(batch []fetched) []int64 {
	var out []int64
	for _, f := range batch {
		out = append(out, f.msg.Offset)
	}
	return out
}

func TestBatcher(t *testing.T) {
	t.Run("takes what is queued, no more, without waiting", func(t *testing.T) {
		b := &batcher{in: queued(records(3, 1)...), maxRecords: 500, maxBytes: 1 << 20}
		batch, err := b.next(t.Context())
		if err != nil || len(batch) != 3 {
			t.Fatalf("got %v (err %v), want the 3 queued records", offsets(batch), err)
		}
	})
	t.Run("stops at max records; the rest is the next batch", func(t *testing.T) {
		b := &batcher{in: queued(records(20, 1)...), maxRecords: 8, maxBytes: 1 << 20}
		for _, want := range []string{"[0 1 2 3 4 5 6 7]", "[8 9 10 11 12 13 14 15]", "[16 17 18 19]"} {
			batch, err := b.next(t.Context())
			if got := fmt.Sprint(offsets(batch)); err != nil || got != want {
				t.Fatalf("got %s (err %v), want %s", got, err, want)
			}
		}
	})
	t.Run("stops before max bytes; the record that would cross it starts the next batch", func(t *testing.T) {
		b := &batcher{in: queued(records(5, 100)...), maxRecords: 500, maxBytes: 250}
		for _, want := range []string{"[0 1]", "[2 3]", "[4]"} {
			batch, err := b.next(t.Context())
			if got := fmt.Sprint(offsets(batch)); err != nil || got != want {
				t.Fatalf("got %s (err %v), want %s", got, err, want)
			}
		}
	})
	t.Run("a record over max bytes is a batch of its own", func(t *testing.T) {
		b := &batcher{in: queued(append(records(1, 1000), records(1, 1)...)...), maxRecords: 500, maxBytes: 250}
		batch, _ := b.next(t.Context())
		if len(batch) != 1 || len(batch[0].msg.Value) != 1000 {
			t.Fatalf("got %v, want the large record alone", offsets(batch))
		}
	})
	t.Run("a fetch error ends the batch and is returned with it", func(t *testing.T) {
		boom := errors.New("boom")
		in := queued(append(records(2, 1), fetched{err: boom, failures: 3})...)
		b := &batcher{in: in, maxRecords: 500, maxBytes: 1 << 20}
		batch, err := b.next(t.Context())
		fe, ok := errors.AsType[*fetchError](err)
		if len(batch) != 2 || !errors.Is(err, boom) || !ok || fe.attempt != 3 {
			t.Fatalf("got %v and %v, want 2 records and boom at attempt 3", offsets(batch), err)
		}
	})
	t.Run("shutdown before any record returns nothing", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		b := &batcher{in: make(chan fetched), maxRecords: 500, maxBytes: 1 << 20}
		batch, err := b.next(ctx)
		if len(batch) != 0 || !errors.Is(err, context.Canceled) {
			t.Fatalf("got %d records and %v, want none and context.Canceled", len(batch), err)
		}
	})
	t.Run("linger: records that arrive before the deadline join the batch", func(t *testing.T) {
		in := make(chan fetched)
		b := &batcher{in: in, maxRecords: 3, maxBytes: 1 << 20, linger: time.Hour}
		go func() {
			for _, f := range records(3, 1) {
				in <- f // unbuffered: each arrives while next is waiting
			}
		}()
		batch, err := b.next(t.Context())
		if err != nil || len(batch) != 3 {
			t.Fatalf("got %v (err %v), want 3 records gathered by lingering", offsets(batch), err)
		}
	})
}

func TestFetchIntoRunsAheadAndStops(t *testing.T) {
	src := make(chanFetcher, 10)
	for i := range 10 {
		src <- kafkago.Message{Offset: int64(i)}
	}
	ctx, cancel := context.WithCancel(t.Context())
	out := make(chan fetched, 4)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		fetchInto(ctx, src, out, time.Millisecond, time.Millisecond)
	}()
	for i := range 10 { // more than the queue holds: the goroutine refills it as records are taken
		f := <-out
		if f.err != nil || f.msg.Offset != int64(i) || f.taken.IsZero() {
			t.Fatalf("outcome %d = %+v", i, f)
		}
	}
	cancel()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("fetchInto still running 5s after its context ended")
	}
}

func TestSpreadDealsPartitionsToLanesFairly(t *testing.T) {
	parts := []kafkago.PartitionAssignment{{ID: 5}, {ID: 0}, {ID: 3}, {ID: 1}, {ID: 4}}
	got := spread(parts, 2)
	ids := func(as []kafkago.PartitionAssignment) (out []int) {
		for _, a := range as {
			out = append(out, a.ID)
		}
		return out
	}
	if fmt.Sprint(ids(got[0]), ids(got[1])) != "[0 3 5] [1 4]" {
		t.Fatalf("spread = %v %v, want [0 3 5] [1 4]", ids(got[0]), ids(got[1]))
	}
	if got := spread(parts[:1], 3); len(got) != 3 || len(got[0]) != 1 || got[1] != nil || got[2] != nil {
		t.Fatalf("spread of one partition to 3 lanes = %v, want it in lane 0, the others idle", got)
	}
}

func TestDecodeDeadLettersEachKindOfBadRecord(t *testing.T) {
	good := `{"message_id":1,"message_seq":1,"channel_id":"g1","channel_type":2}`
	tests := []struct {
		name, value, reason string
	}{
		{"not JSON", `hello`, conversation.ReasonInvalidJSON},
		{"empty value", ``, conversation.ReasonInvalidJSON},
		{"JSON array", `[` + good + `]`, conversation.ReasonInvalidJSON},
		{"missing message_seq", `{"message_id":1,"channel_id":"g1","channel_type":2}`, conversation.ReasonMissingField},
		{"message_seq of the wrong type", `{"message_id":1,"message_seq":"1","channel_id":"g1","channel_type":2}`, conversation.ReasonWrongType},
		{"unknown type", `{"type":"message.edited","message_id":1,"message_seq":1,"channel_id":"g1","channel_type":2}`, conversation.ReasonUnknownType},
		{"too large", `{"message_id":1,"message_seq":1,"channel_id":"g1","channel_type":2,"client_msg_no":"` + strings.Repeat("x", 300) + `"}`, conversation.ReasonTooLarge},
		{"payload not base64", `{"message_id":1,"message_seq":1,"channel_id":"g1","channel_type":2,"payload":"!!"}`, conversation.ReasonInvalidValue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := newProjector(t, Config{Brokers: []string{"127.0.0.1:1"}, Topic: "events", DLQTopic: "dlq", GroupID: "g", MaxEventBytes: 256}, &fakeStore{})
			var logged bytes.Buffer
			l := p.lanes[0]
			l.log = slog.New(slog.NewJSONHandler(&logged, nil))
			in := []kafkago.Message{
				{Topic: "events", Partition: 3, Offset: 41, Key: []byte("g1"), Value: []byte(good)},
				{Topic: "events", Partition: 3, Offset: 42, Key: []byte("the-key"), Value: []byte(tt.value),
					Headers: []kafkago.Header{{Key: "traceparent", Value: []byte("00-abc")}}},
			}
			events, srcs, dead := l.decode(in)
			if len(events) != 1 || len(srcs) != 1 || srcs[0].Offset != 41 || events[0].Message == nil || events[0].Message.MessageSeq != 1 {
				t.Fatalf("events = %+v, want the one good record", events)
			}
			if len(dead) != 1 {
				t.Fatalf("got %d dead letters, want 1", len(dead))
			}
			d := dead[0]
			if string(d.Key) != "the-key" || string(d.Value) != tt.value {
				t.Errorf("dead letter key/value = %q/%q, want the original's", d.Key, d.Value)
			}
			want := map[string]string{"traceparent": "00-abc", HeaderReason: tt.reason, HeaderSourceTopic: "events",
				HeaderSourcePartition: "3", HeaderSourceOffset: "42"}
			got := map[string]string{}
			for _, h := range d.Headers {
				got[h.Key] = string(h.Value)
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("header %s = %q, want %q", k, got[k], v)
				}
			}
			if !strings.HasPrefix(got[HeaderError], tt.reason+":") {
				t.Errorf("header %s = %q, want the decoding error", HeaderError, got[HeaderError])
			}
			if r := reasonOf(d); r != tt.reason {
				t.Errorf("reasonOf = %q, want %q", r, tt.reason)
			}
			lines := strings.Split(strings.TrimSpace(logged.String()), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], `"topic":"events","partition":3,"offset":42,"reason":"`+tt.reason+`"`) {
				t.Errorf("logged %q, want one line locating the record with its reason", lines)
			}
			if tt.value != "" && strings.Contains(logged.String(), tt.value) {
				t.Errorf("the log shows the record's value: %s", logged.String())
			}
		})
	}
}

// flakyWriter fails the records whose value is in failOnce the first time it sees them.
type flakyWriter struct {
	failOnce map[string]bool
	written  []string
}

func (w *flakyWriter) WriteMessages(_ context.Context, msgs ...kafkago.Message) error {
	errs := make(kafkago.WriteErrors, len(msgs))
	failed := false
	for i, m := range msgs {
		if w.failOnce[string(m.Value)] {
			delete(w.failOnce, string(m.Value))
			errs[i], failed = errors.New("not enough replicas"), true
			continue
		}
		w.written = append(w.written, string(m.Value))
	}
	if failed {
		return errs
	}
	return nil
}

func (w *flakyWriter) Close() error { return nil }

func TestWritePendingRetriesOnlyTheFailedRecords(t *testing.T) {
	w := &flakyWriter{failOnce: map[string]bool{"b": true}}
	pending := []kafkago.Message{{Value: []byte("a")}, {Value: []byte("b")}, {Value: []byte("c")}}
	pending, _, err := writePending(t.Context(), w, pending)
	if err == nil || len(pending) != 1 || string(pending[0].Value) != "b" {
		t.Fatalf("after a partial failure: pending %d, err %v; want only b pending and an error", len(pending), err)
	}
	pending, _, err = writePending(t.Context(), w, pending)
	if err != nil || len(pending) != 0 {
		t.Fatalf("retry: pending %d, err %v; want all written", len(pending), err)
	}
	if got := strings.Join(w.written, ","); got != "a,c,b" {
		t.Fatalf("written %s, want each record once: a,c,b", got)
	}
}

func TestBackoffGrowsWithJitterAndStaysBounded(t *testing.T) {
	lo, hi := 100*time.Millisecond, 2*time.Second
	for attempt, want := range map[int]time.Duration{1: lo, 2: 2 * lo, 3: 4 * lo, 5: 16 * lo, 6: hi, 50: hi} {
		for range 100 {
			if d := backoff(lo, hi, attempt); d < want/2 || d > want {
				t.Fatalf("attempt %d waited %s, want within [%s, %s]", attempt, d, want/2, want)
			}
		}
	}
}

func TestGraceContextOutlivesItsParentByTheGrace(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	g, stop := graceContext(ctx, 100*time.Millisecond)
	defer stop()
	cancel()
	start := time.Now()
	select {
	case <-g.Done():
		t.Fatal("grace context ended with its parent")
	case <-time.After(50 * time.Millisecond):
	}
	<-g.Done()
	if took := time.Since(start); took < 100*time.Millisecond || took > time.Second {
		t.Fatalf("grace context ended %s after its parent, want about 100ms", took)
	}
}

func TestLastPerPartition(t *testing.T) {
	msgs := []kafkago.Message{{Partition: 1, Offset: 5}, {Partition: 0, Offset: 9}, {Partition: 1, Offset: 6}, {Partition: 0, Offset: 10}}
	got := lastPerPartition(msgs)
	if len(got) != 2 || got[0].Partition != 1 || got[0].Offset != 6 || got[1].Partition != 0 || got[1].Offset != 10 {
		t.Fatalf("got %+v, want partition 1 at 6 and partition 0 at 10", got)
	}
}
