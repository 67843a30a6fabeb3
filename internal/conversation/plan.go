package conversation

import (
	"slices"
	"strings"
	"time"
)

// A projector batch is decided here: RunBatch (batch.go) is its algorithm, the one place its steps are
// written, over the storage a BatchTx gives it. Between the reads it alternates pure decisions
// (contract §3):
//
//   - ScopeOf(events): which channels the batch locks, and whose stored membership it reads;
//     SeqsToCheck: which messages may have been applied before, to look up in the window.
//   - RouteWith(events, state, options): which messages apply, which are duplicates or below the
//     window, how membership evolves through the batch, who receives each message, how each channel's
//     newest seq, window and broadcast state move, which rows follow a large channel, and the net
//     membership change. Routing.RowKeys are the rows to read for update.
//   - ApplyRouting(state, routing, rows, late): each row's new value, all of a row's deliveries
//     coalesced into one write, followers derived first and rebased after, and the users whose
//     versions move (RowChanges.Stamp gives them their new versions).
//
// The inputs and outputs are plain values so that each rule can be table-tested without a database,
// and so that another way of delivering a channel's messages (read-time fan-out for large channels,
// contract §5) is a change to RouteWith's outputs, not to SQL loops.

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
	// Large is set while the channel fans out at read time (contract §5).
	Large bool
	// Members counts the stored membership.
	Members int64
	// Broadcast counts the messages delivered to the stored membership.
	Broadcast Broadcast
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
	// For a large channel it may hold only the members among NamedUIDs (Partial): a large channel's
	// broadcast messages need no membership list, only who of those acting is a member, and
	// ChannelState.Members counts the rest.
	Members map[ChannelKey][]string
	// Partial marks the channels whose Members holds only the named uids that are members.
	Partial map[ChannelKey]bool
}

// NamedUIDs returns, per channel, the uids the batch's events name: senders, inline subscribers and
// membership changes. Of a large channel's membership, a batch needs only theirs (BatchState.Partial).
func NamedUIDs(events []Event) map[ChannelKey][]string {
	sets := map[ChannelKey]map[string]bool{}
	add := func(k ChannelKey, u string) {
		if sets[k] == nil {
			sets[k] = map[string]bool{}
		}
		sets[k][u] = true
	}
	for _, e := range events {
		k := e.Key()
		if e.Membership != nil {
			for _, u := range e.Membership.UIDs {
				add(k, u)
			}
			continue
		}
		if e.Message.FromUID != "" {
			add(k, e.Message.FromUID)
		}
		for _, u := range e.Message.Subscribers {
			add(k, u)
		}
	}
	out := make(map[ChannelKey][]string, len(sets))
	for k, set := range sets {
		for u := range set {
			out[k] = append(out[k], u)
		}
		slices.Sort(out[k])
	}
	return out
}

// Delivery is one message's effect on one recipient's conversation.
type Delivery struct {
	Key ConvKey
	Msg *Message
}

// ChannelUpdate is a channel whose newest seq, broadcast state or mode moved in the batch, with its new
// watermark. Pruned is set when the watermark moved: the window's messages below MinKeptSeq are to be
// deleted. Arrived is set when broadcast messages arrived: the store then gives Broadcast.Version the
// channel's next version (StampChannels).
type ChannelUpdate struct {
	Key        ChannelKey
	MaxSeq     int64
	MinKeptSeq int64
	Pruned     bool
	Large      bool
	Members    int64
	Broadcast  Broadcast
	Arrived    bool
}

// Member is one user's membership of one channel.
type Member struct {
	Channel ChannelKey
	UID     string
}

// Routing is what RouteWith decided for a batch.
type Routing struct {
	// Result counts the applied, duplicate, below-window and membership events.
	Result BatchResult
	// Messages are the messages applied for the first time, in event order: they enter the window.
	Messages []*Message
	// Deliveries are the recipients' effects, in event order.
	Deliveries []Delivery
	// Follow says, for rows of large channels (contract §5) whose following the batch decides, whether
	// the row follows its channel after the batch: members who acted in the batch, and every member of
	// a channel that crossed the threshold.
	Follow map[ConvKey]bool
	// RowKeys are the deliveries' and Follow's conversation keys, sorted and unique: the rows to lock,
	// in order.
	RowKeys []ConvKey
	// Channels are the channels whose newest seq, broadcast state or mode moved, sorted.
	Channels []ChannelUpdate
	// Late are the broadcast messages of large channels that arrived below their channel's newest seq.
	Late []LateMsg
	// MembersAdded and MembersRemoved are the batch's net membership change, sorted.
	MembersAdded, MembersRemoved []Member
	// NeedMembers, when set, are channels read partially (BatchState.Partial) whose whole membership
	// the batch needs (they stop being large): nothing else is set; route again with them read whole.
	NeedMembers []ChannelKey
}

// RouteOptions configure RouteWith.
type RouteOptions struct {
	// Window is how many newest seqs a channel keeps.
	Window int64
	// Large says when a channel fans out at read time (zero: never).
	Large LargeThresholds
}

// RouteWith walks a batch's events in order (contract §3.3, §3.4, §4, §5): a membership change takes
// effect for the messages after it; a message already applied (before or earlier in the batch) is a
// duplicate; one below its channel's watermark is treated as already applied; every other message is
// applied once and delivered to its recipients. events must all be projected (SkipSet.Projected).
// RouteWith does not modify st.
//
// A channel that is large before and after the batch fans out at read time: its broadcast messages are
// delivered only to the members who act in the batch (send, receive an inline message, join, leave:
// NamedUIDs), whose rows are then written at the channel's state after the batch; the others derive
// theirs at sync (Derive). A channel that is small at either end of the batch fans out to every member
// for the whole batch, and a crossing rewrites every member's row once: following when it became large,
// plain when it became small. So the mode changes only between batches and no answer changes with it.
func RouteWith(events []Event, st BatchState, opts RouteOptions) Routing {
	return routeNamed(events, st, opts, NamedUIDs(events))
}

// routeNamed is RouteWith given NamedUIDs(events): the uids whose memberships of large channels were
// read are the uids those channels' messages are delivered to, so both come from that one call.
func routeNamed(events []Event, st BatchState, opts RouteOptions, named map[ChannelKey][]string) Routing {
	rt := newRouter(events, st, opts, named)
	if len(rt.r.NeedMembers) > 0 {
		return rt.r
	}
	for _, e := range events {
		rt.event(e)
	}
	rt.settleFollowing()
	rt.r.RowKeys = rowKeys(rt.r.Deliveries, rt.r.Follow)
	rt.r.Channels = channelUpdates(rt.moved, rt.arrived, opts.Window)
	for k, ms := range rt.members {
		rt.r.MembersAdded, rt.r.MembersRemoved = ms.diff(k, rt.r.MembersAdded, rt.r.MembersRemoved)
	}
	slices.SortFunc(rt.r.MembersAdded, Member.compare)
	slices.SortFunc(rt.r.MembersRemoved, Member.compare)
	return rt.r
}

// router is one routing of a batch in progress.
type router struct {
	st    BatchState
	opts  RouteOptions
	named map[ChannelKey][]string
	// members are the memberships the batch reads, as they evolve through it.
	members map[ChannelKey]*memberSet
	// endLarge and endCount are each such channel's mode and size after the batch.
	endLarge map[ChannelKey]bool
	endCount map[ChannelKey]int
	// seen are the messages applied so far; moved the channels' states so far, arrived those with
	// broadcast arrivals.
	seen    map[MessageKey]bool
	moved   map[ChannelKey]ChannelState
	arrived map[ChannelKey]bool
	r       Routing
}

// newRouter sets up the memberships and decides each channel's mode for the batch, from its membership
// at the end. A channel read partially that stops being large is left in r.NeedMembers.
func newRouter(events []Event, st BatchState, opts RouteOptions, named map[ChannelKey][]string) *router {
	rt := &router{st: st, opts: opts, named: named, members: map[ChannelKey]*memberSet{},
		endLarge: map[ChannelKey]bool{}, endCount: map[ChannelKey]int{}, seen: map[MessageKey]bool{},
		moved: map[ChannelKey]ChannelState{}, arrived: map[ChannelKey]bool{}, r: Routing{Follow: map[ConvKey]bool{}}}
	for _, e := range events {
		if k := e.Key(); needsMembers(e) && rt.members[k] == nil {
			rt.members[k] = newMemberSet(st.Members[k])
			if st.Partial[k] {
				rt.members[k].count = int(st.Channels[k].Members)
			}
		}
	}
	final := finalMembership(events)
	for k, ms := range rt.members {
		rt.endCount[k] = ms.countAfter(final[k])
		rt.endLarge[k] = opts.Large.large(st.Channels[k].Large, rt.endCount[k])
		if st.Partial[k] && !rt.endLarge[k] {
			rt.r.NeedMembers = append(rt.r.NeedMembers, k)
		}
	}
	slices.SortFunc(rt.r.NeedMembers, ChannelKey.Compare)
	return rt
}

// readTime reports whether channel k fans out at read time for the whole batch: large at both ends.
func (rt *router) readTime(k ChannelKey) bool {
	end, ok := rt.endLarge[k]
	return rt.st.Channels[k].Large && (!ok || end)
}

// event routes one event at its place in the batch's order.
func (rt *router) event(e Event) {
	k := e.Key()
	if e.Membership != nil {
		rt.members[k].change(e.Membership)
		rt.r.Result.Memberships++
		return
	}
	m := e.Message
	mk := MessageKey{k, m.MessageSeq}
	ch, ok := rt.moved[k]
	if !ok {
		ch = rt.st.Channels[k]
	}
	switch {
	case rt.seen[mk] || rt.st.Applied[mk]:
		rt.r.Result.Duplicates++
		return
	case m.MessageSeq < belowWindow(ch, rt.opts.Window):
		rt.r.Result.BelowWindow++
		return
	}
	rt.seen[mk] = true
	broadcast := m.ChannelType != ChannelTypePerson && m.Subscribers == nil
	if broadcast {
		b := &ch.Broadcast
		b.Arrivals++
		if m.Header.RedDot == 1 {
			b.RedDots++
		}
		if rt.readTime(k) && m.MessageSeq < ch.MaxSeq {
			rt.r.Late = append(rt.r.Late, LateMsg{Channel: k, Arrival: b.Arrivals, Seq: m.MessageSeq,
				RedDot: m.Header.RedDot == 1, ClientMsgNo: m.ClientMsgNo, Timestamp: m.Timestamp})
		}
		if m.MessageSeq > b.MaxSeq {
			b.MaxSeq, b.ClientMsgNo, b.Timestamp = m.MessageSeq, m.ClientMsgNo, m.Timestamp
		}
		rt.arrived[k] = true
	}
	ch.MaxSeq = max(ch.MaxSeq, m.MessageSeq)
	rt.moved[k] = ch
	rt.r.Messages = append(rt.r.Messages, m)
	rt.r.Result.Applied++
	switch ms := rt.members[k]; {
	case broadcast && rt.readTime(k):
		for _, uid := range rt.named[k] {
			if ms.current[uid] {
				rt.r.Deliveries = append(rt.r.Deliveries, Delivery{ConvKeyFor(m, uid), m})
			}
		}
	default:
		var stored []string
		if ms != nil {
			stored = ms.list()
		}
		for _, uid := range Recipients(m, stored) {
			rt.r.Deliveries = append(rt.r.Deliveries, Delivery{ConvKeyFor(m, uid), m})
		}
	}
}

// settleFollowing decides which rows follow their channel after the batch (Routing.Follow), and records
// each channel's new mode and member count.
func (rt *router) settleFollowing() {
	for k, ms := range rt.members {
		start, end := rt.st.Channels[k].Large, rt.endLarge[k]
		conv := func(uid string) ConvKey { return ConvKey{UID: uid, ChannelID: k.Key, ChannelType: k.Type} }
		switch {
		case start && end:
			for _, uid := range rt.named[k] {
				rt.r.Follow[conv(uid)] = ms.current[uid]
			}
		case end: // became large: every member follows from now on
			for uid := range ms.current {
				rt.r.Follow[conv(uid)] = true
			}
		case start: // became small: every follower gets its plain row
			for uid := range ms.initial {
				rt.r.Follow[conv(uid)] = false
			}
		}
		if start != end || rt.endCount[k] != ms.count {
			ch, ok := rt.moved[k]
			if !ok {
				ch = rt.st.Channels[k]
			}
			ch.Large, ch.Members = end, int64(rt.endCount[k])
			rt.moved[k] = ch
		}
	}
}

func rowKeys(ds []Delivery, follow map[ConvKey]bool) []ConvKey {
	seen := make(map[ConvKey]bool, len(ds)+len(follow))
	keys := make([]ConvKey, 0, len(ds)+len(follow))
	for _, d := range ds {
		if !seen[d.Key] {
			seen[d.Key] = true
			keys = append(keys, d.Key)
		}
	}
	for k := range follow {
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, ConvKey.Compare)
	return keys
}

// belowWindow is the lowest seq of a channel that still applies: the stored watermark, or the newest
// window seqs of what the batch applied so far, whichever is higher. Judging each message against the
// channel's newest seq at that point of the event order (contract §4), not against the watermark at the
// batch's start, makes the result independent of where batch boundaries fall: a message more than the
// window behind is treated as applied whether the newer one came in the same batch or an earlier one.
func belowWindow(ch ChannelState, window int64) int64 {
	return max(ch.MinKeptSeq, ch.MaxSeq-window+1)
}

// channelUpdates moves each changed channel's watermark so that its window keeps exactly the newest
// window seqs.
func channelUpdates(moved map[ChannelKey]ChannelState, arrived map[ChannelKey]bool, window int64) []ChannelUpdate {
	out := make([]ChannelUpdate, 0, len(moved))
	for k, st := range moved {
		u := ChannelUpdate{Key: k, MaxSeq: st.MaxSeq, MinKeptSeq: st.MinKeptSeq, Large: st.Large,
			Members: st.Members, Broadcast: st.Broadcast, Arrived: arrived[k]}
		if newMin := st.MaxSeq - window + 1; newMin > st.MinKeptSeq {
			u.MinKeptSeq, u.Pruned = newMin, true
		}
		out = append(out, u)
	}
	slices.SortFunc(out, func(a, b ChannelUpdate) int { return a.Key.Compare(b.Key) })
	return out
}

// StampChannels gives every channel that had broadcast arrivals its next version,
// max(nowMS, previous + 1).
func (r Routing) StampChannels(nowMS int64) {
	for i := range r.Channels {
		if u := &r.Channels[i]; u.Arrived {
			u.Broadcast.Version = max(nowMS, u.Broadcast.Version+1)
		}
	}
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
	// count is the membership's size before the batch (initial may hold only part of it: Partial).
	count int
}

func newMemberSet(stored []string) *memberSet {
	ms := &memberSet{count: len(stored), initial: make(map[string]bool, len(stored)), current: make(map[string]bool, len(stored))}
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

// finalMembership returns, per channel with membership events, each named uid's membership after
// all of them.
func finalMembership(events []Event) map[ChannelKey]map[string]bool {
	out := map[ChannelKey]map[string]bool{}
	for _, e := range events {
		if e.Membership == nil {
			continue
		}
		k := e.Key()
		if out[k] == nil {
			out[k] = map[string]bool{}
		}
		for _, u := range e.Membership.UIDs {
			out[k][u] = e.Membership.Added
		}
	}
	return out
}

// countAfter returns how many members the channel has once final (finalMembership) applied, without
// changing ms.
func (ms *memberSet) countAfter(final map[string]bool) int {
	n := ms.count
	for u, in := range final {
		switch {
		case in && !ms.current[u]:
			n++
		case !in && ms.current[u]:
			n--
		}
	}
	return n
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

// ApplyRouting returns the rows a routed batch changes. rows holds the existing rows among r.RowKeys as
// stored (followers at their base; ApplyRouting derives them first, with st's channel states and late,
// the late messages of their channels since their bases: rows is modified). Each delivery applies to
// its row in order (ApplyMessage), all of a row's deliveries ending in one value. Then r.Follow is
// settled: a row that follows its channel after the batch gets the channel's state after the batch as
// its base, one that stops following becomes a plain row, and a follower with no conversation is a
// hidden row. A row is returned when its fields changed or its following did; each is written once.
func ApplyRouting(st BatchState, r Routing, rows map[ConvKey]Row, late map[ChannelKey][]LateMsg) RowChanges {
	DeriveRows(rows, st.Channels, late)
	states := deliver(r, rows)
	ends := make(map[ChannelKey]ChannelState, len(r.Channels))
	for _, u := range r.Channels {
		ends[u.Key] = ChannelState{MaxSeq: u.MaxSeq, MinKeptSeq: u.MinKeptSeq, Large: u.Large, Broadcast: u.Broadcast}
	}
	var c RowChanges
	users := map[string]bool{}
	for k, s := range states {
		if !s.settle(k, rows, r.Follow, ends, st.Channels) {
			continue
		}
		c.Rows = append(c.Rows, s.row)
		if !users[k.UID] {
			users[k.UID] = true
			c.UIDs = append(c.UIDs, k.UID)
		}
	}
	slices.SortFunc(c.Rows, func(a, b Row) int { return a.ConvKey.Compare(b.ConvKey) })
	slices.Sort(c.UIDs)
	return c
}

// rowState is one row's value as a batch's deliveries change it.
type rowState struct {
	row             Row
	exists, changed bool
}

// deliver applies each of r's deliveries, in order, to its row (rows as stored, followers derived),
// and returns the state of every row r delivers to or settles the following of.
func deliver(r Routing, rows map[ConvKey]Row) map[ConvKey]*rowState {
	states := make(map[ConvKey]*rowState, len(rows))
	get := func(k ConvKey) *rowState {
		s := states[k]
		if s == nil {
			r, ok := rows[k]
			if !ok {
				r = Row{ConvKey: k}
			}
			s = &rowState{row: r, exists: ok && !r.Hidden}
			states[k] = s
		}
		return s
	}
	for _, d := range r.Deliveries {
		s := get(d.Key)
		var changed bool
		s.row, changed = ApplyMessage(s.row, s.exists, d.Msg)
		s.exists = true
		s.changed = s.changed || changed
	}
	for k := range r.Follow {
		get(k)
	}
	return states
}

// settle decides whether row k follows its channel after the batch (follow, else as it was stored in
// rows) and bases a follower at its channel's state after the batch (ends, else before it: channels).
// It reports whether the row is to be written: its fields or its following changed.
func (s *rowState) settle(k ConvKey, rows map[ConvKey]Row, follow map[ConvKey]bool, ends, channels map[ChannelKey]ChannelState) bool {
	start, had := rows[k]
	following := had && start.Follows
	follows := following
	if want, ok := follow[k]; ok {
		follows = want
	}
	if !s.exists {
		if (!had && !follows) || (had && follows == following) {
			return false // no conversation before or after, and nothing to record
		}
		s.row = Row{ConvKey: k, Hidden: true, Version: start.Version}
	}
	s.row.Follows, s.row.Base = follows, Base{}
	if follows {
		ck := ChannelKey{Key: k.ChannelID, Type: k.ChannelType}
		end, ok := ends[ck]
		if !ok {
			end = channels[ck]
		}
		s.row.Base = BaseOf(end)
	}
	return s.changed || follows != following
}

// Stamp gives every changed row its user's new version; all rows of one user share it (contract §3.6).
func (c RowChanges) Stamp(versions map[string]int64) {
	for i := range c.Rows {
		c.Rows[i].Version = versions[c.Rows[i].UID]
	}
}
