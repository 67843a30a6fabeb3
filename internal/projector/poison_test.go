package projector

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/testenv"
)

// injectedFault is a store error that is not transient: the database refuses one record every time.
type injectedFault struct{}

func (*injectedFault) Error() string { return "injected fault: the database refuses this record" }

// faultStore is the real store, except that any batch holding message poisonSeq of channel g1 fails with
// fault (while fault is set).
type faultStore struct {
	*mysql.Store
	poisonSeq int64
	fault     atomic.Pointer[error]
	hits      atomic.Int64
}

func (f *faultStore) ApplyBatch(ctx context.Context, events []conversation.Event) (conversation.BatchResult, error) {
	if errp := f.fault.Load(); errp != nil {
		for _, e := range events {
			if e.Message != nil && e.Message.ChannelID == "g1" && e.Message.MessageSeq == f.poisonSeq {
				f.hits.Add(1)
				return conversation.BatchResult{}, *errp
			}
		}
	}
	return f.Store.ApplyBatch(ctx, events)
}

func TestAPoisonRecordIsIsolatedAndTheRestApplied(t *testing.T) {
	t.Parallel()
	brokers, topic, dlq := integration(t, 1)
	db, _ := testenv.Store(t, mysql.Options{})
	store := &faultStore{Store: db, poisonSeq: 7}
	var fault error = &injectedFault{}
	store.fault.Store(&fault)
	var recs []record
	for seq := int64(1); seq <= 20; seq++ {
		recs = append(recs, groupMsg(t, "g1", seq, "alice", []string{"bob"}))
	}
	produce(t, brokers, topic, recs...)
	group := testenv.Name("group.")
	p, reg := newProjector(t, Config{Brokers: brokers, Topic: topic, DLQTopic: dlq, GroupID: group, PoisonAttempts: 3}, store)
	start(t, p)
	waitCommittedToEnd(t, brokers, group, topic, 1, 30*time.Second)

	letter := readAll(t, brokers, dlq, 1)[0]
	h := headers(letter)
	if h[HeaderReason] != ReasonApplyFailed || h[HeaderErrorClass] != "*projector.injectedFault" ||
		h[HeaderSourceOffset] != "6" || h[HeaderError] != fault.Error() || string(letter.Value) != string(recs[6].value) {
		t.Errorf("dead letter %v, value %.60q; want the record of seq 7 as apply_failed", h, letter.Value)
	}
	r := rowMap(rows(t, db))["bob/g1/2"]
	if r.Unread != 19 || r.LastMsgSeq != 20 {
		t.Errorf("bob's row: unread %d, last_msg_seq %d; want the 19 other messages applied: 19, 20", r.Unread, r.LastMsgSeq)
	}
	if got := metricValue(t, reg, "conv_projector_dead_lettered_total", "reason", ReasonApplyFailed); got != 1 {
		t.Errorf("dead_lettered_total{reason=apply_failed} = %v, want 1", got)
	}
	if got := metricValue(t, reg, "conv_projector_poison_records_total"); got != 1 {
		t.Errorf("poison_records_total = %v, want 1", got)
	}
	if step := p.Failing(); step != "" {
		t.Errorf("failing step %q after the isolation, want none", step)
	}
}

// A transient error (the database unreachable) is never a reason to dead-letter: the batch is retried,
// well past PoisonAttempts, with nothing committed, until the error goes; then everything is applied.
func TestATransientFailureIsRetriedNotIsolated(t *testing.T) {
	t.Parallel()
	brokers, topic, dlq := integration(t, 1)
	db, _ := testenv.Store(t, mysql.Options{})
	store := &faultStore{Store: db, poisonSeq: 3}
	var fault error = errDown
	store.fault.Store(&fault)
	var recs []record
	for seq := int64(1); seq <= 5; seq++ {
		recs = append(recs, groupMsg(t, "g1", seq, "alice", []string{"bob"}))
	}
	produce(t, brokers, topic, recs...)
	group := testenv.Name("group.")
	p, reg := newProjector(t, Config{Brokers: brokers, Topic: topic, DLQTopic: dlq, GroupID: group, PoisonAttempts: 2,
		RetryMinBackoff: time.Millisecond, RetryMaxBackoff: 5 * time.Millisecond}, store)
	start(t, p)
	testenv.Eventually(t, 30*time.Second, "the failing batch retried 5 times past PoisonAttempts", func() bool { return store.hits.Load() >= 7 })
	if got := metricValue(t, reg, "conv_projector_dead_lettered_total", "reason", ReasonApplyFailed); got != 0 {
		t.Fatalf("dead_lettered_total{reason=apply_failed} = %v during a transient failure, want 0", got)
	}
	if c := committed(t, brokers, group, topic, 1); c[0] > 2 {
		t.Fatalf("committed offset %d while the record at offset 2 was not applied", c[0])
	}
	if step := p.Failing(); step != "apply" {
		t.Errorf("failing step %q, want apply", step)
	}
	store.fault.Store(nil)
	waitCommittedToEnd(t, brokers, group, topic, 1, 30*time.Second)
	r := rowMap(rows(t, db))["bob/g1/2"]
	if r.Unread != 5 || r.LastMsgSeq != 5 {
		t.Errorf("bob's row: unread %d, last_msg_seq %d; want all 5 applied", r.Unread, r.LastMsgSeq)
	}
}
