// Package storetest is the contract suite of the read model's stores: every implementation of
// conversation.BatchTx (internal/mysql against MariaDB, internal/memstore in memory) runs these same
// tests through its store, so a rule that one of them carries out differently fails here. Run it from a
// test of the implementing package:
//
//	func TestContract(t *testing.T) { storetest.Run(t, open, storetest.Config{...}) }
package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/refmodel"
	"github.com/convsync/conversations/internal/trafficgen"
)

// Store is what the suite needs of a store: the projector's batch, the API's mutation and what sync
// reads.
type Store interface {
	ApplyBatch(ctx context.Context, events []conversation.Event) (conversation.BatchResult, error)
	Update(ctx context.Context, key conversation.ConvKey, change func(row conversation.Row, nowMS int64) (conversation.Row, bool)) (conversation.Row, error)
	UserRows(ctx context.Context, uid string) ([]conversation.Row, int64, error)
	LargeStates(ctx context.Context, since map[conversation.ChannelKey]int64) (map[conversation.ChannelKey]conversation.ChannelState, map[conversation.ChannelKey][]conversation.LateMsg, error)
	Recents(ctx context.Context, ranges []conversation.SeqRange) (map[conversation.ChannelKey][]conversation.Message, error)
}

// Purger is what a store that purges tombstones has (optional: the purge cases skip a store without it).
type Purger interface {
	PurgeTombstones(ctx context.Context, beforeMS int64, limit int) (int64, error)
	PurgeFollowerTombstones(ctx context.Context, beforeMS int64, limit int) (int64, error)
}

// Options are the settings a test opens a store with; zero fields take the store's defaults.
type Options struct {
	Window int64
	Large  conversation.LargeThresholds
	Now    func() time.Time
}

// Open returns a new, empty store with opts, closed when t ends.
type Open func(t *testing.T, opts Options) Store

// Config sizes the suite for an implementation.
type Config struct {
	// Seeds is how many seeded streams the differential test runs per threshold (default 2).
	Seeds int
	// Messages is how many messages each stream has (default 3000).
	Messages int
}

// Run runs every test of the suite against the stores open returns.
func Run(t *testing.T, open Open, cfg Config) {
	if cfg.Seeds <= 0 {
		cfg.Seeds = 2
	}
	if cfg.Messages <= 0 {
		cfg.Messages = 3000
	}
	t.Run("batch coalesces rows and versions", func(t *testing.T) { coalesces(t, open) })
	t.Run("replayed batch changes nothing", func(t *testing.T) { idempotent(t, open) })
	t.Run("window keeps the newest seqs", func(t *testing.T) { window(t, open) })
	t.Run("membership changes apply in event order", func(t *testing.T) { membershipOrder(t, open) })
	t.Run("versions grow in commit order", func(t *testing.T) { versionsGrow(t, open) })
	t.Run("concurrent batches count each message once", func(t *testing.T) { concurrent(t, open) })
	t.Run("large channel follows and crosses the threshold", func(t *testing.T) { largeCrossing(t, open) })
	t.Run("purged follower tombstone answers as a purged plain one", func(t *testing.T) { followerPurge(t, open) })
	t.Run("differential against refmodel", func(t *testing.T) { differential(t, open, cfg) })
}

// Seqs lists the messages' seqs in their order; none gives an empty, not a nil, list.
func Seqs(ms []conversation.Message) []int64 {
	out := []int64{}
	for _, m := range ms {
		out = append(out, m.MessageSeq)
	}
	return out
}

// GroupMsg is a group message with red_dot 1 (subscribers, when given, are its only recipients).
func GroupMsg(ch string, seq int64, from string, subs ...string) conversation.Event {
	return conversation.Event{Message: &conversation.Message{
		MessageID: 1000 + seq, ClientMsgNo: fmt.Sprintf("c%d", seq), MessageSeq: seq, FromUID: from,
		ChannelID: ch, ChannelType: 2, Timestamp: 1700000000 + seq, Header: conversation.Header{RedDot: 1},
		Payload: []byte(fmt.Sprintf("m%d", seq)), Subscribers: subs,
	}}
}

// PersonMsg is a person message with red_dot 1.
func PersonMsg(from, to string, seq int64) conversation.Event {
	return conversation.Event{Message: &conversation.Message{
		MessageID: 5000 + seq, ClientMsgNo: fmt.Sprintf("p%d", seq), MessageSeq: seq, FromUID: from,
		ChannelID: to, ChannelType: 1, Timestamp: 1700000000 + seq, Header: conversation.Header{RedDot: 1},
	}}
}

// Members is a membership event of group ch.
func Members(ch string, added bool, uids ...string) conversation.Event {
	return conversation.Event{Membership: &conversation.Membership{Channel: conversation.Channel{ID: ch, Type: 2}, UIDs: uids, Added: added}}
}

func apply(t *testing.T, s Store, events ...conversation.Event) conversation.BatchResult {
	t.Helper()
	res, err := s.ApplyBatch(context.Background(), events)
	if err != nil {
		t.Fatalf("ApplyBatch: %v", err)
	}
	return res
}

// rowsOf is uid's conversations by channel id, as sync reads them (hidden rows left out).
func rowsOf(t *testing.T, s Store, uid string) map[string]conversation.Row {
	t.Helper()
	return RowsByChannel(t, s, uid, false)
}

// RowsByChannel is uid's rows as s.UserRows reads them, by channel id; hidden rows (followers with no
// conversation yet) only when hidden is set. It fails t on an error.
func RowsByChannel(t testing.TB, s interface {
	UserRows(ctx context.Context, uid string) ([]conversation.Row, int64, error)
}, uid string, hidden bool) map[string]conversation.Row {
	t.Helper()
	rows, _, err := s.UserRows(context.Background(), uid)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]conversation.Row{}
	for _, r := range rows {
		if hidden || !r.Hidden {
			out[r.ChannelID] = r
		}
	}
	return out
}

func coalesces(t *testing.T, open Open) {
	s := open(t, Options{})
	res := apply(t, s,
		GroupMsg("g1", 1, "alice", "alice", "bob", "carol"),
		GroupMsg("g1", 2, "bob", "alice", "bob", "carol"),
		GroupMsg("g2", 1, "carol", "bob", "carol"),
		PersonMsg("alice", "bob", 1),
	)
	if res.Applied != 4 || res.RowsWritten != 7 {
		t.Errorf("result = %+v, want 4 applied, 7 rows written (each row once)", res)
	}
	bob := rowsOf(t, s, "bob")
	if len(bob) != 3 {
		t.Fatalf("bob has %d rows, want 3: %+v", len(bob), bob)
	}
	if g1 := bob["g1"]; g1.Unread != 0 || g1.ReadedToMsgSeq != 2 || g1.LastMsgSeq != 2 || g1.LastClientMsgNo != "c2" {
		t.Errorf("bob g1 = %+v, want read up to his own newest message 2, unread 0", g1)
	}
	if g2 := bob["g2"]; g2.Unread != 1 || g2.LastMsgSeq != 1 {
		t.Errorf("bob g2 = %+v", g2)
	}
	if p := bob["alice"]; p.ChannelType != 1 || p.Unread != 1 {
		t.Errorf("bob's person conversation is keyed by the peer: %+v", p)
	}
	if carol := rowsOf(t, s, "carol"); carol["g1"].Unread != 2 {
		t.Errorf("carol g1 unread = %d, want 2", carol["g1"].Unread)
	}
	_, version, err := s.UserRows(context.Background(), "bob")
	if err != nil {
		t.Fatal(err)
	}
	for id, r := range bob {
		if r.Version != version {
			t.Errorf("bob %s version %d, want the batch's %d, the user's version", id, r.Version, version)
		}
	}
}

func idempotent(t *testing.T, open Open) {
	s := open(t, Options{})
	batch := []conversation.Event{GroupMsg("g1", 1, "alice", "alice", "bob"), GroupMsg("g1", 2, "alice", "alice", "bob")}
	apply(t, s, batch...)
	before := rowsOf(t, s, "bob")
	res := apply(t, s, append(batch, batch[0])...) // whole replay, plus a duplicate inside the batch
	if res.Applied != 0 || res.Duplicates != 3 || res.RowsWritten != 0 {
		t.Errorf("replay result = %+v, want 0 applied, 3 duplicates, 0 rows", res)
	}
	if after := rowsOf(t, s, "bob"); before["g1"] != after["g1"] || after["g1"].Unread != 2 {
		t.Errorf("replay changed the row (version included) or miscounted:\n%+v\n%+v", before["g1"], after["g1"])
	}
}

func window(t *testing.T, open Open) {
	const size = 10
	s := open(t, Options{Window: size})
	for seq := int64(1); seq <= 40; seq++ {
		apply(t, s, GroupMsg("g1", seq, "alice", "alice", "bob"))
	}
	g1 := conversation.ChannelKey{Key: "g1", Type: 2}
	got, err := s.Recents(context.Background(), []conversation.SeqRange{{Channel: g1, UpTo: 40, Count: 100}})
	if err != nil {
		t.Fatal(err)
	}
	seqs := Seqs(got[g1])
	if want := []int64{40, 39, 38, 37, 36, 35, 34, 33, 32, 31}; !slices.Equal(seqs, want) {
		t.Errorf("window holds %v, want exactly the newest %d seqs %v", seqs, size, want)
	}
	if m := got[g1]; len(m) > 0 && (m[0].ClientMsgNo != "c40" || string(m[0].Payload) != "m40" || m[0].FromUID != "alice") {
		t.Errorf("newest message kept as %+v", m[0])
	}
	// A replay of a pruned message is below the watermark: it must not count again.
	if res := apply(t, s, GroupMsg("g1", 30, "alice", "alice", "bob")); res.BelowWindow != 1 || res.Applied != 0 {
		t.Errorf("replay of pruned seq 30: %+v, want below window", res)
	}
	// One more than the window behind the newest is below it too, even when never seen.
	if res := apply(t, s, GroupMsg("g1", 29, "alice", "alice", "bob")); res.BelowWindow != 1 {
		t.Errorf("seq 29 never applied, window 31..40: %+v, want below window", res)
	}
	if got := rowsOf(t, s, "bob")["g1"].Unread; got != 40 {
		t.Errorf("unread = %d, want 40", got)
	}
}

func membershipOrder(t *testing.T, open Open) {
	s := open(t, Options{})
	apply(t, s, Members("g1", true, "alice", "bob"))
	apply(t, s,
		GroupMsg("g1", 1, "alice"),   // alice, bob
		Members("g1", true, "carol"), // carol joins
		GroupMsg("g1", 2, "alice"),   // alice, bob, carol
		Members("g1", false, "bob"),  // bob leaves
		GroupMsg("g1", 3, "alice"),   // alice, carol
	)
	if got := rowsOf(t, s, "bob")["g1"]; got.Unread != 2 || got.LastMsgSeq != 2 {
		t.Errorf("bob = %+v, want unread 2 up to seq 2", got)
	}
	if got := rowsOf(t, s, "carol")["g1"]; got.Unread != 2 || got.LastMsgSeq != 3 {
		t.Errorf("carol = %+v, want unread 2 up to seq 3", got)
	}
	// The stored membership is alice and carol: the next message reaches them and not bob.
	apply(t, s, GroupMsg("g1", 4, "dave"))
	if got := rowsOf(t, s, "bob")["g1"]; got.LastMsgSeq != 2 {
		t.Errorf("bob, who left, got seq %d", got.LastMsgSeq)
	}
	if got := rowsOf(t, s, "carol")["g1"]; got.LastMsgSeq != 4 || got.Unread != 3 {
		t.Errorf("carol = %+v, want unread 3 up to seq 4", got)
	}
	states, _, err := s.LargeStates(context.Background(), map[conversation.ChannelKey]int64{{Key: "g1", Type: 2}: 0})
	if err != nil {
		t.Fatal(err)
	}
	if st := states[conversation.ChannelKey{Key: "g1", Type: 2}]; st.Members != 2 || st.MaxSeq != 4 || st.Broadcast.Arrivals != 4 {
		t.Errorf("channel state %+v, want 2 members, newest seq 4, 4 broadcast arrivals", st)
	}
}

func versionsGrow(t *testing.T, open Open) {
	frozen := time.UnixMilli(1_000_000)
	s := open(t, Options{Now: func() time.Time { return frozen }})
	ctx := context.Background()
	apply(t, s, GroupMsg("g1", 1, "alice", "bob"))
	v1 := rowsOf(t, s, "bob")["g1"].Version
	apply(t, s, GroupMsg("g2", 1, "alice", "bob"))
	v2 := rowsOf(t, s, "bob")["g2"].Version
	clear := func(r conversation.Row, _ int64) (conversation.Row, bool) { return conversation.SetUnread(r, 0) }
	row, err := s.Update(ctx, conversation.ConvKey{UID: "bob", ChannelID: "g1", ChannelType: 2}, clear)
	if err != nil {
		t.Fatal(err)
	}
	if v1 != 1_000_000 || v2 != v1+1 || row.Version != v2+1 {
		t.Errorf("versions %d, %d, %d: want now, then +1 each within one millisecond", v1, v2, row.Version)
	}
	if same, err := s.Update(ctx, row.ConvKey, clear); err != nil || same.Version != row.Version {
		t.Errorf("no-op update: version %d -> %d (%v)", row.Version, same.Version, err)
	}
	if _, err := s.Update(ctx, conversation.ConvKey{UID: "bob", ChannelID: "nope", ChannelType: 2}, clear); !errors.Is(err, conversation.ErrNotFound) {
		t.Errorf("update of a missing row: %v, want ErrNotFound", err)
	}
}

func concurrent(t *testing.T, open Open) {
	s := open(t, Options{})
	// Four writers hit the same channels and users in different orders; locks are taken in sorted order
	// and conflicts retried, so every message must count exactly once.
	const writers, perWriter = 4, 25
	var seq atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for range perWriter {
				var batch []conversation.Event
				for _, ch := range []string{"g1", "g2", "g3"} {
					if w%2 == 1 {
						ch = map[string]string{"g1": "g3", "g2": "g2", "g3": "g1"}[ch]
					}
					batch = append(batch, GroupMsg(ch, seq.Add(1), "alice", "alice", "bob", "carol"))
				}
				if _, err := s.ApplyBatch(context.Background(), batch); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var total int64
	for _, r := range rowsOf(t, s, "bob") {
		total += r.Unread
	}
	if total != writers*perWriter*3 {
		t.Errorf("bob's unread total = %d, want %d", total, writers*perWriter*3)
	}
}

func largeCrossing(t *testing.T, open Open) {
	s := open(t, Options{Large: conversation.LargeThresholds{Enter: 3, Leave: 2}})
	g := conversation.ChannelKey{Key: "g", Type: 2}
	state := func() conversation.ChannelState {
		t.Helper()
		st, _, err := s.LargeStates(context.Background(), map[conversation.ChannelKey]int64{g: 0})
		if err != nil {
			t.Fatal(err)
		}
		return st[g]
	}
	apply(t, s, Members("g", true, "a", "b"), GroupMsg("g", 1, "a"))
	if st := state(); st.Large || st.Members != 2 {
		t.Fatalf("two members: %+v, want small", st)
	}
	apply(t, s, Members("g", true, "c"), GroupMsg("g", 2, "a"))
	if st := state(); !st.Large || st.Members != 3 {
		t.Fatalf("three members: %+v, want large", st)
	}
	// Fan-out at read time: c is not written, its conversation is derived; a late message too.
	res := apply(t, s, GroupMsg("g", 4, "a"), GroupMsg("g", 3, "b"))
	if res.RowsWritten != 2 {
		t.Errorf("a large channel's message wrote %d rows, want the 2 senders'", res.RowsWritten)
	}
	if c := rowsOf(t, s, "c")["g"]; c.Unread != 3 || c.LastMsgSeq != 4 || !c.Follows {
		t.Errorf("c = %+v, want a follower with unread 3 up to seq 4", c)
	}
	if b := rowsOf(t, s, "b")["g"]; b.Unread != 3 || b.ReadedToMsgSeq != 3 || b.LastMsgSeq != 4 {
		t.Errorf("b = %+v, want read to its own 3 and unread 3 (its late message is below 4)", b)
	}
	_, late, err := s.LargeStates(context.Background(), map[conversation.ChannelKey]int64{g: 0})
	if err != nil {
		t.Fatal(err)
	}
	if l := late[g]; len(l) != 1 || l[0].Seq != 3 {
		t.Errorf("late messages %+v, want seq 3", l)
	}
	apply(t, s, Members("g", false, "b", "c"), GroupMsg("g", 5, "a"))
	if st := state(); st.Large || st.Members != 1 {
		t.Fatalf("one member: %+v, want small again", st)
	}
	if c := rowsOf(t, s, "c")["g"]; c.Follows || c.Unread != 3 || c.LastMsgSeq != 4 {
		t.Errorf("c after leaving = %+v, want a plain row with what it had", c)
	}
	if a := rowsOf(t, s, "a")["g"]; a.Follows || a.LastMsgSeq != 5 {
		t.Errorf("a = %+v, want a plain row up to seq 5", a)
	}
}

// followerPurge purges a member's tombstone in a large channel and in the same channel with per-member
// fan-out: before and after later messages (a late one included) every member must see the same.
func followerPurge(t *testing.T, open Open) {
	ctx := context.Background()
	fanout, large := open(t, Options{}), open(t, Options{Large: conversation.LargeThresholds{Enter: 3, Leave: 2}})
	purgers := map[string]Purger{}
	for name, s := range map[string]Store{"fan-out": fanout, "large": large} {
		p, ok := s.(Purger)
		if !ok {
			t.Skipf("the %s store purges no tombstones", name)
		}
		purgers[name] = p
	}
	b := conversation.ConvKey{UID: "b", ChannelID: "g", ChannelType: 2}
	both := func(events ...conversation.Event) {
		t.Helper()
		apply(t, fanout, events...)
		apply(t, large, events...)
	}
	same := func(when string) {
		t.Helper()
		for _, u := range []string{"a", "b", "c", "d"} {
			f, l := rowsOf(t, fanout, u), rowsOf(t, large, u)
			fr, fok := f["g"]
			lr, lok := l["g"]
			fr.Version, fr.DeletedAtMS, fr.Follows, fr.Base = 0, 0, false, conversation.Base{}
			lr.Version, lr.DeletedAtMS, lr.Follows, lr.Base = 0, 0, false, conversation.Base{}
			if fok != lok || fr != lr {
				t.Errorf("%s, %s: large channel %+v (present %v), fan-out %+v (present %v)", when, u, lr, lok, fr, fok)
			}
		}
	}
	both(Members("g", true, "a", "b", "c", "d"), GroupMsg("g", 1, "a"), GroupMsg("g", 3, "c"))
	for _, s := range []Store{fanout, large} {
		if _, err := s.Update(ctx, b, conversation.Delete); err != nil {
			t.Fatal(err)
		}
	}
	both(GroupMsg("g", 2, "d")) // late, below b's delete point: b's tombstone stays one
	before := time.Now().Add(time.Hour).UnixMilli()
	var plain, followers int64
	for name, p := range purgers {
		n, err := p.PurgeTombstones(ctx, before, 100)
		if err != nil {
			t.Fatal(err)
		}
		f, err := p.PurgeFollowerTombstones(ctx, before, 100)
		if err != nil {
			t.Fatal(err)
		}
		if name == "fan-out" {
			plain += n
		} else {
			plain, followers = plain-n, followers+f
		}
	}
	if plain != 1 || followers != 1 {
		t.Errorf("purged: fan-out's plain tombstones minus the large store's %d, followers' %d; want 1 and 1", plain, followers)
	}
	same("after the purge")
	both(GroupMsg("g", 5, "c"), GroupMsg("g", 4, "d"))
	same("after later messages")
	if r := rowsOf(t, large, "b")["g"]; r.Unread != 2 || r.LastMsgSeq != 5 || r.ReadedToMsgSeq != 0 {
		t.Errorf("b after the purge and two messages: %+v, want a new conversation, unread 2 up to seq 5", r)
	}
}

// differential runs seeded chaotic streams through the store with a threshold of 3 members (most
// groups are large) and of 5 both ways (groups of 3 to 10 with churn cross it up and down), in random
// batches with random redeliveries and API mutations between batches, and checks every conversation
// against per-member fan-out (refmodel).
func differential(t *testing.T, open Open, cfg Config) {
	for seed := uint64(1); seed <= uint64(2*cfg.Seeds); seed++ {
		large := conversation.LargeThresholdsOf(3)
		if seed%2 == 0 {
			large = conversation.LargeThresholds{Enter: 5, Leave: 5}
		}
		t.Run(fmt.Sprintf("seed %d threshold %d-%d", seed, large.Enter, large.Leave), func(t *testing.T) {
			const size = 12
			recs, _, err := trafficgen.Generate(trafficgen.Differential(cfg.Messages, seed))
			if err != nil {
				t.Fatal(err)
			}
			s := open(t, Options{Window: size, Large: large})
			d := &diff{t: t, s: s, model: refmodel.New(refmodel.Options{Window: size}), uids: map[string]bool{},
				channels: map[conversation.ChannelKey]int64{}, large: map[conversation.ChannelKey]bool{}}
			skip := conversation.DefaultSkipSet()
			rng := rand.New(rand.NewPCG(seed, 1))
			var evs []conversation.Event
			for _, r := range recs {
				_ = d.model.Apply(r.Value) // every record of a clean Differential stream is valid
				ev, err := conversation.DecodeEvent(r.Value, time.Unix(1700000000, 0), 0)
				if err != nil {
					t.Fatal(err)
				}
				if p, _ := skip.Filter([]conversation.Event{ev}); len(p) == 1 {
					evs = append(evs, ev)
				}
				if len(evs) >= 1+rng.IntN(60) {
					d.apply(evs)
					if rng.IntN(5) == 0 { // the offset commit was lost: part of the batch comes again
						d.apply(evs[rng.IntN(len(evs)):])
					}
					evs = nil
					if rng.IntN(3) == 0 { // store and model agree here: the API acts between batches
						d.mutate(rng)
					}
				}
			}
			d.apply(evs)
			d.compare()
			if d.followers == 0 || d.up == 0 || (d.down == 0 && large.Leave == large.Enter) {
				t.Fatalf("followers %d, crossings up %d, down %d: the test does not test large channels", d.followers, d.up, d.down)
			}
			t.Logf("followers=%d written=%d crossings up=%d down=%d", d.followers, d.written, d.up, d.down)
		})
	}
}

// diff is one differential run: the store, the model, and what the run saw.
type diff struct {
	t     *testing.T
	s     Store
	model *refmodel.Model
	// uids are every user the events name; channels every channel, with large whether it is now.
	uids     map[string]bool
	channels map[conversation.ChannelKey]int64
	large    map[conversation.ChannelKey]bool
	// written counts rows written; up and down the threshold crossings; followers the follower rows
	// at the end.
	written, up, down, followers int
}

func (d *diff) apply(evs []conversation.Event) {
	d.t.Helper()
	res, err := d.s.ApplyBatch(context.Background(), evs)
	if err != nil {
		d.t.Fatal(err)
	}
	d.written += res.RowsWritten
	touched := map[conversation.ChannelKey]int64{}
	for _, e := range evs {
		touched[e.Key()] = 0
		d.channels[e.Key()] = 0
		if m := e.Message; m != nil {
			d.uids[m.FromUID] = true
			if m.ChannelType == conversation.ChannelTypePerson {
				d.uids[m.ChannelID] = true
			}
			for _, u := range m.Subscribers {
				d.uids[u] = true
			}
		} else {
			for _, u := range e.Membership.UIDs {
				d.uids[u] = true
			}
		}
	}
	states, _, err := d.s.LargeStates(context.Background(), touched)
	if err != nil {
		d.t.Fatal(err)
	}
	for k, st := range states {
		switch was := d.large[k]; {
		case st.Large && !was:
			d.up++
		case !st.Large && was:
			d.down++
		}
		d.large[k] = st.Large
	}
}

// mutate makes one API call on a random row, through the store and the model alike.
func (d *diff) mutate(rng *rand.Rand) {
	rows := d.model.Rows()
	if len(rows) == 0 {
		return
	}
	r := rows[rng.IntN(len(rows))]
	k := conversation.ConvKey{UID: r.UID, ChannelID: r.ChannelID, ChannelType: r.ChannelType}
	var change func(conversation.Row, int64) (conversation.Row, bool)
	switch rng.IntN(3) {
	case 0:
		d.model.Delete(r.UID, r.ChannelID, r.ChannelType)
		change = conversation.Delete
	case 1:
		unread := int64(rng.IntN(5))
		d.model.SetUnread(r.UID, r.ChannelID, r.ChannelType, unread)
		change = func(row conversation.Row, _ int64) (conversation.Row, bool) {
			return conversation.SetUnread(row, unread)
		}
	default:
		d.model.ClearUnread(r.UID, r.ChannelID, r.ChannelType)
		change = func(row conversation.Row, _ int64) (conversation.Row, bool) { return conversation.SetUnread(row, 0) }
	}
	if _, err := d.s.Update(context.Background(), k, change); err != nil {
		d.t.Fatalf("update %v: %v", k, err)
	}
}

// compare checks every user's conversations, as sync reads them, against the model's.
func (d *diff) compare() {
	t := d.t
	t.Helper()
	want := map[conversation.ConvKey]refmodel.Row{}
	for _, w := range d.model.Rows() {
		w.ChangedAt = 0
		want[conversation.ConvKey{UID: w.UID, ChannelID: w.ChannelID, ChannelType: w.ChannelType}] = w
	}
	bad := 0
	report := func(format string, args ...any) {
		if bad++; bad < 20 {
			t.Errorf(format, args...)
		}
	}
	uids := make([]string, 0, len(d.uids))
	for u := range d.uids {
		uids = append(uids, u)
	}
	slices.Sort(uids)
	seen := 0
	for _, u := range uids {
		rows, _, err := d.s.UserRows(context.Background(), u)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range rows {
			if g.Follows {
				d.followers++
			}
			if g.Hidden {
				continue
			}
			w, ok := want[g.ConvKey]
			if !ok {
				report("%v: unexpected %+v", g.ConvKey, g)
				continue
			}
			seen++
			gf := refmodel.Row{Key: w.Key, Unread: g.Unread, ReadedToMsgSeq: g.ReadedToMsgSeq, DeletedAtSeq: g.DeletedAtSeq,
				IsDeleted: g.Deleted, LastMsgSeq: g.LastMsgSeq, LastClientMsgNo: g.LastClientMsgNo, Timestamp: g.Timestamp}
			if gf != w {
				report("%v: got %+v (follows %v), want %+v", g.ConvKey, gf, g.Follows, w)
			}
		}
	}
	if seen != len(want) {
		report("%d of the model's %d conversations found", seen, len(want))
	}
	if bad > 0 {
		t.Fatalf("%d conversations differ from the model", bad)
	}
}
