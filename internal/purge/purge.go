// Package purge deletes tombstones older than a maximum age (contract §3.5) and late messages of large
// channels (contract §5) that no follower can need any more: housekeeping that runs beside the
// projector's loop, never in it.
package purge

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/convsync/conversations/internal/conversation"
)

// Store is what the purger needs of the read model (internal/mysql.Store is one). Its errors must be
// safe to log.
type Store interface {
	// PurgeTombstones deletes at most limit tombstones deleted before beforeMS and returns how many went.
	PurgeTombstones(ctx context.Context, beforeMS int64, limit int) (int64, error)
	// PurgeFollowerTombstones does the same for followers of large channels (contract §5): each becomes
	// a member with no conversation yet, as if they had just joined.
	PurgeFollowerTombstones(ctx context.Context, beforeMS int64, limit int) (int64, error)
	// UnneededLate returns late messages no follower can need any more, from the channels after the
	// given one, examining about limit of them; next is where to go on (the zero key: from the start).
	UnneededLate(ctx context.Context, after conversation.ChannelKey, limit int) (found []conversation.LateMsg, next conversation.ChannelKey, err error)
	// DeleteLate deletes late messages UnneededLate returned and returns how many went.
	DeleteLate(ctx context.Context, msgs []conversation.LateMsg) (int64, error)
}

// LateGrace is how long a late message found unneeded is kept before it is deleted. A sync reads a
// user's rows and, in a later statement, the late messages since each follower's base (the rows cache
// validates its rows by the user's version first, then does the same); a late message is unneeded for
// rows as of the snapshot it was judged in and every later one, so deleting it is safe for every reader
// whose rows were read (or validated) less than LateGrace before it reads the late messages: any sync
// that does not stall for minutes between two statements of one request.
const LateGrace = 2 * time.Minute

// lateKey names a late message.
type lateKey struct {
	channel conversation.ChannelKey
	arrival int64
}

// batchSize bounds one delete statement, so a purge never holds many row locks at once.
const batchSize = 1000

// Purger deletes tombstones older than a maximum age, a bounded batch at a time.
type Purger struct {
	store    Store
	maxAge   time.Duration
	interval time.Duration
	purged   prometheus.Counter
	failures prometheus.Counter
	late     prometheus.Counter
	log      *slog.Logger
	now      func() time.Time
	grace    time.Duration

	// pending holds late messages found unneeded, with when they were first found so; lateFrom is the
	// channel the next late round starts after. Both belong to Run's goroutine.
	pending  map[lateKey]time.Time
	lateFrom conversation.ChannelKey
}

// New returns a Purger of tombstones older than maxAge (0: none) and of unneeded late messages that runs
// every interval, with its metrics (conv_projector_purged_total, conv_projector_late_purged_total,
// conv_projector_purge_failures_total) registered with reg. It fails when reg already holds them.
func New(store Store, maxAge, interval time.Duration, reg prometheus.Registerer, log *slog.Logger) (*Purger, error) {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "conv", Subsystem: "projector", Name: name, Help: help})
	}
	p := &Purger{store: store, maxAge: maxAge, interval: interval, log: log, now: time.Now, grace: LateGrace,
		pending:  map[lateKey]time.Time{},
		purged:   counter("purged_total", "Tombstones purged for age."),
		late:     counter("late_purged_total", "Late messages of large channels purged: no follower could need them."),
		failures: counter("purge_failures_total", "Failed tombstone or late message purge rounds.")}
	if err := errors.Join(reg.Register(p.purged), reg.Register(p.late), reg.Register(p.failures)); err != nil {
		return nil, err
	}
	return p, nil
}

// Run purges every interval until ctx is done: tombstones (when maxAge is set) in batches of 1000 until
// none is left, then late messages (lateRound). A failed round is logged, counted and tried again at the
// next tick: purging is housekeeping and never stops the process. Run returns when ctx is done.
func (p *Purger) Run(ctx context.Context) {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if p.maxAge > 0 {
			p.tombstoneRound(ctx)
		}
		p.lateRound(ctx)
	}
}

func (p *Purger) tombstoneRound(ctx context.Context) {
	before := p.now().Add(-p.maxAge).UnixMilli()
	total := int64(0)
	for _, purge := range []func(context.Context, int64, int) (int64, error){p.store.PurgeTombstones, p.store.PurgeFollowerTombstones} {
		n, ok := p.tombstones(ctx, purge, before)
		total += n
		if !ok {
			break
		}
	}
	if total > 0 {
		p.log.Info("tombstones purged", "count", total, "max_age", p.maxAge.String())
	}
}

// tombstones runs purge in batches until it comes back short; ok is false when it failed.
func (p *Purger) tombstones(ctx context.Context, purge func(context.Context, int64, int) (int64, error), before int64) (total int64, ok bool) {
	for ctx.Err() == nil {
		n, err := purge(ctx, before, batchSize)
		if err != nil {
			if ctx.Err() == nil {
				p.failures.Inc()
				p.log.Warn("tombstone purge failed", "purged_this_round", total, "error", err.Error())
			}
			return total, false
		}
		total += n
		p.purged.Add(float64(n))
		if n < batchSize {
			break
		}
	}
	return total, true
}

// lateRound deletes the late messages found unneeded at least the grace period ago, then looks for
// more, examining at most batchSize late messages (a pass over every channel takes as many rounds as
// it needs). Unneeded stays unneeded (see internal/mysql), so what was found is remembered across
// rounds; a restart only delays its deletion by the grace period.
func (p *Purger) lateRound(ctx context.Context) {
	now := p.now()
	var due []conversation.LateMsg
	for k, at := range p.pending {
		if now.Sub(at) >= p.grace && len(due) < batchSize {
			due = append(due, conversation.LateMsg{Channel: k.channel, Arrival: k.arrival})
		}
	}
	if len(due) > 0 {
		n, err := p.store.DeleteLate(ctx, due)
		if err != nil {
			if ctx.Err() == nil {
				p.failures.Inc()
				p.log.Warn("late message purge failed", "purged_this_round", n, "error", err.Error())
			}
			return
		}
		for _, m := range due {
			delete(p.pending, lateKey{m.Channel, m.Arrival})
		}
		p.late.Add(float64(n))
		p.log.Info("late messages purged", "count", n, "grace", p.grace.String())
	}
	found, next, err := p.store.UnneededLate(ctx, p.lateFrom, batchSize)
	if err != nil {
		if ctx.Err() == nil {
			p.failures.Inc()
			p.log.Warn("late message purge failed", "error", err.Error())
		}
		return
	}
	p.lateFrom = next
	for _, m := range found {
		if _, ok := p.pending[lateKey{m.Channel, m.Arrival}]; !ok {
			p.pending[lateKey{m.Channel, m.Arrival}] = now
		}
	}
}
