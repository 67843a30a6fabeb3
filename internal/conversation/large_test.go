package conversation_test

import (
	"fmt"
	"testing"

	"github.com/convsync/conversations/internal/conversation"
)

// The differential test of large channels against per-member fan-out (refmodel) is in the store
// contract suite (internal/storetest), run through conversation.RunBatch by every store.

// TestDerive checks each rule of a follower's derived conversation (contract §5) against what
// per-member fan-out gives for the same messages.
func TestDerive(t *testing.T) {
	g := conversation.ChannelKey{Key: "g", Type: 2}
	base := conversation.Base{Arrivals: 10, RedDots: 8, MaxSeq: 20, Floor: 4}
	row := conversation.Row{ConvKey: conversation.ConvKey{UID: "u", ChannelID: "g", ChannelType: 2}, Unread: 2,
		ReadedToMsgSeq: 15, LastMsgSeq: 20, LastClientMsgNo: "c20", Timestamp: 120, Version: 5, Follows: true, Base: base}
	late := func(arrival, seq int64, redDot bool) conversation.LateMsg {
		return conversation.LateMsg{Channel: g, Arrival: arrival, Seq: seq, RedDot: redDot, ClientMsgNo: fmt.Sprint("c", seq), Timestamp: 100 + seq}
	}
	bc := func(arrivals, redDots, maxSeq int64) conversation.Broadcast {
		return conversation.Broadcast{Arrivals: arrivals, RedDots: redDots, MaxSeq: maxSeq, ClientMsgNo: fmt.Sprint("c", maxSeq),
			Timestamp: 100 + maxSeq, Version: 9}
	}
	deleted := row
	deleted.Deleted, deleted.DeletedAtSeq, deleted.Unread, deleted.DeletedAtMS = true, 20, 0, 77
	hidden := conversation.Row{ConvKey: row.ConvKey, Follows: true, Hidden: true, Version: 3, Base: base}
	tests := []struct {
		name   string
		row    conversation.Row
		b      conversation.Broadcast
		late   []conversation.LateMsg
		unread int64
		last   int64
		gone   bool // still a tombstone or hidden
	}{
		{"nothing arrived: the row as written", row, bc(10, 8, 20), nil, 2, 20, false},
		{"new red-dot messages count", row, bc(13, 11, 23), nil, 5, 23, false},
		{"messages without red dot do not", row, bc(13, 8, 23), nil, 2, 23, false},
		{"a late message above the read point counts, last_* stays", row, bc(11, 9, 20), []conversation.LateMsg{late(11, 17, true)}, 3, 20, false},
		{"a late message at or below the read point does not", row, bc(11, 9, 20), []conversation.LateMsg{late(11, 15, true)}, 2, 20, false},
		{"late messages from before the base are not this row's", row, bc(11, 9, 21), []conversation.LateMsg{late(9, 12, true)}, 3, 21, false},
		{"late messages newer than the state read are ignored", row, bc(11, 9, 21), []conversation.LateMsg{late(12, 12, true)}, 3, 21, false},
		{"a tombstone stays one for messages at or below its delete point", deleted, bc(11, 9, 20), []conversation.LateMsg{late(11, 18, true)}, 0, 20, true},
		{"a newer message revives it, counting only after the delete", deleted, bc(12, 10, 21), []conversation.LateMsg{late(11, 18, true)}, 1, 21, false},
		{"a joiner's conversation appears with the first message after the join", hidden, bc(12, 10, 22), nil, 2, 22, false},
		{"a joiner's late messages count and can be its last", hidden, bc(11, 9, 20), []conversation.LateMsg{late(11, 19, true)}, 1, 19, false},
		{"a joiner with nothing since stays hidden", hidden, bc(10, 8, 20), nil, 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := conversation.Derive(tt.row, tt.b, tt.late)
			if got.Unread != tt.unread || got.LastMsgSeq != tt.last || (got.Deleted || got.Hidden) != tt.gone {
				t.Fatalf("Derive = unread %d, last %d, deleted %v, hidden %v; want unread %d, last %d, gone %v",
					got.Unread, got.LastMsgSeq, got.Deleted, got.Hidden, tt.unread, tt.last, tt.gone)
			}
			if got.LastMsgSeq != 0 && got.LastClientMsgNo != fmt.Sprint("c", got.LastMsgSeq) {
				t.Errorf("last_client_msg_no %q for last seq %d", got.LastClientMsgNo, got.LastMsgSeq)
			}
			if got != tt.row && got.Version < tt.b.Version {
				t.Errorf("a changed conversation has version %d, below its channel's %d", got.Version, tt.b.Version)
			}
		})
	}
}
