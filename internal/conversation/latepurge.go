package conversation

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"time"
)

// Late messages of large channels (contract §5) are needed only by followers whose base is older than
// them, and only in the two ways Derive uses them. A follower f (base arrivals A, newest seq at its base
// M, L = LateFloor(f)) reads the late message (arrival a, seq s) only when A < a, and then
//   - to leave it out of the unread count: when it has red_dot 1 and s <= L;
//   - as its highest seq since the base (last_*, revival, the first message of a hidden joiner): when
//     the channel's newest seq B has not moved past M (M = B: every arrival since the base was late), s
//     is the highest seq among the late messages that arrived after A, and s is above LateAbove(f).
//     (Below that the highest one changes nothing, and neither would the next one down.)
//
// Once no follower needs a late message, none ever will: a follower's base, read and delete points
// change only when its row is written, and every write rebases it at the channel's state then, whose
// arrivals are at or above every late message that exists; new followers are based the same way; B
// only grows; and a late message that is not the highest since a base never becomes it (messages are
// only added, and a highest one is never purged while needed, so it stays the highest or is
// overtaken). So a late message found unneeded in one consistent snapshot can be deleted at any later
// time. What remains is a reader holding a follower's row from before that snapshot: see
// internal/purge for the grace period that covers it.

// LateFloor is the seq at or below which a late red-dot message does not count in a follower's unread
// (Derive's L): the read and delete points and the base's floor; for a hidden row only the floor.
func LateFloor(row Row) int64 {
	if row.Hidden {
		return row.Base.Floor
	}
	return max(row.ReadedToMsgSeq, row.DeletedAtSeq, row.Base.Floor)
}

// LateAbove is the seq a late message must be above to change a follower's row as its highest seq
// since the base: the last seq, the delete point of a tombstone, nothing for a hidden row.
func LateAbove(row Row) int64 {
	switch {
	case row.Hidden:
		return 0
	case row.Deleted:
		return row.DeletedAtSeq
	default:
		return row.LastMsgSeq
	}
}

// UnneededLate returns the late messages of late, one channel's ordered by arrival, that none of its
// followers can need any more (see above). followers are the channel's follower rows as stored (at
// least those based before the last of late), newest the channel's Broadcast.MaxSeq, and beyond the
// highest seq among the channel's late messages after the last of late (0 when late holds them all):
// a late message is the highest since some base only when it is above that. All read in one
// consistent snapshot.
func UnneededLate(late []LateMsg, followers []Row, newest, beyond int64) []LateMsg {
	// Followers with the same base arrivals were written at the same channel state, so they share
	// the base's newest seq; only the highest floor and the lowest LateAbove matter.
	type base struct{ arrivals, maxSeq, floor, above int64 }
	byArrivals := map[int64]*base{}
	for _, f := range followers {
		b := byArrivals[f.Base.Arrivals]
		if b == nil {
			b = &base{arrivals: f.Base.Arrivals, maxSeq: f.Base.MaxSeq, floor: LateFloor(f), above: LateAbove(f)}
			byArrivals[f.Base.Arrivals] = b
		}
		b.maxSeq, b.floor, b.above = max(b.maxSeq, f.Base.MaxSeq), max(b.floor, LateFloor(f)), min(b.above, LateAbove(f))
	}
	bases := make([]base, 0, len(byArrivals))
	for _, b := range byArrivals {
		bases = append(bases, *b)
	}
	slices.SortFunc(bases, func(a, b base) int { return cmp.Compare(a.arrivals, b.arrivals) })
	needed := make([]bool, len(late))
	// Counting: a red-dot late message is needed when a follower based before it has L >= its seq.
	floor, bi := int64(-1), 0
	for i, m := range late {
		for bi < len(bases) && bases[bi].arrivals < m.Arrival {
			floor = max(floor, bases[bi].floor)
			bi++
		}
		if m.RedDot && m.Seq <= floor {
			needed[i] = true
		}
	}
	// last_*: for each follower still at the channel's newest seq, the highest late message since its
	// base. top[i] is the index of the highest seq among late[i:].
	top := make([]int, len(late))
	for i := len(late) - 1; i >= 0; i-- {
		top[i] = i
		if i+1 < len(late) && late[top[i+1]].Seq > late[i].Seq {
			top[i] = top[i+1]
		}
	}
	li := 0
	for _, b := range bases { // ascending arrivals
		if b.maxSeq < newest {
			continue
		}
		for li < len(late) && late[li].Arrival <= b.arrivals {
			li++
		}
		if li < len(late) && late[top[li]].Seq > max(b.above, beyond) {
			needed[top[li]] = true
		}
	}
	var out []LateMsg
	for i, m := range late {
		if !needed[i] {
			out = append(out, m)
		}
	}
	return out
}

// RunFollowerTombstonePurge purges, through tx, the tombstones of followers of large channel ck among
// keys (sorted, picked as deleted before beforeMS): each becomes what PurgeFollowerTombstone leaves, with
// its user's next version, so that a reader holding the row at its old base learns of the change
// before the late messages of that base may go. Locks come in the projector's order (RunBatch):
// channel, rows, versions. A key whose row changed since it was picked (no longer a follower's
// tombstone deleted before beforeMS) is left alone. It returns how many tombstones went and the new
// versions; ErrConflict (retry the attempt) when the versions were taken longer ago than VersionsFresh
// allows, and tx's errors.
func RunFollowerTombstonePurge(ctx context.Context, tx UpdateTx, ck ChannelKey, keys []ConvKey, beforeMS int64) (int64, map[string]int64, error) {
	ch, err := tx.LockChannel(ctx, ck)
	if err != nil {
		return 0, nil, err
	}
	rows, err := tx.RowsForUpdate(ctx, keys)
	if err != nil {
		return 0, nil, err
	}
	late, err := tx.LateSince(ctx, FollowedSince(maps.Values(rows)))
	if err != nil {
		return 0, nil, err
	}
	var purged int64
	var out []Row
	var uids []string
	for _, k := range keys {
		r, ok := rows[k]
		if !ok || !r.Follows || !r.Deleted || r.DeletedAtMS >= beforeMS {
			continue // changed since it was picked
		}
		d, gone := PurgeFollowerTombstone(r, ch, late[ck])
		if gone {
			purged++
		}
		out = append(out, d)
		uids = append(uids, k.UID)
	}
	if len(out) == 0 {
		return 0, nil, nil
	}
	versions, err := tx.BumpVersions(ctx, uids)
	if err != nil {
		return 0, nil, err
	}
	takenAt := time.Now() // from the return: see BatchTx.BumpVersions
	RowChanges{Rows: out}.Stamp(versions)
	if err := tx.WriteRows(ctx, out); err != nil {
		return 0, nil, err
	}
	return purged, versions, VersionsFresh(takenAt)
}
