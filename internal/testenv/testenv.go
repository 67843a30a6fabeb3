// Package testenv gives integration tests the real services that `make test` starts: a fresh MySQL
// database per test and fresh Kafka topics. Without the services a test skips, unless
// REQUIRE_INTEGRATION=1 (set by make test) makes the absence a failure.
package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	kafkago "github.com/segmentio/kafka-go"

	mysqlstore "github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/topicadmin"
)

func need(t testing.TB, env, what string) string {
	t.Helper()
	v := os.Getenv(env)
	if v == "" {
		if os.Getenv("REQUIRE_INTEGRATION") == "1" {
			t.Fatalf("%s is not set: %s is required (run the tests with make test)", env, what)
		}
		t.Skipf("%s is not set: skipping, this test needs %s (make test starts it)", env, what)
	}
	return v
}

// Name returns a random name with the given prefix, safe as a database or topic name.
func Name(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// MySQLDSN creates a fresh database with the schema applied and returns its DSN. The database is dropped
// when the test ends (kept if the test failed, for a look at its rows).
//
// With TEST_VITESS_DSN set (make test-vitess), the tests run through vtgate instead: the DSN targets one
// shard of the sharded read model ("conv:-80"), whose tables are emptied for each test. Tests of one
// package then run one at a time against it, and packages one at a time (go test -p 1).
func MySQLDSN(t testing.TB) string {
	t.Helper()
	if dsn := os.Getenv("TEST_VITESS_DSN"); dsn != "" {
		return vitessDSN(t, dsn)
	}
	return freshDB(t, need(t, "TEST_MYSQL_DSN", "a MySQL-compatible server"))
}

// freshDB is MySQLDSN on the server admin names.
func freshDB(t testing.TB, admin string) string {
	t.Helper()
	cfg, err := mysql.ParseDSN(admin)
	if err != nil {
		t.Fatalf("TEST_MYSQL_DSN: %v", err)
	}
	name := Name("convtest_")
	db, err := sql.Open("mysql", admin)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kept database %s of the failed test", name)
			return
		}
		db, err := sql.Open("mysql", admin)
		if err == nil {
			_, _ = db.Exec("DROP DATABASE " + name)
			_ = db.Close()
		}
	})
	cfg.DBName = name
	dsn := cfg.FormatDSN()
	s, err := mysqlstore.Open(dsn, mysqlstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(ctx, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatalf("migrate test database: %v", err)
	}
	return dsn
}

// VitessKeyspace returns the keyspace DSN of the read model sharded by user (TEST_VITESS_KEYSPACE_DSN,
// "…/conv") and its shards (TEST_VITESS_SHARDS), or skips the test: make test-vitess runs it through
// vtgate.
func VitessKeyspace(t testing.TB) (string, []mysqlstore.KeyRange) {
	t.Helper()
	dsn := os.Getenv("TEST_VITESS_KEYSPACE_DSN")
	if dsn == "" || !Vitess() {
		t.Skip("TEST_VITESS_KEYSPACE_DSN is not set: make test-vitess runs this test through vtgate")
	}
	shards, err := mysqlstore.ParseShards(os.Getenv("TEST_VITESS_SHARDS"))
	if err != nil {
		t.Fatalf("TEST_VITESS_SHARDS: %v", err)
	}
	return dsn, shards
}

// Vitess reports whether the tests run through vtgate (TEST_VITESS_DSN): tests of what Vitess does
// differently (a schema per rebuild, RENAME TABLE across schemas) skip then.
func Vitess() bool { return os.Getenv("TEST_VITESS_DSN") != "" }

// vitessTables are the read model's tables, emptied before each test through vtgate.
var vitessTables = []string{"conversations", "user_versions", "channels", "messages", "late_messages", "channel_members"}

// vitessCalls counts each test's MySQLDSN calls: the nth gets the nth shard of TEST_VITESS_SHARDS, so a
// test that compares two stores gets two databases.
var vitessCalls sync.Map // test name -> *atomic.Int32

func vitessDSN(t testing.TB, dsn string) string {
	if shards := os.Getenv("TEST_VITESS_SHARDS"); shards != "" {
		c, _ := vitessCalls.LoadOrStore(t.Name(), new(atomic.Int32))
		i := int(c.(*atomic.Int32).Add(1)) - 1
		list := strings.Split(shards, ",")
		if i >= len(list) {
			t.Skipf("this test needs %d separate databases; through vtgate there are %d shards", i+1, len(list))
		}
		cfg, err := mysql.ParseDSN(dsn)
		if err != nil {
			t.Fatalf("TEST_VITESS_DSN: %v", err)
		}
		keyspace, _, _ := strings.Cut(cfg.DBName, ":")
		cfg.DBName = keyspace + ":" + list[i]
		dsn = cfg.FormatDSN()
	}
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatalf("TEST_VITESS_DSN: %v", err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, table := range vitessTables {
		if err := EmptyTable(ctx, db, table); err != nil {
			t.Fatalf("empty %s through vtgate: %v", table, err)
		}
	}
	return dsn
}

// EmptyTable deletes every row of table, a few thousand per statement: vttablet refuses a DML that
// changes more than 10,000 rows.
func EmptyTable(ctx context.Context, db *sql.DB, table string) error {
	for {
		res, err := db.ExecContext(ctx, "DELETE FROM "+table+" LIMIT 5000")
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
	}
}

// Store returns a store on a fresh database, closed when the test ends.
func Store(t testing.TB, opts mysqlstore.Options) (*mysqlstore.Store, string) {
	t.Helper()
	dsn := MySQLDSN(t)
	s, err := mysqlstore.Open(dsn, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, dsn
}

// KafkaBrokers returns the test broker addresses.
func KafkaBrokers(t testing.TB) []string {
	t.Helper()
	return strings.Split(need(t, "TEST_KAFKA_BROKERS", "a Kafka broker"), ",")
}

// TopicSet names a test's fresh topics.
type TopicSet struct {
	// Events has the partitions the test asked for; DLQ and Changes (the change feed) have one.
	Events, DLQ, Changes string
}

// Topics creates fresh topics, deleted when the test ends (kept if it failed), and returns their names.
func Topics(t testing.TB, brokers []string, partitions int) TopicSet {
	t.Helper()
	events := Name("test.events.")
	ts := TopicSet{Events: events, DLQ: events + ".dlq", Changes: events + ".changes"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	DeleteTopicsAtCleanup(t, brokers, ts.Events, ts.DLQ, ts.Changes)
	if err := topicadmin.Ensure(ctx, nil, brokers, topicadmin.Topic{Name: ts.Events, Partitions: partitions},
		topicadmin.Topic{Name: ts.Changes, Partitions: 1}); err != nil {
		t.Fatalf("create test topics: %v", err)
	}
	limit, err := topicadmin.MaxMessageBytes(ctx, nil, brokers, ts.Events)
	if err == nil {
		err = topicadmin.Ensure(ctx, nil, brokers, topicadmin.DeadLetterTopic(ts.DLQ, 1, limit))
	}
	if err != nil {
		t.Fatalf("create the test dead-letter topic: %v", err)
	}
	return ts
}

// DeleteTopicsAtCleanup deletes the topics when the test ends, unless it failed (then they are kept for
// a look at their records).
func DeleteTopicsAtCleanup(t testing.TB, brokers []string, topics ...string) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kept topics %v of the failed test", topics)
			return
		}
		c := &kafkago.Client{Addr: kafkago.TCP(brokers...), Timeout: 10 * time.Second}
		_, _ = c.DeleteTopics(context.Background(), &kafkago.DeleteTopicsRequest{Topics: topics})
	})
}

// SecureKafka is the test broker's SASL_SSL listener: what the tests of secure connections need.
type SecureKafka struct {
	// Brokers are the SASL_SSL addresses (TEST_KAFKA_SASL_BROKERS).
	Brokers []string
	// AdminBrokers are a plaintext listener of the same cluster, for creating topics and SCRAM users
	// (TEST_KAFKA_SASL_ADMIN_BROKERS; default TEST_KAFKA_BROKERS).
	AdminBrokers []string
	// CAFile is the PEM file of the CA that signed the listener's certificate (TEST_KAFKA_TLS_CA_FILE).
	CAFile string
	// PlainUser and PlainPassword are the PLAIN user the broker's configuration declares
	// (deploy/local/kafka.sh: convtest/convtest-secret).
	PlainUser, PlainPassword string
}

// SASLKafka returns the test broker's SASL_SSL listener (make test starts a broker with one).
func SASLKafka(t testing.TB) SecureKafka {
	t.Helper()
	admin := os.Getenv("TEST_KAFKA_SASL_ADMIN_BROKERS")
	if admin == "" {
		admin = need(t, "TEST_KAFKA_BROKERS", "a Kafka broker")
	}
	return SecureKafka{
		AdminBrokers:  strings.Split(admin, ","),
		Brokers:       strings.Split(need(t, "TEST_KAFKA_SASL_BROKERS", "a Kafka broker with a SASL_SSL listener"), ","),
		CAFile:        need(t, "TEST_KAFKA_TLS_CA_FILE", "the CA file of the broker's SASL_SSL listener"),
		PlainUser:     "convtest",
		PlainPassword: "convtest-secret",
	}
}

// FreeAddr returns a loopback address with a port that was free a moment ago, for a server under test
// to listen on.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Eventually polls cond every 20 ms until it holds, failing the test with what once timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
