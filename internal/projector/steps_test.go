package projector

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/testenv"
)

// slowBatchLines returns the "slow batch" lines of a JSON log, decoded.
func slowBatchLines(t *testing.T, buf *testenv.LogBuffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if l == "" || json.Unmarshal([]byte(l), &m) != nil || m["msg"] != "slow batch" {
			continue
		}
		out = append(out, m)
	}
	return out
}

// The steps of a batch's transaction in the real store show in the step histogram, per lane, and a
// batch over SlowBatch is logged with them.
func TestBatchStepsAreTimedAndSlowBatchesLogged(t *testing.T) {
	t.Parallel()
	brokers, topic, dlq := integration(t, 2)
	store, _ := testenv.Store(t, mysql.Options{})
	produce(t, brokers, topic, personMsg(t, "alice", "bob", 1), personMsg(t, "bob", "alice", 2),
		groupMsg(t, "g1", 1, "alice", []string{"alice", "bob", "carol"}))
	group := testenv.Name("group.")
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	var buf testenv.LogBuffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	// Every batch is slow at 1 ns: each is logged.
	p, err := New(Config{Brokers: brokers, Topic: topic, DLQTopic: dlq, GroupID: group, SlowBatch: time.Nanosecond, TimeSteps: mysql.WithBatchTiming,
		RetryMinBackoff: 20 * time.Millisecond, RetryMaxBackoff: 200 * time.Millisecond}, store, m, log)
	if err != nil {
		t.Fatal(err)
	}
	start(t, p)
	waitCommittedToEnd(t, brokers, group, topic, 2, 20*time.Second)

	for _, step := range []string{stepBegin, stepLockChannels, stepAppliedMessages, stepMembers, stepRowsForUpdate,
		stepLateSince, stepBumpVersions, stepWriteRows, stepWriteChannels, stepFlush, stepCommit} {
		if n := metricValue(t, reg, "conv_projector_batch_step_seconds", "step", step); n < 1 {
			t.Errorf("batch_step_seconds{step=%q} has %v samples, want at least one", step, n)
		}
	}
	batches := metricValue(t, reg, "conv_projector_batch_records")
	if n := metricValue(t, reg, "conv_projector_batch_step_seconds", "step", stepCommit); n < batches {
		t.Errorf("%v commits timed for %v batches", n, batches)
	}
	lines := slowBatchLines(t, &buf)
	if len(lines) == 0 || float64(len(lines)) != metricValue(t, reg, "conv_projector_slow_batches_total") {
		t.Fatalf("%d slow-batch lines, slow_batches_total %v, want one per batch (%v)", len(lines),
			metricValue(t, reg, "conv_projector_slow_batches_total"), batches)
	}
	records := 0.0
	for _, l := range lines {
		records += l["records"].(float64)
		steps, ok := l["steps_ms"].(map[string]any)
		if !ok || steps[stepLockChannels] == nil || steps[stepCommit] == nil {
			t.Errorf("slow batch line without its steps: %v", l)
		}
		for _, k := range []string{"lane", "partitions", "age_ms", "took_ms", "max_queue_ms", "apply_ms", "db_commit_ms", "attempts"} {
			if _, ok := l[k]; !ok {
				t.Errorf("slow batch line without %s: %v", k, l)
			}
		}
		if l["age_ms"].(float64) < l["took_ms"].(float64) {
			t.Errorf("age %v below took %v: the oldest record waited at least the batch", l["age_ms"], l["took_ms"])
		}
	}
	if records != 3 {
		t.Errorf("slow batches hold %v records, want the 3 produced", records)
	}
}

// slowBatch logs by the age of the batch's oldest record, and never when SlowBatch is 0.
func TestSlowBatchThreshold(t *testing.T) {
	for _, tc := range []struct {
		name  string
		slow  time.Duration
		age   time.Duration
		fetch time.Duration // from the record's timestamp to fetched
		logs  bool
	}{
		{"older than the threshold", time.Second, 2 * time.Second, 0, true},
		{"younger than the threshold", time.Second, 10 * time.Millisecond, 0, false},
		{"fetched late", time.Second, 10 * time.Millisecond, 3 * time.Second, true},
		{"off", 0, time.Hour, time.Hour, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := NewMetrics(prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			var buf testenv.LogBuffer
			p, err := New(Config{Brokers: []string{"127.0.0.1:1"}, Topic: "t", DLQTopic: "d", GroupID: "g", SlowBatch: tc.slow},
				&fakeStore{}, m, slog.New(slog.NewJSONHandler(&buf, nil)))
			if err != nil {
				t.Fatal(err)
			}
			l := p.lanes[0]
			taken := time.Now().Add(-tc.age)
			l.started([]fetched{{msg: kafkago.Message{Partition: 3, Offset: 7, Time: taken.Add(-tc.fetch)}, taken: taken}})
			l.steps.observe(stepCommit, 2*time.Millisecond)
			l.slowBatch([]kafkago.Message{{Partition: 3, Offset: 7}})
			lines := slowBatchLines(t, &buf)
			if got := len(lines) == 1; got != tc.logs {
				t.Fatalf("%d slow-batch lines, want logged %v", len(lines), tc.logs)
			}
			if tc.logs {
				if steps := lines[0]["steps_ms"].(map[string]any); steps[stepCommit] != 2.0 {
					t.Errorf("steps %v, want commit 2 ms", steps)
				}
				if parts := lines[0]["partitions"].([]any); len(parts) != 1 || parts[0] != 3.0 {
					t.Errorf("partitions %v, want [3]", parts)
				}
			}
		})
	}
}
