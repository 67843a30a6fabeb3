package readcache

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics count how the caches answer, so operators can see what they save.
type Metrics struct {
	rows    *prometheus.CounterVec
	recents *prometheus.CounterVec
	large   *prometheus.CounterVec
	load    *prometheus.HistogramVec
	// held is what the rows cache holds: lists and rows.
	held *prometheus.GaugeVec
}

// NewMetrics creates the caches' metrics and registers them with reg; it fails when reg holds them already.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "conv", Subsystem: "api", Name: "rows_cache_total",
			Help: "Conversation lists served: from memory alone, after an unchanged version check, or loaded; page counts paged syncs that read only their page; refreshed counts lists revalidated in bulk."}, []string{"result"}),
		recents: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "conv", Subsystem: "api", Name: "recents_cache_total",
			Help: "Recents ranges asked of the cache, by hit or miss; refreshed counts stretches reloaded in bulk."}, []string{"result"}),
		large: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "conv", Subsystem: "api", Name: "large_cache_total",
			Help: "Large channels' states used by sync: from memory, or loaded; refreshed counts states revalidated in bulk."}, []string{"result"}),
		load: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "conv", Subsystem: "api", Name: "cache_load_seconds",
			Help:    "Cache refreshes: reading what a cache misses from the database, by cache (rows, rows_page: a paged sync's page, recents).",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14)}, []string{"cache"}),
		held: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "conv", Subsystem: "api", Name: "rows_cache_held",
			Help: "What the rows cache holds now: lists (users) and rows, bounded by SYNC_CACHE_USERS and SYNC_CACHE_ROWS."}, []string{"what"}),
	}
	for _, c := range []string{"rows", "rows_page", "recents", "rows_bulk", "recents_bulk", "large", "large_bulk"} {
		m.load.WithLabelValues(c)
	}
	if err := errors.Join(reg.Register(m.rows), reg.Register(m.recents), reg.Register(m.large), reg.Register(m.load), reg.Register(m.held)); err != nil {
		return nil, err
	}
	return m, nil
}

// orUnregistered returns m, or metrics nobody scrapes when m is nil.
func (m *Metrics) orUnregistered() *Metrics {
	if m != nil {
		return m
	}
	m, _ = NewMetrics(prometheus.NewRegistry()) // a fresh registry cannot hold them already
	return m
}
