// Package probes serves the projector's operational endpoints: liveness, readiness and metrics. What
// readiness checks is given to it (the database, the events topic, the loop's state), so it knows
// nothing of the consume loop and the loop knows nothing of HTTP.
package probes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/topicadmin"
)

// NewRegistry returns the registry a binary serves on /metrics, holding the Go runtime's and the
// process's collectors (go_*, process_*) from the start.
func NewRegistry() (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	if err := errors.Join(
		reg.Register(collectors.NewGoCollector()),
		reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})),
	); err != nil {
		return nil, fmt.Errorf("register runtime metrics: %w", err)
	}
	return reg, nil
}

// Readiness is what /readyz reports.
type Readiness struct {
	Ready bool `json:"ready"`
	// Database is "ok" or "unreachable".
	Database string `json:"database"`
	// Kafka is "ok", "unreachable", or "topic missing" when the broker answers without the events topic.
	Kafka string `json:"kafka"`
	// Loop is "ok", or "retrying <step>" while a batch keeps failing at a step: dead_letter, apply, commit.
	Loop string `json:"loop"`
	// DeadLetter is "ok" when the dead-letter topic's size limit fits any record the events topic accepts
	// plus the dead-letter headers, "too small" when it does not (a letter it refuses is then written
	// reduced: run migrate to raise the limit), "unchecked" when the broker did not say. It does not
	// change Ready: every record still reaches an end.
	DeadLetter string `json:"dead_letter"`
}

// Checks are what readiness asks. Each must be safe for concurrent use.
type Checks struct {
	// Database returns nil when the database answers (a store's Ping).
	Database func(ctx context.Context) error
	// Kafka returns "ok" or what is wrong with the events topic (Kafka.Check).
	Kafka func(ctx context.Context) string
	// DeadLetter returns "ok" or what is wrong with the dead-letter topic (Kafka.CheckDeadLetter).
	DeadLetter func(ctx context.Context) string
	// Loop returns the step the consume loop keeps retrying, "" when none (projector.Projector.Failing).
	Loop func() string
	// Live returns nil while the process can make progress, else why not (projector.Projector.Stalled);
	// nil Live is always live.
	Live func() error
}

// CheckTimeout bounds each readiness check, well within a Kubernetes probe's default timeout.
const CheckTimeout = 2 * time.Second

// Readiness runs the database and Kafka checks concurrently, each within CheckTimeout, and reports.
// Ready is true when the database, the events topic and the loop are ok.
func (c Checks) Readiness(ctx context.Context) Readiness {
	ctx, cancel := context.WithTimeout(ctx, CheckTimeout)
	defer cancel()
	r := Readiness{Database: "ok", Kafka: "ok", Loop: "ok", DeadLetter: "ok"}
	var wg sync.WaitGroup
	wg.Go(func() {
		if c.Database(ctx) != nil {
			r.Database = "unreachable"
		}
	})
	wg.Go(func() { r.Kafka = c.Kafka(ctx) })
	wg.Go(func() { r.DeadLetter = c.DeadLetter(ctx) })
	wg.Wait()
	if step := c.Loop(); step != "" {
		r.Loop = "retrying " + step
	}
	r.Ready = r.Database == "ok" && r.Kafka == "ok" && r.Loop == "ok"
	return r
}

// Handler serves /healthz (200 {"status":"ok"} while the process is live, else 503
// {"status":"stalled","error":"..."} so that an orchestrator restarts it), /readyz (200 when ready, else
// 503, with the Readiness as JSON either way) and /metrics (what gatherer holds, in Prometheus text
// format).
func Handler(checks Checks, gatherer prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if checks.Live != nil {
			if err := checks.Live(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				_ = json.NewEncoder(w).Encode(map[string]string{"status": "stalled", "error": err.Error()})
				return
			}
		}
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, req *http.Request) {
		r := checks.Readiness(req.Context())
		w.Header().Set("Content-Type", "application/json")
		if !r.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(r) // the client may be gone; nothing to do about it
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	return mux
}

// Kafka checks the projector's topics.
type Kafka struct {
	client          *kafkago.Client
	topic, dlqTopic string
}

// NewKafka returns the checks of the events topic and its dead-letter topic on brokers. transport
// carries the connection settings (SASL, TLS); nil is plaintext. Close it when done.
func NewKafka(brokers []string, topic, dlqTopic string, transport *kafkago.Transport) *Kafka {
	if transport == nil {
		transport = &kafkago.Transport{}
	}
	return &Kafka{client: &kafkago.Client{Addr: kafkago.TCP(brokers...), Timeout: CheckTimeout, Transport: transport},
		topic: topic, dlqTopic: dlqTopic}
}

// Check returns "ok", "unreachable", or "topic missing" when the broker answers without the events topic.
func (k *Kafka) Check(ctx context.Context) string {
	res, err := k.client.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{k.topic}})
	switch {
	case err != nil:
		return "unreachable"
	case len(res.Topics) != 1 || res.Topics[0].Error != nil:
		return "topic missing"
	}
	return "ok"
}

// CheckDeadLetter returns "ok", "too small" or "unchecked" (Readiness.DeadLetter).
func (k *Kafka) CheckDeadLetter(ctx context.Context) string {
	switch have, want, err := k.deadLetterLimit(ctx); {
	case err != nil:
		return "unchecked"
	case have < want:
		return "too small"
	}
	return "ok"
}

// deadLetterLimit returns the dead-letter topic's max.message.bytes and what it should be at least: the
// events topic's plus topicadmin.DeadLetterHeadroom.
func (k *Kafka) deadLetterLimit(ctx context.Context) (have, want int, err error) {
	events, err := topicadmin.MaxMessageBytesOf(ctx, k.client, k.topic)
	if err != nil {
		return 0, 0, err
	}
	have, err = topicadmin.MaxMessageBytesOf(ctx, k.client, k.dlqTopic)
	return have, topicadmin.DeadLetterTopic(k.dlqTopic, 1, events).MaxMessageBytes, err
}

// WarnDeadLetterLimit logs, once, when the dead-letter topic cannot take every record whole, or when
// its limit could not be read: an operator should run migrate. Call it at start.
func (k *Kafka) WarnDeadLetterLimit(ctx context.Context, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	have, want, err := k.deadLetterLimit(ctx)
	switch {
	case err != nil:
		log.Warn("dead-letter topic's size limit unchecked", "dlq_topic", k.dlqTopic, "error", err.Error())
	case have < want:
		log.Warn("dead-letter topic's size limit is below the events topic's plus headers: oversized dead letters will be reduced; run migrate to raise it",
			"dlq_topic", k.dlqTopic, "max_message_bytes", have, "want_at_least", want)
	}
}

// Close closes the checks' idle connections.
func (k *Kafka) Close() {
	if tr, ok := k.client.Transport.(*kafkago.Transport); ok {
		tr.CloseIdleConnections()
	}
}
