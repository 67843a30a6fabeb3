package conversation

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
)

// Event types on the wire. A record without "type" is a message.sent.
const (
	TypeMessageSent        = "message.sent"
	TypeSubscribersAdded   = "channel.subscribers.added"
	TypeSubscribersRemoved = "channel.subscribers.removed"
)

// Reasons a record is dead-lettered; they are the values of the DLQ reason header and metric label.
const (
	ReasonTooLarge     = "too_large"
	ReasonInvalidJSON  = "invalid_json"
	ReasonUnknownType  = "unknown_type"
	ReasonMissingField = "missing_field"
	ReasonWrongType    = "wrong_type"
	ReasonInvalidValue = "invalid_value"
)

// DeadLetterReasons lists every Reason constant: a new reason added above belongs here too, so that
// metrics export it from the start.
func DeadLetterReasons() []string {
	return []string{ReasonTooLarge, ReasonInvalidJSON, ReasonUnknownType, ReasonMissingField, ReasonWrongType, ReasonInvalidValue}
}

// BadEventError says why a record cannot be applied. It wraps ErrInvalid.
type BadEventError struct {
	Reason string // one of the Reason constants
	Field  string // the offending field, when there is one
	Detail string
}

func (e *BadEventError) Error() string {
	if e.Field == "" {
		return e.Reason + ": " + e.Detail
	}
	return fmt.Sprintf("%s: %s: %s", e.Reason, e.Field, e.Detail)
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *BadEventError) Unwrap() error { return ErrInvalid }

func bad(reason, field, format string, args ...any) error {
	return &BadEventError{Reason: reason, Field: field, Detail: fmt.Sprintf(format, args...)}
}

// wireEvent is the union of the JSON fields of every event type. Pointers tell absent from zero.
type wireEvent struct {
	Type        *string     `json:"type"`
	MessageID   *int64      `json:"message_id"`
	ClientMsgNo string      `json:"client_msg_no"`
	MessageSeq  *int64      `json:"message_seq"`
	FromUID     string      `json:"from_uid"`
	ChannelID   *string     `json:"channel_id"`
	ChannelType *int64      `json:"channel_type"`
	Timestamp   int64       `json:"timestamp"`
	Header      *wireHeader `json:"header"`
	Setting     int64       `json:"setting"`
	Expire      int64       `json:"expire"`
	Payload     *string     `json:"payload"`
	Subscribers []string    `json:"subscribers"`
	UIDs        []string    `json:"uids"`
}

type wireHeader struct {
	NoPersist int64 `json:"no_persist"`
	RedDot    int64 `json:"red_dot"`
	SyncOnce  int64 `json:"sync_once"`
}

// DecodeEvent parses and validates one record value (contract §1). recordTime stands in for a message
// timestamp of 0. maxBytes bounds the value's size (0: no bound). Any failure is a *BadEventError: the
// record can never be applied and belongs in the dead-letter topic.
func DecodeEvent(value []byte, recordTime time.Time, maxBytes int) (Event, error) {
	if maxBytes > 0 && len(value) > maxBytes {
		return Event{}, bad(ReasonTooLarge, "", "%d bytes, limit %d", len(value), maxBytes)
	}
	var w wireEvent
	if err := json.Unmarshal(value, &w); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return Event{}, bad(ReasonWrongType, typeErr.Field, "got JSON %s, want %s", typeErr.Value, typeErr.Type)
		}
		return Event{}, bad(ReasonInvalidJSON, "", "want one JSON object: %v", err)
	}
	if bytes.Equal(bytes.TrimSpace(value), []byte("null")) {
		return Event{}, bad(ReasonInvalidJSON, "", "want one JSON object, got null")
	}
	if field, err := CheckRawIDs(value, "channel_id", "from_uid", "subscribers", "uids", "client_msg_no"); err != nil {
		return Event{}, bad(ReasonInvalidValue, field, "%v", err)
	}
	typ := TypeMessageSent
	if w.Type != nil {
		typ = *w.Type
	}
	switch typ {
	case TypeMessageSent:
		m, err := w.message(recordTime)
		return Event{Message: m}, err
	case TypeSubscribersAdded, TypeSubscribersRemoved:
		e, err := w.membership(typ == TypeSubscribersAdded)
		return Event{Membership: e}, err
	default:
		return Event{}, bad(ReasonUnknownType, "type", "%q is not an event type", typ)
	}
}

func (w *wireEvent) channel() (Channel, error) {
	if w.ChannelID == nil || *w.ChannelID == "" {
		return Channel{}, bad(ReasonMissingField, "channel_id", "required")
	}
	if w.ChannelType == nil {
		return Channel{}, bad(ReasonMissingField, "channel_type", "required")
	}
	if !ValidChannelType(*w.ChannelType) {
		return Channel{}, bad(ReasonInvalidValue, "channel_type", "%d is outside 1..255", *w.ChannelType)
	}
	ch := Channel{ID: *w.ChannelID, Type: uint8(*w.ChannelType)}
	if err := CheckChannelID(ch.ID, ch.Type); err != nil {
		return Channel{}, bad(ReasonInvalidValue, "channel_id", "%v", err)
	}
	return ch, nil
}

func (w *wireEvent) message(recordTime time.Time) (*Message, error) {
	ch, err := w.channel()
	if err != nil {
		return nil, err
	}
	if w.MessageID == nil {
		return nil, bad(ReasonMissingField, "message_id", "required")
	}
	if w.MessageSeq == nil {
		return nil, bad(ReasonMissingField, "message_seq", "required")
	}
	m := &Message{
		MessageID:   *w.MessageID,
		ClientMsgNo: w.ClientMsgNo,
		MessageSeq:  *w.MessageSeq,
		FromUID:     w.FromUID,
		ChannelID:   ch.ID,
		ChannelType: ch.Type,
		Timestamp:   w.Timestamp,
	}
	switch {
	case m.MessageID <= 0:
		return nil, bad(ReasonInvalidValue, "message_id", "%d, want > 0", m.MessageID)
	case m.MessageSeq <= 0:
		return nil, bad(ReasonInvalidValue, "message_seq", "%d, want > 0", m.MessageSeq)
	case len(m.ClientMsgNo) > MaxClientMsgNoLen:
		return nil, bad(ReasonInvalidValue, "client_msg_no", "%d bytes, limit %d", len(m.ClientMsgNo), MaxClientMsgNoLen)
	case ch.Type == ChannelTypePerson && m.FromUID == "":
		return nil, bad(ReasonMissingField, "from_uid", "required for person channels (channel_type 1)")
	case m.FromUID != "" && CheckUID(m.FromUID) != nil: // empty: a system message
		return nil, bad(ReasonInvalidValue, "from_uid", "%v", CheckUID(m.FromUID))
	case m.Timestamp < 0:
		return nil, bad(ReasonInvalidValue, "timestamp", "%d, want >= 0", m.Timestamp)
	case w.Setting < 0 || w.Setting > math.MaxUint8:
		return nil, bad(ReasonInvalidValue, "setting", "%d is outside 0..255", w.Setting)
	case w.Expire < 0 || w.Expire > math.MaxUint32:
		return nil, bad(ReasonInvalidValue, "expire", "%d is outside 0..%d", w.Expire, uint32(math.MaxUint32))
	}
	if m.Timestamp == 0 {
		m.Timestamp = recordTime.Unix()
	}
	m.Setting, m.Expire = uint8(w.Setting), uint32(w.Expire)
	if w.Header != nil {
		for _, f := range []struct {
			name string
			v    int64
			dst  *uint8
		}{
			{"header.no_persist", w.Header.NoPersist, &m.Header.NoPersist},
			{"header.red_dot", w.Header.RedDot, &m.Header.RedDot},
			{"header.sync_once", w.Header.SyncOnce, &m.Header.SyncOnce},
		} {
			if f.v != 0 && f.v != 1 {
				return nil, bad(ReasonInvalidValue, f.name, "%d, want 0 or 1", f.v)
			}
			*f.dst = uint8(f.v)
		}
	}
	if w.Payload != nil {
		p, err := base64.StdEncoding.DecodeString(*w.Payload)
		if err != nil {
			return nil, bad(ReasonInvalidValue, "payload", "not standard base64: %v", err)
		}
		m.Payload = p
	}
	if w.Subscribers != nil {
		if err := checkUIDs("subscribers", w.Subscribers, true); err != nil {
			return nil, err
		}
		m.Subscribers = w.Subscribers
	}
	return m, nil
}

func (w *wireEvent) membership(added bool) (*Membership, error) {
	ch, err := w.channel()
	if err != nil {
		return nil, err
	}
	if ch.Type == ChannelTypePerson {
		return nil, bad(ReasonInvalidValue, "channel_type", "person channels (1) have no membership")
	}
	if len(w.UIDs) == 0 {
		return nil, bad(ReasonMissingField, "uids", "required, at least one uid")
	}
	if err := checkUIDs("uids", w.UIDs, false); err != nil {
		return nil, err
	}
	return &Membership{Channel: ch, UIDs: w.UIDs, Added: added}, nil
}

func checkUIDs(field string, uids []string, allowEmptyList bool) error {
	if len(uids) == 0 && !allowEmptyList {
		return bad(ReasonMissingField, field, "required")
	}
	for i, u := range uids {
		if err := CheckUID(u); err != nil {
			return bad(ReasonInvalidValue, fmt.Sprintf("%s[%d]", field, i), "%v", err)
		}
	}
	return nil
}
