package projector

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/testenv"
)

func TestProjectsEventsIntoTheDatabase(t *testing.T) {
	t.Parallel()
	brokers, topic, dlq := integration(t, 3)
	store, _ := testenv.Store(t, mysql.Options{})
	members := msgRecord(t, map[string]any{"type": "channel.subscribers.added", "channel_id": "g1", "channel_type": 2,
		"uids": []string{"alice", "bob", "carol"}})
	members.key = "g1"
	var recs []record
	recs = append(recs, members)
	for seq := int64(1); seq <= 5; seq++ {
		recs = append(recs, groupMsg(t, "g1", seq, "alice", nil)) // to the membership
	}
	recs = append(recs,
		personMsg(t, "alice", "bob", 1), personMsg(t, "alice", "bob", 2), personMsg(t, "bob", "alice", 3),
		groupMsg(t, "g1", 3, "alice", nil), // a redelivery: changes nothing
		msgRecord(t, map[string]any{"message_id": 7, "message_seq": 6, "from_uid": "alice", "channel_id": "g1", "channel_type": 2,
			"header": map[string]int{"red_dot": 1, "no_persist": 1}}),
		msgRecord(t, map[string]any{"message_id": 8, "message_seq": 1, "from_uid": "alice", "channel_id": "info", "channel_type": 6,
			"header": map[string]int{"red_dot": 1}}),
		// timestamp 0 takes the record's time
		msgRecord(t, map[string]any{"message_id": 9, "message_seq": 1, "from_uid": "dave", "channel_id": "g2", "channel_type": 2,
			"header": map[string]int{"red_dot": 1}, "subscribers": []string{"erin"}, "timestamp": 0}),
	)
	before := time.Now().Unix()
	produce(t, brokers, topic, recs...)
	group := testenv.Name("group.")
	p, reg := newProjector(t, Config{Brokers: brokers, Topic: topic, DLQTopic: dlq, GroupID: group, Skip: conversation.DefaultSkipSet()}, store)
	start(t, p)
	waitCommittedToEnd(t, brokers, group, topic, 3, 20*time.Second)

	got := rowMap(rows(t, store))
	want := map[string]convRow{
		"alice/g1/2":  {Unread: 0, ReadedToMsgSeq: 5, LastMsgSeq: 5, LastClientMsgNo: "g1-5"},
		"bob/g1/2":    {Unread: 5, LastMsgSeq: 5, LastClientMsgNo: "g1-5"},
		"carol/g1/2":  {Unread: 5, LastMsgSeq: 5, LastClientMsgNo: "g1-5"},
		"alice/bob/1": {Unread: 1, ReadedToMsgSeq: 2, LastMsgSeq: 3, LastClientMsgNo: "bob>alice-3"},
		"bob/alice/1": {Unread: 0, ReadedToMsgSeq: 3, LastMsgSeq: 3, LastClientMsgNo: "bob>alice-3"},
		"erin/g2/2":   {Unread: 1, LastMsgSeq: 1},
	}
	if len(got) != len(want) {
		t.Errorf("got %d rows, want %d: %+v", len(got), len(want), got)
	}
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("no row %s", k)
			continue
		}
		if g.Unread != w.Unread || g.ReadedToMsgSeq != w.ReadedToMsgSeq || g.LastMsgSeq != w.LastMsgSeq ||
			g.LastClientMsgNo != w.LastClientMsgNo {
			t.Errorf("row %s = unread %d readed %d last %d %q, want unread %d readed %d last %d %q", k,
				g.Unread, g.ReadedToMsgSeq, g.LastMsgSeq, g.LastClientMsgNo, w.Unread, w.ReadedToMsgSeq, w.LastMsgSeq, w.LastClientMsgNo)
		}
	}
	var ts int64
	if err := store.DB().Get(&ts, `SELECT last_msg_at FROM conversations WHERE uid = 'erin'`); err != nil {
		t.Fatal(err)
	}
	if ts < before-1 || ts > time.Now().Unix()+1 {
		t.Errorf("timestamp 0 became %d, want the record's time (about %d)", ts, before)
	}
	for name, want := range map[string]float64{
		"conv_projector_messages_applied_total":    9,
		"conv_projector_duplicates_skipped_total":  1,
		"conv_projector_skipped_total":             2,
		"conv_projector_memberships_applied_total": 1,
		"conv_projector_records_consumed_total":    float64(len(recs)),
	} {
		if got := metricValue(t, reg, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

func TestPoisonRecordsGoToTheDeadLetterTopic(t *testing.T) {
	t.Parallel()
	brokers, topic, dlq := integration(t, 1)
	store, _ := testenv.Store(t, mysql.Options{})
	bad := []struct{ value, reason string }{
		{`not json at all`, conversation.ReasonInvalidJSON},
		{`[{"message_id":1,"message_seq":1,"channel_id":"g1","channel_type":2}]`, conversation.ReasonInvalidJSON},
		{`{"message_id":1,"channel_id":"g1","channel_type":2}`, conversation.ReasonMissingField},
		{`{"message_id":1,"message_seq":"2","channel_id":"g1","channel_type":2}`, conversation.ReasonWrongType},
		{`{"type":"message.deleted","message_id":1,"message_seq":2,"channel_id":"g1","channel_type":2}`, conversation.ReasonUnknownType},
		{`{"message_id":1,"message_seq":2,"channel_id":"g1","channel_type":2,"client_msg_no":"` + strings.Repeat("x", 2000) + `"}`, conversation.ReasonTooLarge},
		{`{"message_id":1,"message_seq":2,"channel_id":"g1","channel_type":2,"payload":"%%%"}`, conversation.ReasonInvalidValue},
	}
	// good, bad, good, bad, ...: every bad record sits between two good ones of the same partition
	var recs []record
	seq := int64(0)
	for i, b := range bad {
		seq++
		recs = append(recs, groupMsg(t, "g1", seq, "alice", []string{"bob"}), record{key: "poison-" + strconv.Itoa(i), value: []byte(b.value)})
	}
	seq++
	recs = append(recs, groupMsg(t, "g1", seq, "alice", []string{"bob"}))
	produce(t, brokers, topic, recs...)
	group := testenv.Name("group.")
	p, reg := newProjector(t, Config{Brokers: brokers, Topic: topic, DLQTopic: dlq, GroupID: group, MaxEventBytes: 1024}, store)
	start(t, p)
	waitCommittedToEnd(t, brokers, group, topic, 1, 20*time.Second)

	letters := readAll(t, brokers, dlq, len(bad))
	for i, m := range letters {
		h := map[string]string{}
		for _, x := range m.Headers {
			h[x.Key] = string(x.Value)
		}
		if string(m.Key) != "poison-"+strconv.Itoa(i) || string(m.Value) != bad[i].value {
			t.Errorf("dead letter %d: key %q, value %.40q; want the original record's", i, m.Key, m.Value)
		}
		if h[HeaderReason] != bad[i].reason || h[HeaderSourceTopic] != topic || h[HeaderSourcePartition] != "0" ||
			h[HeaderSourceOffset] != strconv.Itoa(2*i+1) || h[HeaderError] == "" {
			t.Errorf("dead letter %d headers = %v, want reason %s from %s/0@%d", i, h, bad[i].reason, topic, 2*i+1)
		}
	}
	r := rowMap(rows(t, store))["bob/g1/2"]
	if r.Unread != seq || r.LastMsgSeq != seq {
		t.Errorf("bob's row: unread %d, last_msg_seq %d; want every good record applied: %d, %d", r.Unread, r.LastMsgSeq, seq, seq)
	}
	for _, b := range bad {
		want := 1.0
		if b.reason == conversation.ReasonInvalidJSON {
			want = 2
		}
		if got := metricValue(t, reg, "conv_projector_dead_lettered_total", "reason", b.reason); got != want {
			t.Errorf("dead_lettered_total{reason=%q} = %v, want %v", b.reason, got, want)
		}
	}
}

// Two instances share a 6-partition topic while records keep arriving; one stops mid-stream. The final
// state must be complete and equal to what a single instance, in another group and database, makes of
// the same topic.
func TestTwoInstancesInOneGroupMatchASingleInstance(t *testing.T) {
	t.Parallel()
	brokers, topic, dlq := integration(t, 6)
	pair, _ := testenv.Store(t, mysql.Options{})
	single, _ := testenv.Store(t, mysql.Options{})

	const groups, perGroup, pairs, perPair = 24, 30, 12, 20
	subscribers := func(g int) []string {
		return []string{"u" + strconv.Itoa(g%7), "u" + strconv.Itoa(g%7+7), "u" + strconv.Itoa(g%5+14)}
	}
	// Rounds interleave every channel's next message, so each round touches every partition.
	var rounds [][]record
	for r := range max(perGroup, perPair) {
		var round []record
		for g := range groups {
			if r < perGroup {
				round = append(round, groupMsg(t, "g"+strconv.Itoa(g), int64(r+1), "bot", subscribers(g)))
			}
		}
		for pr := range pairs {
			if r < perPair {
				a, b := "p"+strconv.Itoa(pr), "q"+strconv.Itoa(pr)
				if r%3 == 2 {
					a, b = b, a
				}
				round = append(round, personMsg(t, a, b, int64(r+1)))
			}
		}
		rounds = append(rounds, round)
	}

	cfg := Config{Brokers: brokers, Topic: topic, DLQTopic: dlq, GroupID: testenv.Name("group."), BatchMaxRecords: 40, BatchMaxWait: 20 * time.Millisecond}
	countA, countB := &countingStore{Store: pair}, &countingStore{Store: pair}
	a, _ := newProjector(t, cfg, countA)
	b, _ := newProjector(t, cfg, countB)
	runA, _ := start(t, a), start(t, b)

	produced := produceRounds(t, brokers, topic, rounds, 100*time.Millisecond)
	testenv.Eventually(t, 20*time.Second, "both instances applied records", func() bool { return countA.applied() > 0 && countB.applied() > 0 })
	if err := runA.stop(t); err != nil {
		t.Fatalf("instance A stopped with %v", err)
	}
	stoppedAt := countA.applied() + countB.applied()
	<-produced
	if t.Failed() {
		return
	}
	waitCommittedToEnd(t, brokers, cfg.GroupID, topic, 6, 30*time.Second)
	if stoppedAt >= groups*perGroup+pairs*perPair {
		t.Fatalf("A stopped after all %d events were applied: the handover was not mid-stream", stoppedAt)
	}

	solo := cfg
	solo.GroupID = testenv.Name("group.")
	s, _ := newProjector(t, solo, single)
	start(t, s)
	waitCommittedToEnd(t, brokers, solo.GroupID, topic, 6, 30*time.Second)

	got, want := rows(t, pair), rows(t, single)
	if wantRows := groups*3 + pairs*2; len(want) != wantRows {
		t.Fatalf("single instance made %d rows, want %d", len(want), wantRows)
	}
	if jsonString(got) != jsonString(want) {
		t.Fatalf("two instances made a different state than one:\n got %v\nwant %v", got, want)
	}
	for _, r := range want {
		if strings.HasPrefix(r.ChannelID, "g") && (r.Unread != perGroup || r.LastMsgSeq != perGroup) {
			t.Fatalf("row %+v: want unread and last_msg_seq %d", r, perGroup)
		}
	}
	t.Logf("A applied %d events, B %d (A stopped at %d of %d)", countA.applied(), countB.applied(), stoppedAt, groups*perGroup+pairs*perPair)
}

// countingStore counts the events of the batches its Store applied.
type countingStore struct {
	Store
	n atomic.Int64
}

func (c *countingStore) ApplyBatch(ctx context.Context, events []conversation.Event) (conversation.BatchResult, error) {
	res, err := c.Store.ApplyBatch(ctx, events)
	if err == nil {
		c.n.Add(int64(len(events)))
	}
	return res, err
}

func (c *countingStore) applied() int { return int(c.n.Load()) }

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
