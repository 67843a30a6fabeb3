package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/testenv"
	"github.com/convsync/conversations/internal/topicadmin"
	"github.com/convsync/conversations/internal/trafficgen"
)

// clusterEnv is what `make cluster` wrote to its env file (deploy/local/cluster.sh).
type clusterEnv struct {
	dir         string
	brokers     []string
	primaryDSN  string   // the test account on the primary, no database
	replicaDSNs []string // the same on each replica
}

// readClusterEnv reads dir/env.
func readClusterEnv(dir string) (clusterEnv, error) {
	f, err := os.Open(filepath.Join(dir, "env"))
	if err != nil {
		return clusterEnv{}, fmt.Errorf("the cluster's env file (run make cluster first): %w", err)
	}
	defer f.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok && !strings.HasPrefix(k, "#") {
			vars[k] = strings.Trim(v, "'")
		}
	}
	asTest := func(dsn string) (string, error) {
		c, err := mysql.ParseDSN(dsn)
		if err != nil {
			return "", err
		}
		c.User, c.Passwd, c.DBName = "convtest", "convtest", ""
		return c.FormatDSN(), nil
	}
	ce := clusterEnv{dir: dir, brokers: strings.Split(vars["KAFKA_BROKERS"], ",")}
	if ce.primaryDSN, err = asTest(vars["MYSQL_PRIMARY_DSN"]); err != nil {
		return ce, fmt.Errorf("MYSQL_PRIMARY_DSN: %w", err)
	}
	for _, d := range strings.Fields(vars["MYSQL_REPLICA_DSNS"]) {
		r, err := asTest(d)
		if err != nil {
			return ce, fmt.Errorf("MYSQL_REPLICA_DSNS: %w", err)
		}
		ce.replicaDSNs = append(ce.replicaDSNs, r)
	}
	if len(ce.brokers) < 3 || len(ce.replicaDSNs) == 0 {
		return ce, errors.New("the cluster's env file names fewer than three brokers or no replica")
	}
	return ce, sc.Err()
}

// withDB is dsn with the database name of db.
func withDB(dsn, db string) string {
	c, _ := mysql.ParseDSN(dsn)
	d, _ := mysql.ParseDSN(db)
	c.DBName = d.DBName
	return c.FormatDSN()
}

// clusterSection measures the service on `make cluster`'s topology (three brokers, a primary with
// replicas): freshness through an API replica reading a database replica at 100 events/s, beside the
// single-node freshness.r100.p99 of the same run; the stall after kill -9 of the broker leading the most
// partitions; sync latency while the API's database replica is frozen.
func clusterSection(ctx context.Context, e *env, rep *report, dir string, warm time.Duration) error {
	cl, err := readClusterEnv(dir)
	if err != nil {
		return err
	}
	ce := &env{adminDSN: cl.primaryDSN, brokers: cl.brokers, binDir: e.binDir, logDir: e.logDir}
	defer ce.close()
	topic, err := ce.freshTopic(ctx, 6)
	if err != nil {
		return err
	}
	dsn, err := ce.freshDB(ctx)
	if err != nil {
		return err
	}
	group := testenv.Name(topic + ".group.")
	projector, err := ce.start(ctx, "projector", map[string]string{"MYSQL_DSN": dsn, "KAFKA_BROKERS": strings.Join(cl.brokers, ","),
		"KAFKA_TOPIC": topic, "KAFKA_DLQ_TOPIC": topic + ".dlq", "KAFKA_CHANGES_TOPIC": topic + ".changes", "KAFKA_GROUP_ID": group,
		"KAFKA_ALLOW_UNREPLICATED": "false"})
	if err != nil {
		return err
	}
	defer projector.stop()
	apiVars := ce.apiEnv(dsn, topic)
	apiVars["MYSQL_READ_DSNS"] = withDB(cl.replicaDSNs[0], dsn)
	apiVars["KAFKA_ALLOW_UNREPLICATED"] = "false"
	api, err := ce.start(ctx, "api", apiVars)
	if err != nil {
		return err
	}
	defer api.stop()

	// Freshness through the replica: a message visible through the API, whose lists come from replica 1.
	progress("cluster: freshness at 100 events/s for 15s through a database replica")
	served0, _ := api.metric(`conv_api_replica_reads_total{replica="` + addrOf(cl.replicaDSNs[0]) + `",result="served"}`)
	fr, err := ce.freshness(ctx, topic, projector, api, freshRun{rate: 100, warm: warm, d: 15 * time.Second, seqBase: 50_000_000})
	if err != nil {
		return fmt.Errorf("cluster freshness: %w", err)
	}
	served1, _ := api.metric(`conv_api_replica_reads_total{replica="` + addrOf(cl.replicaDSNs[0]) + `",result="served"}`)
	primary, _ := api.metric("conv_api_replica_primary_reads_total")
	progress("cluster: freshness p50 %s, p99 %s (%d probes); reads the replica served %.0f, the primary %.0f; %s", fmtMS(fr.p50),
		fmtMS(fr.p99), fr.probes, served1-served0, primary, formatStages(fr.stages))
	rep.latency("cluster.freshness.r100.p50", fr.p50, fr.breakdown)
	if single, ok := rep.value("freshness.r100.p99"); ok && single > 0 {
		rep.vs("cluster.freshness.r100.p99", ms(fr.p99), "ms", single, "≤ 2 (vs single-node freshness.r100.p99)")
	} else {
		rep.emit(figure{Name: "cluster.freshness.r100.p99", Value: ms(fr.p99), Unit: "ms", Stages: fr.stages,
			Target: "≤ 2 × freshness.r100.p99 (not run: -only without freshness)"})
	}

	stall, err := leaderKill(ctx, ce, cl, topic, group)
	if err != nil {
		return fmt.Errorf("cluster leader kill: %w", err)
	}
	rep.emit(figure{Name: "cluster.leader_kill.stall_ms", Value: ms(stall), Unit: "ms", Target: "≤ 10000"})

	p99, n, err := replicaFreeze(ctx, ce, cl, topic, dsn, api)
	if err != nil {
		return fmt.Errorf("cluster replica freeze: %w", err)
	}
	progress("cluster: %d syncs while replica 1 was frozen, p99 %s", n, fmtMS(p99))
	rep.emit(figure{Name: "cluster.replica_freeze.p99", Value: ms(p99), Unit: "ms", Target: "≤ 250"})
	return nil
}

func addrOf(dsn string) string {
	c, err := mysql.ParseDSN(dsn)
	if err != nil {
		return ""
	}
	return c.Addr
}

// leaderKill produces at 100 events/s, kills (-9) the broker leading the most of topic's partitions,
// and returns how long until the group committed past the kill on every partition that broker led;
// then it starts the broker again (cluster.sh start-node).
func leaderKill(ctx context.Context, ce *env, cl clusterEnv, topic, group string) (time.Duration, error) {
	records, err := peerStream(100*30, 60_000_000)
	if err != nil {
		return 0, err
	}
	produced := make(chan error, 1)
	pctx, stopProducing := context.WithCancel(ctx)
	defer stopProducing()
	go func() { produced <- produceRefreshing(pctx, ce.brokers, topic, records, 100) }()
	time.Sleep(3 * time.Second)

	client := &kafkago.Client{Addr: kafkago.TCP(ce.brokers...), Timeout: 3 * time.Second}
	meta, err := client.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, err
	}
	led := map[int][]int{}
	for _, t := range meta.Topics {
		for _, p := range t.Partitions {
			led[p.Leader.ID] = append(led[p.Leader.ID], p.ID)
		}
	}
	leader := -1
	for id, ps := range led {
		if leader < 0 || len(ps) > len(led[leader]) {
			leader = id
		}
	}
	before, err := topicadmin.CommittedOffsets(ctx, client, group, topic)
	if err != nil {
		return 0, err
	}
	b, err := os.ReadFile(filepath.Join(cl.dir, fmt.Sprintf("kafka-%d.pid", leader)))
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, err
	}
	coordinator := -1 // the group's coordinator leads __consumer_offsets (one partition on make cluster)
	if om, err := client.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{"__consumer_offsets"}}); err == nil {
		for _, t := range om.Topics {
			for _, p := range t.Partitions {
				coordinator = p.Leader.ID
			}
		}
	}
	progress("cluster: kill -9 of broker %d (pid %d), leading partitions %v, while events flow (group coordinator: broker %d)",
		leader, pid, led[leader], coordinator)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return 0, err
	}
	killed := time.Now()
	var stall time.Duration
	first := map[int]time.Duration{} // when each partition the broker led first committed past the kill
	for {
		after, err := topicadmin.CommittedOffsets(ctx, client, group, topic)
		for p := range after {
			if _, seen := first[p]; !seen && after[p] > before[p] {
				first[p] = time.Since(killed).Round(time.Millisecond)
			}
		}
		if err == nil && allPast(after, before, led[leader]) {
			stall = time.Since(killed)
			progress("cluster: first commit past the kill, by partition: %v", first)
			break
		}
		if time.Since(killed) > 60*time.Second {
			stall = time.Since(killed)
			progress("cluster: nothing committed on the killed leader's partitions after %s", stall)
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	progress("cluster: every partition broker %d led committed again %s after the kill; starting it again", leader, fmtMS(stall))
	start := exec.CommandContext(ctx, "deploy/local/cluster.sh", "start-node", fmt.Sprintf("kafka-%d", leader))
	start.Stdout, start.Stderr = os.Stderr, os.Stderr
	if err := start.Run(); err != nil {
		return 0, fmt.Errorf("start broker %d again: %w", leader, err)
	}
	stopProducing()
	if err := <-produced; err != nil && !errors.Is(err, context.Canceled) {
		return 0, err
	}
	return stall, nil
}

func allPast(after, before map[int]int64, partitions []int) bool {
	for _, p := range partitions {
		if after[p] <= before[p] {
			return false
		}
	}
	return true
}

// replicaFreeze runs syncs of the run's users through the API (8 clients, msg_count 1) while the API's
// database replica is frozen (SIGSTOP) for 10 s and events arrive at 100/s, and returns their p99.
func replicaFreeze(ctx context.Context, ce *env, cl clusterEnv, topic, dsn string, api *proc) (time.Duration, int, error) {
	users, err := syncUsers(ctx, dsn, 0)
	if err != nil {
		return 0, 0, err
	}
	if len(users) == 0 {
		return 0, 0, errors.New("no users to sync")
	}
	records, err := peerStream(100*12, 70_000_000)
	if err != nil {
		return 0, 0, err
	}
	pctx, stopProducing := context.WithCancel(ctx)
	defer stopProducing()
	produced := make(chan error, 1)
	go func() { _, _, err := produceAt(pctx, ce.brokers, topic, records, 100, 12*time.Second); produced <- err }()
	b, err := os.ReadFile(filepath.Join(cl.dir, "mariadb-replica-1.pid"))
	if err != nil {
		return 0, 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, 0, err
	}
	progress("cluster: replica 1 (pid %d) frozen for 10s under sync load", pid)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return 0, 0, err
	}
	thawed := false
	thaw := func() {
		if !thawed {
			_ = syscall.Kill(pid, syscall.SIGCONT)
			thawed = true
		}
	}
	defer thaw()
	r := apiLoad(ctx, api, 0, users, 1, 8, 10*time.Second, false)
	thaw()
	stopProducing()
	<-produced
	if r.errors > 0 {
		return 0, 0, fmt.Errorf("%d syncs failed while the replica was frozen", r.errors)
	}
	return r.p99, r.requests, nil
}

// produceRefreshing writes records at rate per second until they run out or ctx ends, as a pipeline's
// producer would through a leader change: its metadata is at most a second old (kafka-go's default of
// 6 s would make the stall the load generator's, not the cluster's), and a failed write is retried.
func produceRefreshing(ctx context.Context, brokers []string, topic string, records []trafficgen.Record, rate float64) error {
	w := &kafkago.Writer{Addr: kafkago.TCP(brokers...), Topic: topic, Balancer: &kafkago.Hash{}, RequiredAcks: kafkago.RequireAll,
		BatchTimeout: time.Millisecond, Transport: &kafkago.Transport{MetadataTTL: time.Second}, MaxAttempts: 20,
		WriteBackoffMin: 50 * time.Millisecond, WriteBackoffMax: 250 * time.Millisecond}
	defer w.Close()
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	for _, r := range records {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		go func() { _ = w.WriteMessages(ctx, kafkago.Message{Key: r.Key, Value: r.Value}) }()
	}
	return nil
}
