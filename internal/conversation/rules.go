package conversation

// SkipSet holds the channel types whose messages are stored for nobody (contract §3.2).
type SkipSet [256]bool

// DefaultRecentsWindow is how many of a channel's newest message seqs are kept for recents unless
// configured otherwise (RECENTS_WINDOW).
const DefaultRecentsWindow = 200

// DefaultSkippedChannelTypes are the channel types skipped unless configured otherwise: info, data,
// temp and live (contract §3.2).
func DefaultSkippedChannelTypes() []uint8 { return []uint8{6, 7, 8, 9} }

// DefaultSkipSet is the SkipSet of DefaultSkippedChannelTypes.
func DefaultSkipSet() SkipSet { return NewSkipSet(DefaultSkippedChannelTypes()...) }

// NewSkipSet returns a SkipSet of the given channel types.
func NewSkipSet(types ...uint8) SkipSet {
	var s SkipSet
	for _, t := range types {
		s[t] = true
	}
	return s
}

// Projected reports whether a message has any effect at all (contract §3.2): no_persist and sync_once
// messages and channel types in the skip list are neither stored nor counted.
func (s *SkipSet) Projected(m *Message) bool {
	return m.Header.NoPersist != 1 && m.Header.SyncOnce != 1 && !s[m.ChannelType]
}

// Filter returns the events that have any effect: membership events, and the messages Projected
// accepts. skipped counts the messages dropped. events itself is returned, not copied, when nothing is
// dropped.
func (s *SkipSet) Filter(events []Event) (projected []Event, skipped int) {
	projected, _, skipped = FilterAlong[struct{}](s, events, nil)
	return projected, skipped
}

// FilterAlong is s.Filter for events that travel with a parallel slice (the records they were decoded
// from, say): along[i] is kept exactly when events[i] is. along may be nil. Neither slice is modified;
// both are returned as they are when nothing is dropped.
func FilterAlong[T any](s *SkipSet, events []Event, along []T) (projected []Event, kept []T, skipped int) {
	for i, e := range events {
		if e.Message != nil && !s.Projected(e.Message) {
			if projected == nil {
				projected = append(make([]Event, 0, len(events)-1), events[:i]...)
				if along != nil {
					kept = append(make([]T, 0, len(along)-1), along[:i]...)
				}
			}
			skipped++
			continue
		}
		if projected != nil {
			projected = append(projected, e)
			if along != nil {
				kept = append(kept, along[i])
			}
		}
	}
	if skipped == 0 {
		return events, along, 0
	}
	return projected, kept, skipped
}

// Recipients returns who gets a conversation row for m, without duplicates (contract §3.4): the two
// participants of a person channel, else the message's own subscribers, else the stored members.
func Recipients(m *Message, members []string) []string {
	switch {
	case m.ChannelType == ChannelTypePerson:
		if m.FromUID == m.ChannelID {
			return []string{m.FromUID}
		}
		return []string{m.FromUID, m.ChannelID}
	case m.Subscribers != nil:
		return dedupe(m.Subscribers)
	default:
		return members
	}
}

func dedupe(uids []string) []string {
	seen := make(map[string]struct{}, len(uids))
	out := uids[:0:0]
	for _, u := range uids {
		if _, ok := seen[u]; !ok {
			seen[u] = struct{}{}
			out = append(out, u)
		}
	}
	return out
}

// ConvKeyFor returns the key of recipient uid's conversation for m: for person channels the
// conversation's channel_id is the peer.
func ConvKeyFor(m *Message, uid string) ConvKey {
	id := m.ChannelID
	if m.ChannelType == ChannelTypePerson && uid == m.ChannelID {
		id = m.FromUID
	}
	return ConvKey{UID: uid, ChannelID: id, ChannelType: m.ChannelType}
}

// ApplyMessage applies message m, seen for the first time, to recipient row (contract §3.4 and §3.5). exists
// is false when the user has no row yet; row.ConvKey must be set either way. It returns the new row and
// whether any field changed; the caller gives a changed row the user's next version. ApplyMessage must
// not be called twice for one (storage key, message_seq): exactly-once is the caller's duty.
func ApplyMessage(row Row, exists bool, m *Message) (Row, bool) {
	if !exists {
		row = Row{ConvKey: row.ConvKey}
	} else if row.Deleted && m.MessageSeq <= row.DeletedAtSeq {
		return row, false // at or below the delete point: the user deleted it already
	}
	before := row
	uid := row.UID
	if row.Deleted { // revival: readed_to_msg_seq and deleted_at_seq are kept, unread restarts at 0
		row.Deleted, row.DeletedAtMS, row.Unread = false, 0, 0
	}
	own := m.FromUID == uid
	if !own && m.Header.RedDot == 1 && m.MessageSeq > row.ReadedToMsgSeq && m.MessageSeq > row.DeletedAtSeq {
		row.Unread++
	}
	if own {
		row.ReadedToMsgSeq = max(row.ReadedToMsgSeq, m.MessageSeq)
		if m.MessageSeq >= before.LastMsgSeq {
			row.Unread = 0
		}
	}
	if m.MessageSeq > row.LastMsgSeq {
		row.LastMsgSeq, row.LastClientMsgNo, row.Timestamp = m.MessageSeq, m.ClientMsgNo, m.Timestamp
	}
	return row, !exists || row != before
}

// SetUnread sets a live row's unread count (contract §2.2); unread 0 also marks everything read. A
// tombstone does not change. It reports whether any field changed.
func SetUnread(row Row, unread int64) (Row, bool) {
	if row.Deleted {
		return row, false
	}
	before := row
	row.Unread = unread
	if unread == 0 {
		row.ReadedToMsgSeq = max(row.ReadedToMsgSeq, row.LastMsgSeq)
	}
	return row, row != before
}

// Delete turns a live row into a tombstone (contract §3.5) at time nowMS. A tombstone does not change.
func Delete(row Row, nowMS int64) (Row, bool) {
	if row.Deleted {
		return row, false
	}
	row.Deleted, row.DeletedAtSeq, row.Unread, row.DeletedAtMS = true, row.LastMsgSeq, 0, nowMS
	return row, true
}
