package trafficgen

import (
	"fmt"
	"slices"
	"time"

	"github.com/convsync/conversations/internal/conversation"
)

// Decoded is a generated stream decoded, with the conversation-row updates each event implies: one per
// projected message and recipient, memberships as the stream builds them. It is what the benchmarks'
// raw-upsert baseline writes for the same stream.
type Decoded struct {
	Events []conversation.Event
	// Rows[i] are the logical row updates of Events[i] (none for a membership or a skipped message),
	// each with Unread 1 and the message's seq, client_msg_no and timestamp.
	Rows [][]conversation.Row
}

// Decode decodes records (as Generate makes them) with now as their arrival time.
func Decode(records []Record, now time.Time) (Decoded, error) {
	skip := conversation.DefaultSkipSet()
	members := map[conversation.ChannelKey][]string{}
	d := Decoded{Events: make([]conversation.Event, 0, len(records)), Rows: make([][]conversation.Row, 0, len(records))}
	for i, r := range records {
		e, err := conversation.DecodeEvent(r.Value, now, 1<<20)
		if err != nil {
			return Decoded{}, fmt.Errorf("record %d: %w", i, err)
		}
		var rows []conversation.Row
		if m := e.Membership; m != nil {
			cur := members[m.Key()]
			for _, u := range m.UIDs {
				if i := slices.Index(cur, u); m.Added && i < 0 {
					cur = append(cur, u)
				} else if !m.Added && i >= 0 {
					cur = slices.Delete(cur, i, i+1)
				}
			}
			members[m.Key()] = cur
		} else if m := e.Message; skip.Projected(m) {
			for _, uid := range conversation.Recipients(m, members[m.Key()]) {
				rows = append(rows, conversation.Row{ConvKey: conversation.ConvKeyFor(m, uid), Unread: 1,
					LastMsgSeq: m.MessageSeq, LastClientMsgNo: m.ClientMsgNo, Timestamp: m.Timestamp})
			}
		}
		d.Events, d.Rows = append(d.Events, e), append(d.Rows, rows)
	}
	return d, nil
}
