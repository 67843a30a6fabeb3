package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/projector"
	"github.com/convsync/conversations/internal/testenv"
	"github.com/convsync/conversations/internal/trafficgen"
)

// fixture is a fresh database and fresh topics, and the environment that points convctl at them.
type fixture struct {
	dsn     string
	brokers []string
	topics  testenv.TopicSet
	group   string
	environ map[string]string
}

func newFixture(t *testing.T, partitions int) fixture {
	t.Helper()
	brokers := testenv.KafkaBrokers(t)
	f := fixture{dsn: testenv.MySQLDSN(t), brokers: brokers, topics: testenv.Topics(t, brokers, partitions), group: testenv.Name("group.")}
	f.environ = map[string]string{"MYSQL_DSN": f.dsn, "KAFKA_BROKERS": strings.Join(brokers, ","), "KAFKA_TOPIC": f.topics.Events,
		"KAFKA_DLQ_TOPIC": f.topics.DLQ, "KAFKA_GROUP_ID": f.group}
	return f
}

func (f fixture) convctl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := run(ctx, args, f.environ, &out)
	return out.String(), err
}

func (f fixture) produce(t *testing.T, topic string, msgs ...kafkago.Message) {
	t.Helper()
	w := &kafkago.Writer{Addr: kafkago.TCP(f.brokers...), Topic: topic, Balancer: &kafkago.Murmur2Balancer{},
		RequiredAcks: kafkago.RequireAll, BatchTimeout: time.Millisecond}
	defer w.Close()
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatalf("produce to %s: %v", topic, err)
	}
}

func event(seq int, from, channel string, typ int, subscribers ...string) kafkago.Message {
	subs, _ := json.Marshal(subscribers)
	v := fmt.Sprintf(`{"message_id":%d,"message_seq":%d,"from_uid":%q,"channel_id":%q,"channel_type":%d,"header":{"red_dot":1},"subscribers":%s}`,
		1000+seq, seq, from, channel, typ, subs)
	return kafkago.Message{Key: []byte(channel), Value: []byte(v)}
}

func TestUsage(t *testing.T) {
	f := fixture{environ: map[string]string{}}
	for _, args := range [][]string{{}, {"nope"}, {"dlq"}, {"dlq", "redrive"}, {"purge-user", "-uid", "u"}, {"rebuild"},
		{"lag", "-bogus"}, {"dlq", "list", "-offsets", "x"}} {
		if _, err := f.convctl(t, args...); !errors.Is(err, errUsage) {
			t.Errorf("convctl %v: %v, want a usage error", args, err)
		}
	}
	if err := run(context.Background(), []string{"lag"}, map[string]string{"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, &strings.Builder{}); err == nil ||
		!strings.Contains(err.Error(), "KAFKA_SASL_USERNAME") {
		t.Errorf("bad Kafka config: %v, want an error naming the variable", err)
	}
}

func TestLag(t *testing.T) {
	f := newFixture(t, 2)
	f.produce(t, f.topics.Events, event(1, "a", "g1", 2, "b"), event(2, "a", "g1", 2, "b"), event(1, "a", "g2", 2, "b"))
	e := &cmdEnv{cfg: mustConfig(t, f.environ)}
	c, err := e.cluster()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Before any commit the group lags by everything; after committing partition 0's end, by the rest.
	out, err := f.convctl(t, "lag")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "total") || !strings.HasSuffix(strings.TrimSpace(out), " 3") {
		t.Fatalf("lag before any commit:\n%s\nwant a total of 3", out)
	}
	_, _, end, _, err := c.groupLag(context.Background(), f.group, f.topics.Events)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.commit(context.Background(), f.group, f.topics.Events, map[int]int64{0: end[0]}); err != nil {
		t.Fatal(err)
	}
	out, err = f.convctl(t, "lag")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(" %d", end[1])
	if !strings.HasSuffix(strings.TrimSpace(out), want) || !strings.Contains(out, fmt.Sprintf("0          %d", end[0])) {
		t.Fatalf("lag after committing partition 0:\n%s\nwant partition 0 committed at %d and a total of%s", out, end[0], want)
	}
}

func letterMsg(key, value, reason string, reduced bool) kafkago.Message {
	hs := []kafkago.Header{{Key: "trace-id", Value: []byte("t-" + key)}, {Key: projector.HeaderReason, Value: []byte(reason)},
		{Key: projector.HeaderError, Value: []byte("bad " + reason)}, {Key: projector.HeaderSourceTopic, Value: []byte("events")},
		{Key: projector.HeaderSourcePartition, Value: []byte("0")}, {Key: projector.HeaderSourceOffset, Value: []byte("7")}}
	if reduced {
		hs = append(hs, kafkago.Header{Key: projector.HeaderValueBytes, Value: []byte("2000000")})
	}
	return kafkago.Message{Key: []byte(key), Value: []byte(value), Headers: hs}
}

func TestDeadLetters(t *testing.T) {
	f := newFixture(t, 1)
	good := string(event(1, "a", "g9", 2, "b").Value)
	f.produce(t, f.topics.DLQ,
		letterMsg("k1", "{bad", conversation.ReasonInvalidJSON, false),
		letterMsg("k2", "{bad too", conversation.ReasonInvalidJSON, false),
		letterMsg("g9", good, projector.ReasonApplyFailed, false),
		letterMsg("k4", `{"type":"message.sent","message_seq":1`, conversation.ReasonTooLarge, true))

	out, err := f.convctl(t, "dlq", "list")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"invalid_json  2", "apply_failed  1", "too_large     1", "events/0@7", "reduced"} {
		if !strings.Contains(out, want) {
			t.Errorf("dlq list lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "{bad") {
		t.Errorf("dlq list prints record values:\n%s", out)
	}
	out, err = f.convctl(t, "dlq", "list", "-json", "-reason", conversation.ReasonInvalidJSON)
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.Contains(lines[1], `"offset":1`) {
		t.Errorf("dlq list -json -reason invalid_json:\n%s\nwant the letters at offsets 0 and 1", out)
	}

	// Re-drive the apply_failed letter (its cause fixed) by reason; a dry run sends nothing.
	if out, err = f.convctl(t, "dlq", "redrive", "-reason", projector.ReasonApplyFailed, "-dry-run"); err != nil || !strings.Contains(out, "would re-drive 1") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	if out, err = f.convctl(t, "dlq", "redrive", "-reason", projector.ReasonApplyFailed); err != nil || !strings.Contains(out, "re-drove 1") {
		t.Fatalf("redrive: %v\n%s", err, out)
	}
	// -all skips the reduced letter, whose value is only a prefix.
	if out, err = f.convctl(t, "dlq", "redrive", "-all", "-to", f.topics.Changes); err != nil || !strings.Contains(out, "re-drove 3") ||
		!strings.Contains(out, "skipped 1 reduced") {
		t.Fatalf("redrive -all: %v\n%s", err, out)
	}
	r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: f.brokers, Topic: f.topics.Events, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := r.ReadMessage(ctx)
	if err != nil {
		t.Fatalf("read the re-driven record: %v", err)
	}
	if string(m.Key) != "g9" || string(m.Value) != good {
		t.Fatalf("re-driven record %q=%q, want the dead letter's key and value", m.Key, m.Value)
	}
	var keys []string
	for _, h := range m.Headers {
		keys = append(keys, h.Key+"="+string(h.Value))
	}
	if got := strings.Join(keys, ","); got != "trace-id=t-g9,"+redriveHeader+"="+f.topics.DLQ+"/0/2" {
		t.Fatalf("re-driven headers %s: want the original's and where it was re-driven from, no x-dlq-*", got)
	}
}

func mustConfig(t *testing.T, environ map[string]string) config {
	cfg, err := loadConfig(environ)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func apply(t *testing.T, s *mysql.Store, msgs ...kafkago.Message) {
	t.Helper()
	var evs []conversation.Event
	for _, m := range msgs {
		e, err := conversation.DecodeEvent(m.Value, time.Now(), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, e)
	}
	if _, err := s.ApplyBatch(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
}

func TestPurgeUser(t *testing.T) {
	f := newFixture(t, 1)
	s, err := mysql.Open(f.dsn, mysql.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	apply(t, s, event(1, "alice", "g1", 2, "alice", "bob"), event(1, "alice", "bob", 1))
	if _, err := s.DB().Exec(`INSERT INTO channel_members (channel_id, channel_type, uid) VALUES ('g2', 2, 'bob')`); err != nil {
		t.Fatal(err)
	}
	out, err := f.convctl(t, "purge-user", "-uid", "bob", "-memberships", "-yes")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `purged "bob": 2 conversations, 1 version row, 1 memberships`) {
		t.Fatalf("purge-user said:\n%s", out)
	}
	var bob, alice int
	if err := s.DB().Get(&bob, `SELECT (SELECT COUNT(*) FROM conversations WHERE uid='bob') + (SELECT COUNT(*) FROM user_versions WHERE uid='bob')
		+ (SELECT COUNT(*) FROM channel_members WHERE uid='bob')`); err != nil {
		t.Fatal(err)
	}
	if err := s.DB().Get(&alice, `SELECT COUNT(*) FROM conversations WHERE uid='alice'`); err != nil {
		t.Fatal(err)
	}
	if bob != 0 || alice != 2 {
		t.Fatalf("after the purge bob has %d rows, alice %d conversations; want 0 and 2", bob, alice)
	}
}

// TestRebuildAndSwitch: a live read model with a corrupted row is rebuilt from the topic into a fresh
// schema and switched in while readers keep reading the live tables; the corruption is gone, every
// version is above the old ones, the old tables are kept, and the live group resumes where the rebuild
// stopped.
func TestRebuildAndSwitch(t *testing.T) {
	f := newFixture(t, 2)
	live, rebuilt, old := schemaOf(t, f.dsn), testenv.Name("convtest_rb_"), testenv.Name("convtest_old_")
	t.Cleanup(func() { dropSchemas(t, f.dsn, rebuilt, old) })
	// A generated stream (groups, person chats, membership churn) and a few events of our own.
	recs, _, err := trafficgen.Generate(trafficgen.Config{Seed: 7, Messages: 1500, Users: 30, PersonPairs: 20, PersonShare: 0.3,
		Groups: 8, ChurnRate: 0.05})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := trafficgen.Produce(context.Background(), trafficgen.ProducerConfig{Brokers: f.brokers, Topic: f.topics.Events},
		slices.Values(recs), len(recs)); err != nil {
		t.Fatal(err)
	}
	f.produce(t, f.topics.Events, event(1, "alice", "hand1", 2, "alice", "bob"), event(2, "alice", "hand1", 2, "alice", "bob"),
		event(1, "carol", "bob", 1), event(3, "carol", "hand1", 2, "alice", "bob", "carol"))
	e := &cmdEnv{cfg: mustConfig(t, f.environ), out: &strings.Builder{}, log: testLog()}
	c, err := e.cluster()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The live model, built by a projector in the live group; then a bug corrupts a row.
	if err := e.catchUp(context.Background(), c, live, f.group, f.topics.DLQ); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("mysql", f.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var want, oldMax int64
	if err := db.QueryRow(`SELECT unread FROM conversations WHERE uid='bob' AND channel_id='hand1'`).Scan(&want); err != nil || want != 3 {
		t.Fatalf("live model: bob's unread in g1 = %d (%v), want 3", want, err)
	}
	if _, err := db.Exec(`UPDATE conversations SET unread = 42 WHERE uid = 'bob' AND channel_id = 'hand1'`); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(`SELECT MAX(version) FROM user_versions`).Scan(&oldMax); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteTopic(f.brokers, f.topics.DLQ+".rebuild."+rebuilt) })

	if out, err := f.convctl(t, "rebuild", "-schema", rebuilt); err != nil || !strings.Contains(out, "caught up") {
		t.Fatalf("rebuild: %v\n%s", err, out)
	}
	// The rebuild is faithful: every table as the live projector wrote it, versions aside, except the
	// row the bug corrupted.
	if _, err := db.Exec("UPDATE `" + rebuilt + "`.conversations SET unread = 42 WHERE uid = 'bob' AND channel_id = 'hand1'"); err != nil {
		t.Fatal(err)
	}
	tables, err := e.storeTables(t, f.dsn, live)
	if err != nil {
		t.Fatal(err)
	}
	for _, table := range tables {
		if table == "goose_db_version" {
			continue
		}
		if a, b := dump(t, db, live, table), dump(t, db, rebuilt, table); a != b {
			t.Errorf("table %s: the rebuild differs from the live model (%d vs %d bytes)", table, len(a), len(b))
		}
	}
	if _, err := db.Exec("UPDATE `" + rebuilt + "`.conversations SET unread = 3 WHERE uid = 'bob' AND channel_id = 'hand1'"); err != nil {
		t.Fatal(err)
	}
	// New events arrive after the rebuild; the live projector is stopped (it is, its group is empty).
	f.produce(t, f.topics.Events, event(4, "alice", "hand1", 2, "alice", "bob"))

	var reads, failures atomic.Int64
	stop := make(chan struct{})
	readerDone := make(chan struct{})
	go func() { // the API's reads, meanwhile
		defer close(readerDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			var n int
			if err := db.QueryRow(`SELECT COUNT(*) FROM conversations c JOIN user_versions v ON v.uid = c.uid`).Scan(&n); err != nil {
				failures.Add(1)
				t.Logf("read during the switch: %v", err)
			}
			reads.Add(1)
		}
	}()
	out, err := f.convctl(t, "switch", "-schema", rebuilt, "-old", old)
	close(stop)
	<-readerDone
	if err != nil || !strings.Contains(out, "switched") || !strings.Contains(out, "moved group") {
		t.Fatalf("switch: %v\n%s", err, out)
	}
	if failures.Load() > 0 || reads.Load() == 0 {
		t.Errorf("%d of %d reads of the live tables failed during the switch", failures.Load(), reads.Load())
	}
	var unread, minVersion, oldUnread int64
	if err := db.QueryRow(`SELECT unread FROM conversations WHERE uid='bob' AND channel_id='hand1'`).Scan(&unread); err != nil || unread != 4 {
		t.Errorf("after the switch bob's unread in g1 = %d (%v), want 4 (3 rebuilt + the late event)", unread, err)
	}
	if err := db.QueryRow(`SELECT MIN(version) FROM conversations`).Scan(&minVersion); err != nil {
		t.Fatal(err)
	}
	if minVersion <= oldMax {
		t.Errorf("after the switch the lowest version is %d, want above the old model's highest %d", minVersion, oldMax)
	}
	if err := db.QueryRow("SELECT unread FROM `" + old + "`.conversations WHERE uid='bob' AND channel_id='hand1'").Scan(&oldUnread); err != nil || oldUnread != 42 {
		t.Errorf("old tables: bob's unread = %d (%v), want the corrupted 42 kept", oldUnread, err)
	}
	parts, committed, end, lag, err := c.groupLag(context.Background(), f.group, f.topics.Events)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		if lag[p] != 0 || (end[p] > 0 && committed[p] != end[p]) {
			t.Errorf("live group on partition %d at %d, want %d (where the rebuild stopped)", p, committed[p], end[p])
		}
	}
	// Switching again to the now empty schema must refuse, not empty the live model.
	if out, err := f.convctl(t, "switch", "-schema", rebuilt, "-old", old+"x"); err == nil || !strings.Contains(err.Error(), "holds no tables") {
		t.Errorf("a second switch to the emptied schema: %v\n%s", err, out)
	}
}

func (e *cmdEnv) storeTables(t *testing.T, dsn, schema string) ([]string, error) {
	s, err := mysql.Open(dsn, mysql.Options{})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return s.Tables(context.Background(), schema)
}

// dump is a table's rows, all columns but version, in a stable order.
func dump(t *testing.T, db *sql.DB, schema, table string) string {
	t.Helper()
	rows, err := db.Query(`SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?
		AND column_name <> 'version' ORDER BY ordinal_position`, schema, table)
	if err != nil {
		t.Fatal(err)
	}
	var cols []string
	for rows.Next() {
		var c string
		_ = rows.Scan(&c)
		cols = append(cols, "`"+c+"`")
	}
	rows.Close()
	list := strings.Join(cols, ",")
	rows, err = db.Query("SELECT CONCAT_WS('|'," + list + ") FROM `" + schema + "`.`" + table + "` ORDER BY " + list)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var line sql.NullString
		_ = rows.Scan(&line)
		b.WriteString(line.String + "\n")
	}
	return b.String()
}

func schemaOf(t *testing.T, dsn string) string {
	c, err := gomysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return c.DBName
}

func dropSchemas(t *testing.T, dsn string, schemas ...string) {
	if t.Failed() {
		t.Logf("kept schemas %v of the failed test", schemas)
		return
	}
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return
	}
	defer db.Close()
	for _, s := range schemas {
		_, _ = db.Exec("DROP DATABASE IF EXISTS `" + s + "`")
	}
}

func deleteTopic(brokers []string, topic string) {
	c := &kafkago.Client{Addr: kafkago.TCP(brokers...), Timeout: 10 * time.Second}
	_, _ = c.DeleteTopics(context.Background(), &kafkago.DeleteTopicsRequest{Topics: []string{topic}})
}

// TestOverSASLSSL: convctl reaches a broker that takes SASL_SSL only, with the same variables as the
// other binaries (lag reads metadata, offsets and the group's commits; dlq list reads records).
func TestOverSASLSSL(t *testing.T) {
	sec := testenv.SASLKafka(t)
	topics := testenv.Topics(t, sec.AdminBrokers, 1)
	f := fixture{brokers: sec.AdminBrokers, topics: topics}
	f.environ = map[string]string{"KAFKA_BROKERS": strings.Join(sec.Brokers, ","), "KAFKA_TOPIC": topics.Events,
		"KAFKA_DLQ_TOPIC": topics.DLQ, "KAFKA_GROUP_ID": testenv.Name("group."), "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
		"KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": sec.PlainUser, "KAFKA_SASL_PASSWORD": sec.PlainPassword,
		"KAFKA_TLS_CA_FILE": sec.CAFile}
	f.produce(t, topics.Events, event(1, "a", "g1", 2, "b"))
	f.produce(t, topics.DLQ, letterMsg("k1", "{bad", conversation.ReasonInvalidJSON, false))
	if out, err := f.convctl(t, "lag"); err != nil || !strings.HasSuffix(strings.TrimSpace(out), " 1") {
		t.Fatalf("lag over SASL_SSL: %v\n%s", err, out)
	}
	if out, err := f.convctl(t, "dlq", "list"); err != nil || !strings.Contains(out, "invalid_json  1") {
		t.Fatalf("dlq list over SASL_SSL: %v\n%s", err, out)
	}
	f.environ["KAFKA_SASL_PASSWORD"] = "wrong"
	if _, err := f.convctl(t, "lag"); err == nil {
		t.Fatal("lag with a wrong SASL password succeeded")
	}
}
