package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/conversation"
	mysqlstore "github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/trafficgen"
)

// Large channels (contract §5): a 20,000-member group at 100 messages/s beside the peer stream, the rows
// a message to it writes, and what a sync costs a user in 50 large channels.

const (
	largeGroup   = "large-g"
	largeMembers = 20_000
)

func largeUID(i int) string { return fmt.Sprintf("lg-%05d", i) }

// largeSection runs the large-channel figures against the peer run's projector and API (the projector
// runs with its default LARGE_CHANNEL_MEMBERS, 1,000).
func largeSection(ctx context.Context, e *env, rep *report, topic string, projector, api *proc, warm, d time.Duration) error {
	// A produce call the writer retries (after 100 ms, then 400 ms, …) is a stall of the bench's own:
	// its errors are printed, to tell such a stall from the service's.
	w := &kafkago.Writer{Addr: kafkago.TCP(e.brokers...), Topic: topic, Balancer: &kafkago.Hash{}, RequiredAcks: kafkago.RequireAll,
		BatchTimeout: time.Millisecond, BatchSize: 1000,
		ErrorLogger: kafkago.LoggerFunc(func(format string, args ...any) { progress("large: kafka writer: "+format, args...) })}
	defer w.Close()
	const committed = "conv_projector_records_committed_total"
	c0, err := projector.metric(committed)
	if err != nil {
		return err
	}
	progress("large: %d members for %s, in two membership events", largeMembers, largeGroup)
	for part := range 2 {
		uids := make([]string, largeMembers/2)
		for i := range uids {
			uids[i] = largeUID(part*largeMembers/2 + i)
		}
		v, _ := json.Marshal(map[string]any{"type": "channel.subscribers.added", "channel_id": largeGroup, "channel_type": 2, "uids": uids})
		if err := w.WriteMessages(ctx, kafkago.Message{Key: []byte(largeGroup), Value: v}); err != nil {
			return fmt.Errorf("large: produce membership: %w", err)
		}
	}
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if c, err := projector.metric(committed); err == nil && c-c0 >= 2 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("large: the membership events were not applied within 2 minutes")
		}
	}
	peer, err := peerStream(1000*(warm+d).Seconds(), 40_000_000)
	if err != nil {
		return err
	}
	progress("large: %s at 100 messages/s with the peer stream at 1,000 events/s for %s, measured after %s", largeGroup, warm+d, warm)
	before := snapshotBudget(projector, api)
	r, err := measureLarge(ctx, w, newSyncClient(api.addr, 2), peer, warm, d)
	if err != nil {
		return err
	}
	after := snapshotBudget(projector, api)
	bd := after.breakdown(before)
	st := bd.stages
	progress("large: group p50 %s p99 %s (%d messages); peer p99 %s (%d probes); mean batch %.1f; %s; %s; %s",
		fmtMS(percentile(r.group, 50)), fmtMS(percentile(r.group, 99)), len(r.group), fmtMS(percentile(r.peer, 99)),
		len(r.peer), bd.meanBatch, formatStages(st), formatSteps(bd.steps), formatLanes(bd.lanes))
	var slow []slowBatchLine
	if projector.log != "" {
		if slow, err = readSlowBatches(projector.log); err != nil {
			progress("large: reading the projector's slow batches: %v", err)
		}
	}
	var calls []string
	for _, c := range r.slowProduce {
		calls = append(calls, fmt.Sprintf("%+.3fs: %s", c[0].Seconds(), fmtMS(c[1])))
	}
	progress("large: %d produce calls took 50 ms or more (from the start of the measurement; the warm-up is negative): %s",
		len(calls), strings.Join(calls, ", "))
	progress("large: the projector during the measurement: %s", summarizeSlowBatches(slow, r.start, r.start.Add(d)))
	for _, kind := range []string{"group", "peer"} {
		if n := reportTail(kind, r.traces, slow, r.start); n > 0 {
			progress("large: %d of the slowest %s messages spent half their time or more in the produce call", n, kind)
		}
	}
	rep.emit(figure{Name: "large.g20000_r100.p50", Value: ms(percentile(r.group, 50)), Unit: "ms", Stages: st, Lanes: bd.lanes, Steps: bd.steps})
	rep.emit(figure{Name: "large.g20000_r100.p99", Value: ms(percentile(r.group, 99)), Unit: "ms", Stages: st, Lanes: bd.lanes,
		Steps: bd.steps, Target: "p99 ≤ 50 ms"})
	rep.emit(figure{Name: "large.peer_during.p99", Value: ms(percentile(r.peer, 99)), Unit: "ms", Stages: st, Lanes: bd.lanes,
		Steps: bd.steps, Target: "p99 ≤ 100 ms"})

	perMsg, err := largeRowsPerMessage(ctx, e)
	if err != nil {
		return err
	}
	rep.emit(figure{Name: "large.rows_per_message", Value: perMsg, Unit: "rows", Target: "≤ 3"})

	withLarge, plain, err := largeSyncCost(ctx, e, d)
	if err != nil {
		return err
	}
	rep.vs("large.sync_member_cost", withLarge, "req/CPU-s", plain, "≥ 0.7")
	return nil
}

// largeResult holds the sorted produce-to-visible latencies of the group's messages (as one member
// sees them) and of the peer probes, and each one's trace, with when the measurement started.
type largeResult struct {
	group, peer []time.Duration
	traces      []msgTrace
	start       time.Time
	// slowProduce are the produce calls that took 50 ms or more, warm-up included: when (from start,
	// negative in the warm-up) and how long.
	slowProduce [][2]time.Duration
}

// measureLarge produces the peer records at their rate, the group's messages at 100/s from members
// who do not poll, and a person-chat probe every 100 ms; one poller syncs a member of the group and
// one the probe's recipient, back to back, 5 ms apart, noting when each seq becomes visible. The
// stream runs for warm before the messages are measured for d: the writer's first produce call takes
// a few hundred ms (docs/benchmarks.md, "The tails"), and the ticks it held back are then produced at
// once, a burst no steady sender makes.
func measureLarge(ctx context.Context, w *kafkago.Writer, c *syncClient, peer []trafficgen.Record, warm, d time.Duration) (largeResult, error) {
	var mu sync.Mutex
	sent := map[string]map[int64]*msgTrace{"group": {}, "peer": {}}
	var res largeResult
	pollCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	poll := func(kind, uid, channel string, out *[]time.Duration) {
		body, _ := json.Marshal(syncBody{UID: uid})
		var seen int64
		var prevEnd time.Time
		for pollCtx.Err() == nil {
			began := time.Now()
			b, err := c.post(pollCtx, body)
			if err == nil {
				var items []struct {
					ChannelID  string `json:"channel_id"`
					LastMsgSeq int64  `json:"last_msg_seq"`
				}
				if json.Unmarshal(b, &items) == nil {
					now := time.Now()
					for _, it := range items {
						if it.ChannelID != channel || it.LastMsgSeq <= seen {
							continue
						}
						mu.Lock()
						for s := seen + 1; s <= it.LastMsgSeq; s++ {
							if t, ok := sent[kind][s]; ok {
								*out = append(*out, now.Sub(t.sent))
								t.visible, t.syncStart, t.syncTook, t.prevEnd = now, began, now.Sub(began), prevEnd
							}
						}
						mu.Unlock()
						seen = it.LastMsgSeq
					}
				}
			}
			prevEnd = time.Now()
			time.Sleep(5 * time.Millisecond)
		}
	}
	wg.Go(func() { poll("group", largeUID(1), largeGroup, &res.group) })
	wg.Go(func() { poll("peer", "probe", "probe-peer", &res.peer) })

	rng := rand.New(rand.NewPCG(10, 10))
	tick := 10 * time.Millisecond
	perTick := max(1, int(1000*tick.Seconds()))
	start := time.Now()
	var groupSeq, probeSeq int64
	var groups, probes int // measured
	probeBase := int64(50_000_000)
	next := 0
	for i := 0; time.Since(start) < warm+d; i++ {
		batch := make([]kafkago.Message, 0, perTick+2)
		for j := 0; j < perTick && next < len(peer); j++ {
			batch = append(batch, kafkago.Message{Key: peer[next].Key, Value: peer[next].Value})
			next++
		}
		now := time.Now()
		measured := now.Sub(start) >= warm
		if measured && res.start.IsZero() {
			res.start = now
		}
		var inTick []*msgTrace
		mu.Lock()
		{ // 100 messages/s: one per 10 ms tick
			groupSeq++
			from := largeUID(largeMembers/2 + rng.IntN(largeMembers/2))
			v, _ := json.Marshal(map[string]any{"message_id": 60_000_000 + groupSeq, "message_seq": groupSeq, "from_uid": from,
				"channel_id": largeGroup, "channel_type": 2, "timestamp": now.Unix(), "header": map[string]int{"red_dot": 1},
				"client_msg_no": fmt.Sprintf("lg-%d", groupSeq), "payload": ""})
			batch = append(batch, kafkago.Message{Key: []byte(largeGroup), Value: v})
			if measured {
				t := &msgTrace{kind: "group", seq: groupSeq, sent: now}
				sent["group"][groupSeq] = t
				inTick = append(inTick, t)
				groups++
			}
		}
		if i%10 == 0 {
			probeSeq++
			s := probeBase + probeSeq
			v, _ := json.Marshal(map[string]any{"message_id": s, "message_seq": s, "from_uid": "probe-peer",
				"channel_id": "probe", "channel_type": 1, "timestamp": now.Unix(), "header": map[string]int{"red_dot": 1},
				"client_msg_no": fmt.Sprintf("probe-%d", s), "payload": ""})
			batch = append(batch, kafkago.Message{Key: []byte(conversation.PersonKey("probe-peer", "probe")), Value: v})
			if measured {
				t := &msgTrace{kind: "peer", seq: s, sent: now}
				sent["peer"][s] = t
				inTick = append(inTick, t)
				probes++
			}
		}
		mu.Unlock()
		if err := w.WriteMessages(ctx, batch...); err != nil {
			return res, fmt.Errorf("large: produce: %w", err)
		}
		produced := time.Since(now)
		if produced >= 50*time.Millisecond {
			res.slowProduce = append(res.slowProduce, [2]time.Duration{now.Sub(start) - warm, produced})
		}
		mu.Lock()
		for _, t := range inTick {
			t.produce = produced
		}
		mu.Unlock()
		if sleep := time.Until(start.Add(time.Duration(i+1) * tick)); sleep > 0 {
			time.Sleep(sleep)
		}
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		done := len(res.group) >= groups && len(res.peer) >= probes
		mu.Unlock()
		if done {
			break
		}
	}
	stop()
	wg.Wait()
	for _, kind := range []string{"group", "peer"} {
		for _, t := range sent[kind] {
			res.traces = append(res.traces, *t)
		}
	}
	slices.Sort(res.group)
	slices.Sort(res.peer)
	if len(res.group) < groups || len(res.peer) < probes {
		return res, fmt.Errorf("large: only %d of %d group messages and %d of %d probes became visible",
			len(res.group), groups, len(res.peer), probes)
	}
	return res, nil
}

// largeRowsPerMessage applies 200 messages, one batch each (the worst case), from random members of a
// 20,000-member group through the store, and returns the rows written per message: conversation rows,
// the window's row, the channel's row (once per batch) and late rows (none: in order).
func largeRowsPerMessage(ctx context.Context, e *env) (float64, error) {
	dsn, err := e.freshDB(ctx)
	if err != nil {
		return 0, err
	}
	s, err := mysqlstore.Open(dsn, mysqlstore.Options{MaxOpenConns: 2, LargeChannelMembers: 1000})
	if err != nil {
		return 0, err
	}
	defer s.Close()
	uids := make([]string, largeMembers)
	for i := range uids {
		uids[i] = largeUID(i)
	}
	join := conversation.Event{Membership: &conversation.Membership{Channel: conversation.Channel{ID: largeGroup, Type: 2}, UIDs: uids, Added: true}}
	if _, err := s.ApplyBatch(ctx, []conversation.Event{join}); err != nil {
		return 0, err
	}
	rng := rand.New(rand.NewPCG(11, 11))
	const n = 200
	rows := 0
	for seq := int64(1); seq <= n; seq++ {
		m := &conversation.Message{MessageID: seq, MessageSeq: seq, FromUID: uids[rng.IntN(len(uids))], ChannelID: largeGroup,
			ChannelType: 2, Timestamp: time.Now().Unix(), Header: conversation.Header{RedDot: 1}, ClientMsgNo: fmt.Sprint(seq)}
		res, err := s.ApplyBatch(ctx, []conversation.Event{{Message: m}})
		if err != nil {
			return 0, err
		}
		rows += res.RowsWritten + res.Applied + 1
	}
	return float64(rows) / n, nil
}

// largeSyncCost compares sync requests per CPU-second (API and database) of a user with 200
// conversations of which 50 are large channels with the same user shape and none large.
func largeSyncCost(ctx context.Context, e *env, d time.Duration) (withLarge, plain float64, err error) {
	dsn, err := e.freshDB(ctx)
	if err != nil {
		return 0, 0, err
	}
	s, err := mysqlstore.Open(dsn, mysqlstore.Options{MaxOpenConns: 2, LargeChannelMembers: 3})
	if err != nil {
		return 0, 0, err
	}
	defer s.Close()
	var events []conversation.Event
	msg := func(ch string, seq int64, subs ...string) conversation.Event {
		return conversation.Event{Message: &conversation.Message{MessageID: seq, MessageSeq: seq, FromUID: "other", ChannelID: ch,
			ChannelType: 2, Timestamp: time.Now().Unix() - 1000 + seq, Header: conversation.Header{RedDot: 1},
			ClientMsgNo: fmt.Sprint(seq), Payload: []byte("hello"), Subscribers: subs}}
	}
	for i := range 50 {
		events = append(events, conversation.Event{Membership: &conversation.Membership{
			Channel: conversation.Channel{ID: fmt.Sprintf("cost-l%03d", i), Type: 2}, UIDs: []string{"cost-large", "other", "x", "y"}, Added: true}})
	}
	if _, err := s.ApplyBatch(ctx, events); err != nil {
		return 0, 0, err
	}
	events = events[:0]
	for seq := int64(1); seq <= 20; seq++ {
		for i := range 200 {
			events = append(events, msg(fmt.Sprintf("cost-p%03d", i), seq, "cost-plain", "other"))
			if i < 150 {
				events = append(events, msg(fmt.Sprintf("cost-s%03d", i), seq, "cost-large", "other"))
			}
			if i < 50 {
				events = append(events, msg(fmt.Sprintf("cost-l%03d", i), seq))
			}
		}
	}
	if _, err := s.ApplyBatch(ctx, events); err != nil {
		return 0, 0, err
	}
	feed, err := e.freshTopic(ctx, 1)
	if err != nil {
		return 0, 0, err
	}
	api, err := e.start(ctx, "api", e.apiEnv(dsn, feed))
	if err != nil {
		return 0, 0, err
	}
	defer api.stop()
	progress("large: sync cost of 200 conversations, 50 large vs none, 16 clients, %s each", d)
	l := apiLoad(ctx, api, e.dbPID, []syncUser{{uid: "cost-large"}}, 10, 16, d, false)
	p := apiLoad(ctx, api, e.dbPID, []syncUser{{uid: "cost-plain"}}, 10, 16, d, false)
	if l.errors > 0 || p.errors > 0 {
		progress("large: %d and %d errors", l.errors, p.errors)
	}
	return float64(l.requests) / l.cpu, float64(p.requests) / p.cpu, nil
}
