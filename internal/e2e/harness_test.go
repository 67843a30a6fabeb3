package e2e

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // database/sql driver for the checks

	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/refmodel"
	"github.com/convsync/conversations/internal/testenv"
	"github.com/convsync/conversations/internal/trafficgen"
)

// errNotInTree marks a command whose package does not exist (yet).
var errNotInTree = errors.New("not in the tree yet")

// commands are the binaries the tests run, built once by TestMain.
var commands = []string{"projector", "api", "migrate"}

var bin struct {
	dir    string
	errors map[string]error // why a command could not be built
}

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	integration := os.Getenv("TEST_MYSQL_DSN") != "" || os.Getenv("REQUIRE_INTEGRATION") == "1"
	bin.errors = map[string]error{}
	if integration {
		dir, err := os.MkdirTemp("", "conv-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		bin.dir = dir
		build(dir)
	}
	return m.Run()
}

// build compiles every command present in the tree with one `go build`; a command that does not exist or
// does not compile is recorded, and only the tests that need it fail.
func build(dir string) {
	root := filepath.Join("..", "..")
	var pkgs []string
	for _, c := range commands {
		if _, err := os.Stat(filepath.Join(root, "cmd", c)); err != nil {
			bin.errors[c] = fmt.Errorf("cmd/%s: %w", c, errNotInTree)
			continue
		}
		pkgs = append(pkgs, "./cmd/"+c)
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if os.Getenv("E2E_RACE") == "1" {
		args = append(args, "-race")
	}
	start := time.Now()
	cmd := exec.Command("go", append(args, pkgs...)...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		for _, p := range pkgs { // one broken command must not hide the others
			c := strings.TrimPrefix(p, "./cmd/")
			one := exec.Command("go", append(args, p)...)
			one.Dir = root
			if out1, err := one.CombinedOutput(); err != nil {
				bin.errors[c] = fmt.Errorf("go build %s: %v\n%s", p, err, out1)
			}
		}
		if len(bin.errors) == 0 {
			bin.errors["build"] = fmt.Errorf("go build: %v\n%s", err, out)
		}
	}
	fmt.Fprintf(os.Stderr, "e2e: built %s in %s\n", strings.Join(pkgs, " "), time.Since(start).Round(time.Millisecond))
}

// need returns the path of a built command, or ends the test when it is missing: a command that is not
// in the tree yet skips the test; one that does not build fails it (skips it too without
// REQUIRE_INTEGRATION=1, like a missing database).
func need(t *testing.T, c string) string {
	t.Helper()
	err := bin.errors[c]
	if err == nil {
		err = bin.errors["build"]
	}
	if err == nil && bin.dir == "" {
		err = fmt.Errorf("integration environment not configured")
	}
	switch {
	case errors.Is(err, errNotInTree):
		t.Skipf("command %s: %v", c, err)
	case err != nil && os.Getenv("REQUIRE_INTEGRATION") == "1":
		t.Fatalf("command %s: %v", c, err)
	case err != nil:
		t.Skipf("command %s: %v", c, err)
	}
	return filepath.Join(bin.dir, c)
}

// proc is a command running as a child process, its output captured in a file.
type proc struct {
	name    string
	addr    string // its HTTP address, when it has one
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // the exit status, once done is closed
}

// baseEnv is what every child gets besides its own configuration: nothing of the developer's own
// MYSQL_DSN or KAFKA_* leaks in.
func baseEnv() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "GORACE"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// start runs a built command with the given environment. The process is killed when the test ends; if
// the test failed, the tail of its output goes to the test log.
func start(t *testing.T, c, name string, env map[string]string) *proc {
	t.Helper()
	path := need(t, c)
	logPath := filepath.Join(t.TempDir(), name+".log")
	out, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path)
	cmd.Env = baseEnv()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		out.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("---- last lines of %s (pid %d, %v)\n%s", name, cmd.Process.Pid, p.err, tail(logPath, 25))
		}
	})
	return p
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill is kill -9: no shutdown, no commit, no leaving the group.
func (p *proc) kill() {
	if p.running() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// stop is a graceful shutdown (SIGTERM) that must finish within timeout with exit status 0.
func (p *proc) stop(t *testing.T, timeout time.Duration) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			t.Errorf("%s exited with %v after SIGTERM", p.name, p.err)
		}
	case <-time.After(timeout):
		p.kill()
		t.Errorf("%s did not stop within %s of SIGTERM", p.name, timeout)
	}
}

func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		lines = append(lines, s.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitHTTP polls url until it answers 200, failing early if the process exits.
func waitHTTP(t *testing.T, p *proc, url string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if !p.running() {
			t.Fatalf("%s exited (%v) before %s answered 200", p.name, p.err, url)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after %s (%s: %v)", p.name, timeout, url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stack is one test's fresh world: a database with the schema, topics, and the settings projectors share.
type stack struct {
	t       *testing.T
	dsn     string
	db      *sql.DB
	brokers []string
	topic   string
	dlq     string
	changes string
	window  int
	kafka   *kafkago.Client
}

func newStack(t *testing.T, partitions, window int) *stack {
	t.Helper()
	need(t, "projector")
	s := &stack{t: t, dsn: testenv.MySQLDSN(t), brokers: testenv.KafkaBrokers(t), window: window}
	ts := testenv.Topics(t, s.brokers, partitions)
	s.topic, s.dlq, s.changes = ts.Events, ts.DLQ, ts.Changes
	s.open()
	return s
}

func (s *stack) open() {
	db, err := sql.Open("mysql", s.dsn)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { db.Close() })
	s.db = db
	// A transport of its own: kafka-go's shared default caches metadata from before the test's topics
	// existed.
	transport := &kafkago.Transport{MetadataTopics: []string{s.topic, s.dlq}, MetadataTTL: time.Second}
	s.t.Cleanup(transport.CloseIdleConnections)
	s.kafka = &kafkago.Client{Addr: kafkago.TCP(s.brokers...), Timeout: 10 * time.Second, Transport: transport}
}

// projector starts a projector in group with small batches, and waits until it is ready.
func (s *stack) projector(name, group string, extra ...string) *proc {
	s.t.Helper()
	addr := freeAddr(s.t)
	env := map[string]string{
		"MYSQL_DSN": s.dsn, "KAFKA_BROKERS": strings.Join(s.brokers, ","), "KAFKA_TOPIC": s.topic,
		"KAFKA_DLQ_TOPIC": s.dlq, "KAFKA_CHANGES_TOPIC": s.changes, "KAFKA_GROUP_ID": group, "PROJECTOR_HTTP_ADDR": addr,
		"BATCH_MAX_RECORDS": "200", "BATCH_MAX_WAIT": "20ms", "RECENTS_WINDOW": strconv.Itoa(s.window),
	}
	for i := 0; i+1 < len(extra); i += 2 {
		env[extra[i]] = extra[i+1]
	}
	p := start(s.t, "projector", name, env)
	p.addr = addr
	waitHTTP(s.t, p, "http://"+addr+"/readyz", 30*time.Second)
	return p
}

// produce writes records to the events topic, keyed by storage key.
func (s *stack) produce(recs []trafficgen.Record) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := trafficgen.Produce(ctx, trafficgen.ProducerConfig{Brokers: s.brokers, Topic: s.topic}, slices.Values(recs), len(recs)); err != nil {
		s.t.Fatal(err)
	}
}

// partitions lists the topic's partitions, waiting a little for a topic created a moment ago.
func (s *stack) partitions(ctx context.Context, topic string) []int {
	s.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		md, err := s.kafka.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{topic}})
		if err == nil && len(md.Topics) == 1 && md.Topics[0].Error == nil && len(md.Topics[0].Partitions) > 0 {
			var ps []int
			for _, p := range md.Topics[0].Partitions {
				ps = append(ps, p.ID)
			}
			slices.Sort(ps)
			return ps
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("metadata of %s: %v %+v", topic, err, md)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// endOffsets returns each partition's high watermark.
func (s *stack) endOffsets(ctx context.Context, topic string) map[int]int64 {
	s.t.Helper()
	var reqs []kafkago.OffsetRequest
	for _, p := range s.partitions(ctx, topic) {
		reqs = append(reqs, kafkago.LastOffsetOf(p))
	}
	res, err := s.kafka.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: map[string][]kafkago.OffsetRequest{topic: reqs}})
	if err != nil {
		s.t.Fatalf("list offsets of %s: %v", topic, err)
	}
	out := map[int]int64{}
	for _, po := range res.Topics[topic] {
		if po.Error != nil {
			s.t.Fatalf("list offsets of %s/%d: %v", topic, po.Partition, po.Error)
		}
		out[po.Partition] = po.LastOffset
	}
	return out
}

// committed returns the group's committed offset per partition of the events topic (-1: none yet).
func (s *stack) committed(ctx context.Context, group string) (map[int]int64, error) {
	res, err := s.kafka.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: group,
		Topics: map[string][]int{s.topic: s.partitions(ctx, s.topic)}})
	if err != nil {
		return nil, err
	}
	if res.Error != nil {
		return nil, res.Error
	}
	out := map[int]int64{}
	for _, p := range res.Topics[s.topic] {
		if p.Error != nil {
			return nil, p.Error
		}
		out[p.Partition] = p.CommittedOffset
	}
	return out, nil
}

// progress is how many of the topic's records the group has committed, and how many there are.
func (s *stack) progress(ctx context.Context, group string, end map[int]int64) (done, total int64) {
	s.t.Helper()
	got, err := s.committed(ctx, group)
	if err != nil {
		return 0, 0 // the coordinator may be busy with a rebalance; ask again
	}
	for p, e := range end {
		total += e
		done += max(0, min(got[p], e))
	}
	return done, total
}

// waitCommitted waits until group has committed every record of the events topic: by the projector's
// ack rules everything is then applied (or dead-lettered). It fails if no live projector is left.
func (s *stack) waitCommitted(group string, timeout time.Duration, procs ...*proc) time.Duration {
	s.t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	end := s.endOffsets(ctx, s.topic)
	for {
		done, total := s.progress(ctx, group, end)
		if total > 0 && done == total {
			return time.Since(start)
		}
		alive := false
		for _, p := range procs {
			alive = alive || p.running()
		}
		if !alive {
			s.t.Fatalf("no projector running, %d of %d records committed", done, total)
		}
		select {
		case <-ctx.Done():
			s.t.Fatalf("group %s committed %d of %d records after %s", group, done, total, timeout)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// evictMembers removes the group's members from the coordinator at once, standing in for the session
// timeout that would notice a killed process only after tens of seconds. The kill stays a kill: nothing
// was committed or left on the dead process's behalf.
func (s *stack) evictMembers(group string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := s.kafka.DescribeGroups(ctx, &kafkago.DescribeGroupsRequest{GroupIDs: []string{group}})
	if err != nil {
		s.t.Fatalf("describe group %s: %v", group, err)
	}
	var members []kafkago.LeaveGroupRequestMember
	for _, g := range res.Groups {
		for _, m := range g.Members {
			members = append(members, kafkago.LeaveGroupRequestMember{ID: m.MemberID})
		}
	}
	if len(members) == 0 {
		return
	}
	lr, err := s.kafka.LeaveGroup(ctx, &kafkago.LeaveGroupRequest{GroupID: group, Members: members})
	if err == nil {
		err = lr.Error
	}
	if err != nil {
		s.t.Logf("evicting %d members of %s: %v (the session timeout will do it)", len(members), group, err)
	}
}

// compare checks the database against the model and fails the test on any difference.
func (s *stack) compare(m *refmodel.Model) refmodel.Report {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := refmodel.Compare(ctx, s.db, m)
	if err != nil {
		s.t.Fatal(err)
	}
	if rep.Mismatches != 0 {
		s.t.Fatalf("database differs from the model: %s", rep)
	}
	return rep
}

// deadLetter is one record read back from the dead-letter topic.
type deadLetter struct {
	value   []byte
	headers map[string]string
}

// readDLQ reads every record of the dead-letter topic.
func (s *stack) readDLQ() []deadLetter {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []deadLetter
	for p, end := range s.endOffsets(ctx, s.dlq) {
		if end == 0 {
			continue
		}
		r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: s.brokers, Topic: s.dlq, Partition: p, MaxWait: 100 * time.Millisecond})
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				s.t.Fatalf("read %s/%d: %v", s.dlq, p, err)
			}
			h := map[string]string{}
			for _, kv := range m.Headers {
				h[kv.Key] = string(kv.Value)
			}
			out = append(out, deadLetter{value: m.Value, headers: h})
			if m.Offset >= end-1 {
				break
			}
		}
		r.Close()
	}
	return out
}

// dump returns every table of the database, every row, every column, in primary-key order: two dumps
// are equal exactly when the databases hold the same bytes.
func (s *stack) dump() map[string][]string {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := s.db.QueryContext(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()`)
	if err != nil {
		s.t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			s.t.Fatal(err)
		}
		tables = append(tables, name)
	}
	rows.Close()
	out := map[string][]string{}
	for _, table := range tables {
		out[table] = s.dumpTable(ctx, table)
	}
	return out
}

func (s *stack) dumpTable(ctx context.Context, table string) []string {
	s.t.Helper()
	probe, err := s.db.QueryContext(ctx, "SELECT * FROM `"+table+"` LIMIT 0")
	if err != nil {
		s.t.Fatal(err)
	}
	cols, err := probe.Columns()
	probe.Close()
	if err != nil {
		s.t.Fatal(err)
	}
	order := make([]string, len(cols))
	for i := range cols {
		order[i] = strconv.Itoa(i + 1)
	}
	rows, err := s.db.QueryContext(ctx, "SELECT * FROM `"+table+"` ORDER BY "+strings.Join(order, ","))
	if err != nil {
		s.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	vals := make([]sql.RawBytes, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			s.t.Fatal(err)
		}
		var b strings.Builder
		for i, v := range vals {
			if i > 0 {
				b.WriteByte('|')
			}
			if v == nil {
				b.WriteString("NULL")
			} else {
				fmt.Fprintf(&b, "%q", v)
			}
		}
		out = append(out, b.String())
	}
	if err := rows.Err(); err != nil {
		s.t.Fatal(err)
	}
	return out
}

// applyAll feeds records to the model; with allowBad false every record must be valid.
func applyAll(t *testing.T, m *refmodel.Model, recs []trafficgen.Record, allowBad bool) {
	t.Helper()
	for _, r := range recs {
		if err := m.Apply(r.Value); err != nil && !allowBad {
			t.Fatalf("generator produced an invalid record %s: %v", r.Value, err)
		}
	}
}

// seed returns the seed of a randomised test: E2E_SEED when set, else a fresh one, logged either way so
// a failure can be replayed.
func seed(t *testing.T) uint64 {
	t.Helper()
	if v := os.Getenv("E2E_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("E2E_SEED: %v", err)
		}
		return n
	}
	n := uint64(time.Now().UnixNano() % 1_000_000)
	t.Logf("seed %d (set E2E_SEED=%d to replay)", n, n)
	return n
}

// parallelism caps concurrent e2e tests: each runs MariaDB work and one or two projectors on a small
// machine, and timing-sensitive steps (kills mid-stream) need the CPU they expect.
var slots = make(chan struct{}, max(1, runtime.NumCPU()/2))

// parallel runs the test alongside the other e2e tests, in a bounded number of slots.
func parallel(t *testing.T) {
	t.Parallel()
	slots <- struct{}{}
	t.Cleanup(func() { <-slots })
}

// consumerLag reads conv_projector_consumer_lag from a projector's /metrics: one value per partition the
// projector committed on.
func consumerLag(t *testing.T, p *proc) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.addr + "/metrics")
	if err != nil {
		t.Fatalf("metrics of %s: %v", p.name, err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "conv_projector_consumer_lag{") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics of %s: %q: %v", p.name, line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
