package httpapi

import (
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/convsync/conversations/internal/conversation"
)

func TestParseLastMsgSeqs(t *testing.T) {
	e := func(id string, typ uint8, seq int64) lastMsgSeq {
		return lastMsgSeq{Channel: conversation.Channel{ID: id, Type: typ}, Seq: seq}
	}
	for _, tc := range []struct {
		name string
		in   string
		want []lastMsgSeq
	}{
		{"empty", "", nil},
		{"one group", "g1:2:15", []lastMsgSeq{e("g1", 2, 15)}},
		{"contract example", "g1:2:15|u2:1:7", []lastMsgSeq{e("g1", 2, 15), e("u2", 1, 7)}},
		{"channel id with colons is read from the right", "room:a:b:3:9", []lastMsgSeq{e("room:a:b", 3, 9)}},
		{"channel id that looks like an entry", "g1:2:15:2:16", []lastMsgSeq{e("g1:2:15", 2, 16)}},
		{"seq zero", "g1:2:0", []lastMsgSeq{e("g1", 2, 0)}},
		{"type 255 and max int64 seq", "x:255:9223372036854775807", []lastMsgSeq{e("x", 255, 9223372036854775807)}},
		{"trailing separator is skipped", "g1:2:15|", []lastMsgSeq{e("g1", 2, 15)}},
		{"empty entries are skipped", "|g1:2:1||u2:1:2|", []lastMsgSeq{e("g1", 2, 1), e("u2", 1, 2)}},
		{"unicode and spaces in the id", "组 1:2:3", []lastMsgSeq{e("组 1", 2, 3)}},
		{"leading zeros", "g:02:007", []lastMsgSeq{e("g", 2, 7)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseLastMsgSeqs(tc.in)
			if err != nil {
				t.Fatalf("parse %q: %v", tc.in, err)
			}
			if !reflect.DeepEqual(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
				t.Fatalf("parse %q = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

func TestParseLastMsgSeqsMalformed(t *testing.T) {
	for _, in := range []string{
		"g1", "g1:2", ":2:3", "g1:2:", "g1::3", "g1:0:3", "g1:256:3", "g1:-1:3", "g1:2:-1", "g1:2:+1",
		"g1:2:x", "g1:two:3", "g1:2:3 ", " g1:2:3x", "g1:2:3.0", "g1:2:9223372036854775808",
		"g1:2:3|bad", "ok:1:1|g1:2", strings.Repeat("a", conversation.MaxChannelIDLen+1) + ":2:3",
		strings.Repeat("a", conversation.MaxUIDLen+1) + ":1:3", // a person channel's id is a uid
	} {
		t.Run(in, func(t *testing.T) {
			_, err := parseLastMsgSeqs(in)
			var re *requestError
			if !errors.As(err, &re) || re.status != http.StatusBadRequest {
				t.Fatalf("parse %q: err %v, want a 400 request error", in, err)
			}
			if !strings.HasPrefix(re.msg, "last_msg_seqs: malformed entry ") {
				t.Fatalf("message %q does not name the field and entry", re.msg)
			}
			if len(re.msg) > 300 {
				t.Fatalf("message is %d bytes: long entries must be clipped", len(re.msg))
			}
		})
	}
}

// FuzzParseLastMsgSeqs: parsing never panics, fails only with a 400 naming last_msg_seqs, and what it
// accepts formats back into a string that parses to the same entries.
func FuzzParseLastMsgSeqs(f *testing.F) {
	for _, s := range []string{"", "g1:2:15|u2:1:7", "a:b:c:1:2", "|", "g1:2:", "x:255:9223372036854775807",
		"::1:1", "g:1:1|g:1:2", "\xff:1:1", strings.Repeat("g:1:1|", 50)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		entries, err := parseLastMsgSeqs(s)
		if err != nil {
			var re *requestError
			if !errors.As(err, &re) || re.status != http.StatusBadRequest || !strings.HasPrefix(re.msg, "last_msg_seqs: ") {
				t.Fatalf("parse %q: unexpected error %v", s, err)
			}
			return
		}
		for _, e := range entries {
			if e.Channel.ID == "" || e.Channel.Type == 0 || e.Seq < 0 || len(e.Channel.ID) > conversation.MaxChannelIDLen {
				t.Fatalf("parse %q accepted an invalid entry %+v", s, e)
			}
		}
		again, err := parseLastMsgSeqs(formatLastMsgSeqs(entries))
		if err != nil {
			t.Fatalf("format(parse(%q)) = %q does not parse: %v", s, formatLastMsgSeqs(entries), err)
		}
		if len(again) != len(entries) || (len(entries) > 0 && !reflect.DeepEqual(again, entries)) {
			t.Fatalf("round trip of %q: %+v, then %+v", s, entries, again)
		}
	})
}
