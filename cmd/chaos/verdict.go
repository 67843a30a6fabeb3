package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/projector"
	"github.com/convsync/conversations/internal/refmodel"
	"github.com/convsync/conversations/internal/topicadmin"
)

// fuzz sends cfg.FuzzAPI random requests to the API (ids of their own, so no real conversation moves)
// and cfg.FuzzEvents mutated events to the topic (channels of their own), which the model applies too.
func (ch *chaos) fuzz(ctx context.Context) error {
	before := ch.c.faults.Load()
	paths := []string{"/conversation/sync", "/conversations/setUnread", "/conversations/delete", "/conversations/clearUnread"}
	for range ch.cfg.FuzzAPI {
		_, _, _ = ch.pool.post(ctx, paths[ch.rng.IntN(len(paths))], fuzzBody(ch.rng))
	}
	ch.printf("fuzz: %d API requests, 5xx %d", ch.cfg.FuzzAPI, ch.c.faults.Load()-before)

	var msgs []kafkago.Message
	bad := 0
	for i := 0; len(msgs) < ch.cfg.FuzzEvents; i++ {
		v := mutate(ch.rng, fuzzEvent(ch.rng, i))
		e, err := conversation.DecodeEvent(v, time.Unix(0, 0), 0)
		if err == nil && e.Message != nil {
			if e.Message.Timestamp == 0 {
				continue // the record's own time would stand in: the model cannot know it
			}
		}
		key := []byte("fz-" + strconv.Itoa(ch.rng.IntN(50)))
		if err == nil {
			key = []byte(e.Key().Key)
		}
		if ch.model.Apply(v) != nil {
			bad++
		}
		msgs = append(msgs, kafkago.Message{Key: key, Value: v})
	}
	ch.badRecords += bad
	for i := 0; i < len(msgs); i += 200 {
		if err := ch.writer.WriteMessages(ctx, msgs[i:min(len(msgs), i+200)]...); err != nil {
			return fmt.Errorf("produce fuzzed events: %w", err)
		}
	}
	took := ch.drain(ctx, 90*time.Second)
	ch.printf("fuzz: %d event records (%d invalid, %d valid), drained in %s", len(msgs), bad, len(msgs)-bad, took.Round(time.Millisecond))
	return nil
}

// fuzzBody is a random request body: random fields of random JSON types, ids outside the run's users.
func fuzzBody(r *rand.Rand) []byte {
	values := []any{nil, true, -1, 0, 1, 1 << 62, 1.5, "", "fz" + strconv.Itoa(r.IntN(1000)), "fz\xff\xfe", "fz\xed\xb0\x80",
		"fz:2:3|fz:1:-1", "fz::1", []any{1, "a"}, map[string]any{"a": 1}, 256, 1e40, "0"}
	fields := []string{"uid", "channel_id", "channel_type", "version", "last_msg_seqs", "msg_count", "unread",
		"only_unread", "include_deleted", "limit", "exclude_channel_types", "larges"}
	switch r.IntN(8) {
	case 0:
		b := make([]byte, r.IntN(64))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		return b
	case 1:
		return []byte(`{"uid":"fz` + strconv.Itoa(r.IntN(100)) + `"`)
	}
	body := map[string]any{}
	for range r.IntN(6) {
		body[fields[r.IntN(len(fields))]] = values[r.IntN(len(values))]
	}
	b, _ := json.Marshal(body)
	return b
}

// fuzzEvent is a valid event of the fuzz channels fz<n>, before mutation.
func fuzzEvent(r *rand.Rand, i int) []byte {
	ch := "fz" + strconv.Itoa(r.IntN(20))
	var m map[string]any
	if r.IntN(5) == 0 {
		m = map[string]any{"type": "channel.subscribers.added", "channel_id": ch, "channel_type": 2, "uids": []string{"fzA", "fzB"}}
	} else {
		m = map[string]any{"type": "message.sent", "message_id": 9_000_000 + i, "message_seq": 1 + i, "from_uid": "fzA",
			"channel_id": ch, "channel_type": 2, "timestamp": 1_800_000_000 + i, "payload": "aGk=",
			"header": map[string]int{"red_dot": 1}, "subscribers": []string{"fzA", "fzB", "fzC"}}
	}
	b, _ := json.Marshal(m)
	return b
}

// mutate changes a few bytes of v, or none: flips, deletions, insertions of JSON punctuation or
// invalid UTF-8, truncation.
func mutate(r *rand.Rand, v []byte) []byte {
	out := append([]byte{}, v...)
	for range r.IntN(4) {
		if len(out) == 0 {
			break
		}
		i := r.IntN(len(out))
		switch r.IntN(5) {
		case 0:
			out[i] ^= byte(1 << r.IntN(8))
		case 1:
			out = append(out[:i], out[i+1:]...)
		case 2:
			ins := []string{`"`, `{`, `}`, `,`, `:`, "\xff", "\\u", "0", "-", "null"}[r.IntN(10)]
			out = append(out[:i], append([]byte(ins), out[i:]...)...)
		case 3:
			out = out[:i]
		}
	}
	return out
}

// verdict drains, then compares: the database with the model, every user's sync with the model, every
// following device with a full sync, and the dead-letter topic with the bad records sent. It prints
// the figures and returns an error when one that must be 0 is not.
func (ch *chaos) verdict(ctx context.Context) error {
	ch.drain(ctx, 90*time.Second)
	rep, err := refmodel.Compare(ctx, ch.db, ch.model)
	if err != nil {
		return fmt.Errorf("compare the database: %w", err)
	}
	lost, double, differ := int64(0), int64(0), 0
	users := ch.model.Users()
	for _, uid := range users {
		var items []item
		if err := ch.pool.must(ctx, "/conversation/sync", map[string]any{"uid": uid, "version": 0, "msg_count": 1}, &items); err != nil {
			return err
		}
		got := map[convID]item{}
		for _, it := range items {
			got[convID{it.ChannelID, it.ChannelType}] = it
		}
		for _, want := range ch.model.Sync(uid) {
			k := convID{want.ChannelID, want.ChannelType}
			it, ok := got[k]
			delete(got, k)
			switch {
			case !ok:
				lost += max(1, want.Unread)
				continue
			case it.Unread < want.Unread:
				lost += want.Unread - it.Unread
			case it.Unread > want.Unread:
				double += it.Unread - want.Unread
			}
			if it.LastMsgSeq != want.LastMsgSeq || it.Timestamp != want.Timestamp || it.ReadedToMsgSeq != want.ReadedToMsgSeq {
				differ++
			}
		}
		for _, it := range got {
			double += max(1, it.Unread)
		}
	}
	missed := 0
	for _, f := range ch.followers.list {
		if err := f.step(ctx, ch.pool); err != nil {
			return err
		}
		var full []item
		if err := ch.pool.must(ctx, "/conversation/sync", map[string]any{"uid": f.uid, "version": 0, "msg_count": 1}, &full); err != nil {
			return err
		}
		want := map[convID]item{}
		for _, it := range full {
			want[convID{it.ChannelID, it.ChannelType}] = it
		}
		for k, it := range want {
			have, ok := f.rows[k]
			if !ok || have.Unread != it.Unread || have.LastMsgSeq != it.LastMsgSeq || have.Version != it.Version {
				missed++
			}
		}
		for k := range f.rows {
			if _, ok := want[k]; !ok {
				missed++
			}
		}
	}
	letters, err := ch.deadLetters(ctx)
	if err != nil {
		return err
	}
	ch.printf("")
	ch.printf("kills              %d (projector and API replicas, kill -9)", ch.kills)
	ch.printf("restarts           %d (database %s, broker %s)", ch.restarts, ch.dbRestartKind(), ch.kafkaRestartKind())
	ch.printf("records            %d produced (%d invalid: dead-lettered %d distinct)", ch.produced+ch.cfg.FuzzEvents, ch.badRecords, letters)
	ch.printf("mutations          %d", ch.mutations)
	ch.printf("requests           %d (connection errors from killed replicas %d; 503 during outages %d; outage-path reads %d)",
		ch.c.requests.Load(), ch.c.connErrors.Load(), ch.c.outage503.Load(), ch.c.outageReads.Load())
	ch.printf("users compared     %d; following devices %d", len(users), len(ch.followers.list))
	ch.printf("outage answers     %d syncs answered 200 while the database was down, %d differing from before it", ch.outageAnswered, ch.outageDiffering)
	if len(ch.cfg.ReadDSNs) > 0 {
		ch.printf("                   (of those, fresh reads of a database replica differing from before: %d)", ch.replicaAnswersDiffering)
	}
	ch.printf("lost               %d", lost)
	ch.printf("double-counted     %d", double)
	ch.printf("missed             %d", missed)
	ch.printf("rows differing     %d", differ)
	ch.printf("database vs model  %s", rep.String())
	ch.older.mu.Lock()
	older, answers := ch.older.older, ch.older.answers
	ch.older.mu.Unlock()
	ch.printf("older answers      %d of %d full syncs across the API replicas older than one already seen (>%s before)", older, answers, olderGrace)
	ch.printf("5xx                %d", ch.c.faults.Load())
	ch.printf("stalls             %d", ch.stalls)
	ch.printf("recovery times     %v", ch.recoveries)
	if lost != 0 || double != 0 || missed != 0 || differ != 0 || ch.outageDiffering != 0 || rep.Mismatches != 0 || ch.c.faults.Load() != 0 || ch.stalls != 0 || letters < ch.badRecords || older != 0 {
		return fmt.Errorf("FAILED: lost %d, double-counted %d, missed %d, differing %d, outage answers differing %d, database mismatches %d, 5xx %d, stalls %d, dead letters %d of %d, older answers %d",
			lost, double, missed, differ, ch.outageDiffering, rep.Mismatches, ch.c.faults.Load(), ch.stalls, letters, ch.badRecords, older)
	}
	ch.printf("PASS")
	return nil
}

func (ch *chaos) dbRestartKind() string {
	if ch.cfg.DBRestart != "" {
		return "restarted"
	}
	return "proxy outage of " + ch.cfg.OutageFor
}

func (ch *chaos) kafkaRestartKind() string {
	if ch.cfg.clustered() {
		return "leader killed with -9 and started again"
	}
	if ch.cfg.KafkaRestart != "" {
		return "restarted"
	}
	return "not restarted"
}

// deadLetters counts the distinct source records in the dead-letter topic (it is at least once).
func (ch *chaos) deadLetters(ctx context.Context) (int, error) {
	client := &kafkago.Client{Addr: kafkago.TCP(ch.cfg.Brokers...), Timeout: 5 * time.Second}
	ends, err := topicadmin.EndOffsets(ctx, client, ch.topics.dlq)
	if err != nil {
		return 0, err
	}
	end := ends[0]
	if end == 0 {
		return 0, nil
	}
	r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: ch.cfg.Brokers, Topic: ch.topics.dlq, Partition: 0, MaxBytes: 10 << 20})
	defer r.Close()
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	seen := map[string]bool{}
	for {
		m, err := r.ReadMessage(rctx)
		if err != nil {
			return len(seen), fmt.Errorf("read the dead-letter topic: %w", err)
		}
		var part, off string
		for _, h := range m.Headers {
			switch h.Key {
			case projector.HeaderSourcePartition:
				part = string(h.Value)
			case projector.HeaderSourceOffset:
				off = string(h.Value)
			}
		}
		seen[part+"@"+off] = true
		if m.Offset+1 >= end {
			return len(seen), nil
		}
	}
}
