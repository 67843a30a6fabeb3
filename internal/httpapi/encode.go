package httpapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strconv"

	"github.com/convsync/conversations/internal/conversation"
)

// The sync answer's encoder, by hand: encoding/json reflects over every field of every item and
// message, and sync answers are most of what the API does. The output is byte for byte what
// encoding/json writes for syncItem and recentMsg with HTML escaping off (the golden files pin it).
// A message's JSON is the same in every answer, so caches encode it once (EncodeRecent) and answers
// copy it.

// EncodeRecent returns m as sync's recents encode it (WuKongIM's message JSON), for
// conversation.Message.Encoded.
func EncodeRecent(m *conversation.Message) []byte { return appendRecent(nil, m) }

func appendRecent(b []byte, m *conversation.Message) []byte {
	if len(m.Encoded) > 0 {
		return append(b, m.Encoded...)
	}
	b = append(b, `{"header":{"no_persist":0,"red_dot":`...)
	b = strconv.AppendUint(b, uint64(m.Header.RedDot), 10)
	b = append(b, `,"sync_once":0},"setting":`...)
	b = strconv.AppendUint(b, uint64(m.Setting), 10)
	b = append(b, `,"message_id":`...)
	b = strconv.AppendInt(b, m.MessageID, 10)
	b = append(b, `,"message_idstr":"`...)
	b = strconv.AppendInt(b, m.MessageID, 10)
	b = append(b, `","client_msg_no":`...)
	b = appendString(b, m.ClientMsgNo)
	b = append(b, `,"message_seq":`...)
	b = strconv.AppendInt(b, m.MessageSeq, 10)
	b = append(b, `,"from_uid":`...)
	b = appendString(b, m.FromUID)
	b = append(b, `,"channel_id":`...)
	b = appendString(b, m.ChannelID)
	b = append(b, `,"channel_type":`...)
	b = strconv.AppendUint(b, uint64(m.ChannelType), 10)
	b = append(b, `,"expire":`...)
	b = strconv.AppendUint(b, uint64(m.Expire), 10)
	b = append(b, `,"timestamp":`...)
	b = strconv.AppendInt(b, m.Timestamp, 10)
	b = append(b, `,"payload":"`...)
	b = base64.StdEncoding.AppendEncode(b, m.Payload)
	return append(b, `"}`...)
}

// appendSync appends the answer: a bare array of rows, each with its recents; [] when empty.
func appendSync(b []byte, rows []conversation.Row, recents map[conversation.ChannelKey][]conversation.Message) []byte {
	b = append(b, '[')
	for i := range rows {
		if i > 0 {
			b = append(b, ',')
		}
		row := &rows[i]
		b = append(b, `{"channel_id":`...)
		b = appendString(b, row.ChannelID)
		b = append(b, `,"channel_type":`...)
		b = strconv.AppendUint(b, uint64(row.ChannelType), 10)
		b = append(b, `,"unread":`...)
		b = strconv.AppendInt(b, row.Unread, 10)
		b = append(b, `,"timestamp":`...)
		b = strconv.AppendInt(b, row.Timestamp, 10)
		b = append(b, `,"last_msg_seq":`...)
		b = strconv.AppendInt(b, row.LastMsgSeq, 10)
		b = append(b, `,"last_client_msg_no":`...)
		b = appendString(b, row.LastClientMsgNo)
		b = append(b, `,"offset_msg_seq":0,"readed_to_msg_seq":`...)
		b = strconv.AppendInt(b, row.ReadedToMsgSeq, 10)
		b = append(b, `,"version":`...)
		b = strconv.AppendInt(b, row.Version, 10)
		b = append(b, `,"recents":[`...)
		if recents != nil {
			msgs := recents[conversation.ChannelKeyOf(row.UID, channelOf(row))]
			for j := range msgs {
				if j > 0 {
					b = append(b, ',')
				}
				b = appendRecent(b, &msgs[j])
			}
		}
		b = append(b, ']')
		if row.Deleted {
			b = append(b, `,"is_deleted":1`...)
		}
		b = append(b, '}')
	}
	return append(b, ']')
}

// appendString appends s as a JSON string. Plain printable ASCII, what ids almost always are, is copied;
// anything else is encoded by encoding/json, so escapes are exactly its own.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return appendStringSlow(b, s)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func appendStringSlow(b []byte, s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
}
