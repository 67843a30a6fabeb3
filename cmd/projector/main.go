// Command projector consumes the events topic into the read model (contract §1 and §3) and serves
// /healthz, /readyz and /metrics. Configuration comes from the environment (see config). It stops
// gracefully on SIGTERM or SIGINT: the batch in flight gets SHUTDOWN_TIMEOUT to finish, then the process
// leaves its consumer group.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/convsync/conversations/internal/changefeed"
	"github.com/convsync/conversations/internal/kafkaconn"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/probes"
	"github.com/convsync/conversations/internal/projector"
	"github.com/convsync/conversations/internal/purge"
	"github.com/convsync/conversations/internal/topicadmin"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, env.ToMap(os.Environ()), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "projector:", err)
		stop()
		os.Exit(1)
	}
}

// purgeInterval is how often old tombstones (when TOMBSTONE_MAX_AGE is set) and unneeded late messages
// of large channels are purged.
const purgeInterval = time.Minute

// run wires the projector from environ and runs it until ctx is done, logging JSON to stdout. It returns
// an error when the configuration is invalid, the HTTP address cannot be bound, the HTTP server fails,
// or the last batch had to be abandoned at shutdown (projector.ErrAbandoned).
func run(ctx context.Context, environ map[string]string, stdout io.Writer) error {
	cfg, err := loadConfig(environ)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: cfg.LogLevel}))
	mysql.RouteDriverLog(log)
	log.Info("starting projector", "config", cfg)

	reg, err := probes.NewRegistry()
	if err != nil {
		return err
	}
	kc, err := kafkaconn.New(cfg.Kafka)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	// The topics the projector produces to must keep what it produced through the loss of a broker
	// (contract §6). A cluster that cannot be asked yet is checked by /readyz's probes later, not here.
	produced := []string{cfg.KafkaDLQTopic}
	if cfg.KafkaChangesTopic != "" {
		produced = append(produced, cfg.KafkaChangesTopic)
	}
	if err := checkTopics(ctx, kc, cfg.KafkaBrokers, cfg.Replication, log, produced); err != nil {
		return err
	}
	// A connection per lane, one for the purger and one for the probes.
	storeOpts := mysql.Options{RecentsWindow: cfg.RecentsWindow, MaxOpenConns: cfg.Lanes + 2, TLS: cfg.MySQLTLS,
		LargeChannelMembers: cfg.LargeChannelMembers}
	if cfg.VitessShard != "" {
		storeOpts.Shard, _ = mysql.ParseKeyRange(cfg.VitessShard) // validated
	}
	if cfg.KafkaChangesTopic != "" {
		changes, err := changefeed.NewPublisher(kc, cfg.KafkaBrokers, cfg.KafkaChangesTopic, log, reg, changefeed.PublisherOptions{})
		if err != nil {
			return fmt.Errorf("change feed: %w", err)
		}
		defer func() { // after the projector stopped: what its last batches committed is still announced
			if err := changes.Close(); err != nil {
				log.Warn("change feed publisher close", "error", err.Error())
			}
		}()
		storeOpts.OnCommit = changes.AfterCommit
	}
	store, err := mysql.Open(cfg.MySQLDSN, storeOpts)
	if err != nil {
		return err
	}
	defer store.Close()
	metrics, err := projector.NewMetrics(reg)
	if err != nil {
		return fmt.Errorf("register projector metrics: %w", err)
	}
	// Created even when purging is off, so its metrics always show.
	purger, err := purge.New(store, cfg.TombstoneMaxAge, purgeInterval, reg, log)
	if err != nil {
		return fmt.Errorf("register purge metrics: %w", err)
	}
	p, err := projector.New(projector.Config{
		Brokers:         cfg.KafkaBrokers,
		Kafka:           kc,
		Topic:           cfg.KafkaTopic,
		DLQTopic:        cfg.KafkaDLQTopic,
		GroupID:         cfg.KafkaGroupID,
		SessionTimeout:  cfg.KafkaSessionTimeout,
		BatchMaxRecords: cfg.BatchMaxRecords,
		BatchMaxBytes:   cfg.BatchMaxBytes,
		BatchMaxWait:    cfg.BatchMaxWait,
		Lanes:           cfg.Lanes,
		SlowBatch:       cfg.SlowBatch,
		TimeSteps:       mysql.WithBatchTiming,
		MaxEventBytes:   cfg.MaxEventBytes,
		Skip:            cfg.Skip(),
		ShutdownTimeout: cfg.ShutdownTimeout,
		PoisonAttempts:  cfg.PoisonAttempts,
		StallAfter:      cfg.StallAfter,
	}, store, metrics, log)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on PROJECTOR_HTTP_ADDR: %w", err)
	}
	kafkaChecks := probes.NewKafka(cfg.KafkaBrokers, cfg.KafkaTopic, cfg.KafkaDLQTopic, kc.Transport())
	defer kafkaChecks.Close()
	go kafkaChecks.WarnDeadLetterLimit(ctx, log)
	checks := probes.Checks{Database: store.Ping, Kafka: kafkaChecks.Check, DeadLetter: kafkaChecks.CheckDeadLetter, Loop: p.Failing,
		Live: p.Stalled}
	srv := &http.Server{
		Handler:           probes.Handler(checks, reg),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// The projector stops when the process is told to or when the HTTP server dies: an instance without
	// its probes would be restarted blind.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	serveDone := make(chan struct{})
	go func() {
		defer close(serveDone)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			cancel(fmt.Errorf("http server: %w", err))
		}
	}()
	log.Info("http listening", "addr", ln.Addr().String())

	purgeDone := make(chan struct{})
	go func() {
		defer close(purgeDone)
		purger.Run(ctx) // tombstones only when TOMBSTONE_MAX_AGE is set; late messages always
	}()

	runErr := p.Run(ctx)
	log.Info("consumer stopped")
	<-purgeDone
	// Probes keep answering while the last batch finishes; only now does the server go.
	shutdownCtx, done := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer done()
	shutdownErr := srv.Shutdown(shutdownCtx)
	<-serveDone
	err = errors.Join(runErr, shutdownErr)
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		err = errors.Join(cause, err)
	}
	if err == nil {
		log.Info("projector stopped")
	}
	return err
}

// checkTopics refuses to start on topics that cannot keep an acknowledged record through the loss of a
// broker (topicadmin.ErrNotDurable); a cluster or topic that cannot be described yet is logged and
// left to the readiness probes.
func checkTopics(ctx context.Context, kc *kafkaconn.Conn, brokers []string, r topicadmin.Replication, log *slog.Logger, topics []string) error {
	checkCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := topicadmin.Check(checkCtx, kc, brokers, r, log, topics...)
	if errors.Is(err, topicadmin.ErrNotDurable) {
		return fmt.Errorf("topics: %w", err)
	}
	if err != nil {
		log.Warn("topic replication not checked: the cluster cannot be asked yet", "topics", topics, "error", err.Error())
	}
	return nil
}
