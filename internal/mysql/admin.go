package mysql

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/jmoiron/sqlx"
)

// Operator actions (cmd/convctl). They run outside the projector's batches and take no part in its
// locking order, so each is a short transaction or a single statement.

// PurgeResult counts what PurgeUser deleted.
type PurgeResult struct {
	Conversations, Versions, Memberships int64
}

// PurgeUser deletes one user's conversations (tombstones included) and version row, and with
// memberships also the user's stored channel memberships (then group messages without inline
// subscribers stop reaching the user). Messages the user sent stay: they belong to their channels'
// windows. A later event for the user creates the rows afresh. One transaction; errors wrap
// conversation.ErrUnavailable when the database cannot be reached.
func (s *Store) PurgeUser(ctx context.Context, uid string, memberships bool) (PurgeResult, error) {
	var res PurgeResult
	if uid == "" {
		return res, errors.New("purge: empty uid")
	}
	err := s.inTx(ctx, func(tx *sqlx.Tx) error {
		res = PurgeResult{}
		r, err := tx.ExecContext(ctx, `DELETE FROM conversations WHERE uid = ?`, uid)
		if err != nil {
			return err
		}
		res.Conversations, _ = r.RowsAffected()
		if r, err = tx.ExecContext(ctx, `DELETE FROM user_versions WHERE uid = ?`, uid); err != nil {
			return err
		}
		res.Versions, _ = r.RowsAffected()
		if memberships {
			res.Memberships, err = deleteMemberships(ctx, tx, uid)
		}
		return err
	})
	if err != nil {
		return PurgeResult{}, fmt.Errorf("purge user: %w", err)
	}
	return res, nil
}

// purgeMemberships deletes the user's stored channel memberships, in one transaction: PurgeUser's
// part on the shards of a sharded read model that do not own the user (Sharded.PurgeUser).
func (s *Store) purgeMemberships(ctx context.Context, uid string) (int64, error) {
	var n int64
	err := s.inTx(ctx, func(tx *sqlx.Tx) error {
		var err error
		n, err = deleteMemberships(ctx, tx, uid)
		return err
	})
	return n, err
}

// deleteMemberships deletes the user's stored memberships and returns how many went.
func deleteMemberships(ctx context.Context, tx *sqlx.Tx, uid string) (int64, error) {
	// channels.members counts the stored membership (large channels, contract §5): keep it exact.
	if _, err := tx.ExecContext(ctx, `UPDATE channels c JOIN channel_members m
		ON m.channel_id = c.channel_key AND m.channel_type = c.channel_type
		SET c.members = c.members - 1 WHERE m.uid = ?`, uid); err != nil {
		return 0, err
	}
	r, err := tx.ExecContext(ctx, `DELETE FROM channel_members WHERE uid = ?`, uid)
	if err != nil {
		return 0, err
	}
	return r.RowsAffected()
}

// schemaName is what CreateSchema and SwitchSchemas accept: identifiers that need no quoting rules
// beyond backticks.
var schemaName = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)

func checkSchema(names ...string) error {
	for _, n := range names {
		if !schemaName.MatchString(n) {
			return fmt.Errorf("schema name %q: want 1..64 of A-Z a-z 0-9 _", n)
		}
	}
	return nil
}

// CreateSchema creates an empty database named schema on the store's server. It fails when it exists
// already: a rebuild must start from nothing.
func (s *Store) CreateSchema(ctx context.Context, schema string) error {
	if err := checkSchema(schema); err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, "CREATE DATABASE `"+schema+"`"); err != nil {
		return fmt.Errorf("create schema %s: %w", schema, translate(err))
	}
	return nil
}

// Tables lists the base tables of schema, sorted.
func (s *Store) Tables(ctx context.Context, schema string) ([]string, error) {
	var tables []string
	err := s.db.SelectContext(ctx, &tables, `SELECT table_name FROM information_schema.tables
		WHERE table_schema = ? AND table_type = 'BASE TABLE' ORDER BY table_name`, schema)
	if err != nil {
		return nil, fmt.Errorf("list tables of %s: %w", schema, translate(err))
	}
	return tables, nil
}

// MaxVersion is the highest version the read model in schema has given (0 when empty).
func (s *Store) MaxVersion(ctx context.Context, schema string) (int64, error) {
	if err := checkSchema(schema); err != nil {
		return 0, err
	}
	var v int64
	err := s.db.GetContext(ctx, &v, "SELECT GREATEST(COALESCE((SELECT MAX(version) FROM `"+schema+"`.user_versions), 0),"+
		" COALESCE((SELECT MAX(version) FROM `"+schema+"`.conversations), 0),"+
		" COALESCE((SELECT MAX(version) FROM `"+schema+"`.channels), 0))")
	if err != nil {
		return 0, fmt.Errorf("max version of %s: %w", schema, translate(err))
	}
	return v, nil
}

// RaiseVersions sets every version in schema's read model to floor: rows, users and large channels.
// After a switch to a rebuilt read model, every client's next incremental sync (version below floor)
// then returns every conversation, so none keeps a list the rebuild corrected; later changes get
// higher versions, since a user's next version is above its last.
func (s *Store) RaiseVersions(ctx context.Context, schema string, floor int64) error {
	if err := checkSchema(schema); err != nil {
		return err
	}
	for _, q := range []string{
		"UPDATE `" + schema + "`.user_versions SET version = ?",
		"UPDATE `" + schema + "`.conversations SET version = ?",
		"UPDATE `" + schema + "`.channels SET version = ? WHERE version > 0",
	} {
		if _, err := s.db.ExecContext(ctx, q, floor); err != nil {
			return fmt.Errorf("raise versions in %s: %w", schema, translate(err))
		}
	}
	return nil
}

// SwitchSchemas swaps the read model in rebuilt into live, keeping live's tables in old: one RENAME
// TABLE statement, which MySQL and MariaDB run atomically, so a reader of live sees either every old
// table or every rebuilt one, never a mix, and waits (on the metadata lock) rather than fails while
// it runs. old must exist and be empty; live and rebuilt must hold the same tables.
func (s *Store) SwitchSchemas(ctx context.Context, live, rebuilt, old string) error {
	if err := checkSchema(live, rebuilt, old); err != nil {
		return err
	}
	lt, err := s.Tables(ctx, live)
	if err != nil {
		return err
	}
	rt, err := s.Tables(ctx, rebuilt)
	if err != nil {
		return err
	}
	ot, err := s.Tables(ctx, old)
	if err != nil {
		return err
	}
	if len(lt) == 0 || !slices.Equal(lt, rt) {
		return fmt.Errorf("switch: %s holds tables %v, %s holds %v: migrate both to the same version first", live, lt, rebuilt, rt)
	}
	if len(ot) > 0 {
		return fmt.Errorf("switch: %s must be empty, holds %v", old, ot)
	}
	moves := make([]string, 0, 2*len(lt))
	for _, t := range lt {
		moves = append(moves, fmt.Sprintf("`%s`.`%s` TO `%s`.`%s`", live, t, old, t))
	}
	for _, t := range lt {
		moves = append(moves, fmt.Sprintf("`%s`.`%s` TO `%s`.`%s`", rebuilt, t, live, t))
	}
	if _, err := s.db.ExecContext(ctx, "RENAME TABLE "+strings.Join(moves, ", ")); err != nil {
		return fmt.Errorf("switch %s to the tables of %s: %w", live, rebuilt, translate(err))
	}
	return nil
}
