package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/convsync/conversations/internal/conversation"
)

// reference is the answer as encoding/json writes it, what appendSync must equal byte for byte.
func reference(t testing.TB, rows []conversation.Row, recents map[conversation.ChannelKey][]conversation.Message) []byte {
	items := make([]syncItem, len(rows))
	for i := range rows {
		items[i] = newSyncItem(&rows[i], recents[conversation.ChannelKeyOf(rows[i].UID, channelOf(&rows[i]))])
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(items); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func encodeFixture(n, msgs int, ids []string) ([]conversation.Row, map[conversation.ChannelKey][]conversation.Message) {
	var rows []conversation.Row
	recents := map[conversation.ChannelKey][]conversation.Message{}
	for i := range n {
		id := ids[i%len(ids)] + fmt.Sprint(i)
		row := conversation.Row{ConvKey: conversation.ConvKey{UID: "u1", ChannelID: id, ChannelType: 2}, Unread: int64(i),
			Timestamp: 1700000000 + int64(i), LastMsgSeq: int64(100 + i), LastClientMsgNo: ids[(i+1)%len(ids)],
			ReadedToMsgSeq: int64(i), Version: 1700000000000 + int64(i), Deleted: i%5 == 4}
		rows = append(rows, row)
		k := conversation.ChannelKeyOf(row.UID, channelOf(&row))
		for s := range msgs {
			recents[k] = append(recents[k], conversation.Message{MessageID: int64(1e12 + s), ClientMsgNo: ids[s%len(ids)],
				MessageSeq: row.LastMsgSeq - int64(s), FromUID: ids[(s+2)%len(ids)], ChannelID: id, ChannelType: 2,
				Timestamp: 1700000000, Header: conversation.Header{RedDot: uint8(s % 2)}, Setting: uint8(s), Expire: uint32(s),
				Payload: []byte(fmt.Sprintf(`{"type":1,"content":"hi %d"}`, s))})
		}
	}
	return rows, recents
}

func TestEncoderMatchesEncodingJSON(t *testing.T) {
	ids := []string{"alice", "g:1", `q"uote`, `back\slash`, "tab\there", "nl\n", "ünïcödé", "<html>&", "\u2028sep", "ctl\x01", ""}
	tests := []struct {
		name       string
		rows, msgs int
	}{{"empty", 0, 0}, {"no recents", 3, 0}, {"one", 1, 1}, {"many", 12, 4}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, recents := encodeFixture(tt.rows, tt.msgs, ids)
			want := reference(t, rows, recents)
			if got := appendSync(nil, rows, recents); !bytes.Equal(got, want) {
				t.Fatalf("appendSync:\n%s\nencoding/json:\n%s", got, want)
			}
			for _, ms := range recents { // encoded once, copied after
				for i := range ms {
					ms[i].Encoded = EncodeRecent(&ms[i])
				}
			}
			if got := appendSync(nil, rows, recents); !bytes.Equal(got, want) {
				t.Fatalf("with Encoded:\n%s\nencoding/json:\n%s", got, want)
			}
		})
	}
	if got := appendSync(nil, nil, nil); string(got) != "[]" {
		t.Errorf("no rows: %s, want []", got)
	}
}

// BenchmarkSyncEncoding: a peer-sized answer (3 conversations, msg_count 10) encoded by encoding/json as
// before, by hand, and by hand with each message's JSON encoded once.
func BenchmarkSyncEncoding(b *testing.B) {
	rows, recents := encodeFixture(3, 10, []string{"user1234", "group567"})
	b.Run("encoding_json", func(b *testing.B) {
		for b.Loop() {
			_ = reference(b, rows, recents)
		}
	})
	buf := make([]byte, 0, 64<<10)
	b.Run("by_hand", func(b *testing.B) {
		for b.Loop() {
			buf = appendSync(buf[:0], rows, recents)
		}
	})
	for _, ms := range recents {
		for i := range ms {
			ms[i].Encoded = EncodeRecent(&ms[i])
		}
	}
	b.Run("by_hand_encoded_once", func(b *testing.B) {
		for b.Loop() {
			buf = appendSync(buf[:0], rows, recents)
		}
	})
}
