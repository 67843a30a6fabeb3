package conversation

import (
	"context"
	"time"
)

// UpdateTx is what RunUpdate needs of storage: one attempt at an API mutation of one conversation.
// Its methods are BatchTx's, with LockChannel for LockChannels (a mutation creates no channel), and
// carry the same guarantees; RunUpdate calls them in the order declared.
type UpdateTx interface {
	// LockChannel takes the channel for the attempt, as LockChannels does, and returns its state (the
	// zero state when it does not exist).
	LockChannel(ctx context.Context, key ChannelKey) (ChannelState, error)
	RowsForUpdate(ctx context.Context, keys []ConvKey) (map[ConvKey]Row, error)
	LateSince(ctx context.Context, since map[ChannelKey]int64) (map[ChannelKey][]LateMsg, error)
	BumpVersions(ctx context.Context, uids []string) (map[string]int64, error)
	WriteRows(ctx context.Context, rows []Row) error
}

// RunUpdate applies change, given the conversation and nowMS(), to conversation key through tx (an API
// mutation: SetUnread, Delete). Locks come in the projector's order (RunBatch): the channel of a
// group-like conversation (a follower's row is derived from its state), the row, the user's version. A
// follower is derived first and rebased at the channel's state after the change (contract §5). When
// change reports a change, the row gets the user's next version (contract §3.6) and is written; the
// result is the row as stored afterwards and whether it changed. Errors: ErrNotFound when there is no
// such conversation (none stored, or a follower that has received nothing yet), ErrConflict (retry the
// attempt) when the version was taken longer ago than VersionsFresh allows, and tx's.
func RunUpdate(ctx context.Context, tx UpdateTx, key ConvKey, change func(row Row, nowMS int64) (Row, bool), nowMS func() int64) (Row, bool, error) {
	ck := ChannelKey{Key: key.ChannelID, Type: key.ChannelType}
	var ch ChannelState
	if key.ChannelType != ChannelTypePerson {
		var err error
		if ch, err = tx.LockChannel(ctx, ck); err != nil {
			return Row{}, false, err
		}
	}
	rows, err := tx.RowsForUpdate(ctx, []ConvKey{key})
	if err != nil {
		return Row{}, false, err
	}
	row, ok := rows[key]
	if !ok {
		return Row{}, false, ErrNotFound
	}
	if row.Follows {
		late, err := tx.LateSince(ctx, map[ChannelKey]int64{ck: row.Base.Arrivals})
		if err != nil {
			return Row{}, false, err
		}
		row = Derive(row, ch.Broadcast, late[ck])
	}
	if row.Hidden {
		return Row{}, false, ErrNotFound
	}
	next, changed := change(row, nowMS())
	if !changed {
		return row, false, nil
	}
	if next.Follows {
		next.Base = BaseOf(ch)
	}
	versions, err := tx.BumpVersions(ctx, []string{key.UID})
	if err != nil {
		return Row{}, false, err
	}
	takenAt := time.Now() // from the return: see BatchTx.BumpVersions
	next.Version = versions[key.UID]
	if err := tx.WriteRows(ctx, []Row{next}); err != nil {
		return Row{}, false, err
	}
	return next, true, VersionsFresh(takenAt)
}
