package conversation

// Large channels (contract §5) fan out at read time. A channel is large while its stored membership is
// at least the threshold; it keeps its Broadcast state once, and each member's row (Row.Follows) holds
// the member's state at a Base: the channel's broadcast counters when the row was last written. Rows are
// written only when the member acts (joins, leaves, receives an own or inline message in a batch, calls
// setUnread, clearUnread or delete). Derive computes the conversation as per-member fan-out would have
// it, from the row, the channel's Broadcast now and the channel's late messages.
//
// Why that is exact: the messages a follower received since its base are exactly the broadcast
// messages that arrived since (numbers Base.Arrivals+1 .. Broadcast.Arrivals), none of them the
// member's own in a way that matters (an own message that changes the row is applied in its batch and
// rebases the row; one that changes nothing is at or below the read point, where it is left out anyway).
// Non-own messages change a row only by counting (red_dot and seq above both read and delete point,
// and readed_to/deleted_at never move without the member acting), by reviving a tombstone (a seq above
// the delete point) and by moving last_* (a higher seq). So:
//   - unread grows by the red-dot arrivals since the base minus those at or below
//     L = max(readed_to, deleted_at, Base.Floor). Such a message has a seq at or below the channel's
//     newest seq at the base, so it arrived late (below the newest seq of its time) and is in
//     LateMsgs; Base.Floor (the watermark at the base, minus one) only bounds what can still arrive.
//   - the highest seq that arrived since is Broadcast.MaxSeq when that moved past Base.MaxSeq (the
//     message holding it arrived since), otherwise the highest late message since (every arrival
//     since was then below Base.MaxSeq, so late).

// Broadcast is a channel's count of the messages delivered to its whole stored membership (no inline
// subscribers), in apply order, and the newest of them.
type Broadcast struct {
	// Arrivals numbers the broadcast messages applied, ever; RedDots counts those with red_dot 1.
	Arrivals, RedDots int64
	// MaxSeq, ClientMsgNo and Timestamp are those of the broadcast message with the highest seq.
	MaxSeq      int64
	ClientMsgNo string
	Timestamp   int64
	// Version moves with every broadcast arrival: a derived row that changed since its base has it.
	Version int64
}

// Base is the channel's state a follower's row was written at.
type Base struct {
	Arrivals, RedDots int64
	// MaxSeq is Broadcast.MaxSeq then; Floor is the window's watermark then, minus one: no message at or
	// below it can be applied afterwards.
	MaxSeq, Floor int64
}

// BaseOf is the base of a row written when the channel is in state st.
func BaseOf(st ChannelState) Base {
	return Base{Arrivals: st.Broadcast.Arrivals, RedDots: st.Broadcast.RedDots, MaxSeq: st.Broadcast.MaxSeq,
		Floor: max(0, st.MinKeptSeq-1)}
}

// LateMsg is a broadcast message of a large channel that arrived below the channel's newest seq.
type LateMsg struct {
	Channel     ChannelKey
	Arrival     int64
	Seq         int64
	RedDot      bool
	ClientMsgNo string
	Timestamp   int64
}

// Derive returns a follower's conversation as per-member fan-out would have it now: row at its base,
// b the channel's broadcast state now, late the channel's late messages (any superset of those that
// arrived since the base; later ones than b are ignored). A row that does not follow is returned as is.
// The version of a row that changed since its base is at least b.Version.
func Derive(row Row, b Broadcast, late []LateMsg) Row {
	if !row.Follows || b.Arrivals <= row.Base.Arrivals {
		return row
	}
	floor := LateFloor(row)
	count := b.RedDots - row.Base.RedDots
	var top LateMsg
	for _, m := range late {
		if m.Arrival <= row.Base.Arrivals || m.Arrival > b.Arrivals {
			continue
		}
		if m.RedDot && m.Seq <= floor {
			count--
		}
		if m.Seq > top.Seq {
			top = m
		}
	}
	if b.MaxSeq > row.Base.MaxSeq {
		top = LateMsg{Seq: b.MaxSeq, ClientMsgNo: b.ClientMsgNo, Timestamp: b.Timestamp}
	}
	before := row
	switch {
	case row.Hidden: // the first message since the join creates the conversation
		row = Row{ConvKey: row.ConvKey, Follows: true, Base: row.Base, Version: row.Version}
	case row.Deleted && top.Seq <= row.DeletedAtSeq:
		return row // everything since is at or below the delete point
	case row.Deleted: // revival: unread restarts, read and delete points are kept
		row.Deleted, row.DeletedAtMS, row.Unread = false, 0, 0
	}
	row.Unread += count
	if top.Seq > row.LastMsgSeq {
		row.LastMsgSeq, row.LastClientMsgNo, row.Timestamp = top.Seq, top.ClientMsgNo, top.Timestamp
	}
	if row != before {
		row.Version = max(row.Version, b.Version)
	}
	return row
}

// DeriveRows replaces every follower among rows by its derived conversation, given the channels' state
// and late messages.
func DeriveRows(rows map[ConvKey]Row, channels map[ChannelKey]ChannelState, late map[ChannelKey][]LateMsg) {
	for k, r := range rows {
		rows[k] = DeriveFollower(r, channels, late)
	}
}

// PurgeFollowerTombstone returns what purging a follower's tombstone (row, as stored) leaves, given its
// channel's state now and late messages since the row's base: the row of a member who has just joined
// (hidden, at the channel's state now, read and delete points gone), the follower's equivalent of
// deleting a plain tombstone (contract §5); purged reports that. A stored tombstone that has revived
// since its base is no tombstone: it comes back as derived, at the channel's state now, the same
// answer, with purged false.
func PurgeFollowerTombstone(row Row, ch ChannelState, late []LateMsg) (out Row, purged bool) {
	out = Derive(row, ch.Broadcast, late)
	if out.Deleted {
		out, purged = Row{ConvKey: row.ConvKey, Follows: true, Hidden: true}, true
	}
	out.Base = BaseOf(ch)
	return out, purged
}

// LargeThresholds say when a channel fans out at read time: it becomes large when its stored membership
// reaches Enter members and stops being large when it falls below Leave (hysteresis: Leave <= Enter).
// Enter 0 turns the mode off: large channels go back to per-member rows the next time a batch reads
// their membership.
type LargeThresholds struct{ Enter, Leave int }

// LargeThresholdsOf is the default hysteresis for a threshold: leave below half of it.
func LargeThresholdsOf(members int) LargeThresholds {
	if members <= 0 {
		return LargeThresholds{}
	}
	return LargeThresholds{Enter: members, Leave: (members + 1) / 2}
}

// large reports whether a channel with n stored members that was large (or not) is large now.
func (t LargeThresholds) large(was bool, n int) bool {
	switch {
	case t.Enter <= 0:
		return false
	case was:
		return n >= t.Leave
	default:
		return n >= t.Enter
	}
}
