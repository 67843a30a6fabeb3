package testenv

import (
	"context"
	"database/sql"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// ReplicaPair is a fresh database on a MariaDB primary and the same database on a replica following it
// (deploy/local/replica-pair.sh; make test starts one). Tests that stop or freeze the replica affect
// every user of the pair: only one package (internal/replica) does, and its tests run one at a time.
type ReplicaPair struct {
	// PrimaryDSN and ReplicaDSN name the test's database on each server.
	PrimaryDSN, ReplicaDSN string
	admin                  string // an administrative DSN of the replica (STOP/START SLAVE)
	pidFile                string
	pid                    int // the replica's process (Freeze, Thaw)
}

// Replicated creates a fresh database with the schema on the pair's primary, waits until the replica
// has it, and drops it when the test ends (kept if the test failed). It needs TEST_REPLICA_PRIMARY_DSN,
// TEST_REPLICA_DSN, TEST_REPLICA_ADMIN_DSN and TEST_REPLICA_PIDFILE.
func Replicated(t testing.TB) ReplicaPair {
	t.Helper()
	primary := need(t, "TEST_REPLICA_PRIMARY_DSN", "a MariaDB primary with a replica")
	p := ReplicaPair{
		admin:   need(t, "TEST_REPLICA_ADMIN_DSN", "an administrative login on the replica"),
		pidFile: need(t, "TEST_REPLICA_PIDFILE", "the replica's pid file"),
	}
	replicaServer := need(t, "TEST_REPLICA_DSN", "a MariaDB replica")
	p.PrimaryDSN = freshDB(t, primary)
	cfg, err := mysql.ParseDSN(replicaServer)
	if err != nil {
		t.Fatalf("TEST_REPLICA_DSN: %v", err)
	}
	pc, _ := mysql.ParseDSN(p.PrimaryDSN)
	cfg.DBName = pc.DBName
	p.ReplicaDSN = cfg.FormatDSN()
	p.pid = p.replicaPID(t)
	p.WaitCaughtUp(t)
	return p
}

// exec runs statements on the replica as its administrator.
func (p ReplicaPair) exec(t testing.TB, stmts ...string) {
	t.Helper()
	db, err := sql.Open("mysql", p.admin)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			t.Fatalf("replica: %s: %v", s, err)
		}
	}
}

// StopApplying stops the replica's applier (it still receives the primary's changes): it lags, and
// answers, until StartApplying or the end of the test.
func (p ReplicaPair) StopApplying(t testing.TB) {
	t.Helper()
	p.exec(t, "STOP SLAVE SQL_THREAD")
	t.Cleanup(func() { p.exec(t, "START SLAVE SQL_THREAD") })
}

// StartApplying starts the replica's applier again.
func (p ReplicaPair) StartApplying(t testing.TB) {
	t.Helper()
	p.exec(t, "START SLAVE SQL_THREAD")
}

// Freeze stops the replica's process (SIGSTOP): connections to it hang, until Thaw or the end of the
// test.
func (p ReplicaPair) Freeze(t testing.TB) {
	t.Helper()
	p.signal(t, syscall.SIGSTOP)
	t.Cleanup(func() { p.signal(t, syscall.SIGCONT) })
}

// Thaw resumes a frozen replica (SIGCONT).
func (p ReplicaPair) Thaw(t testing.TB) {
	t.Helper()
	p.signal(t, syscall.SIGCONT)
}

func (p ReplicaPair) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(p.pid, sig); err != nil {
		t.Fatalf("signal %v to the replica (pid %d): %v", sig, p.pid, err)
	}
}

// replicaPID reads the replica's pid from TEST_REPLICA_PIDFILE, or, for a pair this checkout did not
// start (another checkout's, on the same ports), from the pid file the server names (@@pid_file).
func (p ReplicaPair) replicaPID(t testing.TB) int {
	t.Helper()
	b, err := os.ReadFile(p.pidFile)
	if err != nil {
		var path string
		db, oerr := sql.Open("mysql", p.admin)
		if oerr != nil {
			t.Fatal(oerr)
		}
		err = db.QueryRow("SELECT @@pid_file").Scan(&path)
		db.Close()
		if err == nil {
			b, err = os.ReadFile(path)
		}
	}
	if err != nil {
		t.Fatalf("the replica's pid (TEST_REPLICA_PIDFILE, else @@pid_file): %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("the replica's pid file: %v", err)
	}
	return pid
}

// WaitCaughtUp waits until the replica has applied everything the primary committed so far.
func (p ReplicaPair) WaitCaughtUp(t testing.TB) {
	t.Helper()
	pdb, err := sql.Open("mysql", p.PrimaryDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer pdb.Close()
	rdb, err := sql.Open("mysql", p.admin)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var pos string
	if err := pdb.QueryRowContext(ctx, "SELECT @@gtid_binlog_pos").Scan(&pos); err != nil {
		t.Fatalf("primary position: %v", err)
	}
	var res sql.NullInt64
	if err := rdb.QueryRowContext(ctx, "SELECT MASTER_GTID_WAIT(?, 50)", pos).Scan(&res); err != nil || res.Int64 != 0 {
		t.Fatalf("replica did not reach %s: %v (%v)", pos, res, err)
	}
}
