package conversation

import "context"

type userKey struct{}

// ForUser returns ctx noting that the reads made with it serve uid's request. A read model sharded by
// user reads the channels' windows of a sync from that user's shard, whose copy of them its rows were
// written against (docs/proofs.md, "Sharded by user").
func ForUser(ctx context.Context, uid string) context.Context {
	return context.WithValue(ctx, userKey{}, uid)
}

// UserOf returns the user ForUser noted in ctx.
func UserOf(ctx context.Context) (string, bool) {
	uid, ok := ctx.Value(userKey{}).(string)
	return uid, ok
}
