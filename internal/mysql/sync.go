package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/convsync/conversations/internal/conversation"
)

// Query selects a user's conversations for sync (contract §2.1).
type Query struct {
	UID string
	// Version <= 0 is a full sync: the newest MaxFull rows by timestamp. Above 0, only rows with a greater
	// version.
	Version int64
	// Limit > 0 (incremental only) keeps the Limit changed rows with the lowest versions, plus any row
	// sharing the last one's version.
	Limit          int
	MaxFull        int
	OnlyUnread     bool
	IncludeDeleted bool
	ExcludeTypes   []uint8
}

// Conversations returns the rows of q.UID that q selects, newest timestamp first, ties by channel_id then
// channel_type. It costs one query, two for an incremental sync with a limit. Errors wrap
// conversation.ErrUnavailable when the database cannot be reached.
func (s *Store) Conversations(ctx context.Context, q Query) ([]conversation.Row, error) {
	where := []string{"uid = ?"}
	args := []any{q.UID}
	if !q.IncludeDeleted {
		where = append(where, "is_deleted = 0")
	}
	if q.OnlyUnread {
		where = append(where, "unread > 0")
	}
	if len(q.ExcludeTypes) > 0 {
		where = append(where, "channel_type NOT IN ("+placeholders(len(q.ExcludeTypes), "?")+")")
		for _, t := range q.ExcludeTypes {
			args = append(args, t)
		}
	}
	limit := ""
	if q.Version > 0 {
		where = append(where, "version > ?")
		args = append(args, q.Version)
		if q.Limit > 0 {
			// The limit-th lowest version bounds the answer, so rows that share it are never split.
			var upTo int64
			err := s.db.GetContext(ctx, &upTo, `SELECT version FROM conversations WHERE `+strings.Join(where, " AND ")+
				` ORDER BY version LIMIT 1 OFFSET ?`, append(args, q.Limit-1)...)
			switch {
			case err == nil:
				where = append(where, "version <= ?")
				args = append(args, upTo)
			case !errors.Is(err, sql.ErrNoRows):
				return nil, fmt.Errorf("find version bound: %w", translate(err))
			}
		}
	} else if q.MaxFull > 0 {
		limit = fmt.Sprintf(" LIMIT %d", q.MaxFull)
	}
	rows, err := s.db.QueryxContext(ctx, selectRow+` WHERE `+strings.Join(where, " AND ")+
		` ORDER BY last_msg_at DESC, channel_id, channel_type`+limit, args...)
	if err != nil {
		return nil, fmt.Errorf("select conversations: %w", translate(err))
	}
	defer rows.Close()
	out := []conversation.Row{}
	for rows.Next() {
		r, err := scanRow(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("select conversations: %w", translate(err))
	}
	return out, nil
}

// SeqRange asks for the messages of one channel with After < message_seq <= UpTo, at most Count of them,
// newest first.
type SeqRange struct {
	Channel conversation.ChannelKey
	After   int64
	UpTo    int64
	Count   int
}

// recentsPerStatement bounds the ranges one recents query carries.
const recentsPerStatement = 250

// Recents returns the window's messages for each range, newest first, keyed by channel. Each range
// becomes a primary-key range read of at most Count seqs, and all ranges go in one statement per
// recentsPerStatement of them, so a sync costs a bounded number of round trips. Seqs missing from the
// window (pruned, or never stored) are simply absent.
func (s *Store) Recents(ctx context.Context, ranges []SeqRange) (map[conversation.ChannelKey][]conversation.Message, error) {
	out := make(map[conversation.ChannelKey][]conversation.Message, len(ranges))
	var todo []SeqRange
	for _, r := range ranges {
		if r.Count > 0 && r.UpTo > r.After {
			todo = append(todo, r)
		}
	}
	err := chunks(len(todo), recentsPerStatement, func(lo, hi int) error {
		args := make([]any, 0, 4*(hi-lo))
		for _, r := range todo[lo:hi] {
			from := max(r.After+1, r.UpTo-int64(r.Count)+1)
			args = append(args, r.Channel.Key, r.Channel.Type, from, r.UpTo)
		}
		rows, err := s.db.QueryContext(ctx, `SELECT channel_key, channel_type, message_seq, message_id, client_msg_no,
			from_uid, channel_id, sent_at, red_dot, setting, expire, payload FROM messages WHERE `+
			orTuples(hi-lo, "channel_key = ? AND channel_type = ? AND message_seq BETWEEN ? AND ?")+
			` ORDER BY channel_key, channel_type, message_seq DESC`, args...)
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
	})
	return out, err
}

// Update applies change, given the row and the store clock in unix ms, to the user's conversation key in a transaction and, when change reports that
// a field changed, gives the row the user's next version (contract §3.6) in the same commit. It locks the
// row and then the user's version row, the same order the projector takes them, and retries deadlocks.
// It returns the row as stored afterwards, or an error wrapping conversation.ErrNotFound when there is
// no such conversation, or conversation.ErrUnavailable when the database cannot be reached.
func (s *Store) Update(ctx context.Context, key conversation.ConvKey, change func(row conversation.Row, nowMS int64) (conversation.Row, bool)) (conversation.Row, error) {
	var out conversation.Row
	err := s.inTx(ctx, func(tx *sqlx.Tx) error {
		row, err := scanRow(tx.QueryRowxContext(ctx, selectRow+
			` WHERE uid = ? AND channel_id = ? AND channel_type = ? FOR UPDATE`, key.UID, key.ChannelID, key.ChannelType))
		if errors.Is(err, sql.ErrNoRows) {
			return conversation.ErrNotFound
		}
		if err != nil {
			return err
		}
		next, changed := change(row, s.nowMS())
		if !changed {
			out = row
			return nil
		}
		versions, err := s.bumpVersions(ctx, tx, map[string]bool{key.UID: true})
		if err != nil {
			return err
		}
		next.Version = versions[key.UID]
		if _, err := tx.ExecContext(ctx, upsertRows(1), appendRowArgs(nil, &next)...); err != nil {
			return fmt.Errorf("update conversation: %w", err)
		}
		out = next
		return nil
	})
	return out, err
}

// PurgeTombstones deletes at most limit tombstones deleted before beforeMS and returns how many went.
// A purged conversation no longer tells other devices it was deleted; a later message creates it anew.
func (s *Store) PurgeTombstones(ctx context.Context, beforeMS int64, limit int) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM conversations WHERE is_deleted = 1 AND deleted_at_ms < ? LIMIT ?`, beforeMS, limit)
	if err != nil {
		return 0, fmt.Errorf("purge tombstones: %w", translate(err))
	}
	return res.RowsAffected()
}
