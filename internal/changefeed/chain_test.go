package changefeed

import (
	"testing"

	"github.com/convsync/conversations/internal/conversation"
)

// Changes of one channel queued in any order merge into one chain; a gap keeps the pieces apart, in the
// order of their Before, so a reader applies the first and drops the channel at the gap.
func TestChainChannels(t *testing.T) {
	g, h := conversation.ChannelKey{Key: "g", Type: 2}, conversation.ChannelKey{Key: "h", Type: 2}
	b := func(n int64) conversation.Broadcast { return conversation.Broadcast{Arrivals: n, Version: 100 + n} }
	ch := func(k conversation.ChannelKey, from, to int64) conversation.ChannelChange {
		c := conversation.ChannelChange{Channel: k, Before: b(from), After: b(to)}
		c.Late = []conversation.LateMsg{{Channel: k, Arrival: to}}
		return c
	}
	got := chainChannels([]conversation.ChannelChange{ch(g, 1, 2), ch(h, 5, 6), ch(g, 0, 1), ch(g, 3, 4), ch(g, 2, 3), ch(h, 7, 8)})
	want := []struct {
		k               conversation.ChannelKey
		from, to, lates int64
	}{{g, 0, 4, 4}, {h, 5, 6, 1}, {h, 7, 8, 1}}
	if len(got) != len(want) {
		t.Fatalf("got %d changes %+v, want %d", len(got), got, len(want))
	}
	for i, w := range want {
		c := got[i]
		if c.Channel != w.k || c.Before != b(w.from) || c.After != b(w.to) || int64(len(c.Late)) != w.lates {
			t.Errorf("change %d: %+v, want %v %d..%d with %d late", i, c, w.k, w.from, w.to, w.lates)
		}
	}
}
