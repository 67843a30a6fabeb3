package conversation

import "slices"

// The recents rule (contract §2.1), in one place: which messages of a channel's window a conversation's
// recents are, and when a cached stretch of the window can answer that exactly. The store, the recents
// cache and the tests all use these.

// RecentsRange is what a conversation's recents are: the newest msgCount messages of its channel's
// window with a seq above both the user's delete point and clientLastSeq (the client's last_msg_seqs
// entry, 0 when absent), and not above the row's last_msg_seq, so a user never sees what was deleted or
// what never reached them. msgCount counts messages: seqs that were never stored do not use it up.
func RecentsRange(row *Row, channel ChannelKey, clientLastSeq int64, msgCount int) SeqRange {
	return SeqRange{Channel: channel, After: max(row.DeletedAtSeq, clientLastSeq), UpTo: row.LastMsgSeq, Count: msgCount}
}

// Empty reports whether r asks for nothing at all.
func (r SeqRange) Empty() bool { return r.Count <= 0 || r.UpTo <= r.After }

// PickRecents returns r's recents out of msgs, every window message of r.Channel in some seq interval,
// newest first: the first r.Count of them with r.After < seq <= r.UpTo. The result shares msgs' backing
// array and must not be modified.
func PickRecents(msgs []Message, r SeqRange) []Message {
	if r.Empty() {
		return msgs[:0:0]
	}
	i := 0
	for i < len(msgs) && msgs[i].MessageSeq > r.UpTo {
		i++
	}
	j := i
	for j < len(msgs) && j-i < r.Count && msgs[j].MessageSeq > r.After {
		j++
	}
	return msgs[i:j:j]
}

// Stretch is every message the window of one channel holds with Lo <= seq <= Hi, newest first. Messages
// never change, so a stretch stays exact until the window gains a message inside it (a late one, out of
// seq order) or loses one (pruned): a WindowChange says which.
type Stretch struct {
	Lo, Hi int64
	Msgs   []Message
}

// StretchOf is the stretch that loading r gave msgs (r's recents, as the store answers them): it reaches
// down to the oldest message returned, or, when fewer than r.Count came back, to r.After+1, since the
// window holds nothing else in r.
func StretchOf(r SeqRange, msgs []Message) Stretch {
	s := Stretch{Lo: r.After + 1, Hi: r.UpTo, Msgs: msgs}
	if len(msgs) >= r.Count && len(msgs) > 0 {
		s.Lo = msgs[len(msgs)-1].MessageSeq
	}
	return s
}

// Answer returns r's recents and true when s holds all of them: r.UpTo is inside s and either r.Count
// messages of r are in s, or s reaches down past r.After. Otherwise it returns false.
func (s *Stretch) Answer(r SeqRange) ([]Message, bool) {
	if r.Empty() {
		return nil, true
	}
	if r.UpTo > s.Hi {
		return nil, false
	}
	picked := PickRecents(s.Msgs, r)
	if len(picked) == r.Count || s.Lo <= r.After+1 {
		return picked, true
	}
	return nil, false
}

// Apply returns s after w, a change of its channel's window, and false when s can no longer be trusted:
// a message was inserted inside it. A prune only removes messages, so s keeps the rest and stays exact
// over the same seqs. (It must not claim the seqs below the prune point: a late message between the
// watermark and Lo, ignored because it fell outside s, would then be missed.)
func (s Stretch) Apply(w WindowChange) (Stretch, bool) {
	if w.LateMin > 0 && w.LateMin <= s.Hi && w.LateMax >= s.Lo {
		return Stretch{}, false
	}
	if w.MinKept > 0 {
		i := len(s.Msgs)
		for i > 0 && s.Msgs[i-1].MessageSeq < w.MinKept {
			i--
		}
		s.Msgs = s.Msgs[:i:i]
	}
	return s, true
}

// WindowChange is what one commit did to a channel's window that a reader holding a Stretch of it could
// not learn from the rows alone: messages inserted at seqs at or below the channel's newest seq before
// the commit (late ones, LateMin..LateMax, 0 when none), and messages pruned below MinKept (0 when none).
// New messages above the channel's newest seq need no announcement: rows name them, and a stretch never
// reaches above a committed row's last_msg_seq.
type WindowChange struct {
	Channel          ChannelKey
	LateMin, LateMax int64
	MinKept          int64
}

// ChannelChange is what one commit (or a chain of commits, one after the other) did to a large
// channel's broadcast state (contract §5): the state before (Before; only Arrivals and Version are
// carried), the state after, and the broadcast messages that arrived late meanwhile, with arrival
// numbers in (Before.Arrivals, After.Arrivals]. A reader holding the channel's state at Before can move
// it to After and add Late; one holding another state cannot, since commits of a channel are ordered by
// its lock but their announcements may arrive in another order.
type ChannelChange struct {
	Channel ChannelKey
	Before  Broadcast
	After   Broadcast
	Late    []LateMsg
}

// Follows reports whether c starts where prev ends: the same channel state (arrivals and version).
func (c ChannelChange) Follows(prev Broadcast) bool {
	return c.Before.Arrivals == prev.Arrivals && c.Before.Version == prev.Version
}

// Changes is what a committed transaction changed that readers may hold in memory: each changed user's
// new version (contract §3.6), the windows that changed other than by growing at the top, and the large
// channels whose broadcast state moved.
type Changes struct {
	Versions map[string]int64
	Windows  []WindowChange
	Channels []ChannelChange
}

// Empty reports whether c announces nothing.
func (c Changes) Empty() bool {
	return len(c.Versions) == 0 && len(c.Windows) == 0 && len(c.Channels) == 0
}

// WindowChanges is what a routed batch does to its channels' windows that a Stretch cannot learn from
// rows: messages inserted at or below the newest seq of their channel as st found it (late ones), and
// prunes. Messages above it only grow the window at the top: no stretch reaches there, since stretches
// never reach above a committed row's last_msg_seq. Sorted by channel.
func WindowChanges(st BatchState, r Routing) []WindowChange {
	byChannel := map[ChannelKey]*WindowChange{}
	var order []ChannelKey
	get := func(k ChannelKey) *WindowChange {
		w := byChannel[k]
		if w == nil {
			w = &WindowChange{Channel: k}
			byChannel[k] = w
			order = append(order, k)
		}
		return w
	}
	for _, m := range r.Messages {
		k := m.Key()
		if m.MessageSeq > st.Channels[k].MaxSeq {
			continue
		}
		w := get(k)
		if w.LateMin == 0 || m.MessageSeq < w.LateMin {
			w.LateMin = m.MessageSeq
		}
		w.LateMax = max(w.LateMax, m.MessageSeq)
	}
	for _, u := range r.Channels {
		if u.Pruned {
			get(u.Key).MinKept = u.MinKeptSeq
		}
	}
	slices.SortFunc(order, ChannelKey.Compare)
	out := make([]WindowChange, len(order))
	for i, k := range order {
		out[i] = *byChannel[k]
	}
	return out
}
