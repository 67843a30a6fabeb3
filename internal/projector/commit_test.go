package projector

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/testenv"
	"github.com/convsync/conversations/internal/topicadmin"
)

// The store fails, so the group's offset must stay where it was, and readiness must say so; once the
// store recovers, the same batch is applied and only then committed.
func TestCommitsOnlyAfterTheBatchApplied(t *testing.T) {
	t.Parallel()
	brokers, topic, dlq := integration(t, 1)
	group := testenv.Name("group.")
	var recs []record
	for seq := int64(1); seq <= 10; seq++ {
		recs = append(recs, groupMsg(t, "g1", seq, "alice", []string{"bob"}))
	}
	produce(t, brokers, topic, recs...)

	failures := make(chan int, 10)
	release := make(chan struct{})
	store := &fakeStore{apply: func(ctx context.Context, call int, _ []conversation.Event) error {
		if call <= 3 {
			failures <- call
			if call == 3 {
				select { // hold the last failure until the test has looked
				case <-release:
				case <-ctx.Done():
				}
			}
			return errDown
		}
		return nil
	}}
	p, reg := newProjector(t, Config{Brokers: brokers, Topic: topic, DLQTopic: dlq, GroupID: group}, store)
	start(t, p)

	for want := 1; want <= 3; want++ {
		select {
		case got := <-failures:
			if got != want {
				t.Fatalf("failure %d reported as %d", want, got)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("store never failed %d times", want)
		}
	}
	if got := committed(t, brokers, group, topic, 1)[0]; got != -1 {
		t.Fatalf("while the store fails, committed offset = %d, want none (-1)", got)
	}
	if step := p.Failing(); step != "apply" {
		t.Fatalf("while the store fails, Failing = %q, want apply (not ready)", step)
	}
	close(release)

	waitCommittedToEnd(t, brokers, group, topic, 1, 20*time.Second)
	if got := committed(t, brokers, group, topic, 1)[0]; got != 10 {
		t.Fatalf("after recovery, committed offset = %d, want 10", got)
	}
	if n := store.applied(); n != 10 {
		t.Fatalf("applied %d events, want the 10 records once (one successful batch)", n)
	}
	if step := p.Failing(); step != "" {
		t.Fatalf("after recovery, Failing = %q, want none (ready)", step)
	}
	if n := metricValue(t, reg, "conv_projector_apply_failures_total"); n != 3 {
		t.Fatalf("apply_failures_total = %v, want 3", n)
	}
	if n := metricValue(t, reg, "conv_projector_consumer_lag", "partition", "0"); n != 0 {
		t.Fatalf("consumer_lag{partition=0} = %v, want 0", n)
	}
}

func TestBatchesAreBoundedByMaxRecords(t *testing.T) {
	t.Parallel()
	brokers, topic, dlq := integration(t, 1)
	var recs []record
	for seq := int64(1); seq <= 250; seq++ {
		recs = append(recs, groupMsg(t, "g1", seq, "alice", []string{"bob"}))
	}
	produce(t, brokers, topic, recs...)
	store := &fakeStore{}
	group := testenv.Name("group.")
	p, reg := newProjector(t, Config{Brokers: brokers, Topic: topic, DLQTopic: dlq, GroupID: group,
		BatchMaxRecords: 100, BatchMaxWait: time.Second}, store)
	start(t, p)
	waitCommittedToEnd(t, brokers, group, topic, 1, 20*time.Second)

	store.mu.Lock()
	defer store.mu.Unlock()
	if store.events != 250 {
		t.Fatalf("applied %d events, want 250", store.events)
	}
	for _, n := range store.batches {
		if n > 100 {
			t.Fatalf("batch sizes %v: one exceeds 100", store.batches)
		}
	}
	// The records were all there and the wait is long, so batches are full but for the last.
	if len(store.batches) != 3 {
		t.Fatalf("batch sizes %v, want 100, 100, 50", store.batches)
	}
	// Offsets are committed in the background, and batches applied while a commit is in flight share
	// the next one (committer.go): one commit per batch at most, at least one.
	if n := metricValue(t, reg, "conv_projector_commits_total"); n < 1 || n > 3 {
		t.Fatalf("commits_total = %v, want 1 to 3 for 3 batches", n)
	}
	if n := metricValue(t, reg, "conv_projector_records_consumed_total"); n != 250 {
		t.Fatalf("records_consumed_total = %v, want 250", n)
	}
}

func TestShutdown(t *testing.T) {
	t.Parallel()
	t.Run("the in-flight batch finishes and commits within the grace", func(t *testing.T) {
		t.Parallel()
		brokers, topic, dlq := integration(t, 1)
		// One record: natural batching may split several into batches, and only the one in flight finishes.
		produce(t, brokers, topic, groupMsg(t, "g1", 1, "alice", []string{"bob"}))
		applying := make(chan struct{})
		store := &fakeStore{apply: func(ctx context.Context, _ int, _ []conversation.Event) error {
			close(applying)
			select { // slower than the shutdown signal, well within the grace
			case <-time.After(300 * time.Millisecond):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}}
		group := testenv.Name("group.")
		p, _ := newProjector(t, Config{Brokers: brokers, Topic: topic, DLQTopic: dlq, GroupID: group, ShutdownTimeout: 5 * time.Second}, store)
		r := start(t, p)
		<-applying
		if err := r.stop(t); err != nil {
			t.Fatalf("Run = %v, want nil after a clean stop", err)
		}
		if got := committed(t, brokers, group, topic, 1)[0]; got != 1 {
			t.Fatalf("committed offset = %d, want 1: the in-flight batch should have finished", got)
		}
	})
	t.Run("a batch still failing when the grace ends is abandoned uncommitted", func(t *testing.T) {
		t.Parallel()
		brokers, topic, dlq := integration(t, 1)
		produce(t, brokers, topic, groupMsg(t, "g1", 1, "alice", []string{"bob"}))
		failing := make(chan struct{}, 100)
		store := &fakeStore{apply: func(context.Context, int, []conversation.Event) error {
			failing <- struct{}{}
			return errDown
		}}
		group := testenv.Name("group.")
		p, _ := newProjector(t, Config{Brokers: brokers, Topic: topic, DLQTopic: dlq, GroupID: group, ShutdownTimeout: 300 * time.Millisecond}, store)
		r := start(t, p)
		<-failing
		begin := time.Now()
		err := r.stop(t)
		if !errors.Is(err, ErrAbandoned) {
			t.Fatalf("Run = %v, want ErrAbandoned", err)
		}
		if took := time.Since(begin); took < 300*time.Millisecond || took > 5*time.Second {
			t.Fatalf("Run returned %s after the signal, want just over the 300ms grace", took)
		}
		if got := committed(t, brokers, group, topic, 1)[0]; got != -1 {
			t.Fatalf("committed offset = %d, want none (-1)", got)
		}
	})
}

// The dead-letter topic does not exist yet, so writing a bad record there fails: nothing of the batch
// may be committed (not even its good records), until the topic appears.
func TestDeadLetterFailureBlocksTheCommit(t *testing.T) {
	t.Parallel()
	brokers, topic, _ := integration(t, 1)
	dlq := topic + ".late-dlq"
	// The bad record first: whichever batches the records fall into, none may commit while it fails.
	produce(t, brokers, topic, record{key: "x", value: []byte("not json")}, groupMsg(t, "g1", 1, "alice", []string{"bob"}),
		groupMsg(t, "g1", 2, "alice", []string{"bob"}))
	store := &fakeStore{}
	group := testenv.Name("group.")
	p, reg := newProjector(t, Config{Brokers: brokers, Topic: topic, DLQTopic: dlq, GroupID: group}, store)
	start(t, p)

	testenv.Eventually(t, 20*time.Second, "readiness reports the dead-letter step failing", func() bool {
		return p.Failing() == "dead_letter"
	})
	if got := committed(t, brokers, group, topic, 1)[0]; got != -1 {
		t.Fatalf("while dead letters fail, committed offset = %d, want none (-1)", got)
	}
	if n := store.applied(); n != 0 {
		t.Fatalf("applied %d events while dead letters fail, want 0: the batch waits whole", n)
	}
	if err := topicadmin.Ensure(t.Context(), nil, brokers, topicadmin.Topic{Name: dlq, Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	waitCommittedToEnd(t, brokers, group, topic, 1, 30*time.Second)
	if n := store.applied(); n != 2 {
		t.Fatalf("applied %d events, want the 2 good ones", n)
	}
	letters := readAll(t, brokers, dlq, 1)
	if string(letters[0].Value) != "not json" || reasonOf(letters[0]) != conversation.ReasonInvalidJSON {
		t.Fatalf("dead letter %q reason %q, want the bad record as invalid_json", letters[0].Value, reasonOf(letters[0]))
	}
	if n := metricValue(t, reg, "conv_projector_dead_letter_failures_total"); n == 0 {
		t.Fatal("dead_letter_failures_total = 0, want the failed writes counted")
	}
	if n := metricValue(t, reg, "conv_projector_dead_lettered_total", "reason", conversation.ReasonInvalidJSON); n != 1 {
		t.Fatalf("dead_lettered_total{invalid_json} = %v, want 1 (counted once, when written)", n)
	}
}
