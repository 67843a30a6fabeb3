// Package refmodel is an in-memory reference implementation of the projection rules (contract §3), used
// only by tests as the oracle the real projector is compared with. It is written from the contract text,
// event by event, in the plainest code possible, and deliberately shares no rule code with
// internal/conversation (only the wire decoding and the storage key of §3.1).
//
// Versions are a clock and cannot be predicted; instead every row remembers the model's logical time of
// its last change (Row.ChangedAt), from which tests check the version properties of §3.6.
package refmodel

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/convsync/conversations/internal/conversation"
)

// Options configure a Model like the projector under test.
type Options struct {
	// Skip lists the channel types stored for nobody (default conversation.DefaultSkippedChannelTypes).
	Skip []uint8
	// Window is how many of a channel's newest messages recents keep (default
	// conversation.DefaultRecentsWindow, RECENTS_WINDOW).
	Window int
}

// Key names a conversation: one user's row for one channel (ChannelID is the peer for person chats).
type Key struct {
	UID         string
	ChannelID   string
	ChannelType uint8
}

// Row is the expected state of one conversation.
type Row struct {
	Key
	Unread          int64
	ReadedToMsgSeq  int64
	DeletedAtSeq    int64
	IsDeleted       bool
	LastMsgSeq      int64
	LastClientMsgNo string
	Timestamp       int64
	// ChangedAt is the model's logical time (Model.Now) of the row's last change.
	ChangedAt int64
}

// Msg is a stored message, as the recents window keeps it.
type Msg struct {
	Seq         int64
	MessageID   int64
	ClientMsgNo string
	FromUID     string
	// ChannelID is the channel as the sender addressed it (for person chats the recipient).
	ChannelID string
	Timestamp int64
	RedDot    uint8
	Setting   uint8
	Expire    uint32
	Payload   []byte
}

// ChanKey names where a channel's messages are stored (contract §3.1).
type ChanKey struct {
	Key  string
	Type uint8
}

// Counts says what the model did with the records it was given.
type Counts struct {
	Records, Bad, Messages, Duplicates, NotProjected, Memberships int
	// BelowWindow: messages more than the window behind their channel's newest applied seq, treated as
	// already applied (contract §4).
	BelowWindow int
}

// Model is the expected read model. It is not safe for concurrent use.
type Model struct {
	skip    map[uint8]bool
	window  int
	rows    map[Key]*Row
	msgs    map[ChanKey]map[int64]Msg // every applied message, never pruned
	newest  map[ChanKey]int64         // each channel's highest applied seq
	members map[ChanKey]map[string]bool
	now     int64
	counts  Counts
}

// New returns an empty model.
func New(opts Options) *Model {
	if opts.Skip == nil {
		opts.Skip = conversation.DefaultSkippedChannelTypes()
	}
	if opts.Window <= 0 {
		opts.Window = conversation.DefaultRecentsWindow
	}
	m := &Model{skip: map[uint8]bool{}, window: opts.Window, rows: map[Key]*Row{},
		msgs: map[ChanKey]map[int64]Msg{}, newest: map[ChanKey]int64{}, members: map[ChanKey]map[string]bool{}}
	for _, t := range opts.Skip {
		m.skip[t] = true
	}
	return m
}

// Apply applies one record value. A value that cannot be decoded is counted as bad, changes nothing and
// its *conversation.BadEventError is returned (the projector dead-letters it). Timestamps of 0 would
// need the record's time: streams given to the model must not use them.
func (m *Model) Apply(value []byte) error {
	m.counts.Records++
	ev, err := conversation.DecodeEvent(value, time.Unix(0, 0), 0)
	if err != nil {
		m.counts.Bad++
		return err
	}
	if ev.Membership != nil {
		m.membership(ev.Membership)
	} else {
		m.message(ev.Message)
	}
	return nil
}

// Counts returns what Apply did so far.
func (m *Model) Counts() Counts { return m.counts }

// Now is the model's logical time: it advances by one at every row change.
func (m *Model) Now() int64 { return m.now }

func (m *Model) membership(e *conversation.Membership) {
	m.counts.Memberships++
	ck := ChanKey{e.Channel.ID, e.Channel.Type}
	if m.members[ck] == nil {
		m.members[ck] = map[string]bool{}
	}
	for _, u := range e.UIDs {
		if e.Added {
			m.members[ck][u] = true
		} else {
			delete(m.members[ck], u)
		}
	}
}

func (m *Model) message(msg *conversation.Message) {
	m.counts.Messages++
	// §3.2: these are neither stored nor counted.
	if msg.Header.NoPersist == 1 || msg.Header.SyncOnce == 1 || m.skip[msg.ChannelType] {
		m.counts.NotProjected++
		return
	}
	// §3.1: where the message lives.
	ck := ChanKey{msg.ChannelID, msg.ChannelType}
	if msg.ChannelType == 1 {
		ck.Key = conversation.PersonKey(msg.FromUID, msg.ChannelID)
	}
	// §3.3: exactly once per (storage key, seq).
	if m.msgs[ck] == nil {
		m.msgs[ck] = map[int64]Msg{}
	}
	if _, seen := m.msgs[ck][msg.MessageSeq]; seen {
		m.counts.Duplicates++
		return
	}
	// §4: a message more than the window behind its channel's newest seq is treated as already applied.
	if msg.MessageSeq <= m.newest[ck]-int64(m.window) {
		m.counts.BelowWindow++
		return
	}
	m.newest[ck] = max(m.newest[ck], msg.MessageSeq)
	m.msgs[ck][msg.MessageSeq] = Msg{
		Seq: msg.MessageSeq, MessageID: msg.MessageID, ClientMsgNo: msg.ClientMsgNo, FromUID: msg.FromUID,
		ChannelID: msg.ChannelID, Timestamp: msg.Timestamp, RedDot: msg.Header.RedDot, Setting: msg.Setting,
		Expire: msg.Expire, Payload: msg.Payload,
	}

	// §3.4: who gets a row, and under which channel_id.
	type recipient struct{ uid, convID string }
	var rcpts []recipient
	switch {
	case msg.ChannelType == 1:
		rcpts = append(rcpts, recipient{msg.FromUID, msg.ChannelID})
		if msg.ChannelID != msg.FromUID {
			rcpts = append(rcpts, recipient{msg.ChannelID, msg.FromUID})
		}
	case msg.Subscribers != nil:
		seen := map[string]bool{}
		for _, u := range msg.Subscribers {
			if !seen[u] {
				seen[u] = true
				rcpts = append(rcpts, recipient{u, msg.ChannelID})
			}
		}
	default:
		for u := range m.members[ck] {
			rcpts = append(rcpts, recipient{u, msg.ChannelID})
		}
	}
	for _, r := range rcpts {
		m.deliver(Key{r.uid, r.convID, msg.ChannelType}, msg)
	}
}

// deliver is contract §3.4 for one recipient, followed line by line.
func (m *Model) deliver(k Key, msg *conversation.Message) {
	seq := msg.MessageSeq
	own := msg.FromUID == k.UID
	old, exists := m.rows[k]
	var r Row
	if exists {
		r = *old
	} else {
		r = Row{Key: k}
	}
	// "A message at or below deleted_at_seq changes nothing" (for a tombstone).
	if exists && r.IsDeleted && seq <= r.DeletedAtSeq {
		return
	}
	counts := msg.Header.RedDot == 1 && !own && seq > r.ReadedToMsgSeq && seq > r.DeletedAtSeq
	lastBefore := r.LastMsgSeq
	switch {
	case !exists:
		// "No row: create it (unread 1 if it counts, else 0; readed_to_msg_seq 0)."
		r.Unread = 0
		if counts {
			r.Unread = 1
		}
	case r.IsDeleted:
		// "Tombstone and seq > deleted_at_seq: revive it (unread 1 if it counts, else 0;
		// readed_to_msg_seq and deleted_at_seq kept)."
		r.IsDeleted = false
		r.Unread = 0
		if counts {
			r.Unread = 1
		}
	default:
		// "Row: unread += 1 if it counts."
		if counts {
			r.Unread++
		}
	}
	if own {
		// "readed_to_msg_seq = max(readed_to_msg_seq, seq), and unread becomes 0 when the message is at
		// least as new as the row's last_msg_seq."
		if seq > r.ReadedToMsgSeq {
			r.ReadedToMsgSeq = seq
		}
		if seq >= lastBefore {
			r.Unread = 0
		}
	}
	// "timestamp, last_msg_seq, last_client_msg_no take the message's values only if its seq is higher."
	if seq > r.LastMsgSeq {
		r.LastMsgSeq, r.LastClientMsgNo, r.Timestamp = seq, msg.ClientMsgNo, msg.Timestamp
	}
	m.store(r, !exists || r != *old)
}

// store saves r, and advances its change time when a field changed (§3.4's last line).
func (m *Model) store(r Row, changed bool) {
	if changed {
		m.now++
		r.ChangedAt = m.now
	}
	m.rows[r.Key] = &r
}

// SetUnread is POST /conversations/setUnread (§2.2): a live row gets the count, and unread 0 marks it read
// up to last_msg_seq; no row or a tombstone changes nothing. It reports whether the row changed (and so
// got a new version).
func (m *Model) SetUnread(uid, channelID string, channelType uint8, unread int64) bool {
	old, ok := m.rows[Key{uid, channelID, channelType}]
	if !ok || old.IsDeleted {
		return false
	}
	r := *old
	r.Unread = unread
	if unread == 0 {
		r.ReadedToMsgSeq = r.LastMsgSeq
	}
	changed := r != *old
	m.store(r, changed)
	return changed
}

// ClearUnread is POST /conversations/clearUnread: SetUnread with 0.
func (m *Model) ClearUnread(uid, channelID string, channelType uint8) bool {
	return m.SetUnread(uid, channelID, channelType, 0)
}

// Delete is POST /conversations/delete (§2.3, §3.5): a live row becomes a tombstone at its last_msg_seq.
// It reports whether the row changed.
func (m *Model) Delete(uid, channelID string, channelType uint8) bool {
	old, ok := m.rows[Key{uid, channelID, channelType}]
	if !ok || old.IsDeleted {
		return false
	}
	r := *old
	r.IsDeleted, r.DeletedAtSeq, r.Unread = true, r.LastMsgSeq, 0
	m.store(r, true)
	return true
}

// Rows returns every row, tombstones included, in primary-key order.
func (m *Model) Rows() []Row {
	out := make([]Row, 0, len(m.rows))
	for _, r := range m.rows {
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b Row) int { return cmpKey(a.Key, b.Key) })
	return out
}

// Row returns one conversation.
func (m *Model) Row(uid, channelID string, channelType uint8) (Row, bool) {
	r, ok := m.rows[Key{uid, channelID, channelType}]
	if !ok {
		return Row{}, false
	}
	return *r, true
}

// Channels returns the storage keys of every channel with at least one applied message, sorted.
func (m *Model) Channels() []ChanKey {
	out := make([]ChanKey, 0, len(m.msgs))
	for k, msgs := range m.msgs {
		if len(msgs) > 0 {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, cmpChanKey)
	return out
}

// Messages returns every applied message of a channel, ascending by seq.
func (m *Model) Messages(k ChanKey) []Msg {
	out := make([]Msg, 0, len(m.msgs[k]))
	for _, msg := range m.msgs[k] {
		out = append(out, msg)
	}
	slices.SortFunc(out, func(a, b Msg) int { return cmp.Compare(a.Seq, b.Seq) })
	return out
}

// Window returns the messages the recents window must hold, ascending: the applied messages among the
// channel's newest Window seqs (seqs above the highest applied seq minus Window). Contract §4 says "the
// newest messages"; when seqs are contiguous the two readings agree, and with gaps (a late message not
// yet arrived, a seq upstream never sent) the window is read as a range of seqs, which is what lets a
// store treat anything below it as already applied.
func (m *Model) Window(k ChanKey) []Msg {
	all := m.Messages(k)
	if len(all) == 0 {
		return nil
	}
	from := all[len(all)-1].Seq - int64(m.window)
	i, _ := slices.BinarySearchFunc(all, from+1, func(x Msg, seq int64) int { return cmp.Compare(x.Seq, seq) })
	return all[i:]
}

// WindowSize is the configured recents window.
func (m *Model) WindowSize() int { return m.window }

// MemberChannels returns every channel that got a membership event, sorted.
func (m *Model) MemberChannels() []ChanKey {
	out := make([]ChanKey, 0, len(m.members))
	for k := range m.members {
		out = append(out, k)
	}
	slices.SortFunc(out, cmpChanKey)
	return out
}

// Members returns a channel's membership as the events built it, sorted.
func (m *Model) Members(k ChanKey) []string {
	out := make([]string, 0, len(m.members[k]))
	for u := range m.members[k] {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

// StorageKey is where the conversation's messages live.
func (k Key) StorageKey() ChanKey {
	if k.ChannelType == 1 {
		return ChanKey{conversation.PersonKey(k.UID, k.ChannelID), 1}
	}
	return ChanKey{k.ChannelID, k.ChannelType}
}

// Recents is what sync returns as a conversation's recents (§2.1): window messages above the user's
// deleted_at_seq and the client's lastSeq, not above the row's last_msg_seq, newest first, at most count.
func (m *Model) Recents(r Row, lastSeq int64, count int) []Msg {
	var out []Msg
	win := m.Window(r.StorageKey())
	for i := len(win) - 1; i >= 0 && len(out) < count; i-- {
		s := win[i].Seq
		if s > r.DeletedAtSeq && s > lastSeq && s <= r.LastMsgSeq {
			out = append(out, win[i])
		}
	}
	return out
}

// Sync is the list a full sync returns for uid (§2.1), without recents: live rows, newest timestamp
// first, ties by channel_id then channel_type.
func (m *Model) Sync(uid string) []Row {
	var out []Row
	for _, r := range m.rows {
		if r.UID == uid && !r.IsDeleted {
			out = append(out, *r)
		}
	}
	slices.SortFunc(out, func(a, b Row) int {
		if c := cmp.Compare(b.Timestamp, a.Timestamp); c != 0 {
			return c
		}
		if c := strings.Compare(a.ChannelID, b.ChannelID); c != 0 {
			return c
		}
		return int(a.ChannelType) - int(b.ChannelType)
	})
	return out
}

// Users returns every uid that has at least one row, sorted.
func (m *Model) Users() []string {
	seen := map[string]bool{}
	var out []string
	for k := range m.rows {
		if !seen[k.UID] {
			seen[k.UID] = true
			out = append(out, k.UID)
		}
	}
	slices.Sort(out)
	return out
}

func cmpKey(a, b Key) int {
	if c := strings.Compare(a.UID, b.UID); c != 0 {
		return c
	}
	if c := strings.Compare(a.ChannelID, b.ChannelID); c != 0 {
		return c
	}
	return int(a.ChannelType) - int(b.ChannelType)
}

func cmpChanKey(a, b ChanKey) int {
	if c := strings.Compare(a.Key, b.Key); c != 0 {
		return c
	}
	return int(a.Type) - int(b.Type)
}
