// Package purge deletes tombstones older than a maximum age (contract §3.5): housekeeping that runs
// beside the projector's loop, never in it.
package purge

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Store is what the purger needs of the read model (internal/mysql.Store is one). Its errors must be
// safe to log.
type Store interface {
	// PurgeTombstones deletes at most limit tombstones deleted before beforeMS and returns how many went.
	PurgeTombstones(ctx context.Context, beforeMS int64, limit int) (int64, error)
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
	log      *slog.Logger
	now      func() time.Time
}

// New returns a Purger of tombstones older than maxAge that runs every interval, with its metrics
// (conv_projector_purged_total, conv_projector_purge_failures_total) registered with reg. It fails when
// reg already holds them.
func New(store Store, maxAge, interval time.Duration, reg prometheus.Registerer, log *slog.Logger) (*Purger, error) {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "conv", Subsystem: "projector", Name: name, Help: help})
	}
	p := &Purger{store: store, maxAge: maxAge, interval: interval, log: log, now: time.Now,
		purged:   counter("purged_total", "Tombstones purged for age."),
		failures: counter("purge_failures_total", "Failed tombstone purge rounds.")}
	if err := errors.Join(reg.Register(p.purged), reg.Register(p.failures)); err != nil {
		return nil, err
	}
	return p, nil
}

// Run purges every interval until ctx is done; each round deletes batches of 1000 until none is left. A
// failed round is logged, counted and tried again at the next tick: purging is housekeeping and never
// stops the process. Run returns when ctx is done.
func (p *Purger) Run(ctx context.Context) {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		before := p.now().Add(-p.maxAge).UnixMilli()
		total := int64(0)
		for ctx.Err() == nil {
			n, err := p.store.PurgeTombstones(ctx, before, batchSize)
			if err != nil {
				if ctx.Err() == nil {
					p.failures.Inc()
					p.log.Warn("tombstone purge failed", "purged_this_round", total, "error", err.Error())
				}
				break
			}
			total += n
			p.purged.Add(float64(n))
			if n < batchSize {
				break
			}
		}
		if total > 0 {
			p.log.Info("tombstones purged", "count", total, "max_age", p.maxAge.String())
		}
	}
}
