// Command convctl is the operator's tool for the days things go wrong (docs/operations.md):
//
//	convctl lag                       consumer lag of the projector's group, per partition
//	convctl dlq list                  dead letters by reason, with where each came from
//	convctl dlq redrive               re-send a selection of dead letters to the events topic
//	convctl purge-user -uid U         delete one user's rows from the read model
//	convctl rebuild -schema S         project the events topic from its start into a fresh schema
//	convctl switch -schema S          swap the rebuilt schema's tables into the live one
//
// It reads the same environment as the other binaries (MYSQL_DSN, KAFKA_BROKERS, KAFKA_TOPIC,
// KAFKA_DLQ_TOPIC, KAFKA_GROUP_ID, the KAFKA_SECURITY_PROTOCOL/SASL/TLS and MYSQL_TLS variables), so it
// runs from a pod of the deployment with its Secrets. Each subcommand takes -h.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/caarlos0/env/v11"
	gomysql "github.com/go-sql-driver/mysql"

	"github.com/convsync/conversations/internal/kafkaconn"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/projector"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx, os.Args[1:], env.ToMap(os.Environ()), os.Stdout)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "convctl:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// errUsage marks a command line that names no known subcommand or misses a required flag.
var errUsage = errors.New("usage")

const usage = `usage: convctl <command> [flags]

commands:
  lag                 consumer lag of a group (default KAFKA_GROUP_ID) per partition
  dlq list            dead letters (KAFKA_DLQ_TOPIC) by reason, with their source
  dlq redrive         re-send selected dead letters to KAFKA_TOPIC
  purge-user          delete one user's conversations and version (and memberships)
  rebuild             project KAFKA_TOPIC from its start into a fresh schema
  switch              make a rebuilt schema the live read model

Configuration comes from the environment, as for the projector. Each command takes -h.`

// config is convctl's environment: the variables of the projector it needs.
type config struct {
	// MySQLDSN is the live read model. Default conv:conv@tcp(127.0.0.1:3306)/conversations.
	MySQLDSN string `env:"MYSQL_DSN" envDefault:"conv:conv@tcp(127.0.0.1:3306)/conversations"`
	// MySQLTLS: MYSQL_TLS_CA_FILE, MYSQL_TLS_CERT_FILE, MYSQL_TLS_KEY_FILE (mysql.TLS).
	MySQLTLS mysql.TLS
	// KafkaBrokers are the bootstrap brokers. Default 127.0.0.1:9092.
	KafkaBrokers []string `env:"KAFKA_BROKERS" envDefault:"127.0.0.1:9092" envSeparator:","`
	// Kafka: KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_TLS_* (kafkaconn.Config).
	Kafka kafkaconn.Config
	// KafkaTopic is the events topic. Default im.messages.
	KafkaTopic string `env:"KAFKA_TOPIC" envDefault:"im.messages"`
	// KafkaDLQTopic is the dead-letter topic. Default im.messages.dlq.
	KafkaDLQTopic string `env:"KAFKA_DLQ_TOPIC" envDefault:"im.messages.dlq"`
	// KafkaGroupID is the live projector's consumer group. Default conversation-projector.
	KafkaGroupID string `env:"KAFKA_GROUP_ID" envDefault:"conversation-projector"`

	// Rules are the projection settings a rebuild shares with the live projector: the same struct,
	// variables, defaults and validation as cmd/projector's (projector.Rules).
	projector.Rules

	// VitessShards, on a read model sharded by user on Vitess, lists its shards ("-80,80-") and MYSQL_DSN
	// names the keyspace (…/conv), as for cmd/api: purge-user then works shard by shard; rebuild and
	// switch refuse (docs/operations.md, "On Vitess"). Default none.
	VitessShards string `env:"VITESS_SHARDS"`
}

func loadConfig(environ map[string]string) (config, error) {
	cfg, err := env.ParseAsWithOptions[config](env.Options{Environment: environ})
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	cfg.Rules.Defaults(environ)
	errs := []error{cfg.Rules.Validate()}
	if _, err := gomysql.ParseDSN(cfg.MySQLDSN); err != nil {
		errs = append(errs, fmt.Errorf("MYSQL_DSN: %w", err))
	}
	if len(cfg.KafkaBrokers) == 0 {
		errs = append(errs, errors.New("KAFKA_BROKERS: at least one broker is required"))
	}
	if cfg.VitessShards != "" {
		if _, err := mysql.ParseShards(cfg.VitessShards); err != nil {
			errs = append(errs, fmt.Errorf("VITESS_SHARDS: %w", err))
		}
	}
	errs = append(errs, cfg.Kafka.Validate(), cfg.MySQLTLS.Validate())
	if err := errors.Join(errs...); err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	return cfg, nil
}

// run executes the command line args with environ, writing results to stdout. It returns an error
// wrapping errUsage for a bad command line, flag.ErrHelp after -h.
func run(ctx context.Context, args []string, environ map[string]string, stdout io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(stdout, usage)
		if len(args) == 0 {
			return fmt.Errorf("%w: no command", errUsage)
		}
		return nil
	}
	cfg, err := loadConfig(environ)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if environ["LOG_LEVEL"] == "debug" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	e := &cmdEnv{cfg: cfg, out: stdout, log: log}
	cmd, rest := args[0], args[1:]
	if cmd == "dlq" {
		if len(rest) == 0 {
			return fmt.Errorf("%w: dlq needs list or redrive", errUsage)
		}
		cmd, rest = "dlq "+rest[0], rest[1:]
	}
	switch cmd {
	case "lag":
		return e.lag(ctx, rest)
	case "dlq list":
		return e.dlqList(ctx, rest)
	case "dlq redrive":
		return e.dlqRedrive(ctx, rest)
	case "purge-user":
		return e.purgeUser(ctx, rest)
	case "rebuild":
		return e.rebuild(ctx, rest)
	case "switch":
		return e.switchSchema(ctx, rest)
	}
	return fmt.Errorf("%w: unknown command %q (convctl help lists them)", errUsage, cmd)
}

// cmdEnv is what every subcommand shares.
type cmdEnv struct {
	cfg config
	out io.Writer
	log *slog.Logger
}

// flags returns a flag set for a subcommand that prints its usage to the output.
func (e *cmdEnv) flags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.out)
	fs.Usage = func() {
		fmt.Fprintf(e.out, "usage: convctl %s\n\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args, turning flag errors other than -h into usage errors.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %v", errUsage, fs.Args())
	}
	return nil
}

// store opens the read model at dsn (the live one unless a command names another schema).
func (e *cmdEnv) store(dsn string) (*mysql.Store, error) {
	return mysql.Open(dsn, mysql.Options{MaxOpenConns: 4, TLS: e.cfg.MySQLTLS})
}

// dsnFor is the live DSN pointed at another schema.
func (e *cmdEnv) dsnFor(schema string) string {
	c, _ := gomysql.ParseDSN(e.cfg.MySQLDSN) // validated by loadConfig
	c.DBName = schema
	return c.FormatDSN()
}

func (e *cmdEnv) liveSchema() string {
	c, _ := gomysql.ParseDSN(e.cfg.MySQLDSN)
	return c.DBName
}

// opTimeout bounds each single database or broker operation of a command.
const opTimeout = 30 * time.Second
