package trafficgen_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/refmodel"
	"github.com/convsync/conversations/internal/trafficgen"
)

func generate(t *testing.T, cfg trafficgen.Config) ([]trafficgen.Record, trafficgen.Stats) {
	t.Helper()
	recs, stats, err := trafficgen.Generate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return recs, stats
}

func TestDeterministic(t *testing.T) {
	cfg := trafficgen.Differential(2000, 3)
	cfg.Chaos.MalformedRate = 0.02
	a, _ := generate(t, cfg)
	b, _ := generate(t, cfg)
	if len(a) != len(b) {
		t.Fatalf("same seed, %d then %d records", len(a), len(b))
	}
	for i := range a {
		if !bytes.Equal(a[i].Key, b[i].Key) || !bytes.Equal(a[i].Value, b[i].Value) {
			t.Fatalf("same seed, record %d differs:\n%s\n%s", i, a[i].Value, b[i].Value)
		}
	}
	cfg.Seed = 4
	c, _ := generate(t, cfg)
	if len(c) == len(a) && bytes.Equal(c[len(c)/2].Value, a[len(a)/2].Value) {
		t.Errorf("seeds 3 and 4 give the same stream")
	}
}

// TestRecordsFollowTheContract decodes every record: good ones are valid events keyed by their storage
// key, with one strictly increasing sequence per channel in a clean stream; malformed ones fail decoding.
func TestRecordsFollowTheContract(t *testing.T) {
	cfg := trafficgen.Differential(5000, 11)
	cfg.Chaos = trafficgen.Chaos{MalformedRate: 0.03}
	recs, stats := generate(t, cfg)
	last := map[conversation.ChannelKey]int64{}
	var bad, msgs, members int
	types := map[uint8]bool{}
	for _, r := range recs {
		ev, err := conversation.DecodeEvent(r.Value, time.Now(), 1<<20)
		if err != nil {
			if !errors.Is(err, conversation.ErrInvalid) {
				t.Fatalf("decode error %v is not ErrInvalid", err)
			}
			bad++
			continue
		}
		if got, want := string(r.Key), ev.Key().Key; got != want {
			t.Errorf("record key %q, want the storage key %q (%s)", got, want, r.Value)
		}
		if ev.Membership != nil {
			members++
			continue
		}
		m := ev.Message
		msgs++
		types[m.ChannelType] = true
		if m.Timestamp <= 0 || m.MessageID <= 0 {
			t.Errorf("timestamp and message_id must be set: %s", r.Value)
		}
		if m.Header.NoPersist == 1 || m.Header.SyncOnce == 1 {
			continue // transient messages carry the next seq without using it up
		}
		k := ev.Key()
		if m.MessageSeq != last[k]+1 {
			t.Errorf("channel %v: seq %d after %d, want consecutive", k, m.MessageSeq, last[k])
		}
		last[k] = m.MessageSeq
	}
	if bad != stats.Malformed || msgs != stats.Messages || members != stats.Memberships || len(recs) != stats.Records {
		t.Errorf("decoded %d bad, %d messages, %d memberships of %d; stats say %+v", bad, msgs, members, len(recs), stats)
	}
	if bad == 0 || members == 0 {
		t.Errorf("want malformed and membership records, got %d and %d", bad, members)
	}
	for _, typ := range []uint8{1, 2, 3, 6, 7, 8, 9} {
		if !types[typ] {
			t.Errorf("no message of channel type %d", typ)
		}
	}
}

func TestChaos(t *testing.T) {
	cfg := trafficgen.Differential(5000, 5)
	recs, stats := generate(t, cfg)
	if stats.Duplicates < 100 || stats.Reordered < 50 {
		t.Errorf("want plenty of chaos, got %+v", stats)
	}
	if len(recs) != stats.Records || stats.Records != stats.Messages+stats.Memberships+stats.Duplicates {
		t.Errorf("records %d, stats %+v", len(recs), stats)
	}
	// Reordering stays local: no message arrives more than a few seqs behind its channel's newest, which
	// keeps it inside any reasonable recents window.
	type seqKey struct {
		ch  conversation.ChannelKey
		seq int64
	}
	newest, seen := map[conversation.ChannelKey]int64{}, map[seqKey]bool{}
	worst := int64(0)
	for _, r := range recs {
		ev, err := conversation.DecodeEvent(r.Value, time.Now(), 0)
		if err != nil || ev.Message == nil {
			continue
		}
		k := ev.Key()
		if seen[seqKey{k, ev.Message.MessageSeq}] {
			continue // a duplicate may come much later: it changes nothing, late or not
		}
		seen[seqKey{k, ev.Message.MessageSeq}] = true
		worst = max(worst, newest[k]-ev.Message.MessageSeq)
		newest[k] = max(newest[k], ev.Message.MessageSeq)
	}
	if worst > 10 {
		t.Errorf("a message arrived %d seqs late, want local reordering only", worst)
	}
}

func TestSeqBaseContinuesSequences(t *testing.T) {
	cfg := trafficgen.Demo(10, 2, 50, 1)
	cfg.SeqBase = 1000
	recs, _ := generate(t, cfg)
	for _, r := range recs {
		ev, err := conversation.DecodeEvent(r.Value, time.Now(), 0)
		if err == nil && ev.Message != nil && (ev.Message.MessageSeq <= 1000 || ev.Message.MessageID <= 1000) {
			t.Fatalf("seq %d / id %d not above the base: %s", ev.Message.MessageSeq, ev.Message.MessageID, r.Value)
		}
	}
}

// TestDemoGivesU1Conversations runs the demo through the reference model: u1 must end with several person
// and group conversations, some unread.
func TestDemoGivesU1Conversations(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		for _, size := range [][3]int{{50, 8, 400}, {20, 5, 400}} {
			recs, _ := generate(t, trafficgen.Demo(size[0], size[1], size[2], seed))
			m := refmodel.New(refmodel.Options{})
			for _, r := range recs {
				if err := m.Apply(r.Value); err != nil {
					t.Fatal(err)
				}
			}
			var person, group, unread int
			for _, r := range m.Sync("u1") {
				if r.ChannelType == 1 {
					person++
				} else {
					group++
				}
				if r.Unread > 0 {
					unread++
				}
				if len(m.Recents(r, 0, 5)) == 0 {
					t.Errorf("seed %d: u1's %s has no recents", seed, r.ChannelID)
				}
			}
			if person < 3 || group < 3 || unread < 4 {
				t.Errorf("seed %d %v: u1 has %d person and %d group conversations, %d unread; want >= 3, 3, 4", seed, size, person, group, unread)
			}
		}
	}
}

func TestNamedWorkloads(t *testing.T) {
	for _, name := range trafficgen.Workloads {
		cfg, err := trafficgen.Named(name, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := trafficgen.Named("w9", 1); err == nil {
		t.Error("unknown workload accepted")
	}
}

// TestPeerShape checks the peer workload against its definition: 2,000 users, 200 groups of 20 from
// membership events, 1,000 person pairs, 30,000 messages about half to groups, red_dot 1, fixed seed.
func TestPeerShape(t *testing.T) {
	recs, stats := generate(t, trafficgen.Peer())
	again, _ := generate(t, trafficgen.Peer())
	if !bytes.Equal(recs[len(recs)-1].Value, again[len(again)-1].Value) {
		t.Error("peer is not fixed")
	}
	if stats.Messages != 30_000 || stats.Memberships != 200 {
		t.Errorf("stats %+v, want 30,000 messages and 200 membership events", stats)
	}
	pairs, groups, users := map[string]bool{}, 0, map[string]bool{}
	for _, r := range recs {
		ev, err := conversation.DecodeEvent(r.Value, time.Now(), 0)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Membership != nil {
			if len(ev.Membership.UIDs) != 20 {
				t.Errorf("group %s has %d members", ev.Membership.Channel.ID, len(ev.Membership.UIDs))
			}
			continue
		}
		m := ev.Message
		if m.Header.RedDot != 1 || m.Header.NoPersist != 0 || m.Header.SyncOnce != 0 || m.FromUID == "" {
			t.Fatalf("want plain red-dot messages from users: %s", r.Value)
		}
		users[m.FromUID] = true
		if m.ChannelType == 1 {
			pairs[ev.Key().Key] = true
		} else {
			groups++
		}
	}
	if len(pairs) > 1000 || len(pairs) < 990 || groups < 14_000 || groups > 16_000 {
		t.Errorf("%d pairs used, %d group messages; want ~1000 and ~15,000", len(pairs), groups)
	}
	if len(users) < 1900 || !strings.HasPrefix(string(recs[0].Key), "g") {
		t.Errorf("%d distinct senders; first record %s", len(users), recs[0].Value)
	}
}

func TestInvalidConfig(t *testing.T) {
	for _, cfg := range []trafficgen.Config{
		{Messages: 10, Users: 1},
		{Messages: 10, Users: 5},
		{Messages: 10, Users: 5, Groups: 1, Chaos: trafficgen.Chaos{DuplicateRate: 2}},
		{Messages: 10, Users: 5, Groups: 1, GroupSizeMin: 4, GroupSizeMax: 2},
	} {
		if _, err := trafficgen.New(cfg); err == nil {
			t.Errorf("config %+v accepted", cfg)
		}
	}
}
