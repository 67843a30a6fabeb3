package trafficgen_test

import (
	"testing"
	"time"

	"github.com/convsync/conversations/internal/trafficgen"
)

// W3 is one 500-member group built by a membership event, then messages from one sender: each message
// implies a row update for every member (the sender's included, unread 1 as the baseline writes it),
// the membership event none.
func TestDecodeImpliesOneRowPerRecipient(t *testing.T) {
	recs, _, err := trafficgen.Generate(trafficgen.W3(20, 1))
	if err != nil {
		t.Fatal(err)
	}
	d, err := trafficgen.Decode(recs, time.Unix(1700000000, 0))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Events) != len(recs) || len(d.Rows) != len(recs) {
		t.Fatalf("%d events and %d row lists for %d records", len(d.Events), len(d.Rows), len(recs))
	}
	messages := 0
	for i, e := range d.Events {
		if e.Membership != nil {
			if len(d.Rows[i]) != 0 {
				t.Fatalf("membership event %d implies %d rows", i, len(d.Rows[i]))
			}
			continue
		}
		messages++
		if len(d.Rows[i]) != 500 {
			t.Fatalf("message %d implies %d rows, want one per member (500)", i, len(d.Rows[i]))
		}
		for _, r := range d.Rows[i] {
			if r.Unread != 1 || r.LastMsgSeq != e.Message.MessageSeq || r.ChannelID != e.Message.ChannelID {
				t.Fatalf("message %d: row %+v", i, r)
			}
		}
	}
	if messages != 20 {
		t.Fatalf("%d messages, want 20", messages)
	}
}
