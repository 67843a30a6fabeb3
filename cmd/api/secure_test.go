package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/testenv"
)

// TestRunOverSASLSSL runs the API against the broker's SASL_SSL listener alone: the change-feed
// follower must connect (or the API logs that the feed is unavailable) and a mutation's announcement
// must reach the topic through the publisher.
func TestRunOverSASLSSL(t *testing.T) {
	sec := testenv.SASLKafka(t)
	topics := testenv.Topics(t, sec.AdminBrokers, 1)
	store, dsn := testenv.Store(t, mysql.Options{})
	e, err := conversation.DecodeEvent([]byte(`{"message_id":1,"message_seq":1,"from_uid":"alice","channel_id":"g1","channel_type":2,`+
		`"header":{"red_dot":1},"subscribers":["bob"]}`), time.Now(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.ApplyBatch(context.Background(), []conversation.Event{e}); err != nil {
		t.Fatal(err)
	}
	base, logs, stop := startRun(t, map[string]string{"MYSQL_DSN": dsn, "KAFKA_BROKERS": strings.Join(sec.Brokers, ","),
		"KAFKA_CHANGES_TOPIC": topics.Changes, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN",
		"KAFKA_SASL_USERNAME": sec.PlainUser, "KAFKA_SASL_PASSWORD": sec.PlainPassword, "KAFKA_TLS_CA_FILE": sec.CAFile,
		"KAFKA_ALLOW_UNREPLICATED": "true"}, 20*time.Second)
	resp, err := http.Post(base+"/conversations/setUnread", "application/json",
		strings.NewReader(`{"uid":"bob","channel_id":"g1","channel_type":2,"unread":0}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("setUnread: %d %s", resp.StatusCode, body)
	}
	r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: sec.AdminBrokers, Topic: topics.Changes, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	rctx, rcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer rcancel()
	m, err := r.ReadMessage(rctx)
	if err != nil || !strings.Contains(string(m.Value), `"bob"`) {
		t.Fatalf("announcement over SASL_SSL: %v %s\n%s", err, m.Value, logs.String())
	}
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	if out := logs.String(); strings.Contains(out, "change feed unavailable") || strings.Contains(out, sec.PlainPassword) {
		t.Fatalf("the follower did not connect, or the password was logged:\n%s", out)
	}
}
