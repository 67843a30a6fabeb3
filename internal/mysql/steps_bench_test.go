package mysql_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/testenv"
	"github.com/convsync/conversations/internal/trafficgen"
)

// abWorkload is a generated stream cut into batches, with each batch's logical row updates (one per
// message and recipient: what the raw-upsert baseline writes).
type abWorkload struct {
	batches [][]conversation.Event
	rows    [][]conversation.Row
}

func newABWorkload(tb testing.TB, cfg trafficgen.Config, batch int) abWorkload {
	recs, _, err := trafficgen.Generate(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	d, err := trafficgen.Decode(recs, time.Unix(1700000000, 0))
	if err != nil {
		tb.Fatal(err)
	}
	skip := conversation.DefaultSkipSet()
	var w abWorkload
	var evs []conversation.Event
	var rows []conversation.Row
	for i, e := range d.Events {
		if e.Message != nil && !skip.Projected(e.Message) {
			continue // RunBatch takes projected events only
		}
		evs, rows = append(evs, e), append(rows, d.Rows[i]...)
		if len(evs) == batch {
			w.batches, w.rows = append(w.batches, evs), append(w.rows, rows)
			evs, rows = nil, nil
		}
	}
	if len(evs) > 0 {
		w.batches, w.rows = append(w.batches, evs), append(w.rows, rows)
	}
	return w
}

// abCase is a workload cut into batches of a size.
type abCase struct {
	name  string
	cfg   trafficgen.Config
	batch int
}

// abCases are W1 and W2 in the batch sizes a lane applies them in under a backlog.
var abCases = []abCase{
	{"w1", trafficgen.W1(30_000, 1), 2500},
	{"w2", trafficgen.W2(4_000, 2), 500},
}

// stepTimer is a BatchTx that times each method of the one it wraps.
type stepTimer struct {
	tx    conversation.BatchTx
	spent map[string]time.Duration
}

func (s stepTimer) since(step string, start time.Time) { s.spent[step] += time.Since(start) }

func (s stepTimer) LockChannels(ctx context.Context, keys []conversation.ChannelKey) (map[conversation.ChannelKey]conversation.ChannelState, error) {
	defer s.since("LockChannels", time.Now())
	return s.tx.LockChannels(ctx, keys)
}

func (s stepTimer) AppliedMessages(ctx context.Context, keys []conversation.MessageKey) (map[conversation.MessageKey]bool, error) {
	defer s.since("AppliedMessages", time.Now())
	return s.tx.AppliedMessages(ctx, keys)
}

func (s stepTimer) Members(ctx context.Context, whole []conversation.ChannelKey, named []conversation.Member) (map[conversation.ChannelKey][]string, error) {
	defer s.since("Members", time.Now())
	return s.tx.Members(ctx, whole, named)
}

func (s stepTimer) RowsForUpdate(ctx context.Context, keys []conversation.ConvKey) (map[conversation.ConvKey]conversation.Row, error) {
	defer s.since("RowsForUpdate", time.Now())
	return s.tx.RowsForUpdate(ctx, keys)
}

func (s stepTimer) LateSince(ctx context.Context, since map[conversation.ChannelKey]int64) (map[conversation.ChannelKey][]conversation.LateMsg, error) {
	defer s.since("LateSince", time.Now())
	return s.tx.LateSince(ctx, since)
}

func (s stepTimer) BumpVersions(ctx context.Context, uids []string) (map[string]int64, error) {
	defer s.since("BumpVersions", time.Now())
	return s.tx.BumpVersions(ctx, uids)
}

func (s stepTimer) WriteRows(ctx context.Context, rows []conversation.Row) error {
	defer s.since("WriteRows", time.Now())
	return s.tx.WriteRows(ctx, rows)
}

func (s stepTimer) WriteChannels(ctx context.Context, w conversation.ChannelWrites) error {
	defer s.since("WriteChannels", time.Now())
	return s.tx.WriteChannels(ctx, w)
}

var abSteps = []string{"begin", "LockChannels", "AppliedMessages", "Members", "RowsForUpdate", "LateSince", "BumpVersions", "WriteRows",
	"WriteChannels", "flush", "commit", "retry_wait"}

// rawUpserts writes rows like cmd/bench's baseline (baselineUpserts): plain multi-row upserts of eight
// columns, 500 rows per statement, no transaction.
func rawUpserts(ctx context.Context, s *mysql.Store, rows []conversation.Row, version int64) error {
	const perStatement = 500
	for lo := 0; lo < len(rows); lo += perStatement {
		part := slices.Clone(rows[lo:min(lo+perStatement, len(rows))])
		slices.SortFunc(part, func(a, b conversation.Row) int { return a.ConvKey.Compare(b.ConvKey) })
		args := make([]any, 0, 8*len(part))
		for _, r := range part {
			args = append(args, r.UID, r.ChannelID, r.ChannelType, r.Unread, r.LastMsgSeq, r.LastClientMsgNo, r.Timestamp, version)
		}
		if _, err := s.DB().ExecContext(ctx, `INSERT INTO conversations (uid, channel_id, channel_type, unread, last_msg_seq, last_client_msg_no, last_msg_at, version)
			VALUES `+strings.TrimSuffix(strings.Repeat("(?,?,?,?,?,?,?,?),", len(part)), ",")+` ON DUPLICATE KEY UPDATE unread = unread + VALUES(unread),
			last_msg_seq = GREATEST(last_msg_seq, VALUES(last_msg_seq)), last_client_msg_no = VALUES(last_client_msg_no),
			last_msg_at = VALUES(last_msg_at), version = VALUES(version)`, args...); err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkBatchSteps applies W1 and W2 batches (and the peer workload's in 5-event batches) through the
// store, alternating batch by batch with the raw upsert of the same logical rows (cmd/bench's baseline),
// and reports the store's rows/s against the raw upsert's and its time per BatchTx method: where a
// batch's time goes beside what the baseline pays. (The A/B harness that measured optimistic row writes
// and a row cache against the locking read, issue 16, was this benchmark with those variants; both
// were removed with them: docs/benchmarks.md.) Run with -benchtime 1x.
func BenchmarkBatchSteps(b *testing.B) {
	// The peer workload's first 2,000 messages in batches of 5: the small batches of a quiet stream.
	peer5 := abCase{"peer5", func() trafficgen.Config { c := trafficgen.Peer(); c.Messages = 2_000; return c }(), 5}
	for _, wl := range append(abCases, peer5) {
		b.Run(wl.name, func(b *testing.B) {
			w := newABWorkload(b, wl.cfg, wl.batch)
			for range b.N {
				batchSteps(context.Background(), b, w)
			}
		})
	}
}

func batchSteps(ctx context.Context, b *testing.B, w abWorkload) {
	store, _ := testenv.Store(b, mysql.Options{})
	raw, _ := testenv.Store(b, mysql.Options{})
	spent := map[string]time.Duration{}
	timed := mysql.WithBatchTiming(ctx, func(tx conversation.BatchTx) conversation.BatchTx {
		return stepTimer{tx: tx, spent: spent}
	}, func(step string, d time.Duration) { spent[step] += d })
	var total, rawTotal time.Duration
	var logical int
	rng := rand.New(rand.NewPCG(1, 2))
	for bi, evs := range w.batches {
		logical += len(w.rows[bi])
		for _, first := range rng.Perm(2) {
			start := time.Now()
			if first == 0 {
				if err := rawUpserts(ctx, raw, w.rows[bi], int64(bi+1)); err != nil {
					b.Fatal(err)
				}
				rawTotal += time.Since(start)
				continue
			}
			if _, err := store.ApplyBatch(timed, evs); err != nil {
				b.Fatal(err)
			}
			total += time.Since(start)
		}
	}
	rawRate, rate := float64(logical)/rawTotal.Seconds(), float64(logical)/total.Seconds()
	var parts []string
	var steps time.Duration
	for _, st := range abSteps {
		steps += spent[st]
		if d := spent[st]; d > 0 {
			parts = append(parts, fmt.Sprintf("%s %.0f%%", st, 100*d.Seconds()/total.Seconds()))
		}
	}
	parts = append(parts, fmt.Sprintf("plan and Go %.0f%%", 100*(total-steps).Seconds()/total.Seconds()))
	fmt.Printf("%d batches, %d logical rows; raw upsert %.0f rows/s (%v); store %.0f rows/s, %.2f of raw (%v): %s\n",
		len(w.batches), logical, rawRate, rawTotal.Round(time.Millisecond), rate, rate/rawRate, total.Round(time.Millisecond),
		strings.Join(parts, ", "))
	b.ReportMetric(rate/rawRate, "store_vs_raw")
}

// BenchmarkFollowerColumns bounds what moving the followers' six columns (follows, hidden, base_*)
// out of conversations could gain: the same batches of rows upserted, alternately, into conversations
// and into a copy without those columns (its version index (uid, version)), both as cmd/bench's raw
// upsert (eight columns) and as the store's whole-row upsert. Run with -benchtime 1x.
func BenchmarkFollowerColumns(b *testing.B) {
	for _, wl := range abCases {
		b.Run(wl.name, func(b *testing.B) {
			w := newABWorkload(b, wl.cfg, wl.batch)
			ctx := context.Background()
			for range b.N {
				s, _ := testenv.Store(b, mysql.Options{})
				db := s.DB()
				for _, q := range []string{`CREATE TABLE narrow LIKE conversations`,
					`ALTER TABLE narrow DROP INDEX conversations_by_version, DROP COLUMN follows, DROP COLUMN hidden,
					DROP COLUMN base_arrivals, DROP COLUMN base_red_dots, DROP COLUMN base_max_seq, DROP COLUMN base_floor,
					ADD INDEX narrow_by_version (uid, version)`} {
					if _, err := db.ExecContext(ctx, q); err != nil {
						b.Fatal(err)
					}
				}
				wide := []string{"uid", "channel_id", "channel_type", "unread", "readed_to_msg_seq", "last_msg_seq", "last_client_msg_no",
					"last_msg_at", "is_deleted", "deleted_at_seq", "deleted_at_ms", "version", "follows", "hidden", "base_arrivals",
					"base_red_dots", "base_max_seq", "base_floor"}
				upsert := func(table string, cols []string, n int) string {
					var upd []string
					for _, c := range cols[3:] {
						upd = append(upd, c+" = VALUES("+c+")")
					}
					return `INSERT INTO ` + table + ` (` + strings.Join(cols, ", ") + `) VALUES ` +
						strings.TrimSuffix(strings.Repeat("("+strings.TrimSuffix(strings.Repeat("?,", len(cols)), ",")+"),", n), ",") +
						` ON DUPLICATE KEY UPDATE ` + strings.Join(upd, ", ")
				}
				spent := map[string]time.Duration{}
				rng := rand.New(rand.NewPCG(3, 4))
				var n int
				for bi, rows := range w.rows {
					// Coalesced per key like a batch's writes, sorted.
					byKey := map[conversation.ConvKey]conversation.Row{}
					for _, r := range rows {
						c := byKey[r.ConvKey]
						r.Unread += c.Unread
						r.Version = int64(bi + 1)
						byKey[r.ConvKey] = r
					}
					part := make([]conversation.Row, 0, len(byKey))
					for _, r := range byKey {
						part = append(part, r)
					}
					slices.SortFunc(part, func(a, b conversation.Row) int { return a.ConvKey.Compare(b.ConvKey) })
					n += len(part)
					for _, i := range rng.Perm(4) {
						table := map[bool]string{false: "conversations", true: "narrow"}[i%2 == 1]
						whole := i >= 2
						name := map[bool]string{false: "raw", true: "whole"}[whole] + " " + table
						start := time.Now()
						for lo := 0; lo < len(part); lo += 500 {
							chunk := part[lo:min(lo+500, len(part))]
							var args []any
							cols := wide[:12]
							if table == "conversations" {
								cols = wide
							}
							for _, r := range chunk {
								if !whole {
									args = append(args, r.UID, r.ChannelID, r.ChannelType, r.Unread, r.LastMsgSeq, r.LastClientMsgNo, r.Timestamp, r.Version)
									continue
								}
								args = append(args, r.UID, r.ChannelID, r.ChannelType, r.Unread, r.ReadedToMsgSeq, r.LastMsgSeq, r.LastClientMsgNo,
									r.Timestamp, r.Deleted, r.DeletedAtSeq, r.DeletedAtMS, r.Version)
								if table == "conversations" {
									args = append(args, r.Follows, r.Hidden, r.Base.Arrivals, r.Base.RedDots, r.Base.MaxSeq, r.Base.Floor)
								}
							}
							q := upsert(table, cols, len(chunk))
							if !whole {
								q = upsert(table, []string{"uid", "channel_id", "channel_type", "unread", "last_msg_seq", "last_client_msg_no", "last_msg_at", "version"}, len(chunk))
							}
							if _, err := db.ExecContext(ctx, q, args...); err != nil {
								b.Fatal(err)
							}
						}
						spent[name] += time.Since(start)
					}
				}
				for _, kind := range []string{"raw", "whole"} {
					w, nr := spent[kind+" conversations"], spent[kind+" narrow"]
					fmt.Printf("%s upsert of %d rows: conversations %v, without the followers' columns %v: %.2f×\n", kind, n,
						w.Round(time.Millisecond), nr.Round(time.Millisecond), w.Seconds()/nr.Seconds())
					b.ReportMetric(w.Seconds()/nr.Seconds(), kind+"_wide_over_narrow")
				}
			}
		})
	}
}
