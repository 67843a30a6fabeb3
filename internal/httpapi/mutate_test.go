package httpapi

import (
	"context"
	"testing"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
)

// row reads one conversation straight from the store, tombstones included.
func (f *fixture) row(uid, channelID string, typ uint8) (conversation.Row, bool) {
	f.t.Helper()
	rows, _, err := f.store.UserRows(context.Background(), uid)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, r := range rows {
		if r.ChannelID == channelID && r.ChannelType == typ {
			return r, true
		}
	}
	return conversation.Row{}, false
}

// TestMutations: setUnread, delete and clearUnread against the real store (contract §2.2–2.4, §3.5).
func TestMutations(t *testing.T) {
	g1 := syncReq{"uid": "u1", "channel_id": "g1", "channel_type": 2}
	with := func(extra syncReq) syncReq {
		out := syncReq{}
		for k, v := range g1 {
			out[k] = v
		}
		for k, v := range extra {
			out[k] = v
		}
		return out
	}
	setup := func(t *testing.T) *fixture {
		f := newFixture(t, mysql.Options{}, Options{})
		// u1 has read up to 1 (own message), then 3 unread.
		f.apply(f.group("g1", 1, "u1", "u1", "u2"))
		f.apply(f.group("g1", 2, "u2", "u1", "u2"), f.group("g1", 3, "u2", "u1", "u2"), f.group("g1", 4, "u2", "u1", "u2"))
		return f
	}

	t.Run("setUnread sets unread and bumps the version", func(t *testing.T) {
		f := setup(t)
		before, _ := f.row("u1", "g1", 2)
		if before.Unread != 3 || before.ReadedToMsgSeq != 1 {
			t.Fatalf("setup: %+v", before)
		}
		mutateOK(t, f.handler, "/conversations/setUnread", with(syncReq{"unread": 1, "message_seq": 3}))
		after, _ := f.row("u1", "g1", 2)
		if after.Unread != 1 || after.ReadedToMsgSeq != 1 || after.Version <= before.Version {
			t.Fatalf("after setUnread 1: %+v (before %+v)", after, before)
		}
		// Another device syncing from the old version learns of it.
		if items := syncOK(t, f.handler, syncReq{"uid": "u1", "version": before.Version}); len(items) != 1 || items[0].Unread != 1 {
			t.Fatalf("incremental sync after setUnread: %+v", items)
		}
	})

	t.Run("setUnread 0 marks everything read", func(t *testing.T) {
		f := setup(t)
		mutateOK(t, f.handler, "/conversations/setUnread", with(syncReq{"unread": 0}))
		r, _ := f.row("u1", "g1", 2)
		if r.Unread != 0 || r.ReadedToMsgSeq != 4 {
			t.Fatalf("after setUnread 0: %+v", r)
		}
	})

	t.Run("a setUnread that changes nothing bumps nothing", func(t *testing.T) {
		f := setup(t)
		before, _ := f.row("u1", "g1", 2)
		mutateOK(t, f.handler, "/conversations/setUnread", with(syncReq{"unread": 3}))
		if after, _ := f.row("u1", "g1", 2); after != before {
			t.Fatalf("no-op setUnread changed the row: %+v -> %+v", before, after)
		}
		if items := syncOK(t, f.handler, syncReq{"uid": "u1", "version": before.Version}); len(items) != 0 {
			t.Fatalf("no-op setUnread is visible to sync: %+v", items)
		}
	})

	t.Run("clearUnread is setUnread 0", func(t *testing.T) {
		f := setup(t)
		mutateOK(t, f.handler, "/conversations/clearUnread", with(syncReq{"message_seq": 2}))
		r, _ := f.row("u1", "g1", 2)
		if r.Unread != 0 || r.ReadedToMsgSeq != 4 {
			t.Fatalf("after clearUnread: %+v", r)
		}
		v := r.Version
		mutateOK(t, f.handler, "/conversations/clearUnread", g1)
		if r, _ := f.row("u1", "g1", 2); r.Version != v {
			t.Fatal("a second clearUnread bumped the version")
		}
	})

	t.Run("delete makes a tombstone once", func(t *testing.T) {
		f := setup(t)
		before, _ := f.row("u1", "g1", 2)
		mutateOK(t, f.handler, "/conversations/delete", g1)
		r, _ := f.row("u1", "g1", 2)
		if !r.Deleted || r.DeletedAtSeq != 4 || r.Unread != 0 || r.ReadedToMsgSeq != 1 || r.Version <= before.Version {
			t.Fatalf("after delete: %+v", r)
		}
		mutateOK(t, f.handler, "/conversations/delete", g1)
		if again, _ := f.row("u1", "g1", 2); again != r {
			t.Fatalf("second delete changed the tombstone: %+v -> %+v", r, again)
		}
		// setUnread and clearUnread on a tombstone: 200, nothing changes.
		mutateOK(t, f.handler, "/conversations/setUnread", with(syncReq{"unread": 5}))
		mutateOK(t, f.handler, "/conversations/clearUnread", g1)
		if again, _ := f.row("u1", "g1", 2); again != r {
			t.Fatalf("mutation of a tombstone changed it: %+v -> %+v", r, again)
		}
		// Only u1's conversation is gone.
		if other, _ := f.row("u2", "g1", 2); other.Deleted {
			t.Fatal("delete reached another user's conversation")
		}
	})

	t.Run("no such conversation: 200 and nothing is created", func(t *testing.T) {
		f := setup(t)
		for _, path := range []string{"/conversations/setUnread", "/conversations/delete", "/conversations/clearUnread"} {
			for _, body := range []syncReq{
				{"uid": "u1", "channel_id": "nope", "channel_type": 2, "unread": 1},
				{"uid": "u1", "channel_id": "g1", "channel_type": 3, "unread": 1},
				{"uid": "stranger", "channel_id": "g1", "channel_type": 2, "unread": 1},
			} {
				mutateOK(t, f.handler, path, body)
				if _, ok := f.row(body["uid"].(string), body["channel_id"].(string), uint8(body["channel_type"].(int))); ok {
					t.Fatalf("%s %v created a row", path, body)
				}
			}
		}
	})

	t.Run("person channel addressed by the peer", func(t *testing.T) {
		f := setup(t)
		f.apply(f.person("bob", "u1", 1), f.person("bob", "u1", 2))
		mutateOK(t, f.handler, "/conversations/setUnread", syncReq{"uid": "u1", "channel_id": "bob", "channel_type": 1, "unread": 0})
		if r, _ := f.row("u1", "bob", 1); r.Unread != 0 || r.ReadedToMsgSeq != 2 {
			t.Fatalf("person conversation after setUnread 0: %+v", r)
		}
		if r, _ := f.row("bob", "u1", 1); r.Unread != 0 || r.ReadedToMsgSeq != 2 {
			t.Fatalf("the peer's row moved: %+v", r)
		}
	})
}
