package e2e

import (
	"context"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/refmodel"
	"github.com/convsync/conversations/internal/testenv"
	"github.com/convsync/conversations/internal/trafficgen"
)

// waitProgress waits until group has committed at least frac of the topic's records (or all of them) and
// reports how far it got.
func (s *stack) waitProgress(group string, frac float64, timeout time.Duration, p *proc) (done, total int64) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	end := s.endOffsets(ctx, s.topic)
	for {
		done, total = s.progress(ctx, group, end)
		if total > 0 && float64(done) >= frac*float64(total) {
			return done, total
		}
		if !p.running() {
			s.t.Fatalf("%s exited (%v) at %d of %d records", p.name, p.err, done, total)
		}
		select {
		case <-ctx.Done():
			s.t.Fatalf("group %s committed %d of %d records after %s, want %.0f%%", group, done, total, timeout, 100*frac)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestCrash kills the projector with SIGKILL several times while it applies a stream, at random moments
// (mid-batch, mid-transaction, between apply and commit), restarting it each time in the same group. The
// database must end equal to the model: nothing lost, nothing counted twice.
func TestCrash(t *testing.T) {
	parallel(t)
	s := newStack(t, 6, window)
	sd := seed(t)
	recs, _, err := trafficgen.Generate(trafficgen.Differential(5000, sd))
	if err != nil {
		t.Fatal(err)
	}
	model := refmodel.New(refmodel.Options{Window: window})
	applyAll(t, model, recs, false)
	s.produce(recs) // all in the topic first: the projector has a long backlog to be killed in

	rng := rand.New(rand.NewPCG(sd, 99))
	group := testenv.Name("e2e-crash-")
	// Tiny batches: many transactions and commits, so a kill lands among them.
	small := []string{"BATCH_MAX_RECORDS", "25", "BATCH_MAX_WAIT", "5ms"}
	p := s.projector("projector-0", group, small...)
	kills := 0
	var at []int64
	for i, frac := range []float64{0.12, 0.3, 0.5, 0.7} {
		done, total := s.waitProgress(group, frac, 90*time.Second, p)
		if done == total {
			break // the stream is through: a kill now would not be mid-stream
		}
		time.Sleep(time.Duration(rng.IntN(40)) * time.Millisecond)
		p.kill()
		kills++
		at = append(at, done)
		s.evictMembers(group)
		p = s.projector("projector-"+strconv.Itoa(i+1), group, small...)
	}
	took := s.waitCommitted(group, 90*time.Second, p)
	rep := s.compare(model)
	if kills < 3 {
		t.Errorf("only %d kills landed mid-stream; the stream is too short for this machine", kills)
	}
	t.Logf("crash: kills=%d (at committed offsets %v) events=%d; compared rows=%d messages=%d; lost=0 double_counted=0 mismatches=%d; last run %s",
		kills, at, len(recs), rep.Rows, rep.Messages, rep.Mismatches, took.Round(time.Millisecond))
}

// TestRebalance runs two projectors in one group and stops one with SIGTERM mid-stream: its partitions
// move to the other, which must carry on from the committed offsets to the model's state.
func TestRebalance(t *testing.T) {
	parallel(t)
	s := newStack(t, 6, window)
	recs, _, err := trafficgen.Generate(trafficgen.Differential(4000, seed(t)))
	if err != nil {
		t.Fatal(err)
	}
	model := refmodel.New(refmodel.Options{Window: window})
	applyAll(t, model, recs, false)

	group := testenv.Name("e2e-rebalance-")
	small := []string{"BATCH_MAX_RECORDS", "25", "BATCH_MAX_WAIT", "5ms"}
	a := s.projector("projector-a", group, small...)
	b := s.projector("projector-b", group, small...)
	s.produce(recs)
	done, total := s.waitProgress(group, 0.3, 90*time.Second, a)
	a.stop(t, 30*time.Second)
	took := s.waitCommitted(group, 90*time.Second, b)
	rep := s.compare(model)
	t.Logf("rebalance: projector-a stopped (SIGTERM) at %d of %d records; projector-b finished in %s; compared rows=%d messages=%d mismatches=%d",
		done, total, took.Round(time.Millisecond), rep.Rows, rep.Messages, rep.Mismatches)
}
