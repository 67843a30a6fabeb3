package mysql_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	driver "github.com/go-sql-driver/mysql"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/testenv"
)

// betweenReadAndWrite is a BatchTx that runs meanwhile once, after the rows were read and before the
// batch takes its versions and writes them: what another transaction may do while a batch holds no
// lock on its rows (optimistic writes).
type betweenReadAndWrite struct {
	conversation.BatchTx
	meanwhile func()
}

func (b *betweenReadAndWrite) RowsForUpdate(ctx context.Context, keys []conversation.ConvKey) (map[conversation.ConvKey]conversation.Row, error) {
	rows, err := b.BatchTx.RowsForUpdate(ctx, keys)
	if f := b.meanwhile; err == nil && f != nil {
		b.meanwhile = nil
		f()
	}
	return rows, err
}

var bobWithAlice = conversation.ConvKey{UID: "bob", ChannelID: "alice", ChannelType: conversation.ChannelTypePerson}

func clearUnread(row conversation.Row, _ int64) (conversation.Row, bool) {
	return conversation.SetUnread(row, 0)
}

// bobsRow is bob's conversation with alice as stored.
func bobsRow(t *testing.T, s *mysql.Store) conversation.Row {
	t.Helper()
	r, ok := rowsOf(t, s, "bob")["alice"]
	if !ok {
		t.Fatal("bob has no conversation with alice")
	}
	return r
}

// With optimistic writes, an API mutation that commits between a batch's read of a row and its write
// is neither lost nor overwritten: the batch's write finds the row changed, the attempt is retried and applies its message
// on top of the mutation. Without the version check of the optimistic write the batch would write the
// row it read plus its message (unread 3), and the mutation would be lost.
func TestMutationBetweenReadAndWriteIsKept(t *testing.T) {
	for _, tt := range []struct {
		name      string
		opts      mysql.Options
		foundRows bool
	}{
		{"several statements per round trip", mysql.Options{OptimisticRowWrites: true}, false},
		{"one statement per round trip", mysql.Options{OptimisticRowWrites: true, OneStatementPerTrip: true}, false},
		{"row cache", mysql.Options{OptimisticRowWrites: true, RowCacheRows: 1000}, false},
		{"CLIENT_FOUND_ROWS", mysql.Options{OptimisticRowWrites: true}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := storeWith(t, tt.opts, tt.foundRows)
			ctx := context.Background()
			apply(t, s, personMsg("alice", "bob", 1), personMsg("alice", "bob", 2))
			var mutated conversation.Row
			meanwhile := func() {
				var err error
				if mutated, err = s.Update(ctx, bobWithAlice, clearUnread); err != nil {
					t.Errorf("update: %v", err)
				}
			}
			res, err := mysql.ApplyBatchThrough(ctx, s, []conversation.Event{personMsg("alice", "bob", 3)},
				func(tx conversation.BatchTx) conversation.BatchTx {
					return &betweenReadAndWrite{BatchTx: tx, meanwhile: meanwhile}
				}, map[string]time.Duration{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Applied != 1 {
				t.Fatalf("applied %d messages, want 1", res.Applied)
			}
			got := bobsRow(t, s)
			if got.Unread != 1 || got.LastMsgSeq != 3 {
				t.Fatalf("bob's row: unread %d, last seq %d; want 1 (cleared, then message 3) and 3", got.Unread, got.LastMsgSeq)
			}
			if mutated.Version == 0 || got.Version <= mutated.Version {
				t.Fatalf("bob's row has version %d, the mutation gave %d: the batch's must be above it", got.Version, mutated.Version)
			}
		})
	}
}

// A row the projector holds in its row cache (optimistic writes) and an API mutation changes afterwards is read again
// before the projector's next write of it: that write conflicts, the cache is emptied, and the retry
// applies the message on top of the mutation.
func TestMutationOfACachedRowIsKept(t *testing.T) {
	s, _ := testenv.Store(t, mysql.Options{OptimisticRowWrites: true, RowCacheRows: 1000})
	ctx := context.Background()
	apply(t, s, personMsg("alice", "bob", 1), personMsg("alice", "bob", 2)) // cached: unread 2
	if _, err := s.Update(ctx, bobWithAlice, clearUnread); err != nil {
		t.Fatal(err)
	}
	apply(t, s, personMsg("alice", "bob", 3))
	if got := bobsRow(t, s); got.Unread != 1 || got.LastMsgSeq != 3 {
		t.Fatalf("bob's row: unread %d, last seq %d; want 1 (cleared, then message 3) and 3", got.Unread, got.LastMsgSeq)
	}
}

// With optimistic writes, a channel found in the zero state is taken to have no rows, unread; should it
// have some after all (here its channels row was deleted by hand), the insert finds
// them and the retry reads them.
func TestRowsOfAFreshChannelAreFoundIfTheyExist(t *testing.T) {
	for _, tt := range []struct {
		optimistic, foundRows bool
	}{{true, false}, {true, true}} {
		t.Run(fmt.Sprintf("optimistic=%v clientFoundRows=%v", tt.optimistic, tt.foundRows), func(t *testing.T) {
			s := storeWith(t, mysql.Options{OptimisticRowWrites: tt.optimistic}, tt.foundRows)
			ctx := context.Background()
			apply(t, s, personMsg("alice", "bob", 1), personMsg("alice", "bob", 2))
			if _, err := s.DB().ExecContext(ctx, `DELETE FROM channels`); err != nil {
				t.Fatal(err)
			}
			apply(t, s, personMsg("alice", "bob", 3))
			if got := bobsRow(t, s); got.Unread != 3 || got.LastMsgSeq != 3 {
				t.Fatalf("bob's row: unread %d, last seq %d; want 3 and 3", got.Unread, got.LastMsgSeq)
			}
		})
	}
}

// storeWith opens a store on a fresh database; with foundRows its connections count rows found, not
// changed (CLIENT_FOUND_ROWS, as some drivers and proxies set it).
func storeWith(t *testing.T, opts mysql.Options, foundRows bool) *mysql.Store {
	t.Helper()
	s, dsn := testenv.Store(t, opts)
	if !foundRows {
		return s
	}
	cfg, err := driver.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ClientFoundRows = true
	s, err = mysql.Open(cfg.FormatDSN(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// A row the projector holds in its row cache and that its batches leave alone must still be what is
// stored: here bob's tombstone ignores an older message, is purged, and a message below its delete
// point comes next. A batch deciding on the cached tombstone would ignore that message too; the row is
// checked before the commit, so the batch sees the purge, as a store without the cache does.
func TestCachedRowLeftAloneIsChecked(t *testing.T) {
	ctx := context.Background()
	var got [2]map[string]conversation.Row
	for i, opts := range []mysql.Options{{OptimisticRowWrites: true, RowCacheRows: 1000}, {}} {
		s, _ := testenv.Store(t, opts)
		apply(t, s, personMsg("alice", "bob", 1), personMsg("alice", "bob", 2), personMsg("alice", "bob", 5))
		if _, err := s.Update(ctx, bobWithAlice, conversation.Delete); err != nil {
			t.Fatal(err)
		}
		apply(t, s, personMsg("alice", "bob", 3)) // below the delete point: bob's tombstone stays as it is
		if _, err := s.PurgeTombstones(ctx, time.Now().Add(time.Hour).UnixMilli(), 100); err != nil {
			t.Fatal(err)
		}
		apply(t, s, personMsg("alice", "bob", 4))
		got[i] = rowsOf(t, s, "bob")
	}
	cached, uncached := got[0]["alice"], got[1]["alice"]
	cached.Version, uncached.Version = 0, 0
	if len(got[0]) != len(got[1]) || cached != uncached {
		t.Fatalf("bob's conversations with the row cache %+v, without %+v", got[0], got[1])
	}
}

// Batches and API mutations racing on one row, as a lane and the API do: the lane retries a batch that
// failed on conflicts (its retries, not the store's, end a conflict streak). Every message's effect
// stays (the row ends at the last seq, unread counting what came after the last read) and no mutation
// is overwritten (the row's read point is at least the last mutation's), with locking reads (the
// default), optimistic writes and the row cache alike. With optimistic writes a mutation may conflict
// again and again while batches keep changing the row (the API would answer 5xx): counted, not failed.
func TestBatchesAndMutationsRacingOnOneRow(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts mysql.Options
	}{
		{"locking row reads (the default)", mysql.Options{}},
		{"optimistic", mysql.Options{OptimisticRowWrites: true}},
		{"row cache", mysql.Options{OptimisticRowWrites: true, RowCacheRows: 1000}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := testenv.Store(t, tt.opts)
			ctx := context.Background()
			const messages = 600
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
					r, err := s.Update(ctx, bobWithAlice, clearUnread)
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
			got := bobsRow(t, s)
			if got.LastMsgSeq != messages || got.Unread != got.LastMsgSeq-got.ReadedToMsgSeq || got.ReadedToMsgSeq < readTo {
				t.Fatalf("bob's row: last seq %d, unread %d, read to %d; want %d, last seq - read to, at least %d (the last mutation's)",
					got.LastMsgSeq, got.Unread, got.ReadedToMsgSeq, messages, readTo)
			}
			if attempts < 1 || (!tt.opts.OptimisticRowWrites && mutations < 5) {
				// With optimistic writes one call may spend the whole run in the store's retries.
				t.Fatalf("%d of %d mutations ran between the batches: the test tests nothing", mutations, attempts)
			}
			t.Logf("%d of %d mutations, %d batches retried by the caller", mutations, attempts, conflicts)
		})
	}
}
