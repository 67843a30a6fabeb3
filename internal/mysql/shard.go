package mysql

import (
	"bytes"
	"context"
	"crypto/md5"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/convsync/conversations/internal/conversation"
)

// A read model sharded by user (Vitess, deploy/vitess/) keeps each user's rows on the shard that the
// VSchema's binary_md5 vindex of the uid names, and on every shard a whole copy of the channel-keyed
// tables (channels, messages, late_messages, channel_members). Each shard has its own projector
// (its own consumer group over the whole topic): it applies every event to its shard's channel tables,
// exactly as a single-node store does, and writes only the conversation rows and versions of the users
// the shard owns. Every transaction then touches one shard, so the single-node argument for
// exactly-once holds shard by shard (docs/proofs.md, "Sharded by user").

// KeyRange is a Vitess shard's range of keyspace ids, [Start, End), named the way Vitess names shards:
// "-80", "80-", "40-80"; "-" or "" is every keyspace id. The zero value is every keyspace id.
type KeyRange struct {
	Start, End []byte
	name       string
}

// ParseKeyRange parses a shard name. It returns an error for anything but hex bounds around one '-'
// with Start below End.
func ParseKeyRange(name string) (KeyRange, error) {
	if name == "" || name == "-" {
		return KeyRange{name: "-"}, nil
	}
	lo, hi, ok := strings.Cut(name, "-")
	if !ok || strings.Contains(hi, "-") {
		return KeyRange{}, fmt.Errorf("shard %q: want hex bounds around one '-', like -80, 80- or 40-80", name)
	}
	var r KeyRange
	var err error
	if r.Start, err = hex.DecodeString(lo); err != nil {
		return KeyRange{}, fmt.Errorf("shard %q: start: %w", name, err)
	}
	if r.End, err = hex.DecodeString(hi); err != nil {
		return KeyRange{}, fmt.Errorf("shard %q: end: %w", name, err)
	}
	if len(r.End) > 0 && bytes.Compare(r.Start, r.End) >= 0 {
		return KeyRange{}, fmt.Errorf("shard %q: start is not below end", name)
	}
	r.name = name
	return r, nil
}

// ParseShards parses a comma-separated list of shard names that together cover every keyspace id once
// ("-80,80-"), and returns them in key order.
func ParseShards(list string) ([]KeyRange, error) {
	var out []KeyRange
	for _, n := range strings.Split(list, ",") {
		r, err := ParseKeyRange(strings.TrimSpace(n))
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b KeyRange) int { return bytes.Compare(a.Start, b.Start) })
	var at []byte
	for i, r := range out {
		if !bytes.Equal(r.Start, at) || (len(r.End) == 0 && i != len(out)-1) {
			return nil, fmt.Errorf("shards %q: they must cover every keyspace id exactly once (gap or overlap at %q)", list, r.Name())
		}
		at = r.End
	}
	if len(out) == 0 || len(out[len(out)-1].End) != 0 {
		return nil, errors.New("shards " + list + ": the last one must be open-ended (like 80-)")
	}
	return out, nil
}

// Name is the shard's name, as Vitess spells it.
func (r KeyRange) Name() string {
	if r.name != "" {
		return r.name
	}
	if len(r.Start) == 0 && len(r.End) == 0 {
		return "-"
	}
	return hex.EncodeToString(r.Start) + "-" + hex.EncodeToString(r.End)
}

// All reports whether the range holds every keyspace id (an unsharded store).
func (r KeyRange) All() bool { return len(r.Start) == 0 && len(r.End) == 0 }

// Contains reports whether id is in the range.
func (r KeyRange) Contains(id []byte) bool {
	return bytes.Compare(id, r.Start) >= 0 && (len(r.End) == 0 || bytes.Compare(id, r.End) < 0)
}

// OwnsUID reports whether the user's rows live on the shard.
func (r KeyRange) OwnsUID(uid string) bool { return r.All() || r.Contains(UIDKeyspaceID(uid)) }

// UIDKeyspaceID is the keyspace id Vitess's binary_md5 vindex (deploy/vitess/vschema/conv.json) gives a
// uid: the MD5 of its bytes.
func UIDKeyspaceID(uid string) []byte {
	sum := md5.Sum([]byte(uid))
	return sum[:]
}

// ShardOf returns the shard of shards that owns uid (shards as ParseShards returns them).
func ShardOf(shards []KeyRange, uid string) int {
	id := UIDKeyspaceID(uid)
	for i, r := range shards {
		if r.Contains(id) {
			return i
		}
	}
	return len(shards) - 1 // unreachable for shards that cover every id
}

// beginChannelSnapshot begins a transaction whose reads of channel k's late messages, state and
// followers agree with each other. On one node it is a read-only REPEATABLE READ transaction: one
// snapshot. Through vtgate (s.vitess) no isolation level can be set per transaction, and the tablets
// run READ COMMITTED: the transaction then takes the channel row's lock first, which every writer of
// the channel's late messages and followers' bases (a batch, an API mutation, the purges) takes before
// writing them, so none of those writes can fall between its reads. The caller rolls it back.
func (s *Store) beginChannelSnapshot(ctx context.Context, k conversation.ChannelKey) (*sqlx.Tx, error) {
	if !s.vitess {
		return s.db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	}
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return nil, err
	}
	var one int
	if err := tx.QueryRowContext(ctx, `SELECT 1 FROM channels WHERE channel_key = ? AND channel_type = ? FOR UPDATE`,
		k.Key, k.Type).Scan(&one); err != nil && !errors.Is(err, sql.ErrNoRows) {
		_ = tx.Rollback()
		return nil, err
	}
	return tx, nil
}
