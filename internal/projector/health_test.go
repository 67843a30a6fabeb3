package projector

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

func TestHealthEndpoints(t *testing.T) {
	t.Parallel()
	brokers, topic, dlq := integration(t, 1)
	tests := []struct {
		name     string
		brokers  []string
		topic    string
		ping     error
		failing  string
		code     int
		want     Readiness
		wantBody string
	}{
		{name: "all well", brokers: brokers, topic: topic, code: 200,
			want: Readiness{Ready: true, Database: "ok", Kafka: "ok", Loop: "ok", DeadLetter: "ok"}},
		{name: "database down", brokers: brokers, topic: topic, ping: errDown, code: 503,
			want: Readiness{Database: "unreachable", Kafka: "ok", Loop: "ok", DeadLetter: "ok"}},
		{name: "broker unreachable", brokers: []string{"127.0.0.1:1"}, topic: topic, code: 503,
			want: Readiness{Database: "ok", Kafka: "unreachable", Loop: "ok", DeadLetter: "unchecked"}},
		{name: "events topic missing", brokers: brokers, topic: topic + ".nope", code: 503,
			want: Readiness{Database: "ok", Kafka: "topic missing", Loop: "ok", DeadLetter: "unchecked"}},
		{name: "loop retrying a batch", brokers: brokers, topic: topic, failing: "apply", code: 503,
			want: Readiness{Database: "ok", Kafka: "ok", Loop: "retrying apply", DeadLetter: "ok"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, reg := newProjector(t, Config{Brokers: tt.brokers, Topic: tt.topic, DLQTopic: dlq, GroupID: "unused"}, &fakeStore{ping: tt.ping})
			if tt.failing != "" {
				p.failing.Store(&tt.failing)
			}
			srv := httptest.NewServer(Handler(p, reg))
			defer srv.Close()

			res, err := http.Get(srv.URL + "/readyz")
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var got Readiness
			if err := json.NewDecoder(res.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tt.code || got != tt.want {
				t.Errorf("/readyz = %d %+v, want %d %+v", res.StatusCode, got, tt.code, tt.want)
			}
			live, err := http.Get(srv.URL + "/healthz")
			if err != nil {
				t.Fatal(err)
			}
			live.Body.Close()
			if live.StatusCode != 200 {
				t.Errorf("/healthz = %d, want 200 whatever readiness says", live.StatusCode)
			}
		})
	}
}

func TestMetricsEndpointServesTheRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		t.Fatal(err)
	}
	p, _ := newProjectorOn(t, reg)
	p.metrics.deadLettered.WithLabelValues("invalid_json").Inc()
	srv := httptest.NewServer(Handler(p, reg))
	defer srv.Close()
	res, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`conv_projector_dead_lettered_total{reason="invalid_json"} 1`,
		`conv_projector_dead_lettered_total{reason="too_large"} 0`, "conv_projector_batch_size_bucket", "go_goroutines"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func newProjectorOn(t *testing.T, reg *prometheus.Registry) (*Projector, *Metrics) {
	t.Helper()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{Brokers: []string{"127.0.0.1:1"}, Topic: "t", DLQTopic: "d", GroupID: "g"}, &fakeStore{}, m, testLog())
	if err != nil {
		t.Fatal(err)
	}
	return p, m
}

// purgeStore has n tombstones, all old enough, and records the purge calls.
type purgeStore struct {
	mu    sync.Mutex
	left  int64
	calls []int
}

func (s *purgeStore) PurgeTombstones(_ context.Context, _ int64, limit int) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(s.left, int64(limit))
	s.left -= n
	s.calls = append(s.calls, int(n))
	return n, nil
}

func TestPurgerDeletesInBatchesOfAThousand(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	s := &purgeStore{left: 2500}
	pu := NewPurger(s, time.Hour, 10*time.Millisecond, m, testLog())
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { pu.Run(ctx); close(done) }()
	eventually(t, 5*time.Second, "all tombstones purged", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.left == 0 && len(s.calls) >= 3
	})
	cancel()
	<-done
	if got := jsonString(s.calls[:3]); got != "[1000,1000,500]" {
		t.Fatalf("first round deleted %s, want [1000,1000,500]", got)
	}
	if n := metricValue(t, reg, "conv_projector_purged_total"); n != 2500 {
		t.Fatalf("purged_total = %v, want 2500", n)
	}
}

func TestNewMetricsRefusesASecondRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Fatal("registering the metrics twice on one registry succeeded, want an error")
	}
}

func TestNewRejectsAnIncompleteConfig(t *testing.T) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(Config{Topic: "t", DLQTopic: "t"}, &fakeStore{}, m, testLog())
	for _, want := range []string{"no Kafka brokers", "must differ", "no consumer group id"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New = %v, want an error saying %q", err, want)
		}
	}
}
