package refmodel_test

import (
	"context"
	"database/sql"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/refmodel"
	"github.com/convsync/conversations/internal/testenv"
	"github.com/convsync/conversations/internal/trafficgen"
)

// TestStoreMatchesModel is the differential test one level below the e2e suite: a seeded chaotic stream,
// split into partitions by key like Kafka would, applied by concurrent workers in random batches with
// random redeliveries straight through mysql.Store.ApplyBatch, with API mutations between its three
// phases, must leave the database equal to the model, with versions that respect contract §3.6 from
// phase to phase.
func TestStoreMatchesModel(t *testing.T) {
	store, db, model := openDifferential(t, mysql.Options{})
	ctx := context.Background()
	skip := conversation.DefaultSkipSet()

	cfg := trafficgen.Differential(3000, 7)
	recs, stats, err := trafficgen.Generate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	third := len(recs) / 3
	var versions refmodel.Versions
	rng := rand.New(rand.NewPCG(7, 7))
	for phase, part := range [][]trafficgen.Record{recs[:third], recs[third : 2*third], recs[2*third:]} {
		if phase > 0 {
			mutate(ctx, t, store, model, rng, 40)
		}
		for _, r := range part {
			_ = model.Apply(r.Value) // every record of a clean Differential stream is valid
		}
		applyPartitioned(ctx, t, store, &skip, part, uint64(phase))
		rep, err := refmodel.Compare(ctx, db, model)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("phase %d: %s", phase+1, rep)
		if rep.Mismatches != 0 {
			t.Fatalf("database differs from the model")
		}
		versions = checkVersionsSince(ctx, t, db, model, phase, versions)
	}
	c := model.Counts()
	t.Logf("records=%d messages=%d duplicates=%d reordered=%d not_projected=%d memberships=%d",
		len(recs), c.Messages, stats.Duplicates, stats.Reordered, c.NotProjected, c.Memberships)
}

// checkVersionsSince checks contract §3.6 across phases: after the first phase (phase > 0), what
// changed since before has a version above its user's then. It returns the versions now, the next
// phase's before.
func checkVersionsSince(ctx context.Context, t *testing.T, db *sql.DB, model *refmodel.Model, phase int, before refmodel.Versions) refmodel.Versions {
	t.Helper()
	if phase > 0 {
		bad, err := refmodel.CheckVersionsSince(ctx, db, model, before)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bad {
			t.Error(b)
		}
	}
	now, err := refmodel.ReadVersions(ctx, db, model)
	if err != nil {
		t.Fatal(err)
	}
	return now
}

// openDifferential opens a fresh store with opts and a window of 12 (small, so pruning and the
// watermark are exercised), a connection to its database, and a model with the same window.
func openDifferential(t *testing.T, opts mysql.Options) (*mysql.Store, *sql.DB, *refmodel.Model) {
	t.Helper()
	const window = 12
	opts.RecentsWindow = window
	store, dsn := testenv.Store(t, opts)
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return store, db, refmodel.New(refmodel.Options{Window: window})
}

// applyPartitioned applies recs with four concurrent workers, one per key-hash partition, in batches of
// random size, redelivering a random suffix of what was applied now and then (at-least-once delivery).
// Like the projector, it drops what has no effect by rule (skip) before the store.
func applyPartitioned(ctx context.Context, t *testing.T, store *mysql.Store, skip *conversation.SkipSet, recs []trafficgen.Record, seed uint64) {
	t.Helper()
	parts := partitionEvents(t, skip, recs)
	var wg sync.WaitGroup
	errs := make([]error, len(parts))
	for p, evs := range parts {
		rng := rand.New(rand.NewPCG(seed, uint64(p)))
		wg.Go(func() { errs[p] = applyAll(ctx, store, evs, rng) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// applyAll applies one partition's events in order, batch by batch.
func applyAll(ctx context.Context, store *mysql.Store, evs []conversation.Event, rng *rand.Rand) error {
	for lo := 0; lo < len(evs); {
		hi := min(len(evs), lo+1+rng.IntN(200))
		if _, err := store.ApplyBatch(ctx, evs[lo:hi]); err != nil {
			return err
		}
		if rng.IntN(5) == 0 { // the offset commit was lost: part of the history comes again
			from := rng.IntN(hi)
			if _, err := store.ApplyBatch(ctx, evs[from:hi]); err != nil {
				return err
			}
		}
		lo = hi
	}
	return nil
}

// mutate makes n API calls on random rows, through the store and the model alike: deletes (so later
// messages revive tombstones), setUnread to random counts and clearUnread.
func mutate(ctx context.Context, t *testing.T, store *mysql.Store, model *refmodel.Model, rng *rand.Rand, n int) {
	t.Helper()
	rows := model.Rows()
	for range n {
		r := rows[rng.IntN(len(rows))]
		key, change := randomChange(model, rng, r)
		if _, err := store.Update(ctx, key, change); err != nil {
			t.Fatalf("update %v: %v", key, err)
		}
	}
}

// randomChange picks one API call on row r (delete, setUnread to a random count or clearUnread), makes
// it in the model and returns it for the store to make.
func randomChange(model *refmodel.Model, rng *rand.Rand, r refmodel.Row) (conversation.ConvKey, func(conversation.Row, int64) (conversation.Row, bool)) {
	key := conversation.ConvKey{UID: r.UID, ChannelID: r.ChannelID, ChannelType: r.ChannelType}
	switch rng.IntN(3) {
	case 0:
		model.Delete(r.UID, r.ChannelID, r.ChannelType)
		return key, func(row conversation.Row, now int64) (conversation.Row, bool) { return conversation.Delete(row, now) }
	case 1:
		unread := int64(rng.IntN(5))
		model.SetUnread(r.UID, r.ChannelID, r.ChannelType, unread)
		return key, func(row conversation.Row, _ int64) (conversation.Row, bool) {
			return conversation.SetUnread(row, unread)
		}
	default:
		model.ClearUnread(r.UID, r.ChannelID, r.ChannelType)
		return key, func(row conversation.Row, _ int64) (conversation.Row, bool) { return conversation.SetUnread(row, 0) }
	}
}

// TestStoreMatchesModelLarge is TestStoreMatchesModel with large channels at a threshold of 3 members
// (contract §5), and at 5 both ways: groups fan out at read time and cross the threshold with churn. The
// database's tables then hold followers' bases, not conversations, so what is compared is what sync
// reads: Store.UserRows of every user, against the model's rows (versions excepted).
func TestStoreMatchesModelLarge(t *testing.T) {
	for _, tc := range []struct {
		name         string
		enter, leave int
	}{{"threshold 3", 3, 0}, {"threshold 5 both ways", 5, 5}} {
		t.Run(tc.name, func(t *testing.T) { storeMatchesModelLarge(t, tc.enter, tc.leave) })
	}
}

func storeMatchesModelLarge(t *testing.T, enter, leave int) {
	store, db, model := openDifferential(t, mysql.Options{LargeChannelMembers: enter, LargeChannelLeave: leave})
	ctx := context.Background()
	skip := conversation.DefaultSkipSet()
	recs, _, err := trafficgen.Generate(trafficgen.Differential(3000, 11))
	if err != nil {
		t.Fatal(err)
	}
	third := len(recs) / 3
	rng := rand.New(rand.NewPCG(11, 11))
	for phase, part := range [][]trafficgen.Record{recs[:third], recs[third : 2*third], recs[2*third:]} {
		if phase > 0 {
			mutate(ctx, t, store, model, rng, 40)
		}
		for _, r := range part {
			_ = model.Apply(r.Value)
		}
		applyPartitioned(ctx, t, store, &skip, part, uint64(phase))
		compareSync(ctx, t, store, db, model)
	}
	var followers int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM conversations WHERE follows = 1`).Scan(&followers); err != nil {
		t.Fatal(err)
	}
	if followers == 0 {
		t.Fatal("no channel is large: the test tests nothing")
	}
	t.Logf("followers=%d", followers)
}

// compareSync compares every user's rows as the store reads them for sync with the model's.
func compareSync(ctx context.Context, t *testing.T, store *mysql.Store, db *sql.DB, model *refmodel.Model) {
	t.Helper()
	rep, err := refmodel.CompareSync(ctx, db, store.UserRows, model)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mismatches != 0 {
		t.Fatalf("sync differs from the model: %s", rep)
	}
}
