package projector

import (
	"context"
	"log/slog"
	"time"
)

// TombstoneStore is what the purger needs of the read model (internal/mysql.Store is one).
type TombstoneStore interface {
	// PurgeTombstones deletes at most limit tombstones deleted before beforeMS and returns how many went.
	PurgeTombstones(ctx context.Context, beforeMS int64, limit int) (int64, error)
}

// purgeBatch bounds one delete statement, so a purge never holds many row locks at once.
const purgeBatch = 1000

// Purger deletes tombstones older than a maximum age (contract §3.5), a bounded batch at a time.
type Purger struct {
	store    TombstoneStore
	maxAge   time.Duration
	interval time.Duration
	metrics  *Metrics
	log      *slog.Logger
	now      func() time.Time
}

// NewPurger returns a Purger of tombstones older than maxAge that runs every interval.
func NewPurger(store TombstoneStore, maxAge, interval time.Duration, metrics *Metrics, log *slog.Logger) *Purger {
	return &Purger{store: store, maxAge: maxAge, interval: interval, metrics: metrics, log: log, now: time.Now}
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
			n, err := p.store.PurgeTombstones(ctx, before, purgeBatch)
			if err != nil {
				if ctx.Err() == nil {
					p.metrics.purgeFailures.Inc()
					p.log.Warn("tombstone purge failed", "purged_this_round", total, "error", redact(err))
				}
				break
			}
			total += n
			p.metrics.purged.Add(float64(n))
			if n < purgeBatch {
				break
			}
		}
		if total > 0 {
			p.log.Info("tombstones purged", "count", total, "max_age", p.maxAge.String())
		}
	}
}
