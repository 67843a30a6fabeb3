package conversation

import (
	"cmp"
	"slices"
	"strings"
)

// Query selects a user's conversations for sync (contract §2.1).
type Query struct {
	UID string
	// Version <= 0 is a full sync: the newest MaxFull rows by timestamp. Above 0, only rows with a greater
	// version.
	Version int64
	// Limit > 0 (incremental only) keeps the Limit changed rows with the lowest versions, plus any row
	// that shares the last one's version, so a client that stores the highest version it saw and asks
	// again never skips a change.
	Limit int
	// MaxFull caps a full sync (0: no cap).
	MaxFull        int
	OnlyUnread     bool
	IncludeDeleted bool
	ExcludeTypes   []uint8
	// UserVersion is the user's version read with the rows (one snapshot), NowMS the reader's clock
	// (unix ms) when the rows were known current: the time of the read, or, for a list served from a
	// cache, when it was last checked (a change committed since may be missing from it). Together they say which version a conversation of a large channel is answered with:
	// see LargeVersionSlackMS. Both 0: such conversations keep their own versions (tests).
	UserVersion, NowMS int64
}

// LargeVersionSlackMS is what makes incremental sync of large channels' conversations (Row.Follows)
// never miss a change (contract §5; docs/proofs.md, "Versions of large channels"). Their versions are
// the channel's, taken under the channel's lock, not the user's, so they are not ordered with the
// user's own changes. Two rules restore the order:
//   - A large conversation is answered with the version max(UserVersion, NowMS - slack): every change
//     of the user's own rows with a version at or below it has committed (UserVersion by the user's
//     lock; the other term because a change commits within slack of taking its version, its clock
//     within the skew of the reader's), so a client's cursor never passes a change it has not seen.
//   - An incremental sync returns the large conversations whose own version is above Version - slack,
//     since a change can commit after a sync that answered a higher version, but not that much higher.
//
// The store aborts and retries a transaction that took its first version more than half of the slack
// before committing; the other half covers clock skew between hosts. A large conversation that
// changed is thus repeated only by incremental syncs within about twice the slack of its change.
const LargeVersionSlackMS = 5_000

// Select returns the rows of one user that q selects, newest timestamp first, ties by channel_id then
// channel_type ascending (byte order). An incremental sync also repeats conversations of large
// channels (Row.Follows) up to LargeVersionSlackMS below q.Version. It never returns nil, and does not
// modify rows. Hidden rows (no conversation yet) are never returned.
func Select(rows []Row, q Query) []Row {
	out := make([]Row, 0, len(rows))
	for _, r := range rows {
		if r.Hidden || (r.Deleted && !q.IncludeDeleted) || (q.OnlyUnread && r.Unread <= 0) || slices.Contains(q.ExcludeTypes, r.ChannelType) {
			continue
		}
		if q.Version > 0 && r.Version <= q.Version && (!r.Follows || r.Version <= q.Version-LargeVersionSlackMS) {
			continue
		}
		if r.Follows && (q.UserVersion != 0 || q.NowMS != 0) {
			r.Version = max(q.UserVersion, q.NowMS-LargeVersionSlackMS)
		}
		out = append(out, r)
	}
	if q.Version > 0 && q.Limit > 0 && len(out) > q.Limit {
		slices.SortFunc(out, func(a, b Row) int { return cmp.Compare(a.Version, b.Version) })
		bound := out[q.Limit-1].Version
		n := q.Limit
		for n < len(out) && out[n].Version == bound {
			n++
		}
		out = out[:n]
	}
	slices.SortFunc(out, func(a, b Row) int {
		if c := cmp.Compare(b.Timestamp, a.Timestamp); c != 0 {
			return c
		}
		if c := strings.Compare(a.ChannelID, b.ChannelID); c != 0 {
			return c
		}
		return cmp.Compare(a.ChannelType, b.ChannelType)
	})
	if q.Version <= 0 && q.MaxFull > 0 && len(out) > q.MaxFull {
		out = out[:q.MaxFull]
	}
	return out
}
