package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/refmodel"
	"github.com/convsync/conversations/internal/testenv"
	"github.com/convsync/conversations/internal/trafficgen"
)

// TestDifferentialLarge is TestDifferentialAndReplay with LARGE_CHANNEL_MEMBERS=3 (contract §5): the
// real projector, through the real broker, fans most groups of the chaotic stream out at read time,
// and what sync derives for every user must equal the model after each phase, and again after a second
// projector replayed the whole topic under a new group. (The replay may rewrite rows of large
// channels' members, since membership events replayed in order make them join and leave again, but
// never what sync answers.)
func TestDifferentialLarge(t *testing.T) {
	parallel(t)
	s := newStack(t, 6, window)
	recs, _, err := trafficgen.Generate(trafficgen.Differential(4000, seed(t)))
	if err != nil {
		t.Fatal(err)
	}
	store, err := mysql.Open(s.dsn, mysql.Options{MaxOpenConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	model := refmodel.New(refmodel.Options{Window: window})
	check := func(what string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		rep, err := refmodel.CompareSync(ctx, s.db, store.UserRows, model)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Mismatches != 0 {
			t.Fatalf("%s: sync differs from the model: %s", what, rep)
		}
		t.Logf("%s: %d conversations as the model has them", what, rep.Rows)
	}
	group := testenv.Name("e2e-large-")
	p := s.projector("projector", group, "LARGE_CHANNEL_MEMBERS", "3")
	half := len(recs) / 2
	for _, part := range [][]trafficgen.Record{recs[:half], recs[half:]} {
		applyAll(t, model, part, false)
		s.produce(part)
		s.waitCommitted(group, 90*time.Second, p)
		check("phase")
	}
	var followers int
	if err := s.db.QueryRow(`SELECT COUNT(*) FROM conversations WHERE follows = 1`).Scan(&followers); err != nil {
		t.Fatal(err)
	}
	if followers == 0 {
		t.Fatal("no channel became large: the test tests nothing")
	}
	p.stop(t, 20*time.Second)
	replay := testenv.Name("e2e-large-replay-")
	r := s.projector("replay-projector", replay, "LARGE_CHANNEL_MEMBERS", "3")
	s.waitCommitted(replay, 90*time.Second, r)
	r.stop(t, 20*time.Second)
	check("after replay")
}
