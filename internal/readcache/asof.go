package readcache

import (
	"context"
	"sync/atomic"
	"time"
)

// A list served from memory is what the database held when it was last checked, not at the request:
// a change committed since, whose announcement was lost, is missing from it. The versions that sync
// gives large channels' conversations (conversation.Query.NowMS, docs/proofs.md "Versions of large
// channels") must be taken at the time the answer was known current, or a client's cursor could pass
// that change for good. The list-as-of note carries that time from Rows to the API.

type asOfKey struct{}

// WithAsOfNote returns a context in which Rows records when a list it served was last known current,
// when that is earlier than the request; ListAsOf reads it.
func WithAsOfNote(ctx context.Context) context.Context {
	return context.WithValue(ctx, asOfKey{}, new(atomic.Int64))
}

// ListAsOf returns when the list served during the request, and the large channels' states it was
// derived with (Large), were last known current (the earliest of those times), and false when all of
// them were read (or checked) during the request itself.
func ListAsOf(ctx context.Context) (time.Time, bool) {
	n, _ := ctx.Value(asOfKey{}).(*atomic.Int64)
	if n == nil || n.Load() == 0 {
		return time.Time{}, false
	}
	return time.UnixMilli(n.Load()), true
}

// noteAsOf records t unless an earlier time is recorded already: an answer is as current as the
// oldest of what it was made of.
func noteAsOf(ctx context.Context, t time.Time) {
	n, _ := ctx.Value(asOfKey{}).(*atomic.Int64)
	if n == nil {
		return
	}
	ms := t.UnixMilli()
	for {
		old := n.Load()
		if old != 0 && old <= ms {
			return
		}
		if n.CompareAndSwap(old, ms) {
			return
		}
	}
}
