package readcache

import (
	"context"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/conversation"
)

// fakeLarge is a database of large channels' states: what a commit does to it is what Changes of the
// same commit announce (commit returns it, for the test to deliver or not).
type fakeLarge struct {
	states map[conversation.ChannelKey]conversation.ChannelState
	late   map[conversation.ChannelKey][]conversation.LateMsg
	loads  int
	heads  int
	// during, when set, runs in the middle of a load (a commit and its announcement racing it).
	during func()
}

var chA = conversation.ChannelKey{Key: "A", Type: 2}

func newFakeLarge() *fakeLarge {
	return &fakeLarge{states: map[conversation.ChannelKey]conversation.ChannelState{chA: {Large: true}},
		late: map[conversation.ChannelKey][]conversation.LateMsg{}}
}

func (f *fakeLarge) LargeStates(_ context.Context, since map[conversation.ChannelKey]int64) (map[conversation.ChannelKey]conversation.ChannelState, map[conversation.ChannelKey][]conversation.LateMsg, error) {
	f.loads++
	states := map[conversation.ChannelKey]conversation.ChannelState{}
	late := map[conversation.ChannelKey][]conversation.LateMsg{}
	for k, s := range since {
		if st, ok := f.states[k]; ok {
			states[k] = st
		}
		for _, m := range f.late[k] {
			if m.Arrival > s {
				late[k] = append(late[k], m)
			}
		}
	}
	if f.during != nil {
		f.during()
		f.during = nil
	}
	return states, late, nil
}

func (f *fakeLarge) ChannelHeads(_ context.Context, keys []conversation.ChannelKey) (map[conversation.ChannelKey]conversation.Broadcast, error) {
	f.heads++
	out := map[conversation.ChannelKey]conversation.Broadcast{}
	for _, k := range keys {
		if st, ok := f.states[k]; ok {
			out[k] = conversation.Broadcast{Arrivals: st.Broadcast.Arrivals, Version: st.Broadcast.Version}
		}
	}
	return out, nil
}

// commit delivers a red-dot broadcast message of seq to channel k and returns its announcement.
func (f *fakeLarge) commit(k conversation.ChannelKey, seq, version int64) conversation.ChannelChange {
	st := f.states[k]
	c := conversation.ChannelChange{Channel: k, Before: st.Broadcast}
	b := &st.Broadcast
	b.Arrivals++
	b.RedDots++
	b.Version = version
	if seq > b.MaxSeq {
		b.MaxSeq, b.ClientMsgNo, b.Timestamp = seq, "c", seq
	} else {
		m := conversation.LateMsg{Channel: k, Arrival: b.Arrivals, Seq: seq, RedDot: true, ClientMsgNo: "c", Timestamp: seq}
		f.late[k] = append(f.late[k], m)
		c.Late = []conversation.LateMsg{m}
	}
	f.states[k] = st
	c.After = st.Broadcast
	return c
}

// follower is a member of channel A who read up to seq 1 at base 1 arrival.
func follower() []conversation.Row {
	return []conversation.Row{{ConvKey: conversation.ConvKey{UID: "u", ChannelID: "A", ChannelType: 2}, Follows: true,
		ReadedToMsgSeq: 1, LastMsgSeq: 1, Base: conversation.Base{Arrivals: 1, RedDots: 1, MaxSeq: 1}}}
}

// The cache never serves a state that is missing, aged, behind an announcement gap or out of date by a
// load that raced an announcement, and an announcement in order updates what it serves: after each
// step the answer equals the one derived from the database, and the loads counted say whether it came
// from memory.
func TestLargeServesOnlyCurrentStates(t *testing.T) {
	now := time.UnixMilli(1_000_000)
	db := newFakeLarge()
	db.commit(chA, 1, 10)
	db.commit(chA, 3, 11)
	c := NewLarge(db, LargeOptions{MaxAge: 4 * time.Second, Now: func() time.Time { return now }})
	rows := follower()
	var readState *conversation.ChannelState // what a racing load read, when not the database now
	check := func(step string, wantLoads int) {
		t.Helper()
		got, err := derived(c.Derive(context.Background(), conversation.ListRead{Rows: rows}))
		if err != nil {
			t.Fatal(err)
		}
		b := db.states[chA].Broadcast
		if readState != nil {
			b, readState = readState.Broadcast, nil
		}
		want := conversation.Derive(rows[0], b, db.late[chA])
		if got[0] != want {
			t.Errorf("%s: got %+v, want %+v", step, got[0], want)
		}
		if db.loads != wantLoads {
			t.Errorf("%s: %d loads, want %d", step, db.loads, wantLoads)
		}
	}
	check("missing: loaded", 1)
	check("held: from memory", 1)

	c.Apply([]conversation.ChannelChange{db.commit(chA, 2, 12)}) // late message, in order
	check("announced in order: from memory", 1)

	older := conversation.ChannelChange{Channel: chA, Before: conversation.Broadcast{Arrivals: 1, Version: 10},
		After: conversation.Broadcast{Arrivals: 2, Version: 11}}
	c.Apply([]conversation.ChannelChange{older}) // a duplicate of what the load saw
	check("older announcement ignored", 1)

	lost := db.commit(chA, 4, 13)
	next := db.commit(chA, 5, 14)
	c.Apply([]conversation.ChannelChange{next}) // after a gap
	check("gap: dropped and loaded", 2)
	c.Apply([]conversation.ChannelChange{lost, next}) // both arrive late: already held
	check("late announcements: from memory", 2)

	db.commit(chA, 6, 15) // its announcement is lost
	now = now.Add(4 * time.Second)
	check("aged: loaded", 3)

	db.during = func() { c.Apply([]conversation.ChannelChange{db.commit(chA, 7, 16)}) }
	now = now.Add(4 * time.Second)
	before := db.states[chA]
	readState = &before
	check("racing load: answers what it read", 4)
	check("racing load: not kept", 5)

	rows[0].Base = conversation.Base{} // a list with an older base needs late messages not held
	check("base older than held: loaded", 6)
	check("base older than held: kept", 6)

	c.Apply([]conversation.ChannelChange{{Channel: chA, Before: conversation.Broadcast{Arrivals: -1}, After: db.states[chA].Broadcast}})
	check("crossing the threshold drops", 7)
}

// Refresh keeps a state the database still holds and drops one that moved without an announcement
// (convctl raising versions, a schema switch): arrivals and version are compared together.
func TestLargeRefresh(t *testing.T) {
	now := time.UnixMilli(1_000_000)
	db := newFakeLarge()
	db.commit(chA, 1, 10)
	c := NewLarge(db, LargeOptions{MaxAge: 4 * time.Second, Now: func() time.Time { return now }})
	rows := follower()
	derive := func() {
		t.Helper()
		if _, err := derived(c.Derive(context.Background(), conversation.ListRead{Rows: rows})); err != nil {
			t.Fatal(err)
		}
	}
	derive()
	now = now.Add(3 * time.Second)
	if err := c.Refresh(context.Background()); err != nil || db.heads != 1 {
		t.Fatalf("refresh: %v, %d head reads", err, db.heads)
	}
	now = now.Add(3 * time.Second) // 6 s after the load, 3 s after the refresh
	derive()
	if db.loads != 1 {
		t.Errorf("revalidated state: %d loads, want 1", db.loads)
	}
	st := db.states[chA]
	st.Broadcast.Version = 99 // raised versions: no announcement
	db.states[chA] = st
	now = now.Add(3 * time.Second)
	if err := c.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	derive()
	if db.loads != 2 {
		t.Errorf("state changed without an announcement: %d loads, want 2 (dropped by the refresh)", db.loads)
	}
}

// The list's and the states' known-current times combine: the earliest is noted.
func TestLargeNotesOldestState(t *testing.T) {
	now := time.UnixMilli(1_000_000)
	db := newFakeLarge()
	db.commit(chA, 1, 10)
	c := NewLarge(db, LargeOptions{MaxAge: 4 * time.Second, Now: func() time.Time { return now }})
	loadedAt := now
	if _, err := derived(c.Derive(context.Background(), conversation.ListRead{Rows: follower()})); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Second)
	// the list, checked after the state was loaded
	list := conversation.ListRead{Rows: follower(), Served: conversation.Served{AsOf: now.Add(-time.Second)}}
	got, err := c.Derive(context.Background(), list)
	if err != nil {
		t.Fatal(err)
	}
	if at := got.Served.AsOf; !at.Equal(loadedAt) {
		t.Errorf("noted %v, want the state's load time %v", at, loadedAt)
	}
}

// A held state whose late messages would pass MaxLate is dropped, not kept partly: the next request
// loads it (a load past MaxLate is not kept either), and each answer equals a fresh load's.
func TestLargeDropsStatesPastMaxLate(t *testing.T) {
	now := time.UnixMilli(1_000_000)
	db := newFakeLarge()
	db.commit(chA, 1, 10)
	db.commit(chA, 5, 11)
	c := NewLarge(db, LargeOptions{MaxAge: time.Minute, MaxLate: 1, Now: func() time.Time { return now }})
	derive := func(step string, wantLoads int) {
		t.Helper()
		got, err := derived(c.Derive(context.Background(), conversation.ListRead{Rows: follower()}))
		if err != nil {
			t.Fatal(err)
		}
		loads := db.loads
		want, err := derived(NewLarge(db, LargeOptions{MaxAge: time.Minute}).Derive(context.Background(), conversation.ListRead{Rows: follower()}))
		db.loads = loads
		if err != nil || got[0] != want[0] {
			t.Errorf("%s: derived %+v, a fresh load gives %+v (%v)", step, got[0], want[0], err)
		}
		if db.loads != wantLoads {
			t.Errorf("%s: %d loads, want %d", step, db.loads, wantLoads)
		}
	}
	derive("first request: loaded", 1)
	c.Apply([]conversation.ChannelChange{db.commit(chA, 3, 12)}) // one late message: within MaxLate
	derive("one late message held: from memory", 1)
	c.Apply([]conversation.ChannelChange{db.commit(chA, 4, 13)}) // a second one: past MaxLate
	derive("past MaxLate: dropped and loaded", 2)
	derive("a load past MaxLate is not kept", 3)
}
