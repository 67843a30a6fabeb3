package conversation_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/refmodel"
	"github.com/convsync/conversations/internal/trafficgen"
)

// memStore carries out the batch plan the way internal/mysql does, in memory: it is the plan's
// differential test without a database (the store's own runs the same streams through SQL).
type memStore struct {
	window   int64
	large    conversation.LargeThresholds
	channels map[conversation.ChannelKey]conversation.ChannelState
	applied  map[conversation.MessageKey]bool
	members  map[conversation.ChannelKey]map[string]bool
	rows     map[conversation.ConvKey]conversation.Row
	late     map[conversation.ChannelKey][]conversation.LateMsg
	version  int64
	written  int
	// up and down count threshold crossings.
	up, down int
}

func newMemStore(window int64, large conversation.LargeThresholds) *memStore {
	return &memStore{window: window, large: large,
		channels: map[conversation.ChannelKey]conversation.ChannelState{}, applied: map[conversation.MessageKey]bool{},
		members: map[conversation.ChannelKey]map[string]bool{}, rows: map[conversation.ConvKey]conversation.Row{},
		late: map[conversation.ChannelKey][]conversation.LateMsg{}}
}

func (s *memStore) apply(events []conversation.Event) {
	scope := conversation.ScopeOf(events)
	st := conversation.BatchState{Channels: map[conversation.ChannelKey]conversation.ChannelState{},
		Applied: map[conversation.MessageKey]bool{}, Members: map[conversation.ChannelKey][]string{}}
	for _, k := range scope.Channels {
		st.Channels[k] = s.channels[k]
	}
	for _, mk := range conversation.SeqsToCheck(events, st.Channels) {
		if s.applied[mk] {
			st.Applied[mk] = true
		}
	}
	// Like the store: a large channel's membership is read only for the uids the batch names, unless
	// the plan asks for all of it.
	st.Partial = map[conversation.ChannelKey]bool{}
	named := conversation.NamedUIDs(events)
	load := func(k conversation.ChannelKey, whole bool) {
		st.Members[k] = nil
		if whole {
			for u := range s.members[k] {
				st.Members[k] = append(st.Members[k], u)
			}
			delete(st.Partial, k)
			return
		}
		st.Partial[k] = true
		for _, u := range named[k] {
			if s.members[k][u] {
				st.Members[k] = append(st.Members[k], u)
			}
		}
	}
	for _, k := range scope.Members {
		load(k, !st.Channels[k].Large)
	}
	route := conversation.RouteWith(events, st, conversation.RouteOptions{Window: s.window, Large: s.large})
	if len(route.NeedMembers) > 0 {
		for _, k := range route.NeedMembers {
			load(k, true)
		}
		route = conversation.RouteWith(events, st, conversation.RouteOptions{Window: s.window, Large: s.large})
	}
	s.version++
	route.StampChannels(s.version)
	rows := map[conversation.ConvKey]conversation.Row{}
	for _, k := range route.RowKeys {
		if r, ok := s.rows[k]; ok {
			rows[k] = r
		}
	}
	changes := conversation.ApplyRouting(st, route, rows, s.late)
	versions := map[string]int64{}
	for _, u := range changes.UIDs {
		versions[u] = s.version
	}
	changes.Stamp(versions)
	for _, r := range changes.Rows {
		s.rows[r.ConvKey] = r
	}
	s.written += len(changes.Rows)
	for _, m := range route.Messages {
		s.applied[conversation.MessageKey{Channel: m.Key(), Seq: m.MessageSeq}] = true
	}
	for _, l := range route.Late {
		s.late[l.Channel] = append(s.late[l.Channel], l)
	}
	for _, u := range route.Channels {
		switch was := s.channels[u.Key].Large; {
		case u.Large && !was:
			s.up++
		case !u.Large && was:
			s.down++
		}
		s.channels[u.Key] = conversation.ChannelState{MaxSeq: u.MaxSeq, MinKeptSeq: u.MinKeptSeq, Large: u.Large,
			Members: u.Members, Broadcast: u.Broadcast}
	}
	for _, m := range route.MembersAdded {
		if s.members[m.Channel] == nil {
			s.members[m.Channel] = map[string]bool{}
		}
		s.members[m.Channel][m.UID] = true
	}
	for _, m := range route.MembersRemoved {
		delete(s.members[m.Channel], m.UID)
	}
	for k, ms := range s.members { // the count the store keeps is the membership's
		if got := s.channels[k].Members; got != int64(len(ms)) {
			panic(fmt.Sprintf("%v: %d members counted, %d stored", k, got, len(ms)))
		}
	}
}

// derived is every conversation as sync sees it, tombstones included.
func (s *memStore) derived() map[conversation.ConvKey]conversation.Row {
	out := map[conversation.ConvKey]conversation.Row{}
	for k, r := range s.rows {
		ck := conversation.ChannelKey{Key: k.ChannelID, Type: k.ChannelType}
		if r = conversation.Derive(r, s.channels[ck].Broadcast, s.late[ck]); !r.Hidden {
			out[k] = r
		}
	}
	return out
}

// update is Store.Update: derive, change, rebase.
func (s *memStore) update(k conversation.ConvKey, change func(conversation.Row, int64) (conversation.Row, bool)) {
	r, ok := s.rows[k]
	if !ok {
		return
	}
	ck := conversation.ChannelKey{Key: k.ChannelID, Type: k.ChannelType}
	r = conversation.Derive(r, s.channels[ck].Broadcast, s.late[ck])
	if r.Hidden {
		return
	}
	next, changed := change(r, 1)
	if !changed {
		return
	}
	if next.Follows {
		next.Base = conversation.BaseOf(s.channels[ck])
	}
	s.version++
	next.Version = s.version
	s.rows[k] = next
}

func compareWithModel(t *testing.T, got map[conversation.ConvKey]conversation.Row, model *refmodel.Model) {
	t.Helper()
	bad := 0
	want := map[conversation.ConvKey]bool{}
	for _, w := range model.Rows() {
		k := conversation.ConvKey{UID: w.UID, ChannelID: w.ChannelID, ChannelType: w.ChannelType}
		want[k] = true
		g, ok := got[k]
		gf := fmt.Sprintf("%+v", refmodel.Row{Key: w.Key, Unread: g.Unread, ReadedToMsgSeq: g.ReadedToMsgSeq,
			DeletedAtSeq: g.DeletedAtSeq, IsDeleted: g.Deleted, LastMsgSeq: g.LastMsgSeq, LastClientMsgNo: g.LastClientMsgNo,
			Timestamp: g.Timestamp})
		w.ChangedAt = 0
		if wf := fmt.Sprintf("%+v", w); !ok || gf != wf {
			bad++
			if bad < 20 {
				t.Errorf("%v: got %s (present %v, follows %v), want %s", k, gf, ok, g.Follows, wf)
			}
		}
	}
	for k, g := range got {
		if !want[k] {
			bad++
			if bad < 20 {
				t.Errorf("%v: unexpected %+v", k, g)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d conversations differ from the model", bad)
	}
}

// TestLargeMatchesModel runs the differential stream through the plan with a threshold of 3 members
// (most groups are large), and with 5 both ways (no hysteresis: groups of 3 to 10 with churn cross it
// up and down), with random batches, redeliveries and API mutations, and checks every conversation
// against per-member fan-out (refmodel).
func TestLargeMatchesModel(t *testing.T) {
	for seed := uint64(1); seed <= 12; seed++ {
		large := conversation.LargeThresholdsOf(3)
		if seed%2 == 0 {
			large = conversation.LargeThresholds{Enter: 5, Leave: 5}
		}
		t.Run(fmt.Sprintf("seed %d threshold %d-%d", seed, large.Enter, large.Leave), func(t *testing.T) {
			const window = 12
			recs, _, err := trafficgen.Generate(trafficgen.Differential(3000, seed))
			if err != nil {
				t.Fatal(err)
			}
			model := refmodel.New(refmodel.Options{Window: window})
			store := newMemStore(window, large)
			skip := conversation.DefaultSkipSet()
			rng := rand.New(rand.NewPCG(seed, 1))
			var evs []conversation.Event
			for _, r := range recs {
				_ = model.Apply(r.Value)
				ev, err := conversation.DecodeEvent(r.Value, time.Unix(1700000000, 0), 0)
				if err != nil {
					t.Fatal(err)
				}
				if p, _ := skip.Filter([]conversation.Event{ev}); len(p) == 1 {
					evs = append(evs, ev)
				}
				if len(evs) >= 1+rng.IntN(60) {
					store.apply(evs)
					if rng.IntN(5) == 0 {
						store.apply(evs[rng.IntN(len(evs)):])
					}
					evs = nil
					if rng.IntN(3) == 0 { // store and model agree here: the API acts between batches
						mutateBoth(store, model, rng)
					}
				}
			}
			store.apply(evs)
			compareWithModel(t, store.derived(), model)
			followers := 0
			for _, r := range store.rows {
				if r.Follows {
					followers++
				}
			}
			if followers == 0 || store.up == 0 || (store.down == 0 && large.Leave == large.Enter) {
				t.Fatalf("followers %d, crossings up %d, down %d: the test does not test large channels", followers, store.up, store.down)
			}
			t.Logf("rows=%d followers=%d written=%d crossings up=%d down=%d", len(store.rows), followers, store.written, store.up, store.down)
		})
	}
}

func mutateBoth(store *memStore, model *refmodel.Model, rng *rand.Rand) {
	rows := model.Rows()
	if len(rows) == 0 {
		return
	}
	r := rows[rng.IntN(len(rows))]
	k := conversation.ConvKey{UID: r.UID, ChannelID: r.ChannelID, ChannelType: r.ChannelType}
	switch rng.IntN(3) {
	case 0:
		model.Delete(r.UID, r.ChannelID, r.ChannelType)
		store.update(k, conversation.Delete)
	case 1:
		unread := int64(rng.IntN(5))
		model.SetUnread(r.UID, r.ChannelID, r.ChannelType, unread)
		store.update(k, func(row conversation.Row, _ int64) (conversation.Row, bool) {
			return conversation.SetUnread(row, unread)
		})
	default:
		model.ClearUnread(r.UID, r.ChannelID, r.ChannelType)
		store.update(k, func(row conversation.Row, _ int64) (conversation.Row, bool) { return conversation.SetUnread(row, 0) })
	}
}

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
