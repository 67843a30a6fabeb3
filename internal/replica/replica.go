// Package replica decides which database answers a read of sync: a replica of the primary when it is
// known to be current enough for that user, else the primary (contract §6). Mutations never come
// here: they go to the primary.
//
// The rules, argued in docs/proofs.md ("Reads from database replicas"):
//
//  1. A user's answer is never older than what this API replica has been told or has answered: every
//     version it learns of a user (the change feed's announcements, its own mutations, every answer it
//     gave, and the version a device sends with an incremental sync, readcache.FloorSource) is a
//     floor, and a replica's read
//     below the floor is not served: it is retried for Options.Wait, then the primary answers.
//  2. A floor is dropped only once every replica is known to have applied a primary position read
//     after the floor was set: replicas apply the primary's commits in order and never go back, so
//     after that no replica can answer below it. Positions are GTIDs (mysql.Position).
//  3. A replica is used only while its last check answered within Options.ReadTimeout and its lag
//     (how long ago the primary had a position it still lacks) is at most Options.MaxLag; a read that
//     fails or times out marks it unusable until its next check answers. Nothing of that reaches the
//     client: the primary answers instead.
package replica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
)

// Reader is what a database answers for sync, per user; *mysql.Store is one.
type Reader interface {
	UserRows(ctx context.Context, uid string) ([]conversation.Row, int64, error)
	RawUserRows(ctx context.Context, uid string) ([]conversation.Row, int64, error)
	UserVersion(ctx context.Context, uid string) (int64, error)
	UserRowsPage(ctx context.Context, q conversation.Query) ([]conversation.Row, int64, error)
	RawUserRowsPage(ctx context.Context, q conversation.Query) ([]conversation.Row, int64, error)
}

// Primary is the primary database: the reads that always go there and its replication position.
type Primary interface {
	Reader
	UserVersions(ctx context.Context, uids []string) (map[string]int64, error)
	DeriveLarge(ctx context.Context, rows []conversation.Row) ([]conversation.Row, error)
	PrimaryPosition(ctx context.Context) (mysql.Position, error)
}

// Replica is a database replica: the per-user reads and what it has applied.
type Replica interface {
	Reader
	AppliedPosition(ctx context.Context) (mysql.Position, error)
}

// Named is a replica with the name its metrics and status carry (its address; never a password).
type Named struct {
	Name string
	DB   Replica
}

// Options tune a Router. The zero value of each field picks the default named on it.
type Options struct {
	// MaxLag is how far behind the primary a replica may be and still be read (default 2s).
	MaxLag time.Duration
	// Wait is how long a read waits for a replica to reach the user's floor before the primary
	// answers (default 200ms).
	Wait time.Duration
	// ReadTimeout bounds one read or check on a replica (default 150ms): a frozen replica costs a
	// request at most that before the primary answers.
	ReadTimeout time.Duration
	// CheckInterval is how often the primary's position and each replica's are read (default 100ms).
	CheckInterval time.Duration
	// MaxFloors bounds the users with a floor (default 1,000,000). Past it the floors are cleared and
	// no replica is read until it has applied the primary's position read after that.
	MaxFloors int
	// Registry receives the metrics (default: not exported).
	Registry prometheus.Registerer
	// Logger receives changes of a replica's state (default: discard).
	Logger *slog.Logger
}

// Router answers sync's reads from replicas within the rules of the package comment, and from the
// primary otherwise. It implements readcache.RowsSource, LargeSource and PageSource. Run must be
// running for any replica to be read. It is safe for concurrent use.
type Router struct {
	primary  Primary
	replicas []*member
	opts     Options
	log      *slog.Logger
	next     atomic.Uint64 // rotates the first replica tried
	metrics  metrics

	mu      sync.Mutex
	gen     uint64 // checks started
	ring    []mark // primary positions of recent checks, oldest first
	floors  map[string]floor
	queue   []queued // floors in the order they were set (gens never decrease along it)
	barrier uint64   // replicas are read only once they applied the position of this check
}

type floor struct {
	version int64
	gen     uint64 // the check counter when it was set: the position of check gen+1 holds its commit
}

type queued struct {
	uid string
	gen uint64
}

// mark is the primary's position as read by check gen, at (after the read returned).
type mark struct {
	gen uint64
	at  time.Time
	pos mysql.Position
}

type member struct {
	name string
	db   Replica
	// Under Router.mu:
	checked   time.Time // last check that answered
	reachable bool      // the last check answered
	failed    bool      // a read failed since that check
	applied   uint64    // the newest check whose primary position it has applied
	lag       time.Duration
	usable    bool // as last reported (for logging changes)
}

// New returns a router over primary and replicas, with its metrics registered.
func New(primary Primary, replicas []Named, opts Options) (*Router, error) {
	if opts.MaxLag <= 0 {
		opts.MaxLag = 2 * time.Second
	}
	if opts.Wait <= 0 {
		opts.Wait = 200 * time.Millisecond
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = 150 * time.Millisecond
	}
	if opts.CheckInterval <= 0 {
		opts.CheckInterval = 100 * time.Millisecond
	}
	if opts.MaxFloors <= 0 {
		opts.MaxFloors = 1_000_000
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Router{primary: primary, opts: opts, log: opts.Logger, floors: map[string]floor{}, barrier: 1}
	for _, n := range replicas {
		r.replicas = append(r.replicas, &member{name: n.Name, db: n.DB})
	}
	m, err := newMetrics(opts.Registry)
	if err != nil {
		return nil, err
	}
	r.metrics = m
	return r, nil
}

// Notify records that uid's version reached version: an announcement of the change feed, a commit of
// this API replica, or an answer it gave. No later read of uid answers below it.
func (r *Router) Notify(uid string, version int64) {
	if len(r.replicas) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if f, ok := r.floors[uid]; ok && f.version >= version {
		return
	}
	if len(r.floors) >= r.opts.MaxFloors {
		// Forget every floor, and read no replica until it has every commit made before now.
		clear(r.floors)
		r.queue = nil
		r.barrier = r.gen + 1
		r.metrics.resets.Inc()
	}
	r.floors[uid] = floor{version: version, gen: r.gen}
	r.queue = append(r.queue, queued{uid: uid, gen: r.gen})
}

// floorOf is the highest version of uid this router knows of (0: none that a replica could be below).
func (r *Router) floorOf(uid string) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.floors[uid].version
}

// UserRows reads uid's rows and version from a replica at or above the user's floor, else the primary.
func (r *Router) UserRows(ctx context.Context, uid string) ([]conversation.Row, int64, error) {
	return route(r, ctx, uid, func(db Reader, ctx context.Context) ([]conversation.Row, int64, error) { return db.UserRows(ctx, uid) })
}

// RawUserRows is UserRows with followers of large channels as stored (readcache.LargeSource).
func (r *Router) RawUserRows(ctx context.Context, uid string) ([]conversation.Row, int64, error) {
	return route(r, ctx, uid, func(db Reader, ctx context.Context) ([]conversation.Row, int64, error) {
		return db.RawUserRows(ctx, uid)
	})
}

// UserRowsPage reads the page of a paged incremental sync (readcache.PageSource) like UserRows.
func (r *Router) UserRowsPage(ctx context.Context, q conversation.Query) ([]conversation.Row, int64, error) {
	return route(r, ctx, q.UID, func(db Reader, ctx context.Context) ([]conversation.Row, int64, error) {
		return db.UserRowsPage(ctx, q)
	})
}

// RawUserRowsPage is UserRowsPage with followers of large channels as stored.
func (r *Router) RawUserRowsPage(ctx context.Context, q conversation.Query) ([]conversation.Row, int64, error) {
	return route(r, ctx, q.UID, func(db Reader, ctx context.Context) ([]conversation.Row, int64, error) {
		return db.RawUserRowsPage(ctx, q)
	})
}

// UserVersion reads uid's version from a replica at or above the user's floor, else the primary.
func (r *Router) UserVersion(ctx context.Context, uid string) (int64, error) {
	_, v, err := route(r, ctx, uid, func(db Reader, ctx context.Context) (struct{}, int64, error) {
		v, err := db.UserVersion(ctx, uid)
		return struct{}{}, v, err
	})
	return v, err
}

// UserVersions reads the primary: the caches' bulk revalidation must see what a lost announcement
// did not tell them, and a replica could be behind it.
func (r *Router) UserVersions(ctx context.Context, uids []string) (map[string]int64, error) {
	return r.primary.UserVersions(ctx, uids)
}

// DeriveLarge reads large channels' states from the primary, like recents: a replica's could miss a
// late message this API replica was told of.
func (r *Router) DeriveLarge(ctx context.Context, rows []conversation.Row) ([]conversation.Row, error) {
	return r.primary.DeriveLarge(ctx, rows)
}

// route runs read on a usable replica whose answer is at or above uid's floor, else on the primary,
// and records the version answered as a floor. A replica that answers below the floor is waited for
// up to Wait, watching the user's version (one primary-key read every 10 ms), not reading again what
// read reads until the version is there: a version that never arrives (a floor the replicas have not
// reached, or a device sending one above anything stored) costs a bounded number of cheap reads.
func route[T any](r *Router, ctx context.Context, uid string, read func(Reader, context.Context) (T, int64, error)) (T, int64, error) {
	var zero T
	want := r.floorOf(uid)
	for _, m := range r.candidates() {
		deadline := time.Now().Add(r.opts.Wait)
		for {
			rctx, cancel := context.WithTimeout(ctx, r.opts.ReadTimeout)
			out, version, err := read(m.db, rctx)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return zero, 0, err
				}
				r.fail(m, err)
				break
			}
			if version >= want {
				r.metrics.reads.WithLabelValues(m.name, "served").Inc()
				r.Notify(uid, version)
				return out, version, nil
			}
			reached, err := r.awaitVersion(ctx, m, uid, want, deadline)
			if ctx.Err() != nil {
				return zero, 0, ctx.Err()
			}
			if err != nil {
				r.fail(m, err)
				break
			}
			if !reached {
				r.metrics.reads.WithLabelValues(m.name, "behind").Inc()
				break
			}
		}
	}
	out, version, err := read(r.primary, ctx)
	if err == nil {
		r.metrics.primary.Inc()
		r.Notify(uid, version)
	}
	return out, version, err
}

// awaitVersion polls m's version of uid until it reaches want (true) or deadline passes (false).
func (r *Router) awaitVersion(ctx context.Context, m *member, uid string, want int64, deadline time.Time) (bool, error) {
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(min(10*time.Millisecond, time.Until(deadline))):
		}
		rctx, cancel := context.WithTimeout(ctx, r.opts.ReadTimeout)
		v, err := m.db.UserVersion(rctx, uid)
		cancel()
		if err != nil {
			return false, err
		}
		if v >= want {
			return true, nil
		}
	}
	return false, nil
}

// candidates are the replicas usable now, starting at a rotating one.
func (r *Router) candidates() []*member {
	n := len(r.replicas)
	if n == 0 {
		return nil
	}
	start := int(r.next.Add(1) % uint64(n))
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*member
	for i := range n {
		if m := r.replicas[(start+i)%n]; r.usableLocked(m, time.Now()) {
			out = append(out, m)
		}
	}
	return out
}

// usableLocked: the replica answered its last check recently, no read failed since, it is within
// MaxLag, and it has passed the barrier.
func (r *Router) usableLocked(m *member, now time.Time) bool {
	return m.reachable && !m.failed && m.lag <= r.opts.MaxLag && m.applied >= r.barrier &&
		now.Sub(m.checked) <= 2*r.opts.CheckInterval+2*r.opts.ReadTimeout
}

// fail marks m unusable until its next check answers.
func (r *Router) fail(m *member, err error) {
	r.metrics.reads.WithLabelValues(m.name, "failed").Inc()
	r.mu.Lock()
	already := m.failed
	m.failed = true
	r.mu.Unlock()
	if !already {
		r.log.Warn("replica read failed: the primary answers until its next check", "replica", m.name, "error", err.Error())
	}
}

// Run checks the primary's position and every replica's every CheckInterval until ctx ends.
func (r *Router) Run(ctx context.Context) {
	if len(r.replicas) == 0 {
		return
	}
	t := time.NewTicker(r.opts.CheckInterval)
	defer t.Stop()
	for {
		r.check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ringLen keeps enough marks to measure a lag a little past MaxLag.
func (r *Router) ringLen() int {
	return int(2*r.opts.MaxLag/r.opts.CheckInterval) + 8
}

// check reads the primary's position, then each replica's, and updates what the routing rests on.
func (r *Router) check(ctx context.Context) {
	r.mu.Lock()
	r.gen++
	g := r.gen
	r.mu.Unlock()
	pctx, cancel := context.WithTimeout(ctx, 4*r.opts.ReadTimeout)
	pos, err := r.primary.PrimaryPosition(pctx)
	cancel()
	if err == nil {
		r.mu.Lock()
		r.ring = append(r.ring, mark{gen: g, at: time.Now(), pos: pos})
		if over := len(r.ring) - r.ringLen(); over > 0 {
			r.ring = append(r.ring[:0], r.ring[over:]...)
		}
		r.mu.Unlock()
	} else if ctx.Err() == nil {
		r.metrics.primaryCheckFailures.Inc()
	}
	type result struct {
		pos mysql.Position
		err error
	}
	results := make([]result, len(r.replicas))
	var wg sync.WaitGroup
	for i, m := range r.replicas {
		wg.Go(func() {
			rctx, cancel := context.WithTimeout(ctx, r.opts.ReadTimeout)
			defer cancel()
			results[i].pos, results[i].err = m.db.AppliedPosition(rctx)
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, m := range r.replicas {
		res := results[i]
		if res.err != nil {
			m.reachable = false
		} else {
			m.reachable, m.failed, m.checked = true, false, now
			m.applied, m.lag = r.appliedLocked(res.pos, now)
		}
		usable := r.usableLocked(m, now)
		r.metrics.lag.WithLabelValues(m.name).Set(m.lag.Seconds())
		r.metrics.usable.WithLabelValues(m.name).Set(b2f(usable))
		if usable != m.usable {
			m.usable = usable
			attrs := []any{"replica", m.name, "usable", usable, "reachable", m.reachable, "lag", m.lag.String()}
			if res.err != nil {
				attrs = append(attrs, "error", res.err.Error())
			}
			r.log.Info("replica state changed", attrs...)
		}
	}
	r.pruneLocked()
	r.metrics.floors.Set(float64(len(r.floors)))
}

// appliedLocked returns the newest check whose primary position pos covers, and the lag: how long ago
// the primary was seen at a position pos does not cover (0 when it covers the newest).
func (r *Router) appliedLocked(pos mysql.Position, now time.Time) (uint64, time.Duration) {
	for i := len(r.ring) - 1; i >= 0; i-- {
		if pos.Covers(r.ring[i].pos) {
			if i == len(r.ring)-1 {
				return r.ring[i].gen, 0
			}
			return r.ring[i].gen, max(0, now.Sub(r.ring[i+1].at))
		}
	}
	if len(r.ring) == 0 {
		return 0, 0 // the primary's position is not known yet: nothing to measure against
	}
	return 0, max(0, now.Sub(r.ring[0].at))
}

// pruneLocked drops the floors every replica has applied (rule 2).
func (r *Router) pruneLocked() {
	minApplied := uint64(1<<63 - 1)
	for _, m := range r.replicas {
		minApplied = min(minApplied, m.applied)
	}
	n := 0
	for n < len(r.queue) && r.queue[n].gen+1 <= minApplied {
		q := r.queue[n]
		if f, ok := r.floors[q.uid]; ok && f.gen == q.gen {
			delete(r.floors, q.uid)
		}
		n++
	}
	if n > 0 {
		r.queue = append(r.queue[:0], r.queue[n:]...)
	}
}

// Status is one replica's state, as /readyz shows it.
type Status struct {
	Name       string  `json:"name"`
	Usable     bool    `json:"usable"`
	Reachable  bool    `json:"reachable"`
	LagSeconds float64 `json:"lag_seconds"`
}

// Status returns every replica's state.
func (r *Router) Status() []Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	out := make([]Status, len(r.replicas))
	for i, m := range r.replicas {
		out[i] = Status{Name: m.name, Usable: r.usableLocked(m, now), Reachable: m.reachable, LagSeconds: m.lag.Seconds()}
	}
	return out
}

type metrics struct {
	lag, usable          *prometheus.GaugeVec
	reads                *prometheus.CounterVec
	primary              prometheus.Counter
	primaryCheckFailures prometheus.Counter
	resets               prometheus.Counter
	floors               prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	m := metrics{
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "conv", Subsystem: "api", Name: "replica_lag_seconds",
			Help: "How long ago the primary had a position the replica has not applied (0: caught up at the last check)."}, []string{"replica"}),
		usable: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "conv", Subsystem: "api", Name: "replica_usable",
			Help: "1 when sync reads may go to the replica: it answered its last check, within MAX_REPLICA_LAG."}, []string{"replica"}),
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "conv", Subsystem: "api", Name: "replica_reads_total",
			Help: "Reads tried on a replica: served, behind (below the user's floor until the wait ran out), failed."}, []string{"replica", "result"}),
		primary: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "conv", Subsystem: "api", Name: "replica_primary_reads_total",
			Help: "Per-user reads the primary answered because no replica could."}),
		primaryCheckFailures: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "conv", Subsystem: "api", Name: "replica_primary_check_failures_total",
			Help: "Reads of the primary's replication position that failed (floors then wait for the next)."}),
		resets: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "conv", Subsystem: "api", Name: "replica_floor_resets_total",
			Help: "Times the floors outgrew their bound and replicas were set aside until they caught up."}),
		floors: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "conv", Subsystem: "api", Name: "replica_floors",
			Help: "Users whose floor some replica has not applied yet."}),
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.lag, m.usable, m.reads, m.primary, m.primaryCheckFailures, m.resets, m.floors} {
		errs = append(errs, reg.Register(c))
	}
	if err := errors.Join(errs...); err != nil {
		return metrics{}, fmt.Errorf("register replica metrics: %w", err)
	}
	return m, nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
