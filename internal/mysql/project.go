package mysql

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/convsync/conversations/internal/conversation"
)

// Statement sizes: rows per multi-row statement, and payload bytes per messages insert (well under the
// 16 MiB max_allowed_packet of MariaDB's default and MySQL 8's 64 MiB).
const (
	rowsPerStatement    = 500
	payloadPerStatement = 4 << 20
)

// BatchResult counts what ApplyBatch did with the events it was given.
type BatchResult struct {
	// Messages applied for the first time.
	Applied int
	// Duplicates: (storage key, message_seq) already applied, so nothing changed.
	Duplicates int
	// BelowWindow: older than the channel's kept window; treated as already applied (see channels table).
	BelowWindow int
	// Skipped: no_persist, sync_once or a skipped channel type (contract §3.2).
	Skipped int
	// Memberships: membership events applied.
	Memberships int
	// RowsWritten: conversation rows inserted or updated (a row changed by many events counts once).
	RowsWritten int
	// CommitTime is how long the database took to commit the transaction.
	CommitTime time.Duration
}

// ApplyBatch applies a batch of decoded events, in their order, in one transaction (contract §3). All
// effects on one conversation row are coalesced into one write, and all rows a batch changes for one
// user share one new version. A (storage key, message_seq) already applied changes nothing, so replaying
// a batch, whole or in part, is harmless: when ApplyBatch returns nil every event's effect is committed
// exactly once; when it returns an error nothing of the batch is committed and the whole batch can be
// retried. Errors wrap conversation.ErrUnavailable when the database cannot be reached and
// conversation.ErrConflict when lock conflicts outlasted the retries.
func (s *Store) ApplyBatch(ctx context.Context, events []conversation.Event, skip *conversation.SkipSet) (BatchResult, error) {
	var res BatchResult
	var versions map[string]int64
	var applied time.Time
	err := s.inTx(ctx, func(tx *sqlx.Tx) error {
		b := &batch{store: s, tx: tx, skip: skip}
		var err error
		res, err = b.apply(ctx, events)
		versions = b.versions
		applied = time.Now()
		return err
	})
	if err == nil {
		res.CommitTime = time.Since(applied)
		s.committed(ctx, versions)
	}
	return res, err
}

// batch is the state of one ApplyBatch transaction attempt.
type batch struct {
	store *Store
	tx    *sqlx.Tx
	skip  *conversation.SkipSet

	channels map[conversation.ChannelKey]*channelState
	members  map[conversation.ChannelKey]*memberSet
	applied  map[msgKey]bool
	rows     map[conversation.ConvKey]*rowState
	newMsgs  []*conversation.Message
	versions map[string]int64 // the new version of each user whose rows changed
}

type msgKey struct {
	ch  conversation.ChannelKey
	seq int64
}

type channelState struct {
	maxSeq, minKeptSeq int64
	dirty              bool
}

// memberSet is a channel's membership as it evolves through the batch. sorted caches the recipients list
// between changes, so a burst into a large group does not rebuild it per message.
type memberSet struct {
	initial map[string]bool
	current map[string]bool
	sorted  []string
}

func (m *memberSet) list() []string {
	if m.sorted == nil {
		m.sorted = make([]string, 0, len(m.current))
		for u := range m.current {
			m.sorted = append(m.sorted, u)
		}
		slices.Sort(m.sorted)
	}
	return m.sorted
}

type rowState struct {
	row     conversation.Row
	exists  bool
	changed bool
}

// op is one message's effect on one recipient, replayed in event order after the rows are loaded.
type op struct {
	key conversation.ConvKey
	msg *conversation.Message
}

func (b *batch) apply(ctx context.Context, events []conversation.Event) (BatchResult, error) {
	var res BatchResult
	var msgs []*conversation.Message
	var chans []conversation.ChannelKey
	needMembers := map[conversation.ChannelKey]bool{}
	for _, e := range events {
		switch {
		case e.Membership != nil:
			chans = append(chans, e.Key())
			needMembers[e.Key()] = true
		case b.skip.Projected(e.Message):
			msgs = append(msgs, e.Message)
			chans = append(chans, e.Key())
			if e.Message.ChannelType != conversation.ChannelTypePerson && e.Message.Subscribers == nil {
				needMembers[e.Key()] = true
			}
		default:
			res.Skipped++
		}
	}
	if len(chans) == 0 {
		return res, nil
	}
	if err := b.lockChannels(ctx, chans); err != nil {
		return res, err
	}
	if err := b.loadApplied(ctx, msgs); err != nil {
		return res, err
	}
	if err := b.loadMembers(ctx, needMembers); err != nil {
		return res, err
	}

	// Walk the batch in order: membership changes take effect for the messages after them.
	var ops []op
	for _, e := range events {
		if e.Membership != nil {
			b.changeMembers(e.Membership)
			res.Memberships++
			continue
		}
		m := e.Message
		if !b.skip.Projected(m) {
			continue
		}
		k := msgKey{m.Key(), m.MessageSeq}
		switch {
		case b.applied[k]:
			res.Duplicates++
			continue
		case m.MessageSeq < b.channels[k.ch].minKeptSeq:
			res.BelowWindow++
			continue
		}
		b.applied[k] = true
		b.newMsgs = append(b.newMsgs, m)
		ch := b.channels[k.ch]
		ch.maxSeq, ch.dirty = max(ch.maxSeq, m.MessageSeq), true
		res.Applied++
		var members []string
		if ms := b.members[k.ch]; ms != nil {
			members = ms.list()
		}
		for _, uid := range conversation.Recipients(m, members) {
			ops = append(ops, op{conversation.ConvKeyFor(m, uid), m})
		}
	}

	if err := b.lockRows(ctx, ops); err != nil {
		return res, err
	}
	for _, o := range ops {
		rs := b.rows[o.key]
		var changed bool
		rs.row, changed = conversation.ApplyMessage(rs.row, rs.exists, o.msg)
		rs.exists = true
		rs.changed = rs.changed || changed
	}
	written, err := b.writeRows(ctx)
	if err != nil {
		return res, err
	}
	res.RowsWritten = written
	if err := b.insertMessages(ctx); err != nil {
		return res, err
	}
	if err := b.saveChannels(ctx); err != nil {
		return res, err
	}
	return res, b.saveMembers(ctx)
}

// lockChannels creates missing channel rows and locks all of them, in sorted order: every batch that
// touches a channel is serialised behind this lock, so reads of the channel's applied seqs and membership
// below cannot be invalidated by a concurrent projector (during a rebalance two may hold one partition).
func (b *batch) lockChannels(ctx context.Context, keys []conversation.ChannelKey) error {
	slices.SortFunc(keys, conversation.ChannelKey.Compare)
	keys = slices.Compact(keys)
	b.channels = make(map[conversation.ChannelKey]*channelState, len(keys))
	return chunks(len(keys), rowsPerStatement, func(lo, hi int) error {
		part := keys[lo:hi]
		args := make([]any, 0, 2*len(part))
		for _, k := range part {
			args = append(args, k.Key, k.Type)
		}
		// An upsert that changes nothing still takes the row's exclusive lock.
		if _, err := b.tx.ExecContext(ctx, `INSERT INTO channels (channel_key, channel_type) VALUES `+
			placeholders(len(part), "(?,?)")+` ON DUPLICATE KEY UPDATE max_seq = max_seq`, args...); err != nil {
			return fmt.Errorf("lock channels: %w", err)
		}
		rows, err := b.tx.QueryContext(ctx, `SELECT c.channel_key, c.channel_type, c.max_seq, c.min_kept_seq FROM `+
			keysTable(len(part), "k_key", "k_type")+` JOIN channels c ON c.channel_key = k.k_key AND c.channel_type = k.k_type`, args...)
		if err != nil {
			return fmt.Errorf("read channels: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var k conversation.ChannelKey
			var st channelState
			if err := rows.Scan(&k.Key, &k.Type, &st.maxSeq, &st.minKeptSeq); err != nil {
				return fmt.Errorf("scan channel: %w", err)
			}
			b.channels[k] = &st
		}
		return rows.Err()
	})
}

// loadApplied finds which of the batch's messages are already in the window, i.e. already applied. Only
// seqs at or below their channel's newest applied seq can be: max_seq moves in the same transaction as
// every insert into the window, so in-order traffic needs no lookup at all.
func (b *batch) loadApplied(ctx context.Context, msgs []*conversation.Message) error {
	b.applied = make(map[msgKey]bool, len(msgs))
	var old []*conversation.Message
	for _, m := range msgs {
		if m.MessageSeq <= b.channels[m.Key()].maxSeq {
			old = append(old, m)
		}
	}
	return chunks(len(old), rowsPerStatement, func(lo, hi int) error {
		args := make([]any, 0, 3*(hi-lo))
		for _, m := range old[lo:hi] {
			k := m.Key()
			args = append(args, k.Key, k.Type, m.MessageSeq)
		}
		rows, err := b.tx.QueryContext(ctx, `SELECT m.channel_key, m.channel_type, m.message_seq FROM `+
			keysTable(hi-lo, "k_key", "k_type", "k_seq")+` JOIN messages m
			ON m.channel_key = k.k_key AND m.channel_type = k.k_type AND m.message_seq = k.k_seq`, args...)
		if err != nil {
			return fmt.Errorf("read applied seqs: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var k msgKey
			if err := rows.Scan(&k.ch.Key, &k.ch.Type, &k.seq); err != nil {
				return fmt.Errorf("scan applied seq: %w", err)
			}
			b.applied[k] = true
		}
		return rows.Err()
	})
}

func (b *batch) loadMembers(ctx context.Context, need map[conversation.ChannelKey]bool) error {
	b.members = make(map[conversation.ChannelKey]*memberSet, len(need))
	keys := make([]conversation.ChannelKey, 0, len(need))
	for k := range need {
		keys = append(keys, k)
		b.members[k] = &memberSet{initial: map[string]bool{}, current: map[string]bool{}}
	}
	return chunks(len(keys), rowsPerStatement, func(lo, hi int) error {
		args := make([]any, 0, 2*(hi-lo))
		for _, k := range keys[lo:hi] {
			args = append(args, k.Key, k.Type)
		}
		rows, err := b.tx.QueryContext(ctx, `SELECT m.channel_id, m.channel_type, m.uid FROM `+
			keysTable(hi-lo, "k_id", "k_type")+` JOIN channel_members m ON m.channel_id = k.k_id AND m.channel_type = k.k_type`, args...)
		if err != nil {
			return fmt.Errorf("read members: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var k conversation.ChannelKey
			var uid string
			if err := rows.Scan(&k.Key, &k.Type, &uid); err != nil {
				return fmt.Errorf("scan member: %w", err)
			}
			ms := b.members[k]
			ms.initial[uid], ms.current[uid] = true, true
		}
		return rows.Err()
	})
}

func (b *batch) changeMembers(e *conversation.Membership) {
	ms := b.members[e.Key()]
	for _, uid := range e.UIDs {
		if ms.current[uid] != e.Added {
			ms.sorted = nil
		}
		if e.Added {
			ms.current[uid] = true
		} else {
			delete(ms.current, uid)
		}
	}
}

// lockRows reads and locks, in primary-key order, every conversation row the batch's messages touch.
func (b *batch) lockRows(ctx context.Context, ops []op) error {
	b.rows = make(map[conversation.ConvKey]*rowState, len(ops))
	keys := make([]conversation.ConvKey, 0, len(ops))
	for _, o := range ops {
		if _, ok := b.rows[o.key]; !ok {
			b.rows[o.key] = &rowState{row: conversation.Row{ConvKey: o.key}}
			keys = append(keys, o.key)
		}
	}
	slices.SortFunc(keys, conversation.ConvKey.Compare)
	return chunks(len(keys), rowsPerStatement, func(lo, hi int) error {
		args := make([]any, 0, 3*(hi-lo))
		for _, k := range keys[lo:hi] {
			args = append(args, k.UID, k.ChannelID, k.ChannelType)
		}
		// The keys table drives the join in its (sorted) order, so rows are locked in primary-key order.
		rows, err := b.tx.QueryxContext(ctx, `SELECT `+prefixed("c.", rowColumns)+` FROM `+
			keysTable(hi-lo, "k_uid", "k_id", "k_type")+` JOIN conversations c
			ON c.uid = k.k_uid AND c.channel_id = k.k_id AND c.channel_type = k.k_type FOR UPDATE`, args...)
		if err != nil {
			return fmt.Errorf("lock conversations: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			r, err := scanRow(rows)
			if err != nil {
				return err
			}
			b.rows[r.ConvKey] = &rowState{row: r, exists: true}
		}
		return rows.Err()
	})
}

// writeRows gives every changed row its user's next version and writes them with multi-row upserts.
func (b *batch) writeRows(ctx context.Context) (int, error) {
	var changed []*rowState
	users := map[string]bool{}
	for _, rs := range b.rows {
		if rs.changed {
			changed = append(changed, rs)
			users[rs.row.UID] = true
		}
	}
	if len(changed) == 0 {
		return 0, nil
	}
	versions, err := b.store.bumpVersions(ctx, b.tx, users)
	if err != nil {
		return 0, err
	}
	b.versions = versions
	slices.SortFunc(changed, func(x, y *rowState) int { return x.row.ConvKey.Compare(y.row.ConvKey) })
	for _, rs := range changed {
		rs.row.Version = versions[rs.row.UID]
	}
	err = chunks(len(changed), rowsPerStatement, func(lo, hi int) error {
		args := make([]any, 0, 12*(hi-lo))
		for _, rs := range changed[lo:hi] {
			args = appendRowArgs(args, &rs.row)
		}
		_, err := b.tx.ExecContext(ctx, upsertRows(hi-lo), args...)
		if err != nil {
			return fmt.Errorf("write conversations: %w", err)
		}
		return nil
	})
	return len(changed), err
}

const rowColumns = `uid, channel_id, channel_type, unread, readed_to_msg_seq, last_msg_seq, last_client_msg_no,
	last_msg_at, is_deleted, deleted_at_seq, deleted_at_ms, version`

const selectRow = `SELECT ` + rowColumns + ` FROM conversations`

// upsertRows is the multi-row write of whole conversation rows. VALUES() rather than a row alias: MariaDB
// has no "AS new" (contract §4).
func upsertRows(n int) string {
	return `INSERT INTO conversations (` + rowColumns + `) VALUES ` + placeholders(n, "(?,?,?,?,?,?,?,?,?,?,?,?)") +
		` ON DUPLICATE KEY UPDATE unread = VALUES(unread), readed_to_msg_seq = VALUES(readed_to_msg_seq),
		last_msg_seq = VALUES(last_msg_seq), last_client_msg_no = VALUES(last_client_msg_no),
		last_msg_at = VALUES(last_msg_at), is_deleted = VALUES(is_deleted), deleted_at_seq = VALUES(deleted_at_seq),
		deleted_at_ms = VALUES(deleted_at_ms), version = VALUES(version)`
}

func appendRowArgs(args []any, r *conversation.Row) []any {
	return append(args, r.UID, r.ChannelID, r.ChannelType, r.Unread, r.ReadedToMsgSeq, r.LastMsgSeq,
		r.LastClientMsgNo, r.Timestamp, boolInt(r.Deleted), r.DeletedAtSeq, r.DeletedAtMS, r.Version)
}

type rowScanner interface{ Scan(dest ...any) error }

func scanRow(rows rowScanner) (conversation.Row, error) {
	var r conversation.Row
	var deleted int
	err := rows.Scan(&r.UID, &r.ChannelID, &r.ChannelType, &r.Unread, &r.ReadedToMsgSeq, &r.LastMsgSeq,
		&r.LastClientMsgNo, &r.Timestamp, &deleted, &r.DeletedAtSeq, &r.DeletedAtMS, &r.Version)
	if err != nil {
		return r, fmt.Errorf("scan conversation: %w", err)
	}
	r.Deleted = deleted != 0
	return r, nil
}

// bumpVersions gives each user its next version (contract §3.6) and returns them. The upsert takes each
// user's version row lock until commit, in sorted order, so two transactions that change rows of one
// user get versions in the order they commit.
func (s *Store) bumpVersions(ctx context.Context, tx *sqlx.Tx, users map[string]bool) (map[string]int64, error) {
	uids := make([]string, 0, len(users))
	for u := range users {
		uids = append(uids, u)
	}
	slices.Sort(uids)
	now := s.nowMS()
	out := make(map[string]int64, len(uids))
	err := chunks(len(uids), rowsPerStatement, func(lo, hi int) error {
		part := uids[lo:hi]
		args := make([]any, 0, 2*len(part))
		for _, u := range part {
			args = append(args, u, now)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO user_versions (uid, version) VALUES `+placeholders(len(part), "(?,?)")+
			` ON DUPLICATE KEY UPDATE version = GREATEST(VALUES(version), version + 1)`, args...); err != nil {
			return fmt.Errorf("bump versions: %w", err)
		}
		args = args[:0]
		for _, u := range part {
			args = append(args, u)
		}
		rows, err := tx.QueryContext(ctx, `SELECT uid, version FROM user_versions WHERE uid IN (`+
			placeholders(len(part), "?")+`)`, args...)
		if err != nil {
			return fmt.Errorf("read versions: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var u string
			var v int64
			if err := rows.Scan(&u, &v); err != nil {
				return fmt.Errorf("scan version: %w", err)
			}
			out[u] = v
		}
		return rows.Err()
	})
	return out, err
}

func (b *batch) insertMessages(ctx context.Context) error {
	for lo := 0; lo < len(b.newMsgs); {
		hi, size := lo, 0
		for hi < len(b.newMsgs) && hi-lo < rowsPerStatement && (hi == lo || size+len(b.newMsgs[hi].Payload) <= payloadPerStatement) {
			size += len(b.newMsgs[hi].Payload)
			hi++
		}
		args := make([]any, 0, 12*(hi-lo))
		for _, m := range b.newMsgs[lo:hi] {
			k := m.Key()
			payload := m.Payload
			if payload == nil {
				payload = []byte{}
			}
			args = append(args, k.Key, k.Type, m.MessageSeq, m.MessageID, m.ClientMsgNo, m.FromUID, m.ChannelID,
				m.Timestamp, m.Header.RedDot, m.Setting, m.Expire, payload)
		}
		if _, err := b.tx.ExecContext(ctx, `INSERT INTO messages (channel_key, channel_type, message_seq, message_id,
			client_msg_no, from_uid, channel_id, sent_at, red_dot, setting, expire, payload) VALUES `+
			placeholders(hi-lo, "(?,?,?,?,?,?,?,?,?,?,?,?)"), args...); err != nil {
			return fmt.Errorf("insert messages: %w", err)
		}
		lo = hi
	}
	return nil
}

// saveChannels records each channel's newest seq and prunes its window to exactly the newest
// RecentsWindow seqs, all of the batch's channels in one statement; the watermark min_kept_seq moves with
// it, in the same transaction.
func (b *batch) saveChannels(ctx context.Context) error {
	var keys, pruned []conversation.ChannelKey
	for k, st := range b.channels {
		if !st.dirty {
			continue
		}
		keys = append(keys, k)
		if newMin := st.maxSeq - b.store.window + 1; newMin > st.minKeptSeq {
			st.minKeptSeq = newMin
			pruned = append(pruned, k)
		}
	}
	slices.SortFunc(keys, conversation.ChannelKey.Compare)
	slices.SortFunc(pruned, conversation.ChannelKey.Compare)
	if err := chunks(len(pruned), rowsPerStatement, func(lo, hi int) error {
		args := make([]any, 0, 3*(hi-lo))
		for _, k := range pruned[lo:hi] {
			args = append(args, k.Key, k.Type, b.channels[k].minKeptSeq)
		}
		_, err := b.tx.ExecContext(ctx, `DELETE m FROM `+keysTable(hi-lo, "k_key", "k_type", "k_min")+
			` JOIN messages m ON m.channel_key = k.k_key AND m.channel_type = k.k_type AND m.message_seq < k.k_min`, args...)
		return err
	}); err != nil {
		return fmt.Errorf("prune windows: %w", err)
	}
	return chunks(len(keys), rowsPerStatement, func(lo, hi int) error {
		args := make([]any, 0, 4*(hi-lo))
		for _, k := range keys[lo:hi] {
			st := b.channels[k]
			args = append(args, k.Key, k.Type, st.maxSeq, st.minKeptSeq)
		}
		_, err := b.tx.ExecContext(ctx, `INSERT INTO channels (channel_key, channel_type, max_seq, min_kept_seq) VALUES `+
			placeholders(hi-lo, "(?,?,?,?)")+` ON DUPLICATE KEY UPDATE max_seq = VALUES(max_seq), min_kept_seq = VALUES(min_kept_seq)`, args...)
		if err != nil {
			return fmt.Errorf("save channels: %w", err)
		}
		return nil
	})
}

// saveMembers writes the net membership change of the batch.
func (b *batch) saveMembers(ctx context.Context) error {
	var added, removed []any
	var nAdded, nRemoved int
	for k, ms := range b.members {
		for u := range ms.current {
			if !ms.initial[u] {
				added, nAdded = append(added, k.Key, k.Type, u), nAdded+1
			}
		}
		for u := range ms.initial {
			if !ms.current[u] {
				removed, nRemoved = append(removed, k.Key, k.Type, u), nRemoved+1
			}
		}
	}
	if err := chunks(nAdded, rowsPerStatement, func(lo, hi int) error {
		_, err := b.tx.ExecContext(ctx, `INSERT IGNORE INTO channel_members (channel_id, channel_type, uid) VALUES `+
			placeholders(hi-lo, "(?,?,?)"), added[3*lo:3*hi]...)
		return err
	}); err != nil {
		return fmt.Errorf("add members: %w", err)
	}
	if err := chunks(nRemoved, rowsPerStatement, func(lo, hi int) error {
		_, err := b.tx.ExecContext(ctx, `DELETE m FROM `+keysTable(hi-lo, "k_id", "k_type", "k_uid")+
			` JOIN channel_members m ON m.channel_id = k.k_id AND m.channel_type = k.k_type AND m.uid = k.k_uid`, removed[3*lo:3*hi]...)
		return err
	}); err != nil {
		return fmt.Errorf("remove members: %w", err)
	}
	return nil
}

// keysTable is a derived table "k" of n rows of placeholders named cols, to join a batch of keys against
// a table: each key becomes one primary-key lookup. Long OR lists and row-constructor IN lists are what
// it replaces: MariaDB's range optimizer spends most of a second on a thousand of them. UNION ALL is
// the portable spelling (MySQL and MariaDB disagree on VALUES).
func keysTable(n int, cols ...string) string {
	var b strings.Builder
	b.WriteString("(SELECT ")
	for i, c := range cols {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("? AS " + c)
	}
	b.WriteString(strings.Repeat(" UNION ALL SELECT ?"+strings.Repeat(", ?", len(cols)-1), n-1))
	b.WriteString(") k")
	return b.String()
}

// orTuples is "(cond) OR (cond) ...", for the few ranges of one sync; long lists go through keysTable.
func orTuples(n int, cond string) string {
	return "(" + strings.TrimSuffix(strings.Repeat("("+cond+") OR ", n), " OR ") + ")"
}

// prefixed qualifies each column of a comma-separated list.
func prefixed(prefix, columns string) string {
	cols := strings.Split(columns, ",")
	for i, c := range cols {
		cols[i] = prefix + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
