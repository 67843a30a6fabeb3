package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/kafkaconn"
	"github.com/convsync/conversations/internal/testenv"
	"github.com/convsync/conversations/internal/topicadmin"
)

func TestLoadConfigDefaults(t *testing.T) {
	cfg, err := loadConfig(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	want := config{
		MySQLDSN:             "conv:conv@tcp(127.0.0.1:3306)/conversations",
		HTTPAddr:             "127.0.0.1:8080",
		LogLevel:             slog.LevelInfo,
		SyncMaxMsgCount:      100,
		SyncMaxConversations: 1000,
		MySQLMaxOpenConns:    32,
		SyncCacheUsers:       100_000,
		SyncCacheRows:        1_000_000,
		RecentsCacheBytes:    64 << 20,
		KafkaChangesTopic:    "im.conversations.changes",
		SyncCacheMaxAge:      5 * time.Second,
		ShutdownTimeout:      10 * time.Second,
		Kafka:                kafkaconn.Config{SecurityProtocol: "PLAINTEXT", SASLMechanism: "SCRAM-SHA-512"},
		Replication:          topicadmin.Replication{Factor: 3, MinInSync: 2},
		MaxReplicaLag:        2 * time.Second,
		ReplicaWait:          200 * time.Millisecond,
		ReplicaReadTimeout:   150 * time.Millisecond,
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("defaults %+v, want %+v", cfg, want)
	}
}

// A setting whose default belongs to the package it configures is defaulted when set but empty too, as
// envDefault tags do for the others.
func TestLoadConfigEmptyMeansDefault(t *testing.T) {
	empty := map[string]string{}
	for _, v := range []string{"SYNC_MAX_MSG_COUNT", "SYNC_MAX_CONVERSATIONS", "MYSQL_MAX_OPEN_CONNS", "SYNC_CACHE_USERS",
		"SYNC_CACHE_ROWS", "SYNC_CACHE_MAX_AGE", "RECENTS_CACHE_BYTES"} {
		empty[v] = ""
	}
	got, err := loadConfig(empty)
	if err != nil {
		t.Fatal(err)
	}
	want, err := loadConfig(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("set but empty %+v, want the defaults %+v", got, want)
	}
}

func TestLoadConfigFromEnvironment(t *testing.T) {
	cfg, err := loadConfig(map[string]string{
		"MYSQL_DSN": "u:p@tcp(db:3306)/x", "API_HTTP_ADDR": ":9000", "API_TOKEN": "tok", "LOG_LEVEL": "debug",
		"SYNC_MAX_MSG_COUNT": "7", "SYNC_MAX_CONVERSATIONS": "8", "MYSQL_MAX_OPEN_CONNS": "9", "SHUTDOWN_TIMEOUT": "3s",
		"SYNC_CACHE_USERS": "0", "SYNC_CACHE_ROWS": "5000", "RECENTS_CACHE_BYTES": "1024",
		"KAFKA_BROKERS": "k1:9092,k2:9092", "KAFKA_CHANGES_TOPIC": "feed", "SYNC_CACHE_MAX_AGE": "1s",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := config{MySQLDSN: "u:p@tcp(db:3306)/x", HTTPAddr: ":9000", Token: "tok", LogLevel: slog.LevelDebug,
		SyncMaxMsgCount: 7, SyncMaxConversations: 8, MySQLMaxOpenConns: 9, ShutdownTimeout: 3 * time.Second,
		SyncCacheRows: 5000, RecentsCacheBytes: 1024,
		KafkaBrokers: []string{"k1:9092", "k2:9092"}, KafkaChangesTopic: "feed", SyncCacheMaxAge: time.Second,
		Kafka:         kafkaconn.Config{SecurityProtocol: "PLAINTEXT", SASLMechanism: "SCRAM-SHA-512"},
		Replication:   topicadmin.Replication{Factor: 3, MinInSync: 2},
		MaxReplicaLag: 2 * time.Second, ReplicaWait: 200 * time.Millisecond, ReplicaReadTimeout: 150 * time.Millisecond}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("config %+v, want %+v", cfg, want)
	}
}

// TestLoadConfigInvalid: every invalid value is reported, all at once.
func TestLoadConfigInvalid(t *testing.T) {
	_, err := loadConfig(map[string]string{
		"MYSQL_DSN": "not a dsn", "SYNC_MAX_MSG_COUNT": "0", "SYNC_MAX_CONVERSATIONS": "-1",
		"MYSQL_MAX_OPEN_CONNS": "0", "SHUTDOWN_TIMEOUT": "0s", "SYNC_CACHE_USERS": "-1",
	})
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{"MYSQL_DSN", "SYNC_MAX_MSG_COUNT", "SYNC_MAX_CONVERSATIONS", "MYSQL_MAX_OPEN_CONNS", "SHUTDOWN_TIMEOUT", "SYNC_CACHE_USERS"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	for _, env := range []map[string]string{{"LOG_LEVEL": "loud"}, {"SYNC_MAX_MSG_COUNT": "many"}, {"SHUTDOWN_TIMEOUT": "10"},
		{"SYNC_CACHE_MAX_AGE": "2m"}, {"SYNC_CACHE_MAX_AGE": "0s"}, {"VITESS_SHARDS": "-80"}, {"VITESS_SHARDS": "-80,40-"}} {
		if _, err := loadConfig(env); err == nil {
			t.Errorf("%v accepted", env)
		}
	}
}

// TestConfigNeverShowsSecrets: logs and fmt show neither the token nor the database password.
func TestConfigNeverShowsSecrets(t *testing.T) {
	cfg, err := loadConfig(map[string]string{"API_TOKEN": "tok-s3cret", "MYSQL_DSN": "conv:pw-s3cret@tcp(db:3306)/conversations",
		"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD": "kafka-s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("starting", "config", cfg)
	for _, out := range []string{logs.String(), fmt.Sprint(cfg), fmt.Sprintf("%v %+v %s", cfg, cfg, cfg)} {
		if strings.Contains(out, "s3cret") {
			t.Fatalf("secret shown: %s", out)
		}
	}
	if !strings.Contains(logs.String(), `"api_token_set":true`) || !strings.Contains(logs.String(), `"mysql_addr":"db:3306"`) {
		t.Fatalf("config log lacks what operators need: %s", logs.String())
	}
}

// TestRun starts the real binary's run on a free port and a fresh database, serves a few requests
// over TCP, then stops it by cancelling its context (what SIGTERM does) and expects a clean return.
// Its log lines are JSON on stdout and never hold the token or the database password.
func TestRun(t *testing.T) {
	dsn := testenv.MySQLDSN(t)
	const token = "run-t0ken"
	base, logs, stop := startRun(t, map[string]string{"MYSQL_DSN": dsn, "API_TOKEN": token, "LOG_LEVEL": "debug",
		"SHUTDOWN_TIMEOUT": "5s"}, 10*time.Second)
	for _, tc := range []struct {
		auth   string
		status int
		body   string
	}{
		{"Bearer " + token, 200, "[]"},
		{"", 401, `{"msg":"missing or invalid bearer token","status":401}`},
	} {
		req, _ := http.NewRequest(http.MethodPost, base+"/conversation/sync", strings.NewReader(`{"uid":"u1","msg_count":5}`))
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || string(body) != tc.body || resp.Header.Get("Content-Type") != "application/json; charset=utf-8" {
			t.Fatalf("sync with %q: %d %s %s", tc.auth, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	}

	if err := stop(); err != nil {
		t.Fatalf("run returned %v after a graceful stop", err)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("still serving after stop")
	}
	out := logs.String()
	if strings.Contains(out, token) || strings.Contains(out, "convtest:convtest") {
		t.Fatalf("a secret reached the log:\n%s", out)
	}
	var sawListening, sawStopped, sawAccess bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "{") {
			t.Fatalf("log line is not JSON: %s", line)
		}
		sawListening = sawListening || strings.Contains(line, `"msg":"api listening"`)
		sawStopped = sawStopped || strings.Contains(line, `"msg":"api stopped"`)
		sawAccess = sawAccess || strings.Contains(line, `"route":"/conversation/sync","status":401`)
	}
	if !sawListening || !sawStopped || !sawAccess {
		t.Fatalf("missing log lines (listening %v, stopped %v, access %v):\n%s", sawListening, sawStopped, sawAccess, out)
	}
}

// TestRunFailsOnBadConfig: run reports a bad environment instead of starting.
func TestRunFailsOnBadConfig(t *testing.T) {
	err := run(context.Background(), map[string]string{"SYNC_MAX_MSG_COUNT": "0"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "SYNC_MAX_MSG_COUNT") {
		t.Fatalf("run = %v, want a config error", err)
	}
}

// startRun runs the API in the background with environ and API_HTTP_ADDR set to a free port, and
// waits up to within for /readyz to answer 200. It returns the API's base URL, its logs, and stop,
// which ends run and returns run's error (failing the test when run does not return in 20 s).
func startRun(t *testing.T, environ map[string]string, within time.Duration) (string, *testenv.LogBuffer, func() error) {
	t.Helper()
	addr := testenv.FreeAddr(t)
	environ["API_HTTP_ADDR"] = addr
	logs := &testenv.LogBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, environ, logs) }()
	stopped := false
	stop := func() error {
		t.Helper()
		cancel()
		if stopped {
			return nil
		}
		stopped = true
		select {
		case err := <-done:
			return err
		case <-time.After(20 * time.Second):
			t.Fatal("run did not stop")
			return nil
		}
	}
	t.Cleanup(func() { _ = stop() })
	base := "http://" + addr
	deadline := time.Now().Add(within)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base, logs, stop
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after %s: %v\n%s", within, err, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
