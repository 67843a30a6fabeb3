package conversation

import (
	"context"
	"fmt"
	"maps"
	"time"
)

// BatchTx is what the batch algorithm (RunBatch) needs of storage: one attempt at applying one batch.
// internal/mysql implements it with SQL in one transaction, internal/memstore in memory. RunBatch calls
// the methods in the order they are declared, each at most once except Members (twice when a large
// channel stops being large), and reads everything it reads before it writes anything, so an
// implementation may defer its writes until it commits (several statements per round trip, say).
//
// What an implementation must guarantee:
//   - Isolation per channel: from LockChannels until the attempt commits or is abandoned, no other
//     attempt that locks one of the same channels reads or writes that channel's state, window,
//     membership or late messages (a lock, today the channels row's). This is what makes the applied
//     check exact and the membership read current.
//   - Rows held for update: the rows RowsForUpdate returns are still the stored ones when WriteRows
//     writes them (API mutations change rows of channels the batch does not otherwise lock). Locking
//     them in the given (sorted) order is one way; a write that fails with ErrConflict when the row
//     changed since it was read is another.
//   - Versions: BumpVersions gives each user a version above every version the user had, taken so
//     that two attempts changing rows of one user get versions in the order they commit (today the
//     user's version row is locked until commit).
//   - Atomic effect: when the caller reports success, every write of the attempt is committed; when it
//     reports failure none is visible. A store that commits in several parts (one per shard) must
//     commit WriteChannels' part last and make a replay of a partly committed batch change nothing
//     twice: the channel state is what tells RunBatch which messages are applied.
//
// Errors that wrap ErrConflict make the caller retry the whole attempt; ErrUnavailable says the
// storage cannot be reached. Nothing in RunBatch assumes that one transaction holds every row the
// batch touches: keys of different users and channels may live in different places.
type BatchTx interface {
	// LockChannels creates the channels of keys that do not exist (in the zero ChannelState), takes
	// them for the attempt in the given (sorted) order, and returns the state of every one of them.
	LockChannels(ctx context.Context, keys []ChannelKey) (map[ChannelKey]ChannelState, error)
	// AppliedMessages returns which of keys are in their channel's window.
	AppliedMessages(ctx context.Context, keys []MessageKey) (map[MessageKey]bool, error)
	// Members returns the stored membership of the channels of whole, and of named the pairs that
	// are stored members, each channel's uids in one list (in any order); a channel without
	// members may be missing.
	Members(ctx context.Context, whole []ChannelKey, named []Member) (map[ChannelKey][]string, error)
	// RowsForUpdate returns the stored rows among keys (sorted and unique), as stored (followers at
	// their base), held for WriteRows.
	RowsForUpdate(ctx context.Context, keys []ConvKey) (map[ConvKey]Row, error)
	// LateSince returns the late messages of each channel of since with an arrival above since's (a
	// superset is fine: Derive ignores the others).
	LateSince(ctx context.Context, since map[ChannelKey]int64) (map[ChannelKey][]LateMsg, error)
	// BumpVersions gives each user of uids (sorted and unique) its next version,
	// max(nowMS, previous + 1), and returns them (contract §3.6). nowMS is read once the users are held
	// for the attempt (after any wait for another attempt that holds one of them), at most a statement
	// before the call returns: the attempt's freshness (VersionsFresh) counts from the return.
	BumpVersions(ctx context.Context, uids []string) (map[string]int64, error)
	// WriteRows writes whole rows (sorted by key, versions set), inserting those that do not exist.
	WriteRows(ctx context.Context, rows []Row) error
	// WriteChannels writes the channel side of the batch: its new messages into the windows, its late
	// messages, each changed channel's state (pruning the window below a moved watermark in the same
	// commit, so a pruned message can never apply again), and the net membership change.
	WriteChannels(ctx context.Context, w ChannelWrites) error
}

// ChannelWrites is everything a batch writes that is keyed by channel: RunBatch hands it over last.
type ChannelWrites struct {
	// Messages enter the windows (Routing.Messages).
	Messages []*Message
	// Late are the broadcast messages of large channels that arrived late (Routing.Late).
	Late []LateMsg
	// Channels are the changed channels' new states, broadcast versions stamped (Routing.Channels).
	Channels []ChannelUpdate
	// MembersAdded and MembersRemoved are the net membership change, sorted.
	MembersAdded, MembersRemoved []Member
}

// BatchOptions configure RunBatch.
type BatchOptions struct {
	// Window is how many newest seqs a channel keeps.
	Window int64
	// Large says when a channel fans out at read time (zero: never).
	Large LargeThresholds
	// NowMS is the store clock in unix milliseconds: channel versions are taken from it.
	NowMS func() int64
	// Owns, on a read model sharded by user whose every shard keeps whole channels (docs/proofs.md,
	// "Sharded by user"), says which users' rows this store holds: the batch writes only theirs
	// (Routing.OwnedBy). Nil: every user's.
	Owns func(uid string) bool
}

// BatchOutcome is what RunBatch did: the counts, and what readers that hold lists, windows or large
// channels' states in memory must learn once the attempt commits.
type BatchOutcome struct {
	Result  BatchResult
	Changes Changes
}

// RunBatch applies a batch of events, in their order, through tx (contract §3, §4, §5). events must
// all be projected (SkipSet.Projected). The steps, each a read under the batch's locks or a pure
// decision of this package:
//
//  1. scope: ScopeOf names the channels (sorted: the lock order) and those whose membership is read.
//  2. channels: tx.LockChannels.
//  3. applied: tx.AppliedMessages of SeqsToCheck: only seqs at or below a channel's newest one.
//  4. memberships: tx.Members, whole for small channels and, for large ones, only of the uids the
//     batch names (NamedUIDs).
//  5. route: RouteWith decides what applies and who receives it; when a large channel stops being
//     large it asks for whole memberships (Routing.NeedMembers), read, and routes again. A store that
//     holds only some users' rows (BatchOptions.Owns) keeps only theirs (Routing.OwnedBy).
//  6. rows: tx.RowsForUpdate of Routing.RowKeys, tx.LateSince of FollowedSince for followers' late
//     messages, ApplyRouting for each row's new value.
//  7. versions: tx.BumpVersions of the changed rows' users, stamped on the rows (RowChanges.Stamp).
//  8. writes: tx.WriteRows.
//  9. channel state: channel versions stamped (Routing.StampChannels; last, as close to the commit
//     as possible: see LargeVersionSlackMS), then tx.WriteChannels.
//
// It returns ErrConflict, so that the caller retries the attempt with new versions, when the first
// version was taken longer ago than VersionsFresh allows. On an error the caller abandons the attempt
// (rolls back) and nothing of the outcome holds.
func RunBatch(ctx context.Context, tx BatchTx, events []Event, opts BatchOptions) (BatchOutcome, error) {
	var out BatchOutcome
	scope := ScopeOf(events)
	if len(scope.Channels) == 0 {
		return out, nil
	}
	var st BatchState
	var err error
	if st.Channels, err = tx.LockChannels(ctx, scope.Channels); err != nil {
		return out, err
	}
	if st.Applied, err = tx.AppliedMessages(ctx, SeqsToCheck(events, st.Channels)); err != nil {
		return out, err
	}
	named := NamedUIDs(events)
	if err := readMembers(ctx, tx, &st, scope.Members, named); err != nil {
		return out, err
	}
	ropts := RouteOptions{Window: opts.Window, Large: opts.Large}
	route := routeNamed(events, st, ropts, named)
	if len(route.NeedMembers) > 0 {
		all, err := tx.Members(ctx, route.NeedMembers, nil)
		if err != nil {
			return out, err
		}
		for _, k := range route.NeedMembers {
			st.Members[k] = all[k]
			delete(st.Partial, k)
		}
		route = routeNamed(events, st, ropts, named)
	}
	if opts.Owns != nil {
		route = route.OwnedBy(opts.Owns)
	}
	out.Result = route.Result
	out.Changes.Windows = WindowChanges(st, route)

	rows, err := tx.RowsForUpdate(ctx, route.RowKeys)
	if err != nil {
		return out, err
	}
	late, err := tx.LateSince(ctx, FollowedSince(maps.Values(rows)))
	if err != nil {
		return out, err
	}
	changes := ApplyRouting(st, route, rows, late)
	var versionsAt time.Time
	if len(changes.Rows) > 0 {
		if out.Changes.Versions, err = tx.BumpVersions(ctx, changes.UIDs); err != nil {
			return out, err
		}
		// From the return, not the call: waiting for another attempt's hold on a user (two lanes or
		// replicas changing rows of one user) is not time the versions age (see BumpVersions).
		versionsAt = time.Now()
		changes.Stamp(out.Changes.Versions)
		if err := tx.WriteRows(ctx, changes.Rows); err != nil {
			return out, err
		}
	}
	out.Result.RowsWritten = len(changes.Rows)

	if versionsAt.IsZero() {
		versionsAt = time.Now()
	}
	route.StampChannels(opts.NowMS())
	out.Changes.Channels = ChannelChanges(st, route)
	if err := tx.WriteChannels(ctx, ChannelWrites{Messages: route.Messages, Late: route.Late, Channels: route.Channels,
		MembersAdded: route.MembersAdded, MembersRemoved: route.MembersRemoved}); err != nil {
		return out, err
	}
	return out, VersionsFresh(versionsAt)
}

// readMembers reads the stored membership of the channels of scope: whole for those that are not large,
// only the named uids' for large ones (BatchState.Partial).
func readMembers(ctx context.Context, tx BatchTx, st *BatchState, scope []ChannelKey, named map[ChannelKey][]string) error {
	var whole []ChannelKey
	var pairs []Member
	st.Partial = make(map[ChannelKey]bool)
	for _, k := range scope {
		if !st.Channels[k].Large {
			whole = append(whole, k)
			continue
		}
		st.Partial[k] = true
		for _, u := range named[k] {
			pairs = append(pairs, Member{Channel: k, UID: u})
		}
	}
	var err error
	st.Members, err = tx.Members(ctx, whole, pairs)
	if st.Members == nil {
		st.Members = map[ChannelKey][]string{}
	}
	return err
}

// VersionsFresh returns an error wrapping ErrConflict, so that the transaction is retried with new
// versions, when its first version was taken (takenAt; zero for none) longer ago than half of
// LargeVersionSlackMS: incremental syncs rely on a change committing within that time of taking its
// version (contract §5).
func VersionsFresh(takenAt time.Time) error {
	if d := time.Since(takenAt); !takenAt.IsZero() && d > LargeVersionSlackMS*time.Millisecond/2 {
		return fmt.Errorf("%w: versions taken %v before the commit", ErrConflict, d.Round(time.Millisecond))
	}
	return nil
}

// ChannelChanges is what a routed batch does to the broadcast state of channels that are large at
// either end of it: the state before is the one read under the channel's lock, so the changes of one
// channel chain (each one's Before is the previous one's After) in commit order. A batch that crosses
// the threshold records no late messages (it fans out to every member): it is announced with a Before
// no reader holds, so readers drop what they hold of the channel. r's channels must be stamped
// (StampChannels).
func ChannelChanges(st BatchState, r Routing) []ChannelChange {
	lateOf := map[ChannelKey][]LateMsg{}
	for _, m := range r.Late {
		lateOf[m.Channel] = append(lateOf[m.Channel], m)
	}
	var out []ChannelChange
	for _, u := range r.Channels {
		before := st.Channels[u.Key]
		if !u.Arrived || !(u.Large || before.Large) {
			continue
		}
		c := ChannelChange{Channel: u.Key, Before: before.Broadcast, After: u.Broadcast}
		if !u.Large || !before.Large {
			c.Before = Broadcast{Arrivals: -1}
		}
		c.Late = lateOf[u.Key]
		out = append(out, c)
	}
	return out
}
