package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	kafkago "github.com/segmentio/kafka-go"

	mysqlstore "github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/testenv"
	"github.com/convsync/conversations/internal/topicadmin"
)

// env is what every section needs: the services, the built binaries and a place for logs.
type env struct {
	adminDSN string
	brokers  []string
	binDir   string
	logDir   string
	dbPID    int // the database server, for its CPU time; 0 if it is not on this machine
	// projectorCPUs, when set, is the CPU list (taskset's) every projector the bench starts runs on.
	projectorCPUs string
	cleanup       []func()
}

func newEnv(ctx context.Context) (*env, error) {
	admin, brokers := os.Getenv("TEST_MYSQL_DSN"), os.Getenv("TEST_KAFKA_BROKERS")
	if admin == "" || brokers == "" {
		return nil, fmt.Errorf("TEST_MYSQL_DSN and TEST_KAFKA_BROKERS must be set (make bench sets them)")
	}
	dir, err := os.MkdirTemp("", "convbench-")
	if err != nil {
		return nil, err
	}
	e := &env{adminDSN: admin, brokers: strings.Split(brokers, ","), binDir: filepath.Join(dir, "bin"), logDir: filepath.Join(dir, "logs")}
	e.cleanup = append(e.cleanup, func() { _ = os.RemoveAll(dir) })
	if err := os.MkdirAll(e.logDir, 0o755); err != nil {
		return nil, err
	}
	progress("building cmd/projector and cmd/api")
	build := exec.CommandContext(ctx, "go", "build", "-o", e.binDir+"/", "./cmd/projector", "./cmd/api")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return nil, fmt.Errorf("build binaries: %w", err)
	}
	e.dbPID = findProcess("mariadbd", "mysqld")
	if pid, err := strconv.Atoi(os.Getenv("BENCH_DB_PID")); err == nil && pid > 0 {
		e.dbPID = pid // the server of TEST_MYSQL_DSN when more than one runs here (make bench-scale)
	}
	return e, nil
}

// pinDB runs every thread of the database server on cpus (taskset's CPU list) until the bench ends, when
// the server gets back the CPUs it had.
func (e *env) pinDB(ctx context.Context, cpus string) error {
	if e.dbPID == 0 {
		return fmt.Errorf("pin the database: no database server found on this machine")
	}
	pid := strconv.Itoa(e.dbPID)
	out, err := exec.CommandContext(ctx, "taskset", "-cp", pid).Output()
	if err != nil {
		return fmt.Errorf("pin the database: read its CPUs: %w", err)
	}
	// "pid 123's current affinity list: 0,1"
	_, was, ok := strings.Cut(strings.TrimSpace(string(out)), ": ")
	if !ok {
		return fmt.Errorf("pin the database: unexpected taskset output %q", out)
	}
	if out, err := exec.CommandContext(ctx, "taskset", "-a", "-cp", cpus, pid).CombinedOutput(); err != nil {
		return fmt.Errorf("pin the database to CPUs %s: %w: %s", cpus, err, out)
	}
	progress("database server (pid %s) pinned to CPUs %s (was %s)", pid, cpus, was)
	e.cleanup = append(e.cleanup, func() {
		if out, err := exec.Command("taskset", "-a", "-cp", was, pid).CombinedOutput(); err != nil {
			progress("database server: could not restore CPUs %s: %v: %s", was, err, out)
		}
	})
	return nil
}

func (e *env) close() {
	for i := len(e.cleanup) - 1; i >= 0; i-- {
		e.cleanup[i]()
	}
}

// freshDB creates an empty database with the schema and returns its DSN.
func (e *env) freshDB(ctx context.Context) (string, error) {
	cfg, err := mysql.ParseDSN(e.adminDSN)
	if err != nil {
		return "", err
	}
	name := testenv.Name("convtest_bench_")
	db, err := sql.Open("mysql", e.adminDSN)
	if err != nil {
		return "", err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create database: %w", err)
	}
	e.cleanup = append(e.cleanup, func() {
		if db, err := sql.Open("mysql", e.adminDSN); err == nil {
			_, _ = db.Exec("DROP DATABASE " + name)
			_ = db.Close()
		}
	})
	cfg.DBName = name
	dsn := cfg.FormatDSN()
	s, err := mysqlstore.Open(dsn, mysqlstore.Options{MaxOpenConns: 2})
	if err != nil {
		return "", err
	}
	defer s.Close()
	return dsn, s.Migrate(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// freshTopic creates an events topic, its dead-letter topic and its change feed (name + ".changes").
func (e *env) freshTopic(ctx context.Context, partitions int) (string, error) {
	name := testenv.Name("bench.events.")
	e.cleanup = append(e.cleanup, func() {
		c := &kafkago.Client{Addr: kafkago.TCP(e.brokers...), Timeout: 10 * time.Second}
		_, _ = c.DeleteTopics(context.Background(), &kafkago.DeleteTopicsRequest{Topics: []string{name, name + ".dlq", name + ".changes"}})
	})
	return name, topicadmin.Ensure(ctx, nil, e.brokers, topicadmin.Topic{Name: name, Partitions: partitions},
		topicadmin.Topic{Name: name + ".dlq", Partitions: 1}, topicadmin.Topic{Name: name + ".changes", Partitions: 1})
}

// proc is a started binary of the service.
type proc struct {
	name string
	cmd  *exec.Cmd
	addr string
	done chan error
	log  string // the file its output goes to
}

// apiEnv is the API's environment on dsn, following the change feed of topic as deployed.
func (e *env) apiEnv(dsn, topic string) map[string]string {
	return map[string]string{"MYSQL_DSN": dsn, "KAFKA_BROKERS": strings.Join(e.brokers, ","), "KAFKA_CHANGES_TOPIC": topic + ".changes"}
}

// start runs one of the built binaries with env vars on top of the bench's own environment and waits
// until its /readyz answers 200.
func (e *env) start(ctx context.Context, name string, vars map[string]string) (*proc, error) {
	addrVar := map[string]string{"projector": "PROJECTOR_HTTP_ADDR", "api": "API_HTTP_ADDR"}[name]
	cmd := exec.Command(filepath.Join(e.binDir, name))
	if name == "projector" && e.projectorCPUs != "" {
		// taskset execs the binary in its own process, so the pid (CPU time, RSS) stays the projector's.
		cmd = exec.Command("taskset", "-c", e.projectorCPUs, cmd.Path)
	}
	return e.startCmd(ctx, name, cmd, addrVar, vars)
}

// startCmd starts cmd with its listen address in addrVar and vars on top of the bench's environment,
// and waits until its /readyz answers 200.
func (e *env) startCmd(ctx context.Context, name string, cmd *exec.Cmd, addrVar string, vars map[string]string) (*proc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	// SLOW_BATCH: the projector logs each batch whose oldest record took 50 ms (the large group's p99
	// target) from fetched to applied, which the large section matches with its slowest messages.
	cmd.Env = append(os.Environ(), addrVar+"="+addr, "LOG_LEVEL=warn", "KAFKA_ALLOW_UNREPLICATED=true", "SLOW_BATCH=50ms")
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	logFile, err := os.Create(filepath.Join(e.logDir, fmt.Sprintf("%s-%d.log", name, time.Now().UnixNano())))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, addr: addr, done: make(chan error, 1), log: logFile.Name()}
	go func() { p.done <- cmd.Wait(); _ = logFile.Close() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nil
			}
		}
		select {
		case err := <-p.done:
			return nil, fmt.Errorf("%s exited during start (%v); log: %s", name, err, logFile.Name())
		case <-ctx.Done():
			p.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("%s not ready after 60s; log: %s", name, logFile.Name())
		}
	}
}

// stop sends SIGTERM and waits for the process to leave.
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// metric returns the sum of the samples of a Prometheus metric family exposed by the process.
func (p *proc) metric(name string) (float64, error) {
	resp, err := http.Get("http://" + p.addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, fmt.Errorf("metric %s: %w", name, err)
		}
		sum += v
	}
	return sum, sc.Err()
}

// metrics returns every sample the process exposes, keyed by name and label set as exposed
// (`name{label="v"}`, or the bare name).
func (p *proc) metrics() (map[string]float64, error) {
	resp, err := http.Get("http://" + p.addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// cpuSeconds is a process's user+system CPU time from /proc/PID/stat.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ is 100 on Linux
}

// peakRSSMiB is a process's peak resident set (VmHWM) in MiB.
func peakRSSMiB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// findProcess returns the pid of the first process whose name is one of names, 0 if none.
func findProcess(names ...string) int {
	entries, _ := os.ReadDir("/proc")
	for _, en := range entries {
		pid, err := strconv.Atoi(en.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil {
			continue
		}
		for _, n := range names {
			if strings.TrimSpace(string(comm)) == n {
				return pid
			}
		}
	}
	return 0
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}
