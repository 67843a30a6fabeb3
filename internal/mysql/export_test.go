package mysql

import (
	"context"
	"time"

	"github.com/convsync/conversations/internal/conversation"
)

// UserRowsSQL is the statement of a user's list and version, for the tests of how vtgate routes it.
var UserRowsSQL = userRowsSQL

// ApplyBatchThrough is ApplyBatch with the batch's BatchTx wrapped (a timing harness's decorator); it
// adds the time spent in RunBatch and in the rest (begin, sending the queued writes, commit) to spent.
func ApplyBatchThrough(ctx context.Context, s *Store, events []conversation.Event, wrap func(conversation.BatchTx) conversation.BatchTx, spent map[string]time.Duration) (conversation.BatchResult, error) {
	var out conversation.BatchOutcome
	opts := conversation.BatchOptions{Window: s.window, Large: s.large, NowMS: s.nowMS}
	start := time.Now()
	var run time.Duration
	err := s.inBatch(ctx, s.rows, func(b *batch) error {
		t0 := time.Now()
		var err error
		out, err = conversation.RunBatch(ctx, wrap(b), events, opts)
		run += time.Since(t0)
		return err
	}, nil)
	if err == nil {
		s.committed(ctx, out.Changes)
	}
	spent["RunBatch"] += run
	spent["flush+commit"] += time.Since(start) - run
	return out.Result, err
}
