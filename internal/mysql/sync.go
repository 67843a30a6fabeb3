package mysql

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/convsync/conversations/internal/conversation"
)

// UserRows returns every conversation of uid, tombstones included, and the user's version (0 for a user
// with none), read by one statement so that both come from one snapshot: the rows are exactly those
// committed up to that version. A user's rows are few (a conversation list), so selection happens in
// memory, in one place: conversation.Select. Conversations of large channels (contract §5) are derived
// from the member's row and the channel's state, which one more statement reads for all of them at
// once; a user who follows no large channel costs one statement. A member of a large channel who has
// no conversation there yet comes back as a Hidden row (Select leaves it out), so that callers know
// the list follows a channel and changes without the user's version.
func (s *Store) UserRows(ctx context.Context, uid string) ([]conversation.Row, int64, error) {
	rows, version, err := s.RawUserRows(ctx, uid)
	if err != nil {
		return nil, 0, err
	}
	rows, err = s.DeriveLarge(ctx, rows)
	return rows, version, err
}

// ReadList is UserRows as sync reads it (httpapi.Rows), or UserRowsPage for a paged incremental sync
// (q.Version and q.Limit set): from the database during the request, so served as the zero
// conversation.Served says. Errors are those of UserRows and UserRowsPage.
func (s *Store) ReadList(ctx context.Context, q conversation.Query) (conversation.ListRead, error) {
	read := func(ctx context.Context, q conversation.Query) ([]conversation.Row, int64, error) {
		return s.UserRows(ctx, q.UID)
	}
	if q.Version > 0 && q.Limit > 0 {
		read = s.UserRowsPage
	}
	rows, version, err := read(ctx, q)
	return conversation.ListRead{Rows: rows, Version: version}, err
}

// ReadRecents is Recents as sync reads it (httpapi.Recents), from the database during the request.
func (s *Store) ReadRecents(ctx context.Context, _ string, ranges []conversation.SeqRange) (conversation.RecentsRead, error) {
	msgs, err := s.Recents(ctx, ranges)
	return conversation.RecentsRead{Messages: msgs}, err
}

// RawUserRows is UserRows with followers of large channels as stored: at their base, not derived. Such
// rows change only with the user's version, so they can be cached by it; DeriveLarge then gives the
// conversations. One statement.
func (s *Store) RawUserRows(ctx context.Context, uid string) ([]conversation.Row, int64, error) {
	return s.scanUserRows(ctx, userRowsSQL, uid)
}

// scanUserRows runs a query whose lines are the user's version, whether the line holds a row, and the
// row's columns, and returns the rows that are conversations (or follow a large channel) and the version.
func (s *Store) scanUserRows(ctx context.Context, query string, args ...any) ([]conversation.Row, int64, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("select conversations: %w", translate(err))
	}
	defer rows.Close()
	var version int64
	out := []conversation.Row{}
	for rows.Next() {
		var hasRow bool
		var r conversation.Row
		if err := rows.Scan(append([]any{&version, &hasRow}, rowDest(&r)...)...); err != nil {
			return nil, 0, fmt.Errorf("scan conversation: %w", err)
		}
		if !hasRow || (r.Hidden && !r.Follows) { // purged tombstones; rows that are no conversation
			continue
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("select conversations: %w", translate(err))
	}
	return out, version, nil
}

// DeriveLarge returns rows with every follower of a large channel replaced by its conversation now
// (conversation.Derive), reading the states of all their channels, and their late messages, in one
// statement; rows without followers cost nothing. rows is not modified.
func (s *Store) DeriveLarge(ctx context.Context, rows []conversation.Row) ([]conversation.Row, error) {
	return conversation.DeriveList(ctx, rows, s.largeStates)
}

// LargeStates returns, in one statement, the state of each existing channel of since and its late
// messages with an arrival number above since's (readcache.Large holds them). Errors wrap
// conversation.ErrUnavailable when the database cannot be reached.
func (s *Store) LargeStates(ctx context.Context, since map[conversation.ChannelKey]int64) (map[conversation.ChannelKey]conversation.ChannelState, map[conversation.ChannelKey][]conversation.LateMsg, error) {
	return s.largeStates(ctx, since)
}

// ChannelHeads returns the broadcast arrivals and version of each existing channel of keys, one
// statement per few hundred: what tells a held state (readcache.Large) from the stored one, since every
// change of a channel's broadcast state moves its arrivals or its version. Errors wrap
// conversation.ErrUnavailable when the database cannot be reached.
func (s *Store) ChannelHeads(ctx context.Context, keys []conversation.ChannelKey) (map[conversation.ChannelKey]conversation.Broadcast, error) {
	out := make(map[conversation.ChannelKey]conversation.Broadcast, len(keys))
	err := chunks(len(keys), rowsPerStatement, func(lo, hi int) error {
		args := make([]any, 0, 2*(hi-lo))
		for _, k := range keys[lo:hi] {
			args = append(args, k.Key, k.Type)
		}
		rows, err := s.db.QueryContext(ctx, `SELECT ch.channel_key, ch.channel_type, ch.arrivals, ch.version FROM `+
			keysTable(hi-lo, "k_key", "k_type")+` JOIN channels ch ON ch.channel_key = k.k_key AND ch.channel_type = k.k_type`, args...)
		if err != nil {
			return fmt.Errorf("select channel heads: %w", translate(err))
		}
		defer rows.Close()
		for rows.Next() {
			var k conversation.ChannelKey
			var b conversation.Broadcast
			if err := rows.Scan(&k.Key, &k.Type, &b.Arrivals, &b.Version); err != nil {
				return fmt.Errorf("scan channel head: %w", err)
			}
			out[k] = b
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("select channel heads: %w", translate(err))
		}
		return nil
	})
	return out, err
}

// largeStates reads, in one statement (one snapshot, so that the late messages are those the channel
// state counts), the state of each channel of since and its late messages that arrived after the
// arrival number since gives it.
func (s *Store) largeStates(ctx context.Context, since map[conversation.ChannelKey]int64) (map[conversation.ChannelKey]conversation.ChannelState, map[conversation.ChannelKey][]conversation.LateMsg, error) {
	channels := make(map[conversation.ChannelKey]conversation.ChannelState, len(since))
	late := map[conversation.ChannelKey][]conversation.LateMsg{}
	keys := make([]conversation.ChannelKey, 0, len(since))
	for k := range since {
		keys = append(keys, k)
	}
	err := chunks(len(keys), rowsPerStatement, func(lo, hi int) error {
		args := make([]any, 0, 3*(hi-lo))
		for _, k := range keys[lo:hi] {
			args = append(args, k.Key, k.Type, since[k])
		}
		rows, err := s.db.QueryContext(ctx, `SELECT `+prefixed("ch.", channelStateColumns)+`, COALESCE(l.arrival, 0),
			COALESCE(l.message_seq, 0), COALESCE(l.red_dot, 0), COALESCE(l.client_msg_no, ''), COALESCE(l.sent_at, 0),
			ch.channel_key, ch.channel_type FROM `+keysTable(hi-lo, "k_key", "k_type", "k_after")+`
			JOIN channels ch ON ch.channel_key = k.k_key AND ch.channel_type = k.k_type
			LEFT JOIN late_messages l ON l.channel_key = k.k_key AND l.channel_type = k.k_type AND l.arrival > k.k_after`, args...)
		if err != nil {
			return fmt.Errorf("select large channels: %w", translate(err))
		}
		defer rows.Close()
		for rows.Next() {
			var st conversation.ChannelState
			var large, redDot int
			var m conversation.LateMsg
			b := &st.Broadcast
			if err := rows.Scan(&st.MaxSeq, &st.MinKeptSeq, &large, &st.Members, &b.Arrivals, &b.RedDots, &b.MaxSeq, &b.ClientMsgNo,
				&b.Timestamp, &b.Version, &m.Arrival, &m.Seq, &redDot, &m.ClientMsgNo, &m.Timestamp,
				&m.Channel.Key, &m.Channel.Type); err != nil {
				return fmt.Errorf("scan large channel: %w", err)
			}
			st.Large, m.RedDot = large != 0, redDot != 0
			channels[m.Channel] = st
			if m.Arrival > 0 {
				late[m.Channel] = append(late[m.Channel], m)
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("select large channels: %w", translate(err))
		}
		return nil
	})
	return channels, late, err
}

// UserVersion returns the user's version: it changes exactly when one of the user's rows does, so it
// tells whether rows read earlier are still current. One primary-key read.
func (s *Store) UserVersion(ctx context.Context, uid string) (int64, error) {
	var v int64
	err := s.db.QueryRowContext(ctx, `SELECT version FROM user_versions WHERE uid = ?`, uid).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("select user version: %w", translate(err))
	}
	return v, nil
}

// versionsPerStatement bounds the users one UserVersions query asks for.
const versionsPerStatement = 500

// UserVersions returns the current version of each of uids that has one (a user with none is absent),
// one primary-key lookup per user, versionsPerStatement users per statement: how caches revalidate many
// lists at once.
func (s *Store) UserVersions(ctx context.Context, uids []string) (map[string]int64, error) {
	out := make(map[string]int64, len(uids))
	err := chunks(len(uids), versionsPerStatement, func(lo, hi int) error {
		if err := readVersions(ctx, s.db, uids[lo:hi], out); err != nil {
			return fmt.Errorf("select user versions: %w", translate(err))
		}
		return nil
	})
	return out, err
}

// readVersions adds the version of each of uids that has one to out, in one statement.
func readVersions(ctx context.Context, q sqlx.QueryerContext, uids []string, out map[string]int64) error {
	args := make([]any, len(uids))
	for i, u := range uids {
		args[i] = u
	}
	rows, err := q.QueryContext(ctx, readVersionsSQL(len(uids)), args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	return scanVersions(rows, out)
}

// readVersionsSQL reads n users' versions.
func readVersionsSQL(n int) string {
	return `SELECT uid, version FROM user_versions WHERE uid IN (` + placeholders(n, "?") + `)`
}

// scanVersions adds (uid, version) rows to out.
func scanVersions(rows *sql.Rows, out map[string]int64) error {
	for rows.Next() {
		var u string
		var v int64
		if err := rows.Scan(&u, &v); err != nil {
			return fmt.Errorf("scan user version: %w", err)
		}
		out[u] = v
	}
	return rows.Err()
}

// recentsPerStatement bounds the ranges one recents query carries.
const recentsPerStatement = 250

const recentsColumns = `channel_key, channel_type, message_seq, message_id, client_msg_no, from_uid, channel_id,
	sent_at, red_dot, setting, expire, payload`

// Recents returns each range's recents (conversation.PickRecents: the newest Count window messages with
// After < seq <= UpTo, newest first), keyed by channel. Count counts messages, not seqs: seqs never stored
// (no_persist, sync_once, skipped, pruned) do not use it up. The first statement reads, per range, the
// primary-key range of the Count seqs at or below UpTo, which holds all of them when the channel has no
// gaps there; only the ranges that came back short with older seqs left to look at are asked again, with
// a per-range ORDER BY ... LIMIT. A sync thus costs one round trip per recentsPerStatement ranges, two
// when gaps are involved. The ranges must name distinct channels (a user has one conversation per
// channel; the caches load one range per channel).
func (s *Store) Recents(ctx context.Context, ranges []conversation.SeqRange) (map[conversation.ChannelKey][]conversation.Message, error) {
	out := make(map[conversation.ChannelKey][]conversation.Message, len(ranges))
	var todo []conversation.SeqRange
	for _, r := range ranges {
		if !r.Empty() {
			todo = append(todo, r)
		}
	}
	err := chunks(len(todo), recentsPerStatement, func(lo, hi int) error {
		args := make([]any, 0, 4*(hi-lo))
		for _, r := range todo[lo:hi] {
			args = append(args, r.Channel.Key, r.Channel.Type, max(r.After+1, r.UpTo-int64(r.Count)+1), r.UpTo)
		}
		return s.scanRecents(ctx, out, `SELECT `+recentsColumns+` FROM messages WHERE `+
			orTuples(hi-lo, "channel_key = ? AND channel_type = ? AND message_seq BETWEEN ? AND ?")+
			` ORDER BY channel_key, channel_type, message_seq DESC`, args)
	})
	if err != nil {
		return nil, err
	}
	// Ranges that met gaps: look below what the first read covered for the messages still missing.
	var more []conversation.SeqRange
	for _, r := range todo {
		from := max(r.After+1, r.UpTo-int64(r.Count)+1)
		if got := len(out[r.Channel]); got < r.Count && from > r.After+1 {
			more = append(more, conversation.SeqRange{Channel: r.Channel, After: r.After, UpTo: from - 1, Count: r.Count - got})
		}
	}
	err = chunks(len(more), recentsPerStatement, func(lo, hi int) error {
		args := make([]any, 0, 5*(hi-lo))
		parts := make([]string, 0, hi-lo)
		for _, r := range more[lo:hi] {
			args = append(args, r.Channel.Key, r.Channel.Type, r.After, r.UpTo, r.Count)
			parts = append(parts, `(SELECT `+recentsColumns+` FROM messages WHERE channel_key = ? AND channel_type = ?
				AND message_seq > ? AND message_seq <= ? ORDER BY message_seq DESC LIMIT ?)`)
		}
		if len(parts) == 1 {
			// One range needs no outer ORDER BY: vtgate would apply it instead of the inner one and
			// drop the LIMIT ("(SELECT … LIMIT n) ORDER BY …").
			q := strings.TrimSpace(parts[0])
			return s.scanRecents(ctx, out, q[1:len(q)-1], args)
		}
		return s.scanRecents(ctx, out, strings.Join(parts, " UNION ALL ")+
			` ORDER BY channel_key, channel_type, message_seq DESC`, args)
	})
	return out, err
}

// scanRecents runs a recents query and appends its messages to out, in the order read.
func (s *Store) scanRecents(ctx context.Context, out map[conversation.ChannelKey][]conversation.Message, query string, args []any) error {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("select recents: %w", translate(err))
	}
	defer rows.Close()
	for rows.Next() {
		var k conversation.ChannelKey
		var m conversation.Message
		if err := rows.Scan(&k.Key, &k.Type, &m.MessageSeq, &m.MessageID, &m.ClientMsgNo, &m.FromUID, &m.ChannelID,
			&m.Timestamp, &m.Header.RedDot, &m.Setting, &m.Expire, &m.Payload); err != nil {
			return fmt.Errorf("scan message: %w", err)
		}
		m.ChannelType = k.Type
		out[k] = append(out[k], m)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("select recents: %w", translate(err))
	}
	return nil
}

// Update applies change, given the row and the store clock in unix ms, to the user's conversation key in
// a transaction and, when change reports that a field changed, gives the row the user's next version
// (contract §3.6) in the same commit: conversation.RunUpdate over the transaction. It locks the
// channel's row (group-like channels: a follower's row is derived from it), then the conversation row,
// then the user's version row: the order the projector takes them in (conversation.RunBatch).
// Deadlocks are retried. A committed change is reported to
// Options.OnCommit. It returns the row as stored afterwards, or an error wrapping
// conversation.ErrNotFound when there is no such conversation, or conversation.ErrUnavailable when the
// database cannot be reached.
func (s *Store) Update(ctx context.Context, key conversation.ConvKey, change func(row conversation.Row, nowMS int64) (conversation.Row, bool)) (conversation.Row, error) {
	var out conversation.Row
	var changed bool
	err := s.inBatch(ctx, func(b *batch) error {
		var err error
		out, changed, err = conversation.RunUpdate(ctx, b, key, change, s.nowMS)
		return err
	}, nil)
	if err == nil && changed {
		s.committed(ctx, conversation.Changes{Versions: map[string]int64{key.UID: out.Version}})
	}
	return out, err
}

// PurgeTombstones deletes at most limit tombstones deleted before beforeMS and returns how many went.
// A purged conversation no longer tells other devices it was deleted; a later message creates it anew.
func (s *Store) PurgeTombstones(ctx context.Context, beforeMS int64, limit int) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM conversations WHERE is_deleted = 1 AND follows = 0 AND deleted_at_ms < ? LIMIT ?`, beforeMS, limit)
	if err != nil {
		return 0, fmt.Errorf("purge tombstones: %w", translate(err))
	}
	return res.RowsAffected()
}

// pageExtra is how many rows past a page's limit a paged read fetches, so that rows sharing the last
// version of the page (never split, conversation.Select) usually come with it.
const pageExtra = 64

// UserRowsPage is UserRows for a paged incremental sync (q.Version > 0, q.Limit > 0): instead of every
// row of the user it returns, from one snapshot, the user's version, the rows q selects other than
// followers of large channels with the lowest versions above q.Version (q.Limit of them, with all
// rows that share the last one's version), and every follower row, derived. conversation.Select then
// answers from them exactly what it answers from all rows: its filters are applied here in SQL and its
// limit keeps the lowest versions. The read follows the index conversations_by_version (uid, follows,
// version), so a page costs about q.Limit rows read whatever the user's number of conversations (rows
// the filters leave out are read and skipped). A query that is not paged reads everything (UserRows).
func (s *Store) UserRowsPage(ctx context.Context, q conversation.Query) ([]conversation.Row, int64, error) {
	rows, version, err := s.RawUserRowsPage(ctx, q)
	if err != nil {
		return nil, 0, err
	}
	rows, err = s.DeriveLarge(ctx, rows)
	return rows, version, err
}

// RawUserRowsPage is UserRowsPage with followers as stored, not derived (what readcache.Rows derives
// itself). One statement, two when more than pageExtra rows share the version that ends the page.
func (s *Store) RawUserRowsPage(ctx context.Context, q conversation.Query) ([]conversation.Row, int64, error) {
	if q.Version <= 0 || q.Limit <= 0 {
		return s.RawUserRows(ctx, q.UID)
	}
	filter, fargs := pageFilter(q)
	fetch := q.Limit + pageExtra
	args := append([]any{q.Version}, fargs...)
	args = append(args, q.UID, fetch, q.UID, q.UID)
	rows, version, err := s.scanUserRows(ctx, `(SELECT v.version, 1, `+rowColumnList("c.")+` FROM user_versions v
		JOIN conversations c ON c.uid = v.uid AND c.follows = 0 AND c.version > ?`+filter+`
		WHERE v.uid = ? ORDER BY c.version LIMIT ?)
		UNION ALL (SELECT v.version, 1, `+rowColumnList("c.")+` FROM user_versions v
		JOIN conversations c ON c.uid = v.uid AND c.follows = 1 WHERE v.uid = ?)
		UNION ALL (SELECT version, 0, `+zeroRowColumns+` FROM user_versions WHERE uid = ?)`, args...)
	if err != nil {
		return nil, 0, err
	}
	var plain []int
	for i := range rows {
		if !rows[i].Follows {
			plain = append(plain, i)
		}
	}
	slices.SortFunc(plain, func(a, b int) int { return cmp.Compare(rows[a].Version, rows[b].Version) })
	if len(plain) < fetch || rows[plain[q.Limit-1]].Version != rows[plain[fetch-1]].Version {
		return rows, version, nil
	}
	// The page's last version goes on past what was fetched: read all of its rows. A row among them that
	// changed meanwhile has a higher version now and comes with a later page.
	bound := rows[plain[fetch-1]].Version
	args = append([]any{bound}, fargs...)
	args = append(args, q.UID)
	more, err := s.db.QueryContext(ctx, selectRow+` c WHERE c.version = ? AND c.follows = 0`+filter+` AND c.uid = ?`, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("select conversations: %w", translate(err))
	}
	defer more.Close()
	seen := map[conversation.ConvKey]bool{}
	for _, i := range plain {
		seen[rows[i].ConvKey] = true
	}
	for more.Next() {
		r, err := scanRow(more)
		if err != nil {
			return nil, 0, err
		}
		if !seen[r.ConvKey] {
			rows = append(rows, r)
		}
	}
	if err := more.Err(); err != nil {
		return nil, 0, fmt.Errorf("select conversations: %w", translate(err))
	}
	return rows, version, nil
}

// pageFilter is conversation.Select's filters of rows that follow no large channel, as SQL on
// conversations c, with its arguments.
func pageFilter(q conversation.Query) (string, []any) {
	var b strings.Builder
	var args []any
	b.WriteString(` AND c.hidden = 0`)
	if !q.IncludeDeleted {
		b.WriteString(` AND c.is_deleted = 0`)
	}
	if q.OnlyUnread {
		b.WriteString(` AND c.unread > 0`)
	}
	if len(q.ExcludeTypes) > 0 {
		b.WriteString(` AND c.channel_type NOT IN (` + placeholders(len(q.ExcludeTypes), "?") + `)`)
		for _, t := range q.ExcludeTypes {
			args = append(args, t)
		}
	}
	return b.String(), args
}
