package conversation

import (
	"reflect"
	"testing"
)

func TestUnneededLate(t *testing.T) {
	g := ChannelKey{Key: "g", Type: 2}
	m := LateMsg{Channel: g, Arrival: 2, Seq: 5, RedDot: true}
	follower := func(arrivals, readTo, last int64) Row {
		return Row{ConvKey: ConvKey{UID: "u", ChannelID: "g", ChannelType: 2}, Follows: true, ReadedToMsgSeq: readTo,
			LastMsgSeq: last, Base: Base{Arrivals: arrivals, MaxSeq: 10}}
	}
	tests := []struct {
		name           string
		followers      []Row
		newest, beyond int64
		unneeded       bool
	}{
		{"no follower based before it: unneeded", nil, 11, 0, true},
		{"a red-dot message at or below a follower's read point is needed to leave it out of unread",
			[]Row{follower(1, 6, 10)}, 11, 0, false},
		{"above every read point, with the channel's newest seq moved past the base: unneeded",
			[]Row{follower(1, 4, 10)}, 11, 0, true},
		{"the highest since a base still at the newest seq, above the row's last seq, is needed",
			[]Row{follower(1, 4, 3)}, 10, 0, false},
		{"not if a higher late message arrived after those examined", []Row{follower(1, 4, 3)}, 10, 7, true},
		{"not if the row's last seq is above it", []Row{follower(1, 4, 8)}, 10, 0, true},
		{"a hidden joiner's floor is its base's alone", []Row{{Follows: true, Hidden: true, ReadedToMsgSeq: 9,
			Base: Base{Arrivals: 1, MaxSeq: 10, Floor: 2}}}, 11, 0, true},
		{"a follower whose base includes it does not need it", []Row{follower(2, 6, 3)}, 10, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want []LateMsg
			if tt.unneeded {
				want = []LateMsg{m}
			}
			if got := UnneededLate([]LateMsg{m}, tt.followers, tt.newest, tt.beyond); !reflect.DeepEqual(got, want) {
				t.Errorf("UnneededLate = %v, want %v", got, want)
			}
		})
	}
}

func TestPurgeFollowerTombstone(t *testing.T) {
	k := ConvKey{UID: "u", ChannelID: "g", ChannelType: 2}
	ch := ChannelState{MinKeptSeq: 4, Broadcast: Broadcast{Arrivals: 12, RedDots: 10, MaxSeq: 30, ClientMsgNo: "c30", Timestamp: 130}}
	tomb := Row{ConvKey: k, Follows: true, Deleted: true, DeletedAtSeq: 20, LastMsgSeq: 20, DeletedAtMS: 5,
		Base: Base{Arrivals: 12, RedDots: 10, MaxSeq: 30}}
	got, purged := PurgeFollowerTombstone(tomb, ch, nil)
	if want := (Row{ConvKey: k, Follows: true, Hidden: true, Base: BaseOf(ch)}); !purged || got != want {
		t.Errorf("a tombstone nothing revived: %+v (purged %v), want a joiner's hidden row at the channel's state %+v", got, purged, want)
	}
	tomb.Base = Base{Arrivals: 11, RedDots: 9, MaxSeq: 20}
	got, purged = PurgeFollowerTombstone(tomb, ch, nil)
	if purged || got.Deleted || got.Unread != 1 || got.LastMsgSeq != 30 || got.Base != BaseOf(ch) {
		t.Errorf("a tombstone revived since its base: %+v (purged %v), want the derived row at the channel's state", got, purged)
	}
}
