package main

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	gomysql "github.com/go-sql-driver/mysql"

	"github.com/convsync/conversations/internal/kafkaconn"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/projector"
	"github.com/convsync/conversations/internal/topicadmin"
)

// config is the projector's configuration, read from the environment. Each field's default is the
// envDefault beside it, or the one its comment names.
type config struct {
	// MySQLDSN is the read model's database, go-sql-driver format. Default
	// conv:conv@tcp(127.0.0.1:3306)/conversations. Its password is never logged.
	MySQLDSN string `env:"MYSQL_DSN" envDefault:"conv:conv@tcp(127.0.0.1:3306)/conversations"`
	// KafkaBrokers is a comma-separated list of bootstrap brokers. Default 127.0.0.1:9092.
	KafkaBrokers []string `env:"KAFKA_BROKERS" envDefault:"127.0.0.1:9092" envSeparator:","`
	// Kafka is how to connect to the brokers: KAFKA_SECURITY_PROTOCOL (default PLAINTEXT),
	// KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD, KAFKA_TLS_CA_FILE,
	// KAFKA_TLS_CERT_FILE, KAFKA_TLS_KEY_FILE, KAFKA_TLS_SERVER_NAME (kafkaconn.Config).
	Kafka kafkaconn.Config
	// Replication is what the dead-letter and change-feed topics must keep for a record the projector
	// produced (acks=all) to survive the loss of a broker: KAFKA_REPLICATION_FACTOR (default 3),
	// KAFKA_MIN_INSYNC_REPLICAS (default 2), KAFKA_ALLOW_UNREPLICATED (default false, for a one-broker
	// development cluster). Checked at start: a weaker topic is refused (topicadmin.Check).
	Replication topicadmin.Replication
	// MySQLTLS verifies the database's certificate against a private CA: MYSQL_TLS_CA_FILE,
	// MYSQL_TLS_CERT_FILE, MYSQL_TLS_KEY_FILE (mysql.TLS). Default none: the DSN's tls= decides.
	MySQLTLS mysql.TLS
	// KafkaTopic is the events topic (contract §1). Default im.messages.
	KafkaTopic string `env:"KAFKA_TOPIC" envDefault:"im.messages"`
	// KafkaDLQTopic receives the records that can never be applied. Default im.messages.dlq.
	KafkaDLQTopic string `env:"KAFKA_DLQ_TOPIC" envDefault:"im.messages.dlq"`
	// KafkaChangesTopic is the change feed: after each batch commits, the users whose conversation
	// lists changed, with their new versions, so API replicas can serve lists from memory. Default
	// im.conversations.changes; empty turns the feed off.
	KafkaChangesTopic string `env:"KAFKA_CHANGES_TOPIC" envDefault:"im.conversations.changes"`
	// KafkaGroupID is the consumer group; instances sharing it share the partitions. Default
	// conversation-projector.
	KafkaGroupID string `env:"KAFKA_GROUP_ID" envDefault:"conversation-projector"`
	// KafkaSessionTimeout is how long the group waits for a crashed instance before its partitions move
	// to the others. Default 10s (the broker accepts 6s..30m by default).
	KafkaSessionTimeout time.Duration `env:"KAFKA_SESSION_TIMEOUT" envDefault:"10s"`
	// HTTPAddr serves /healthz, /readyz and /metrics. Default 127.0.0.1:8081.
	HTTPAddr string `env:"PROJECTOR_HTTP_ADDR" envDefault:"127.0.0.1:8081"`
	// LogLevel is debug, info, warn or error. Default info.
	LogLevel slog.Level `env:"LOG_LEVEL" envDefault:"info"`
	// BatchMaxRecords bounds the records applied in one transaction. Default 5000: under a backlog a
	// larger batch coalesces more effects per row; under light load batches are what arrived meanwhile.
	BatchMaxRecords int `env:"BATCH_MAX_RECORDS" envDefault:"5000"`
	// BatchMaxBytes bounds the record bytes of one batch. Default 16777216 (16 MiB).
	BatchMaxBytes int `env:"BATCH_MAX_BYTES" envDefault:"16777216"`
	// BatchMaxWait, when > 0, lets a batch linger that long after its first record for more to arrive.
	// Default 0: a batch is what was fetched while the previous one was applied, applied at once.
	BatchMaxWait time.Duration `env:"BATCH_MAX_WAIT" envDefault:"0s"`
	// Lanes is how many lanes apply this instance's partitions concurrently, each a sequence of batches
	// and transactions over its share of them. Default projector.DefaultLanes (2, chosen by measurement,
	// docs/benchmarks.md); at most projector.MaxLanes. Each lane uses a database connection.
	Lanes int `env:"PROJECTOR_LANES"`
	// SlowBatch logs a batch at WARN ("slow batch", with the time of each of its stages and steps) when
	// its oldest record took this long or more from fetched to the batch's end, or a record of it from
	// its timestamp to fetched. Default 1s; 0 logs none.
	SlowBatch time.Duration `env:"SLOW_BATCH" envDefault:"1s"`
	// Rules decide what the projection writes: RECENTS_WINDOW, LARGE_CHANNEL_MEMBERS,
	// SKIP_CHANNEL_TYPES, MAX_EVENT_BYTES, with their defaults (projector.Rules). convctl's rebuild reads
	// the same struct.
	projector.Rules
	// TombstoneMaxAge purges deleted conversations older than this, every minute. Default 0: keep
	// them forever. Example: 720h.
	TombstoneMaxAge time.Duration `env:"TOMBSTONE_MAX_AGE" envDefault:"0"`
	// PoisonAttempts is how many times in a row a batch may fail with an error that is not transient
	// (not an unreachable database, not a lock conflict) before it is split to find the records that fail
	// alone, which are dead-lettered as apply_failed. Default 5.
	PoisonAttempts int `env:"POISON_ATTEMPTS" envDefault:"5"`
	// StallAfter turns /healthz red (503) when the consume loop made no progress for that long while
	// records wait: a hung database or broker call, a stuck client. Default 2m.
	StallAfter time.Duration `env:"STALL_AFTER" envDefault:"2m"`
	// ShutdownTimeout is how long the in-flight batch may take to finish after SIGTERM. Default 10s.
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"10s"`
	// VitessShard, on a read model sharded by user on Vitess (docs/operations.md), is the shard this
	// projector feeds ("-80"): MYSQL_DSN must target it (database "conv:-80"), and KAFKA_GROUP_ID and
	// KAFKA_CHANGES_TOPIC must be this shard's own. Default none (one unsharded read model).
	VitessShard string `env:"VITESS_SHARD"`
}

// loadConfig reads the configuration from environ and reports every invalid value at once.
func loadConfig(environ map[string]string) (config, error) {
	var c config
	if err := env.ParseWithOptions(&c, env.Options{Environment: environ}); err != nil {
		return c, fmt.Errorf("config: %w", byVariable(err))
	}
	if _, set := environ["PROJECTOR_LANES"]; !set {
		c.Lanes = projector.DefaultLanes // the default lives with the lanes (no envDefault tag)
	}
	c.Rules.Defaults(environ)
	if err := c.validate(); err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	return c, nil
}

func (c config) validate() error {
	var errs []error
	if _, err := gomysql.ParseDSN(c.MySQLDSN); err != nil {
		errs = append(errs, fmt.Errorf("MYSQL_DSN: %w", err)) // the driver's message never quotes the DSN
	}
	errs = append(errs, c.Kafka.Validate(), c.MySQLTLS.Validate(), c.Replication.Validate(), c.Rules.Validate())
	if len(c.KafkaBrokers) == 0 {
		errs = append(errs, errors.New("KAFKA_BROKERS: at least one broker is required"))
	}
	for _, b := range c.KafkaBrokers {
		if b == "" {
			errs = append(errs, errors.New("KAFKA_BROKERS: empty broker address"))
		}
	}
	if c.KafkaTopic == "" {
		errs = append(errs, errors.New("KAFKA_TOPIC: required"))
	}
	if c.KafkaDLQTopic == "" || c.KafkaDLQTopic == c.KafkaTopic {
		errs = append(errs, errors.New("KAFKA_DLQ_TOPIC: required, and different from KAFKA_TOPIC"))
	}
	if c.KafkaSessionTimeout < time.Second {
		errs = append(errs, fmt.Errorf("KAFKA_SESSION_TIMEOUT: %s, want at least 1s", c.KafkaSessionTimeout))
	}
	if c.KafkaGroupID == "" {
		errs = append(errs, errors.New("KAFKA_GROUP_ID: required"))
	}
	if c.HTTPAddr == "" {
		errs = append(errs, errors.New("PROJECTOR_HTTP_ADDR: required"))
	}
	if c.VitessShard != "" {
		if _, err := mysql.ParseKeyRange(c.VitessShard); err != nil {
			errs = append(errs, fmt.Errorf("VITESS_SHARD: %w", err))
		} else if dsn, err := gomysql.ParseDSN(c.MySQLDSN); err == nil && !strings.HasSuffix(dsn.DBName, ":"+c.VitessShard) {
			errs = append(errs, fmt.Errorf("VITESS_SHARD %s: MYSQL_DSN must target the shard (database keyspace:%s)", c.VitessShard, c.VitessShard))
		}
	}
	if c.BatchMaxRecords < 1 || c.BatchMaxRecords > 50_000 {
		errs = append(errs, fmt.Errorf("BATCH_MAX_RECORDS: %d is outside 1..50000", c.BatchMaxRecords))
	}
	if c.BatchMaxBytes < 1<<10 {
		errs = append(errs, fmt.Errorf("BATCH_MAX_BYTES: %d, want at least 1024", c.BatchMaxBytes))
	}
	if c.BatchMaxWait < 0 {
		errs = append(errs, fmt.Errorf("BATCH_MAX_WAIT: %s, want >= 0", c.BatchMaxWait))
	}
	if c.SlowBatch < 0 {
		errs = append(errs, fmt.Errorf("SLOW_BATCH: %s, want >= 0", c.SlowBatch))
	}
	if c.Lanes < 1 || c.Lanes > projector.MaxLanes {
		errs = append(errs, fmt.Errorf("PROJECTOR_LANES: %d is outside 1..%d", c.Lanes, projector.MaxLanes))
	}
	if c.StallAfter <= 0 {
		errs = append(errs, fmt.Errorf("STALL_AFTER: %s, want > 0", c.StallAfter))
	}
	if c.PoisonAttempts < 1 {
		errs = append(errs, fmt.Errorf("POISON_ATTEMPTS: %d, want > 0", c.PoisonAttempts))
	}
	if c.TombstoneMaxAge < 0 {
		errs = append(errs, fmt.Errorf("TOMBSTONE_MAX_AGE: %s, want >= 0 (0 keeps tombstones)", c.TombstoneMaxAge))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("SHUTDOWN_TIMEOUT: %s, want > 0", c.ShutdownTimeout))
	}
	return errors.Join(errs...)
}

// byVariable rewrites env's parse errors, which name struct fields, to name the environment variables.
func byVariable(err error) error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return err
	}
	errs := make([]error, 0, len(agg.Errors))
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			if f, ok := reflect.TypeFor[config]().FieldByName(pe.Name); ok {
				errs = append(errs, fmt.Errorf("%s: %w", f.Tag.Get("env"), pe.Err))
				continue
			}
		}
		errs = append(errs, e)
	}
	return errors.Join(errs...)
}

// LogValue is the configuration as logged: the DSN without its password.
func (c config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("mysql_dsn", redactDSN(c.MySQLDSN)),
		slog.Any("kafka_brokers", c.KafkaBrokers),
		slog.Any("kafka", c.Kafka),
		slog.Any("replication", c.Replication),
		slog.String("mysql_tls_ca_file", c.MySQLTLS.CAFile),
		slog.String("kafka_topic", c.KafkaTopic),
		slog.Int("large_channel_members", c.LargeChannelMembers),
		slog.String("kafka_dlq_topic", c.KafkaDLQTopic),
		slog.String("kafka_changes_topic", c.KafkaChangesTopic),
		slog.String("kafka_group_id", c.KafkaGroupID),
		slog.String("kafka_session_timeout", c.KafkaSessionTimeout.String()),
		slog.String("http_addr", c.HTTPAddr),
		slog.String("log_level", c.LogLevel.String()),
		slog.Int("batch_max_records", c.BatchMaxRecords),
		slog.Int("batch_max_bytes", c.BatchMaxBytes),
		slog.String("batch_max_wait", c.BatchMaxWait.String()),
		slog.Int("lanes", c.Lanes),
		slog.String("slow_batch", c.SlowBatch.String()),
		slog.Int64("recents_window", c.RecentsWindow),
		slog.Any("skip_channel_types", c.SkipChannelTypes),
		slog.Int("max_event_bytes", c.MaxEventBytes),
		slog.Int("poison_attempts", c.PoisonAttempts),
		slog.Duration("stall_after", c.StallAfter),
		slog.String("tombstone_max_age", c.TombstoneMaxAge.String()),
		slog.String("shutdown_timeout", c.ShutdownTimeout.String()),
	)
}

// String keeps fmt from printing the secrets that LogValue leaves out.
func (c config) String() string { return c.LogValue().String() }

// redactDSN returns dsn with its password replaced, or a placeholder when it does not parse.
func redactDSN(dsn string) string {
	cfg, err := gomysql.ParseDSN(dsn)
	if err != nil {
		return "(unparsable)"
	}
	if cfg.Passwd != "" {
		cfg.Passwd = "REDACTED"
	}
	return cfg.FormatDSN()
}
