package e2e

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/conversation"
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
	// A seed whose stream leaves no channel with 3 stored members at either phase's end would test
	// nothing: take the next seed then (deterministic, so E2E_SEED still replays the run).
	var recs []trafficgen.Record
	for sd := seed(t); ; sd++ {
		var err error
		if recs, _, err = trafficgen.Generate(trafficgen.Differential(4000, sd)); err != nil {
			t.Fatal(err)
		}
		if largeAt(recs, 3, len(recs)/2, len(recs)) {
			break
		}
		t.Logf("seed %d leaves no channel with 3 stored members at a phase's end: taking seed %d", sd, sd+1)
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
	// Channels may become large and small again as members come and go: the test tests large channels
	// if any was large after some phase.
	var followers int
	half := len(recs) / 2
	for _, part := range [][]trafficgen.Record{recs[:half], recs[half:]} {
		applyAll(t, model, part, false)
		s.produce(part)
		s.waitCommitted(group, 90*time.Second, p)
		check("phase")
		var n int
		if err := s.db.QueryRow(`SELECT COUNT(*) FROM conversations WHERE follows = 1`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		t.Logf("phase: %d conversations follow a large channel", n)
		followers = max(followers, n)
	}
	if followers == 0 {
		t.Fatal("no channel was large after either phase: the test tests nothing")
	}
	p.stop(t, 20*time.Second)
	replay := testenv.Name("e2e-large-replay-")
	r := s.projector("replay-projector", replay, "LARGE_CHANNEL_MEMBERS", "3")
	s.waitCommitted(replay, 90*time.Second, r)
	r.stop(t, 20*time.Second)
	check("after replay")
}

// largeAt reports whether, after the first cut records of recs for any of cuts, some channel has at
// least n stored members (the membership events' net effect; malformed records change nothing).
func largeAt(recs []trafficgen.Record, n int, cuts ...int) bool {
	members := map[conversation.ChannelKey]map[string]bool{}
	for i, r := range recs {
		if e, err := conversation.DecodeEvent(r.Value, time.Now(), 1<<20); err == nil && e.Membership != nil {
			m := e.Membership
			if members[m.Key()] == nil {
				members[m.Key()] = map[string]bool{}
			}
			for _, u := range m.UIDs {
				if m.Added {
					members[m.Key()][u] = true
				} else {
					delete(members[m.Key()], u)
				}
			}
		}
		if slices.Contains(cuts, i+1) {
			for _, set := range members {
				if len(set) >= n {
					return true
				}
			}
		}
	}
	return false
}
