package conversation

import (
	"context"
	"iter"
	"slices"
)

// Deriving followers of large channels (contract §5), written once for every reader: the batch
// (ApplyRouting, the follower tombstone purge), the store's sync read and the API's held states.

// FollowedSince returns, for each channel with followers among rows, the lowest base among them: the
// one rule for which late messages a derivation reads. A follower at base a needs every late message
// with an arrival number above a (Derive ignores the others), so reading from the lowest base serves
// every follower of the channel; reading from any other base (the last follower's, say) would leave
// out late messages a follower with an older base needs, counting them neither in unread nor as its
// last message. A user's list holds one row per channel, so there the lowest base is the row's own.
func FollowedSince(rows iter.Seq[Row]) map[ChannelKey]int64 {
	out := map[ChannelKey]int64{}
	for r := range rows {
		if !r.Follows {
			continue
		}
		ck := ChannelKey{Key: r.ChannelID, Type: r.ChannelType}
		if a, ok := out[ck]; !ok || r.Base.Arrivals < a {
			out[ck] = r.Base.Arrivals
		}
	}
	return out
}

// DeriveFollower returns r's conversation now (Derive) when r follows a large channel, given the
// channels' states and their late messages since FollowedSince; any other row is returned as it is.
func DeriveFollower(r Row, channels map[ChannelKey]ChannelState, late map[ChannelKey][]LateMsg) Row {
	if !r.Follows {
		return r
	}
	ck := ChannelKey{Key: r.ChannelID, Type: r.ChannelType}
	return Derive(r, channels[ck].Broadcast, late[ck])
}

// LargeStates reads the states of the channels of since and their late messages with an arrival
// number above since's: what DeriveList needs.
type LargeStates func(ctx context.Context, since map[ChannelKey]int64) (map[ChannelKey]ChannelState, map[ChannelKey][]LateMsg, error)

// DeriveList returns rows with every follower of a large channel replaced by its conversation now,
// reading the states once, through read, from FollowedSince(rows); rows without followers read nothing
// and come back as they are. rows is not modified. Errors are read's.
func DeriveList(ctx context.Context, rows []Row, read LargeStates) ([]Row, error) {
	since := FollowedSince(slices.Values(rows))
	if len(since) == 0 {
		return rows, nil
	}
	channels, late, err := read(ctx, since)
	if err != nil {
		return nil, err
	}
	out := make([]Row, len(rows))
	for i, r := range rows {
		out[i] = DeriveFollower(r, channels, late)
	}
	return out, nil
}
