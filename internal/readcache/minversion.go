package readcache

import "context"

// A device that syncs incrementally sends the version it was already answered. No list older than
// that is served to it: Rows.ReadList puts it in the context, does not serve an older list from
// memory, and a source that reads database replicas (internal/replica) does not answer below it
// (contract §6).

type minVersionKey struct{}

// WithMinVersion returns ctx carrying version, the user version the requesting device already has
// (0 or less: none).
func WithMinVersion(ctx context.Context, version int64) context.Context {
	if version <= 0 {
		return ctx
	}
	return context.WithValue(ctx, minVersionKey{}, version)
}

// MinVersion returns the version WithMinVersion put in ctx, or 0.
func MinVersion(ctx context.Context) int64 {
	v, _ := ctx.Value(minVersionKey{}).(int64)
	return v
}
