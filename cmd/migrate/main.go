// Command migrate brings the stores to what this version of the service expects: it applies the pending
// SQL migrations of migrations/ to MySQL and creates the Kafka topics that do not exist yet. It is
// idempotent and exits when done: run it before the projector and the API (compose runs it as a one-shot
// service), and from one place at a time.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/convsync/conversations/internal/kafkaconn"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/topicadmin"
)

// config is read from the environment.
type config struct {
	// MySQLDSN is the database to migrate (go-sql-driver/mysql DSN).
	MySQLDSN string `env:"MYSQL_DSN" envDefault:"conv:conv@tcp(127.0.0.1:3306)/conversations"`
	// KafkaBrokers are the bootstrap brokers; empty skips topic creation.
	KafkaBrokers []string `env:"KAFKA_BROKERS" envDefault:"127.0.0.1:9092" envSeparator:","`
	// Kafka is how to connect to the brokers: KAFKA_SECURITY_PROTOCOL (default PLAINTEXT),
	// KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD, KAFKA_TLS_CA_FILE,
	// KAFKA_TLS_CERT_FILE, KAFKA_TLS_KEY_FILE, KAFKA_TLS_SERVER_NAME (kafkaconn.Config).
	Kafka kafkaconn.Config
	// MySQLTLS verifies the database's certificate against a private CA: MYSQL_TLS_CA_FILE,
	// MYSQL_TLS_CERT_FILE, MYSQL_TLS_KEY_FILE (mysql.TLS). Default none: the DSN's tls= decides.
	MySQLTLS mysql.TLS
	// KafkaTopic is the events topic, created with KafkaPartitions partitions.
	KafkaTopic string `env:"KAFKA_TOPIC" envDefault:"im.messages"`
	// KafkaDLQTopic is the dead-letter topic, created with KafkaPartitions partitions.
	KafkaDLQTopic string `env:"KAFKA_DLQ_TOPIC" envDefault:"im.messages.dlq"`
	// KafkaChangesTopic is the change feed from projectors and API replicas to API replicas; it has one
	// partition (its records are small and few: one per 500 changed users of a batch). Empty: not created.
	KafkaChangesTopic string `env:"KAFKA_CHANGES_TOPIC" envDefault:"im.conversations.changes"`
	// Replication is the topics' replication factor and min.insync.replicas: KAFKA_REPLICATION_FACTOR
	// (default 3), KAFKA_MIN_INSYNC_REPLICAS (default 2), KAFKA_ALLOW_UNREPLICATED (default false; for a
	// one-broker development cluster). A cluster or an existing topic that cannot keep an acknowledged
	// record through the loss of a broker is refused (topicadmin.Replication).
	Replication topicadmin.Replication
	// KafkaPartitions bounds how many projector replicas can share the work.
	KafkaPartitions int `env:"KAFKA_PARTITIONS" envDefault:"6"`
	// Wait is how long to keep retrying while MySQL or Kafka do not answer yet (they may be starting).
	Wait time.Duration `env:"MIGRATE_WAIT" envDefault:"60s"`
}

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, log); err != nil {
		log.Error("migrate failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger) error {
	cfg, err := env.ParseAs[config]()
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if cfg.KafkaPartitions < 1 {
		return fmt.Errorf("config: KAFKA_PARTITIONS must be at least 1, got %d", cfg.KafkaPartitions)
	}
	if err := errors.Join(cfg.MySQLTLS.Validate(), cfg.Replication.Validate()); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	kc, err := kafkaconn.New(cfg.Kafka)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Wait)
	defer cancel()

	store, err := mysql.Open(cfg.MySQLDSN, mysql.Options{MaxOpenConns: 2, TLS: cfg.MySQLTLS})
	if err != nil {
		return err
	}
	defer store.Close()
	if err := retry(ctx, log, "mysql", func() error { return store.Migrate(ctx, log) }); err != nil {
		return err
	}
	if len(cfg.KafkaBrokers) == 0 {
		log.Info("KAFKA_BROKERS is empty: topics not checked")
		return nil
	}
	topics := []topicadmin.Topic{{Name: cfg.KafkaTopic, Partitions: cfg.KafkaPartitions}}
	if cfg.KafkaChangesTopic != "" {
		topics = append(topics, topicadmin.Topic{Name: cfg.KafkaChangesTopic, Partitions: 1})
	}
	// The dead-letter topic's size limit follows the events topic's, so any record the events topic
	// accepted can be dead-lettered whole (an existing dead-letter topic's limit is raised if lower).
	eventsLimit := 0
	err = retry(ctx, log, "kafka", func() error {
		if err := topicadmin.EnsureReplicated(ctx, kc, cfg.KafkaBrokers, cfg.Replication, log, topics...); err != nil {
			return err
		}
		var err error
		if eventsLimit, err = topicadmin.MaxMessageBytes(ctx, kc, cfg.KafkaBrokers, cfg.KafkaTopic); err != nil {
			return err
		}
		return topicadmin.EnsureReplicated(ctx, kc, cfg.KafkaBrokers, cfg.Replication, log,
			topicadmin.DeadLetterTopic(cfg.KafkaDLQTopic, cfg.KafkaPartitions, eventsLimit))
	})
	if err != nil {
		return err
	}
	log.Info("topics ready", "topic", cfg.KafkaTopic, "dlq_topic", cfg.KafkaDLQTopic, "changes_topic", cfg.KafkaChangesTopic,
		"partitions", cfg.KafkaPartitions, "replication", cfg.Replication, "max_message_bytes", eventsLimit,
		"dlq_max_message_bytes", topicadmin.DeadLetterTopic(cfg.KafkaDLQTopic, 0, eventsLimit).MaxMessageBytes)
	return nil
}

// retry runs fn until it succeeds or ctx ends, so migrate can start together with the services it needs.
func retry(ctx context.Context, log *slog.Logger, what string, fn func() error) error {
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil {
			return nil
		}
		log.Warn("not ready yet, retrying", "service", what, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (gave up: %w)", what, err, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}
