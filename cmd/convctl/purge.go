package main

import (
	"context"
	"fmt"

	"github.com/convsync/conversations/internal/mysql"
)

// purgeUser deletes one user's rows. It asks for -yes, since nothing brings the rows back but a
// rebuild.
func (e *cmdEnv) purgeUser(ctx context.Context, args []string) error {
	fs := e.flags("purge-user", "purge-user -uid U [-memberships] -yes")
	uid := fs.String("uid", "", "the user whose rows go (required)")
	memberships := fs.Bool("memberships", false, "also remove the user from every channel's stored membership")
	yes := fs.Bool("yes", false, "confirm: the rows are deleted for good")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *uid == "" || !*yes {
		return fmt.Errorf("%w: purge-user needs -uid and -yes", errUsage)
	}
	var s interface {
		PurgeUser(ctx context.Context, uid string, memberships bool) (mysql.PurgeResult, error)
		Close() error
	}
	var err error
	if e.cfg.VitessShards != "" {
		shards, _ := mysql.ParseShards(e.cfg.VitessShards) // validated
		s, err = mysql.OpenSharded(e.cfg.MySQLDSN, shards, mysql.Options{MaxOpenConns: 4, TLS: e.cfg.MySQLTLS})
	} else {
		s, err = e.store(e.cfg.MySQLDSN)
	}
	if err != nil {
		return err
	}
	defer s.Close()
	res, err := s.PurgeUser(ctx, *uid, *memberships)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.out, "purged %q: %d conversations, %d version row, %d memberships\n", *uid, res.Conversations, res.Versions, res.Memberships)
	return nil
}
