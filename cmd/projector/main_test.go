package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/projector"
	"github.com/convsync/conversations/internal/testenv"
	"github.com/convsync/conversations/internal/topicadmin"
)

func TestConfigDefaults(t *testing.T) {
	c, err := loadConfig(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	if c.MySQLDSN != "conv:conv@tcp(127.0.0.1:3306)/conversations" || len(c.KafkaBrokers) != 1 ||
		c.KafkaBrokers[0] != "127.0.0.1:9092" || c.KafkaTopic != "im.messages" || c.KafkaDLQTopic != "im.messages.dlq" ||
		c.KafkaGroupID != "conversation-projector" || c.HTTPAddr != "127.0.0.1:8081" || c.LogLevel != slog.LevelInfo ||
		c.BatchMaxRecords != 5000 || c.KafkaSessionTimeout != 10*time.Second || c.BatchMaxBytes != 16<<20 || c.BatchMaxWait != 0 || c.RecentsWindow != 200 ||
		fmt.Sprint(c.SkipChannelTypes) != "[6 7 8 9]" || c.MaxEventBytes != 1<<20 || c.TombstoneMaxAge != 0 ||
		c.ShutdownTimeout != 10*time.Second || c.Lanes != projector.DefaultLanes {
		t.Fatalf("defaults = %+v", c)
	}
	none, err := loadConfig(map[string]string{"SKIP_CHANNEL_TYPES": ""})
	if err != nil || len(none.SkipChannelTypes) != 0 {
		t.Fatalf("SKIP_CHANNEL_TYPES set but empty = %v (%v), want no type skipped", none.SkipChannelTypes, err)
	}
}

func TestConfigReportsEveryInvalidValueAtOnce(t *testing.T) {
	_, err := loadConfig(map[string]string{
		"MYSQL_DSN":          "no-slash",
		"KAFKA_DLQ_TOPIC":    "im.messages",
		"BATCH_MAX_RECORDS":  "0",
		"SKIP_CHANNEL_TYPES": "6,300",
		"TOMBSTONE_MAX_AGE":  "-1h",
		"SHUTDOWN_TIMEOUT":   "0s",
		"PROJECTOR_LANES":    "0",
	})
	if err == nil {
		t.Fatal("loadConfig accepted invalid values")
	}
	for _, want := range []string{"MYSQL_DSN", "KAFKA_DLQ_TOPIC", "BATCH_MAX_RECORDS", "SKIP_CHANNEL_TYPES: 300",
		"TOMBSTONE_MAX_AGE", "SHUTDOWN_TIMEOUT", "PROJECTOR_LANES"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestConfigUnparsableValueNamesTheVariable(t *testing.T) {
	_, err := loadConfig(map[string]string{"BATCH_MAX_WAIT": "soon", "LOG_LEVEL": "loud"})
	if err == nil || !strings.Contains(err.Error(), "BATCH_MAX_WAIT") || !strings.Contains(err.Error(), "LOG_LEVEL") {
		t.Fatalf("err = %v, want both variables named", err)
	}
}

func TestConfigLogNeverShowsThePassword(t *testing.T) {
	c, err := loadConfig(map[string]string{"MYSQL_DSN": "conv:s3cret-pw@tcp(db:3306)/conversations",
		"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD": "kafka-s3cret-pw"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("starting", "config", c)
	if strings.Contains(buf.String(), "s3cret-pw") || !strings.Contains(buf.String(), "db:3306") ||
		!strings.Contains(buf.String(), `"sasl_username":"svc"`) {
		t.Fatalf("logged config %s: want the DSN and Kafka user without their passwords", buf.String())
	}
	if s := fmt.Sprintf("%v %+v %s", c, c, c); strings.Contains(s, "s3cret-pw") {
		t.Fatalf("printed config holds a password: %s", s)
	}
}

func TestConfigSecureConnections(t *testing.T) {
	_, err := loadConfig(map[string]string{"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "GSSAPI",
		"MYSQL_TLS_CERT_FILE": "/c.pem"})
	for _, v := range []string{"KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "MYSQL_TLS_KEY_FILE"} {
		if err == nil || !strings.Contains(err.Error(), v) {
			t.Errorf("err = %v, want it to name %s", err, v)
		}
	}
	c, err := loadConfig(map[string]string{"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
		"KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p", "KAFKA_TLS_CA_FILE": "/ca.pem", "MYSQL_TLS_CA_FILE": "/db-ca.pem"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Kafka.SASLMechanism != "SCRAM-SHA-256" || c.Kafka.TLSCAFile != "/ca.pem" || c.MySQLTLS.CAFile != "/db-ca.pem" {
		t.Fatalf("secure settings not read: %+v %+v", c.Kafka, c.MySQLTLS)
	}
}

// run against the real services: ready, projects a record, stops cleanly on cancel.
func TestRunProjectsAndStopsCleanly(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topics := testenv.Topics(t, brokers, 2)
	topic, dlq := topics.Events, topics.DLQ
	store, dsn := testenv.Store(t, mysql.Options{})
	ctx := t.Context()
	addr, out, stop := startRun(t, map[string]string{"MYSQL_DSN": dsn, "KAFKA_BROKERS": strings.Join(brokers, ","),
		"KAFKA_TOPIC": topic, "KAFKA_DLQ_TOPIC": dlq, "KAFKA_CHANGES_TOPIC": topics.Changes, "KAFKA_GROUP_ID": testenv.Name("group."),
		"TOMBSTONE_MAX_AGE": "720h", "KAFKA_ALLOW_UNREPLICATED": "true"}, 20*time.Second, "/readyz answers 200")

	w := &kafkago.Writer{Addr: kafkago.TCP(brokers...), Topic: topic, RequiredAcks: kafkago.RequireAll, BatchTimeout: time.Millisecond}
	defer w.Close()
	value := `{"message_id":1,"message_seq":1,"from_uid":"alice","channel_id":"g1","channel_type":2,"header":{"red_dot":1},"subscribers":["bob"]}`
	testenv.Eventually(t, 10*time.Second, "the record is produced", func() bool {
		return w.WriteMessages(ctx, kafkago.Message{Key: []byte("g1"), Value: []byte(value)}) == nil
	})
	testenv.Eventually(t, 20*time.Second, "bob's conversation exists", func() bool {
		var unread int64
		return store.DB().Get(&unread, `SELECT unread FROM conversations WHERE uid = 'bob'`) == nil && unread == 1
	})
	// The counters move once ApplyBatch returned, a moment after the commit made the row visible, and the
	// change feed is published asynchronously after that.
	var metrics string
	testenv.Eventually(t, 10*time.Second, "/metrics counts the applied message and its announcement", func() bool {
		metrics = get("http://" + addr + "/metrics")
		return strings.Contains(metrics, "conv_projector_messages_applied_total 1") &&
			strings.Contains(metrics, "conv_changes_published_total 1")
	})
	for _, want := range []string{"process_cpu_seconds_total", "go_goroutines"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	stop()
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatalf("log line is not JSON: %s", line)
		}
	}
	if strings.Contains(out.String(), "convtest:convtest@") || !strings.Contains(out.String(), `"msg":"projector stopped"`) {
		t.Fatalf("log shows the DSN password or lacks the clean stop:\n%s", out.String())
	}
}

func TestRunFailsFastOnBadConfig(t *testing.T) {
	err := run(t.Context(), map[string]string{"BATCH_MAX_RECORDS": "-1"}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "BATCH_MAX_RECORDS") {
		t.Fatalf("run = %v, want a config error", err)
	}
}

// The topics the projector produces to must keep an acknowledged record through the loss of a broker
// (contract §6): with the default replication (three replicas, two in sync) a one-broker cluster is
// refused at start with a message naming the setting and the flag for development.
func TestRunRefusesTopicsThatCannotSurviveABroker(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	conn, err := kafkago.Dial("tcp", brokers[0])
	if err != nil {
		t.Fatal(err)
	}
	all, err := conn.Brokers()
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) >= 3 {
		t.Skipf("the test cluster has %d brokers: the default replication fits it", len(all))
	}
	topics := testenv.Topics(t, brokers, 1)
	_, dsn := testenv.Store(t, mysql.Options{})
	var out testenv.LogBuffer
	err = run(t.Context(), map[string]string{"MYSQL_DSN": dsn, "KAFKA_BROKERS": strings.Join(brokers, ","),
		"KAFKA_TOPIC": topics.Events, "KAFKA_DLQ_TOPIC": topics.DLQ, "KAFKA_CHANGES_TOPIC": topics.Changes,
		"PROJECTOR_HTTP_ADDR": "127.0.0.1:0"}, &out)
	if !errors.Is(err, topicadmin.ErrNotDurable) || !strings.Contains(err.Error(), "KAFKA_ALLOW_UNREPLICATED") {
		t.Fatalf("run = %v, want ErrNotDurable naming KAFKA_ALLOW_UNREPLICATED", err)
	}
}

// startRun runs the projector in the background with environ and PROJECTOR_HTTP_ADDR set to a free
// port, and waits up to within until its /readyz answers 200 (ready names that wait). It returns the
// address, the logs, and stop, which ends run and fails the test unless run returns nil within 20 s.
func startRun(t *testing.T, environ map[string]string, within time.Duration, ready string) (string, *testenv.LogBuffer, func()) {
	t.Helper()
	addr := testenv.FreeAddr(t)
	environ["PROJECTOR_HTTP_ADDR"] = addr
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	out := &testenv.LogBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, environ, out) }()
	testenv.Eventually(t, within, ready, func() bool {
		res, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	})
	return addr, out, func() {
		t.Helper()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("run = %v, want nil after a signal", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("run did not return after cancel")
		}
	}
}

// get is the body of a GET of url, empty when the request fails.
func get(url string) string {
	res, err := http.Get(url)
	if err != nil {
		return ""
	}
	defer res.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(res.Body)
	return b.String()
}

// TestRunOverSASLSSL runs the projector against the broker's SASL_SSL listener only: readiness (the
// Kafka probe), the group reader, the dead-letter writer and the change-feed publisher must all
// authenticate, or the record never lands, the bad one is never dead-lettered, or /readyz stays 503.
func TestRunOverSASLSSL(t *testing.T) {
	sec := testenv.SASLKafka(t)
	topics := testenv.Topics(t, sec.AdminBrokers, 1)
	store, dsn := testenv.Store(t, mysql.Options{})
	ctx := t.Context()
	addr, out, stop := startRun(t, map[string]string{"MYSQL_DSN": dsn, "KAFKA_BROKERS": strings.Join(sec.Brokers, ","),
		"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": sec.PlainUser,
		"KAFKA_SASL_PASSWORD": sec.PlainPassword, "KAFKA_TLS_CA_FILE": sec.CAFile,
		"KAFKA_TOPIC": topics.Events, "KAFKA_DLQ_TOPIC": topics.DLQ, "KAFKA_CHANGES_TOPIC": topics.Changes,
		"KAFKA_GROUP_ID": testenv.Name("group."), "KAFKA_ALLOW_UNREPLICATED": "true"}, 30*time.Second, "/readyz answers 200 over SASL_SSL")
	// Produced through the plaintext listener of the same cluster: what is under test is the projector.
	w := &kafkago.Writer{Addr: kafkago.TCP(sec.AdminBrokers...), Topic: topics.Events, RequiredAcks: kafkago.RequireAll,
		BatchTimeout: time.Millisecond}
	defer w.Close()
	good := `{"message_id":1,"message_seq":1,"from_uid":"alice","channel_id":"g1","channel_type":2,"header":{"red_dot":1},"subscribers":["bob"]}`
	testenv.Eventually(t, 10*time.Second, "the records are produced", func() bool {
		return w.WriteMessages(ctx, kafkago.Message{Key: []byte("g1"), Value: []byte("{not json")},
			kafkago.Message{Key: []byte("g1"), Value: []byte(good)}) == nil
	})
	testenv.Eventually(t, 30*time.Second, "bob's conversation exists", func() bool {
		var unread int64
		return store.DB().Get(&unread, `SELECT unread FROM conversations WHERE uid = 'bob'`) == nil && unread == 1
	})
	testenv.Eventually(t, 10*time.Second, "the dead letter and the change are counted", func() bool {
		metrics := get("http://" + addr + "/metrics")
		return strings.Contains(metrics, `conv_projector_dead_lettered_total{reason="invalid_json"} 1`) &&
			strings.Contains(metrics, "conv_changes_published_total 1")
	})
	stop()
	if strings.Contains(out.String(), sec.PlainPassword) {
		t.Fatal("the log holds the SASL password")
	}
}

// TestConfigVitessShard: a projector of one shard of the read model sharded by user must name a shard
// and target it in MYSQL_DSN.
func TestConfigVitessShard(t *testing.T) {
	if _, err := loadConfig(map[string]string{"VITESS_SHARD": "-80", "MYSQL_DSN": "u:p@tcp(vtgate:3306)/conv:-80"}); err != nil {
		t.Fatalf("a valid shard refused: %v", err)
	}
	for _, env := range []map[string]string{
		{"VITESS_SHARD": "-8g", "MYSQL_DSN": "u:p@tcp(vtgate:3306)/conv:-8g"},
		{"VITESS_SHARD": "-80", "MYSQL_DSN": "u:p@tcp(vtgate:3306)/conv"},
		{"VITESS_SHARD": "80-", "MYSQL_DSN": "u:p@tcp(vtgate:3306)/conv:-80"},
	} {
		_, err := loadConfig(env)
		if err == nil || !strings.Contains(err.Error(), "VITESS_SHARD") {
			t.Errorf("%v: error %v, want one naming VITESS_SHARD", env, err)
		}
	}
}
