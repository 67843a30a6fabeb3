package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/convsync/conversations/internal/conversation"
)

// Which late messages of large channels no follower can need any more is conversation.UnneededLate's
// rule (with the argument why such a message can be deleted at any later time); the store reads what
// it needs in one snapshot.

// latePerChannel bounds the late messages of one channel examined in one call.
const latePerChannel = 10000

// UnneededLate returns late messages that no follower of their channel can need any more, from the
// channels after the given one in key order, examining whole channels (the oldest latePerChannel late
// messages of each) until limit late messages were examined; next is the last channel examined, or the
// zero key when the last channel was reached.
// The messages come back by channel and arrival. Reads only, each channel in one consistent snapshot.
func (s *Store) UnneededLate(ctx context.Context, after conversation.ChannelKey, limit int) (found []conversation.LateMsg, next conversation.ChannelKey, err error) {
	var keys []conversation.ChannelKey
	err = func() error {
		rows, err := s.db.QueryContext(ctx, `SELECT DISTINCT channel_key, channel_type FROM late_messages
			WHERE channel_key > ? OR (channel_key = ? AND channel_type > ?) ORDER BY channel_key, channel_type LIMIT ?`,
			after.Key, after.Key, after.Type, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var k conversation.ChannelKey
			if err := rows.Scan(&k.Key, &k.Type); err != nil {
				return err
			}
			keys = append(keys, k)
		}
		return rows.Err()
	}()
	if err != nil {
		return nil, after, fmt.Errorf("select channels with late messages: %w", translate(err))
	}
	examined := 0
	for _, k := range keys {
		if examined >= limit {
			return found, next, nil
		}
		unneeded, n, err := s.unneededLateOf(ctx, k, latePerChannel)
		if err != nil {
			return nil, after, err
		}
		found, examined, next = append(found, unneeded...), examined+n, k
	}
	if len(keys) < limit {
		next = conversation.ChannelKey{}
	}
	return found, next, nil
}

// unneededLateOf returns the unneeded ones among the at most limit oldest late messages of channel k,
// and how many it examined.
func (s *Store) unneededLateOf(ctx context.Context, k conversation.ChannelKey, limit int) ([]conversation.LateMsg, int, error) {
	// REPEATABLE READ gives the three reads one snapshot: the followers seen are those the late
	// messages and the channel's newest seq were read with.
	tx, err := s.beginChannelSnapshot(ctx, k)
	if err != nil {
		return nil, 0, fmt.Errorf("late purge: %w", translate(err))
	}
	defer tx.Rollback() //nolint:errcheck // read only: nothing to keep
	var late []conversation.LateMsg
	err = func() error {
		rows, err := tx.QueryContext(ctx, `SELECT arrival, message_seq, red_dot FROM late_messages
			WHERE channel_key = ? AND channel_type = ? ORDER BY arrival LIMIT ?`, k.Key, k.Type, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			m := conversation.LateMsg{Channel: k}
			if err := rows.Scan(&m.Arrival, &m.Seq, &m.RedDot); err != nil {
				return err
			}
			late = append(late, m)
		}
		return rows.Err()
	}()
	if err != nil || len(late) == 0 {
		return nil, 0, wrapLate(err)
	}
	// The highest seq beyond what was read (when the channel has more): a late message read is the
	// highest since some base only when it is above that.
	var beyond int64
	if len(late) == limit {
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(message_seq), 0) FROM late_messages
			WHERE channel_key = ? AND channel_type = ? AND arrival > ?`, k.Key, k.Type, late[len(late)-1].Arrival).Scan(&beyond); err != nil {
			return nil, 0, wrapLate(err)
		}
	}
	var newest int64
	if err := tx.QueryRowContext(ctx, `SELECT bc_max_seq FROM channels WHERE channel_key = ? AND channel_type = ?`,
		k.Key, k.Type).Scan(&newest); err != nil && err != sql.ErrNoRows {
		return nil, 0, wrapLate(err)
	}
	var followers []conversation.Row
	err = func() error {
		// Every follower is a stored member (a removed member's row becomes plain), so the members'
		// primary-key lookups find them all: an index of conversations by channel would make every new
		// conversation row of every channel pay, for a purge that runs once a minute (docs/proofs.md).
		rows, err := tx.QueryContext(ctx, `SELECT c.base_arrivals, c.base_max_seq, c.base_floor, c.hidden, c.is_deleted,
			c.readed_to_msg_seq, c.deleted_at_seq, c.last_msg_seq
			FROM channel_members m JOIN conversations c
			ON c.uid = m.uid AND c.channel_id = m.channel_id AND c.channel_type = m.channel_type
			WHERE m.channel_id = ? AND m.channel_type = ? AND c.follows = 1 AND c.base_arrivals < ?`, k.Key, k.Type, late[len(late)-1].Arrival)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			f := conversation.Row{Follows: true}
			if err := rows.Scan(&f.Base.Arrivals, &f.Base.MaxSeq, &f.Base.Floor, &f.Hidden, &f.Deleted, &f.ReadedToMsgSeq,
				&f.DeletedAtSeq, &f.LastMsgSeq); err != nil {
				return err
			}
			followers = append(followers, f)
		}
		return rows.Err()
	}()
	if err != nil {
		return nil, 0, wrapLate(err)
	}
	return conversation.UnneededLate(late, followers, newest, beyond), len(late), nil
}

func wrapLate(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("late purge: %w", translate(err))
}

// DeleteLate deletes the given late messages, each channel's in a transaction that first locks the
// channel row (the order every writer takes: channel, conversation, user version), so it never
// interleaves with a batch or an API mutation of that channel. It returns how many went. Only messages
// UnneededLate returned may be given (after the grace period internal/purge keeps).
func (s *Store) DeleteLate(ctx context.Context, msgs []conversation.LateMsg) (int64, error) {
	by := map[conversation.ChannelKey][]any{}
	var keys []conversation.ChannelKey
	for _, m := range msgs {
		if _, ok := by[m.Channel]; !ok {
			keys = append(keys, m.Channel)
		}
		by[m.Channel] = append(by[m.Channel], m.Arrival)
	}
	var total int64
	for _, k := range keys {
		arrivals := by[k]
		err := chunks(len(arrivals), rowsPerStatement, func(lo, hi int) error {
			var n int64
			err := s.inTx(ctx, func(tx *sqlx.Tx) error {
				var one int
				if err := tx.QueryRowContext(ctx, `SELECT 1 FROM channels WHERE channel_key = ? AND channel_type = ? FOR UPDATE`,
					k.Key, k.Type).Scan(&one); err != nil && err != sql.ErrNoRows {
					return err
				}
				res, err := tx.ExecContext(ctx, `DELETE FROM late_messages WHERE channel_key = ? AND channel_type = ? AND arrival IN (?`+
					strings.Repeat(", ?", hi-lo-1)+`)`, append([]any{k.Key, k.Type}, arrivals[lo:hi]...)...)
				if err != nil {
					return err
				}
				n, err = res.RowsAffected()
				return err
			})
			total += n
			return err
		})
		if err != nil {
			return total, fmt.Errorf("delete late messages: %w", err)
		}
	}
	return total, nil
}

// PurgeFollowerTombstones purges at most limit tombstones of followers of large channels deleted before
// beforeMS, and returns how many went. A plain tombstone is purged by deleting the row: the member is
// forgotten, and a later message creates the conversation afresh. The follower's equivalent is the row
// of a member who has just joined: hidden, at the channel's state now, read and delete points gone, so
// the first message that arrives creates the conversation and unread counts only what arrived since,
// exactly what fan-out gives after the plain purge (contract §5). A stored tombstone that has revived
// since its base (a message above its delete point arrived) is no tombstone: it is rewritten as
// derived, at the channel's state now, the same answer, so it is not looked at again. Each channel's
// rows are rewritten in a transaction that locks the channel, then the rows, then the users' versions
// (the projector's order), and take the users' next versions: the rows cache must not keep a row at a
// base whose late messages the purge may then delete. Deadlocks retry; other errors are returned.
func (s *Store) PurgeFollowerTombstones(ctx context.Context, beforeMS int64, limit int) (int64, error) {
	byChannel := map[conversation.ChannelKey][]conversation.ConvKey{}
	err := func() error {
		rows, err := s.db.QueryContext(ctx, `SELECT uid, channel_id, channel_type FROM conversations
			WHERE is_deleted = 1 AND follows = 1 AND deleted_at_ms < ? ORDER BY deleted_at_ms LIMIT ?`, beforeMS, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var k conversation.ConvKey
			if err := rows.Scan(&k.UID, &k.ChannelID, &k.ChannelType); err != nil {
				return err
			}
			ck := conversation.ChannelKey{Key: k.ChannelID, Type: k.ChannelType}
			byChannel[ck] = append(byChannel[ck], k)
		}
		return rows.Err()
	}()
	if err != nil {
		return 0, fmt.Errorf("purge follower tombstones: %w", translate(err))
	}
	channels := make([]conversation.ChannelKey, 0, len(byChannel))
	for ck := range byChannel {
		channels = append(channels, ck)
	}
	slices.SortFunc(channels, conversation.ChannelKey.Compare)
	var total int64
	for _, ck := range channels {
		keys := byChannel[ck]
		sort.Slice(keys, func(i, j int) bool { return keys[i].UID < keys[j].UID })
		n, err := s.purgeFollowerTombstonesOf(ctx, ck, keys, beforeMS)
		if err != nil {
			return total, fmt.Errorf("purge follower tombstones: %w", err)
		}
		total += n
	}
	return total, nil
}

// purgeFollowerTombstonesOf rewrites the follower tombstones of channel ck among keys (sorted):
// conversation.RunFollowerTombstonePurge in a transaction.
func (s *Store) purgeFollowerTombstonesOf(ctx context.Context, ck conversation.ChannelKey, keys []conversation.ConvKey, beforeMS int64) (int64, error) {
	var purged int64
	var versions map[string]int64
	err := s.inBatch(ctx, func(b *batch) error {
		var err error
		purged, versions, err = conversation.RunFollowerTombstonePurge(ctx, b, ck, keys, beforeMS)
		return err
	}, nil)
	if err == nil && len(versions) > 0 {
		s.committed(ctx, conversation.Changes{Versions: versions})
	}
	return purged, err
}
