package httpapi

import (
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
)

type syncReq = map[string]any

// TestSyncRules walks every rule of contract §2.1 end to end: rows made by the projector's write path
// (store.ApplyBatch with real events), read through the HTTP handler, each scenario on a fresh database.
func TestSyncRules(t *testing.T) {
	t.Run("person channel ids", func(t *testing.T) {
		f := newFixture(t, mysql.Options{}, Options{})
		f.apply(f.person("alice", "bob", 1))
		f.apply(f.person("bob", "alice", 2))

		// Each side sees the peer as channel_id; inside recents channel_id is the message's recipient.
		for _, tc := range []struct{ uid, peer string }{{"alice", "bob"}, {"bob", "alice"}} {
			items := syncOK(t, f.handler, syncReq{"uid": tc.uid, "msg_count": 10})
			if len(items) != 1 || items[0].ChannelID != tc.peer || items[0].ChannelType != 1 {
				t.Fatalf("%s: %s, want one conversation %s/1", tc.uid, ids(items), tc.peer)
			}
			r := items[0].Recents
			if len(r) != 2 || r[0].MessageSeq != 2 || r[0].FromUID != "bob" || r[0].ChannelID != "alice" ||
				r[1].MessageSeq != 1 || r[1].FromUID != "alice" || r[1].ChannelID != "bob" {
				t.Fatalf("%s: recents %+v", tc.uid, r)
			}
		}
		// The one who sent last has read everything; the other has one unread.
		if it := syncOK(t, f.handler, syncReq{"uid": "bob"})[0]; it.Unread != 0 || it.ReadedToMsgSeq != 2 {
			t.Fatalf("bob: unread %d readed_to %d", it.Unread, it.ReadedToMsgSeq)
		}
		if it := syncOK(t, f.handler, syncReq{"uid": "alice"})[0]; it.Unread != 1 || it.ReadedToMsgSeq != 1 {
			t.Fatalf("alice: unread %d readed_to %d", it.Unread, it.ReadedToMsgSeq)
		}
		// last_msg_seqs names the peer, as the client knows the channel.
		it := syncOK(t, f.handler, syncReq{"uid": "alice", "msg_count": 10, "last_msg_seqs": "bob:1:1"})[0]
		if got := seqs(it); !reflect.DeepEqual(got, []int64{2}) {
			t.Fatalf("alice with bob:1:1: recents %v, want [2]", got)
		}
	})

	t.Run("recents newest first and trimmed by last_msg_seqs", func(t *testing.T) {
		f := newFixture(t, mysql.Options{}, Options{})
		for seq := int64(1); seq <= 5; seq++ {
			f.apply(f.group("g1", seq, "u2", "u1", "u2"), f.group("g:x:1", seq, "u2", "u1", "u2"))
		}
		for _, tc := range []struct {
			name, last string
			g1, gx     []int64
		}{
			{"no last_msg_seqs", "", []int64{5, 4, 3}, []int64{5, 4, 3}},
			{"g1 at 3", "g1:2:3", []int64{5, 4}, []int64{5, 4, 3}},
			{"g1 up to date", "g1:2:5", []int64{}, []int64{5, 4, 3}},
			{"client ahead of the server", "g1:2:99", []int64{}, []int64{5, 4, 3}},
			{"colon in the channel id", "g:x:1:2:4|g1:2:0", []int64{5, 4, 3}, []int64{5}},
			{"another type does not match", "g1:3:5", []int64{5, 4, 3}, []int64{5, 4, 3}},
			{"unknown channel is ignored", "zz:2:1", []int64{5, 4, 3}, []int64{5, 4, 3}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				items := syncOK(t, f.handler, syncReq{"uid": "u1", "msg_count": 3, "last_msg_seqs": tc.last})
				if got := seqs(find(t, items, "g1", 2)); !reflect.DeepEqual(got, tc.g1) {
					t.Errorf("g1 recents %v, want %v", got, tc.g1)
				}
				if got := seqs(find(t, items, "g:x:1", 2)); !reflect.DeepEqual(got, tc.gx) {
					t.Errorf("g:x:1 recents %v, want %v", got, tc.gx)
				}
			})
		}
		// last_msg_seqs never chooses conversations: both come back whatever it says.
		if items := syncOK(t, f.handler, syncReq{"uid": "u1", "last_msg_seqs": "g1:2:5"}); len(items) != 2 {
			t.Fatalf("last_msg_seqs filtered conversations: %s", ids(items))
		}
	})

	t.Run("deleted_at_seq hides older messages", func(t *testing.T) {
		f := newFixture(t, mysql.Options{}, Options{})
		for seq := int64(1); seq <= 3; seq++ {
			f.apply(f.group("g1", seq, "u2", "u1", "u2"))
		}
		mutateOK(t, f.handler, "/conversations/delete", syncReq{"uid": "u1", "channel_id": "g1", "channel_type": 2})
		if items := syncOK(t, f.handler, syncReq{"uid": "u1", "msg_count": 10}); len(items) != 0 {
			t.Fatalf("deleted conversation returned: %s", ids(items))
		}
		tomb := syncOK(t, f.handler, syncReq{"uid": "u1", "msg_count": 10, "include_deleted": 1})
		if len(tomb) != 1 || tomb[0].IsDeleted != 1 || len(tomb[0].Recents) != 0 || tomb[0].Unread != 0 {
			t.Fatalf("tombstone %+v, want is_deleted 1, no recents, unread 0", tomb)
		}
		f.apply(f.group("g1", 4, "u2", "u1", "u2"))
		it := syncOK(t, f.handler, syncReq{"uid": "u1", "msg_count": 10})
		if len(it) != 1 || it[0].IsDeleted != 0 || it[0].Unread != 1 || !reflect.DeepEqual(seqs(it[0]), []int64{4}) {
			t.Fatalf("revived %+v, want unread 1 and recents [4] only", it)
		}
		// The other member deleted nothing and sees everything.
		if got := seqs(syncOK(t, f.handler, syncReq{"uid": "u2", "msg_count": 10})[0]); !reflect.DeepEqual(got, []int64{4, 3, 2, 1}) {
			t.Fatalf("u2 recents %v", got)
		}
	})

	t.Run("late joiner and removed member", func(t *testing.T) {
		f := newFixture(t, mysql.Options{}, Options{})
		f.apply(f.group("g1", 1, "a", "a"), f.group("g1", 2, "a", "a"))
		f.apply(f.group("g1", 3, "a", "a", "late"))
		f.apply(f.group("g1", 4, "a", "a")) // late is left out from here on
		it := syncOK(t, f.handler, syncReq{"uid": "late", "msg_count": 10})
		if len(it) != 1 || it[0].LastMsgSeq != 3 || it[0].Unread != 1 {
			t.Fatalf("late: %+v", it)
		}
		// Earlier messages of the window are shown, as in WuKongIM; seq 4 never reached late.
		if got := seqs(it[0]); !reflect.DeepEqual(got, []int64{3, 2, 1}) {
			t.Fatalf("late recents %v, want [3 2 1]", got)
		}
	})

	t.Run("msg_count 0, negative, and over the cap", func(t *testing.T) {
		f := newFixture(t, mysql.Options{}, Options{MaxMsgCount: 3})
		for seq := int64(1); seq <= 5; seq++ {
			f.apply(f.group("g1", seq, "u2", "u1", "u2"))
		}
		for _, tc := range []struct {
			body syncReq
			want []int64
		}{
			{syncReq{"uid": "u1"}, []int64{}},
			{syncReq{"uid": "u1", "msg_count": 0}, []int64{}},
			{syncReq{"uid": "u1", "msg_count": -4}, []int64{}},
			{syncReq{"uid": "u1", "msg_count": 2}, []int64{5, 4}},
			{syncReq{"uid": "u1", "msg_count": 1000}, []int64{5, 4, 3}},
		} {
			status, raw := post(t, f.handler, "/conversation/sync", tc.body)
			if status != http.StatusOK || !strings.Contains(string(raw), `"recents":[`) {
				t.Fatalf("%v: %d %s: recents must be an array, never null", tc.body, status, raw)
			}
			if got := seqs(syncOK(t, f.handler, tc.body)[0]); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("%v: recents %v, want %v", tc.body, got, tc.want)
			}
		}
	})

	t.Run("only_unread and exclude_channel_types", func(t *testing.T) {
		f := newFixture(t, mysql.Options{}, Options{})
		f.apply(f.group("g1", 1, "u2", "u1", "u2"), f.group("g2", 1, "u1", "u1", "u2"), f.person("u3", "u1", 1),
			f.msg(conversation.Message{MessageSeq: 1, FromUID: "u2", ChannelID: "cs1", ChannelType: 3, Subscribers: []string{"u1"}, Header: redDot}))
		for _, tc := range []struct {
			body syncReq
			want string
		}{
			{syncReq{"uid": "u1"}, "cs1/3 g1/2 g2/2 u3/1"},
			{syncReq{"uid": "u1", "only_unread": 1}, "cs1/3 g1/2 u3/1"},
			{syncReq{"uid": "u1", "only_unread": 0}, "cs1/3 g1/2 g2/2 u3/1"},
			{syncReq{"uid": "u1", "exclude_channel_types": []int{2}}, "cs1/3 u3/1"},
			{syncReq{"uid": "u1", "exclude_channel_types": []int{1, 3}}, "g1/2 g2/2"},
			{syncReq{"uid": "u1", "exclude_channel_types": []int{}}, "cs1/3 g1/2 g2/2 u3/1"},
			{syncReq{"uid": "u1", "exclude_channel_types": []int{2}, "only_unread": 1}, "cs1/3 u3/1"},
		} {
			if got := ids(syncOK(t, f.handler, tc.body)); got != tc.want {
				t.Errorf("%v: %s, want %s", tc.body, got, tc.want)
			}
		}
	})

	t.Run("include_deleted and is_deleted", func(t *testing.T) {
		f := newFixture(t, mysql.Options{}, Options{})
		f.apply(f.group("g1", 1, "u2", "u1", "u2"), f.group("g2", 1, "u2", "u1", "u2"))
		mutateOK(t, f.handler, "/conversations/delete", syncReq{"uid": "u1", "channel_id": "g1", "channel_type": 2})
		status, raw := post(t, f.handler, "/conversation/sync", syncReq{"uid": "u1"})
		if status != http.StatusOK || strings.Contains(string(raw), "is_deleted") || strings.Contains(string(raw), `"g1"`) {
			t.Fatalf("without include_deleted: %s", raw)
		}
		items := syncOK(t, f.handler, syncReq{"uid": "u1", "include_deleted": 1})
		if ids(items) != "g1/2 g2/2" || find(t, items, "g1", 2).IsDeleted != 1 || find(t, items, "g2", 2).IsDeleted != 0 {
			t.Fatalf("with include_deleted: %+v", items)
		}
		_, raw = post(t, f.handler, "/conversation/sync", syncReq{"uid": "u1", "include_deleted": 1})
		if strings.Count(string(raw), `"is_deleted":1`) != 1 || strings.Contains(string(raw), `"is_deleted":0`) {
			t.Fatalf("is_deleted must be 1 on the tombstone and absent elsewhere: %s", raw)
		}
	})

	t.Run("version filter is strictly greater", func(t *testing.T) {
		f := newFixture(t, mysql.Options{}, Options{})
		f.apply(f.group("g1", 1, "u2", "u1", "u2"))
		f.apply(f.group("g2", 1, "u2", "u1", "u2"))
		all := syncOK(t, f.handler, syncReq{"uid": "u1"})
		v1, v2 := find(t, all, "g1", 2).Version, find(t, all, "g2", 2).Version
		if v2 <= v1 {
			t.Fatalf("versions %d then %d: want increasing", v1, v2)
		}
		if got := ids(syncOK(t, f.handler, syncReq{"uid": "u1", "version": v1})); got != "g2/2" {
			t.Fatalf("version %d: %s, want g2/2", v1, got)
		}
		if got := syncOK(t, f.handler, syncReq{"uid": "u1", "version": v2}); len(got) != 0 {
			t.Fatalf("version %d: %s, want nothing", v2, ids(got))
		}
		if got := ids(syncOK(t, f.handler, syncReq{"uid": "u1", "version": -1})); got != "g1/2 g2/2" {
			t.Fatalf("negative version is a full sync: %s", got)
		}
	})

	t.Run("limit keeps the lowest versions and never splits one", func(t *testing.T) {
		f := newFixture(t, mysql.Options{}, Options{})
		f.apply(f.group("g0", 1, "u2", "u1", "u2"))
		base := syncOK(t, f.handler, syncReq{"uid": "u1"})[0].Version
		// One batch: three rows share a version. Then two more versions.
		f.apply(f.group("a", 1, "u2", "u1", "u2"), f.group("b", 1, "u2", "u1", "u2"), f.group("c", 1, "u2", "u1", "u2"))
		f.apply(f.group("d", 2, "u2", "u1", "u2"))
		f.apply(f.group("e", 3, "u2", "u1", "u2"))
		for _, tc := range []struct {
			limit int
			want  string
		}{
			{0, "e/2 d/2 a/2 b/2 c/2"},
			{1, "a/2 b/2 c/2"},
			{3, "a/2 b/2 c/2"},
			{4, "d/2 a/2 b/2 c/2"},
			{5, "e/2 d/2 a/2 b/2 c/2"},
			{50, "e/2 d/2 a/2 b/2 c/2"},
		} {
			if got := ids(syncOK(t, f.handler, syncReq{"uid": "u1", "version": base, "limit": tc.limit})); got != tc.want {
				t.Errorf("limit %d: %s, want %s", tc.limit, got, tc.want)
			}
		}
		// A client paging with limit 1 and its max version sees every row exactly once.
		seen, v := map[string]int{}, base
		for range 10 {
			items := syncOK(t, f.handler, syncReq{"uid": "u1", "version": v, "limit": 1})
			if len(items) == 0 {
				break
			}
			for _, it := range items {
				seen[it.ChannelID]++
				v = max(v, it.Version)
			}
		}
		if !reflect.DeepEqual(seen, map[string]int{"a": 1, "b": 1, "c": 1, "d": 1, "e": 1}) {
			t.Fatalf("paging with limit 1 saw %v", seen)
		}
		// limit does not apply to a full sync.
		if got := len(syncOK(t, f.handler, syncReq{"uid": "u1", "limit": 1})); got != 6 {
			t.Fatalf("full sync with limit 1: %d rows, want 6", got)
		}
	})

	t.Run("full sync cap keeps the newest", func(t *testing.T) {
		f := newFixture(t, mysql.Options{}, Options{MaxConversations: 3})
		for i, ch := range []string{"g1", "g2", "g3", "g4", "g5"} {
			f.apply(f.group(ch, int64(i+1), "u2", "u1", "u2"))
		}
		if got := ids(syncOK(t, f.handler, syncReq{"uid": "u1"})); got != "g5/2 g4/2 g3/2" {
			t.Fatalf("full sync: %s, want the 3 newest", got)
		}
		// An incremental sync is not capped: it must never drop a change.
		if got := len(syncOK(t, f.handler, syncReq{"uid": "u1", "version": 1})); got != 5 {
			t.Fatalf("incremental sync: %d rows, want 5", got)
		}
	})

	t.Run("ordering: timestamp desc, then channel_id, then channel_type", func(t *testing.T) {
		f := newFixture(t, mysql.Options{}, Options{})
		at := func(ch string, typ uint8, ts int64) conversation.Event {
			return f.msg(conversation.Message{MessageSeq: 1, FromUID: "u2", ChannelID: ch, ChannelType: typ, Timestamp: ts, Subscribers: []string{"u1"}, Header: redDot})
		}
		f.apply(at("b", 2, 100), at("a", 3, 100), at("a", 2, 100), at("B", 2, 100), at("z", 2, 50), at("old", 2, 10), at("new", 4, 200))
		if got := ids(syncOK(t, f.handler, syncReq{"uid": "u1"})); got != "new/4 B/2 a/2 a/3 b/2 z/2 old/2" {
			t.Fatalf("order %s", got)
		}
	})

	t.Run("unknown user", func(t *testing.T) {
		f := newFixture(t, mysql.Options{}, Options{})
		status, raw := post(t, f.handler, "/conversation/sync", syncReq{"uid": "nobody", "msg_count": 5})
		if status != http.StatusOK || string(raw) != "[]" {
			t.Fatalf("%d %s, want 200 []", status, raw)
		}
	})
}
