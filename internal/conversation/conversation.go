// Package conversation is the domain of the service: the events that come in, the conversation rows that
// the read model keeps, and the projection rules of contract §3 as pure functions. It knows nothing of
// Kafka, MySQL or HTTP.
package conversation

import (
	"cmp"
	"errors"
	"hash/crc32"
	"strings"
)

// Channel types that the rules treat specially. Any value 1..255 is a valid channel type.
const (
	ChannelTypePerson uint8 = 1
	ChannelTypeGroup  uint8 = 2
)

// Size limits, in bytes. They match the column widths in migrations/, so a value that passes validation
// always fits its column.
const (
	MaxUIDLen         = 64
	MaxChannelIDLen   = 128
	MaxClientMsgNoLen = 128
	// MaxStorageKeyLen fits a person channel's "a@b" key and any group channel id.
	MaxStorageKeyLen = 2*MaxUIDLen + 1
)

// Sentinel errors. Callers match them with errors.Is.
var (
	// ErrInvalid marks input that breaks the contract (an event or a request); it is never retried.
	ErrInvalid = errors.New("invalid input")
	// ErrNotFound: the conversation does not exist (API mutations answer 200 and change nothing).
	ErrNotFound = errors.New("conversation not found")
	// ErrUnavailable: the store cannot be reached; the caller may retry later.
	ErrUnavailable = errors.New("store unavailable")
	// ErrConflict: a transaction lost a deadlock or lock wait; retrying the whole transaction is safe.
	ErrConflict = errors.New("transaction conflict")
)

// Channel identifies a channel as the API and events name it.
type Channel struct {
	ID   string
	Type uint8
}

// ChannelKey identifies where a channel's messages are stored: its storage key (contract §3.1) and type.
type ChannelKey struct {
	Key  string
	Type uint8
}

// Compare orders channel keys like the channels table's primary key; batches lock rows in this order.
func (k ChannelKey) Compare(o ChannelKey) int {
	if c := strings.Compare(k.Key, o.Key); c != 0 {
		return c
	}
	return cmp.Compare(k.Type, o.Type)
}

// ConvKey identifies one user's conversation with one channel (channel_id is the peer for person channels).
type ConvKey struct {
	UID         string
	ChannelID   string
	ChannelType uint8
}

// Compare orders conversation keys like the table's primary key, so batches lock rows in one fixed order.
func (k ConvKey) Compare(o ConvKey) int {
	if c := strings.Compare(k.UID, o.UID); c != 0 {
		return c
	}
	if c := strings.Compare(k.ChannelID, o.ChannelID); c != 0 {
		return c
	}
	return cmp.Compare(k.ChannelType, o.ChannelType)
}

// Row is one user's conversation: what sync returns, and what the rules read and write.
type Row struct {
	ConvKey
	Unread          int64
	ReadedToMsgSeq  int64
	DeletedAtSeq    int64
	Deleted         bool
	LastMsgSeq      int64
	LastClientMsgNo string
	Timestamp       int64
	Version         int64
	// DeletedAtMS is when the row became a tombstone (unix ms), for purging old tombstones.
	DeletedAtMS int64
	// Follows marks a member of a large channel (contract §5): the row is the member's state at Base,
	// and Derive gives the conversation now. Hidden marks a row that is no conversation (yet): a member
	// who joined and has received nothing since, or a former one. Sync never shows a hidden row.
	Follows, Hidden bool
	Base            Base
}

// Header is WuKongIM's message header. Each flag is 0 or 1.
type Header struct {
	NoPersist uint8 `json:"no_persist"`
	RedDot    uint8 `json:"red_dot"`
	SyncOnce  uint8 `json:"sync_once"`
}

// Message is a message.sent event (contract §1.1), validated.
type Message struct {
	MessageID   int64
	ClientMsgNo string
	MessageSeq  int64
	FromUID     string
	// ChannelID is the channel as the sender addressed it: for person channels the recipient's uid.
	ChannelID   string
	ChannelType uint8
	Timestamp   int64
	Header      Header
	Setting     uint8
	Expire      uint32
	Payload     []byte
	// Subscribers, when non-nil, are the only recipients of this message (group-like channels).
	Subscribers []string
	// Encoded, when set, is the message as sync's recents put it on the wire, encoded once by whoever
	// keeps the message in memory (the recents cache) so that each answer only copies it. Messages never
	// change, so neither does it. Empty for messages fresh from the store or an event.
	Encoded []byte
}

// Key returns where the message is stored.
func (m *Message) Key() ChannelKey {
	if m.ChannelType == ChannelTypePerson {
		return ChannelKey{Key: PersonKey(m.FromUID, m.ChannelID), Type: m.ChannelType}
	}
	return ChannelKey{Key: m.ChannelID, Type: m.ChannelType}
}

// Membership is a channel.subscribers.added or .removed event (contract §1.2), validated.
type Membership struct {
	Channel Channel
	UIDs    []string
	Added   bool
}

// Key returns the storage key of the channel whose membership changes.
func (e *Membership) Key() ChannelKey { return ChannelKey{Key: e.Channel.ID, Type: e.Channel.Type} }

// Event is one decoded record of the events topic: exactly one of Message and Membership is set.
type Event struct {
	Message    *Message
	Membership *Membership
}

// Key returns the storage key of the event's channel: the record key producers should use.
func (e Event) Key() ChannelKey {
	if e.Message != nil {
		return e.Message.Key()
	}
	return e.Membership.Key()
}

// PersonKey is the storage key of the person channel between a and b (contract §3.1): WuKongIM's fake
// channel id, the uid with the larger CRC32-IEEE checksum first, ties broken by the larger uid first, so
// both directions of a chat share one key and one message_seq sequence.
func PersonKey(a, b string) string {
	ca, cb := crc32.ChecksumIEEE([]byte(a)), crc32.ChecksumIEEE([]byte(b))
	if ca < cb || (ca == cb && a < b) {
		a, b = b, a
	}
	return a + "@" + b
}

// ChannelKeyOf returns the storage key of the channel that user uid sees as ch.
func ChannelKeyOf(uid string, ch Channel) ChannelKey {
	if ch.Type == ChannelTypePerson {
		return ChannelKey{Key: PersonKey(uid, ch.ID), Type: ch.Type}
	}
	return ChannelKey{Key: ch.ID, Type: ch.Type}
}

// SeqRange asks for the window's messages of one channel with After < message_seq <= UpTo, at most Count
// of them, newest first: a conversation's recents (contract §2.1).
type SeqRange struct {
	Channel ChannelKey
	After   int64
	UpTo    int64
	Count   int
}
