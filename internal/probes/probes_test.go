package probes_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/convsync/conversations/internal/probes"
	"github.com/convsync/conversations/internal/testenv"
)

func TestHealthEndpoints(t *testing.T) {
	t.Parallel()
	brokers := testenv.KafkaBrokers(t)
	ts := testenv.Topics(t, brokers, 1)
	topic, dlq := ts.Events, ts.DLQ
	down := errors.New("database down")
	tests := []struct {
		name    string
		brokers []string
		topic   string
		ping    error
		failing string
		code    int
		want    probes.Readiness
	}{
		{name: "all well", brokers: brokers, topic: topic, code: 200,
			want: probes.Readiness{Ready: true, Database: "ok", Kafka: "ok", Loop: "ok", DeadLetter: "ok"}},
		{name: "database down", brokers: brokers, topic: topic, ping: down, code: 503,
			want: probes.Readiness{Database: "unreachable", Kafka: "ok", Loop: "ok", DeadLetter: "ok"}},
		{name: "broker unreachable", brokers: []string{"127.0.0.1:1"}, topic: topic, code: 503,
			want: probes.Readiness{Database: "ok", Kafka: "unreachable", Loop: "ok", DeadLetter: "unchecked"}},
		{name: "events topic missing", brokers: brokers, topic: topic + ".nope", code: 503,
			want: probes.Readiness{Database: "ok", Kafka: "topic missing", Loop: "ok", DeadLetter: "unchecked"}},
		{name: "loop retrying a batch", brokers: brokers, topic: topic, failing: "apply", code: 503,
			want: probes.Readiness{Database: "ok", Kafka: "ok", Loop: "retrying apply", DeadLetter: "ok"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kafka := probes.NewKafka(tt.brokers, tt.topic, dlq, nil)
			defer kafka.Close()
			checks := probes.Checks{
				Database:   func(context.Context) error { return tt.ping },
				Kafka:      kafka.Check,
				DeadLetter: kafka.CheckDeadLetter,
				Loop:       func() string { return tt.failing },
			}
			srv := httptest.NewServer(probes.Handler(checks, prometheus.NewRegistry()))
			defer srv.Close()

			res, err := http.Get(srv.URL + "/readyz")
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var got probes.Readiness
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
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "conv_test_total", Help: "a test counter"}, []string{"reason"})
	reg.MustRegister(c)
	c.WithLabelValues("invalid_json").Inc()
	srv := httptest.NewServer(probes.Handler(probes.Checks{}, reg))
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
	for _, want := range []string{`conv_test_total{reason="invalid_json"} 1`, "go_goroutines"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
