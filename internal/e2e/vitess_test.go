package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/refmodel"
	"github.com/convsync/conversations/internal/testenv"
	"github.com/convsync/conversations/internal/trafficgen"
)

// TestVitessKillBetweenShardCommits runs the read model sharded by user through vtgate (make
// test-vitess; elsewhere it skips) with the real projector binary, one per shard (VITESS_SHARD, its own
// consumer group), and kills one shard's projector with SIGKILL at random moments while the other keeps
// committing: every kill lands between two shards' commits of the same records (one shard has
// committed batches the other has not, and the killed one may be mid-transaction), then the killed one
// restarts in its group. For each seed, the shards together must end equal to the reference model:
// nothing lost, nothing counted twice, every user's sync the model's. After seed 12 one shard is then
// rebuilt in place (rebuildShard).
func TestVitessKillBetweenShardCommits(t *testing.T) {
	keyspace := os.Getenv("TEST_VITESS_KEYSPACE_DSN")
	if keyspace == "" || !testenv.Vitess() {
		t.Skip("TEST_VITESS_KEYSPACE_DSN is not set: make test-vitess runs this test through vtgate")
	}
	shards, err := mysql.ParseShards(os.Getenv("TEST_VITESS_SHARDS"))
	if err != nil {
		t.Fatalf("TEST_VITESS_SHARDS: %v", err)
	}
	need(t, "projector")
	for _, sd := range []uint64{11, 12, 13} {
		t.Run(fmt.Sprintf("seed %d", sd), func(t *testing.T) { vitessKills(t, keyspace, shards, sd) })
	}
}

func vitessKills(t *testing.T, keyspace string, shards []mysql.KeyRange, sd uint64) {
	store, err := mysql.OpenSharded(keyspace, shards, mysql.Options{RecentsWindow: window})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx := context.Background()
	for _, st := range store.Shards() {
		for _, table := range []string{"conversations", "user_versions", "channels", "messages", "late_messages", "channel_members"} {
			if err := testenv.EmptyTable(ctx, st.DB().DB, table); err != nil {
				t.Fatal(err)
			}
		}
	}
	s := &stack{t: t, dsn: keyspace, brokers: testenv.KafkaBrokers(t), window: window}
	ts := testenv.Topics(t, s.brokers, 6)
	s.topic, s.dlq, s.changes = ts.Events, ts.DLQ, ts.Changes
	s.open()

	recs, _, err := trafficgen.Generate(trafficgen.Differential(3000, sd))
	if err != nil {
		t.Fatal(err)
	}
	model := refmodel.New(refmodel.Options{Window: window})
	applyAll(t, model, recs, false)
	s.produce(recs)

	groups := make([]string, len(shards))
	procs := make([]*proc, len(shards))
	start := func(i, gen int) *proc {
		dsn := keyspace + ":" + shards[i].Name()
		// Tiny batches: many commits per shard, so a kill lands among them.
		return s.projector(fmt.Sprintf("projector%s-%d", shards[i].Name(), gen), groups[i], "MYSQL_DSN", dsn,
			"VITESS_SHARD", shards[i].Name(), "KAFKA_CHANGES_TOPIC", "", "BATCH_MAX_RECORDS", "25", "BATCH_MAX_WAIT", "5ms")
	}
	for i := range shards {
		groups[i] = testenv.Name(fmt.Sprintf("e2e-vitess-%d-", i))
		procs[i] = start(i, 0)
	}
	rng := rand.New(rand.NewPCG(sd, 7))
	kills := 0
	var at []string
	for k, frac := range []float64{0.15, 0.3, 0.45, 0.6, 0.75} {
		i := k % len(shards) // the shards take turns being killed; the other keeps committing
		done, total := s.waitProgress(groups[i], frac, 3*time.Minute, procs[i])
		if done == total {
			continue
		}
		time.Sleep(time.Duration(rng.IntN(40)) * time.Millisecond)
		other, _ := s.progress(ctx, groups[1-i], s.endOffsets(ctx, s.topic))
		procs[i].kill()
		kills++
		at = append(at, fmt.Sprintf("%s at %d (other shard at %d) of %d", shards[i].Name(), done, other, total))
		s.evictMembers(groups[i])
		procs[i] = start(i, k+1)
	}
	for i := range shards {
		s.waitCommitted(groups[i], 3*time.Minute, procs[i])
	}
	rep := s.compare(model)
	sync, err := refmodel.CompareSync(ctx, s.db, store.UserRows, model)
	if err != nil {
		t.Fatal(err)
	}
	if sync.Mismatches != 0 {
		t.Fatalf("sync differs from the model: %s", sync)
	}
	if kills < 3 {
		t.Errorf("only %d kills landed mid-stream", kills)
	}
	t.Logf("seed %d: kills between shard commits=%d (%v); events=%d; compared rows=%d messages=%d users' syncs=%d: lost=0 double_counted=0 mismatches=0",
		sd, kills, at, len(recs), rep.Rows, rep.Messages, sync.Rows)
	if sd%3 == 0 {
		rebuildShard(t, s, store, shards, procs, model)
	}
}

// rebuildShard is the rebuild of one shard in place (docs/operations.md, "On Vitess"): its projector
// stopped, its tables emptied through a session that targets it, a projector in a fresh consumer group
// (which starts at the topic's first offset) applies the whole topic again; the shards together must
// end equal to the model again, the other shard untouched.
func rebuildShard(t *testing.T, s *stack, store *mysql.Sharded, shards []mysql.KeyRange, procs []*proc, model *refmodel.Model) {
	ctx := context.Background()
	procs[0].stop(t, 30*time.Second)
	for _, table := range []string{"conversations", "user_versions", "channels", "messages", "late_messages", "channel_members"} {
		if err := testenv.EmptyTable(ctx, store.Shards()[0].DB().DB, table); err != nil {
			t.Fatal(err)
		}
	}
	group := testenv.Name("e2e-vitess-rebuild-")
	p := s.projector("projector"+shards[0].Name()+"-rebuild", group, "MYSQL_DSN", s.dsn+":"+shards[0].Name(),
		"VITESS_SHARD", shards[0].Name(), "KAFKA_CHANGES_TOPIC", "")
	took := s.waitCommitted(group, 3*time.Minute, p)
	rep := s.compare(model)
	sync, err := refmodel.CompareSync(ctx, s.db, store.UserRows, model)
	if err != nil {
		t.Fatal(err)
	}
	if sync.Mismatches != 0 {
		t.Fatalf("sync differs from the model after the rebuild of shard %s: %s", shards[0].Name(), sync)
	}
	t.Logf("shard %s rebuilt in place in a fresh group in %s: compared rows=%d users' syncs=%d: mismatches=0",
		shards[0].Name(), took.Round(time.Millisecond), rep.Rows, sync.Rows)
}
