package e2e

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/refmodel"
	"github.com/convsync/conversations/internal/testenv"
	"github.com/convsync/conversations/internal/trafficgen"
)

// window is the RECENTS_WINDOW of the projectors under test: small, so windows are pruned and the
// watermark matters, yet well above how late the generator's reordering makes a message.
const window = 30

// TestDifferentialAndReplay produces a seeded, chaotic stream (person and group-like channels,
// membership changes, duplicates, local reordering, red-dot variations, no_persist, skipped types) to a
// 6-partition topic keyed by storage key, in two phases, and requires the projector's database to equal
// the reference model after each, with versions that respect contract §3.6 between them. Then a second
// projector in a new consumer group replays the topic from the start over the same database, which must
// not change a byte.
func TestDifferentialAndReplay(t *testing.T) {
	parallel(t)
	s := newStack(t, 6, window)
	recs, stats, err := trafficgen.Generate(trafficgen.Differential(4000, seed(t)))
	if err != nil {
		t.Fatal(err)
	}
	model := refmodel.New(refmodel.Options{Window: window})
	group := testenv.Name("e2e-diff-")
	p := s.projector("projector", group)

	half := len(recs) / 2
	var before refmodel.Versions
	var rep refmodel.Report
	var took time.Duration
	for phase, part := range [][]trafficgen.Record{recs[:half], recs[half:]} {
		applyAll(t, model, part, false)
		s.produce(part)
		took += s.waitCommitted(group, 90*time.Second, p)
		rep = s.compare(model)
		ctx := context.Background()
		if phase == 1 {
			bad, err := refmodel.CheckVersionsSince(ctx, s.db, model, before)
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range bad {
				t.Error(b)
			}
		}
		if before, err = refmodel.ReadVersions(ctx, s.db, model); err != nil {
			t.Fatal(err)
		}
	}
	lag := consumerLag(t, p)
	for series, v := range lag {
		if v != 0 {
			t.Errorf("caught up, yet conv_projector_consumer_lag{partition=%q} = %v", series, v)
		}
	}
	if len(lag) == 0 {
		t.Error("the projector exports no conv_projector_consumer_lag")
	}
	c := model.Counts()
	t.Logf("differential: events=%d messages=%d memberships=%d duplicates=%d reordered=%d not_projected=%d; "+
		"compared rows=%d messages=%d channels=%d member_sets=%d; mismatches=%d; applied in %s; consumer_lag 0 on %d partitions",
		len(recs), c.Messages, c.Memberships, stats.Duplicates, stats.Reordered, c.NotProjected,
		rep.Rows, rep.Messages, rep.Channels, rep.Members, rep.Mismatches, took.Round(time.Millisecond), len(lag))
	p.stop(t, 20*time.Second)

	// Replay: everything again, from the earliest offset, under a new group id.
	dumpBefore := s.dump()
	replayGroup := testenv.Name("e2e-replay-")
	r := s.projector("replay-projector", replayGroup)
	replayTook := s.waitCommitted(replayGroup, 90*time.Second, r)
	r.stop(t, 20*time.Second)
	dumpAfter := s.dump()
	rows := 0
	for _, table := range slices.Sorted(maps.Keys(dumpBefore)) {
		b, a := dumpBefore[table], dumpAfter[table]
		rows += len(b)
		if diff := firstDiff(b, a); diff != "" {
			t.Errorf("replay changed table %s (%d rows before, %d after): %s", table, len(b), len(a), diff)
		}
	}
	t.Logf("replay: %d records again under a new group in %s; tables=%d rows=%d byte-identical=%v",
		len(recs), replayTook.Round(time.Millisecond), len(dumpBefore), rows, !t.Failed())
}

// firstDiff describes the first difference between two dumps of a table, or returns "".
func firstDiff(before, after []string) string {
	for i := range max(len(before), len(after)) {
		switch {
		case i >= len(before):
			return fmt.Sprintf("new row %s", after[i])
		case i >= len(after):
			return fmt.Sprintf("row gone: %s", before[i])
		case before[i] != after[i]:
			return fmt.Sprintf("row %d was %s, is %s", i, before[i], after[i])
		}
	}
	return ""
}
