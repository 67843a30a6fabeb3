package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/trafficgen"
)

// measureFreshness paces records into the topic at rate per second and, every 100 ms, a probe message
// from "probe-peer" to "probe"; a poller syncs "probe" back to back and notes when each probe's seq
// becomes visible (to within the poller's 5 ms).
func measureFreshness(ctx context.Context, brokers []string, topic string, c *syncClient, records []trafficgen.Record, rate float64, d time.Duration) (time.Duration, time.Duration, int, error) {
	w := &kafkago.Writer{Addr: kafkago.TCP(brokers...), Topic: topic, Balancer: &kafkago.Hash{}, RequiredAcks: kafkago.RequireAll,
		BatchTimeout: time.Millisecond, BatchSize: 1000}
	defer w.Close()
	key := conversation.PersonKey("probe-peer", "probe")
	var mu sync.Mutex
	sent := map[int64]time.Time{}
	var lat []time.Duration

	pollCtx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		body, _ := json.Marshal(syncBody{UID: "probe"})
		var seen int64
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
						lat = append(lat, now.Sub(t))
					}
				}
				mu.Unlock()
				seen = it.LastMsgSeq
			}
			time.Sleep(5 * time.Millisecond) // a client polling hard, without loading the 2 cores much itself
		}
	}()

	tick := 10 * time.Millisecond
	perTick := max(1, int(rate*tick.Seconds()))
	start := time.Now()
	next := 0
	var probeSeq int64
	lastProbe := time.Time{}
	for time.Since(start) < d && next < len(records) {
		batch := make([]kafkago.Message, 0, perTick+1)
		for i := 0; i < perTick && next < len(records); i++ {
			batch = append(batch, kafkago.Message{Key: records[next].Key, Value: records[next].Value})
			next++
		}
		var probeAt time.Time
		if time.Since(lastProbe) >= 100*time.Millisecond {
			probeSeq++
			v, _ := json.Marshal(map[string]any{"message_id": probeSeq, "message_seq": probeSeq, "from_uid": "probe-peer",
				"channel_id": "probe", "channel_type": 1, "timestamp": time.Now().Unix(), "header": map[string]int{"red_dot": 1},
				"client_msg_no": fmt.Sprintf("probe-%d", probeSeq), "payload": ""})
			batch = append(batch, kafkago.Message{Key: []byte(key), Value: v})
			probeAt, lastProbe = time.Now(), time.Now()
			mu.Lock()
			sent[probeSeq] = probeAt
			mu.Unlock()
		}
		if err := w.WriteMessages(ctx, batch...); err != nil {
			return 0, 0, 0, fmt.Errorf("freshness produce: %w", err)
		}
		if sleep := time.Until(start.Add(time.Duration(next/perTick) * tick)); sleep > 0 {
			time.Sleep(sleep)
		}
	}
	// Give the last probes time to show.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := len(lat)
		mu.Unlock()
		if int64(n) >= probeSeq {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopPoll()
	wg.Wait()
	slices.Sort(lat)
	if int64(len(lat)) < probeSeq {
		return 0, 0, 0, fmt.Errorf("freshness: only %d of %d probes became visible", len(lat), probeSeq)
	}
	return percentile(lat, 50), percentile(lat, 99), len(lat), nil
}
