package e2e

import (
	"errors"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/refmodel"
	"github.com/convsync/conversations/internal/testenv"
	"github.com/convsync/conversations/internal/trafficgen"
)

// TestPoison interleaves malformed records (bad JSON, missing or wrong-typed fields, unknown types, out
// of range values) with a good stream: every bad record must reach the dead-letter topic with its reason
// in x-dlq-reason, and every good one must be applied (the database equals the model).
func TestPoison(t *testing.T) {
	parallel(t)
	s := newStack(t, 6, window)
	cfg := trafficgen.Differential(3000, seed(t))
	cfg.Chaos.MalformedRate = 0.03
	recs, stats, err := trafficgen.Generate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	model := refmodel.New(refmodel.Options{Window: window})
	want := map[string]int{} // bad value -> how many times it was produced
	reasonOf := map[string]string{}
	for _, r := range recs {
		if err := model.Apply(r.Value); err != nil {
			var bad *conversation.BadEventError
			if !errors.As(err, &bad) {
				t.Fatalf("decode error %v is not a BadEventError", err)
			}
			want[string(r.Value)]++
			reasonOf[string(r.Value)] = bad.Reason
		}
	}
	if model.Counts().Bad != stats.Malformed {
		t.Fatalf("model saw %d bad records, the generator made %d", model.Counts().Bad, stats.Malformed)
	}
	group := testenv.Name("e2e-poison-")
	p := s.projector("projector", group)
	s.produce(recs)
	s.waitCommitted(group, 90*time.Second, p)
	rep := s.compare(model)

	// The dead-letter topic is at least once: a record may appear twice, never zero times. Dedupe by
	// source position.
	type pos struct{ partition, offset string }
	seen := map[pos]bool{}
	got := map[string]int{}
	byReason := map[string]int{}
	dlq := s.readDLQ()
	for _, d := range dlq {
		reason := d.headers["x-dlq-reason"]
		if reason == "" {
			t.Errorf("dead letter without x-dlq-reason: %q", d.value)
		}
		if w, ok := reasonOf[string(d.value)]; !ok {
			t.Errorf("dead letter %q is not one of the malformed records", d.value)
		} else if reason != w {
			t.Errorf("dead letter %q: reason %q, want %q", d.value, reason, w)
		}
		k := pos{d.headers["x-source-partition"], d.headers["x-source-offset"]}
		if k.partition == "" || k.offset == "" {
			t.Errorf("dead letter %q does not say where it came from: %v", d.value, d.headers)
		}
		if !seen[k] {
			seen[k] = true
			got[string(d.value)]++
			byReason[reason]++
		}
	}
	for v, n := range want {
		if got[v] != n {
			t.Errorf("malformed record %q: produced %d times, dead-lettered %d times", v, n, got[v])
		}
	}
	t.Logf("poison: records=%d bad=%d dead_letters=%d (distinct %d) by reason %v; good applied: rows=%d messages=%d mismatches=%d",
		len(recs), stats.Malformed, len(dlq), len(seen), byReason, rep.Rows, rep.Messages, rep.Mismatches)
}
