package conversation

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var recordTime = time.Unix(1700000000, 0)

func TestDecodeMessage(t *testing.T) {
	value := `{"type":"message.sent","message_id":122323343445,"client_msg_no":"c1","message_seq":17,
		"from_uid":"alice","channel_id":"g1","channel_type":2,"timestamp":1657611272,
		"header":{"no_persist":0,"red_dot":1,"sync_once":0},"setting":3,"expire":60,
		"payload":"eyJ0eXBlIjoxfQ==","subscribers":["alice","bob"],"message_idstr":"122323343445","extra":true}`
	e, err := DecodeEvent([]byte(value), recordTime, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	m := e.Message
	if m == nil || e.Membership != nil {
		t.Fatalf("want a message event, got %+v", e)
	}
	if m.MessageID != 122323343445 || m.ClientMsgNo != "c1" || m.MessageSeq != 17 || m.FromUID != "alice" ||
		m.ChannelID != "g1" || m.ChannelType != 2 || m.Timestamp != 1657611272 || m.Header != (Header{RedDot: 1}) ||
		m.Setting != 3 || m.Expire != 60 || string(m.Payload) != `{"type":1}` || len(m.Subscribers) != 2 {
		t.Errorf("decoded %+v", m)
	}
	if e.Key() != (ChannelKey{"g1", 2}) {
		t.Errorf("key = %+v", e.Key())
	}
}

func TestDecodeDefaults(t *testing.T) {
	t.Run("type absent is message.sent, timestamp 0 is the record's", func(t *testing.T) {
		e, err := DecodeEvent([]byte(`{"message_id":1,"message_seq":1,"from_uid":"a","channel_id":"b","channel_type":1,"timestamp":0}`), recordTime, 0)
		if err != nil {
			t.Fatal(err)
		}
		if e.Message.Timestamp != recordTime.Unix() {
			t.Errorf("timestamp = %d, want the record's %d", e.Message.Timestamp, recordTime.Unix())
		}
		if e.Message.Subscribers != nil || e.Message.Payload != nil {
			t.Errorf("absent subscribers/payload should stay nil: %+v", e.Message)
		}
		if want := PersonKey("a", "b"); e.Key().Key != want {
			t.Errorf("person key = %q, want %q", e.Key().Key, want)
		}
	})
	t.Run("membership added", func(t *testing.T) {
		e, err := DecodeEvent([]byte(`{"type":"channel.subscribers.added","channel_id":"g1","channel_type":2,"uids":["dave"]}`), recordTime, 0)
		if err != nil {
			t.Fatal(err)
		}
		if e.Membership == nil || !e.Membership.Added || e.Membership.UIDs[0] != "dave" || e.Key() != (ChannelKey{"g1", 2}) {
			t.Errorf("decoded %+v", e.Membership)
		}
	})
	t.Run("membership removed", func(t *testing.T) {
		e, err := DecodeEvent([]byte(`{"type":"channel.subscribers.removed","channel_id":"g1","channel_type":2,"uids":["bob"]}`), recordTime, 0)
		if err != nil || e.Membership.Added {
			t.Errorf("decoded %+v, %v", e.Membership, err)
		}
	})
}

func TestDecodeBadEvents(t *testing.T) {
	ok := `"message_id":1,"message_seq":2,"from_uid":"a","channel_id":"g1","channel_type":2`
	long := strings.Repeat("x", 65)
	tests := []struct {
		name, value, reason, field string
	}{
		{"not JSON", `{"message_id":`, ReasonInvalidJSON, ""},
		{"JSON array (a whole webhook body)", `[{` + ok + `}]`, ReasonInvalidJSON, ""},
		{"null", `null`, ReasonInvalidJSON, ""},
		{"unknown type", `{"type":"message.recalled",` + ok + `}`, ReasonUnknownType, "type"},
		{"missing message_seq", `{"message_id":1,"channel_id":"g1","channel_type":2}`, ReasonMissingField, "message_seq"},
		{"missing message_id", `{"message_seq":1,"channel_id":"g1","channel_type":2}`, ReasonMissingField, "message_id"},
		{"missing channel_id", `{"message_id":1,"message_seq":1,"channel_type":2}`, ReasonMissingField, "channel_id"},
		{"empty channel_id", `{"message_id":1,"message_seq":1,"channel_id":"","channel_type":2}`, ReasonMissingField, "channel_id"},
		{"missing channel_type", `{"message_id":1,"message_seq":1,"channel_id":"g1"}`, ReasonMissingField, "channel_type"},
		{"message_seq as string", `{"message_id":1,"message_seq":"2","channel_id":"g1","channel_type":2}`, ReasonWrongType, "message_seq"},
		{"channel_type as string", `{"message_id":1,"message_seq":2,"channel_id":"g1","channel_type":"2"}`, ReasonWrongType, "channel_type"},
		{"subscribers not an array", `{` + ok + `,"subscribers":"bob"}`, ReasonWrongType, "subscribers"},
		{"message_seq zero", `{"message_id":1,"message_seq":0,"channel_id":"g1","channel_type":2}`, ReasonInvalidValue, "message_seq"},
		{"message_id negative", `{"message_id":-1,"message_seq":1,"channel_id":"g1","channel_type":2}`, ReasonInvalidValue, "message_id"},
		{"channel_type 0", `{"message_id":1,"message_seq":1,"channel_id":"g1","channel_type":0}`, ReasonInvalidValue, "channel_type"},
		{"channel_type 256", `{"message_id":1,"message_seq":1,"channel_id":"g1","channel_type":256}`, ReasonInvalidValue, "channel_type"},
		{"payload not base64", `{` + ok + `,"payload":"***"}`, ReasonInvalidValue, "payload"},
		{"from_uid too long", `{"message_id":1,"message_seq":1,"from_uid":"` + long + `","channel_id":"g1","channel_type":2}`, ReasonInvalidValue, "from_uid"},
		{"person channel_id too long", `{"message_id":1,"message_seq":1,"from_uid":"a","channel_id":"` + long + `","channel_type":1}`, ReasonInvalidValue, "channel_id"},
		{"group channel_id too long", `{"message_id":1,"message_seq":1,"channel_id":"` + strings.Repeat("g", 129) + `","channel_type":2}`, ReasonInvalidValue, "channel_id"},
		{"person message without sender", `{"message_id":1,"message_seq":1,"channel_id":"b","channel_type":1}`, ReasonMissingField, "from_uid"},
		{"red_dot 2", `{` + ok + `,"header":{"red_dot":2}}`, ReasonInvalidValue, "header.red_dot"},
		{"setting 256", `{` + ok + `,"setting":256}`, ReasonInvalidValue, "setting"},
		{"negative timestamp", `{` + ok + `,"timestamp":-5}`, ReasonInvalidValue, "timestamp"},
		{"empty subscriber", `{` + ok + `,"subscribers":["a",""]}`, ReasonInvalidValue, "subscribers[1]"},
		{"membership without uids", `{"type":"channel.subscribers.added","channel_id":"g1","channel_type":2}`, ReasonMissingField, "uids"},
		{"channel_id with an invalid byte", `{"message_id":1,"message_seq":1,"channel_id":"g` + "\xff" + `1","channel_type":2}`, ReasonInvalidValue, "channel_id"},
		{"from_uid with a lone surrogate escape", `{"message_id":1,"message_seq":1,"from_uid":"a\udc00","channel_id":"g1","channel_type":2}`, ReasonInvalidValue, "from_uid"},
		{"from_uid with a high surrogate unpaired", `{"message_id":1,"message_seq":1,"from_uid":"a\ud800b","channel_id":"g1","channel_type":2}`, ReasonInvalidValue, "from_uid"},
		{"subscriber with a truncated sequence", `{` + ok + `,"subscribers":["a","b` + "\xe2\x82" + `"]}`, ReasonInvalidValue, "subscribers[1]"},
		{"client_msg_no with an invalid byte", `{` + ok + `,"client_msg_no":"n` + "\xc0" + `"}`, ReasonInvalidValue, "client_msg_no"},
		{"membership uid with an invalid byte", `{"type":"channel.subscribers.removed","channel_id":"g1","channel_type":2,"uids":["` + "\xfe" + `"]}`, ReasonInvalidValue, "uids[0]"},
		{"membership of a person channel", `{"type":"channel.subscribers.added","channel_id":"g1","channel_type":1,"uids":["a"]}`, ReasonInvalidValue, "channel_type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeEvent([]byte(tt.value), recordTime, 1<<20)
			var bad *BadEventError
			if !errors.As(err, &bad) {
				t.Fatalf("err = %v, want a *BadEventError", err)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(err, ErrInvalid) = false for %v", err)
			}
			if bad.Reason != tt.reason || bad.Field != tt.field {
				t.Errorf("reason, field = %q, %q, want %q, %q (%v)", bad.Reason, bad.Field, tt.reason, tt.field, err)
			}
		})
	}
	t.Run("valid UTF-8, escaped pairs and an escaped backslash before u are ids as sent", func(t *testing.T) {
		e, err := DecodeEvent([]byte(`{"message_id":1,"message_seq":1,"from_uid":"\ud83d\ude00é\\udc00","channel_id":"g\u00e91","channel_type":2,"subscribers":["b"]}`), recordTime, 0)
		if err != nil {
			t.Fatal(err)
		}
		if e.Message.FromUID != "😀é\\udc00" || e.Message.ChannelID != "gé1" {
			t.Errorf("from_uid %q, channel_id %q", e.Message.FromUID, e.Message.ChannelID)
		}
	})
	t.Run("over the size limit", func(t *testing.T) {
		_, err := DecodeEvent([]byte(`{`+ok+`,"payload":"`+strings.Repeat("A", 2000)+`"}`), recordTime, 1000)
		var bad *BadEventError
		if !errors.As(err, &bad) || bad.Reason != ReasonTooLarge {
			t.Errorf("err = %v, want too_large", err)
		}
	})
}
