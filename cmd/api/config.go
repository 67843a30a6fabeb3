package main

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/caarlos0/env/v11"
	mysqldriver "github.com/go-sql-driver/mysql"

	"github.com/convsync/conversations/internal/httpapi"
	"github.com/convsync/conversations/internal/kafkaconn"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/purge"
	"github.com/convsync/conversations/internal/readcache"
	"github.com/convsync/conversations/internal/topicadmin"
)

// config is the API's whole configuration, read from the environment. Defaults are on the fields: an
// envDefault tag, or, for a setting of a package that has its own default, that package's constant
// (packageDefaults), so that each default is defined once.
type config struct {
	// MySQLDSN is the read model's database (go-sql-driver/mysql DSN). It holds a password: only its
	// address and database name are ever logged.
	MySQLDSN string `env:"MYSQL_DSN" envDefault:"conv:conv@tcp(127.0.0.1:3306)/conversations"`
	// HTTPAddr is where the API listens (default 127.0.0.1:8080).
	HTTPAddr string `env:"API_HTTP_ADDR" envDefault:"127.0.0.1:8080"`
	// Token, when set, is the bearer token every API call must present; health and metrics need none.
	// It is never logged.
	Token string `env:"API_TOKEN"`
	// LogLevel is debug, info, warn or error (default info).
	LogLevel slog.Level `env:"LOG_LEVEL" envDefault:"info"`
	// SyncMaxMsgCount caps a sync's msg_count (default 100).
	SyncMaxMsgCount int `env:"SYNC_MAX_MSG_COUNT"`
	// SyncMaxConversations caps the conversations of a full sync (default 1000, as WuKongIM).
	SyncMaxConversations int `env:"SYNC_MAX_CONVERSATIONS"`
	// MySQLMaxOpenConns bounds the connection pool (default 32; fewer costs throughput).
	MySQLMaxOpenConns int `env:"MYSQL_MAX_OPEN_CONNS"`
	// SyncCacheUsers is how many users' conversation lists the API keeps in memory (default 100000; 0
	// turns the cache off). Without the change feed a cached list is served only after checking that the
	// user's version is unchanged (what reading the rows then would give; it saves reading them). With the feed it is served
	// until a newer version is announced, or for at most SyncCacheMaxAge if an announcement was lost.
	SyncCacheUsers int `env:"SYNC_CACHE_USERS"`
	// SyncCacheRows bounds the rows of all cached lists together (default 1000000, about 250 MiB live;
	// docs/operations.md): with SyncCacheUsers it bounds the cache's memory whatever the length of the
	// users' lists. Least recently used lists go first.
	SyncCacheRows int `env:"SYNC_CACHE_ROWS"`
	// KafkaBrokers, when set, turns the change feed on: the API follows KafkaChangesTopic to learn which
	// users' lists changed, serves cached lists without reading the database for up to SyncCacheMaxAge,
	// and announces its own mutations there for the other replicas. Empty (the default): every sync checks
	// the user's version in the database.
	KafkaBrokers []string `env:"KAFKA_BROKERS" envSeparator:","`
	// Kafka is how to connect to the brokers: KAFKA_SECURITY_PROTOCOL (default PLAINTEXT),
	// KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD, KAFKA_TLS_CA_FILE,
	// KAFKA_TLS_CERT_FILE, KAFKA_TLS_KEY_FILE, KAFKA_TLS_SERVER_NAME (kafkaconn.Config).
	Kafka kafkaconn.Config
	// Replication is what the change feed's topic must keep for an announcement the API produced
	// (acks=all) to survive the loss of a broker: KAFKA_REPLICATION_FACTOR (default 3),
	// KAFKA_MIN_INSYNC_REPLICAS (default 2), KAFKA_ALLOW_UNREPLICATED (default false, for a one-broker
	// development cluster). Checked at start when the feed is on: a weaker topic is refused.
	Replication topicadmin.Replication
	// MySQLTLS verifies the database's certificate against a private CA: MYSQL_TLS_CA_FILE,
	// MYSQL_TLS_CERT_FILE, MYSQL_TLS_KEY_FILE (mysql.TLS). Default none: the DSN's tls= decides.
	MySQLTLS mysql.TLS
	// KafkaChangesTopic is the change feed (default im.conversations.changes).
	KafkaChangesTopic string `env:"KAFKA_CHANGES_TOPIC" envDefault:"im.conversations.changes"`
	// SyncCacheMaxAge bounds, with the change feed on, how long a cached list or recents stretch is
	// served without checking the database: how stale either can get if an announcement is lost
	// (default 5s; at most 1m, see maxSyncCacheMaxAge).
	SyncCacheMaxAge time.Duration `env:"SYNC_CACHE_MAX_AGE"`
	// RecentsCacheBytes bounds the memory for channels' newest messages, cached only with the change feed
	// on (default 67108864 = 64 MiB; 0 turns the cache off).
	RecentsCacheBytes int `env:"RECENTS_CACHE_BYTES"`
	// ReadDSNs are database replicas of MySQLDSN (space-separated DSNs) that answer sync's per-user
	// reads when they are current enough for the user (internal/replica); mutations, recents and large
	// channels' states stay on the primary. Needs the change feed (KAFKA_BROKERS) and the list cache:
	// their announcements are what a replica's answer is checked against. Default none.
	ReadDSNs []string `env:"MYSQL_READ_DSNS" envSeparator:" "`
	// MaxReplicaLag is how far behind the primary a replica may be and still be read (default 2s).
	MaxReplicaLag time.Duration `env:"MAX_REPLICA_LAG" envDefault:"2s"`
	// ReplicaWait is how long a read waits for a replica to reach what the user was already answered,
	// before the primary answers (default 200ms).
	ReplicaWait time.Duration `env:"REPLICA_WAIT" envDefault:"200ms"`
	// ReplicaReadTimeout bounds one read or check on a replica: a frozen replica costs a request at
	// most that (default 150ms).
	ReplicaReadTimeout time.Duration `env:"REPLICA_READ_TIMEOUT" envDefault:"150ms"`
	// ShutdownTimeout is how long in-flight requests may take to finish on SIGTERM (default 10s).
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"10s"`
	// VitessShards, on a read model sharded by user on Vitess (docs/operations.md), lists its shards
	// ("-80,80-"): MYSQL_DSN names the keyspace as its database (…/conv), and each user's request is
	// served from sessions that target the user's shard. The caches, the change feed and
	// MYSQL_READ_DSNS stay off then. Default none (one unsharded read model).
	VitessShards string `env:"VITESS_SHARDS"`
}

// loadConfig reads the configuration from environ, or from the process environment when environ is
// nil, and reports every invalid value at once.
// packageDefaults gives the settings environ leaves unset or empty (as an envDefault tag would) the
// default of the package they configure.
func (c *config) packageDefaults(environ map[string]string) {
	for name, set := range map[string]func(){
		"SYNC_MAX_MSG_COUNT":     func() { c.SyncMaxMsgCount = httpapi.DefaultMaxMsgCount },
		"SYNC_MAX_CONVERSATIONS": func() { c.SyncMaxConversations = httpapi.DefaultMaxConversations },
		"MYSQL_MAX_OPEN_CONNS":   func() { c.MySQLMaxOpenConns = mysql.DefaultMaxOpenConns },
		"SYNC_CACHE_USERS":       func() { c.SyncCacheUsers = readcache.DefaultMaxUsers },
		"SYNC_CACHE_ROWS":        func() { c.SyncCacheRows = readcache.DefaultMaxRows },
		"SYNC_CACHE_MAX_AGE":     func() { c.SyncCacheMaxAge = readcache.DefaultMaxAge },
		"RECENTS_CACHE_BYTES":    func() { c.RecentsCacheBytes = readcache.DefaultRecentsBytes },
	} {
		if environ[name] == "" {
			set()
		}
	}
}

func loadConfig(environ map[string]string) (config, error) {
	cfg, err := env.ParseAsWithOptions[config](env.Options{Environment: environ})
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	cfg.packageDefaults(environ)
	var errs []error
	if _, err := mysqldriver.ParseDSN(cfg.MySQLDSN); err != nil {
		errs = append(errs, fmt.Errorf("MYSQL_DSN: %w", err))
	}
	if cfg.VitessShards != "" {
		if _, err := mysql.ParseShards(cfg.VitessShards); err != nil {
			errs = append(errs, fmt.Errorf("VITESS_SHARDS: %w", err))
		}
	}
	errs = append(errs, cfg.Kafka.Validate(), cfg.MySQLTLS.Validate(), cfg.Replication.Validate())
	if cfg.HTTPAddr == "" {
		errs = append(errs, errors.New("API_HTTP_ADDR must not be empty"))
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"SYNC_MAX_MSG_COUNT", cfg.SyncMaxMsgCount},
		{"SYNC_MAX_CONVERSATIONS", cfg.SyncMaxConversations},
		{"MYSQL_MAX_OPEN_CONNS", cfg.MySQLMaxOpenConns},
	} {
		if f.v < 1 {
			errs = append(errs, fmt.Errorf("%s must be at least 1, got %d", f.name, f.v))
		}
	}
	if cfg.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("SHUTDOWN_TIMEOUT must be positive, got %s", cfg.ShutdownTimeout))
	}
	if cfg.SyncCacheUsers < 0 || cfg.RecentsCacheBytes < 0 {
		errs = append(errs, fmt.Errorf("SYNC_CACHE_USERS and RECENTS_CACHE_BYTES must be >= 0, got %d and %d", cfg.SyncCacheUsers, cfg.RecentsCacheBytes))
	}
	if cfg.SyncCacheRows <= 0 {
		errs = append(errs, fmt.Errorf("SYNC_CACHE_ROWS must be > 0, got %d", cfg.SyncCacheRows))
	}
	if cfg.SyncCacheMaxAge <= 0 || cfg.SyncCacheMaxAge > maxSyncCacheMaxAge {
		errs = append(errs, fmt.Errorf("SYNC_CACHE_MAX_AGE must be positive and at most %s, got %s", maxSyncCacheMaxAge, cfg.SyncCacheMaxAge))
	}
	for i, d := range cfg.ReadDSNs {
		if _, err := mysqldriver.ParseDSN(d); err != nil {
			errs = append(errs, fmt.Errorf("MYSQL_READ_DSNS: DSN %d: %w", i+1, err))
		}
	}
	if len(cfg.ReadDSNs) > 0 && (len(cfg.KafkaBrokers) == 0 || cfg.SyncCacheUsers == 0) {
		errs = append(errs, errors.New("MYSQL_READ_DSNS needs the change feed (KAFKA_BROKERS) and SYNC_CACHE_USERS > 0: "+
			"a replica's answer is checked against the versions announced there"))
	}
	if cfg.MaxReplicaLag <= 0 || cfg.ReplicaWait < 0 || cfg.ReplicaReadTimeout <= 0 {
		errs = append(errs, fmt.Errorf("MAX_REPLICA_LAG and REPLICA_READ_TIMEOUT must be positive and REPLICA_WAIT >= 0, got %s, %s and %s",
			cfg.MaxReplicaLag, cfg.ReplicaReadTimeout, cfg.ReplicaWait))
	}
	if len(cfg.KafkaBrokers) > 0 && cfg.KafkaChangesTopic == "" {
		errs = append(errs, errors.New("KAFKA_CHANGES_TOPIC must not be empty when KAFKA_BROKERS is set"))
	}
	if err := errors.Join(errs...); err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	return cfg, nil
}

// LogValue is what logs show of the configuration: no token, no database password.
func (c config) LogValue() slog.Value {
	attrs := []slog.Attr{
		slog.String("http_addr", c.HTTPAddr),
		slog.Bool("api_token_set", c.Token != ""),
		slog.String("log_level", c.LogLevel.String()),
		slog.Int("sync_max_msg_count", c.SyncMaxMsgCount),
		slog.Int("sync_max_conversations", c.SyncMaxConversations),
		slog.Int("mysql_max_open_conns", c.MySQLMaxOpenConns),
		slog.String("shutdown_timeout", c.ShutdownTimeout.String()),
		slog.Int("sync_cache_users", c.SyncCacheUsers),
		slog.Int("sync_cache_rows", c.SyncCacheRows),
		slog.Any("kafka_brokers", c.KafkaBrokers),
		slog.Any("kafka", c.Kafka),
		slog.Any("replication", c.Replication),
		slog.String("mysql_tls_ca_file", c.MySQLTLS.CAFile),
		slog.String("kafka_changes_topic", c.KafkaChangesTopic),
		slog.String("sync_cache_max_age", c.SyncCacheMaxAge.String()),
		slog.Int("recents_cache_bytes", c.RecentsCacheBytes),
		slog.Any("mysql_read_addrs", readAddrs(c.ReadDSNs)),
		slog.String("max_replica_lag", c.MaxReplicaLag.String()),
		slog.String("replica_wait", c.ReplicaWait.String()),
		slog.String("replica_read_timeout", c.ReplicaReadTimeout.String()),
	}
	if dsn, err := mysqldriver.ParseDSN(c.MySQLDSN); err == nil {
		attrs = append(attrs, slog.String("mysql_addr", dsn.Addr), slog.String("mysql_db", dsn.DBName))
	}
	return slog.GroupValue(attrs...)
}

// String keeps fmt from printing the secrets that LogValue leaves out.
func (c config) String() string { return c.LogValue().String() }

// maxSyncCacheMaxAge keeps a cached list well inside the projector's grace before it deletes a late
// message of a large channel that no follower needs any more (purge.LateGrace, 2m): a list served from
// memory is as old as its last check, and a purge must not remove what such a list still derives from.
const maxSyncCacheMaxAge = purge.LateGrace / 2

// readAddrs are the replicas' addresses, what logs and metrics name them by (never their passwords).
func readAddrs(dsns []string) []string {
	out := make([]string, 0, len(dsns))
	for i, d := range dsns {
		if c, err := mysqldriver.ParseDSN(d); err == nil {
			out = append(out, c.Addr)
		} else {
			out = append(out, fmt.Sprintf("replica-%d", i+1))
		}
	}
	return out
}
