package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/convsync/conversations/internal/httpapi"
	"github.com/convsync/conversations/internal/mysql"
)

// serveSharded serves the API from a read model sharded by user on Vitess (VITESS_SHARDS): every
// request is answered from the sessions of the user's shard (mysql.Sharded). The caches and the change
// feed are off: a cached channel state or window would have to be one shard's copy, and each shard's
// projector announces its own; each sync reads the user's shard (docs/proofs.md, "Sharded by user").
func serveSharded(ctx context.Context, cfg config, log *slog.Logger, reg *prometheus.Registry) error {
	shards, err := mysql.ParseShards(cfg.VitessShards) // validated
	if err != nil {
		return fmt.Errorf("config: VITESS_SHARDS: %w", err)
	}
	store, err := mysql.OpenSharded(cfg.MySQLDSN, shards, mysql.Options{MaxOpenConns: cfg.MySQLMaxOpenConns, TLS: cfg.MySQLTLS})
	if err != nil {
		return err
	}
	defer store.Close()
	pingOrWarn(ctx, store, log)
	handler, err := httpapi.New(store, store, store, apiOptions(cfg, reg, log))
	if err != nil {
		return err
	}
	log.Info("serving a read model sharded by user", "shards", cfg.VitessShards)
	return serve(ctx, cfg, handler, log)
}
