package e2e

import (
	"context"
	"database/sql"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // database/sql driver for the checks
	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/refmodel"
	"github.com/convsync/conversations/internal/testenv"
	"github.com/convsync/conversations/internal/trafficgen"
)

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
	addr := testenv.FreeAddr(s.t)
	env := map[string]string{
		"MYSQL_DSN": s.dsn, "KAFKA_BROKERS": strings.Join(s.brokers, ","), "KAFKA_TOPIC": s.topic,
		"KAFKA_DLQ_TOPIC": s.dlq, "KAFKA_CHANGES_TOPIC": s.changes, "KAFKA_GROUP_ID": group, "PROJECTOR_HTTP_ADDR": addr,
		"BATCH_MAX_RECORDS": "200", "BATCH_MAX_WAIT": "20ms", "RECENTS_WINDOW": strconv.Itoa(s.window),
		// Several lanes whatever the default: two of a projector's partitions are applied at once, their
		// transactions changing rows of the same users.
		"PROJECTOR_LANES": "3",
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
