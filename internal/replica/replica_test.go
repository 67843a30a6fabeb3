package replica_test

// These tests run against a MariaDB primary and a replica following it (testenv.Replicated; make test
// starts the pair) and the test Kafka broker for the change feed. They stop the replica's applier or
// freeze its process, which every user of the pair sees: none of them runs in parallel.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/convsync/conversations/internal/changefeed"
	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/httpapi"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/readcache"
	"github.com/convsync/conversations/internal/replica"
	"github.com/convsync/conversations/internal/testenv"
)

var quiet = slog.New(slog.DiscardHandler)

// api is one API replica in the test process, as cmd/api wires it: mutations on the primary, announced
// on the change feed; sync through the list cache over a router that reads the replica.
type api struct {
	t       *testing.T
	handler http.Handler
	router  *replica.Router
	reg     *prometheus.Registry
	// seen receives every user version this API replica was told of (feed or own commit).
	mu   sync.Mutex
	seen map[string]int64
}

func newAPI(t *testing.T, pair testenv.ReplicaPair, brokers []string, feed string, opts replica.Options) *api {
	t.Helper()
	a := &api{t: t, reg: prometheus.NewRegistry(), seen: map[string]int64{}}
	pub, err := changefeed.NewPublisher(nil, brokers, feed, quiet, a.reg, changefeed.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	var rows *readcache.Rows
	notify := func(c conversation.Changes) {
		for uid, v := range c.Versions {
			a.router.Notify(uid, v)
			rows.Notify(uid, v)
			a.mu.Lock()
			a.seen[uid] = max(a.seen[uid], v)
			a.mu.Unlock()
		}
	}
	primary, err := mysql.Open(pair.PrimaryDSN, mysql.Options{OnCommit: func(ctx context.Context, c conversation.Changes) {
		notify(c)
		pub.AfterCommit(ctx, c)
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = primary.Close() })
	rs, err := mysql.Open(pair.ReplicaDSN, mysql.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rs.Close() })
	opts.Registry, opts.Logger = a.reg, quiet
	if a.router, err = replica.New(primary, []replica.Named{{Name: "replica", DB: rs}}, opts); err != nil {
		t.Fatal(err)
	}
	rows = readcache.NewRows(a.router, readcache.RowsOptions{MaxAge: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	follower, err := changefeed.NewFollower(ctx, nil, brokers, feed, quiet, a.reg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { a.router.Run(ctx) })
	wg.Go(func() { follower.Run(ctx, notify) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	if a.handler, err = httpapi.New(primary, rows, primary, httpapi.Options{Registry: a.reg, Logger: quiet,
		Replicas: func() any { return a.router.Status() }}); err != nil {
		t.Fatal(err)
	}
	a.waitUsable(true)
	return a
}

// post sends a request and returns the status and body.
func (a *api) post(path string, body any) (int, []byte) {
	a.t.Helper()
	b, _ := json.Marshal(body)
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(string(b)))
	req.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	a.handler.ServeHTTP(w, req)
	out, _ := io.ReadAll(w.Result().Body)
	return w.Code, out
}

type conv struct {
	ChannelID  string `json:"channel_id"`
	Unread     int64  `json:"unread"`
	LastMsgSeq int64  `json:"last_msg_seq"`
	Version    int64  `json:"version"`
}

func (a *api) sync(uid string, version int64) []conv {
	a.t.Helper()
	code, body := a.post("/conversation/sync", map[string]any{"uid": uid, "version": version, "msg_count": 1})
	if code != http.StatusOK {
		a.t.Fatalf("sync %s: %d %s", uid, code, body)
	}
	var out []conv
	if err := json.Unmarshal(body, &out); err != nil {
		a.t.Fatalf("sync %s: %v in %s", uid, err, body)
	}
	return out
}

// waitSeen waits until this API replica was told that uid reached version.
func (a *api) waitSeen(uid string, version int64) {
	a.t.Helper()
	testenv.Eventually(a.t, 20*time.Second, fmt.Sprintf("%s at version %d announced", uid, version), func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.seen[uid] >= version
	})
}

func (a *api) waitUsable(usable bool) {
	a.t.Helper()
	testenv.Eventually(a.t, 10*time.Second, fmt.Sprintf("the replica usable=%v", usable), func() bool {
		s := a.router.Status()
		return len(s) == 1 && s[0].Usable == usable
	})
}

// served is how many reads the replica answered.
func (a *api) served() float64 {
	a.t.Helper()
	mfs, err := a.reg.Gather()
	if err != nil {
		a.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "conv_api_replica_reads_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == "served" {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// projector applies events on the primary and announces them, as cmd/projector does.
func projector(t *testing.T, pair testenv.ReplicaPair, brokers []string, feed string, announce bool) *mysql.Store {
	t.Helper()
	opts := mysql.Options{}
	if announce {
		pub, err := changefeed.NewPublisher(nil, brokers, feed, quiet, prometheus.NewRegistry(), changefeed.PublisherOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = pub.Close() })
		opts.OnCommit = pub.AfterCommit
	}
	s, err := mysql.Open(pair.PrimaryDSN, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func message(ch string, seq int64, from string, subs ...string) conversation.Event {
	return conversation.Event{Message: &conversation.Message{MessageID: seq, MessageSeq: seq, FromUID: from, ChannelID: ch,
		ChannelType: 2, Timestamp: 1700000000 + seq, Header: conversation.Header{RedDot: 1}, Subscribers: subs}}
}

func apply(t *testing.T, s *mysql.Store, events ...conversation.Event) conversation.BatchResult {
	t.Helper()
	res, err := s.ApplyBatch(context.Background(), events)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func find(convs []conv, ch string) (conv, bool) {
	for _, c := range convs {
		if c.ChannelID == ch {
			return c, true
		}
	}
	return conv{}, false
}

// userVersion reads uid's version straight from a database: what a reader without the rules would see.
func userVersion(t *testing.T, dsn, uid string) int64 {
	t.Helper()
	s, err := mysql.Open(dsn, mysql.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v, err := s.UserVersion(context.Background(), uid)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Contract §6: after a setUnread through API replica 1, a sync through API replica 2 whose database
// replica lags does not bring the old unread back; and a message announced on the change feed is
// served by API replica 2 only once its database replica has it (until then the primary answers).
// The replica itself still holds the old state throughout: a reader without the rules would serve it.
func TestLaggingReplicaNeverAnswersBelowWhatWasAnnounced(t *testing.T) {
	pair := testenv.Replicated(t)
	brokers := testenv.KafkaBrokers(t)
	feed := testenv.Topics(t, brokers, 1).Changes
	proj := projector(t, pair, brokers, feed, true)
	api1 := newAPI(t, pair, brokers, feed, replica.Options{})
	api2 := newAPI(t, pair, brokers, feed, replica.Options{})

	apply(t, proj, message("g1", 1, "bob", "alice", "bob"))
	pair.WaitCaughtUp(t)
	api2.waitSeen("alice", 1)
	before := api2.served()
	if c, ok := find(api2.sync("alice", 0), "g1"); !ok || c.Unread != 1 {
		t.Fatalf("before: %+v, want g1 with unread 1", c)
	}
	if api2.served() <= before {
		t.Fatal("a caught-up replica did not answer the sync")
	}

	pair.StopApplying(t)
	lagging := userVersion(t, pair.ReplicaDSN, "alice")

	// The user reads g1 through API replica 1; API replica 2 hears of it on the feed.
	if code, body := api1.post("/conversations/setUnread", map[string]any{"uid": "alice", "channel_id": "g1", "channel_type": 2, "unread": 0}); code != http.StatusOK {
		t.Fatalf("setUnread: %d %s", code, body)
	}
	read := userVersion(t, pair.PrimaryDSN, "alice")
	api2.waitSeen("alice", read)
	if c, ok := find(api2.sync("alice", 0), "g1"); !ok || c.Unread != 0 {
		t.Fatalf("after setUnread through API 1, API 2 answered %+v: the old unread came back", c)
	}

	// A new message, announced: served although the replica does not have it yet.
	apply(t, proj, message("g1", 2, "bob", "alice", "bob"))
	newer := userVersion(t, pair.PrimaryDSN, "alice")
	api2.waitSeen("alice", newer)
	if c, ok := find(api2.sync("alice", 0), "g1"); !ok || c.LastMsgSeq != 2 || c.Unread != 1 {
		t.Fatalf("after the announced message, API 2 answered %+v, want last_msg_seq 2, unread 1", c)
	}
	if v := userVersion(t, pair.ReplicaDSN, "alice"); v != lagging {
		t.Fatalf("the replica moved to version %d while its applier was stopped at %d: the test proves nothing", v, lagging)
	}

	// Once the replica has caught up, it answers again (the list itself is cached: ask the router).
	pair.StartApplying(t)
	pair.WaitCaughtUp(t)
	testenv.Eventually(t, 5*time.Second, "the replica answers again", func() bool {
		before := api2.served()
		_, v, err := api2.router.UserRows(context.Background(), "alice")
		if err != nil || v < newer {
			t.Fatalf("after catching up: version %d, %v; want %d", v, err, newer)
		}
		return api2.served() > before
	})
}

// Contract §6: an incremental sync is never answered below the version the device sent, though this
// API replica heard nothing of the change (no announcement) and its database replica lags.
func TestIncrementalSyncNeverBelowTheDevicesVersion(t *testing.T) {
	pair := testenv.Replicated(t)
	brokers := testenv.KafkaBrokers(t)
	feed := testenv.Topics(t, brokers, 1).Changes
	proj := projector(t, pair, brokers, feed, false) // commits nobody announces
	api := newAPI(t, pair, brokers, feed, replica.Options{})

	apply(t, proj, message("g1", 1, "bob", "alice", "bob"))
	pair.WaitCaughtUp(t)
	if _, ok := find(api.sync("alice", 0), "g1"); !ok {
		t.Fatal("g1 missing before the test starts") // the list is now cached at this version
	}
	pair.StopApplying(t)
	apply(t, proj, message("g2", 1, "bob", "alice", "bob"))
	seen := userVersion(t, pair.PrimaryDSN, "alice") // the device was answered this through another replica
	apply(t, proj, message("g3", 1, "bob", "alice", "bob"))
	if v := userVersion(t, pair.ReplicaDSN, "alice"); v >= seen {
		t.Fatalf("the replica is at %d, not behind the device's %d: the test proves nothing", v, seen)
	}
	got := api.sync("alice", seen)
	if _, ok := find(got, "g3"); !ok {
		t.Fatalf("incremental sync from version %d answered %+v: below the device's version (g3 changed after it)", seen, got)
	}
	for _, c := range got {
		if c.Version <= seen {
			t.Errorf("incremental sync from %d returned %+v", seen, c)
		}
	}
}

// Contract §6: a frozen replica (SIGSTOP) is routed around within seconds, no request fails meanwhile,
// /readyz shows it and stays 200; once resumed it is read again.
func TestFrozenReplicaIsRoutedAroundWithoutErrors(t *testing.T) {
	pair := testenv.Replicated(t)
	brokers := testenv.KafkaBrokers(t)
	feed := testenv.Topics(t, brokers, 1).Changes
	proj := projector(t, pair, brokers, feed, true)
	api := newAPI(t, pair, brokers, feed, replica.Options{})
	apply(t, proj, message("g1", 1, "bob", "alice", "bob"))
	pair.WaitCaughtUp(t)

	pair.Freeze(t)
	frozenAt := time.Now()
	var slowest time.Duration
	for time.Since(frozenAt) < 3*time.Second {
		start := time.Now()
		// A version above the cached list's sends every sync to the database (no list from memory).
		code, body := api.post("/conversation/sync", map[string]any{"uid": "alice", "version": 1 << 40, "msg_count": 1})
		if code != http.StatusOK {
			t.Fatalf("sync while the replica is frozen: %d %s", code, body)
		}
		slowest = max(slowest, time.Since(start))
	}
	api.waitUsable(false)
	t.Logf("slowest sync while frozen: %s", slowest)
	code, body := api.post("/conversation/sync", map[string]any{"uid": "alice", "version": 0})
	if code != http.StatusOK {
		t.Fatal(code)
	}
	_ = body
	req := httptest.NewRequest(http.MethodGet, "/readyz", nil)
	w := httptest.NewRecorder()
	api.handler.ServeHTTP(w, req)
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"usable":false`) {
		t.Fatalf("/readyz with a frozen replica: %d %s", w.Code, w.Body)
	}
	pair.Thaw(t)
	api.waitUsable(true)
}

// Contract §6: a replica past MAX_REPLICA_LAG is routed around, with its lag a metric; within the
// bound again, it is read again.
func TestReplicaPastMaxLagIsRoutedAround(t *testing.T) {
	pair := testenv.Replicated(t)
	brokers := testenv.KafkaBrokers(t)
	feed := testenv.Topics(t, brokers, 1).Changes
	proj := projector(t, pair, brokers, feed, false)
	api := newAPI(t, pair, brokers, feed, replica.Options{MaxLag: 500 * time.Millisecond})

	pair.StopApplying(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { // the primary keeps committing: its position moves away from the replica's
		for seq := int64(1); ctx.Err() == nil; seq++ {
			if _, err := proj.ApplyBatch(ctx, []conversation.Event{message("g1", seq, "bob", "alice", "bob")}); err != nil && ctx.Err() == nil {
				t.Error(err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	defer func() {
		cancel()
		wg.Wait()
	}()
	api.waitUsable(false)
	if s := api.router.Status(); s[0].LagSeconds <= 0.5 || !s[0].Reachable {
		t.Fatalf("status past the bound: %+v", s)
	}
	if c, ok := find(api.sync("alice", 0), "g1"); !ok || c.LastMsgSeq < 2 {
		t.Fatalf("sync past the bound: %+v", c)
	}
	pair.StartApplying(t)
	api.waitUsable(true)
}

var (
	_ readcache.RowsSource  = (*replica.Router)(nil)
	_ readcache.LargeSource = (*replica.Router)(nil)
	_ readcache.PageSource  = (*replica.Router)(nil)
)
