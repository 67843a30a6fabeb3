package conversation

import (
	"fmt"
	"reflect"
	"testing"
)

func gmsg(ch string, seq int64, from string, subs ...string) Event {
	return Event{Message: &Message{MessageID: seq, MessageSeq: seq, FromUID: from, ChannelID: ch, ChannelType: 2,
		ClientMsgNo: fmt.Sprintf("c%d", seq), Timestamp: 100 + seq, Header: Header{RedDot: 1}, Subscribers: subs}}
}

func pmsg(from, to string, seq int64) Event {
	return Event{Message: &Message{MessageID: seq, MessageSeq: seq, FromUID: from, ChannelID: to, ChannelType: 1,
		Header: Header{RedDot: 1}}}
}

func join(ch string, uids ...string) Event {
	return Event{Membership: &Membership{Channel: Channel{ID: ch, Type: 2}, UIDs: uids, Added: true}}
}

func leave(ch string, uids ...string) Event {
	return Event{Membership: &Membership{Channel: Channel{ID: ch, Type: 2}, UIDs: uids}}
}

func gkey(ch string) ChannelKey { return ChannelKey{Key: ch, Type: 2} }

func TestScopeOf(t *testing.T) {
	tests := []struct {
		name   string
		events []Event
		want   BatchScope
	}{
		{"empty batch touches nothing", nil, BatchScope{}},
		{"channels sorted and unique, lock order",
			[]Event{gmsg("g2", 1, "a", "a"), gmsg("g1", 1, "a", "a"), gmsg("g2", 2, "a", "a")},
			BatchScope{Channels: []ChannelKey{gkey("g1"), gkey("g2")}}},
		{"a group message without subscribers reads the stored membership",
			[]Event{gmsg("g1", 1, "a")}, BatchScope{Channels: []ChannelKey{gkey("g1")}, Members: []ChannelKey{gkey("g1")}}},
		{"a membership event reads and changes it",
			[]Event{join("g1", "a")}, BatchScope{Channels: []ChannelKey{gkey("g1")}, Members: []ChannelKey{gkey("g1")}}},
		{"a person message needs no membership; its channel is the pair's storage key",
			[]Event{pmsg("alice", "bob", 1)}, BatchScope{Channels: []ChannelKey{{Key: PersonKey("alice", "bob"), Type: 1}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ScopeOf(tt.events); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ScopeOf = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestSeqsToCheck(t *testing.T) {
	events := []Event{gmsg("g1", 4, "a", "a"), gmsg("g1", 5, "a", "a"), gmsg("g1", 6, "a", "a"), join("g1", "b"), gmsg("g2", 1, "a", "a")}
	got := SeqsToCheck(events, map[ChannelKey]ChannelState{gkey("g1"): {MaxSeq: 5}})
	want := []MessageKey{{gkey("g1"), 4}, {gkey("g1"), 5}} // 6 is newer than anything applied; g2 is new
	if !reflect.DeepEqual(got, want) {
		t.Errorf("SeqsToCheck = %v, want %v: only seqs at or below the channel's newest applied one", got, want)
	}
}

// routed is a Routing in a form that reads well in a table.
type routed struct {
	Result         BatchResult
	Messages       []string // "channel:seq"
	Deliveries     []string // "uid/channel:seq"
	Channels       []ChannelUpdate
	Added, Removed []Member
}

func summarize(r Routing) routed {
	out := routed{Result: r.Result, Channels: r.Channels, Added: r.MembersAdded, Removed: r.MembersRemoved}
	for _, m := range r.Messages {
		out.Messages = append(out.Messages, fmt.Sprintf("%s:%d", m.ChannelID, m.MessageSeq))
	}
	for _, d := range r.Deliveries {
		out.Deliveries = append(out.Deliveries, fmt.Sprintf("%s/%s:%d", d.Key.UID, d.Key.ChannelID, d.Msg.MessageSeq))
	}
	return out
}

func TestRoute(t *testing.T) {
	const window = 10
	tests := []struct {
		name   string
		events []Event
		state  BatchState
		want   routed
	}{
		{
			name:   "a new message is applied, enters the window and reaches each subscriber",
			events: []Event{gmsg("g1", 1, "a", "a", "b", "a")},
			want: routed{Result: BatchResult{Applied: 1}, Messages: []string{"g1:1"}, Deliveries: []string{"a/g1:1", "b/g1:1"},
				Channels: []ChannelUpdate{{Key: gkey("g1"), MaxSeq: 1}}},
		},
		{
			name:   "a message applied before is a duplicate and changes nothing",
			events: []Event{gmsg("g1", 3, "a", "a")},
			state: BatchState{Channels: map[ChannelKey]ChannelState{gkey("g1"): {MaxSeq: 5}},
				Applied: map[MessageKey]bool{{gkey("g1"), 3}: true}},
			want: routed{Result: BatchResult{Duplicates: 1}, Channels: []ChannelUpdate{}},
		},
		{
			name:   "a message repeated within the batch applies once",
			events: []Event{gmsg("g1", 1, "a", "b"), gmsg("g1", 1, "a", "b")},
			want: routed{Result: BatchResult{Applied: 1, Duplicates: 1}, Messages: []string{"g1:1"}, Deliveries: []string{"b/g1:1"},
				Channels: []ChannelUpdate{{Key: gkey("g1"), MaxSeq: 1}}},
		},
		{
			name:   "a late message inside the window applies without moving the newest seq",
			events: []Event{gmsg("g1", 7, "a", "b")},
			state:  BatchState{Channels: map[ChannelKey]ChannelState{gkey("g1"): {MaxSeq: 9, MinKeptSeq: 1}}},
			want: routed{Result: BatchResult{Applied: 1}, Messages: []string{"g1:7"}, Deliveries: []string{"b/g1:7"},
				Channels: []ChannelUpdate{{Key: gkey("g1"), MaxSeq: 9, MinKeptSeq: 1}}},
		},
		{
			name:   "a message at the watermark is the oldest kept seq: it applies",
			events: []Event{gmsg("g1", 5, "a", "b")},
			state:  BatchState{Channels: map[ChannelKey]ChannelState{gkey("g1"): {MaxSeq: 14, MinKeptSeq: 5}}},
			want: routed{Result: BatchResult{Applied: 1}, Messages: []string{"g1:5"}, Deliveries: []string{"b/g1:5"},
				Channels: []ChannelUpdate{{Key: gkey("g1"), MaxSeq: 14, MinKeptSeq: 5}}},
		},
		{
			name:   "a message below the window's watermark counts as applied",
			events: []Event{gmsg("g1", 4, "a", "b")},
			state:  BatchState{Channels: map[ChannelKey]ChannelState{gkey("g1"): {MaxSeq: 14, MinKeptSeq: 5}}},
			want:   routed{Result: BatchResult{BelowWindow: 1}, Channels: []ChannelUpdate{}},
		},
		{
			name:   "the watermark moves to keep exactly the newest window seqs",
			events: []Event{gmsg("g1", 12, "a", "b"), gmsg("g1", 11, "a", "b")},
			state:  BatchState{Channels: map[ChannelKey]ChannelState{gkey("g1"): {MaxSeq: 10, MinKeptSeq: 1}}},
			want: routed{Result: BatchResult{Applied: 2}, Messages: []string{"g1:12", "g1:11"},
				Deliveries: []string{"b/g1:12", "b/g1:11"}, Channels: []ChannelUpdate{{Key: gkey("g1"), MaxSeq: 12, MinKeptSeq: 3, Pruned: true}}},
		},
		{
			// The same two messages split over two batches give the same answer: the second batch's
			// watermark is 21 (the case above), so batch boundaries change nothing.
			name:   "a message more than the window behind a newer one earlier in the batch counts as applied",
			events: []Event{gmsg("g1", 30, "a", "b"), gmsg("g1", 5, "a", "b")},
			want: routed{Result: BatchResult{Applied: 1, BelowWindow: 1}, Messages: []string{"g1:30"}, Deliveries: []string{"b/g1:30"},
				Channels: []ChannelUpdate{{Key: gkey("g1"), MaxSeq: 30, MinKeptSeq: 21, Pruned: true}}},
		},
		{
			name:   "a late message within the window behind a newer one in the batch applies",
			events: []Event{gmsg("g1", 30, "a", "b"), gmsg("g1", 21, "a", "b")},
			want: routed{Result: BatchResult{Applied: 2}, Messages: []string{"g1:30", "g1:21"}, Deliveries: []string{"b/g1:30", "b/g1:21"},
				Channels: []ChannelUpdate{{Key: gkey("g1"), MaxSeq: 30, MinKeptSeq: 21, Pruned: true}}},
		},
		{
			name:   "membership changes take effect for the messages after them",
			events: []Event{gmsg("g1", 1, "a"), join("g1", "c"), gmsg("g1", 2, "a"), leave("g1", "b"), gmsg("g1", 3, "a")},
			state:  BatchState{Members: map[ChannelKey][]string{gkey("g1"): {"a", "b"}}},
			want: routed{Result: BatchResult{Applied: 3, Memberships: 2}, Messages: []string{"g1:1", "g1:2", "g1:3"},
				Deliveries: []string{"a/g1:1", "b/g1:1", "a/g1:2", "b/g1:2", "c/g1:2", "a/g1:3", "c/g1:3"},
				Channels: []ChannelUpdate{{Key: gkey("g1"), MaxSeq: 3, Arrived: true,
					Broadcast: Broadcast{Arrivals: 3, RedDots: 3, MaxSeq: 3, ClientMsgNo: "c3", Timestamp: 103}}},
				Added: []Member{{gkey("g1"), "c"}}, Removed: []Member{{gkey("g1"), "b"}}},
		},
		{
			name:   "a join undone in the same batch is no net change",
			events: []Event{join("g1", "c"), leave("g1", "c"), join("g1", "a")},
			state:  BatchState{Members: map[ChannelKey][]string{gkey("g1"): {"a"}}},
			want:   routed{Result: BatchResult{Memberships: 3}, Channels: []ChannelUpdate{}},
		},
		{
			name:   "inline subscribers win over the stored membership",
			events: []Event{join("g1", "m"), gmsg("g1", 1, "a", "s")},
			want: routed{Result: BatchResult{Applied: 1, Memberships: 1}, Messages: []string{"g1:1"}, Deliveries: []string{"s/g1:1"},
				Channels: []ChannelUpdate{{Key: gkey("g1"), MaxSeq: 1, Members: 1}}, Added: []Member{{gkey("g1"), "m"}}},
		},
		{
			name:   "a person message reaches both participants, each seeing the peer as the channel",
			events: []Event{pmsg("alice", "bob", 1)},
			want: routed{Result: BatchResult{Applied: 1}, Messages: []string{"bob:1"}, Deliveries: []string{"alice/bob:1", "bob/alice:1"},
				Channels: []ChannelUpdate{{Key: ChannelKey{Key: PersonKey("alice", "bob"), Type: 1}, MaxSeq: 1}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := summarize(RouteWith(tt.events, tt.state, RouteOptions{Window: window}))
			if len(got.Channels) == 0 {
				got.Channels = []ChannelUpdate{}
			}
			if len(tt.want.Channels) == 0 {
				tt.want.Channels = []ChannelUpdate{}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("RouteWith =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestRouteRowKeysAreSortedAndUnique(t *testing.T) {
	r := RouteWith([]Event{gmsg("g2", 1, "x", "c", "a"), gmsg("g1", 1, "x", "c"), gmsg("g2", 2, "x", "a")}, BatchState{}, RouteOptions{Window: 200})
	want := []ConvKey{{"a", "g2", 2}, {"c", "g1", 2}, {"c", "g2", 2}}
	if !reflect.DeepEqual(r.RowKeys, want) {
		t.Errorf("RowKeys = %v, want %v (primary-key order: the order rows are locked in)", r.RowKeys, want)
	}
}

func TestRouteDoesNotModifyState(t *testing.T) {
	st := BatchState{
		Channels: map[ChannelKey]ChannelState{gkey("g1"): {MaxSeq: 1}},
		Applied:  map[MessageKey]bool{},
		Members:  map[ChannelKey][]string{gkey("g1"): {"a"}},
	}
	RouteWith([]Event{gmsg("g1", 2, "x"), join("g1", "b"), gmsg("g1", 3, "x")}, st, RouteOptions{Window: 200})
	if st.Channels[gkey("g1")].MaxSeq != 1 || len(st.Applied) != 0 || !reflect.DeepEqual(st.Members[gkey("g1")], []string{"a"}) {
		t.Errorf("state changed: %+v", st)
	}
}

// TestApplyRoutingDeliveries: ApplyRouting of deliveries alone (no channel is large).
func TestApplyRoutingDeliveries(t *testing.T) {
	k := func(uid string) ConvKey { return ConvKey{UID: uid, ChannelID: "g1", ChannelType: 2} }
	m := func(seq int64, from string) *Message { return gmsg("g1", seq, from).Message }
	tests := []struct {
		name       string
		deliveries []Delivery
		rows       map[ConvKey]Row
		want       RowChanges
	}{
		{
			name:       "a missing row is created",
			deliveries: []Delivery{{k("b"), m(1, "a")}},
			want:       RowChanges{Rows: []Row{{ConvKey: k("b"), Unread: 1, LastMsgSeq: 1, LastClientMsgNo: "c1", Timestamp: 101}}, UIDs: []string{"b"}},
		},
		{
			name:       "every delivery to one row coalesces into one value, in order",
			deliveries: []Delivery{{k("b"), m(2, "a")}, {k("b"), m(3, "a")}, {k("b"), m(1, "a")}},
			rows:       map[ConvKey]Row{k("b"): {ConvKey: k("b"), Version: 7}},
			want: RowChanges{Rows: []Row{{ConvKey: k("b"), Unread: 3, LastMsgSeq: 3, LastClientMsgNo: "c3", Timestamp: 103, Version: 7}},
				UIDs: []string{"b"}},
		},
		{
			name:       "a row nothing changes is not written and its user keeps the version",
			deliveries: []Delivery{{k("b"), m(4, "a")}},
			rows:       map[ConvKey]Row{k("b"): {ConvKey: k("b"), Deleted: true, DeletedAtSeq: 5, LastMsgSeq: 5}},
			want:       RowChanges{},
		},
		{
			name:       "changed rows come sorted by key, users sorted and unique",
			deliveries: []Delivery{{k("c"), m(1, "a")}, {ConvKey{"b", "g0", 2}, m(1, "a")}, {k("b"), m(1, "a")}},
			want: RowChanges{Rows: []Row{
				{ConvKey: ConvKey{"b", "g0", 2}, Unread: 1, LastMsgSeq: 1, LastClientMsgNo: "c1", Timestamp: 101},
				{ConvKey: k("b"), Unread: 1, LastMsgSeq: 1, LastClientMsgNo: "c1", Timestamp: 101},
				{ConvKey: k("c"), Unread: 1, LastMsgSeq: 1, LastClientMsgNo: "c1", Timestamp: 101},
			}, UIDs: []string{"b", "c"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ApplyRouting(BatchState{}, Routing{Deliveries: tt.deliveries}, tt.rows, nil); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ApplyRouting =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestStampGivesEachRowItsUsersVersion(t *testing.T) {
	c := RowChanges{Rows: []Row{{ConvKey: ConvKey{UID: "a", ChannelID: "g1"}}, {ConvKey: ConvKey{UID: "a", ChannelID: "g2"}},
		{ConvKey: ConvKey{UID: "b", ChannelID: "g1"}}}, UIDs: []string{"a", "b"}}
	c.Stamp(map[string]int64{"a": 10, "b": 20})
	if c.Rows[0].Version != 10 || c.Rows[1].Version != 10 || c.Rows[2].Version != 20 {
		t.Errorf("versions = %d, %d, %d; want 10, 10, 20", c.Rows[0].Version, c.Rows[1].Version, c.Rows[2].Version)
	}
}
