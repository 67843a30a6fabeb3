package refmodel_test

import (
	"context"
	"database/sql"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/refmodel"
	"github.com/convsync/conversations/internal/testenv"
	"github.com/convsync/conversations/internal/trafficgen"
)

// The read model sharded by user on Vitess (docs/proofs.md, "Sharded by user"), through vtgate: two
// shards, each fed by its own simulated projector group with its own offsets, that crash (the batch is
// committed on that shard, its offsets are not) at random points, so the state a kill -9 between two
// shards' commits leaves is met again and again; two workers of one shard's group now and then apply
// the same partition at once (a rebalance); API mutations land on one shard's users while the other
// shard's batches commit. At the end of each phase every row, version and sync must match the model,
// and the two shards' copies of the channel tables must be equal. make test-vitess runs it (vtgate of
// deploy/local/vitess.sh); elsewhere it skips.

func TestShardedMatchesModel(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) { shardedMatchesModel(t, seed, 0) })
	}
	t.Run("large channels, seed 4", func(t *testing.T) { shardedMatchesModel(t, 4, 3) })
}

func shardedMatchesModel(t *testing.T, seed uint64, large int) {
	dsn, shards := testenv.VitessKeyspace(t)
	testenv.MySQLDSN(t) // empties the tables
	const window = 12
	ctx := context.Background()
	store, err := mysql.OpenSharded(dsn, shards, mysql.Options{RecentsWindow: window, LargeChannelMembers: large})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	emptyShards(ctx, t, store)
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	model := refmodel.New(refmodel.Options{Window: window})
	recs, _, err := trafficgen.Generate(trafficgen.Differential(2400, seed))
	if err != nil {
		t.Fatal(err)
	}
	skip := conversation.DefaultSkipSet()
	rng := rand.New(rand.NewPCG(seed, 99))
	third := len(recs) / 3
	var stats shardStats
	var versions refmodel.Versions
	for phase, part := range [][]trafficgen.Record{recs[:third], recs[third : 2*third], recs[2*third:]} {
		parts := partitionEvents(t, &skip, part)
		if phase == 0 {
			runShards(ctx, t, store, parts, []int{0, 1}, seed, &stats)
		} else {
			// Each shard's users see the API mutations before the phase's records, in the store as in
			// the model; shard 0's mutations land while shard 1's group applies the phase (they never
			// share a row or a lock), then shard 0's group applies it.
			mutateShard(ctx, t, store, model, rng, 1, 30, &stats)
			var wg sync.WaitGroup
			wg.Go(func() { mutateShard(ctx, t, store, model, rng, 0, 30, &stats) })
			runShards(ctx, t, store, parts, []int{1}, seed+uint64(10*phase+1), &stats)
			wg.Wait()
			runShards(ctx, t, store, parts, []int{0}, seed+uint64(10*phase), &stats)
		}
		for _, r := range part {
			_ = model.Apply(r.Value)
		}
		checkSharded(ctx, t, store, db, model, large > 0)
		if large == 0 { // contract §3.6 across phases: what changed has a version above the user's before
			versions = checkVersionsSince(ctx, t, db, model, phase, versions)
		}
		t.Logf("phase %d: matches the model", phase+1)
	}
	t.Logf("seed %d: batches=%d crashes between shard commits=%d overlapping (rebalance) batches=%d mutations=%d",
		seed, stats.batches, stats.crashes, stats.overlaps, stats.mutations)
	if stats.crashes == 0 || stats.mutations == 0 {
		t.Fatal("no crash or no mutation happened: the test tests nothing")
	}
}

type shardStats struct {
	mu                                    sync.Mutex
	batches, crashes, overlaps, mutations int
}

func (s *shardStats) add(batches, crashes, overlaps, mutations int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches += batches
	s.crashes += crashes
	s.overlaps += overlaps
	s.mutations += mutations
}

// emptyShards empties every shard's tables: testenv empties the one TEST_VITESS_DSN targets.
func emptyShards(ctx context.Context, t *testing.T, store *mysql.Sharded) {
	for _, st := range store.Shards() {
		for _, table := range []string{"conversations", "user_versions", "channels", "messages", "late_messages", "channel_members"} {
			if _, err := st.DB().ExecContext(ctx, "DELETE FROM "+table); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// partitionEvents decodes recs into four partitions by key, dropping what the projector drops.
func partitionEvents(t *testing.T, skip *conversation.SkipSet, recs []trafficgen.Record) [][]conversation.Event {
	const partitions = 4
	parts := make([][]conversation.Event, partitions)
	for _, r := range recs {
		ev, err := conversation.DecodeEvent(r.Value, time.Now(), 0)
		if err != nil {
			t.Fatalf("decode %s: %v", r.Value, err)
		}
		h := fnv.New32a()
		h.Write(r.Key)
		if projected, _ := skip.Filter([]conversation.Event{ev}); len(projected) == 1 {
			parts[h.Sum32()%partitions] = append(parts[h.Sum32()%partitions], ev)
		}
	}
	return parts
}

// runShards runs the groups of the given shards over every partition until each has applied all of
// it: per partition, batches of random size from the group's offset; after a batch the group's offset
// commit is lost one time in four (a crash after the shard's commit: the other shards may or may not
// have committed theirs), and one batch in ten is applied by two workers at once.
func runShards(ctx context.Context, t *testing.T, store *mysql.Sharded, parts [][]conversation.Event, shards []int, seed uint64, stats *shardStats) {
	var wg sync.WaitGroup
	errs := make(chan error, len(shards)*len(parts))
	for _, s := range shards {
		st := store.Shards()[s]
		for p, evs := range parts {
			rng := rand.New(rand.NewPCG(seed, uint64(100*s+p)))
			wg.Go(func() {
				var batches, crashes, overlaps int
				for off := 0; off < len(evs); {
					hi := min(len(evs), off+1+rng.IntN(120))
					if rng.IntN(10) == 0 {
						var two sync.WaitGroup
						var e1, e2 error
						two.Go(func() { _, e1 = st.ApplyBatch(ctx, evs[off:hi]) })
						two.Go(func() { _, e2 = st.ApplyBatch(ctx, evs[off:min(len(evs), hi+rng.IntN(20))]) })
						two.Wait()
						if e1 != nil || e2 != nil {
							errs <- fmt.Errorf("shard %d partition %d: %w", s, p, errorsJoin(e1, e2))
							return
						}
						overlaps++
					} else if _, err := st.ApplyBatch(ctx, evs[off:hi]); err != nil {
						errs <- fmt.Errorf("shard %d partition %d: %w", s, p, err)
						return
					}
					batches++
					if rng.IntN(4) == 0 {
						crashes++ // the offset stays: the batch comes again, whole or with more
						continue
					}
					off = hi
				}
				stats.add(batches, crashes, overlaps, 0)
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func errorsJoin(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// mutateShard makes n API calls (delete, setUnread, clearUnread) on random rows of the shard's users,
// through the sharded store and the model alike.
func mutateShard(ctx context.Context, t *testing.T, store *mysql.Sharded, model *refmodel.Model, rng *rand.Rand, shard, n int, stats *shardStats) {
	var rows []refmodel.Row
	for _, r := range model.Rows() {
		if store.For(r.UID) == store.Shards()[shard] {
			rows = append(rows, r)
		}
	}
	if len(rows) == 0 {
		return
	}
	for range n {
		r := rows[rng.IntN(len(rows))]
		key, change := randomChange(model, rng, r)
		if _, err := store.Update(ctx, key, change); err != nil {
			t.Errorf("update %v: %v", key, err)
			return
		}
	}
	stats.add(0, 0, 0, n)
}

// checkSharded compares the sharded read model with the model: the rows and versions of every shard
// through the keyspace (vtgate scatters the reads of conversations and user_versions), every user's
// sync from the user's shard, and the shards' copies of the channel tables with each other (the
// keyspace's reads of those come from one of them, compared with the model by refmodel.Compare).
func checkSharded(ctx context.Context, t *testing.T, store *mysql.Sharded, db *sql.DB, model *refmodel.Model, large bool) {
	t.Helper()
	if !large { // with large channels the tables hold followers' bases: what sync derives is compared
		rep, err := refmodel.Compare(ctx, db, model)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Mismatches != 0 {
			t.Fatalf("sharded read model differs from the model: %s", rep)
		}
	}
	rep, err := refmodel.CompareSync(ctx, db, store.UserRows, model)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mismatches != 0 {
		t.Fatalf("sync differs from the model: %s", rep)
	}
	queries := []string{
		`SELECT channel_key, channel_type, message_seq, message_id FROM messages ORDER BY channel_key, channel_type, message_seq`,
		`SELECT channel_id, channel_type, uid FROM channel_members ORDER BY channel_id, channel_type, uid`,
		`SELECT channel_key, channel_type, max_seq, min_kept_seq, members FROM channels ORDER BY channel_key, channel_type`,
	}
	if !large {
		// Where a large channel's batches fall decides when it crosses the threshold and which of its
		// messages are recorded as late, so two shards' groups, batching differently, may store a large
		// channel differently while deriving the same conversations (compared above).
		queries = append(queries,
			`SELECT channel_key, channel_type, large, arrivals, red_dots, bc_max_seq FROM channels ORDER BY channel_key, channel_type`)
	}
	for _, q := range queries {
		var copies [][]string
		for _, st := range store.Shards() {
			copies = append(copies, dump(ctx, t, st.DB().DB, q))
		}
		if !slices.Equal(copies[0], copies[1]) {
			t.Fatalf("the shards' copies differ (%s): %d and %d rows", q, len(copies[0]), len(copies[1]))
		}
	}
}

func dump(ctx context.Context, t *testing.T, db *sql.DB, q string) []string {
	rs, err := db.QueryContext(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	cols, _ := rs.Columns()
	var out []string
	for rs.Next() {
		vals := make([]sql.RawBytes, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rs.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, v := range vals {
			b.WriteString(string(v) + "\x00")
		}
		out = append(out, b.String())
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
