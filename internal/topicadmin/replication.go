package topicadmin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/kafkaconn"
)

// Replication is the durability the service asks of the topics it creates and produces to (contract
// §6): every record it produces is acknowledged by all in-sync replicas (acks=all), so with at least
// two in-sync replicas required an acknowledged record is on two brokers, and with one replica more
// than that the topic stays writable through the loss of a broker. Binaries embed it in their
// configuration.
type Replication struct {
	// Factor is the replication factor of the topics the service creates (dead letters, change feed,
	// and the events topic cmd/migrate creates). Default 3.
	Factor int `env:"KAFKA_REPLICATION_FACTOR" envDefault:"3"`
	// MinInSync is their min.insync.replicas: how many replicas must have a record before it is
	// acknowledged. Default 2.
	MinInSync int `env:"KAFKA_MIN_INSYNC_REPLICAS" envDefault:"2"`
	// AllowUnreplicated is for one-broker development only: the factor and the minimum are lowered to
	// what the cluster has, and a topic that cannot keep an acknowledged record through the loss of a
	// broker is accepted with a warning instead of refused. Default false.
	AllowUnreplicated bool `env:"KAFKA_ALLOW_UNREPLICATED" envDefault:"false"`
}

// Development is the replication of tools and tests that run against any cluster, one broker
// included: three replicas and two in sync where the cluster has them.
var Development = Replication{Factor: 3, MinInSync: 2, AllowUnreplicated: true}

// ErrNotDurable is returned (wrapped, with the topic, the setting and what to do) when a topic's
// settings, or the configuration, cannot keep an acknowledged record through the loss of one broker.
var ErrNotDurable = errors.New("not durable through the loss of a broker")

// Validate reports invalid settings at once, naming the variables. Without AllowUnreplicated it
// refuses a minimum below 2 (an acknowledged record on one broker only) and a factor not above the
// minimum (the loss of one broker would stop every write).
func (r Replication) Validate() error {
	var errs []error
	if r.Factor < 1 {
		errs = append(errs, fmt.Errorf("KAFKA_REPLICATION_FACTOR must be at least 1, got %d", r.Factor))
	}
	if r.MinInSync < 1 || r.MinInSync > r.Factor {
		errs = append(errs, fmt.Errorf("KAFKA_MIN_INSYNC_REPLICAS must be 1..KAFKA_REPLICATION_FACTOR (%d), got %d", r.Factor, r.MinInSync))
	}
	if len(errs) == 0 && !r.AllowUnreplicated {
		if r.MinInSync < 2 {
			errs = append(errs, fmt.Errorf("KAFKA_MIN_INSYNC_REPLICAS=%d: an acknowledged record would be on one broker only: %w (set 2, or KAFKA_ALLOW_UNREPLICATED=true on a one-broker development cluster)", r.MinInSync, ErrNotDurable))
		}
		if r.Factor <= r.MinInSync {
			errs = append(errs, fmt.Errorf("KAFKA_REPLICATION_FACTOR=%d with KAFKA_MIN_INSYNC_REPLICAS=%d: the loss of one broker would stop every write: %w (set the factor to at least %d)", r.Factor, r.MinInSync, ErrNotDurable, r.MinInSync+1))
		}
	}
	return errors.Join(errs...)
}

// effective is the factor and minimum to create and require on a cluster of brokers brokers.
func (r Replication) effective(brokers int) (factor, minInSync int, err error) {
	factor, minInSync = r.Factor, r.MinInSync
	if brokers >= factor {
		return factor, minInSync, nil
	}
	if !r.AllowUnreplicated {
		return 0, 0, fmt.Errorf("the cluster has %d broker(s), KAFKA_REPLICATION_FACTOR is %d: %w (set KAFKA_ALLOW_UNREPLICATED=true on a one-broker development cluster)", brokers, factor, ErrNotDurable)
	}
	factor = max(1, brokers)
	return factor, min(minInSync, factor), nil
}

// LogValue is how the settings are logged.
func (r Replication) LogValue() slog.Value {
	return slog.GroupValue(slog.Int("factor", r.Factor), slog.Int("min_insync", r.MinInSync), slog.Bool("allow_unreplicated", r.AllowUnreplicated))
}

const (
	minInSyncReplicas = "min.insync.replicas"
	uncleanElection   = "unclean.leader.election.enable"
)

// Check returns an error wrapping ErrNotDurable when one of topics has fewer replicas than the
// replication asks (on a partition), a lower min.insync.replicas, or unclean leader election on: a
// record acknowledged by all in-sync replicas could then be lost with one broker. With
// AllowUnreplicated such a topic is logged as a warning and accepted. Other errors (the cluster or a
// topic cannot be reached or described) do not wrap ErrNotDurable: a caller may start and check later.
func Check(ctx context.Context, kc *kafkaconn.Conn, brokers []string, r Replication, log *slog.Logger, topics ...string) error {
	client := &kafkago.Client{Addr: kafkago.TCP(brokers...), Timeout: 5 * time.Second}
	if kc != nil {
		transport := kc.Transport()
		defer transport.CloseIdleConnections()
		client.Transport = transport
	}
	return check(ctx, client, r, log, topics)
}

func check(ctx context.Context, client *kafkago.Client, r Replication, log *slog.Logger, topics []string) error {
	meta, err := client.Metadata(ctx, &kafkago.MetadataRequest{Topics: topics})
	if err != nil {
		return fmt.Errorf("describe topics %v: %w", topics, err)
	}
	factor, minInSync, err := r.effective(clusterSize(meta))
	if err != nil {
		return err
	}
	var weak []error
	for _, t := range meta.Topics {
		if t.Error != nil {
			return fmt.Errorf("topic %s: %w", t.Name, t.Error)
		}
		for _, p := range t.Partitions {
			if len(p.Replicas) < factor {
				weak = append(weak, fmt.Errorf("topic %s: partition %d has %d replica(s), KAFKA_REPLICATION_FACTOR is %d: %w (recreate it, or reassign its partitions, with %d replicas)",
					t.Name, p.ID, len(p.Replicas), factor, ErrNotDurable, factor))
				break
			}
		}
		settings, err := describe(ctx, client, t.Name, minInSyncReplicas, uncleanElection)
		if err != nil {
			return err
		}
		if n, _ := strconv.Atoi(settings[minInSyncReplicas]); n < minInSync {
			weak = append(weak, fmt.Errorf("topic %s: %s is %s, KAFKA_MIN_INSYNC_REPLICAS is %d: %w (cmd/migrate raises it)",
				t.Name, minInSyncReplicas, settings[minInSyncReplicas], minInSync, ErrNotDurable))
		}
		if settings[uncleanElection] == "true" {
			weak = append(weak, fmt.Errorf("topic %s: %s is true: a replica that missed acknowledged records could lead: %w (cmd/migrate turns it off)",
				t.Name, uncleanElection, ErrNotDurable))
		}
	}
	if len(weak) == 0 {
		return nil
	}
	if r.AllowUnreplicated {
		if factor > 1 || minInSync > 1 || log == nil {
			return errors.Join(weak...) // what the cluster could do and the topic does not: refused all the same
		}
		log.Warn("topics not durable through the loss of a broker (KAFKA_ALLOW_UNREPLICATED: one-broker development)", "topics", topics)
		return nil
	}
	return errors.Join(weak...)
}

// clusterSize is how many brokers the cluster has, as far as meta shows: the brokers that answer, or
// more when a partition is assigned to more replicas than that. Metadata lists only the brokers that
// are up, so a broker down for a moment (a restart, a rolling upgrade, an outage) must not read as a
// cluster too small for the replication: the topics were placed on it, and a process starting then
// would otherwise refuse to start (ErrNotDurable) until the broker is back.
func clusterSize(meta *kafkago.MetadataResponse) int {
	n := len(meta.Brokers)
	for _, t := range meta.Topics {
		for _, p := range t.Partitions {
			n = max(n, len(p.Replicas))
		}
	}
	return n
}

// describe returns the topic's effective value of each named setting. On a cluster a topic just created
// may be unknown for a moment to the broker asked: that answer is retried for a few seconds.
func describe(ctx context.Context, c *kafkago.Client, topic string, names ...string) (map[string]string, error) {
	for attempt := 0; ; attempt++ {
		out, err := describeOnce(ctx, c, topic, names)
		if err == nil || !errors.Is(err, kafkago.UnknownTopicOrPartition) || attempt == 50 {
			return out, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func describeOnce(ctx context.Context, c *kafkago.Client, topic string, names []string) (map[string]string, error) {
	res, err := c.DescribeConfigs(ctx, &kafkago.DescribeConfigsRequest{Resources: []kafkago.DescribeConfigRequestResource{
		{ResourceType: kafkago.ResourceTypeTopic, ResourceName: topic, ConfigNames: names},
	}})
	if err != nil {
		return nil, fmt.Errorf("describe topic %s: %w", topic, err)
	}
	out := map[string]string{}
	for _, r := range res.Resources {
		if r.Error != nil {
			return nil, fmt.Errorf("describe topic %s: %w", topic, r.Error)
		}
		for _, e := range r.ConfigEntries {
			out[e.ConfigName] = e.ConfigValue
		}
	}
	return out, nil
}

// settle gives an existing topic the min.insync.replicas it should have (raised, never lowered) and
// turns unclean leader election off, as cmd/migrate does for topics created before these settings.
func settle(ctx context.Context, c *kafkago.Client, topic string, minInSync int) error {
	have, err := describe(ctx, c, topic, minInSyncReplicas, uncleanElection)
	if err != nil {
		return err
	}
	var set []kafkago.IncrementalAlterConfigsRequestConfig
	if n, _ := strconv.Atoi(have[minInSyncReplicas]); n < minInSync {
		set = append(set, kafkago.IncrementalAlterConfigsRequestConfig{Name: minInSyncReplicas, Value: strconv.Itoa(minInSync), ConfigOperation: kafkago.ConfigOperationSet})
	}
	if have[uncleanElection] == "true" {
		set = append(set, kafkago.IncrementalAlterConfigsRequestConfig{Name: uncleanElection, Value: "false", ConfigOperation: kafkago.ConfigOperationSet})
	}
	if len(set) == 0 {
		return nil
	}
	res, err := c.IncrementalAlterConfigs(ctx, &kafkago.IncrementalAlterConfigsRequest{Resources: []kafkago.IncrementalAlterConfigsRequestResource{{
		ResourceType: kafkago.ResourceTypeTopic, ResourceName: topic, Configs: set,
	}}})
	if err == nil && len(res.Resources) == 1 {
		err = res.Resources[0].Error
	}
	if err != nil {
		return fmt.Errorf("set %s/%s of topic %s: %w", minInSyncReplicas, uncleanElection, topic, err)
	}
	if err := waitSetting(ctx, c, topic, minInSyncReplicas, func(v string) bool { n, _ := strconv.Atoi(v); return n >= minInSync }); err != nil {
		return err
	}
	return waitSetting(ctx, c, topic, uncleanElection, func(v string) bool { return v != "true" })
}
