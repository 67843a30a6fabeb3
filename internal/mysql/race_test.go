package mysql_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/testenv"
)

// Batches and API mutations racing on one row, as a lane and the API do: the lane retries a batch that
// failed on conflicts (its retries, not the store's, end a conflict streak). Every message's effect
// stays (the row ends at the last seq, unread counting what came after the last read), no mutation is
// overwritten (the row's read point is at least the last mutation's), and the mutations get their turn
// between the batches (the row lock makes them wait, not fail).
func TestBatchesAndMutationsRacingOnOneRow(t *testing.T) {
	s, _ := testenv.Store(t, mysql.Options{})
	ctx := context.Background()
	const messages = 600
	bobWithAlice := conversation.ConvKey{UID: "bob", ChannelID: "alice", ChannelType: conversation.ChannelTypePerson}
	apply(t, s, personMsg("alice", "bob", 1))
	done := make(chan struct{})
	var readTo int64
	var mutations, attempts, conflicts int
	mutator := make(chan error, 1)
	go func() {
		defer close(mutator)
		for {
			select {
			case <-done:
				return
			case <-time.After(200 * time.Microsecond):
			}
			attempts++
			r, err := s.Update(ctx, bobWithAlice, func(row conversation.Row, _ int64) (conversation.Row, bool) {
				return conversation.SetUnread(row, 0)
			})
			if errors.Is(err, conversation.ErrConflict) {
				continue // the API answers 5xx; the client asks again
			}
			if err != nil {
				mutator <- err
				return
			}
			readTo = max(readTo, r.ReadedToMsgSeq)
			mutations++
		}
	}()
	for seq := int64(2); seq <= messages; {
		var evs []conversation.Event
		for range 1 + seq%4 {
			if seq <= messages {
				evs = append(evs, personMsg("alice", "bob", seq))
				seq++
			}
		}
		for {
			_, err := s.ApplyBatch(ctx, evs)
			if err == nil {
				break
			}
			if !errors.Is(err, conversation.ErrConflict) {
				t.Fatal(err)
			}
			conflicts++ // the lane retries the batch
		}
	}
	close(done)
	if err := <-mutator; err != nil {
		t.Fatal(err)
	}
	got, ok := rowsOf(t, s, "bob")["alice"]
	if !ok {
		t.Fatal("bob has no conversation with alice")
	}
	if got.LastMsgSeq != messages || got.Unread != got.LastMsgSeq-got.ReadedToMsgSeq || got.ReadedToMsgSeq < readTo {
		t.Fatalf("bob's row: last seq %d, unread %d, read to %d; want %d, last seq - read to, at least %d (the last mutation's)",
			got.LastMsgSeq, got.Unread, got.ReadedToMsgSeq, messages, readTo)
	}
	if mutations < 5 {
		t.Fatalf("%d of %d mutations ran between the batches: the test tests nothing", mutations, attempts)
	}
	t.Logf("%d of %d mutations, %d batches retried by the caller", mutations, attempts, conflicts)
}
