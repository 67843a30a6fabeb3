package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/testenv"
)

func noEnv(string) string { return "" }

func TestFlags(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		args     []string
		messages int
		users    int
		seed     uint64
		seqBase  int64
	}{
		{"demo defaults", nil, 400, 50, 1, 1234},
		{"demo as make run calls it", []string{"-events", "400", "-users", "20", "-groups", "5", "-seed", "42"}, 400, 20, 42, 1234},
		{"peer keeps its size and seed", []string{"-workload", "peer"}, 30_000, 2_000, 20_000, 0},
		{"w1 with a size", []string{"-workload", "w1", "-events", "1000", "-seed", "5", "-seq-base", "7"}, 1000, 10_000, 5, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, set, err := parse(tt.args, noEnv, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := c.generatorConfig(set, now, 1234)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Messages != tt.messages || cfg.Users != tt.users || cfg.Seed != tt.seed || cfg.SeqBase != tt.seqBase {
				t.Errorf("messages %d users %d seed %d seq base %d, want %d %d %d %d",
					cfg.Messages, cfg.Users, cfg.Seed, cfg.SeqBase, tt.messages, tt.users, tt.seed, tt.seqBase)
			}
		})
	}
	c, _, err := parse(nil, func(k string) string { return map[string]string{"KAFKA_BROKERS": "a:1, b:2", "KAFKA_TOPIC": "t"}[k] }, io.Discard)
	if err != nil || strings.Join(c.brokers, ",") != "a:1,b:2" || c.topic != "t" {
		t.Errorf("env defaults: %+v %v", c, err)
	}
	if _, _, err := parse([]string{"-workload", "w9", "-users", "1"}, noEnv, io.Discard); err == nil ||
		!strings.Contains(err.Error(), "-workload") || !strings.Contains(err.Error(), "-users") {
		t.Errorf("want both problems reported at once, got %v", err)
	}
}

// TestRunProducesTheDemo runs the command twice against the real broker and reads the topic back: every
// record is valid and keyed by storage key, and the second run continued each channel's sequence rather
// than repeating it.
func TestRunProducesTheDemo(t *testing.T) {
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.Topics(t, brokers, 3).Events
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var logs bytes.Buffer
	args := []string{"-brokers", strings.Join(brokers, ","), "-topic", topic, "-events", "120", "-users", "10", "-groups", "3"}
	for range 2 {
		if err := run(ctx, args, noEnv, io.Discard, slog.New(slog.NewJSONHandler(&logs, nil))); err != nil {
			t.Fatal(err)
		}
	}
	if !strings.Contains(logs.String(), `"msg":"done"`) {
		t.Errorf("no summary in the logs: %s", logs.String())
	}
	type seqKey struct {
		ch  conversation.ChannelKey
		seq int64
	}
	seqs := map[seqKey]int{}
	var n int
	for p := range 3 {
		r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p, MaxWait: 100 * time.Millisecond})
		conn, err := kafkago.DialLeader(ctx, "tcp", brokers[0], topic, p)
		if err != nil {
			t.Fatal(err)
		}
		last, err := conn.ReadLastOffset()
		conn.Close()
		if err != nil {
			t.Fatal(err)
		}
		for off := int64(0); off < last; off++ {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			ev, err := conversation.DecodeEvent(m.Value, time.Now(), 0)
			if err != nil {
				t.Fatalf("partition %d offset %d: %v", p, m.Offset, err)
			}
			if string(m.Key) != ev.Key().Key {
				t.Errorf("key %q, want storage key %q", m.Key, ev.Key().Key)
			}
			if msg := ev.Message; msg != nil && msg.Header.NoPersist == 0 && msg.Header.SyncOnce == 0 {
				seqs[seqKey{ev.Key(), msg.MessageSeq}]++
			}
			n++
		}
		r.Close()
	}
	if n < 240 {
		t.Errorf("read %d records back, want at least the 2 x 120 messages", n)
	}
	for k, c := range seqs {
		if c > 1 {
			t.Errorf("channel %v seq %d was sent %d times: the second run repeated the first's sequence", k.ch, k.seq, c)
		}
	}
}

// TestRunOverSASLSSL produces the demo through the broker's SASL_SSL listener, configured by the same
// variables as the other binaries; a wrong password fails the run.
func TestRunOverSASLSSL(t *testing.T) {
	sec := testenv.SASLKafka(t)
	topic := testenv.Topics(t, sec.AdminBrokers, 1).Events
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	vars := map[string]string{"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN",
		"KAFKA_SASL_USERNAME": sec.PlainUser, "KAFKA_SASL_PASSWORD": sec.PlainPassword, "KAFKA_TLS_CA_FILE": sec.CAFile}
	args := []string{"-brokers", strings.Join(sec.Brokers, ","), "-topic", topic, "-events", "30", "-users", "5", "-groups", "2"}
	if err := run(ctx, args, func(k string) string { return vars[k] }, io.Discard, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatalf("trafficgen over SASL_SSL: %v", err)
	}
	conn, err := kafkago.DialLeader(ctx, "tcp", sec.AdminBrokers[0], topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	last, err := conn.ReadLastOffset()
	conn.Close()
	if err != nil || last < 30 {
		t.Fatalf("topic holds %d records (%v), want at least 30", last, err)
	}
	vars["KAFKA_SASL_PASSWORD"] = "wrong"
	short, cancelShort := context.WithTimeout(ctx, 15*time.Second)
	defer cancelShort()
	if err := run(short, args, func(k string) string { return vars[k] }, io.Discard, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		t.Fatal("trafficgen with a wrong SASL password succeeded")
	}
}
