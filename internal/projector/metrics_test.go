package projector

import (
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/convsync/conversations/internal/conversation"
)

func TestDeadLetterReasonsStartAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	// Every reason is exported from the start, so rate() and alerts work before the first dead letter.
	reasons := append(conversation.DeadLetterReasons(), ReasonApplyFailed)
	for _, r := range reasons {
		if n := metricValue(t, reg, "conv_projector_dead_lettered_total", "reason", r); n != 0 {
			t.Errorf("dead_lettered_total{reason=%q} = %v, want 0", r, n)
		}
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "conv_projector_dead_lettered_total" && len(f.GetMetric()) != len(reasons) {
			t.Errorf("dead_lettered_total has %d series, want one per reason", len(f.GetMetric()))
		}
	}
}

func TestNewMetricsRefusesASecondRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Fatal("registering the metrics twice on one registry succeeded, want an error")
	}
}

func TestNewRejectsAnIncompleteConfig(t *testing.T) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(Config{Topic: "t", DLQTopic: "t"}, &fakeStore{}, m, testLog())
	for _, want := range []string{"no Kafka brokers", "must differ", "no consumer group id"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New = %v, want an error saying %q", err, want)
		}
	}
}

// A batch-size histogram whose top bucket is below the batch bound says nothing about full batches,
// which are exactly the ones that matter under a backlog.
func TestBatchRecordsBucketsReachTheBatchBound(t *testing.T) {
	top := slices.Max(batchRecordsBuckets)
	if def := (Config{}).withDefaults().BatchMaxRecords; top < float64(def) {
		t.Errorf("top bucket %v is below the default batch bound %d", top, def)
	}
	if top < 50_000 { // cmd/projector accepts BATCH_MAX_RECORDS up to 50000
		t.Errorf("top bucket %v is below the largest accepted batch bound 50000", top)
	}
	if !slices.IsSorted(batchRecordsBuckets) {
		t.Error("buckets are not sorted")
	}
}
