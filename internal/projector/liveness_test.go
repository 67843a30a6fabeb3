package projector

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/probes"
	"github.com/convsync/conversations/internal/testenv"
)

// ago moves every lane's and fetcher's last progress back by d, as if nothing had happened since: what
// a hang looks like, without waiting for it.
func (p *Projector) ago(d time.Duration) {
	for _, l := range p.lanes {
		l.ago(d)
	}
}

func (l *lane) ago(d time.Duration) {
	t := time.Now().Add(-d).UnixNano()
	l.progress.loopAt.Store(t)
	l.progress.fetchAt.Store(t)
}

func TestAHungCallTurnsLivenessRed(t *testing.T) {
	t.Parallel()
	brokers, topic, dlq := integration(t, 1)
	applying, release := make(chan struct{}), make(chan struct{})
	store := &fakeStore{apply: func(context.Context, int, []conversation.Event) error {
		select {
		case applying <- struct{}{}:
		default:
		}
		<-release // a call that hangs, deaf to its context
		return nil
	}}
	group := testenv.Name("group.")
	p, reg := newProjector(t, Config{Brokers: brokers, Topic: topic, DLQTopic: dlq, GroupID: group, StallAfter: time.Minute, Lanes: 1}, store)
	srv := httptest.NewServer(probes.Handler(probes.Checks{Live: p.Stalled}, reg))
	defer srv.Close()
	healthz := func() int {
		res, err := http.Get(srv.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}

	r := start(t, p)
	defer func() {
		close(release)
		_ = r.stop(t)
	}()
	produce(t, brokers, topic, groupMsg(t, "g1", 1, "alice", []string{"bob"}))
	<-applying
	if err := p.Stalled(); err != nil || healthz() != 200 {
		t.Fatalf("Stalled = %v just after the call began, want live", err)
	}
	p.ago(2 * time.Minute)
	if err := p.Stalled(); !errors.Is(err, ErrStalled) {
		t.Fatalf("Stalled = %v with a batch hung past StallAfter, want ErrStalled", err)
	}
	if code := healthz(); code != 503 {
		t.Fatalf("/healthz = %d with the loop hung, want 503", code)
	}
}

func TestLivenessStates(t *testing.T) {
	p, _ := newProjector(t, Config{Brokers: []string{"unused:1"}, Topic: "t", DLQTopic: "d", GroupID: "g", StallAfter: time.Minute,
		Lanes: 2}, &fakeStore{})
	// The other lane is idle and caught up throughout: one lane's state decides.
	idle, l := p.lanes[0], p.lanes[1]
	idle.ago(time.Hour)
	c := l.newCommitter(&fakeGeneration{})
	tests := []struct {
		name    string
		inBatch bool
		lag     map[int]int64
		idle    time.Duration
		// commitWaiting applied batches wait for their offset commit, whose last step was commitIdle ago;
		// awaiting: the loop waits for room in the commit queue.
		commitWaiting int64
		commitIdle    time.Duration
		awaiting      bool
		stalled       bool
	}{
		{name: "idle and caught up, for long", idle: time.Hour},
		{name: "records behind, fetching recently", lag: map[int]int64{0: 5}, idle: time.Second},
		{name: "records behind, no fetch for longer than the bound", lag: map[int]int64{0: 0, 3: 5}, idle: 2 * time.Minute, stalled: true},
		{name: "a batch in hand, moving", inBatch: true, idle: time.Second},
		{name: "a batch in hand, no step for longer than the bound", inBatch: true, idle: 2 * time.Minute, stalled: true},
		{name: "offsets waiting, the committer moving", commitWaiting: 2, commitIdle: time.Second},
		{name: "offsets waiting, no commit returned for longer than the bound", commitWaiting: 1, commitIdle: 2 * time.Minute, stalled: true},
		{name: "no offsets waiting, the committer idle for long", commitIdle: time.Hour},
		{name: "the loop waits for a full commit queue, the committer moving (retrying)", inBatch: true, idle: 2 * time.Minute,
			awaiting: true, commitWaiting: 4, commitIdle: time.Second},
		{name: "the loop waits for a full commit queue, the commit hung", inBatch: true, idle: 2 * time.Minute,
			awaiting: true, commitWaiting: 4, commitIdle: 2 * time.Minute, stalled: true},
		{name: "the loop moving, the commit hung", inBatch: true, idle: time.Second, commitWaiting: 1, commitIdle: 2 * time.Minute,
			stalled: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l.progress.inBatch.Store(tt.inBatch)
			l.progress.lag = map[int]int64{}
			for k, v := range tt.lag {
				l.progress.lag[k] = v
			}
			l.ago(tt.idle)
			l.progress.awaitingCommit.Store(tt.awaiting)
			c.waiting.Store(tt.commitWaiting)
			c.at.Store(time.Now().Add(-tt.commitIdle).UnixNano())
			err := p.Stalled()
			if errors.Is(err, ErrStalled) != tt.stalled {
				t.Errorf("Stalled = %v, want stalled %v", err, tt.stalled)
			}
			if tt.stalled && !strings.Contains(err.Error(), "lane 1") {
				t.Errorf("Stalled = %v, want it to name lane 1", err)
			}
		})
	}
}

// The lag gauge reports only the partitions this member owns: when a second member joins and takes some
// of them, the first one stops reporting those.
func TestTheLagGaugeDropsPartitionsHandedToAnotherMember(t *testing.T) {
	t.Parallel()
	brokers, topic, dlq := integration(t, 2)
	var recs []record
	for i := range 20 {
		recs = append(recs, groupMsg(t, "g"+itoa(int64(i)), 1, "alice", []string{"bob"}))
	}
	produce(t, brokers, topic, recs...)
	group := testenv.Name("group.")
	cfg := Config{Brokers: brokers, Topic: topic, DLQTopic: dlq, GroupID: group}
	first, reg := newProjector(t, cfg, &fakeStore{})
	start(t, first)
	waitCommittedToEnd(t, brokers, group, topic, 2, 30*time.Second)
	// The gauge moves just after the commit returned.
	testenv.Eventually(t, 10*time.Second, "the only member reports both partitions' lag", func() bool { return lagSeries(t, reg) == 2 })
	second, _ := newProjector(t, cfg, &fakeStore{})
	start(t, second)
	testenv.Eventually(t, 30*time.Second, "the first member reports one partition's lag", func() bool { return lagSeries(t, reg) == 1 })
}

func lagSeries(t testing.TB, g prometheus.Gatherer) int {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "conv_projector_consumer_lag" {
			return len(f.GetMetric())
		}
	}
	return 0
}
