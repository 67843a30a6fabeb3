package purge

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/convsync/conversations/internal/conversation"
)

// fakeStore has left tombstones, all old enough, and records the purge calls; fail makes the next
// call fail.
type fakeStore struct {
	mu    sync.Mutex
	left  int64
	calls []int
	fail  bool
}

func (s *fakeStore) PurgeTombstones(_ context.Context, _ int64, limit int) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		s.fail = false
		return 0, errors.New("database down")
	}
	n := min(s.left, int64(limit))
	s.left -= n
	s.calls = append(s.calls, int(n))
	return n, nil
}

func (s *fakeStore) PurgeFollowerTombstones(context.Context, int64, int) (int64, error) {
	return 0, nil
}

func (s *fakeStore) UnneededLate(context.Context, conversation.ChannelKey, int) ([]conversation.LateMsg, conversation.ChannelKey, error) {
	return nil, conversation.ChannelKey{}, nil
}

func (s *fakeStore) DeleteLate(context.Context, []conversation.LateMsg) (int64, error) { return 0, nil }

func (s *fakeStore) done() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.left == 0 && len(s.calls) >= 3
}

func run(t *testing.T, s *fakeStore) *Purger {
	t.Helper()
	p, err := New(s, time.Hour, 10*time.Millisecond, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for !s.done() {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting until all tombstones are purged")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	return p
}

func TestPurgerDeletesInBatchesOfAThousand(t *testing.T) {
	s := &fakeStore{left: 2500}
	p := run(t, s)
	if !reflect.DeepEqual(s.calls[:3], []int{1000, 1000, 500}) {
		t.Fatalf("first round deleted %v, want [1000 1000 500]", s.calls[:3])
	}
	if n := testutil.ToFloat64(p.purged); n != 2500 {
		t.Fatalf("purged_total = %v, want 2500", n)
	}
}

func TestPurgerCountsAFailedRoundAndGoesOn(t *testing.T) {
	s := &fakeStore{left: 2500, fail: true}
	p := run(t, s)
	if n := testutil.ToFloat64(p.failures); n != 1 {
		t.Fatalf("purge_failures_total = %v, want 1", n)
	}
}

func TestNewRefusesASecondRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := New(&fakeStore{}, time.Hour, time.Hour, reg, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if _, err := New(&fakeStore{}, time.Hour, time.Hour, reg, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("registering the purger's metrics twice succeeded, want an error")
	}
}

// lateStore finds the same unneeded late messages every time and records what is deleted.
type lateStore struct {
	fakeStore
	found   []conversation.LateMsg
	deleted []conversation.LateMsg
}

func (s *lateStore) UnneededLate(context.Context, conversation.ChannelKey, int) ([]conversation.LateMsg, conversation.ChannelKey, error) {
	return s.found, conversation.ChannelKey{}, nil
}

func (s *lateStore) DeleteLate(_ context.Context, msgs []conversation.LateMsg) (int64, error) {
	s.deleted = append(s.deleted, msgs...)
	return int64(len(msgs)), nil
}

// TestLateGrace: a late message found unneeded is deleted only once the grace period has passed
// since it was first found so, and once.
func TestLateGrace(t *testing.T) {
	s := &lateStore{found: []conversation.LateMsg{{Channel: conversation.ChannelKey{Key: "g", Type: 2}, Arrival: 7}}}
	p, err := New(s, 0, time.Minute, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	p.now = func() time.Time { return now }
	for _, step := range []struct {
		after   time.Duration
		deleted int
	}{{0, 0}, {LateGrace / 2, 0}, {LateGrace / 2, 1}, {LateGrace, 1}} {
		now = now.Add(step.after)
		p.lateRound(t.Context())
		if len(s.deleted) != step.deleted {
			t.Fatalf("after %v more: %d deleted, want %d", step.after, len(s.deleted), step.deleted)
		}
		s.found = nil
	}
	if got := testutil.ToFloat64(p.late); got != 1 {
		t.Errorf("late_purged_total %v, want 1", got)
	}
}
