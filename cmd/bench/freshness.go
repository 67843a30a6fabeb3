package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/conversation"
	mysqlstore "github.com/convsync/conversations/internal/mysql"
	convprojector "github.com/convsync/conversations/internal/projector"
	"github.com/convsync/conversations/internal/trafficgen"
)

// freshRun is one freshness measurement: the peer stream at rate events/s for warm, unmeasured, then
// for d with probes, continuing every channel's seqs from seqBase (each run's messages are new, probes
// included).
type freshRun struct {
	rate    float64
	warm, d time.Duration
	seqBase int64
}

// freshResult is what a freshness run measured: produce-to-visible latency of the probes, and where the
// time went (the stage breakdown, overall and per lane, and the mean batch).
type freshResult struct {
	p50, p99 time.Duration
	probes   int
	breakdown
}

// stage is one entry of the latency budget: a histogram of one of the processes.
type stage struct {
	name   string
	api    bool   // on the API process, else on the projector
	family string // histogram name without _sum/_count
	labels string // label set as exposed, "" for none
}

// stages are where a message's time goes from produce to visible, in order.
var stages = []stage{
	{"fetch", false, "conv_projector_stage_seconds", `stage="fetch"`},
	{"queue", false, "conv_projector_stage_seconds", `stage="queue"`},
	{"decode", false, "conv_projector_stage_seconds", `stage="decode"`},
	{"apply", false, "conv_projector_stage_seconds", `stage="apply"`},
	{"db_commit", false, "conv_projector_stage_seconds", `stage="db_commit"`},
	{"commit_wait", false, "conv_projector_stage_seconds", `stage="commit_wait"`},
	// Off the path since offsets are committed in the background: what it still costs a message shows
	// in commit_wait (the loop waiting for room in the commit queue).
	{"offset_commit", false, "conv_projector_stage_seconds", `stage="offset_commit"`},
	{"publish", false, "conv_changes_publish_seconds", ""},
	{"delivery", true, "conv_changes_delivery_seconds", ""},
	{"rows_refresh", true, "conv_api_cache_load_seconds", `cache="rows"`},
	{"recents_refresh", true, "conv_api_cache_load_seconds", `cache="recents"`},
}

// budget is a snapshot of every stage's histogram sum and count, and of the batch sizes: over the whole
// process under "name_sum", per projector lane under "lane/name_sum"; the batch steps' sums under
// "step/name_sum".
type budget map[string]float64

// series sums the samples of family (with the suffix, e.g. "_sum") whose labels include labels ("" for
// any), in total and per value of the lane label.
func series(m map[string]float64, family, labels string) (total float64, byLane map[string]float64) {
	byLane = map[string]float64{}
	for k, v := range m {
		rest, ok := strings.CutPrefix(k, family)
		if !ok || (rest != "" && rest[0] != '{') || (labels != "" && !strings.Contains(rest, labels)) {
			continue
		}
		total += v
		if _, after, ok := strings.Cut(rest, `lane="`); ok {
			lane, _, _ := strings.Cut(after, `"`)
			byLane[lane] += v
		}
	}
	return total, byLane
}

func snapshotBudget(projector, api *proc) budget {
	b := budget{}
	pm, _ := projector.metrics()
	am, _ := api.metrics()
	for _, s := range stages {
		m := pm
		if s.api {
			m = am
		}
		for _, suffix := range []string{"_sum", "_count"} {
			total, byLane := series(m, s.family+suffix, s.labels)
			b[s.name+suffix] = total
			for lane, v := range byLane {
				b[lane+"/"+s.name+suffix] = v
			}
		}
	}
	for _, st := range convprojector.BatchSteps {
		b["step/"+st+"_sum"], _ = series(pm, "conv_projector_batch_step_seconds_sum", `step="`+st+`"`)
	}
	for _, suffix := range []string{"_sum", "_count"} {
		total, byLane := series(pm, "conv_projector_batch_records"+suffix, "")
		b["batch"+suffix] = total
		for lane, v := range byLane {
			b[lane+"/batch"+suffix] = v
		}
	}
	return b
}

// breakdown is where the time went between two snapshots: the mean ms per stage, the same per projector
// lane (its own stages only), the mean batch, overall and per lane, and the mean ms per batch of each
// step of the batches' store transactions (all attempts).
type breakdown struct {
	stages    map[string]float64
	lanes     map[string]map[string]float64
	meanBatch float64
	steps     map[string]float64
}

// breakdown returns what happened between before and b, for the stages observed in between.
func (b budget) breakdown(before budget) breakdown {
	mean := func(prefix, name string) (float64, bool) {
		n := b[prefix+name+"_count"] - before[prefix+name+"_count"]
		if n <= 0 {
			return 0, false
		}
		return (b[prefix+name+"_sum"] - before[prefix+name+"_sum"]) / n, true
	}
	out := breakdown{stages: map[string]float64{}, lanes: map[string]map[string]float64{}, steps: map[string]float64{}}
	if batches := b["batch_count"] - before["batch_count"]; batches > 0 {
		for _, st := range convprojector.BatchSteps {
			if d := b["step/"+st+"_sum"] - before["step/"+st+"_sum"]; d > 0 {
				out.steps[st] = 1000 * d / batches
			}
		}
	}
	for _, s := range stages {
		if v, ok := mean("", s.name); ok {
			out.stages[s.name] = 1000 * v
		}
	}
	out.meanBatch, _ = mean("", "batch")
	for k := range b {
		lane, rest, ok := strings.Cut(k, "/")
		if !ok || rest != "batch_count" {
			continue
		}
		st := map[string]float64{}
		for _, s := range stages {
			if v, ok := mean(lane+"/", s.name); ok && !s.api {
				st[s.name] = 1000 * v
			}
		}
		if v, ok := mean(lane+"/", "batch"); ok {
			st["batch_records"] = v
		}
		if len(st) > 0 {
			out.lanes[lane] = st
		}
	}
	return out
}

// formatStages prints a breakdown in budget order: "fetch 1.2, queue 0.3, …" (ms).
func formatStages(m map[string]float64) string {
	var parts []string
	for _, s := range stages {
		if v, ok := m[s.name]; ok {
			parts = append(parts, fmt.Sprintf("%s %.1f", s.name, v))
		}
	}
	return strings.Join(parts, ", ") + " (ms, mean)"
}

// formatSteps prints the steps of a batch's transaction in batch order: "steps per batch: begin 0.1, …".
func formatSteps(m map[string]float64) string {
	var parts []string
	for _, st := range convprojector.BatchSteps {
		if v, ok := m[st]; ok {
			parts = append(parts, fmt.Sprintf("%s %.1f", st, v))
		}
	}
	return "steps per batch: " + strings.Join(parts, ", ") + " (ms, mean)"
}

// formatLanes prints the per-lane breakdown: "lane 0: batch 3.1, queue 0.3, apply 4.0, …; lane 1: …".
func formatLanes(lanes map[string]map[string]float64) string {
	var parts []string
	for _, lane := range slices.Sorted(maps.Keys(lanes)) {
		st := lanes[lane]
		line := fmt.Sprintf("lane %s: batch %.1f", lane, st["batch_records"])
		for _, s := range stages {
			if v, ok := st[s.name]; ok {
				line += fmt.Sprintf(", %s %.1f", s.name, v)
			}
		}
		parts = append(parts, line)
	}
	return strings.Join(parts, "; ")
}

// freshness runs one freshness measurement against the running projector and API.
func (e *env) freshness(ctx context.Context, topic string, projector, api *proc, run freshRun) (freshResult, error) {
	records, err := peerStream(run.rate*(run.warm+run.d).Seconds(), run.seqBase)
	if err != nil {
		return freshResult{}, err
	}
	before := snapshotBudget(projector, api)
	lat, err := measureFreshness(ctx, e.brokers, topic, newSyncClient(api.addr, 1), records, run)
	if err != nil {
		return freshResult{}, err
	}
	after := snapshotBudget(projector, api)
	return freshResult{p50: percentile(lat, 50), p99: percentile(lat, 99), probes: len(lat), breakdown: after.breakdown(before)}, nil
}

// peerStream is n new messages of the peer workload (same users, groups and pairs) with seqs above
// seqBase.
func peerStream(n float64, seqBase int64) ([]trafficgen.Record, error) {
	cfg := trafficgen.Peer()
	cfg.Messages = int(n) + 1
	cfg.SeqBase = seqBase
	records, _, err := trafficgen.Generate(cfg)
	return records, err
}

// steadyMax searches the highest rate the projector keeps up with: a rate is sustained when, after
// producing at it for d, at most a second's worth of records is not yet committed (the lag stayed
// bounded; a projector slower than the stream would be d × (1 - its share) behind). It bisects between 0
// and hi (the backlog maximum) with probes short enough for the whole bench to stay within minutes, lets
// the projector drain between probes, and returns the highest rate sustained.
func (e *env) steadyMax(ctx context.Context, topic string, projector *proc, hi float64, d time.Duration, probes int, seqBase int64) (float64, error) {
	const committed = "conv_projector_records_committed_total"
	lo, best := 0.0, 0.0
	for i := range probes {
		rate := (lo + hi) / 2
		records, err := peerStream(rate*d.Seconds(), seqBase+int64(i)*1_000_000)
		if err != nil {
			return 0, err
		}
		c0, err := projector.metric(committed)
		if err != nil {
			return 0, err
		}
		produced, took, err := produceAt(ctx, e.brokers, topic, records, rate, d)
		if err != nil {
			return 0, err
		}
		c1, err := projector.metric(committed)
		if err != nil {
			return 0, err
		}
		actual := float64(produced) / took.Seconds()
		backlog := float64(produced) - (c1 - c0)
		ok := backlog <= actual
		progress("freshness: steady probe %.0f events/s (produced %.0f/s): %.0f records behind at the end, sustained %v", rate, actual, backlog, ok)
		if ok {
			lo, best = rate, max(best, actual)
		} else {
			hi = rate
		}
		// Drain before the next probe, so it starts from no backlog.
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if c, err := projector.metric(committed); err == nil && c-c0 >= float64(produced) {
				break
			}
		}
	}
	return best, nil
}

// produceAt writes records at rate per second for at most d and returns how many it wrote and how long
// that took.
func produceAt(ctx context.Context, brokers []string, topic string, records []trafficgen.Record, rate float64, d time.Duration) (int, time.Duration, error) {
	w := &kafkago.Writer{Addr: kafkago.TCP(brokers...), Topic: topic, Balancer: &kafkago.Hash{}, RequiredAcks: kafkago.RequireAll,
		BatchTimeout: time.Millisecond, BatchSize: 5000}
	defer w.Close()
	tick := 10 * time.Millisecond
	perTick := max(1, int(rate*tick.Seconds()))
	start := time.Now()
	next := 0
	for time.Since(start) < d && next < len(records) {
		batch := make([]kafkago.Message, 0, perTick)
		for i := 0; i < perTick && next < len(records); i++ {
			batch = append(batch, kafkago.Message{Key: records[next].Key, Value: records[next].Value})
			next++
		}
		if err := w.WriteMessages(ctx, batch...); err != nil {
			return next, time.Since(start), fmt.Errorf("produce: %w", err)
		}
		if sleep := time.Until(start.Add(time.Duration(next/perTick) * tick)); sleep > 0 {
			time.Sleep(sleep)
		}
	}
	return next, time.Since(start), nil
}

// measureFreshness paces records into the topic at run.rate per second and, after run.warm (the writer's
// first produce call takes a few hundred ms, and the records it held back then go at once: a burst no
// steady sender makes), every 100 ms a probe message from "probe-peer" to "probe"; a poller syncs
// "probe" back to back and notes when each probe's seq becomes visible (to within the poller's 5 ms). It
// returns the probes' latencies, sorted.
func measureFreshness(ctx context.Context, brokers []string, topic string, c *syncClient, records []trafficgen.Record, run freshRun) ([]time.Duration, error) {
	w := &kafkago.Writer{Addr: kafkago.TCP(brokers...), Topic: topic, Balancer: &kafkago.Hash{}, RequiredAcks: kafkago.RequireAll,
		BatchTimeout: time.Millisecond, BatchSize: 1000}
	defer w.Close()
	key := conversation.PersonKey("probe-peer", "probe")
	var mu sync.Mutex
	sent := map[int64]*msgTrace{}
	var lat []time.Duration

	pollCtx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	var wg sync.WaitGroup
	wg.Go(func() {
		body, _ := json.Marshal(syncBody{UID: "probe"})
		seen := run.seqBase
		for pollCtx.Err() == nil {
			out, err := c.post(pollCtx, body)
			if err != nil {
				continue
			}
			var items []struct {
				ChannelID  string `json:"channel_id"`
				LastMsgSeq int64  `json:"last_msg_seq"`
			}
			if json.Unmarshal(out, &items) != nil {
				continue
			}
			now := time.Now()
			for _, it := range items {
				if it.ChannelID != "probe-peer" || it.LastMsgSeq <= seen {
					continue
				}
				mu.Lock()
				for s := seen + 1; s <= it.LastMsgSeq; s++ {
					if t, ok := sent[s]; ok {
						lat = append(lat, now.Sub(t.sent))
						t.visible = now
					}
				}
				mu.Unlock()
				seen = it.LastMsgSeq
			}
			time.Sleep(5 * time.Millisecond) // a client polling hard, without loading the 2 cores much itself
		}
	})

	tick := 10 * time.Millisecond
	perTick := max(1, int(run.rate*tick.Seconds()))
	start := time.Now()
	next := 0
	probeSeq := run.seqBase
	lastProbe := time.Time{}
	var slowCalls []string // produce calls of 50 ms or more, from the first probe (negative in the warm-up)
	for time.Since(start) < run.warm+run.d && next < len(records) {
		batch := make([]kafkago.Message, 0, perTick+1)
		for i := 0; i < perTick && next < len(records); i++ {
			batch = append(batch, kafkago.Message{Key: records[next].Key, Value: records[next].Value})
			next++
		}
		if time.Since(start) >= run.warm && time.Since(lastProbe) >= 100*time.Millisecond {
			probeSeq++
			v, _ := json.Marshal(map[string]any{"message_id": probeSeq, "message_seq": probeSeq, "from_uid": "probe-peer",
				"channel_id": "probe", "channel_type": 1, "timestamp": time.Now().Unix(), "header": map[string]int{"red_dot": 1},
				"client_msg_no": fmt.Sprintf("probe-%d", probeSeq), "payload": ""})
			batch = append(batch, kafkago.Message{Key: []byte(key), Value: v})
			lastProbe = time.Now()
			mu.Lock()
			sent[probeSeq] = &msgTrace{kind: "probe", seq: probeSeq, sent: lastProbe}
			mu.Unlock()
		}
		called := time.Now()
		if err := w.WriteMessages(ctx, batch...); err != nil {
			return nil, fmt.Errorf("freshness produce: %w", err)
		}
		if took := time.Since(called); took >= 50*time.Millisecond {
			slowCalls = append(slowCalls, fmt.Sprintf("%+.3fs: %s", (called.Sub(start)-run.warm).Seconds(), fmtMS(took)))
		}
		mu.Lock()
		if t := sent[probeSeq]; t != nil && t.produce == 0 {
			t.produce = time.Since(t.sent)
		}
		mu.Unlock()
		if sleep := time.Until(start.Add(time.Duration(next/perTick) * tick)); sleep > 0 {
			time.Sleep(sleep)
		}
	}
	probes := int(probeSeq - run.seqBase)
	// Give the last probes time to show.
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		n := len(lat)
		mu.Unlock()
		if n >= probes {
			break
		}
	}
	stopPoll()
	wg.Wait()
	var slowest []msgTrace
	for _, t := range sent {
		slowest = append(slowest, *t)
	}
	slices.SortFunc(slowest, func(a, b msgTrace) int { return int(b.latency() - a.latency()) })
	var tail []string
	for _, t := range slowest[:min(3, len(slowest))] {
		tail = append(tail, fmt.Sprintf("sent %+.3fs: %s (produce %s)", t.sent.Sub(start.Add(run.warm)).Seconds(), fmtMS(t.latency()), fmtMS(t.produce)))
	}
	calls := "none"
	if len(slowCalls) > 0 {
		calls = strings.Join(slowCalls, ", ") + " (seconds from the measured start: the warm-up's are negative)"
	}
	progress("freshness: the 3 slowest probes: %s; produce calls of 50 ms or more: %s", strings.Join(tail, ", "), calls)
	slices.Sort(lat)
	if len(lat) < probes {
		return nil, fmt.Errorf("freshness: only %d of %d probes became visible", len(lat), probes)
	}
	return lat, nil
}

// lostAnnouncement measures the staleness bound when an announcement is lost: it caches the conversation
// list of "probe" in the API (a sync), changes one of its rows through a store with no change feed (a
// commit whose announcement never comes), and syncs every 5 ms until the API shows the change. The API's
// SYNC_CACHE_MAX_AGE (5 s by default) bounds the answer.
func lostAnnouncement(ctx context.Context, dsn string, api *proc) (time.Duration, error) {
	c := newSyncClient(api.addr, 1)
	body, _ := json.Marshal(syncBody{UID: "probe"})
	unread := func() (int64, error) {
		out, err := c.post(ctx, body)
		if err != nil {
			return 0, err
		}
		var items []struct {
			ChannelID string `json:"channel_id"`
			Unread    int64  `json:"unread"`
		}
		if err := json.Unmarshal(out, &items); err != nil {
			return 0, err
		}
		for _, it := range items {
			if it.ChannelID == "probe-peer" {
				return it.Unread, nil
			}
		}
		return 0, errors.New("probe has no conversation with probe-peer")
	}
	before, err := unread()
	if err != nil {
		return 0, err
	}
	s, err := mysqlstore.Open(dsn, mysqlstore.Options{MaxOpenConns: 1}) // no OnCommit: nothing is announced
	if err != nil {
		return 0, err
	}
	defer s.Close()
	key := conversation.ConvKey{UID: "probe", ChannelID: "probe-peer", ChannelType: conversation.ChannelTypePerson}
	if _, err := s.Update(ctx, key, func(r conversation.Row, _ int64) (conversation.Row, bool) {
		r.Unread++
		return r, true
	}); err != nil {
		return 0, err
	}
	start := time.Now()
	for time.Since(start) < time.Minute {
		if n, err := unread(); err == nil && n != before {
			return time.Since(start), nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return 0, errors.New("lost announcement: the change did not show within a minute")
}
