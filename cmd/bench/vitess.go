package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/testenv"
	"github.com/convsync/conversations/internal/trafficgen"
)

// vitessSection measures the projector on the read model sharded by user on Vitess (one projector
// group per shard, through vtgate: docs/proofs.md, "Sharded by user") against one projector on plain
// MariaDB, on the same workloads in the same run: W1's row updates and the peer stream's ingest. It runs
// when BENCH_VITESS_DSN names vtgate's keyspace (make bench-vitess starts vttestserver and sets it); all
// of vttestserver's shards share one MariaDB on this machine, so the ratio says what vtgate and the
// per-shard groups cost, not what more machines would gain.
func vitessSection(ctx context.Context, e *env, rep *report, opts options) error {
	dsn := os.Getenv("BENCH_VITESS_DSN")
	if dsn == "" {
		progress("vitess: skipped (BENCH_VITESS_DSN not set: make bench-vitess runs it)")
		return nil
	}
	shards, err := mysql.ParseShards(os.Getenv("BENCH_VITESS_SHARDS"))
	if err != nil {
		return fmt.Errorf("BENCH_VITESS_SHARDS: %w", err)
	}
	n := func(v int) int { return max(1, int(float64(v)*opts.scale)) }
	for _, wl := range []struct {
		name, figure, unit string
		cfg                trafficgen.Config
	}{
		{"w1", "vitess.w1.row_updates_per_s", "rows/s", trafficgen.W1(n(30_000), 1)},
		{"peer", "vitess.peer.ingest.events_per_s", "events/s", trafficgen.Peer()},
	} {
		w, err := newWorkload("vitess-"+wl.name, wl.cfg)
		if err != nil {
			return err
		}
		progress("vitess: %s on plain MariaDB", wl.name)
		base, err := e.runProjector(ctx, w, nil)
		if err != nil {
			return err
		}
		progress("vitess: %s through vtgate, %d shards, a projector group each", wl.name, len(shards))
		vt, err := e.runSharded(ctx, w, dsn, shards)
		if err != nil {
			return err
		}
		value, baseline := vt.events, base.events
		if wl.unit == "rows/s" {
			value, baseline = float64(len(w.rows))/vt.seconds, float64(len(w.rows))/base.seconds
		}
		rep.vs(wl.figure, value, wl.unit, baseline, "")
	}
	return nil
}

// vitessBatchRecords is BATCH_MAX_RECORDS of the projectors on Vitess (deploy/vitess/README.md): vtgate
// parses and normalises every statement, at a cost that grows with its placeholders, so a batch of
// the default 5000 records can outlast the time a batch's versions may be held (conversation.VersionsFresh)
// on a loaded machine and be retried again and again.
const vitessBatchRecords = "500"

// runSharded empties the sharded read model, produces w into a fresh topic and runs one projector per
// shard (VITESS_SHARD, a session targeting it, its own consumer group), timed from their readiness
// until every one of them applied every record.
func (e *env) runSharded(ctx context.Context, w *workload, dsn string, shards []mysql.KeyRange) (ingest, error) {
	cfg, err := gomysql.ParseDSN(dsn)
	if err != nil {
		return ingest{}, fmt.Errorf("BENCH_VITESS_DSN: %w", err)
	}
	keyspace := cfg.DBName
	topic, err := e.freshTopic(ctx, 6)
	if err != nil {
		return ingest{}, err
	}
	progress("%s: producing %d records", w.name, len(w.records))
	if _, err := trafficgen.Produce(ctx, trafficgen.ProducerConfig{Brokers: e.brokers, Topic: topic}, slices.Values(w.records), len(w.records)); err != nil {
		return ingest{}, err
	}
	var procs []*proc
	defer func() {
		for _, p := range procs {
			p.stop()
		}
	}()
	for _, r := range shards {
		c := cfg.Clone()
		c.DBName = keyspace + ":" + r.Name()
		if err := emptyShard(ctx, c.FormatDSN(), c.DBName); err != nil {
			return ingest{}, err
		}
		p, err := e.start(ctx, "projector", map[string]string{"MYSQL_DSN": c.FormatDSN(), "VITESS_SHARD": r.Name(),
			"KAFKA_BROKERS": strings.Join(e.brokers, ","), "KAFKA_TOPIC": topic, "KAFKA_DLQ_TOPIC": topic + ".dlq",
			"KAFKA_CHANGES_TOPIC": "", "KAFKA_GROUP_ID": testenv.Name(topic + ".group." + r.Name() + "."),
			"BATCH_MAX_RECORDS": vitessBatchRecords})
		if err != nil {
			return ingest{}, err
		}
		procs = append(procs, p)
	}
	total := float64(len(w.records))
	first := time.Now()
	lastReport := first
	for {
		least := total
		for _, p := range procs {
			done, err := handled(p)
			if err != nil {
				return ingest{}, err
			}
			least = min(least, done)
		}
		now := time.Now()
		if least >= total {
			secs := now.Sub(first).Seconds()
			return ingest{events: total / secs, seconds: secs, peakRSS: peakRSSMiB(procs[0].cmd.Process.Pid)}, nil
		}
		if now.Sub(lastReport) > 2*time.Second {
			progress("%s: %.0f/%.0f records applied by every shard's group", w.name, least, total)
			lastReport = now
		}
		select {
		case <-ctx.Done():
			return ingest{}, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// emptyShard deletes every row of the read model in the shard dsn targets (named name).
func emptyShard(ctx context.Context, dsn, name string) error {
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	for _, t := range []string{"conversations", "user_versions", "channels", "messages", "late_messages", "channel_members"} {
		if _, err := db.ExecContext(ctx, "DELETE FROM "+t); err != nil {
			return fmt.Errorf("empty %s of %s: %w", t, name, err)
		}
	}
	return nil
}
