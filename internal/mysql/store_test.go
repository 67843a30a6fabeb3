package mysql_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/storetest"
	"github.com/convsync/conversations/internal/testenv"
)

// The events of these tests are the contract suite's (internal/storetest), which runs the scenarios
// every store shares; what is left here is what only the database shows.
var (
	groupMsg  = storetest.GroupMsg
	personMsg = storetest.PersonMsg
	members   = storetest.Members
)

// rowsOf is uid's rows by channel id, hidden ones included.
func rowsOf(t *testing.T, s *mysql.Store, uid string) map[string]conversation.Row {
	t.Helper()
	return storetest.RowsByChannel(t, s, uid, true)
}

func apply(t *testing.T, s *mysql.Store, events ...conversation.Event) conversation.BatchResult {
	t.Helper()
	res, err := s.ApplyBatch(context.Background(), events)
	if err != nil {
		t.Fatalf("ApplyBatch: %v", err)
	}
	return res
}

func TestWindowPruningKeepsWatermark(t *testing.T) {
	const window = 10
	s, _ := testenv.Store(t, mysql.Options{RecentsWindow: window})
	for seq := int64(1); seq <= 40; seq++ {
		apply(t, s, groupMsg("g1", seq, "alice", "alice", "bob"))
	}
	var kept, minSeq int64
	if err := s.DB().QueryRow(`SELECT COUNT(*), MIN(message_seq) FROM messages WHERE channel_key = 'g1'`).Scan(&kept, &minSeq); err != nil {
		t.Fatal(err)
	}
	if kept != window || minSeq != 40-window+1 {
		t.Errorf("window holds %d messages from seq %d, want exactly the newest %d", kept, minSeq, window)
	}
	// A replay of a pruned message is below the watermark: it must not count again.
	res := apply(t, s, groupMsg("g1", minSeq-1, "alice", "alice", "bob"))
	if res.BelowWindow != 1 || res.Applied != 0 {
		t.Errorf("replay of pruned seq %d: %+v, want below window", minSeq-1, res)
	}
	if got := rowsOf(t, s, "bob")["g1"].Unread; got != 40 {
		t.Errorf("unread = %d, want 40", got)
	}
}

func TestConversationsLimitKeepsVersionsWhole(t *testing.T) {
	frozen := time.UnixMilli(5_000)
	s, _ := testenv.Store(t, mysql.Options{Now: func() time.Time { return frozen }})
	apply(t, s, groupMsg("a", 1, "x", "bob"), groupMsg("b", 1, "x", "bob")) // version 5000, two rows
	apply(t, s, groupMsg("c", 1, "x", "bob"))                               // 5001
	apply(t, s, groupMsg("d", 1, "x", "bob"))                               // 5002
	ctx := context.Background()
	// What sync selects out of the rows the store read (conversation.Select over UserRows).
	selected := func(q conversation.Query) ([]conversation.Row, error) {
		all, _, err := s.UserRows(ctx, q.UID)
		return conversation.Select(all, q), err
	}
	rows, err := selected(conversation.Query{UID: "bob", Version: 1, Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Version != 5000 || rows[1].Version != 5000 {
		t.Errorf("limit 1 returned %+v, want both rows of version 5000", rows)
	}
	rows, err = selected(conversation.Query{UID: "bob", Version: 5000, Limit: 1})
	if err != nil || len(rows) != 1 || rows[0].ChannelID != "c" {
		t.Errorf("next page = %+v (%v), want c", rows, err)
	}
	rows, err = selected(conversation.Query{UID: "bob", Version: 5002, Limit: 1})
	if err != nil || len(rows) != 0 || rows == nil {
		t.Errorf("past the end = %#v (%v), want an empty, non-nil slice", rows, err)
	}
	rows, err = selected(conversation.Query{UID: "bob", MaxFull: 3})
	if err != nil || len(rows) != 3 {
		t.Fatalf("full sync capped at 3 = %d rows (%v)", len(rows), err)
	}
	// Same timestamp everywhere: ties by channel_id ascending.
	for i, want := range []string{"a", "b", "c"} {
		if rows[i].ChannelID != want {
			t.Errorf("row %d = %s, want %s", i, rows[i].ChannelID, want)
		}
	}
}

func TestRecentsRanges(t *testing.T) {
	s, _ := testenv.Store(t, mysql.Options{})
	for seq := int64(1); seq <= 8; seq++ {
		apply(t, s, groupMsg("g1", seq, "alice", "bob"), personMsg("alice", "bob", seq))
	}
	pk := conversation.ChannelKey{Key: conversation.PersonKey("alice", "bob"), Type: 1}
	got, err := s.Recents(context.Background(), []conversation.SeqRange{
		{Channel: conversation.ChannelKey{Key: "g1", Type: 2}, After: 0, UpTo: 6, Count: 3},
		{Channel: pk, After: 6, UpTo: 8, Count: 10},
		{Channel: conversation.ChannelKey{Key: "none", Type: 2}, After: 0, UpTo: 5, Count: 0},
	})
	if err != nil {
		t.Fatal(err)
	}
	if g := storetest.Seqs(got[conversation.ChannelKey{Key: "g1", Type: 2}]); fmt.Sprint(g) != "[6 5 4]" {
		t.Errorf("g1 recents = %v, want [6 5 4]", g)
	}
	p := got[pk]
	if fmt.Sprint(storetest.Seqs(p)) != "[8 7]" || p[0].ChannelID != "bob" || p[0].FromUID != "alice" || p[0].ChannelType != 1 {
		t.Errorf("person recents = %+v, want seqs 8 7 addressed to bob", p)
	}
	if m := got[conversation.ChannelKey{Key: "g1", Type: 2}][0]; string(m.Payload) != "m6" || m.MessageID != 1006 || m.Header.RedDot != 1 {
		t.Errorf("message fields = %+v", m)
	}
}

func TestUserRowsAndVersionAgreeAfterPurge(t *testing.T) {
	s, _ := testenv.Store(t, mysql.Options{})
	ctx := context.Background()
	apply(t, s, groupMsg("g1", 1, "alice", "bob"))
	rows, v, err := s.UserRows(ctx, "bob")
	if err != nil || len(rows) != 1 || v != rows[0].Version {
		t.Fatalf("UserRows = %+v, %d, %v: want one row carrying the user's version", rows, v, err)
	}
	if uv, err := s.UserVersion(ctx, "bob"); err != nil || uv != v {
		t.Errorf("UserVersion = %d (%v), want %d", uv, err, v)
	}
	deleted, err := s.Update(ctx, rows[0].ConvKey, func(r conversation.Row, now int64) (conversation.Row, bool) {
		return conversation.Delete(r, now-1000)
	})
	if err != nil || deleted.Version <= v {
		t.Fatalf("delete: %+v (%v)", deleted, err)
	}
	if n, err := s.PurgeTombstones(ctx, time.Now().UnixMilli(), 100); err != nil || n != 1 {
		t.Fatalf("purge = %d (%v), want 1", n, err)
	}
	rows, v, err = s.UserRows(ctx, "bob")
	if err != nil || len(rows) != 0 || v != deleted.Version {
		t.Errorf("after purge: %+v, version %d (%v); want no rows and version %d", rows, v, err, deleted.Version)
	}
	if uv, err := s.UserVersion(ctx, "nobody"); err != nil || uv != 0 {
		t.Errorf("UserVersion of an unknown user = %d (%v), want 0", uv, err)
	}
}

func TestOnCommitReportsEachCommittedVersionChange(t *testing.T) {
	var reported []map[string]int64
	s, _ := testenv.Store(t, mysql.Options{OnCommit: func(_ context.Context, c conversation.Changes) { reported = append(reported, c.Versions) }})
	ctx := context.Background()
	apply(t, s, groupMsg("g1", 1, "alice", "alice", "bob"))
	bob := rowsOf(t, s, "bob")["g1"]
	alice := rowsOf(t, s, "alice")["g1"]
	if len(reported) != 1 || reported[0]["bob"] != bob.Version || reported[0]["alice"] != alice.Version || len(reported[0]) != 2 {
		t.Fatalf("after a batch: %v, want bob %d and alice %d", reported, bob.Version, alice.Version)
	}
	apply(t, s, groupMsg("g1", 1, "alice", "alice", "bob")) // a duplicate changes nothing
	if len(reported) != 1 {
		t.Errorf("a batch that changed nothing was reported: %v", reported[1:])
	}
	row, err := s.Update(ctx, bob.ConvKey, func(r conversation.Row, _ int64) (conversation.Row, bool) { return conversation.SetUnread(r, 0) })
	if err != nil {
		t.Fatal(err)
	}
	if len(reported) != 2 || len(reported[1]) != 1 || reported[1]["bob"] != row.Version {
		t.Errorf("after setUnread: %v, want bob %d", reported, row.Version)
	}
	if _, err := s.Update(ctx, bob.ConvKey, func(r conversation.Row, _ int64) (conversation.Row, bool) { return conversation.SetUnread(r, 0) }); err != nil {
		t.Fatal(err)
	}
	if len(reported) != 2 {
		t.Errorf("a no-op update was reported: %v", reported[2:])
	}
}

// TestRecentsCountMessages: msg_count counts stored messages (contract §2.1); seqs never stored do not use
// it up, wherever the gaps are.
func TestRecentsCountMessages(t *testing.T) {
	s, _ := testenv.Store(t, mysql.Options{})
	g1 := conversation.ChannelKey{Key: "g1", Type: 2}
	// Seqs 1..12; 3, 5, 6 and 10 never stored (no_persist).
	var events []conversation.Event
	for seq := int64(1); seq <= 12; seq++ {
		if seq == 3 || seq == 5 || seq == 6 || seq == 10 {
			continue // the projector drops them before the store (SkipSet.Projected)
		}
		events = append(events, groupMsg("g1", seq, "alice", "alice", "bob"))
	}
	apply(t, s, events...)
	tests := []struct {
		name   string
		row    conversation.Row
		client int64
		count  int
		want   string
	}{
		{"gap inside the newest seqs", conversation.Row{LastMsgSeq: 12}, 0, 3, "[12 11 9]"},
		{"gaps at the window's start", conversation.Row{LastMsgSeq: 4}, 0, 3, "[4 2 1]"},
		{"several gaps", conversation.Row{LastMsgSeq: 12}, 0, 6, "[12 11 9 8 7 4]"},
		{"more than stored", conversation.Row{LastMsgSeq: 12}, 0, 20, "[12 11 9 8 7 4 2 1]"},
		{"delete point inside a gap", conversation.Row{LastMsgSeq: 9, DeletedAtSeq: 5}, 0, 5, "[9 8 7]"},
		{"last_msg_seqs trims", conversation.Row{LastMsgSeq: 12}, 7, 5, "[12 11 9 8]"},
		{"last_msg_seqs inside a gap", conversation.Row{LastMsgSeq: 12}, 6, 10, "[12 11 9 8 7]"},
		{"up to the row's last seq", conversation.Row{LastMsgSeq: 10}, 0, 2, "[9 8]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := conversation.RecentsRange(&tt.row, g1, tt.client, tt.count)
			got, err := s.Recents(context.Background(), []conversation.SeqRange{r})
			if err != nil {
				t.Fatal(err)
			}
			if g := fmt.Sprint(storetest.Seqs(got[g1])); g != tt.want {
				t.Errorf("recents = %s, want %s", g, tt.want)
			}
		})
	}
}

// TestOnCommitAnnouncesWindowChanges: what a cached stretch cannot learn from rows is announced: a
// message inserted below its channel's newest seq, and a prune; a message on top is not.
func TestOnCommitAnnouncesWindowChanges(t *testing.T) {
	var reported []conversation.Changes
	s, _ := testenv.Store(t, mysql.Options{RecentsWindow: 10,
		OnCommit: func(_ context.Context, c conversation.Changes) { reported = append(reported, c) }})
	g1 := conversation.ChannelKey{Key: "g1", Type: 2}
	last := func() []conversation.WindowChange {
		t.Helper()
		if len(reported) == 0 {
			t.Fatal("nothing reported")
		}
		return reported[len(reported)-1].Windows
	}
	apply(t, s, groupMsg("g1", 1, "alice", "alice", "bob"), groupMsg("g1", 2, "alice", "alice", "bob"), groupMsg("g1", 5, "alice", "alice", "bob"))
	if w := last(); len(w) != 0 {
		t.Errorf("messages on top announced %+v, want nothing", w)
	}
	apply(t, s, groupMsg("g1", 4, "alice", "alice", "bob"), groupMsg("g1", 3, "alice", "alice", "bob"), groupMsg("g1", 6, "alice", "alice", "bob"))
	if w := last(); len(w) != 1 || w[0] != (conversation.WindowChange{Channel: g1, LateMin: 3, LateMax: 4}) {
		t.Errorf("late messages announced %+v, want g1 late 3..4", w)
	}
	apply(t, s, groupMsg("g1", 12, "alice", "alice", "bob"))
	if w := last(); len(w) != 1 || w[0] != (conversation.WindowChange{Channel: g1, MinKept: 3}) {
		t.Errorf("prune announced %+v, want g1 kept from 3", w)
	}
	n := len(reported)
	apply(t, s, groupMsg("g1", 4, "alice", "alice", "bob")) // a duplicate changes nothing
	if len(reported) != n {
		t.Errorf("a duplicate was announced: %+v", reported[n:])
	}
}
