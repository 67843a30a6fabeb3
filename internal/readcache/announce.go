package readcache

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// announcements is the guard every cache here keeps against a load racing an announcement (rule 3 of
// docs/proofs.md "Caches and the change feed"): a load reads the database at some moment, and a commit
// announced while it was in flight may or may not be in what it read. The guard remembers, per key (a
// user, a channel), the latest announcement as a number that only grows: the user's version for lists
// (Rows compares versions), or the guard's own count of announcements for windows and channel states
// (Recents and Large take a mark before a load and keep what it read only if nothing of its key was
// announced after the mark). Memory is bounded: past max keys everything is forgotten at once, and
// anything read before that moment is suspect.
//
// It is not safe for concurrent use: each cache calls it under its own lock.
type announcements[K comparable] struct {
	max    int
	latest map[K]int64
	count  int64 // announcements counted so far (announce)
	forgot int64 // count when latest was last cleared
}

func newAnnouncements[K comparable](max int) announcements[K] {
	return announcements[K]{max: max, latest: map[K]int64{}}
}

// record remembers v for k when it is above what is remembered, forgetting every key first when the
// guard is full; it reports whether it forgot.
func (a *announcements[K]) record(k K, v int64) (forgot bool) {
	if v <= a.latest[k] {
		return false
	}
	if len(a.latest) >= a.max {
		clear(a.latest)
		a.forgot = a.count
		forgot = true
	}
	a.latest[k] = v
	return forgot
}

// full reports whether the next new key would make the guard forget every key.
func (a *announcements[K]) full() bool { return len(a.latest) >= a.max }

// announce counts an announcement of k.
func (a *announcements[K]) announce(k K) {
	a.count++
	a.record(k, a.count)
}

// mark is where the count stands: take it before a load, under the cache's lock.
func (a *announcements[K]) mark() int64 { return a.count }

// since reports whether k may have been announced after mark (counted with announce): then what a
// load started at mark read may predate that commit and must not be kept.
func (a *announcements[K]) since(k K, mark int64) bool {
	return a.latest[k] > mark || a.forgot > mark
}

// newer reports whether a value above v is remembered for k (recorded with record).
func (a *announcements[K]) newer(k K, v int64) bool { return a.latest[k] > v }

// refresh is the bulk revalidation every cache runs in its Refresh: under mu, due picks what was last
// known current more than MaxAge/2 ago (and may forget what no request needs any more); load reads all
// of it in one call, without the lock (timed as the cache load metric's label); under mu again, apply
// keeps what is unchanged and drops or marks the rest. When load fails nothing is changed.
func refresh[K, V any](ctx context.Context, mu *sync.Mutex, m *Metrics, label string,
	due func() []K, load func(context.Context, []K) (V, error), apply func([]K, V)) error {
	mu.Lock()
	keys := due()
	mu.Unlock()
	if len(keys) == 0 {
		return nil
	}
	start := time.Now()
	loaded, err := load(ctx, keys)
	if err != nil {
		return err
	}
	m.load.WithLabelValues(label).Observe(time.Since(start).Seconds())
	mu.Lock()
	defer mu.Unlock()
	apply(keys, loaded)
	return nil
}

// RefreshEvery runs the caches' bulk revalidation every interval until ctx ends: lists, then large
// channels' states, then recents (large and recents may be nil). Run with interval MaxAge/4, it keeps
// requests from finding what they need expired and revalidating it one database read at a time. A
// failure is logged: the requests then revalidate what they need themselves.
func RefreshEvery(ctx context.Context, interval time.Duration, log *slog.Logger, rows *Rows, large *Large, recents *Recents) {
	type cache struct {
		what    string
		refresh func(context.Context) error
	}
	caches := []cache{{"conversation list", rows.Refresh}}
	if large != nil {
		caches = append(caches, cache{"large channels", large.Refresh})
	}
	if recents != nil {
		caches = append(caches, cache{"recents", recents.Refresh})
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, c := range caches {
			if err := c.refresh(ctx); err != nil && ctx.Err() == nil {
				log.Warn(c.what+" refresh failed", "error", err.Error())
			}
		}
	}
}
