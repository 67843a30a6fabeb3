package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/refmodel"
	"github.com/convsync/conversations/internal/topicadmin"
	"github.com/convsync/conversations/internal/trafficgen"
)

// chaos is one run's state.
type chaos struct {
	cfg     config
	out     io.Writer
	outMu   sync.Mutex
	rng     *mrand.Rand // the main goroutine's
	killRng *mrand.Rand // killSome's
	model   *refmodel.Model
	db      *sql.DB
	dbName  string
	proxy   *proxy
	topics  struct{ events, dlq, changes string }
	group   string
	projs   []*replica
	apis    []*replica
	pool    *apiPool
	c       counters
	writer  *kafkago.Writer

	followers *followersRun
	older     *olderCheck

	kills, restarts, stalls, produced, mutations int
	outageAnswered, outageDiffering              int
	replicaAnswersDiffering                      int // fresh reads of a database replica during the primary's outage
	recoveries                                   []string
	badRecords                                   int
}

func (ch *chaos) printf(format string, args ...any) {
	ch.outMu.Lock()
	defer ch.outMu.Unlock()
	fmt.Fprintf(ch.out, format+"\n", args...)
}

// run is the whole run: setup, rounds, fuzz, final comparison. It returns an error when a figure that
// must be 0 is not, or when the run could not be carried out.
func run(ctx context.Context, args []string, out io.Writer) (err error) {
	cfg, err := parse(args, out)
	if err != nil {
		return err
	}
	ch := &chaos{cfg: cfg, out: out, rng: mrand.New(mrand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		killRng: mrand.New(mrand.NewPCG(cfg.Seed+1, cfg.Seed)), model: refmodel.New(refmodel.Options{})}
	begin := time.Now()
	if err := ch.setup(ctx); err != nil {
		return err
	}
	defer func() { ch.teardown(err == nil) }()
	if err = ch.rounds(ctx); err != nil {
		return err
	}
	if err = ch.fuzz(ctx); err != nil {
		return err
	}
	err = ch.verdict(ctx)
	ch.printf("total time %s", time.Since(begin).Round(time.Second))
	return err
}

func (ch *chaos) setup(ctx context.Context) error {
	admin, err := gomysql.ParseDSN(ch.cfg.AdminDSN)
	if err != nil {
		return fmt.Errorf("-mysql: %w", err)
	}
	suffix := randomHex()
	ch.dbName = "convtest_chaos_" + suffix // the test account may create convtest_* databases
	adminDB, err := sql.Open("mysql", ch.cfg.AdminDSN)
	if err != nil {
		return err
	}
	defer adminDB.Close()
	if _, err := adminDB.ExecContext(ctx, "CREATE DATABASE "+ch.dbName); err != nil {
		return fmt.Errorf("create database: %w", err)
	}
	direct := *admin
	direct.DBName = ch.dbName
	store, err := mysql.Open(direct.FormatDSN(), mysql.Options{MaxOpenConns: 2})
	if err != nil {
		return err
	}
	if err := store.Migrate(ctx, slog.New(slog.DiscardHandler)); err != nil {
		store.Close()
		return fmt.Errorf("migrate: %w", err)
	}
	store.Close()
	if ch.db, err = sql.Open("mysql", direct.FormatDSN()); err != nil {
		return err
	}
	if ch.proxy, err = newProxy(admin.Addr); err != nil {
		return err
	}
	viaProxy := direct
	viaProxy.Addr = ch.proxy.addr()
	// The replicas give up on a dead connection fast, so an outage is noticed and left quickly.
	viaProxy.Timeout, viaProxy.ReadTimeout, viaProxy.WriteTimeout = 2*time.Second, 10*time.Second, 10*time.Second

	ch.topics.events = "chaos.events." + suffix
	ch.topics.dlq, ch.topics.changes = ch.topics.events+".dlq", ch.topics.events+".changes"
	ch.group = "chaos.group." + suffix
	if err := topicadmin.Ensure(ctx, nil, ch.cfg.Brokers, topicadmin.Topic{Name: ch.topics.events, Partitions: ch.cfg.Partitions},
		topicadmin.Topic{Name: ch.topics.changes, Partitions: 1}); err != nil {
		return err
	}
	limit, err := topicadmin.MaxMessageBytes(ctx, nil, ch.cfg.Brokers, ch.topics.events)
	if err != nil {
		return err
	}
	if err := topicadmin.Ensure(ctx, nil, ch.cfg.Brokers, topicadmin.DeadLetterTopic(ch.topics.dlq, 1, limit)); err != nil {
		return err
	}
	if err := os.MkdirAll(ch.cfg.LogDir, 0o755); err != nil {
		return err
	}
	common := map[string]string{
		"MYSQL_DSN": viaProxy.FormatDSN(), "KAFKA_BROKERS": joinComma(ch.cfg.Brokers), "KAFKA_TOPIC": ch.topics.events,
		"KAFKA_DLQ_TOPIC": ch.topics.dlq, "KAFKA_CHANGES_TOPIC": ch.topics.changes, "LOG_LEVEL": "warn",
		// One broker: the replicas accept topics that one broker cannot replicate (contract §6's flag);
		// on three or more they require the defaults (three replicas, two in sync).
		"KAFKA_ALLOW_UNREPLICATED": strconv.FormatBool(len(ch.cfg.Brokers) < 3),
	}
	for i := range ch.cfg.Projectors {
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		env := with(common, map[string]string{"KAFKA_GROUP_ID": ch.group, "PROJECTOR_HTTP_ADDR": addr, "KAFKA_SESSION_TIMEOUT": "6s",
			"KAFKA_PARTITIONS": strconv.Itoa(ch.cfg.Partitions),
			// Several lanes per projector whatever the default: kills land among lanes' concurrent batches.
			"PROJECTOR_LANES": "3"})
		ch.projs = append(ch.projs, newReplica("projector-"+strconv.Itoa(i+1), filepath.Join(ch.cfg.BinDir, "projector"), ch.cfg.LogDir, env, addr))
	}
	var addrs []string
	for i := range ch.cfg.APIs {
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		addrs = append(addrs, addr)
		// A short cache age, so that even a short database outage outlives it and exercises the outage path.
		env := with(common, map[string]string{"API_HTTP_ADDR": addr, "SYNC_CACHE_MAX_AGE": "1s"})
		if d := ch.readDSN(i); d != "" {
			env["MYSQL_READ_DSNS"] = d // a database replica (make chaos-cluster)
		}
		ch.apis = append(ch.apis, newReplica("api-"+strconv.Itoa(i+1), filepath.Join(ch.cfg.BinDir, "api"), ch.cfg.LogDir, env, addr))
	}
	for _, r := range append(slices.Clone(ch.projs), ch.apis...) {
		if err := r.start(); err != nil {
			return err
		}
	}
	for _, r := range ch.projs {
		if _, err := r.waitOK(ctx, "/readyz", 60*time.Second); err != nil {
			return err
		}
	}
	for _, r := range ch.apis {
		if _, err := r.waitOK(ctx, "/readyz", 60*time.Second); err != nil {
			return err
		}
	}
	ch.pool = &apiPool{addrs: addrs, client: &http.Client{Timeout: 15 * time.Second}, c: &ch.c}
	ch.writer = &kafkago.Writer{Addr: kafkago.TCP(ch.cfg.Brokers...), Topic: ch.topics.events, Balancer: &kafkago.Hash{},
		RequiredAcks: kafkago.RequireAll, BatchTimeout: 5 * time.Millisecond, BatchSize: 500, MaxAttempts: 3}
	ch.printf("chaos: database %s, topic %s (%d partitions), %d projectors, %d API replicas, seed %d, logs in %s",
		ch.dbName, ch.topics.events, ch.cfg.Partitions, ch.cfg.Projectors, ch.cfg.APIs, ch.cfg.Seed, ch.cfg.LogDir)
	return nil
}

// teardown stops the replicas; after a run that passed it also drops the database and deletes the
// topics (a failed run keeps them, and says so, for a look).
func (ch *chaos) teardown(passed bool) {
	for _, r := range append(slices.Clone(ch.projs), ch.apis...) {
		r.stop(5 * time.Second)
	}
	if passed && ch.db != nil {
		_, _ = ch.db.Exec("DROP DATABASE " + ch.dbName)
		c := &kafkago.Client{Addr: kafkago.TCP(ch.cfg.Brokers...), Timeout: 10 * time.Second}
		_, _ = c.DeleteTopics(context.Background(), &kafkago.DeleteTopicsRequest{Topics: []string{ch.topics.events, ch.topics.dlq, ch.topics.changes}})
	} else if ch.db != nil {
		ch.printf("kept database %s and topics %s* for a look", ch.dbName, ch.topics.events)
	}
	if ch.writer != nil {
		ch.writer.Close()
	}
	if ch.proxy != nil {
		ch.proxy.close()
	}
	if ch.db != nil {
		ch.db.Close()
	}
}

// rounds produces the traffic in cfg.Rounds shares. In each: the share is produced while replicas are
// killed and mutations are made on conversations of channels the share does not touch (so the model
// knows their order), then the group must commit every record (a drain); a database restart comes in
// the first third, a broker restart in the second.
func (ch *chaos) rounds(ctx context.Context) error {
	wl := trafficgen.Differential(ch.cfg.Messages, ch.cfg.Seed)
	wl.Chaos.MalformedRate = 0.005
	gen, err := trafficgen.New(wl)
	if err != nil {
		return err
	}
	var recs []trafficgen.Record
	for r := range gen.All() {
		recs = append(recs, r)
	}
	st := gen.Stats()
	ch.printf("traffic: %d records: %d messages, %d memberships, %d duplicates, %d reordered, %d malformed",
		st.Records, st.Messages, st.Memberships, st.Duplicates, st.Reordered, st.Malformed)
	followers := ch.startFollowers(ctx)
	older, stopOlder := ch.startOlderCheck(ctx)
	ch.older = older
	defer stopOlder()

	dbRound, kafkaRound := max(0, ch.cfg.Rounds/3), min(ch.cfg.Rounds-1, 2*ch.cfg.Rounds/3)
	if ch.cfg.Rounds >= 2 && dbRound == kafkaRound {
		kafkaRound = dbRound + 1
	}
	freezeRound := -1 // a round of its own, away from the database and broker faults
	for r := ch.cfg.Rounds - 1; r >= 0 && len(ch.cfg.ReplicaPidFiles) > 0; r-- {
		if r != dbRound && r != kafkaRound {
			freezeRound = r
			break
		}
	}
	per := (len(recs) + ch.cfg.Rounds - 1) / ch.cfg.Rounds
	killsLeft := ch.cfg.Kills
	var carry []trafficgen.Record
	for round := range ch.cfg.Rounds {
		// A quarter of the channels is held out of the round: their records wait for the next one, in
		// order, and the round's mutations go to their conversations, so the model knows that each
		// mutation came after the records before it and before the ones after it.
		held := map[string]bool{}
		share := append(carry, recs[min(len(recs), round*per):min(len(recs), (round+1)*per)]...)
		for _, r := range share {
			if _, seen := held[string(r.Key)]; !seen {
				held[string(r.Key)] = ch.rng.IntN(4) == 0
			}
		}
		var now []trafficgen.Record
		carry = nil
		for _, r := range share {
			if held[string(r.Key)] {
				carry = append(carry, r)
				continue
			}
			now = append(now, r)
			if err := ch.model.Apply(r.Value); err != nil {
				ch.badRecords++
			}
		}
		kills := killsLeft / (ch.cfg.Rounds - round)
		killsLeft -= kills
		var wg sync.WaitGroup
		var produceErr, killErr error
		wg.Go(func() { produceErr = ch.produce(ctx, now) })
		wg.Go(func() { killErr = ch.killSome(ctx, kills) })
		var faultErr error
		switch {
		case round == kafkaRound && ch.cfg.clustered():
			wg.Go(func() { faultErr = ch.killLeader(ctx) })
		case round == freezeRound:
			wg.Go(func() { faultErr = ch.freezeReplica(ctx) })
		}
		mutations, err := ch.mutate(ctx, held)
		if err != nil {
			return err
		}
		wg.Wait()
		if err := errors.Join(produceErr, killErr, faultErr); err != nil {
			return err
		}
		switch {
		case round == dbRound:
			if err := ch.restartDatabase(ctx); err != nil {
				return err
			}
		case round == kafkaRound && !ch.cfg.clustered():
			if err := ch.restartBroker(ctx); err != nil {
				return err
			}
		}
		drained := ch.drain(ctx, 90*time.Second)
		ch.printf("round %d/%d: %d records, %d kills, %d mutations, drained in %s; so far: 5xx %d, 503 in outages %d, connection errors %d",
			round+1, ch.cfg.Rounds, len(now), kills, mutations, drained.Round(time.Millisecond),
			ch.c.faults.Load(), ch.c.outage503.Load(), ch.c.connErrors.Load())
	}
	for _, r := range carry {
		if err := ch.model.Apply(r.Value); err != nil {
			ch.badRecords++
		}
	}
	if err := ch.produce(ctx, carry); err != nil {
		return err
	}
	drained := ch.drain(ctx, 90*time.Second)
	ch.printf("last held records: %d, drained in %s", len(carry), drained.Round(time.Millisecond))
	return followers.stop()
}

// produce writes records in order, retrying what the broker refuses (it may be restarting).
func (ch *chaos) produce(ctx context.Context, recs []trafficgen.Record) error {
	const chunk = 500
	for i := 0; i < len(recs); i += chunk {
		msgs := make([]kafkago.Message, 0, chunk)
		for _, r := range recs[i:min(len(recs), i+chunk)] {
			msgs = append(msgs, kafkago.Message{Key: r.Key, Value: r.Value})
		}
		for attempt := 1; ; attempt++ {
			err := ch.writer.WriteMessages(ctx, msgs...)
			if err == nil {
				break
			}
			if ctx.Err() != nil || attempt == 120 {
				return fmt.Errorf("produce: %w", err)
			}
			time.Sleep(500 * time.Millisecond)
		}
		ch.produced += len(msgs)
	}
	return nil
}

// killSome kills n replicas, one at a time, alternating projectors and API replicas, starting each
// again after a moment and timing its recovery (ready again).
func (ch *chaos) killSome(ctx context.Context, n int) error {
	for i := range n {
		var r *replica
		path := "/readyz"
		if (ch.kills+i)%2 == 0 {
			r = ch.projs[ch.killRng.IntN(len(ch.projs))]
		} else {
			r = ch.apis[ch.killRng.IntN(len(ch.apis))]
		}
		time.Sleep(time.Duration(200+ch.killRng.IntN(600)) * time.Millisecond)
		r.kill()
		time.Sleep(time.Duration(100+ch.killRng.IntN(400)) * time.Millisecond)
		if err := r.start(); err != nil {
			return err
		}
		took, err := r.waitOK(ctx, path, 60*time.Second)
		if err != nil {
			return err
		}
		ch.printf("  kill -9 %s: ready again %s after its restart", r.name, took.Round(time.Millisecond))
		ch.recoveries = append(ch.recoveries, took.String())
	}
	ch.kills += n
	return nil
}

// mutate makes API mutations on live conversations of the channels held out of the round, and applies
// each to the model once the API said 200 (each is idempotent, so a retry after a killed replica is
// harmless). It returns how many it made.
func (ch *chaos) mutate(ctx context.Context, held map[string]bool) (int, error) {
	var candidates []refmodel.Row
	for _, r := range ch.model.Rows() {
		if !r.IsDeleted && held[r.StorageKey().Key] {
			candidates = append(candidates, r)
		}
	}
	made := 0
	for i := 0; i < ch.cfg.MutationsPerRnd && len(candidates) > 0; i++ {
		r := candidates[ch.rng.IntN(len(candidates))]
		body := map[string]any{"uid": r.UID, "channel_id": r.ChannelID, "channel_type": r.ChannelType}
		var path string
		var apply func()
		switch k := ch.rng.IntN(10); {
		case k < 5:
			n := int64(ch.rng.IntN(5))
			body["unread"], path = n, "/conversations/setUnread"
			apply = func() { ch.model.SetUnread(r.UID, r.ChannelID, r.ChannelType, n) }
		case k < 8:
			path = "/conversations/clearUnread"
			apply = func() { ch.model.ClearUnread(r.UID, r.ChannelID, r.ChannelType) }
		default:
			path = "/conversations/delete"
			apply = func() { ch.model.Delete(r.UID, r.ChannelID, r.ChannelType) }
		}
		if err := ch.pool.must(ctx, path, body, nil); err != nil {
			return made, err
		}
		apply()
		made++
		ch.mutations++
	}
	return made, nil
}
