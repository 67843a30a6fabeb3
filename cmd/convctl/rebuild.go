package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/projector"
	"github.com/convsync/conversations/internal/topicadmin"
)

// rebuildNames are the defaults derived from the schema a rebuild writes: its consumer group and its
// dead-letter topic (the live one already holds the bad records; a rebuild must not write them twice).
func (e *cmdEnv) rebuildNames(schema, group, dlq string) (string, string) {
	if group == "" {
		group = e.cfg.KafkaGroupID + ".rebuild." + schema
	}
	if dlq == "" {
		dlq = e.cfg.KafkaDLQTopic + ".rebuild." + schema
	}
	return group, dlq
}

// rebuild projects the events topic from its first offset into a fresh schema, in its own consumer
// group, and returns once that group has caught up with the topic's end. The live read model, the live
// projector and the API are untouched meanwhile. Run it again with -resume to catch up further.
func (e *cmdEnv) rebuild(ctx context.Context, args []string) error {
	if err := e.notOnVitess("rebuild"); err != nil {
		return err
	}
	fs := e.flags("rebuild", "rebuild -schema S [-resume] [-group G] [-dlq TOPIC] [-allow-truncated]")
	schema := fs.String("schema", "", "the fresh schema to project into (required; created unless -resume)")
	resume := fs.Bool("resume", false, "the schema exists from an earlier rebuild: catch up from where its group stopped")
	group := fs.String("group", "", "consumer group of the rebuild (default KAFKA_GROUP_ID.rebuild.<schema>)")
	dlq := fs.String("dlq", "", "dead-letter topic of the rebuild (default KAFKA_DLQ_TOPIC.rebuild.<schema>, created)")
	truncated := fs.Bool("allow-truncated", false, "rebuild even though retention has deleted the topic's oldest records")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *schema == "" {
		return fmt.Errorf("%w: rebuild needs -schema", errUsage)
	}
	if *schema == e.liveSchema() {
		return fmt.Errorf("%w: -schema %s is the live schema (MYSQL_DSN)", errUsage, *schema)
	}
	g, d := e.rebuildNames(*schema, *group, *dlq)
	c, err := e.cluster()
	if err != nil {
		return err
	}
	defer c.Close()
	if !*resume {
		if err := e.checkHistory(ctx, c, *truncated); err != nil {
			return err
		}
		admin, err := e.store(e.cfg.MySQLDSN)
		if err != nil {
			return err
		}
		err = admin.CreateSchema(ctx, *schema)
		admin.Close()
		if err != nil {
			return err
		}
	}
	return e.catchUp(ctx, c, *schema, g, d)
}

// checkHistory refuses a rebuild from a topic whose retention already deleted records: the rebuilt
// model would lack every conversation that only those records built.
func (e *cmdEnv) checkHistory(ctx context.Context, c *cluster, allow bool) error {
	parts, err := c.partitions(ctx, e.cfg.KafkaTopic)
	if err != nil {
		return err
	}
	first, _, err := c.offsets(ctx, e.cfg.KafkaTopic, parts)
	if err != nil {
		return err
	}
	for _, p := range parts {
		if first[p] > 0 && !allow {
			return fmt.Errorf("%s/%d starts at offset %d: retention deleted its oldest records, so a rebuild would "+
				"miss what they built (-allow-truncated to rebuild anyway)", e.cfg.KafkaTopic, p, first[p])
		}
	}
	return nil
}

// catchUp migrates schema, then runs a projector of group into it until the group's lag is 0.
func (e *cmdEnv) catchUp(ctx context.Context, c *cluster, schema, group, dlq string) error {
	if err := topicadmin.Ensure(ctx, c.conn, c.brokers, topicadmin.Topic{Name: dlq, Partitions: 1}); err != nil {
		return fmt.Errorf("rebuild dead-letter topic: %w", err)
	}
	store, err := mysql.Open(e.dsnFor(schema), mysql.Options{MaxOpenConns: 4, TLS: e.cfg.MySQLTLS,
		RecentsWindow: e.cfg.RecentsWindow, LargeChannelMembers: e.cfg.LargeChannelMembers})
	if err != nil {
		return err
	}
	defer store.Close()
	if err := store.Migrate(ctx, e.log); err != nil {
		return err
	}
	metrics, err := projector.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		return err
	}
	p, err := projector.New(projector.Config{Brokers: c.brokers, Kafka: c.conn, Topic: e.cfg.KafkaTopic, DLQTopic: dlq,
		GroupID: group, MaxEventBytes: e.cfg.MaxEventBytes, Skip: e.cfg.Skip()}, store, metrics, e.log)
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	start := time.Now()
	for {
		select {
		case err := <-done:
			if err == nil {
				err = errors.New("projector stopped before catching up")
			}
			return fmt.Errorf("rebuild into %s: %w", schema, err)
		case <-time.After(time.Second):
		}
		_, committed, end, lag, err := c.groupLag(ctx, group, e.cfg.KafkaTopic)
		if err != nil {
			e.log.Warn("lag check failed", "error", err.Error())
			continue
		}
		var total int64
		allCommitted := true
		for p, l := range lag {
			total += l
			if committed[p] < 0 && end[p] > 0 {
				allCommitted = false
			}
		}
		fmt.Fprintf(e.out, "rebuild %s: lag %d (%s)\n", schema, total, time.Since(start).Round(time.Second))
		if total == 0 && allCommitted {
			stop()
			if err := <-done; err != nil {
				return fmt.Errorf("rebuild into %s: %w", schema, err)
			}
			fmt.Fprintf(e.out, "rebuild %s: caught up (group %s, dead letters in %s)\n", schema, group, dlq)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// switchSchema makes the rebuilt schema the live read model: it catches the rebuild up one last time
// (the live projector must be stopped, so nothing moves the live tables meanwhile), raises every
// rebuilt version above every version the live model gave, swaps the tables in one RENAME TABLE, and
// moves the live group's offsets to where the rebuild stopped. The API keeps serving throughout:
// its reads see the old tables until the rename, the rebuilt ones after.
func (e *cmdEnv) switchSchema(ctx context.Context, args []string) error {
	if err := e.notOnVitess("switch"); err != nil {
		return err
	}
	fs := e.flags("switch", "switch -schema S [-old NAME] [-group G] [-dlq TOPIC] [-offsets-only]")
	schema := fs.String("schema", "", "the rebuilt schema (required)")
	old := fs.String("old", "", "schema that keeps the live tables (default <live>_old_<UTC time>)")
	group := fs.String("group", "", "the rebuild's consumer group (default KAFKA_GROUP_ID.rebuild.<schema>)")
	dlq := fs.String("dlq", "", "the rebuild's dead-letter topic (default KAFKA_DLQ_TOPIC.rebuild.<schema>)")
	offsetsOnly := fs.Bool("offsets-only", false, "the tables were switched already: only move the live group's offsets")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *schema == "" {
		return fmt.Errorf("%w: switch needs -schema", errUsage)
	}
	live := e.liveSchema()
	if *old == "" {
		*old = live + "_old_" + time.Now().UTC().Format("20060102150405")
	}
	g, d := e.rebuildNames(*schema, *group, *dlq)
	c, err := e.cluster()
	if err != nil {
		return err
	}
	defer c.Close()
	n, err := c.members(ctx, e.cfg.KafkaGroupID)
	if err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("group %s has %d members: stop the live projector first (kubectl scale deployment/conversations-projector --replicas=0)",
			e.cfg.KafkaGroupID, n)
	}
	if !*offsetsOnly {
		admin, err := e.store(e.cfg.MySQLDSN)
		if err != nil {
			return err
		}
		defer admin.Close()
		// Only a schema a rebuild filled may replace the live tables: one switched in already is empty,
		// and catching it up would migrate it into an empty read model.
		tables, err := admin.Tables(ctx, *schema)
		if err != nil {
			return err
		}
		if len(tables) == 0 {
			return fmt.Errorf("schema %s holds no tables: run convctl rebuild -schema %s first", *schema, *schema)
		}
		if err := e.catchUp(ctx, c, *schema, g, d); err != nil {
			return err
		}
		vLive, err := admin.MaxVersion(ctx, live)
		if err != nil {
			return err
		}
		vNew, err := admin.MaxVersion(ctx, *schema)
		if err != nil {
			return err
		}
		floor := max(vLive, vNew, time.Now().UnixMilli()) + 1
		if err := admin.RaiseVersions(ctx, *schema, floor); err != nil {
			return err
		}
		if err := admin.CreateSchema(ctx, *old); err != nil {
			return err
		}
		if err := admin.SwitchSchemas(ctx, live, *schema, *old); err != nil {
			return err
		}
		fmt.Fprintf(e.out, "switched: %s now holds the rebuilt tables (versions from %d), the previous ones are in %s\n", live, floor, *old)
	}
	parts, committed, _, _, err := c.groupLag(ctx, g, e.cfg.KafkaTopic)
	if err != nil {
		return fmt.Errorf("%w (finish with: convctl switch -schema %s -offsets-only)", err, *schema)
	}
	moved := map[int]int64{}
	for _, p := range parts {
		if committed[p] >= 0 {
			moved[p] = committed[p]
		}
	}
	if err := c.commit(ctx, e.cfg.KafkaGroupID, e.cfg.KafkaTopic, moved); err != nil {
		return fmt.Errorf("%w (finish with: convctl switch -schema %s -offsets-only)", err, *schema)
	}
	fmt.Fprintf(e.out, "moved group %s to the rebuild's offsets %v: start the projector again\n", e.cfg.KafkaGroupID, moved)
	return nil
}

// notOnVitess refuses rebuild and switch on a read model sharded by user (VITESS_SHARDS): vtgate
// creates no schema and refuses RENAME TABLE across keyspaces (VT03002). docs/operations.md ("On
// Vitess") gives the way to rebuild there.
func (e *cmdEnv) notOnVitess(cmd string) error {
	if e.cfg.VitessShards != "" {
		return fmt.Errorf("%w: %s does not work on Vitess (VITESS_SHARDS is set): see docs/operations.md, \"On Vitess\"", errUsage, cmd)
	}
	return nil
}
