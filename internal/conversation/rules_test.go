package conversation

import (
	"hash/crc32"
	"slices"
	"testing"
)

func TestPersonKey(t *testing.T) {
	// "a" and "b": CRC32("a") = 0xe8b7be43 > CRC32("b") = 0x71beeff9, so "a" goes first.
	if crc32.ChecksumIEEE([]byte("a")) <= crc32.ChecksumIEEE([]byte("b")) {
		t.Fatal("test assumption about CRC32 values is wrong")
	}
	tests := []struct {
		name, a, b, want string
	}{
		{"larger checksum first", "a", "b", "a@b"},
		{"either direction gives the same key", "b", "a", "a@b"},
		{"same uid twice", "u1", "u1", "u1@u1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := PersonKey(tt.a, tt.b); got != tt.want {
				t.Errorf("PersonKey(%q, %q) = %q, want %q", tt.a, tt.b, got, tt.want)
			}
		})
	}
	t.Run("ties broken by the larger uid first", func(t *testing.T) {
		// "plumless" and "buckeroo" are a known CRC32-IEEE collision.
		x, y := "plumless", "buckeroo"
		if crc32.ChecksumIEEE([]byte(x)) != crc32.ChecksumIEEE([]byte(y)) {
			t.Fatal("test assumption: the two uids collide")
		}
		for _, pair := range [][2]string{{x, y}, {y, x}} {
			if got := PersonKey(pair[0], pair[1]); got != "plumless@buckeroo" {
				t.Errorf("PersonKey(%q, %q) = %q, want plumless@buckeroo", pair[0], pair[1], got)
			}
		}
	})
}

func TestProjected(t *testing.T) {
	skip := DefaultSkipSet()
	tests := []struct {
		name string
		m    Message
		want bool
	}{
		{"plain group message", Message{ChannelType: 2}, true},
		{"no_persist", Message{ChannelType: 2, Header: Header{NoPersist: 1}}, false},
		{"sync_once", Message{ChannelType: 1, Header: Header{SyncOnce: 1}}, false},
		{"skipped channel type 6", Message{ChannelType: 6}, false},
		{"skipped channel type 9", Message{ChannelType: 9}, false},
		{"channel type 10 is not skipped by default", Message{ChannelType: 10}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := skip.Projected(&tt.m); got != tt.want {
				t.Errorf("Projected = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFilter(t *testing.T) {
	skip := DefaultSkipSet()
	group := Event{Message: &Message{ChannelType: 2, MessageSeq: 1}}
	info := Event{Message: &Message{ChannelType: 6, MessageSeq: 2}}
	noPersist := Event{Message: &Message{ChannelType: 2, MessageSeq: 3, Header: Header{NoPersist: 1}}}
	join := Event{Membership: &Membership{Channel: Channel{ID: "g", Type: 6}, UIDs: []string{"a"}, Added: true}}
	tests := []struct {
		name        string
		in, want    []Event
		wantSkipped int
	}{
		{"nothing to drop", []Event{group, join}, []Event{group, join}, 0},
		{"skipped type and no_persist dropped, order kept", []Event{info, group, noPersist, join}, []Event{group, join}, 2},
		{"membership of a skipped type is kept: it is not a message", []Event{join}, []Event{join}, 0},
		{"all dropped", []Event{info, noPersist}, []Event{}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, skipped := skip.Filter(tt.in)
			if skipped != tt.wantSkipped || len(got) != len(tt.want) {
				t.Fatalf("Filter = %d events, %d skipped; want %d, %d", len(got), skipped, len(tt.want), tt.wantSkipped)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("event %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
			// The records the events came from are kept alike (the projector filters both).
			srcs := make([]Event, len(tt.in))
			copy(srcs, tt.in)
			events, kept, skipped := FilterAlong(&skip, tt.in, srcs)
			if skipped != tt.wantSkipped || len(kept) != len(events) {
				t.Fatalf("FilterAlong = %d events, %d alongside, %d skipped", len(events), len(kept), skipped)
			}
			for i := range events {
				if kept[i] != events[i] {
					t.Errorf("alongside %d = %+v, want %+v", i, kept[i], events[i])
				}
			}
		})
	}
}

func TestRecipients(t *testing.T) {
	tests := []struct {
		name    string
		m       Message
		members []string
		want    []string
	}{
		{"person: both participants", Message{ChannelType: 1, FromUID: "a", ChannelID: "b"}, []string{"x"}, []string{"a", "b"}},
		{"person: note to self is one row", Message{ChannelType: 1, FromUID: "a", ChannelID: "a"}, nil, []string{"a"}},
		{"group: inline subscribers win over membership", Message{ChannelType: 2, Subscribers: []string{"b", "c", "b"}}, []string{"x"}, []string{"b", "c"}},
		{"group: empty inline subscribers reach nobody", Message{ChannelType: 2, Subscribers: []string{}}, []string{"x"}, []string{}},
		{"group: stored membership without subscribers", Message{ChannelType: 2}, []string{"x", "y"}, []string{"x", "y"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Recipients(&tt.m, tt.members); !slices.Equal(got, tt.want) {
				t.Fatalf("Recipients = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestConvKeyFor(t *testing.T) {
	m := &Message{ChannelType: 1, FromUID: "alice", ChannelID: "bob"}
	if got := ConvKeyFor(m, "alice"); got.ChannelID != "bob" {
		t.Errorf("sender's conversation is with %q, want bob", got.ChannelID)
	}
	if got := ConvKeyFor(m, "bob"); got.ChannelID != "alice" {
		t.Errorf("recipient's conversation is with %q, want alice", got.ChannelID)
	}
	g := &Message{ChannelType: 2, FromUID: "alice", ChannelID: "g1"}
	if got := ConvKeyFor(g, "bob"); got != (ConvKey{"bob", "g1", 2}) {
		t.Errorf("group conversation key = %+v", got)
	}
}

func msg(seq int64, from string, redDot uint8) *Message {
	return &Message{MessageSeq: seq, FromUID: from, ChannelID: "g1", ChannelType: 2, ClientMsgNo: "c", Timestamp: 1000 + seq, Header: Header{RedDot: redDot}}
}

func TestApplyMessage(t *testing.T) {
	key := ConvKey{UID: "u", ChannelID: "g1", ChannelType: 2}
	live := func(unread, readed, last int64) Row {
		return Row{ConvKey: key, Unread: unread, ReadedToMsgSeq: readed, LastMsgSeq: last, LastClientMsgNo: "c", Timestamp: 1000 + last, Version: 7}
	}
	tomb := func(deletedAt, readed int64) Row {
		r := live(0, readed, deletedAt)
		r.Deleted, r.DeletedAtSeq, r.DeletedAtMS = true, deletedAt, 99
		return r
	}
	tests := []struct {
		name        string
		row         Row
		exists      bool
		m           *Message
		want        Row
		wantChanged bool
	}{
		{"no row: created and counted", Row{ConvKey: key}, false, msg(5, "x", 1), live(1, 0, 5), true},
		{"no row: red_dot 0 creates with unread 0", Row{ConvKey: key}, false, msg(5, "x", 0), live(0, 0, 5), true},
		{"no row: own message creates read", Row{ConvKey: key}, false, msg(5, "u", 1), live(0, 5, 5), true},
		{"row: counts and moves last", live(2, 3, 5), true, msg(6, "x", 1), live(3, 3, 6), true},
		{"row: red_dot 0 moves last only", live(2, 3, 5), true, msg(6, "x", 0), live(2, 3, 6), true},
		{"row: late message above read point counts, last stays", live(2, 3, 8), true, msg(6, "x", 1), live(3, 3, 8), true},
		{"row: late message at read point changes nothing", live(2, 6, 8), true, msg(6, "x", 1), live(2, 6, 8), false},
		{"row: own newest message marks read", live(4, 3, 8), true, msg(9, "u", 1), live(0, 9, 9), true},
		{"row: own message equal to last marks read", live(4, 3, 8), true, msg(8, "u", 1), live(0, 8, 8), true},
		{"row: late own message keeps newer unread", live(2, 3, 8), true, msg(6, "u", 1), live(2, 6, 8), true},
		{"row: late own message below read point changes nothing", live(2, 7, 8), true, msg(6, "u", 1), live(2, 7, 8), false},
		{"tombstone: message at delete point changes nothing", tomb(8, 3), true, msg(8, "x", 1), tomb(8, 3), false},
		{"tombstone: message below delete point changes nothing", tomb(8, 3), true, msg(4, "x", 1), tomb(8, 3), false},
		{"tombstone: newer message revives, counts only after delete", tomb(8, 3), true, msg(9, "x", 1),
			Row{ConvKey: key, Unread: 1, ReadedToMsgSeq: 3, DeletedAtSeq: 8, LastMsgSeq: 9, LastClientMsgNo: "c", Timestamp: 1009, Version: 7}, true},
		{"tombstone: newer red_dot 0 message revives with unread 0", tomb(8, 3), true, msg(9, "x", 0),
			Row{ConvKey: key, ReadedToMsgSeq: 3, DeletedAtSeq: 8, LastMsgSeq: 9, LastClientMsgNo: "c", Timestamp: 1009, Version: 7}, true},
		{"tombstone: own newer message revives read", tomb(8, 3), true, msg(9, "u", 1),
			Row{ConvKey: key, ReadedToMsgSeq: 9, DeletedAtSeq: 8, LastMsgSeq: 9, LastClientMsgNo: "c", Timestamp: 1009, Version: 7}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, changed := ApplyMessage(tt.row, tt.exists, tt.m)
			if !tt.exists {
				tt.want.Version = 0 // a created row has no version until the store gives it one
			}
			if got != tt.want || changed != tt.wantChanged {
				t.Errorf("ApplyMessage =\n  %+v, %v\nwant\n  %+v, %v", got, changed, tt.want, tt.wantChanged)
			}
		})
	}
	t.Run("revived row then late message between delete and read points does not count", func(t *testing.T) {
		r, _ := ApplyMessage(tomb(8, 3), true, msg(10, "x", 1)) // unread 1
		r, changed := ApplyMessage(r, true, msg(7, "x", 1))     // 7 <= deleted_at_seq 8
		if r.Unread != 1 || changed {
			t.Errorf("unread = %d changed = %v, want 1 false", r.Unread, changed)
		}
	})
}

func TestSetUnread(t *testing.T) {
	row := Row{ConvKey: ConvKey{"u", "g1", 2}, Unread: 3, ReadedToMsgSeq: 2, LastMsgSeq: 5}
	tests := []struct {
		name        string
		row         Row
		unread      int64
		wantUnread  int64
		wantReaded  int64
		wantChanged bool
	}{
		{"zero marks everything read", row, 0, 0, 5, true},
		{"non-zero keeps the read point", row, 7, 7, 2, true},
		{"same value changes nothing", row, 3, 3, 2, false},
		{"tombstone changes nothing", Row{ConvKey: row.ConvKey, Deleted: true, DeletedAtSeq: 5, LastMsgSeq: 5}, 4, 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, changed := SetUnread(tt.row, tt.unread)
			if got.Unread != tt.wantUnread || got.ReadedToMsgSeq != tt.wantReaded || changed != tt.wantChanged {
				t.Errorf("SetUnread = unread %d readed %d changed %v, want %d %d %v", got.Unread, got.ReadedToMsgSeq, changed, tt.wantUnread, tt.wantReaded, tt.wantChanged)
			}
		})
	}
}

func TestDelete(t *testing.T) {
	row := Row{ConvKey: ConvKey{"u", "g1", 2}, Unread: 3, ReadedToMsgSeq: 2, LastMsgSeq: 5}
	got, changed := Delete(row, 1234)
	want := Row{ConvKey: row.ConvKey, ReadedToMsgSeq: 2, LastMsgSeq: 5, Deleted: true, DeletedAtSeq: 5, DeletedAtMS: 1234}
	if got != want || !changed {
		t.Errorf("Delete = %+v, %v, want %+v, true", got, changed, want)
	}
	again, changed := Delete(got, 5678)
	if again != got || changed {
		t.Errorf("deleting a tombstone changed it: %+v, %v", again, changed)
	}
}
