package projector

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/topicadmin"
)

// Readiness is the projector's readiness, as /readyz reports it.
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

// checkTimeout bounds each readiness probe, well within a Kubernetes probe's default timeout.
const checkTimeout = 2 * time.Second

// Readiness checks, concurrently, that the database answers a ping and that a broker answers with the
// events topic's metadata, and reports whether the loop is stuck retrying a failing batch.
func (p *Projector) Readiness(ctx context.Context) Readiness {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	r := Readiness{Database: "ok", Kafka: "ok", Loop: "ok", DeadLetter: "ok"}
	var wg sync.WaitGroup
	wg.Go(func() {
		if p.store.Ping(ctx) != nil {
			r.Database = "unreachable"
		}
	})
	wg.Go(func() {
		res, err := p.probe.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{p.cfg.Topic}})
		switch {
		case err != nil:
			r.Kafka = "unreachable"
		case len(res.Topics) != 1 || res.Topics[0].Error != nil:
			r.Kafka = "topic missing"
		}
	})
	wg.Go(func() {
		switch have, want, err := p.deadLetterLimit(ctx); {
		case err != nil:
			r.DeadLetter = "unchecked"
		case have < want:
			r.DeadLetter = "too small"
		}
	})
	wg.Wait()
	if step := p.failing.Load(); step != nil {
		r.Loop = "retrying " + *step
	}
	r.Ready = r.Database == "ok" && r.Kafka == "ok" && r.Loop == "ok"
	return r
}

// deadLetterLimit returns the dead-letter topic's max.message.bytes and what it should be at least: the
// events topic's plus topicadmin.DeadLetterHeadroom.
func (p *Projector) deadLetterLimit(ctx context.Context) (have, want int, err error) {
	events, err := topicadmin.MaxMessageBytesOf(ctx, p.probe, p.cfg.Topic)
	if err != nil {
		return 0, 0, err
	}
	have, err = topicadmin.MaxMessageBytesOf(ctx, p.probe, p.cfg.DLQTopic)
	return have, topicadmin.DeadLetterTopic(p.cfg.DLQTopic, 1, events).MaxMessageBytes, err
}

// checkDeadLetterLimit logs, once at start, whether the dead-letter topic can take every record whole.
func (p *Projector) checkDeadLetterLimit(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	have, want, err := p.deadLetterLimit(ctx)
	switch {
	case err != nil:
		p.log.Warn("dead-letter topic's size limit unchecked", "dlq_topic", p.cfg.DLQTopic, "error", err.Error())
	case have < want:
		p.log.Warn("dead-letter topic's size limit is below the events topic's plus headers: oversized dead letters will be reduced; run migrate to raise it",
			"dlq_topic", p.cfg.DLQTopic, "max_message_bytes", have, "want_at_least", want)
	}
}

// Handler serves the projector's operational endpoints: /healthz (200 while the process runs), /readyz
// (200 when Readiness is ready, else 503, with the Readiness as JSON either way) and /metrics (what
// gatherer holds, in Prometheus text format).
func Handler(p *Projector, gatherer prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, req *http.Request) {
		r := p.Readiness(req.Context())
		w.Header().Set("Content-Type", "application/json")
		if !r.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(r) // the client may be gone; nothing to do about it
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	return mux
}
