package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
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
	err := s.inBatchTimed(ctx, s.rows, func(b *batch) error {
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
// "begin", "check_guesses" (re-reading the rows taken from the row cache), "flush" (the queued writes'
// round trip), "commit", and "retry_wait" (the backoff before an attempt after a deadlock, a lock-wait
// timeout or stale versions). The hooks travel in the context so that they reach the store through any
// Store that wraps it.
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
	// Optimistic row writes (Options.OptimisticRowWrites): expect is the version each row that
	// RowsForUpdate was asked for had when it was read, 0 for none; WriteRows writes a row only if it
	// still has it. fresh are the channels LockChannels found in the zero state: no conversation row of
	// theirs can exist, so guess (the first attempt of a batch, not a retry after a conflict) takes
	// them as absent without reading them.
	expect map[conversation.ConvKey]int64
	fresh  map[conversation.ChannelKey]bool
	guess  bool
	// guessed are the rows RowsForUpdate did not read (taken as absent or from cache) and WriteRows
	// has not written: checkGuesses reads their versions before the commit.
	guessed map[conversation.ConvKey]bool
	// cache, when set, holds rows as last committed (rowcache.go): a guess like fresh. known are the
	// rows this attempt read or wrote, for it once the attempt commits.
	cache *rowCache
	known map[conversation.ConvKey]conversation.Row
}

// inBatch runs fn on a batch in a transaction (inTx), then sends the writes it queued and, since those
// writes come after RunBatch's own check, checks again that the attempt commits soon enough after its
// first version (conversation.VersionsFresh). done, when set, runs just before the commit. With cache,
// the batch's first attempt takes rows from it, and the rows it read or wrote go into it once it
// committed; a failed attempt empties it (its guess may have been what failed).
func (s *Store) inBatch(ctx context.Context, cache *rowCache, fn func(b *batch) error, done func()) error {
	return s.inBatchTimed(ctx, cache, fn, done, nil)
}

// inBatchTimed is inBatch telling step (when not nil) how long begin, check_guesses, flush, commit and
// retry_wait took.
func (s *Store) inBatchTimed(ctx context.Context, cache *rowCache, fn func(b *batch) error, done func(), step func(string, time.Duration)) error {
	timed := func(name string, start time.Time) {
		if step != nil {
			step(name, time.Since(start))
		}
	}
	attempts := 0
	var last *batch
	err := s.inTxTimed(ctx, func(tx *sqlx.Tx) error {
		attempts++
		b := &batch{store: s, tx: tx, guess: attempts == 1, cache: cache}
		last = b
		err := fn(b)
		if err == nil {
			start := time.Now()
			err = b.checkGuesses(ctx)
			timed("check_guesses", start)
		}
		if err == nil {
			start := time.Now()
			err = b.flush(ctx)
			timed("flush", start)
		}
		if err == nil {
			err = conversation.VersionsFresh(b.versionsAt)
		}
		if err != nil && cache != nil {
			cache.clear()
		}
		if done != nil {
			done()
		}
		return err
	}, step)
	if cache != nil && last != nil {
		if err == nil {
			cache.put(last.known)
		} else {
			cache.clear()
		}
	}
	return err
}

// checkGuesses fails the attempt with conversation.ErrConflict if a row that RowsForUpdate guessed
// and that was not written (WriteRows checks those) is not as guessed: the batch decided on it (left it
// alone, say, a tombstone ignoring an older message), so it must be what is stored now. A row changed
// after this read and before the commit changes nothing: the attempt did not write it, so it is as if
// the attempt had committed first.
func (b *batch) checkGuesses(ctx context.Context) error {
	keys := make([]conversation.ConvKey, 0, len(b.guessed))
	for k := range b.guessed {
		keys = append(keys, k)
	}
	return chunks(len(keys), rowsPerStatement, func(lo, hi int) error {
		args := make([]any, 0, 3*(hi-lo))
		for _, k := range keys[lo:hi] {
			args = append(args, k.UID, k.ChannelID, k.ChannelType)
		}
		rows, err := b.tx.QueryContext(ctx, `SELECT c.uid, c.channel_id, c.channel_type, c.version FROM `+
			keysTable(hi-lo, "k_uid", "k_id", "k_type")+` JOIN conversations c
			ON c.uid = k.k_uid AND c.channel_id = k.k_id AND c.channel_type = k.k_type`, args...)
		if err != nil {
			return fmt.Errorf("check conversations: %w", err)
		}
		defer rows.Close()
		found := 0
		for rows.Next() {
			var k conversation.ConvKey
			var v int64
			if err := rows.Scan(&k.UID, &k.ChannelID, &k.ChannelType, &v); err != nil {
				return fmt.Errorf("scan conversation version: %w", err)
			}
			if b.expect[k] != v {
				return fmt.Errorf("%w: a conversation changed since it was read", conversation.ErrConflict)
			}
			found++
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for _, k := range keys[lo:hi] {
			if b.expect[k] != 0 {
				found--
			}
		}
		if found != 0 {
			return fmt.Errorf("%w: a conversation was deleted since it was read", conversation.ErrConflict)
		}
		return nil
	})
}

// saw notes a row as this attempt read or wrote it, for the cache.
func (b *batch) saw(r conversation.Row) {
	if b.cache == nil {
		return
	}
	if b.known == nil {
		b.known = map[conversation.ConvKey]conversation.Row{}
	}
	b.known[r.ConvKey] = r
}

// tookVersions notes that the attempt takes versions now, if it took none before.
func (b *batch) tookVersions() {
	if b.versionsAt.IsZero() {
		b.versionsAt = time.Now()
	}
}

// queuedStmt is a write waiting for flush; what names it in an error. A counted one must affect want
// rows (execCounted). For one with duplicateConflicts a duplicate key means a conflict (WriteRows).
type queuedStmt struct {
	what, query        string
	args               []any
	counted            bool
	want               int64
	duplicateConflicts bool
}

// tripBytes bounds the values of the statements one round trip carries: well under the 16 MiB
// max_allowed_packet of MariaDB's default (MySQL 8's is 64 MiB), with room for escaping.
const tripBytes = 4 << 20

// exec runs a write now, or queues it for flush when statements may share a round trip; a queue that
// grew past tripBytes is sent first.
func (b *batch) exec(ctx context.Context, what, query string, args ...any) error {
	return b.enqueue(ctx, queuedStmt{what: what, query: query, args: args})
}

// execCounted is exec for a write that must affect exactly want rows (as MySQL counts them: an upsert
// counts 1 per row inserted, 2 per row changed, 0 per row left as it was, 1 with CLIENT_FOUND_ROWS);
// when it affects any other number the attempt fails with conversation.ErrConflict. The driver reports only the last statement's
// count of a round trip, so a counted write travels last in its trip, one per trip.
func (b *batch) execCounted(ctx context.Context, what string, want int64, query string, args ...any) error {
	if b.store.multi && slices.ContainsFunc(b.queued, func(q queuedStmt) bool { return q.counted }) {
		if err := b.flush(ctx); err != nil {
			return err
		}
	}
	return b.enqueue(ctx, queuedStmt{what: what, query: query, args: args, counted: true, want: want})
}

// enqueue runs st now (one statement per trip) or queues it.
func (b *batch) enqueue(ctx context.Context, st queuedStmt) error {
	if !b.store.multi {
		res, err := b.tx.ExecContext(ctx, st.query, st.args...)
		if err != nil {
			return duplicateConflict(fmt.Errorf("%s: %w", st.what, err), st)
		}
		return checkCount(res, st)
	}
	size := len(st.query)
	for _, a := range st.args {
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
	b.queued = append(b.queued, st)
	b.queuedBytes += size
	return nil
}

// checkCount fails a counted write that did not affect the rows it had to.
func checkCount(res sql.Result, st queuedStmt) error {
	if !st.counted {
		return nil
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("%s: %w", st.what, err)
	}
	if n != st.want {
		return fmt.Errorf("%w: %s: %d rows affected, want %d: a row changed since it was read", conversation.ErrConflict, st.what, n, st.want)
	}
	return nil
}

// flush sends the queued writes in one round trip, in order but for a counted write, which goes last
// (execCounted; the attempt's statements commit together, so their order within it changes nothing a
// reader sees). A failing statement stops the rest; the attempt is then rolled back as a whole.
func (b *batch) flush(ctx context.Context) error {
	if len(b.queued) == 0 {
		return nil
	}
	var counted queuedStmt
	if i := slices.IndexFunc(b.queued, func(q queuedStmt) bool { return q.counted }); i >= 0 {
		counted = b.queued[i]
		b.queued = append(slices.Delete(b.queued, i, i+1), counted)
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
	sent := b.queued
	b.queued, b.queuedBytes = nil, 0
	res, err := b.tx.ExecContext(ctx, q.String(), args...)
	if err != nil {
		return duplicateConflict(fmt.Errorf("%s: %w", strings.Join(whats, ", "), err), sent...)
	}
	return checkCount(res, counted)
}

// duplicateConflict wraps err, an error of sending sent, with conversation.ErrConflict when it is a
// duplicate key and one of sent says that means a conflict.
func duplicateConflict(err error, sent ...queuedStmt) error {
	var me *mysql.MySQLError
	if !errors.As(err, &me) || me.Number != errDuplicateKey || !slices.ContainsFunc(sent, func(q queuedStmt) bool { return q.duplicateConflicts }) {
		return err
	}
	return fmt.Errorf("%w: a conversation guessed absent exists: %w", conversation.ErrConflict, err)
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
			if st == (conversation.ChannelState{}) {
				if b.fresh == nil {
					b.fresh = map[conversation.ChannelKey]bool{}
				}
				b.fresh[k] = true
			}
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

// rowMode is how a store's batches read and write conversation rows.
type rowMode int

const (
	// rowsLocked (the default) reads and locks every row.
	rowsLocked rowMode = iota
	// rowsOptimistic locks none and writes a row only if unchanged (Options.OptimisticRowWrites).
	rowsOptimistic
)

// RowsForUpdate returns the existing conversation rows of keys, which are sorted, held for WriteRows
// (conversation.BatchTx): by locking them (the keys table drives the join in its order, so rows are
// locked in primary-key order), or with Options.OptimisticRowWrites by noting each one's version
// (expect), which WriteRows checks, so the read takes no lock. Then rows of channels LockChannels found
// fresh are not read on a batch's first attempt: nearly always none exists (a row is written only under
// its channel's lock, by a batch that almost always leaves the channel's state non-zero), and should
// one exist after all, the insert or checkGuesses finds it and the retry reads. With the row cache,
// cached rows are not read either.
func (b *batch) RowsForUpdate(ctx context.Context, keys []conversation.ConvKey) (map[conversation.ConvKey]conversation.Row, error) {
	out := make(map[conversation.ConvKey]conversation.Row, len(keys))
	mode := b.store.rowMode
	lock := " FOR UPDATE"
	if mode == rowsOptimistic {
		lock = ""
	}
	read := keys
	if mode == rowsOptimistic {
		read = nil
		if b.expect == nil {
			b.expect = make(map[conversation.ConvKey]int64, len(keys))
		}
		var cached map[conversation.ConvKey]conversation.Row
		if b.guess && b.cache != nil {
			cached = b.cache.get(keys)
		}
		for _, k := range keys {
			b.expect[k] = 0
			if r, ok := cached[k]; ok {
				out[k], b.expect[k] = r, r.Version
			} else if !b.guess || !b.fresh[conversation.ChannelKeyOf(k.UID, conversation.Channel{ID: k.ChannelID, Type: k.ChannelType})] {
				read = append(read, k)
				continue
			}
			if b.guessed == nil {
				b.guessed = map[conversation.ConvKey]bool{}
			}
			b.guessed[k] = true
		}
	}
	return out, chunks(len(read), rowsPerStatement, func(lo, hi int) error {
		args := make([]any, 0, 3*(hi-lo))
		for _, k := range read[lo:hi] {
			args = append(args, k.UID, k.ChannelID, k.ChannelType)
		}
		rows, err := b.tx.QueryxContext(ctx, `SELECT `+rowColumnList("c.")+` FROM `+
			keysTable(hi-lo, "k_uid", "k_id", "k_type")+` JOIN conversations c
			ON c.uid = k.k_uid AND c.channel_id = k.k_id AND c.channel_type = k.k_type`+lock, args...)
		if err != nil {
			return fmt.Errorf("read conversations: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			r, err := scanRow(rows)
			if err != nil {
				return err
			}
			out[r.ConvKey] = r
			if b.expect != nil {
				b.expect[r.ConvKey] = r.Version
				b.saw(r)
			}
		}
		return rows.Err()
	})
}

// WriteRows writes whole rows, sorted by key: by default, rows RowsForUpdate locked, with multi-row
// upserts. With Options.OptimisticRowWrites a row RowsForUpdate found is written only if it still has
// the version it had then (upsertRowsIf), which the statement's count of affected rows tells, and a row
// it did not find (or took as absent without reading it) is inserted: a duplicate key then says the row
// exists after all, which only a guess can have missed (rows are inserted only by batches, under their
// channel's lock). A count short of 2 per row or such a duplicate fails the attempt with
// conversation.ErrConflict, and the retry reads every row. The counts are read
// so that CLIENT_FOUND_ROWS (a DSN's clientFoundRows, a proxy's setting) cannot hide a change: a row
// written counts 2 with or without it, one left alone or inserted in its absence at most 1.
func (b *batch) WriteRows(ctx context.Context, rows []conversation.Row) error {
	mode := b.store.rowMode
	var inserts, upserts, updates []conversation.Row
	for _, r := range rows {
		b.saw(r)
		delete(b.guessed, r.ConvKey)
		was, ok := b.expect[r.ConvKey]
		switch {
		case mode == rowsLocked:
			upserts = append(upserts, r)
		case !ok:
			return fmt.Errorf("write conversations: row %v was not read for update", r.ConvKey)
		case was == 0:
			inserts = append(inserts, r)
		default:
			r.Version = was // the tuple carries the version the stored row must still have
			updates = append(updates, r)
		}
	}
	if err := chunks(len(upserts), rowsPerStatement, func(lo, hi int) error {
		args := make([]any, 0, len(convColumns)*(hi-lo))
		for i := range upserts[lo:hi] {
			args = appendRowArgs(args, &upserts[lo+i])
		}
		return b.exec(ctx, "write conversations", upsertRows(hi-lo), args...)
	}); err != nil {
		return err
	}
	if err := chunks(len(inserts), rowsPerStatement, func(lo, hi int) error {
		args := make([]any, 0, len(convColumns)*(hi-lo))
		for i := range inserts[lo:hi] {
			args = appendRowArgs(args, &inserts[lo+i])
		}
		return b.enqueue(ctx, queuedStmt{what: "insert conversations", query: insertRows(hi - lo), args: args, duplicateConflicts: b.guess})
	}); err != nil {
		return err
	}
	return chunks(len(updates), rowsPerStatement, func(lo, hi int) error {
		args := make([]any, 0, len(convColumns)*(hi-lo))
		for i := range updates[lo:hi] {
			args = appendRowArgs(args, &updates[lo+i])
		}
		return b.execCounted(ctx, "update conversations", int64(2*(hi-lo)), upsertRowsIf(hi-lo), args...)
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
