package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/convsync/conversations/internal/conversation"
	mysqlstore "github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/testenv"
	"github.com/convsync/conversations/internal/trafficgen"
)

// workload is a generated stream and the conversation-row updates it implies.
type workload struct {
	name    string
	records []trafficgen.Record
	stats   trafficgen.Stats
	// rows are the logical row updates: one per message and recipient, in stream order.
	rows []conversation.Row
}

func newWorkload(name string, cfg trafficgen.Config) (*workload, error) {
	records, stats, err := trafficgen.Generate(cfg)
	if err != nil {
		return nil, err
	}
	d, err := trafficgen.Decode(records, time.Now())
	if err != nil {
		return nil, fmt.Errorf("workload %s: %w", name, err)
	}
	w := &workload{name: name, records: records, stats: stats}
	for _, rows := range d.Rows {
		w.rows = append(w.rows, rows...)
	}
	return w, nil
}

// ingest is one projector run over a preloaded topic.
type ingest struct {
	events, seconds, peakRSS float64
}

// runProjector preloads a fresh topic with the workload, starts a projector on an empty database and
// times it until every record is applied; then stops it.
func (e *env) runProjector(ctx context.Context, w *workload, vars map[string]string) (ingest, error) {
	topic, err := e.freshTopic(ctx, 6)
	if err != nil {
		return ingest{}, err
	}
	dsn, err := e.freshDB(ctx)
	if err != nil {
		return ingest{}, err
	}
	res, _, err := e.ingestInto(ctx, w, topic, dsn, vars, false)
	return res, err
}

// ingestInto produces the workload into topic, starts a projector on dsn and times it from readiness
// until it applied every record. With keep the projector is left running and returned.
func (e *env) ingestInto(ctx context.Context, w *workload, topic, dsn string, vars map[string]string, keep bool) (ingest, *proc, error) {
	progress("%s: producing %d records", w.name, len(w.records))
	if _, err := trafficgen.Produce(ctx, trafficgen.ProducerConfig{Brokers: e.brokers, Topic: topic}, slices.Values(w.records), len(w.records)); err != nil {
		return ingest{}, nil, err
	}
	env := map[string]string{"MYSQL_DSN": dsn, "KAFKA_BROKERS": strings.Join(e.brokers, ","), "KAFKA_TOPIC": topic,
		"KAFKA_DLQ_TOPIC": topic + ".dlq", "KAFKA_CHANGES_TOPIC": topic + ".changes", "KAFKA_GROUP_ID": testenv.Name(topic + ".group.")}
	for k, v := range vars {
		env[k] = v
	}
	p, err := e.start(ctx, "projector", env)
	if err != nil {
		return ingest{}, nil, err
	}
	if !keep {
		defer p.stop()
	}
	// Timed from readiness (connected, group joining) until every record is applied: what "start the
	// projector, time until lag is 0" costs an operator, group join included.
	total := float64(len(w.records))
	first := time.Now()
	lastReport := first
	for {
		done, err := handled(p)
		if err != nil {
			p.stop()
			return ingest{}, nil, err
		}
		now := time.Now()
		if done >= total {
			secs := now.Sub(first).Seconds()
			return ingest{events: total / secs, seconds: secs, peakRSS: peakRSSMiB(p.cmd.Process.Pid)}, p, nil
		}
		if now.Sub(lastReport) > 2*time.Second {
			progress("%s: %.0f/%.0f records applied", w.name, done, total)
			lastReport = now
		}
		select {
		case <-ctx.Done():
			p.stop()
			return ingest{}, nil, ctx.Err()
		case err := <-p.done:
			return ingest{}, nil, fmt.Errorf("projector exited: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// handled is how many records the projector has applied or dead-lettered.
func handled(p *proc) (float64, error) {
	var sum float64
	for _, m := range []string{"conv_projector_messages_applied_total", "conv_projector_duplicates_skipped_total",
		"conv_projector_below_window_total", "conv_projector_skipped_total", "conv_projector_memberships_applied_total",
		"conv_projector_dead_lettered_total"} {
		v, err := p.metric(m)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

// baselineUpserts writes the workload's row updates as plain multi-row upserts from one connection (the
// projector, too, applies one batch at a time): no Kafka, no rules, no reads. It returns rows/s.
func (e *env) baselineUpserts(ctx context.Context, w *workload) (float64, error) {
	dsn, err := e.freshDB(ctx)
	if err != nil {
		return 0, err
	}
	s, err := mysqlstore.Open(dsn, mysqlstore.Options{MaxOpenConns: 1})
	if err != nil {
		return 0, err
	}
	defer s.Close()
	const perStatement = 500
	stmt := func(n int) string {
		return `INSERT INTO conversations (uid, channel_id, channel_type, unread, last_msg_seq, last_client_msg_no, last_msg_at, version)
			VALUES ` + strings.TrimSuffix(strings.Repeat("(?,?,?,?,?,?,?,?),", n), ",") + ` ON DUPLICATE KEY UPDATE unread = unread + VALUES(unread),
			last_msg_seq = GREATEST(last_msg_seq, VALUES(last_msg_seq)), last_client_msg_no = VALUES(last_client_msg_no),
			last_msg_at = VALUES(last_msg_at), version = VALUES(version)`
	}
	progress("%s: baseline, %d rows as plain upserts", w.name, len(w.rows))
	start := time.Now()
	for lo := 0; lo < len(w.rows); lo += perStatement {
		part := slices.Clone(w.rows[lo:min(lo+perStatement, len(w.rows))])
		// Sorted like the projector's writes; a key twice in one statement is fine for an upsert.
		slices.SortFunc(part, func(a, b conversation.Row) int { return a.ConvKey.Compare(b.ConvKey) })
		args := make([]any, 0, 8*len(part))
		for i, r := range part {
			args = append(args, r.UID, r.ChannelID, r.ChannelType, r.Unread, r.LastMsgSeq, r.LastClientMsgNo, r.Timestamp, int64(lo+i))
		}
		if _, err := s.DB().ExecContext(ctx, stmt(len(part)), args...); err != nil {
			return 0, fmt.Errorf("baseline upsert: %w", err)
		}
	}
	return float64(len(w.rows)) / time.Since(start).Seconds(), nil
}

// peerIngest runs the peer workload through Kafka and a projector that keeps running afterwards (for the
// freshness run), and returns the topic, the database and the projector.
func (e *env) peerIngest(ctx context.Context, w *workload) (string, string, *proc, ingest, error) {
	topic, err := e.freshTopic(ctx, 6)
	if err != nil {
		return "", "", nil, ingest{}, err
	}
	dsn, err := e.freshDB(ctx)
	if err != nil {
		return "", "", nil, ingest{}, err
	}
	res, p, err := e.ingestInto(ctx, w, topic, dsn, nil, true)
	return topic, dsn, p, res, err
}

// lanesSpeedup compares the peer workload's ingest with the projector's default lanes against one lane,
// side by side in this run: one fresh run with PROJECTOR_LANES=1 and one more with the default, each on
// a fresh topic and database; the default's rate is the mean of that run and the peer ingest before it.
func lanesSpeedup(ctx context.Context, e *env, rep *report, w *workload, peer ingest, peakRSS *float64) error {
	one, err := e.runProjector(ctx, w, map[string]string{"PROJECTOR_LANES": "1"})
	if err != nil {
		return err
	}
	def, err := e.runProjector(ctx, w, nil)
	if err != nil {
		return err
	}
	*peakRSS = max(*peakRSS, one.peakRSS, def.peakRSS)
	progress("lanes: peer ingest %.0f and %.0f events/s with the default lanes, %.0f with one", peer.events, def.events, one.events)
	rep.vs("projector.lanes.speedup", (peer.events+def.events)/2, "events/s", one.events, "≥ 1.3")
	return nil
}
