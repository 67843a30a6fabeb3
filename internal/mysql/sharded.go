package mysql

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/go-sql-driver/mysql"

	"github.com/convsync/conversations/internal/conversation"
)

// Sharded is the API's read model sharded by user (shard.go): one Store per shard, each in sessions
// that target its shard, and every read or write of a user's request on the user's shard. It
// implements what the API needs (httpapi.Store, httpapi.Rows, httpapi.Recents) and the operator's
// purge. It is safe for concurrent use.
type Sharded struct {
	shards []KeyRange
	stores []*Store
}

// OpenSharded opens one Store per shard of shards (as ParseShards returns them) on the Vitess keyspace
// that dsn names as its database: shard "-80" of keyspace "conv" is database "conv:-80". Errors are
// those of Open, or a DSN without a keyspace.
func OpenSharded(dsn string, shards []KeyRange, opts Options) (*Sharded, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse MySQL DSN: %w", err)
	}
	keyspace, _, _ := strings.Cut(cfg.DBName, ":")
	if keyspace == "" {
		return nil, errors.New("MYSQL_DSN: name the Vitess keyspace as the database (…/conv)")
	}
	s := &Sharded{shards: shards}
	for _, r := range shards {
		c := cfg.Clone()
		c.DBName = keyspace + ":" + r.Name()
		o := opts
		o.Shard = r
		st, err := Open(c.FormatDSN(), o)
		if err != nil {
			_ = s.Close()
			return nil, err
		}
		s.stores = append(s.stores, st)
	}
	return s, nil
}

// For returns the store of the shard that owns uid.
func (s *Sharded) For(uid string) *Store { return s.stores[ShardOf(s.shards, uid)] }

// Shards returns the stores, in key order.
func (s *Sharded) Shards() []*Store { return s.stores }

// Close closes every shard's pool.
func (s *Sharded) Close() error {
	var errs []error
	for _, st := range s.stores {
		errs = append(errs, st.Close())
	}
	return errors.Join(errs...)
}

// Ping reports whether every shard answers; the error wraps conversation.ErrUnavailable.
func (s *Sharded) Ping(ctx context.Context) error {
	for i, st := range s.stores {
		if err := st.Ping(ctx); err != nil {
			return fmt.Errorf("shard %s: %w", s.shards[i].Name(), err)
		}
	}
	return nil
}

// UserRows is Store.UserRows on the user's shard.
func (s *Sharded) UserRows(ctx context.Context, uid string) ([]conversation.Row, int64, error) {
	return s.For(uid).UserRows(ctx, uid)
}

// UserVersion is Store.UserVersion on the user's shard.
func (s *Sharded) UserVersion(ctx context.Context, uid string) (int64, error) {
	return s.For(uid).UserVersion(ctx, uid)
}

// Update is Store.Update on the user's shard: the channel copy it locks and derives from is that
// shard's, the one the user's rows were written against.
func (s *Sharded) Update(ctx context.Context, key conversation.ConvKey, change func(row conversation.Row, nowMS int64) (conversation.Row, bool)) (conversation.Row, error) {
	return s.For(key.UID).Update(ctx, key, change)
}

// ReadList is Store.ReadList on the user's shard (httpapi.Rows).
func (s *Sharded) ReadList(ctx context.Context, q conversation.Query) (conversation.ListRead, error) {
	return s.For(q.UID).ReadList(ctx, q)
}

// ReadRecents is Store.Recents on uid's shard (httpapi.Recents): that shard's copy of the windows is
// the one the user's rows were written against.
func (s *Sharded) ReadRecents(ctx context.Context, uid string, ranges []conversation.SeqRange) (conversation.RecentsRead, error) {
	msgs, err := s.For(uid).Recents(ctx, ranges)
	return conversation.RecentsRead{Messages: msgs}, err
}

// PurgeUser is Store.PurgeUser on a sharded read model: the user's rows and version on the user's
// shard, and with memberships the user's memberships in every shard's copy of the channels, one shard
// transaction each (a shard's projector serialises with it on the channel rows, as on one node). A
// failure part way leaves the shards done so far purged; running it again finishes the others.
func (s *Sharded) PurgeUser(ctx context.Context, uid string, memberships bool) (PurgeResult, error) {
	res, err := s.For(uid).PurgeUser(ctx, uid, memberships)
	if err != nil || !memberships {
		return res, err
	}
	owner := s.For(uid)
	for i, st := range s.stores {
		if st == owner {
			continue
		}
		if _, err := st.purgeMemberships(ctx, uid); err != nil {
			return res, fmt.Errorf("purge user on shard %s: %w", s.shards[i].Name(), err)
		}
	}
	return res, nil
}
