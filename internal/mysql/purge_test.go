package mysql_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/testenv"
)

// lateOp is one step of a stream for a large channel: a batch, or an API mutation of one member.
type lateOp struct {
	batch  []conversation.Event
	uid    string
	delete bool // else clearUnread
}

// lateStream is a seeded stream for channels big0 and big1 (large at 3 members): joins, messages in
// shuffled chunks (so many arrive late), leaves and rejoins, and members reading and deleting between
// batches, so that followers have bases of every age and read and delete points on both sides of the
// late messages.
func lateStream(seed uint64, steps int) []lateOp {
	rng := rand.New(rand.NewPCG(seed, 7))
	uids := []string{"u0", "u1", "u2", "u3", "u4", "u5", "u6"}
	ops := []lateOp{{batch: []conversation.Event{members("big0", true, uids[:6]...), members("big1", true, uids[2:]...)}}}
	next := map[string]int64{"big0": 1, "big1": 1}
	var pending []conversation.Event
	for range steps {
		switch rng.IntN(6) {
		case 0, 1, 2:
			if len(pending) == 0 {
				for _, ch := range []string{"big0", "big1"} {
					n := 1 + rng.IntN(6)
					for range n {
						m := groupMsg(ch, next[ch], uids[rng.IntN(len(uids))])
						if rng.IntN(3) == 0 {
							m.Message.Header.RedDot = 0
						}
						pending = append(pending, m)
						next[ch]++
					}
				}
				rng.Shuffle(len(pending), func(i, j int) { pending[i], pending[j] = pending[j], pending[i] })
			}
			n := min(len(pending), 1+rng.IntN(3))
			ops = append(ops, lateOp{batch: pending[:n]})
			pending = pending[n:]
		case 3:
			ops = append(ops, lateOp{uid: uids[rng.IntN(len(uids))], delete: rng.IntN(3) == 0})
		case 4:
			ch := []string{"big0", "big1"}[rng.IntN(2)]
			ops = append(ops, lateOp{batch: []conversation.Event{members(ch, rng.IntN(3) > 0, uids[rng.IntN(len(uids))])}})
		default:
			ops = append(ops, lateOp{uid: uids[rng.IntN(len(uids))]})
		}
	}
	return ops
}

// do applies one op to s.
func (op lateOp) do(t *testing.T, s *mysql.Store) {
	t.Helper()
	if op.batch != nil {
		if _, err := s.ApplyBatch(context.Background(), op.batch); err != nil {
			t.Errorf("ApplyBatch: %v", err)
		}
		return
	}
	for _, ch := range []string{"big0", "big1"} {
		_, err := s.Update(context.Background(), conversation.ConvKey{UID: op.uid, ChannelID: ch, ChannelType: 2},
			func(r conversation.Row, now int64) (conversation.Row, bool) {
				if op.delete {
					return conversation.Delete(r, now)
				}
				return conversation.SetUnread(r, 0)
			})
		if err != nil && !errorsIsNotFound(err) {
			t.Errorf("Update: %v", err)
		}
	}
}

// purgeLate runs UnneededLate over every channel and deletes what it finds, with no grace period.
func purgeLate(t *testing.T, s *mysql.Store, limit int) int64 {
	t.Helper()
	var from conversation.ChannelKey
	var total int64
	for {
		found, next, err := s.UnneededLate(context.Background(), from, limit)
		if err != nil {
			t.Errorf("UnneededLate: %v", err)
			return total
		}
		n, err := s.DeleteLate(context.Background(), found)
		if err != nil {
			t.Errorf("DeleteLate: %v", err)
		}
		if n != int64(len(found)) {
			t.Errorf("deleted %d late messages, found %d", n, len(found))
		}
		total += n
		if next == (conversation.ChannelKey{}) {
			return total
		}
		from = next
	}
}

func lateCount(t *testing.T, s *mysql.Store) int {
	t.Helper()
	var n int
	if err := s.DB().QueryRowContext(context.Background(), `SELECT COUNT(*) FROM late_messages`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// sameAnswers fails unless every user's conversations (derived, tombstones included) are the same in
// both stores, versions and delete times aside.
func sameAnswers(t *testing.T, step int, got, want *mysql.Store) {
	t.Helper()
	sameConversations(t, step, "purged store", func(uid string) (map[string]conversation.Row, map[string]conversation.Row) {
		return rowsOf(t, got, uid), rowsOf(t, want, uid)
	})
}

// sameConversations fails unless, for each of the seven users of lateStream, read gives the same
// conversations on both sides (versions and delete times aside); what names the first side.
func sameConversations(t *testing.T, step int, what string, read func(uid string) (got, want map[string]conversation.Row)) {
	t.Helper()
	for i := range 7 {
		uid := fmt.Sprintf("u%d", i)
		g, w := read(uid)
		for ch := range w {
			if !sameFields(g[ch], w[ch]) {
				t.Fatalf("step %d, %s in %s: %s has %+v, want %+v", step, uid, ch, what, g[ch], w[ch])
			}
		}
		if len(g) != len(w) {
			t.Fatalf("step %d, %s: %s has %d conversations, want %d", step, uid, what, len(g), len(w))
		}
	}
}

// neededLate is the rule of internal/mysql/purge.go taken literally, follower by follower: the late
// messages some follower of their channel can still need.
func neededLate(t *testing.T, s *mysql.Store) map[[2]any]bool {
	t.Helper()
	ctx := context.Background()
	type late struct {
		ch         string
		arrival    int64
		seq        int64
		redDot     bool
		newestSeen int64
	}
	rows, err := s.DB().QueryContext(ctx, `SELECT l.channel_key, l.arrival, l.message_seq, l.red_dot, c.bc_max_seq
		FROM late_messages l JOIN channels c ON c.channel_key = l.channel_key AND c.channel_type = l.channel_type`)
	if err != nil {
		t.Fatal(err)
	}
	var lates []late
	for rows.Next() {
		var l late
		if err := rows.Scan(&l.ch, &l.arrival, &l.seq, &l.redDot, &l.newestSeen); err != nil {
			t.Fatal(err)
		}
		lates = append(lates, l)
	}
	rows.Close()
	need := map[[2]any]bool{}
	for i := range 7 {
		raw, _, err := s.RawUserRows(ctx, fmt.Sprintf("u%d", i))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range raw {
			if !f.Follows {
				continue
			}
			point, above := max(f.ReadedToMsgSeq, f.DeletedAtSeq, f.Base.Floor), f.LastMsgSeq
			if f.Deleted {
				above = f.DeletedAtSeq
			}
			if f.Hidden {
				point, above = f.Base.Floor, 0
			}
			top := -1
			for j, l := range lates {
				if l.ch == f.ChannelID && l.arrival > f.Base.Arrivals && (top < 0 || l.seq > lates[top].seq) {
					top = j
				}
			}
			for j, l := range lates {
				if l.ch != f.ChannelID || l.arrival <= f.Base.Arrivals {
					continue
				}
				if (l.redDot && l.seq <= point) || (j == top && f.Base.MaxSeq >= l.newestSeen && l.seq > above) {
					need[[2]any{l.ch, l.arrival}] = true
				}
			}
		}
	}
	return need
}

// TestLatePurgeChangesNoAnswer runs seeded streams on two stores, purging late messages of one after
// every step: every member's conversations stay those of the store never purged, and after each purge
// exactly the late messages some follower can need are left.
func TestLatePurgeChangesNoAnswer(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			opts := mysql.Options{LargeChannelMembers: 3}
			purged, _ := testenv.Store(t, opts)
			control, _ := testenv.Store(t, opts)
			var total int64
			for i, op := range lateStream(seed, 300) {
				op.do(t, purged)
				op.do(t, control)
				total += purgeLate(t, purged, 1+i%5)
				sameAnswers(t, i, purged, control)
				if i%25 == 0 {
					need := neededLate(t, purged)
					if n := lateCount(t, purged); n != len(need) {
						t.Fatalf("step %d: %d late messages left, %d needed", i, n, len(need))
					}
				}
			}
			if total == 0 || lateCount(t, control) == 0 {
				t.Fatalf("purged %d late messages of %d: the stream tests nothing", total, lateCount(t, control))
			}
			t.Logf("purged %d of %d late messages", total, lateCount(t, control))
		})
	}
}

// TestLatePurgeConcurrentWithBatches purges in a loop while batches and API mutations rebase followers
// of the same channels: afterwards every answer is that of the same stream applied without purging.
func TestLatePurgeConcurrentWithBatches(t *testing.T) {
	opts := mysql.Options{LargeChannelMembers: 3}
	purged, _ := testenv.Store(t, opts)
	control, _ := testenv.Store(t, opts)
	ops := lateStream(42, 600)
	stop := make(chan struct{})
	var purger sync.WaitGroup
	var total int64
	purger.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			total += purgeLate(t, purged, 3)
		}
	})
	for _, op := range ops {
		op.do(t, purged)
	}
	close(stop)
	purger.Wait()
	total += purgeLate(t, purged, 1000)
	for _, op := range ops {
		op.do(t, control)
	}
	sameAnswers(t, len(ops), purged, control)
	if n, need := lateCount(t, purged), neededLate(t, purged); n != len(need) {
		t.Fatalf("%d late messages left, %d needed", n, len(need))
	}
	t.Logf("purged %d of %d late messages while batches ran", total, lateCount(t, control))
}

// visible is what a sync can show of uid's conversations: hidden rows left out, and whether a row
// follows a large channel (the only thing fan-out and read-time fan-out store differently) cleared.
func visible(t *testing.T, s *mysql.Store, uid string) map[string]conversation.Row {
	t.Helper()
	out := map[string]conversation.Row{}
	for ch, r := range rowsOf(t, s, uid) {
		if !r.Hidden {
			r.Follows = false
			out[ch] = r
		}
	}
	return out
}

// TestFollowerTombstonePurgeIsFanOutPurge runs seeded streams on a store with large channels and on one
// with per-member fan-out only, purging every tombstone of both now and then: a purged follower
// tombstone must then answer exactly as a purged plain tombstone does, before and after later
// messages, and late messages are purged beside it.
func TestFollowerTombstonePurgeIsFanOutPurge(t *testing.T) {
	ctx := context.Background()
	for seed := range uint64(3) {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			large, _ := testenv.Store(t, mysql.Options{LargeChannelMembers: 3})
			fanout, _ := testenv.Store(t, mysql.Options{})
			var purged int64
			for i, op := range lateStream(100+seed, 300) {
				op.do(t, large)
				op.do(t, fanout)
				if i%7 == 6 {
					before := time.Now().Add(time.Hour).UnixMilli()
					n, err := large.PurgeTombstones(ctx, before, 1000)
					if err != nil {
						t.Fatal(err)
					}
					f, err := large.PurgeFollowerTombstones(ctx, before, 1000)
					if err != nil {
						t.Fatal(err)
					}
					m, err := fanout.PurgeTombstones(ctx, before, 1000)
					if err != nil {
						t.Fatal(err)
					}
					if n+f != m {
						t.Fatalf("step %d: purged %d plain and %d follower tombstones, fan-out purged %d", i, n, f, m)
					}
					purged += f
					purgeLate(t, large, 1000)
				}
				sameConversations(t, i, "large store", func(uid string) (map[string]conversation.Row, map[string]conversation.Row) {
					return visible(t, large, uid), visible(t, fanout, uid)
				})
			}
			if purged == 0 {
				t.Fatal("no follower tombstone was purged: the stream tests nothing")
			}
			t.Logf("purged %d follower tombstones", purged)
		})
	}
}
