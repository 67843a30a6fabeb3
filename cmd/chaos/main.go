// Command chaos is the project's chaos run: projector and API replicas killed with SIGKILL under a mixed
// load (duplicates, reordering, membership churn, malformed records, API mutations, devices following
// their users with incremental syncs), a database restart, a broker restart, a fuzz round of the API
// and of the events topic; then every user's sync is compared with the reference model
// (internal/refmodel). It prints figures as it goes and fails when anything was lost, counted twice,
// missed by a following device, answered with a 5xx outside an outage, or stalled.
//
// It runs the built binaries (-bin) against a MySQL-compatible server and a Kafka broker, in a fresh
// database and fresh topics. The database is reached through a TCP proxy chaos controls: without
// -db-restart, the restart is an outage of that proxy (every connection dropped, new ones refused); with
// it, the command is run (make chaos passes one that restarts its private MariaDB). The broker is
// restarted only with -kafka-restart: chaos never restarts a broker it was not given the means to.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
}

// config is the run's shape; flags set it.
type config struct {
	AdminDSN         string
	Brokers          []string
	BinDir           string
	LogDir           string
	Seed             uint64
	Messages         int
	Rounds           int
	Kills            int
	Projectors, APIs int
	Partitions       int
	Followers        int
	MutationsPerRnd  int
	DBRestart        string
	KafkaRestart     string
	OutageFor        string
	FuzzAPI          int
	FuzzEvents       int
	// A cluster's nodes (make chaos-cluster): database replicas the API replicas read, in turn; the
	// replicas' pid files for the freeze; the brokers' pid files and start command, %d being a node id.
	ReadDSNs        []string
	ReplicaPidFiles []string
	Freeze          time.Duration
	BrokerPidFile   string
	BrokerStart     string
}

func parse(args []string, out io.Writer) (config, error) {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.SetOutput(out)
	var c config
	var brokers string
	fs.StringVar(&c.AdminDSN, "mysql", "convtest:convtest@tcp(127.0.0.1:3306)/", "DSN of an account that may create databases")
	fs.StringVar(&brokers, "brokers", "127.0.0.1:9092", "Kafka bootstrap brokers, comma-separated")
	fs.StringVar(&c.BinDir, "bin", ".run/bin", "directory holding the built projector and api commands")
	fs.StringVar(&c.LogDir, "logs", ".run/chaos-logs", "directory for the replicas' logs")
	fs.Uint64Var(&c.Seed, "seed", 1, "seed of the traffic and of every random choice")
	fs.IntVar(&c.Messages, "messages", 40000, "message.sent records before duplicates and malformed ones")
	fs.IntVar(&c.Rounds, "rounds", 10, "rounds: each produces a share of the traffic, mutates, kills and drains")
	fs.IntVar(&c.Kills, "kills", 20, "kill -9 of projector and API replicas, spread over the rounds")
	fs.IntVar(&c.Projectors, "projectors", 2, "projector replicas")
	fs.IntVar(&c.APIs, "apis", 2, "API replicas")
	fs.IntVar(&c.Partitions, "partitions", 6, "partitions of the events topic")
	fs.IntVar(&c.Followers, "followers", 6, "devices following a user with incremental syncs")
	fs.IntVar(&c.MutationsPerRnd, "mutations", 40, "API mutations per round")
	fs.StringVar(&c.DBRestart, "db-restart", "", "shell command that restarts the database (empty: an outage of chaos's proxy)")
	fs.StringVar(&c.KafkaRestart, "kafka-restart", "", "shell command that restarts the broker (empty: no broker restart)")
	fs.StringVar(&c.OutageFor, "outage", "3s", "how long the proxy outage lasts when there is no -db-restart")
	fs.IntVar(&c.FuzzAPI, "fuzz-api", 5000, "fuzzed API requests")
	fs.IntVar(&c.FuzzEvents, "fuzz-events", 2000, "fuzzed event records")
	var readDSNs, replicaPids string
	fs.StringVar(&readDSNs, "read-dsns", "", "space-separated DSNs of database replicas (no database name) the API replicas read in turn")
	fs.StringVar(&replicaPids, "replica-pidfiles", "", "space-separated pid files of database replicas, one of which is frozen (SIGSTOP) for -freeze")
	fs.DurationVar(&c.Freeze, "freeze", 10*time.Second, "how long a database replica stays frozen")
	fs.StringVar(&c.BrokerPidFile, "broker-pidfile", "", "pid file of broker node %d: the leader of the most partitions is killed (-9) while events flow")
	fs.StringVar(&c.BrokerStart, "broker-start", "", "shell command that starts broker node %d again")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	c.Brokers = splitComma(brokers)
	c.ReadDSNs, c.ReplicaPidFiles = strings.Fields(readDSNs), strings.Fields(replicaPids)
	var errs []error
	if c.Rounds < 1 || c.Messages < c.Rounds || c.Projectors < 1 || c.APIs < 1 || c.Partitions < 1 {
		errs = append(errs, errors.New("need rounds >= 1, messages >= rounds, projectors, apis and partitions >= 1"))
	}
	if (c.BrokerPidFile == "") != (c.BrokerStart == "") {
		errs = append(errs, errors.New("-broker-pidfile and -broker-start go together"))
	}
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("no brokers"))
	}
	return c, errors.Join(errs...)
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	return out
}
