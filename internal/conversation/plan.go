package conversation

import (
	"slices"
	"strings"
	"time"
)

// A projector batch is decided here and carried out by the store, in three steps that alternate
// between reading state under lock and pure decisions (contract §3):
//
//  1. ScopeOf(events): which channels the batch locks, and whose stored membership it reads.
//     The store locks the channels and loads their ChannelState; SeqsToCheck says which messages
//     may have been applied before, and the store looks those up in the window.
//  2. Route(events, state, window): which messages apply, which are duplicates or below the window,
//     how membership evolves through the batch, who receives each message, how each channel's
//     newest seq and window move, and the net membership change. The store then locks the rows
//     named by Routing.RowKeys.
//  3. ApplyDeliveries(deliveries, rows): each row's new value, all of a row's deliveries coalesced
//     into one write, and the users whose versions move. The store gives those users their next
//     versions (RowChanges.Stamp) and writes everything in one transaction.
//
// The inputs and outputs are plain values so that each rule can be table-tested without a database,
// and so that another way of delivering a channel's messages (read-time fan-out for large channels,
// contract §5) is a change to Route's outputs, not to SQL loops.

// BatchResult counts what a batch did with the events it was given.
type BatchResult struct {
	// Applied: messages applied for the first time.
	Applied int
	// Duplicates: (storage key, message_seq) already applied, so nothing changed.
	Duplicates int
	// BelowWindow: older than the channel's kept window; treated as already applied (contract §4).
	BelowWindow int
	// Skipped: no_persist, sync_once or a skipped channel type (contract §3.2); dropped before the
	// store by the caller (SkipSet.Projected), which counts them here.
	Skipped int
	// Memberships: membership events applied.
	Memberships int
	// RowsWritten: conversation rows inserted or updated (a row changed by many events counts once).
	RowsWritten int
	// CommitTime is how long the database took to commit the transaction (set by the store).
	CommitTime time.Duration
}

// MessageKey identifies one message of one channel.
type MessageKey struct {
	Channel ChannelKey
	Seq     int64
}

// ChannelState is what the read model keeps per channel: the newest applied seq, and the window's
// watermark, below which a message counts as already applied (contract §4).
type ChannelState struct {
	MaxSeq     int64
	MinKeptSeq int64
}

// BatchScope is what a batch touches, known from its events alone.
type BatchScope struct {
	// Channels is every channel of the batch, sorted and unique: the order they are locked in.
	Channels []ChannelKey
	// Members lists, sorted and unique, the channels whose stored membership the batch needs: those
	// with membership events, and group-like channels with messages that name no subscribers.
	Members []ChannelKey
}

// ScopeOf returns the scope of a batch. events must all be projected (SkipSet.Projected).
func ScopeOf(events []Event) BatchScope {
	var s BatchScope
	for _, e := range events {
		k := e.Key()
		s.Channels = append(s.Channels, k)
		if needsMembers(e) {
			s.Members = append(s.Members, k)
		}
	}
	slices.SortFunc(s.Channels, ChannelKey.Compare)
	slices.SortFunc(s.Members, ChannelKey.Compare)
	s.Channels = slices.Compact(s.Channels)
	s.Members = slices.Compact(s.Members)
	return s
}

// needsMembers reports whether an event reads or changes its channel's stored membership.
func needsMembers(e Event) bool {
	if e.Membership != nil {
		return true
	}
	return e.Message.ChannelType != ChannelTypePerson && e.Message.Subscribers == nil
}

// SeqsToCheck returns the messages that may have been applied before, so must be looked up in the
// window: only those at or below their channel's newest applied seq. The newest seq moves in the same
// transaction as every insert into the window, so in-order traffic needs no lookup at all.
func SeqsToCheck(events []Event, channels map[ChannelKey]ChannelState) []MessageKey {
	var out []MessageKey
	for _, e := range events {
		if m := e.Message; m != nil {
			k := m.Key()
			if m.MessageSeq <= channels[k].MaxSeq {
				out = append(out, MessageKey{k, m.MessageSeq})
			}
		}
	}
	return out
}

// BatchState is the state a batch reads, under its channels' locks, before routing.
type BatchState struct {
	// Channels holds the state of every channel of the scope (a missing one counts as new).
	Channels map[ChannelKey]ChannelState
	// Applied holds the messages of SeqsToCheck that are in the window.
	Applied map[MessageKey]bool
	// Members holds the stored membership of the scope's Members channels (a missing one has none).
	Members map[ChannelKey][]string
}

// Delivery is one message's effect on one recipient's conversation.
type Delivery struct {
	Key ConvKey
	Msg *Message
}

// ChannelUpdate is a channel whose newest seq moved in the batch, with its new watermark. Pruned is
// set when the watermark moved: the window's messages below MinKeptSeq are to be deleted.
type ChannelUpdate struct {
	Key        ChannelKey
	MaxSeq     int64
	MinKeptSeq int64
	Pruned     bool
}

// Member is one user's membership of one channel.
type Member struct {
	Channel ChannelKey
	UID     string
}

// Routing is what Route decided for a batch.
type Routing struct {
	// Result counts the applied, duplicate, below-window and membership events.
	Result BatchResult
	// Messages are the messages applied for the first time, in event order: they enter the window.
	Messages []*Message
	// Deliveries are the recipients' effects, in event order.
	Deliveries []Delivery
	// RowKeys are the deliveries' conversation keys, sorted and unique: the rows to lock, in order.
	RowKeys []ConvKey
	// Channels are the channels whose newest seq moved, sorted.
	Channels []ChannelUpdate
	// MembersAdded and MembersRemoved are the batch's net membership change, sorted.
	MembersAdded, MembersRemoved []Member
}

// Route walks a batch's events in order (contract §3.3, §3.4, §4): a membership change takes effect
// for the messages after it; a message already applied (before or earlier in the batch) is a
// duplicate; one below its channel's watermark is treated as already applied; every other message is
// applied once and delivered to its recipients. window is how many newest seqs a channel keeps.
// events must all be projected (SkipSet.Projected). Route does not modify st.
func Route(events []Event, st BatchState, window int64) Routing {
	var r Routing
	members := make(map[ChannelKey]*memberSet)
	seen := make(map[MessageKey]bool)
	moved := make(map[ChannelKey]ChannelState)
	for _, e := range events {
		k := e.Key()
		if needsMembers(e) && members[k] == nil {
			members[k] = newMemberSet(st.Members[k])
		}
		if e.Membership != nil {
			members[k].change(e.Membership)
			r.Result.Memberships++
			continue
		}
		m := e.Message
		mk := MessageKey{k, m.MessageSeq}
		ch, ok := moved[k]
		if !ok {
			ch = st.Channels[k]
		}
		switch {
		case seen[mk] || st.Applied[mk]:
			r.Result.Duplicates++
			continue
		case m.MessageSeq < ch.MinKeptSeq:
			r.Result.BelowWindow++
			continue
		}
		seen[mk] = true
		ch.MaxSeq = max(ch.MaxSeq, m.MessageSeq)
		moved[k] = ch
		r.Messages = append(r.Messages, m)
		r.Result.Applied++
		var stored []string
		if ms := members[k]; ms != nil {
			stored = ms.list()
		}
		for _, uid := range Recipients(m, stored) {
			r.Deliveries = append(r.Deliveries, Delivery{ConvKeyFor(m, uid), m})
		}
	}
	r.RowKeys = rowKeys(r.Deliveries)
	r.Channels = channelUpdates(moved, window)
	for k, ms := range members {
		r.MembersAdded, r.MembersRemoved = ms.diff(k, r.MembersAdded, r.MembersRemoved)
	}
	slices.SortFunc(r.MembersAdded, Member.compare)
	slices.SortFunc(r.MembersRemoved, Member.compare)
	return r
}

func rowKeys(ds []Delivery) []ConvKey {
	seen := make(map[ConvKey]bool, len(ds))
	keys := make([]ConvKey, 0, len(ds))
	for _, d := range ds {
		if !seen[d.Key] {
			seen[d.Key] = true
			keys = append(keys, d.Key)
		}
	}
	slices.SortFunc(keys, ConvKey.Compare)
	return keys
}

// channelUpdates moves each changed channel's watermark so that its window keeps exactly the newest
// window seqs.
func channelUpdates(moved map[ChannelKey]ChannelState, window int64) []ChannelUpdate {
	out := make([]ChannelUpdate, 0, len(moved))
	for k, st := range moved {
		u := ChannelUpdate{Key: k, MaxSeq: st.MaxSeq, MinKeptSeq: st.MinKeptSeq}
		if newMin := st.MaxSeq - window + 1; newMin > st.MinKeptSeq {
			u.MinKeptSeq, u.Pruned = newMin, true
		}
		out = append(out, u)
	}
	slices.SortFunc(out, func(a, b ChannelUpdate) int { return a.Key.Compare(b.Key) })
	return out
}

func (m Member) compare(o Member) int {
	if c := m.Channel.Compare(o.Channel); c != 0 {
		return c
	}
	return strings.Compare(m.UID, o.UID)
}

// memberSet is a channel's membership as it evolves through a batch. sorted caches the recipients list
// between changes, so a burst of messages into a large group does not rebuild it per message.
type memberSet struct {
	initial map[string]bool
	current map[string]bool
	sorted  []string
}

func newMemberSet(stored []string) *memberSet {
	ms := &memberSet{initial: make(map[string]bool, len(stored)), current: make(map[string]bool, len(stored))}
	for _, u := range stored {
		ms.initial[u], ms.current[u] = true, true
	}
	return ms
}

func (ms *memberSet) list() []string {
	if ms.sorted == nil {
		ms.sorted = make([]string, 0, len(ms.current))
		for u := range ms.current {
			ms.sorted = append(ms.sorted, u)
		}
		slices.Sort(ms.sorted)
	}
	return ms.sorted
}

func (ms *memberSet) change(e *Membership) {
	for _, uid := range e.UIDs {
		if ms.current[uid] != e.Added {
			ms.sorted = nil
		}
		if e.Added {
			ms.current[uid] = true
		} else {
			delete(ms.current, uid)
		}
	}
}

// diff appends the channel's net change over the batch to added and removed.
func (ms *memberSet) diff(k ChannelKey, added, removed []Member) ([]Member, []Member) {
	for u := range ms.current {
		if !ms.initial[u] {
			added = append(added, Member{k, u})
		}
	}
	for u := range ms.initial {
		if !ms.current[u] {
			removed = append(removed, Member{k, u})
		}
	}
	return added, removed
}

// RowChanges are the rows a batch changed, each with its new value.
type RowChanges struct {
	// Rows are the changed rows, sorted by key (the order they are written in), versions not yet set.
	Rows []Row
	// UIDs are the users of Rows, sorted and unique: each gets its next version (contract §3.6).
	UIDs []string
}

// ApplyDeliveries applies each delivery, in order, to its row (ApplyMessage) and returns the rows
// that changed. rows holds the existing rows among the deliveries' keys; a key without a row gets a
// new one. All deliveries to one row end in one value, so each row is written once per batch.
func ApplyDeliveries(deliveries []Delivery, rows map[ConvKey]Row) RowChanges {
	type state struct {
		row             Row
		exists, changed bool
	}
	states := make(map[ConvKey]*state, len(rows))
	for _, d := range deliveries {
		s := states[d.Key]
		if s == nil {
			r, ok := rows[d.Key]
			if !ok {
				r = Row{ConvKey: d.Key}
			}
			s = &state{row: r, exists: ok}
			states[d.Key] = s
		}
		var changed bool
		s.row, changed = ApplyMessage(s.row, s.exists, d.Msg)
		s.exists = true
		s.changed = s.changed || changed
	}
	var c RowChanges
	users := map[string]bool{}
	for _, s := range states {
		if s.changed {
			c.Rows = append(c.Rows, s.row)
			if !users[s.row.UID] {
				users[s.row.UID] = true
				c.UIDs = append(c.UIDs, s.row.UID)
			}
		}
	}
	slices.SortFunc(c.Rows, func(a, b Row) int { return a.ConvKey.Compare(b.ConvKey) })
	slices.Sort(c.UIDs)
	return c
}

// Stamp gives every changed row its user's new version; all rows of one user share it (contract §3.6).
func (c RowChanges) Stamp(versions map[string]int64) {
	for i := range c.Rows {
		c.Rows[i].Version = versions[c.Rows[i].UID]
	}
}
