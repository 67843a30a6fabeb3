package projector

import (
	"context"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// Natural batching. Goroutines fetch records continuously into a lane's bounded queue (one per partition
// of the lane) while the lane applies the previous batch; the lane then takes whatever is already queued
// as its next batch, without waiting for more. An idle topic therefore costs no added latency (the first record is applied as soon as it
// arrives), and batches grow exactly when records arrive faster than batches are applied, which is when
// larger batches help: they coalesce more effects per row. Linger (Config.BatchMaxWait) is off by
// default; measurement showed no rate at which waiting for company beat taking what is there
// (docs/benchmarks.md).

// fetched is one outcome of FetchMessage: a record, or an error with how many fetches failed in a row.
type fetched struct {
	msg      kafkago.Message
	taken    time.Time // when FetchMessage returned it
	err      error
	failures int
}

// fetchInto calls r.FetchMessage until ctx ends, sending each outcome to out, which holds the lane's
// look-ahead (several partitions' fetchers share it; it is never closed). After a failure it waits an
// exponential backoff before fetching again: the client reconnects by itself, this only paces the
// retries. It returns once ctx ended.
func fetchInto(ctx context.Context, r fetcher, out chan<- fetched, minBackoff, maxBackoff time.Duration) {
	failures := 0
	for {
		m, err := r.FetchMessage(ctx)
		if ctx.Err() != nil {
			return
		}
		f := fetched{msg: m, taken: time.Now(), err: err}
		if err != nil {
			failures++
			f.failures = failures
		} else {
			failures = 0
		}
		select {
		case out <- f:
		case <-ctx.Done():
			return
		}
		if err != nil && !sleep(ctx, backoff(minBackoff, maxBackoff, failures)) {
			return
		}
	}
}

// batcher cuts the prefetched records into batches.
type batcher struct {
	in         <-chan fetched
	maxRecords int
	maxBytes   int
	linger     time.Duration
	carry      *fetched // taken from in but over the previous batch's bounds
}

// next returns the next batch: it waits for a first record as long as ctx lasts, then adds the records
// already queued, at most maxRecords and maxBytes (a record larger than maxBytes is a batch of its own),
// waiting up to linger for more when linger > 0. A fetch error ends the batch and is returned with it
// (the batch is still valid); an empty batch and ctx's error mean the loop is stopping.
func (b *batcher) next(ctx context.Context) ([]fetched, error) {
	var batch []fetched
	size := 0
	add := func(f fetched) bool {
		n := len(f.msg.Key) + len(f.msg.Value)
		if len(batch) > 0 && (len(batch) >= b.maxRecords || size+n > b.maxBytes) {
			b.carry = &f
			return false
		}
		batch = append(batch, f)
		size += n
		return true
	}
	if b.carry != nil {
		f := *b.carry
		b.carry = nil
		add(f)
	} else {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case f, ok := <-b.in:
			if !ok {
				return nil, ctx.Err()
			}
			if f.err != nil {
				return nil, &fetchError{f.err, f.failures}
			}
			add(f)
		}
	}
	var deadline <-chan time.Time
	if b.linger > 0 {
		t := time.NewTimer(b.linger)
		defer t.Stop()
		deadline = t.C
	}
	for len(batch) < b.maxRecords && size < b.maxBytes {
		var f fetched
		var ok bool
		if deadline == nil {
			select {
			case f, ok = <-b.in:
			default:
				return batch, nil // nothing more is queued: apply what is there
			}
		} else {
			select {
			case f, ok = <-b.in:
			case <-deadline:
				return batch, nil
			case <-ctx.Done():
				return batch, nil
			}
		}
		if !ok {
			return batch, nil
		}
		if f.err != nil {
			return batch, &fetchError{f.err, f.failures}
		}
		if !add(f) {
			break
		}
	}
	return batch, nil
}

// fetchError is a failed fetch and how many failed in a row.
type fetchError struct {
	err     error
	attempt int
}

func (e *fetchError) Error() string { return e.err.Error() }
func (e *fetchError) Unwrap() error { return e.err }
