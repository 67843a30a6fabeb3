// Command trafficgen writes a generated stream of events (contract §1) to the events topic: the demo
// traffic of `make run`, or one of the benchmark workloads. It exits when every record is written.
//
//	trafficgen -workload demo -events 400 -users 50 -groups 8 -seed 1
//	trafficgen -workload peer
//
// Flags default from the environment: KAFKA_BROKERS (127.0.0.1:9092), KAFKA_TOPIC (im.messages).
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
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/convsync/conversations/internal/kafkaconn"
	"github.com/convsync/conversations/internal/trafficgen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr, log); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		log.Error("trafficgen failed", "err", err)
		os.Exit(1)
	}
}

// config is what the command line says.
type config struct {
	brokers  []string
	topic    string
	workload string
	events   int
	users    int
	groups   int
	seed     uint64
	seqBase  int64
}

func parse(args []string, getenv func(string) string, stderr io.Writer) (config, map[string]bool, error) {
	var c config
	fs := flag.NewFlagSet("trafficgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	brokers := fs.String("brokers", envOr(getenv, "KAFKA_BROKERS", "127.0.0.1:9092"), "Kafka brokers, comma-separated (env KAFKA_BROKERS)")
	fs.StringVar(&c.topic, "topic", envOr(getenv, "KAFKA_TOPIC", "im.messages"), "events topic (env KAFKA_TOPIC); it must exist")
	fs.StringVar(&c.workload, "workload", "demo", "workload: "+strings.Join(trafficgen.Workloads, "|"))
	fs.IntVar(&c.events, "events", 400, "messages to send (membership events come on top); default per workload unless set")
	fs.IntVar(&c.users, "users", 50, "users u1..uN (demo only)")
	fs.IntVar(&c.groups, "groups", 8, "groups g1..gN (demo only)")
	fs.Uint64Var(&c.seed, "seed", 1, "random seed (peer has a fixed seed unless set)")
	fs.Int64Var(&c.seqBase, "seq-base", -1, "added to every message_seq (and scales message_id); -1: for demo the number of records "+
		"already in the topic, so a later demo run continues each channel's sequence instead of repeating it "+
		"(repeats would be duplicates, ignored); 0 otherwise")
	if err := fs.Parse(args); err != nil {
		return c, nil, err
	}
	if fs.NArg() > 0 {
		return c, nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, b := range strings.Split(*brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			c.brokers = append(c.brokers, b)
		}
	}
	var errs []error
	if len(c.brokers) == 0 {
		errs = append(errs, errors.New("-brokers: at least one broker is required"))
	}
	if c.topic == "" {
		errs = append(errs, errors.New("-topic is required"))
	}
	if !slices.Contains(trafficgen.Workloads, c.workload) {
		errs = append(errs, fmt.Errorf("-workload %q: want one of %s", c.workload, strings.Join(trafficgen.Workloads, ", ")))
	}
	if c.events < 0 || c.users < 2 || c.groups < 0 {
		errs = append(errs, errors.New("-events and -groups must be >= 0, -users >= 2"))
	}
	return c, set, errors.Join(errs...)
}

func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

// generatorConfig turns the command line into a generator config. topicRecords is how many records the
// topic already holds (the demo's automatic seq base).
func (c config) generatorConfig(set map[string]bool, now time.Time, topicRecords int64) (trafficgen.Config, error) {
	var cfg trafficgen.Config
	if c.workload == "demo" {
		cfg = trafficgen.Demo(c.users, c.groups, c.events, c.seed)
		// Recent timestamps, ending now, so the demo's conversations look current.
		cfg.StartUnix = now.Unix() - int64(c.events)/10
		cfg.MessagesPerSecond = 10
		if c.seqBase < 0 {
			c.seqBase = topicRecords
		}
	} else {
		var err error
		if cfg, err = trafficgen.Named(c.workload, c.seed); err != nil {
			return cfg, err
		}
		if set["seed"] && c.workload == "peer" {
			cfg.Seed = c.seed
		}
		if set["events"] {
			cfg.Messages = c.events
		}
	}
	cfg.SeqBase = max(c.seqBase, 0)
	return cfg, cfg.Validate()
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer, log *slog.Logger) error {
	c, set, err := parse(args, getenv, stderr)
	if err != nil {
		return err
	}
	kc, err := kafkaConn(getenv)
	if err != nil {
		return err
	}
	var topicRecords int64
	if c.workload == "demo" && c.seqBase < 0 {
		if topicRecords, err = trafficgen.TopicRecords(ctx, kc, c.brokers, c.topic); err != nil {
			return err
		}
	}
	cfg, err := c.generatorConfig(set, time.Now(), topicRecords)
	if err != nil {
		return err
	}
	// The whole stream is generated first, so the progress line knows the total.
	records, stats, err := trafficgen.Generate(cfg)
	if err != nil {
		return err
	}
	log.Info("producing", "workload", c.workload, "topic", c.topic, "brokers", strings.Join(c.brokers, ","),
		"records", len(records), "messages", stats.Messages, "memberships", stats.Memberships,
		"users", cfg.Users, "groups", cfg.Groups, "person_pairs", cfg.PersonPairs+cfg.FocusPairs, "seed", cfg.Seed, "seq_base", cfg.SeqBase)
	start := time.Now()
	sent, err := trafficgen.Produce(ctx, trafficgen.ProducerConfig{Brokers: c.brokers, Kafka: kc, Topic: c.topic, Progress: stderr},
		slices.Values(records), len(records))
	elapsed := time.Since(start)
	if err != nil {
		return fmt.Errorf("after %d of %d records: %w", sent, len(records), err)
	}
	log.Info("done", "records", sent, "duration_ms", elapsed.Milliseconds(), "records_per_s", int(float64(sent)/max(elapsed.Seconds(), 1e-3)))
	return nil
}

// kafkaConn reads the connection settings every binary shares (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*,
// KAFKA_TLS_*; docs/operations.md) from the environment, so the demo traffic reaches a secured Kafka.
func kafkaConn(getenv func(string) string) (*kafkaconn.Conn, error) {
	environ := map[string]string{}
	for _, name := range kafkaconn.Variables() {
		if v := getenv(name); v != "" {
			environ[name] = v
		}
	}
	c, err := env.ParseAsWithOptions[kafkaconn.Config](env.Options{Environment: environ})
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	kc, err := kafkaconn.New(c)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return kc, nil
}
