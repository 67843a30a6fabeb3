package refmodel

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
)

// Report is the outcome of comparing a database with the model.
type Report struct {
	// Rows, Messages, Channels and Members count what was compared.
	Rows, Messages, Channels, Members int
	// Mismatches counts every difference; Examples describes the first few.
	Mismatches int
	Examples   []string
}

// maxExamples bounds how many mismatches a report spells out.
const maxExamples = 25

func (r *Report) bad(format string, args ...any) {
	r.Mismatches++
	if len(r.Examples) < maxExamples {
		r.Examples = append(r.Examples, fmt.Sprintf(format, args...))
	}
}

// String is a one-line summary followed by the examples, one per line.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "rows=%d messages=%d channels=%d members=%d mismatches=%d", r.Rows, r.Messages, r.Channels, r.Members, r.Mismatches)
	for _, e := range r.Examples {
		b.WriteString("\n  ")
		b.WriteString(e)
	}
	if r.Mismatches > len(r.Examples) {
		fmt.Fprintf(&b, "\n  ... and %d more", r.Mismatches-len(r.Examples))
	}
	return b.String()
}

// dbRow is a conversations row with its version and delete time, which the model cannot predict.
type dbRow struct {
	Row
	version, deletedAtMS int64
}

// Compare reads the read model's tables (the schema of migrations/) and compares them with the model:
// every conversation row field except version and deleted_at_ms; the newest Window messages of every
// channel (a database may keep more, but only messages the model applied, with equal fields); each
// channel's max_seq; the membership. It also checks the version invariants that need no clock: every row
// has a version > 0, each user's newest row version equals user_versions, and tombstones carry their
// delete time. It returns an error only when the database cannot be read.
func Compare(ctx context.Context, db *sql.DB, m *Model) (Report, error) {
	var rep Report
	rows, err := readRows(ctx, db)
	if err != nil {
		return rep, err
	}
	if err := m.compareRows(ctx, db, rows, &rep); err != nil {
		return rep, err
	}
	if err := m.compareMessages(ctx, db, &rep); err != nil {
		return rep, err
	}
	if err := m.compareChannels(ctx, db, &rep); err != nil {
		return rep, err
	}
	return rep, m.compareMembers(ctx, db, &rep)
}

func readRows(ctx context.Context, db *sql.DB) (map[Key]dbRow, error) {
	rs, err := db.QueryContext(ctx, `SELECT uid, channel_id, channel_type, unread, readed_to_msg_seq, last_msg_seq,
		last_client_msg_no, last_msg_at, is_deleted, deleted_at_seq, deleted_at_ms, version FROM conversations`)
	if err != nil {
		return nil, fmt.Errorf("read conversations: %w", err)
	}
	defer rs.Close()
	out := map[Key]dbRow{}
	for rs.Next() {
		var r dbRow
		if err := rs.Scan(&r.UID, &r.ChannelID, &r.ChannelType, &r.Unread, &r.ReadedToMsgSeq, &r.LastMsgSeq,
			&r.LastClientMsgNo, &r.Timestamp, &r.IsDeleted, &r.DeletedAtSeq, &r.deletedAtMS, &r.version); err != nil {
			return nil, fmt.Errorf("scan conversation: %w", err)
		}
		out[r.Key] = r
	}
	return out, rs.Err()
}

func (m *Model) compareRows(ctx context.Context, db *sql.DB, got map[Key]dbRow, rep *Report) error {
	userMax := map[string]int64{}
	for _, want := range m.Rows() {
		rep.Rows++
		g, ok := got[want.Key]
		if !ok {
			rep.bad("row %v: missing, want %+v", want.Key, fields(want))
			continue
		}
		if fields(g.Row) != fields(want) {
			rep.bad("row %v: got %+v, want %+v", want.Key, fields(g.Row), fields(want))
		}
	}
	for k, g := range got {
		if _, ok := m.rows[k]; !ok {
			rep.bad("row %v: unexpected %+v", k, fields(g.Row))
		}
		if g.version <= 0 {
			rep.bad("row %v: version %d, want > 0", k, g.version)
		}
		if g.IsDeleted && g.deletedAtMS <= 0 {
			rep.bad("row %v: tombstone without deleted_at_ms", k)
		}
		userMax[k.UID] = max(userMax[k.UID], g.version)
	}
	uv, err := db.QueryContext(ctx, `SELECT uid, version FROM user_versions`)
	if err != nil {
		return fmt.Errorf("read user_versions: %w", err)
	}
	defer uv.Close()
	seen := map[string]bool{}
	for uv.Next() {
		var uid string
		var v int64
		if err := uv.Scan(&uid, &v); err != nil {
			return fmt.Errorf("scan user_versions: %w", err)
		}
		seen[uid] = true
		if want, ok := userMax[uid]; ok && v != want {
			rep.bad("user %s: user_versions %d, but the newest row version is %d", uid, v, want)
		}
	}
	if err := uv.Err(); err != nil {
		return err
	}
	for uid := range userMax {
		if !seen[uid] {
			rep.bad("user %s: has rows but no user_versions row", uid)
		}
	}
	return nil
}

// fields strips what the comparison ignores from a row.
func fields(r Row) Row {
	r.ChangedAt = 0
	return r
}

type dbMsg struct {
	ChanKey
	Msg
}

func (m *Model) compareMessages(ctx context.Context, db *sql.DB, rep *Report) error {
	rs, err := db.QueryContext(ctx, `SELECT channel_key, channel_type, message_seq, message_id, client_msg_no, from_uid,
		channel_id, sent_at, red_dot, setting, expire, payload FROM messages`)
	if err != nil {
		return fmt.Errorf("read messages: %w", err)
	}
	defer rs.Close()
	got := map[ChanKey]map[int64]Msg{}
	for rs.Next() {
		var d dbMsg
		if err := rs.Scan(&d.Key, &d.Type, &d.Seq, &d.MessageID, &d.ClientMsgNo, &d.FromUID, &d.ChannelID, &d.Timestamp,
			&d.RedDot, &d.Setting, &d.Expire, &d.Payload); err != nil {
			return fmt.Errorf("scan message: %w", err)
		}
		if got[d.ChanKey] == nil {
			got[d.ChanKey] = map[int64]Msg{}
		}
		got[d.ChanKey][d.Seq] = d.Msg
	}
	if err := rs.Err(); err != nil {
		return err
	}
	for _, ck := range m.Channels() {
		for _, want := range m.Window(ck) {
			rep.Messages++
			g, ok := got[ck][want.Seq]
			if !ok {
				rep.bad("message %v seq %d: missing from the window", ck, want.Seq)
			} else if !sameMsg(g, want) {
				rep.bad("message %v seq %d: got %s, want %s", ck, want.Seq, describe(g), describe(want))
			}
		}
	}
	for ck, msgs := range got {
		for seq, g := range msgs {
			want, ok := m.msgs[ck][seq]
			switch {
			case !ok:
				rep.bad("message %v seq %d: stored, but never applied (%s)", ck, seq, describe(g))
			case !sameMsg(g, want):
				rep.bad("message %v seq %d (beyond the window): got %s, want %s", ck, seq, describe(g), describe(want))
			}
		}
	}
	return nil
}

func sameMsg(a, b Msg) bool {
	pa, pb := a.Payload, b.Payload
	a.Payload, b.Payload = nil, nil
	return a.Seq == b.Seq && a.MessageID == b.MessageID && a.ClientMsgNo == b.ClientMsgNo && a.FromUID == b.FromUID &&
		a.ChannelID == b.ChannelID && a.Timestamp == b.Timestamp && a.RedDot == b.RedDot && a.Setting == b.Setting &&
		a.Expire == b.Expire && bytes.Equal(pa, pb)
}

func describe(m Msg) string {
	return fmt.Sprintf("{id:%d cmn:%s from:%s ch:%s ts:%d red_dot:%d setting:%d expire:%d payload:%dB}",
		m.MessageID, m.ClientMsgNo, m.FromUID, m.ChannelID, m.Timestamp, m.RedDot, m.Setting, m.Expire, len(m.Payload))
}

func (m *Model) compareChannels(ctx context.Context, db *sql.DB, rep *Report) error {
	rs, err := db.QueryContext(ctx, `SELECT channel_key, channel_type, max_seq FROM channels`)
	if err != nil {
		return fmt.Errorf("read channels: %w", err)
	}
	defer rs.Close()
	got := map[ChanKey]int64{}
	for rs.Next() {
		var ck ChanKey
		var maxSeq int64
		if err := rs.Scan(&ck.Key, &ck.Type, &maxSeq); err != nil {
			return fmt.Errorf("scan channel: %w", err)
		}
		got[ck] = maxSeq
	}
	if err := rs.Err(); err != nil {
		return err
	}
	for _, ck := range m.Channels() {
		rep.Channels++
		msgs := m.Messages(ck)
		want := msgs[len(msgs)-1].Seq
		if g, ok := got[ck]; !ok || g != want {
			rep.bad("channel %v: max_seq %d (row present: %v), want %d", ck, g, ok, want)
		}
	}
	for ck, g := range got {
		if len(m.msgs[ck]) == 0 && g != 0 {
			rep.bad("channel %v: max_seq %d, but no message of it was applied", ck, g)
		}
	}
	return nil
}

func (m *Model) compareMembers(ctx context.Context, db *sql.DB, rep *Report) error {
	rs, err := db.QueryContext(ctx, `SELECT channel_id, channel_type, uid FROM channel_members`)
	if err != nil {
		return fmt.Errorf("read channel_members: %w", err)
	}
	defer rs.Close()
	got := map[ChanKey][]string{}
	for rs.Next() {
		var ck ChanKey
		var uid string
		if err := rs.Scan(&ck.Key, &ck.Type, &uid); err != nil {
			return fmt.Errorf("scan member: %w", err)
		}
		got[ck] = append(got[ck], uid)
	}
	if err := rs.Err(); err != nil {
		return err
	}
	for _, ck := range m.MemberChannels() {
		rep.Members++
		g, want := got[ck], m.Members(ck)
		slices.Sort(g)
		if !slices.Equal(g, want) && !(len(g) == 0 && len(want) == 0) {
			rep.bad("members of %v: got %v, want %v", ck, g, want)
		}
	}
	for ck, g := range got {
		if _, ok := m.members[ck]; !ok {
			rep.bad("members of %v: got %v, but no membership event named the channel", ck, g)
		}
	}
	return nil
}

// Versions is a snapshot of the database's versions, taken at a model time.
type Versions struct {
	// At is the model's logical time (Model.Now) when the snapshot was taken.
	At      int64
	Rows    map[Key]int64
	UserMax map[string]int64
}

// ReadVersions snapshots every row's version; the database must hold the model's state (everything the
// model applied has been applied) for later checks to mean anything.
func ReadVersions(ctx context.Context, db *sql.DB, m *Model) (Versions, error) {
	rows, err := readRows(ctx, db)
	if err != nil {
		return Versions{}, err
	}
	v := Versions{At: m.Now(), Rows: map[Key]int64{}, UserMax: map[string]int64{}}
	for k, r := range rows {
		v.Rows[k] = r.version
		v.UserMax[k.UID] = max(v.UserMax[k.UID], r.version)
	}
	return v, nil
}

// CheckVersionsSince checks contract §3.6 across two states: a row the model changed after the snapshot
// has a version above every version its user had at the snapshot (so an incremental sync from any
// version seen then returns it), and a row the model did not change kept its version exactly (so no
// sync returns it again). It returns the violations, described.
func CheckVersionsSince(ctx context.Context, db *sql.DB, m *Model, before Versions) ([]string, error) {
	rows, err := readRows(ctx, db)
	if err != nil {
		return nil, err
	}
	var bad []string
	for _, want := range m.Rows() {
		g, ok := rows[want.Key]
		if !ok {
			continue // Compare reports missing rows
		}
		switch {
		case want.ChangedAt > before.At && g.version <= before.UserMax[want.UID]:
			bad = append(bad, fmt.Sprintf("row %v changed after the snapshot but has version %d <= the user's %d then",
				want.Key, g.version, before.UserMax[want.UID]))
		case want.ChangedAt <= before.At && g.version != before.Rows[want.Key]:
			bad = append(bad, fmt.Sprintf("row %v did not change after the snapshot but its version moved %d -> %d",
				want.Key, before.Rows[want.Key], g.version))
		}
	}
	return bad, nil
}
