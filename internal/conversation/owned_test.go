package conversation

import (
	"reflect"
	"slices"
	"testing"
)

// TestOwnedByPartitionsRows: the rows two shards write from one routing, each keeping its own users'
// part (Routing.OwnedBy), are together exactly the rows one node writes, and the channel side is the
// same on both.
func TestOwnedByPartitionsRows(t *testing.T) {
	events := []Event{join("g", "a", "b", "c", "d"), gmsg("g", 1, "a"), gmsg("g", 2, "c"), pmsg("a", "d", 1),
		pmsg("d", "a", 2), gmsg("h", 1, "b", "a", "b", "c"), leave("g", "b"), gmsg("g", 3, "d")}
	st := BatchState{Channels: map[ChannelKey]ChannelState{}, Members: map[ChannelKey][]string{}}
	for _, large := range []LargeThresholds{{}, LargeThresholdsOf(3)} {
		r := RouteWith(events, st, RouteOptions{Window: 10, Large: large})
		whole := ApplyRouting(st, r, map[ConvKey]Row{}, nil)
		if len(whole.Rows) == 0 {
			t.Fatal("the routing writes no row: the test tests nothing")
		}
		low := func(uid string) bool { return uid < "c" }
		var got []Row
		for _, owns := range []func(string) bool{low, func(uid string) bool { return !low(uid) }} {
			part := r.OwnedBy(owns)
			if !reflect.DeepEqual(part.Messages, r.Messages) || !reflect.DeepEqual(part.Channels, r.Channels) ||
				!reflect.DeepEqual(part.MembersAdded, r.MembersAdded) || !reflect.DeepEqual(part.MembersRemoved, r.MembersRemoved) {
				t.Fatal("OwnedBy changed the channel side of the routing")
			}
			rows := ApplyRouting(st, part, map[ConvKey]Row{}, nil).Rows
			for _, row := range rows {
				if !owns(row.UID) {
					t.Fatalf("large=%v: a shard writes %v, a row of a user it does not own", large, row.ConvKey)
				}
			}
			got = append(got, rows...)
		}
		slices.SortFunc(got, func(a, b Row) int { return a.ConvKey.Compare(b.ConvKey) })
		if !reflect.DeepEqual(got, whole.Rows) {
			t.Fatalf("large=%v: the shards write %+v, one node %+v", large, got, whole.Rows)
		}
	}
}
