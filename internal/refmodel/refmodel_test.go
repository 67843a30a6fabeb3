package refmodel

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/convsync/conversations/internal/conversation"
)

// msg builds a message.sent value. Header red_dot 1 unless the options say otherwise.
func msg(from, channelID string, typ uint8, seq int64, opts ...func(map[string]any)) []byte {
	v := map[string]any{
		"message_id": 1000 + seq, "client_msg_no": "c" + itoa(seq), "message_seq": seq, "from_uid": from,
		"channel_id": channelID, "channel_type": typ, "timestamp": 1_700_000_000 + seq,
		"header": map[string]any{"red_dot": 1}, "payload": "aGk=",
	}
	for _, o := range opts {
		o(v)
	}
	b, _ := json.Marshal(v)
	return b
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

func header(noPersist, redDot, syncOnce int) func(map[string]any) {
	return func(v map[string]any) {
		v["header"] = map[string]any{"no_persist": noPersist, "red_dot": redDot, "sync_once": syncOnce}
	}
}

func subs(uids ...string) func(map[string]any) {
	return func(v map[string]any) { v["subscribers"] = uids }
}

func members(added bool, ch string, uids ...string) []byte {
	typ := "channel.subscribers.removed"
	if added {
		typ = "channel.subscribers.added"
	}
	b, _ := json.Marshal(map[string]any{"type": typ, "channel_id": ch, "channel_type": 2, "uids": uids})
	return b
}

type step struct {
	value     []byte
	setUnread *int64 // with value nil: an API call on (uid, ch)
	del       bool
	uid, ch   string
	typ       uint8
}

func ev(v []byte) step { return step{value: v} }
func setUnread(uid, ch string, typ uint8, n int64) step {
	return step{setUnread: &n, uid: uid, ch: ch, typ: typ}
}
func del(uid, ch string, typ uint8) step { return step{del: true, uid: uid, ch: ch, typ: typ} }

// want is the fields of one expected row; absent means no row.
type want struct {
	uid, ch                     string
	typ                         uint8
	unread, readed, last, delAt int64
	deleted                     bool
	absent                      bool
}

func TestRules(t *testing.T) {
	const p, g = 1, 2
	tests := []struct {
		name  string
		steps []step
		want  []want
	}{
		{"person message creates both rows, the peer's unread",
			[]step{ev(msg("a", "b", p, 1))},
			[]want{{uid: "a", ch: "b", typ: p, readed: 1, last: 1}, {uid: "b", ch: "a", typ: p, unread: 1, last: 1}}},
		{"both directions share one sequence",
			[]step{ev(msg("a", "b", p, 1)), ev(msg("b", "a", p, 2)), ev(msg("a", "b", p, 3))},
			[]want{{uid: "a", ch: "b", typ: p, unread: 0, readed: 3, last: 3}, {uid: "b", ch: "a", typ: p, unread: 1, readed: 2, last: 3}}},
		{"a duplicate changes nothing",
			[]step{ev(msg("a", "b", p, 1)), ev(msg("a", "b", p, 1)), ev(msg("b", "a", p, 1))},
			[]want{{uid: "b", ch: "a", typ: p, unread: 1, last: 1}}},
		{"red_dot 0 does not count but updates last",
			[]step{ev(msg("a", "b", p, 1, header(0, 0, 0)))},
			[]want{{uid: "b", ch: "a", typ: p, unread: 0, last: 1}}},
		{"no header means red_dot 0",
			[]step{ev(msg("a", "b", p, 1, func(v map[string]any) { delete(v, "header") }))},
			[]want{{uid: "b", ch: "a", typ: p, unread: 0, last: 1}}},
		{"no_persist and sync_once change nothing",
			[]step{ev(msg("a", "b", p, 1, header(1, 1, 0))), ev(msg("a", "b", p, 2, header(0, 1, 1)))},
			[]want{{uid: "b", ch: "a", typ: p, absent: true}}},
		{"skipped types change nothing",
			[]step{ev(msg("a", "info", 6, 1, subs("b"))), ev(msg("a", "live", 9, 1, subs("b")))},
			[]want{{uid: "b", ch: "info", typ: 6, absent: true}, {uid: "b", ch: "live", typ: 9, absent: true}}},
		{"late older message counts without moving last back",
			[]step{ev(msg("a", "b", p, 2)), ev(msg("a", "b", p, 1))},
			[]want{{uid: "b", ch: "a", typ: p, unread: 2, last: 2}}},
		{"own message resets unread and moves the read point",
			[]step{ev(msg("a", "b", p, 1)), ev(msg("a", "b", p, 2)), ev(msg("b", "a", p, 3))},
			[]want{{uid: "b", ch: "a", typ: p, unread: 0, readed: 3, last: 3}}},
		{"late older own message keeps newer counted messages unread",
			[]step{ev(msg("a", "b", p, 2)), ev(msg("b", "a", p, 1))},
			[]want{{uid: "b", ch: "a", typ: p, unread: 1, readed: 1, last: 2}}},
		{"late message below the read point does not count",
			[]step{ev(msg("b", "a", p, 3)), ev(msg("a", "b", p, 2))},
			[]want{{uid: "b", ch: "a", typ: p, unread: 0, readed: 3, last: 3}}},
		{"own message as new as last resets unread",
			[]step{ev(msg("a", "b", p, 1)), ev(msg("a", "b", p, 3)), ev(msg("b", "a", p, 2)), ev(msg("b", "a", p, 4))},
			[]want{{uid: "b", ch: "a", typ: p, unread: 0, readed: 4, last: 4}}},
		{"group by inline subscribers, with a system message",
			[]step{ev(msg("a", "g", g, 1, subs("a", "b", "c", "b"))), ev(msg("", "g", g, 2, subs("a", "b")))},
			[]want{{uid: "a", ch: "g", typ: g, unread: 1, readed: 1, last: 2}, {uid: "b", ch: "g", typ: g, unread: 2, last: 2},
				{uid: "c", ch: "g", typ: g, unread: 1, last: 1}}},
		{"group by membership events; removal stops updates but keeps the row",
			[]step{ev(members(true, "g", "a", "b")), ev(msg("a", "g", g, 1)), ev(members(false, "g", "b")),
				ev(members(true, "g", "c")), ev(msg("a", "g", g, 2))},
			[]want{{uid: "b", ch: "g", typ: g, unread: 1, last: 1}, {uid: "c", ch: "g", typ: g, unread: 1, last: 2}}},
		{"inline subscribers win over membership",
			[]step{ev(members(true, "g", "a", "b")), ev(msg("a", "g", g, 1, subs("c")))},
			[]want{{uid: "b", ch: "g", typ: g, absent: true}, {uid: "c", ch: "g", typ: g, unread: 1, last: 1}}},
		{"the same id under two types is two channels",
			[]step{ev(msg("a", "x", g, 1, subs("b"))), ev(msg("a", "x", 4, 1, subs("b")))},
			[]want{{uid: "b", ch: "x", typ: g, unread: 1, last: 1}, {uid: "b", ch: "x", typ: 4, unread: 1, last: 1}}},
		{"delete makes a tombstone; older messages do not revive it",
			[]step{ev(msg("a", "b", p, 1)), ev(msg("a", "b", p, 3)), del("b", "a", p), ev(msg("a", "b", p, 2))},
			[]want{{uid: "b", ch: "a", typ: p, unread: 0, last: 3, delAt: 3, deleted: true}}},
		{"a newer message revives a tombstone counting only itself",
			[]step{ev(msg("a", "b", p, 1)), ev(msg("a", "b", p, 2)), del("b", "a", p), ev(msg("a", "b", p, 3))},
			[]want{{uid: "b", ch: "a", typ: p, unread: 1, last: 3, delAt: 2}}},
		{"revived by an own message: unread 0, read point moves",
			[]step{ev(msg("a", "b", p, 1)), del("b", "a", p), ev(msg("b", "a", p, 2))},
			[]want{{uid: "b", ch: "a", typ: p, unread: 0, readed: 2, last: 2, delAt: 1}}},
		{"setUnread sets; 0 marks read up to last",
			[]step{ev(msg("a", "b", p, 1)), ev(msg("a", "b", p, 2)), setUnread("b", "a", p, 5), setUnread("a", "b", p, 0)},
			[]want{{uid: "b", ch: "a", typ: p, unread: 5, last: 2}, {uid: "a", ch: "b", typ: p, unread: 0, readed: 2, last: 2}}},
		{"setUnread 0 then a message: counts above the read point only",
			[]step{ev(msg("a", "b", p, 2)), setUnread("b", "a", p, 0), ev(msg("a", "b", p, 1)), ev(msg("a", "b", p, 3))},
			[]want{{uid: "b", ch: "a", typ: p, unread: 1, readed: 2, last: 3}}},
		{"setUnread and delete on a tombstone or no row change nothing",
			[]step{ev(msg("a", "b", p, 1)), del("b", "a", p), setUnread("b", "a", p, 4), del("b", "a", p), setUnread("z", "a", p, 1)},
			[]want{{uid: "b", ch: "a", typ: p, last: 1, delAt: 1, deleted: true}, {uid: "z", ch: "a", typ: p, absent: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(Options{})
			for _, s := range tt.steps {
				switch {
				case s.value != nil:
					if err := m.Apply(s.value); err != nil {
						t.Fatalf("apply %s: %v", s.value, err)
					}
				case s.setUnread != nil:
					m.SetUnread(s.uid, s.ch, s.typ, *s.setUnread)
				case s.del:
					m.Delete(s.uid, s.ch, s.typ)
				}
			}
			for _, w := range tt.want {
				r, ok := m.Row(w.uid, w.ch, w.typ)
				if w.absent {
					if ok {
						t.Errorf("row %s/%s/%d: got %+v, want none", w.uid, w.ch, w.typ, r)
					}
					continue
				}
				if !ok {
					t.Fatalf("row %s/%s/%d: missing", w.uid, w.ch, w.typ)
				}
				got := want{uid: w.uid, ch: w.ch, typ: w.typ, unread: r.Unread, readed: r.ReadedToMsgSeq, last: r.LastMsgSeq,
					delAt: r.DeletedAtSeq, deleted: r.IsDeleted}
				if got != w {
					t.Errorf("row %s/%s/%d:\n got %+v\nwant %+v", w.uid, w.ch, w.typ, got, w)
				}
			}
		})
	}
}

func TestBadRecordsAreCountedNotApplied(t *testing.T) {
	m := New(Options{})
	for _, v := range []string{`nope`, `{"message_id":1,"channel_id":"g","channel_type":2}`, `{"type":"x"}`} {
		err := m.Apply([]byte(v))
		if !errors.Is(err, conversation.ErrInvalid) {
			t.Errorf("Apply(%s) = %v, want ErrInvalid", v, err)
		}
	}
	if c := m.Counts(); c.Bad != 3 || len(m.Rows()) != 0 {
		t.Errorf("counts %+v rows %d, want 3 bad and no rows", c, len(m.Rows()))
	}
}

func TestChangeTimes(t *testing.T) {
	m := New(Options{})
	_ = m.Apply(msg("a", "b", 1, 1))
	r1, _ := m.Row("b", "a", 1)
	_ = m.Apply(msg("a", "b", 1, 1)) // duplicate: no change
	_ = m.Apply(msg("b", "a", 1, 1)) // same seq from the other side: duplicate too
	if r, _ := m.Row("b", "a", 1); r.ChangedAt != r1.ChangedAt {
		t.Errorf("a duplicate moved the change time %d -> %d", r1.ChangedAt, r.ChangedAt)
	}
	_ = m.Apply(msg("b", "a", 1, 3))
	_ = m.Apply(msg("a", "b", 1, 2)) // below b's read point: moves nothing for b
	r, _ := m.Row("b", "a", 1)
	if r.ChangedAt <= r1.ChangedAt {
		t.Errorf("change time did not advance: %d -> %d", r1.ChangedAt, r.ChangedAt)
	}
	before := r.ChangedAt
	_ = m.Apply(msg("a", "b", 1, 2, header(0, 0, 0)))
	if r, _ := m.Row("b", "a", 1); r.ChangedAt != before {
		t.Errorf("a duplicate (seq 2 again) moved b's change time")
	}
	if m.SetUnread("b", "a", 1, 0) {
		t.Errorf("setUnread 0 on a read row reported a change")
	}
}

func TestRecentsAndWindow(t *testing.T) {
	m := New(Options{Window: 3})
	for seq := int64(1); seq <= 6; seq++ {
		_ = m.Apply(msg("a", "b", 1, seq))
	}
	_ = m.Apply(msg("a", "b", 1, 7, header(1, 1, 0))) // not stored
	r, _ := m.Row("b", "a", 1)
	k := r.StorageKey()
	if w := m.Window(k); len(w) != 3 || w[0].Seq != 4 || w[2].Seq != 6 {
		t.Fatalf("window %+v, want seqs 4..6", w)
	}
	if rec := m.Recents(r, 4, 10); len(rec) != 2 || rec[0].Seq != 6 || rec[1].Seq != 5 || rec[0].ChannelID != "b" {
		t.Errorf("recents after 4: %+v, want 6, 5 addressed to b", rec)
	}
	m.Delete("b", "a", 1)
	_ = m.Apply(msg("a", "b", 1, 8))
	r, _ = m.Row("b", "a", 1)
	if rec := m.Recents(r, 0, 10); len(rec) != 1 || rec[0].Seq != 8 {
		t.Errorf("recents after delete at 6: %+v, want only 8", rec)
	}
	if s := m.Sync("b"); len(s) != 1 || s[0].ChannelID != "a" {
		t.Errorf("sync: %+v", s)
	}
}

func TestVeryLateMessagesCountAsApplied(t *testing.T) {
	m := New(Options{Window: 3})
	_ = m.Apply(msg("a", "b", 1, 10))
	_ = m.Apply(msg("a", "b", 1, 7)) // exactly the window behind 10: treated as applied
	_ = m.Apply(msg("a", "b", 1, 8)) // within the window: a late message that counts
	r, _ := m.Row("b", "a", 1)
	if r.Unread != 2 || r.LastMsgSeq != 10 {
		t.Errorf("row %+v, want unread 2 (seqs 10 and 8) and last seq 10", r)
	}
	if c := m.Counts(); c.BelowWindow != 1 || c.Duplicates != 0 {
		t.Errorf("counts %+v, want one message below the window", c)
	}
}
