package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
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

// ApplyBatch applies a batch of decoded events, in their order, in one transaction (contract §3). The
// events must all be projected: the caller drops what conversation.SkipSet.Projected rejects. What the
// batch does, and the order of its steps, is conversation.RunBatch's; this store gives it the
// transaction (batch, a conversation.BatchTx in SQL), which takes locks in a fixed order: channels,
// conversation rows, user versions. All effects on one conversation row are coalesced into one write,
// and all rows a batch changes for one user share one new version. A (storage key, message_seq)
// already applied changes nothing, so replaying a batch, whole or in part, is harmless: when
// ApplyBatch returns nil every event's effect is committed exactly once; when it returns an error
// nothing of the batch is committed and the whole batch can be retried. Errors wrap
// conversation.ErrUnavailable when the database cannot be reached and conversation.ErrConflict when
// lock conflicts outlasted the retries.
//
// When ctx carries timing hooks (WithBatchTiming), they are told the duration of each step.
func (s *Store) ApplyBatch(ctx context.Context, events []conversation.Event) (conversation.BatchResult, error) {
	timing, _ := ctx.Value(batchTimingKey{}).(batchTiming)
	var out conversation.BatchOutcome
	var applied time.Time
	opts := conversation.BatchOptions{Window: s.window, Large: s.large, NowMS: s.nowMS}
	if !s.shard.All() {
		opts.Owns = s.shard.OwnsUID
	}
	err := s.inBatchTimed(ctx, func(b *batch) error {
		var tx conversation.BatchTx = b
		if timing.wrap != nil {
			tx = timing.wrap(b)
		}
		var err error
		out, err = conversation.RunBatch(ctx, tx, events, opts)
		return err
	}, func() { applied = time.Now() }, timing.step)
	if err == nil {
		out.Result.CommitTime = time.Since(applied)
		s.committed(ctx, out.Changes)
	}
	return out.Result, err
}

type batchTimingKey struct{}

type batchTiming struct {
	wrap func(conversation.BatchTx) conversation.BatchTx
	step func(string, time.Duration)
}

// WithBatchTiming returns ctx carrying hooks that time the steps of an ApplyBatch called with it, and
// change nothing it does: wrap, when not nil, decorates the conversation.BatchTx of each attempt (to
// time its methods; with several statements per round trip the writes only queue there and are sent in
// flush), and step, when not nil, is told the duration of each step of an attempt outside the BatchTx:
// "begin", "flush" (the queued writes' round trip), "commit", and "retry_wait" (the backoff before an
// attempt after a deadlock, a lock-wait timeout or stale versions). The hooks travel in the context, as
// net/http/httptrace's do, so that they reach the store through any Store that wraps it.
func WithBatchTiming(ctx context.Context, wrap func(conversation.BatchTx) conversation.BatchTx, step func(string, time.Duration)) context.Context {
	return context.WithValue(ctx, batchTimingKey{}, batchTiming{wrap: wrap, step: step})
}

// batch is one ApplyBatch transaction attempt: conversation.BatchTx in SQL. Each method's statements
// are chunked to rowsPerStatement keys.
//
// Round trips: RunBatch reads everything before it writes anything, so the writes (rows, messages, late
// messages, channels, members) are queued and sent together when the attempt is about to commit
// (flush), several statements per round trip, and a write followed by the read of what it wrote
// (locking channels, bumping versions) is one round trip too. A batch of a few records then costs
// about six round trips instead of a dozen. With Options.OneStatementPerTrip each statement goes alone.
type batch struct {
	store *Store
	tx    *sqlx.Tx
	// queued are writes not sent yet, queuedBytes about the size of their values.
	queued      []queuedStmt
	queuedBytes int
	// versionsAt is when the attempt took its first version (user or channel); zero for none.
	versionsAt time.Time
}

// inBatch runs fn on a batch in a transaction (inTx), then sends the writes it queued and, since those
// writes come after RunBatch's own check, checks again that the attempt commits soon enough after its
// first version (conversation.VersionsFresh). done, when set, runs just before the commit.
func (s *Store) inBatch(ctx context.Context, fn func(b *batch) error, done func()) error {
	return s.inBatchTimed(ctx, fn, done, nil)
}

// inBatchTimed is inBatch telling step (when not nil) how long begin, flush, commit and retry_wait took.
func (s *Store) inBatchTimed(ctx context.Context, fn func(b *batch) error, done func(), step func(string, time.Duration)) error {
	return s.inTxTimed(ctx, func(tx *sqlx.Tx) error {
		b := &batch{store: s, tx: tx}
		err := fn(b)
		if err == nil {
			start := time.Now()
			err = b.flush(ctx)
			if step != nil {
				step("flush", time.Since(start))
			}
		}
		if err == nil {
			err = conversation.VersionsFresh(b.versionsAt)
		}
		if done != nil {
			done()
		}
		return err
	}, step)
}

// tookVersions notes that the attempt takes versions now, if it took none before.
func (b *batch) tookVersions() {
	if b.versionsAt.IsZero() {
		b.versionsAt = time.Now()
	}
}

// queuedStmt is a write waiting for flush; what names it in an error.
type queuedStmt struct {
	what, query string
	args        []any
}

// tripBytes bounds the values of the statements one round trip carries: well under the 16 MiB
// max_allowed_packet of MariaDB's default (MySQL 8's is 64 MiB), with room for escaping.
const tripBytes = 4 << 20

// exec runs a write now, or queues it for flush when statements may share a round trip; a queue that
// grew past tripBytes is sent first.
func (b *batch) exec(ctx context.Context, what, query string, args ...any) error {
	if !b.store.multi {
		if _, err := b.tx.ExecContext(ctx, query, args...); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	size := len(query)
	for _, a := range args {
		switch v := a.(type) {
		case string:
			size += 2 * len(v) // escaping may double it
		case []byte:
			size += 2 * len(v)
		default:
			size += 20
		}
	}
	if len(b.queued) > 0 && b.queuedBytes+size > tripBytes {
		if err := b.flush(ctx); err != nil {
			return err
		}
	}
	b.queued = append(b.queued, queuedStmt{what: what, query: query, args: args})
	b.queuedBytes += size
	return nil
}

// flush sends the queued writes, in order, in one round trip. A failing statement stops the rest; the
// attempt is then rolled back as a whole.
func (b *batch) flush(ctx context.Context) error {
	if len(b.queued) == 0 {
		return nil
	}
	var q strings.Builder
	var args []any
	whats := make([]string, 0, len(b.queued))
	for i, st := range b.queued {
		if i > 0 {
			q.WriteString(";\n")
		}
		q.WriteString(st.query)
		args = append(args, st.args...)
		if len(whats) == 0 || whats[len(whats)-1] != st.what {
			whats = append(whats, st.what)
		}
	}
	b.queued, b.queuedBytes = b.queued[:0], 0
	if _, err := b.tx.ExecContext(ctx, q.String(), args...); err != nil {
		return fmt.Errorf("%s: %w", strings.Join(whats, ", "), err)
	}
	return nil
}

// queryAfter runs write and then query, whose rows it returns: in one round trip when statements may
// share one (the write's result comes first and is skipped), else in two.
func (b *batch) queryAfter(ctx context.Context, write string, writeArgs []any, query string, queryArgs []any) (*sql.Rows, error) {
	if !b.store.multi {
		if _, err := b.tx.ExecContext(ctx, write, writeArgs...); err != nil {
			return nil, err
		}
		return b.tx.QueryContext(ctx, query, queryArgs...)
	}
	// The write returns no result set; the driver moves on to the query's, which the rows are.
	return b.tx.QueryContext(ctx, write+";\n"+query, append(append([]any(nil), writeArgs...), queryArgs...)...)
}

var (
	_ conversation.BatchTx  = (*batch)(nil)
	_ conversation.UpdateTx = (*batch)(nil)
)

// LockChannels creates missing channel rows and locks all of them, in the given (sorted) order: every
// batch that touches a channel is serialised behind this lock, so reads of the channel's applied seqs
// and membership below cannot be invalidated by a concurrent projector (during a rebalance two may hold
// one partition).
func (b *batch) LockChannels(ctx context.Context, keys []conversation.ChannelKey) (map[conversation.ChannelKey]conversation.ChannelState, error) {
	out := make(map[conversation.ChannelKey]conversation.ChannelState, len(keys))
	return out, chunks(len(keys), rowsPerStatement, func(lo, hi int) error {
		part := keys[lo:hi]
		args := make([]any, 0, 2*len(part))
		for _, k := range part {
			args = append(args, k.Key, k.Type)
		}
		// An upsert that changes nothing still takes the row's exclusive lock.
		rows, err := b.queryAfter(ctx, `INSERT INTO channels (channel_key, channel_type) VALUES `+
			placeholders(len(part), "(?,?)")+` ON DUPLICATE KEY UPDATE max_seq = max_seq`, args,
			`SELECT c.channel_key, c.channel_type, `+prefixed("c.", channelStateColumns)+` FROM `+
				keysTable(len(part), "k_key", "k_type")+` JOIN channels c ON c.channel_key = k.k_key AND c.channel_type = k.k_type`, args)
		if err != nil {
			return fmt.Errorf("lock channels: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var k conversation.ChannelKey
			st, err := scanChannelState(rows, &k.Key, &k.Type)
			if err != nil {
				return err
			}
			out[k] = st
		}
		return rows.Err()
	})
}

// LockChannel locks an existing channel's row and returns its state (the zero state when there is
// none): an API mutation's first lock.
func (b *batch) LockChannel(ctx context.Context, key conversation.ChannelKey) (conversation.ChannelState, error) {
	st, err := scanChannelState(b.tx.QueryRowxContext(ctx, `SELECT `+channelStateColumns+
		` FROM channels WHERE channel_key = ? AND channel_type = ? FOR UPDATE`, key.Key, key.Type))
	if errors.Is(err, sql.ErrNoRows) {
		return conversation.ChannelState{}, nil
	}
	return st, err
}

// AppliedMessages returns which of the given messages are in the window, i.e. already applied.
func (b *batch) AppliedMessages(ctx context.Context, keys []conversation.MessageKey) (map[conversation.MessageKey]bool, error) {
	out := make(map[conversation.MessageKey]bool, len(keys))
	return out, chunks(len(keys), rowsPerStatement, func(lo, hi int) error {
		args := make([]any, 0, 3*(hi-lo))
		for _, k := range keys[lo:hi] {
			args = append(args, k.Channel.Key, k.Channel.Type, k.Seq)
		}
		rows, err := b.tx.QueryContext(ctx, `SELECT m.channel_key, m.channel_type, m.message_seq FROM `+
			keysTable(hi-lo, "k_key", "k_type", "k_seq")+` JOIN messages m
			ON m.channel_key = k.k_key AND m.channel_type = k.k_type AND m.message_seq = k.k_seq`, args...)
		if err != nil {
			return fmt.Errorf("read applied seqs: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var k conversation.MessageKey
			if err := rows.Scan(&k.Channel.Key, &k.Channel.Type, &k.Seq); err != nil {
				return fmt.Errorf("scan applied seq: %w", err)
			}
			out[k] = true
		}
		return rows.Err()
	})
}

// Members returns the stored membership of the channels of whole, and which pairs of named are stored
// members.
func (b *batch) Members(ctx context.Context, whole []conversation.ChannelKey, named []conversation.Member) (map[conversation.ChannelKey][]string, error) {
	out, err := b.loadMembers(ctx, whole)
	if err != nil {
		return nil, err
	}
	return out, b.loadNamedMembers(ctx, named, out)
}

// loadMembers returns the stored membership of the given channels.
func (b *batch) loadMembers(ctx context.Context, keys []conversation.ChannelKey) (map[conversation.ChannelKey][]string, error) {
	out := make(map[conversation.ChannelKey][]string, len(keys))
	return out, chunks(len(keys), rowsPerStatement, func(lo, hi int) error {
		args := make([]any, 0, 2*(hi-lo))
		for _, k := range keys[lo:hi] {
			args = append(args, k.Key, k.Type)
		}
		return b.readMembers(ctx, "members", out, `SELECT m.channel_id, m.channel_type, m.uid FROM `+
			keysTable(hi-lo, "k_id", "k_type")+` JOIN channel_members m ON m.channel_id = k.k_id AND m.channel_type = k.k_type`, args...)
	})
}

// readMembers runs a query of (channel_id, channel_type, uid) rows and adds each uid to its channel in out.
func (b *batch) readMembers(ctx context.Context, what string, out map[conversation.ChannelKey][]string, query string, args ...any) error {
	rows, err := b.tx.QueryContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("read %s: %w", what, err)
	}
	defer rows.Close()
	for rows.Next() {
		var k conversation.ChannelKey
		var uid string
		if err := rows.Scan(&k.Key, &k.Type, &uid); err != nil {
			return fmt.Errorf("scan %s: %w", what, err)
		}
		out[k] = append(out[k], uid)
	}
	return rows.Err()
}

// loadNamedMembers adds to out which of the given (channel, uid) pairs are stored members.
func (b *batch) loadNamedMembers(ctx context.Context, keys []conversation.Member, out map[conversation.ChannelKey][]string) error {
	return chunks(len(keys), rowsPerStatement, func(lo, hi int) error {
		return b.readMembers(ctx, "named members", out, `SELECT m.channel_id, m.channel_type, m.uid FROM `+
			keysTable(hi-lo, "k_id", "k_type", "k_uid")+` JOIN channel_members m
			ON m.channel_id = k.k_id AND m.channel_type = k.k_type AND m.uid = k.k_uid`, memberArgs(keys[lo:hi])...)
	})
}

// RowsForUpdate reads and locks the existing conversation rows of keys, which are sorted: the keys table
// drives the join in its order, so rows are locked in primary-key order.
func (b *batch) RowsForUpdate(ctx context.Context, keys []conversation.ConvKey) (map[conversation.ConvKey]conversation.Row, error) {
	out := make(map[conversation.ConvKey]conversation.Row, len(keys))
	return out, chunks(len(keys), rowsPerStatement, func(lo, hi int) error {
		args := make([]any, 0, 3*(hi-lo))
		for _, k := range keys[lo:hi] {
			args = append(args, k.UID, k.ChannelID, k.ChannelType)
		}
		rows, err := b.tx.QueryxContext(ctx, `SELECT `+rowColumnList("c.")+` FROM `+
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
			out[r.ConvKey] = r
		}
		return rows.Err()
	})
}

// WriteRows writes whole rows, sorted by key, with multi-row upserts.
func (b *batch) WriteRows(ctx context.Context, rows []conversation.Row) error {
	return chunks(len(rows), rowsPerStatement, func(lo, hi int) error {
		args := make([]any, 0, 12*(hi-lo))
		for i := range rows[lo:hi] {
			args = appendRowArgs(args, &rows[lo+i])
		}
		return b.exec(ctx, "write conversations", upsertRows(hi-lo), args...)
	})
}

// channelStateColumns are a channels row's conversation.ChannelState.
const channelStateColumns = `max_seq, min_kept_seq, large, members, arrivals, red_dots, bc_max_seq, bc_client_msg_no, bc_msg_at, version`

// scanChannelState scans channelStateColumns, after the given leading destinations.
func scanChannelState(rows rowScanner, lead ...any) (conversation.ChannelState, error) {
	var st conversation.ChannelState
	var large int
	b := &st.Broadcast
	if err := rows.Scan(append(lead, &st.MaxSeq, &st.MinKeptSeq, &large, &st.Members, &b.Arrivals, &b.RedDots, &b.MaxSeq,
		&b.ClientMsgNo, &b.Timestamp, &b.Version)...); err != nil {
		return st, fmt.Errorf("scan channel: %w", err)
	}
	st.Large = large != 0
	return st, nil
}

// LateSince reads the late messages of each channel of since that arrived after its arrival number.
func (b *batch) LateSince(ctx context.Context, since map[conversation.ChannelKey]int64) (map[conversation.ChannelKey][]conversation.LateMsg, error) {
	return loadLate(ctx, b.tx, since)
}

// loadLate reads the late messages of each channel of since that arrived after its arrival number.
func loadLate(ctx context.Context, q sqlx.QueryerContext, since map[conversation.ChannelKey]int64) (map[conversation.ChannelKey][]conversation.LateMsg, error) {
	out := map[conversation.ChannelKey][]conversation.LateMsg{}
	keys := make([]conversation.ChannelKey, 0, len(since))
	for k := range since {
		keys = append(keys, k)
	}
	return out, chunks(len(keys), rowsPerStatement, func(lo, hi int) error {
		args := make([]any, 0, 3*(hi-lo))
		for _, k := range keys[lo:hi] {
			args = append(args, k.Key, k.Type, since[k])
		}
		rows, err := q.QueryContext(ctx, `SELECT `+prefixed("l.", lateColumns)+` FROM `+keysTable(hi-lo, "k_key", "k_type", "k_after")+
			` JOIN late_messages l ON l.channel_key = k.k_key AND l.channel_type = k.k_type AND l.arrival > k.k_after`, args...)
		if err != nil {
			return fmt.Errorf("read late messages: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			m, err := scanLate(rows)
			if err != nil {
				return err
			}
			out[m.Channel] = append(out[m.Channel], m)
		}
		return rows.Err()
	})
}

const lateColumns = `channel_key, channel_type, arrival, message_seq, red_dot, client_msg_no, sent_at`

func scanLate(rows rowScanner, lead ...any) (conversation.LateMsg, error) {
	var m conversation.LateMsg
	var redDot int
	if err := rows.Scan(append(lead, &m.Channel.Key, &m.Channel.Type, &m.Arrival, &m.Seq, &redDot, &m.ClientMsgNo, &m.Timestamp)...); err != nil {
		return m, fmt.Errorf("scan late message: %w", err)
	}
	m.RedDot = redDot != 0
	return m, nil
}

// insertLate records the batch's late broadcast messages of large channels.
func (b *batch) insertLate(ctx context.Context, late []conversation.LateMsg) error {
	return chunks(len(late), rowsPerStatement, func(lo, hi int) error {
		args := make([]any, 0, 7*(hi-lo))
		for _, m := range late[lo:hi] {
			args = append(args, m.Channel.Key, m.Channel.Type, m.Arrival, m.Seq, m.RedDot, m.ClientMsgNo, m.Timestamp)
		}
		return b.exec(ctx, "insert late messages", `INSERT INTO late_messages (`+lateColumns+`) VALUES `+
			placeholders(hi-lo, "(?,?,?,?,?,?,?)"), args...)
	})
}

// rebumpAfter: a bump that took longer than this most likely waited for another attempt's hold on a
// user's version row (another lane or replica changing rows of the same user, until it commits). Its
// versions were computed from the clock read before the wait, so it is done again, at once now that
// the rows are held, with the clock read after it (conversation.BatchTx.BumpVersions). An eighth of the
// slack: far above what a bump of a few thousand users takes, far below the half of it after which
// the attempt would be retried whole (conversation.VersionsFresh).
const rebumpAfter = conversation.LargeVersionSlackMS * time.Millisecond / 8

// BumpVersions gives each user of uids its next version (see Store.bumpVersions), the upsert and the
// read of the versions in one round trip; again when the first bump waited (rebumpAfter).
func (b *batch) BumpVersions(ctx context.Context, uids []string) (map[string]int64, error) {
	start := time.Now()
	out, err := b.bumpVersions(ctx, uids)
	if err == nil && time.Since(start) > rebumpAfter {
		out, err = b.bumpVersions(ctx, uids)
	}
	b.tookVersions()
	return out, err
}

func (b *batch) bumpVersions(ctx context.Context, uids []string) (map[string]int64, error) {
	if !b.store.multi {
		return b.store.bumpVersions(ctx, b.tx, uids)
	}
	now := b.store.nowMS()
	out := make(map[string]int64, len(uids))
	return out, chunks(len(uids), rowsPerStatement, func(lo, hi int) error {
		part := uids[lo:hi]
		bump := make([]any, 0, 2*len(part))
		read := make([]any, 0, len(part))
		for _, u := range part {
			bump = append(bump, u, now)
			read = append(read, u)
		}
		rows, err := b.queryAfter(ctx, bumpVersionsSQL(len(part)), bump, readVersionsSQL(len(part)), read)
		if err != nil {
			return fmt.Errorf("bump versions: %w", err)
		}
		defer rows.Close()
		return scanVersions(rows, out)
	})
}

// bumpVersionsSQL upserts n users' versions to max(now, previous + 1), now being each tuple's second value.
func bumpVersionsSQL(n int) string {
	return `INSERT INTO user_versions (uid, version) VALUES ` + placeholders(n, "(?,?)") +
		` ON DUPLICATE KEY UPDATE version = GREATEST(VALUES(version), version + 1)`
}

// bumpVersions gives each user of uids, which are sorted and unique, its next version (contract §3.6)
// and returns them. The upsert takes each user's version row lock until commit, in sorted order, so two transactions that change rows of one
// user get versions in the order they commit.
func (s *Store) bumpVersions(ctx context.Context, tx *sqlx.Tx, uids []string) (map[string]int64, error) {
	now := s.nowMS()
	out := make(map[string]int64, len(uids))
	err := chunks(len(uids), rowsPerStatement, func(lo, hi int) error {
		part := uids[lo:hi]
		args := make([]any, 0, 2*len(part))
		for _, u := range part {
			args = append(args, u, now)
		}
		if _, err := tx.ExecContext(ctx, bumpVersionsSQL(len(part)), args...); err != nil {
			return fmt.Errorf("bump versions: %w", err)
		}
		if err := readVersions(ctx, tx, part, out); err != nil {
			return fmt.Errorf("read versions: %w", err)
		}
		return nil
	})
	return out, err
}

// WriteChannels writes the batch's messages, late messages, channel states (pruning windows) and
// membership change, in that order.
func (b *batch) WriteChannels(ctx context.Context, w conversation.ChannelWrites) error {
	b.tookVersions() // channel versions were stamped just before
	if err := b.insertMessages(ctx, w.Messages); err != nil {
		return err
	}
	if err := b.insertLate(ctx, w.Late); err != nil {
		return err
	}
	if err := b.saveChannels(ctx, w.Channels); err != nil {
		return err
	}
	return b.saveMembers(ctx, w.MembersAdded, w.MembersRemoved)
}

// insertMessages adds the batch's new messages to the windows, in statements bounded by rows and by
// payload bytes.
func (b *batch) insertMessages(ctx context.Context, msgs []*conversation.Message) error {
	for lo := 0; lo < len(msgs); {
		hi, size := lo, 0
		for hi < len(msgs) && hi-lo < rowsPerStatement && (hi == lo || size+len(msgs[hi].Payload) <= payloadPerStatement) {
			size += len(msgs[hi].Payload)
			hi++
		}
		args := make([]any, 0, 12*(hi-lo))
		for _, m := range msgs[lo:hi] {
			k := m.Key()
			payload := m.Payload
			if payload == nil {
				payload = []byte{}
			}
			args = append(args, k.Key, k.Type, m.MessageSeq, m.MessageID, m.ClientMsgNo, m.FromUID, m.ChannelID,
				m.Timestamp, m.Header.RedDot, m.Setting, m.Expire, payload)
		}
		if err := b.exec(ctx, "insert messages", `INSERT INTO messages (channel_key, channel_type, message_seq, message_id,
			client_msg_no, from_uid, channel_id, sent_at, red_dot, setting, expire, payload) VALUES `+
			placeholders(hi-lo, "(?,?,?,?,?,?,?,?,?,?,?,?)"), args...); err != nil {
			return err
		}
		lo = hi
	}
	return nil
}

// saveChannels records each changed channel's newest seq and watermark, and prunes the windows whose
// watermark moved, all of the batch's channels in one statement each; the watermark moves in the same
// transaction as the delete, so a pruned message can never be applied again.
func (b *batch) saveChannels(ctx context.Context, updates []conversation.ChannelUpdate) error {
	var pruned []conversation.ChannelUpdate
	for _, u := range updates {
		if u.Pruned {
			pruned = append(pruned, u)
		}
	}
	if err := chunks(len(pruned), rowsPerStatement, func(lo, hi int) error {
		args := make([]any, 0, 3*(hi-lo))
		for _, u := range pruned[lo:hi] {
			args = append(args, u.Key.Key, u.Key.Type, u.MinKeptSeq)
		}
		return b.exec(ctx, "prune windows", `DELETE m FROM `+keysTable(hi-lo, "k_key", "k_type", "k_min")+
			` JOIN messages m ON m.channel_key = k.k_key AND m.channel_type = k.k_type AND m.message_seq < k.k_min`, args...)
	}); err != nil {
		return err
	}
	return chunks(len(updates), rowsPerStatement, func(lo, hi int) error {
		args := make([]any, 0, 12*(hi-lo))
		for _, u := range updates[lo:hi] {
			bc := &u.Broadcast
			args = append(args, u.Key.Key, u.Key.Type, u.MaxSeq, u.MinKeptSeq, u.Large, u.Members, bc.Arrivals, bc.RedDots,
				bc.MaxSeq, bc.ClientMsgNo, bc.Timestamp, bc.Version)
		}
		return b.exec(ctx, "save channels", `INSERT INTO channels (channel_key, channel_type, `+channelStateColumns+`) VALUES `+
			placeholders(hi-lo, "(?,?,?,?,?,?,?,?,?,?,?,?)")+` ON DUPLICATE KEY UPDATE max_seq = VALUES(max_seq),
			min_kept_seq = VALUES(min_kept_seq), large = VALUES(large), members = VALUES(members), arrivals = VALUES(arrivals),
			red_dots = VALUES(red_dots), bc_max_seq = VALUES(bc_max_seq), bc_client_msg_no = VALUES(bc_client_msg_no),
			bc_msg_at = VALUES(bc_msg_at), version = VALUES(version)`, args...)
	})
}

// saveMembers writes the batch's net membership change.
func (b *batch) saveMembers(ctx context.Context, added, removed []conversation.Member) error {
	if err := chunks(len(added), rowsPerStatement, func(lo, hi int) error {
		return b.exec(ctx, "add members", `INSERT IGNORE INTO channel_members (channel_id, channel_type, uid) VALUES `+
			placeholders(hi-lo, "(?,?,?)"), memberArgs(added[lo:hi])...)
	}); err != nil {
		return err
	}
	return chunks(len(removed), rowsPerStatement, func(lo, hi int) error {
		return b.exec(ctx, "remove members", `DELETE m FROM `+keysTable(hi-lo, "k_id", "k_type", "k_uid")+
			` JOIN channel_members m ON m.channel_id = k.k_id AND m.channel_type = k.k_type AND m.uid = k.k_uid`, memberArgs(removed[lo:hi])...)
	})
}

func memberArgs(ms []conversation.Member) []any {
	args := make([]any, 0, 3*len(ms))
	for _, m := range ms {
		args = append(args, m.Channel.Key, m.Channel.Type, m.UID)
	}
	return args
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
