// Package topicadmin creates the service's Kafka topics (events, dead letters, change feed) and waits until
// the cluster serves them.
package topicadmin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/kafkaconn"
)

// Topic is a topic to create and how.
type Topic struct {
	Name       string
	Partitions int
	// MaxMessageBytes, when > 0, is the topic's max.message.bytes: set at creation, and raised (never
	// lowered) on a topic that exists with less. 0 leaves the broker's default.
	MaxMessageBytes int
}

// DeadLetterHeadroom is what a dead letter may add to the record it carries: the x-dlq-* and x-source-*
// headers (the error text is bounded) and the record batch's own overhead, with a wide margin.
const DeadLetterHeadroom = 16 << 10

// DeadLetterTopic is the dead-letter topic of an events topic whose size limit is eventsMaxBytes: its own
// limit fits any record the events topic accepts plus the dead-letter headers.
func DeadLetterTopic(name string, partitions, eventsMaxBytes int) Topic {
	return Topic{Name: name, Partitions: partitions, MaxMessageBytes: eventsMaxBytes + DeadLetterHeadroom}
}

// Ensure creates the topics that do not exist yet with the Development replication (three replicas
// and min.insync.replicas 2 where the cluster has three brokers, fewer on a smaller one), for tools
// and tests, and returns once the cluster serves every partition of each (a topic just created refuses
// produce requests for a moment). Existing topics are left as they are: their partition count is not
// changed. It returns an error when the cluster cannot be reached, refuses a topic, or ctx ends first.
func Ensure(ctx context.Context, kc *kafkaconn.Conn, brokers []string, topics ...Topic) error {
	return ensure(ctx, kc, brokers, Development, false, nil, topics)
}

// EnsureReplicated is Ensure for the service's own topics (cmd/migrate): topics are created with r's
// factor and min.insync.replicas and unclean leader election off; an existing topic's
// min.insync.replicas is raised to r's and unclean election turned off, and then every topic is
// checked (Check): an error wrapping ErrNotDurable names a topic whose replication cannot keep an
// acknowledged record through the loss of a broker, or a cluster too small for r.
func EnsureReplicated(ctx context.Context, kc *kafkaconn.Conn, brokers []string, r Replication, log *slog.Logger, topics ...Topic) error {
	return ensure(ctx, kc, brokers, r, true, log, topics)
}

func ensure(ctx context.Context, kc *kafkaconn.Conn, brokers []string, r Replication, strict bool, log *slog.Logger, topics []Topic) error {
	if len(brokers) == 0 {
		return errors.New("no Kafka brokers configured")
	}
	d := kc.Dialer()
	conn, err := d.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		return fmt.Errorf("dial Kafka %s: %w", brokers[0], err)
	}
	defer conn.Close()
	controller, err := conn.Controller()
	if err != nil {
		return fmt.Errorf("find Kafka controller: %w", err)
	}
	all, err := conn.Brokers()
	if err != nil {
		return fmt.Errorf("list Kafka brokers: %w", err)
	}
	cc, err := d.DialContext(ctx, "tcp", net.JoinHostPort(controller.Host, strconv.Itoa(controller.Port)))
	if err != nil {
		return fmt.Errorf("dial Kafka controller: %w", err)
	}
	defer cc.Close()
	client := &kafkago.Client{Addr: kafkago.TCP(brokers...), Timeout: 5 * time.Second}
	if kc != nil {
		transport := kc.Transport()
		defer transport.CloseIdleConnections()
		client.Transport = transport
	}
	names := make([]string, len(topics))
	for i, t := range topics {
		names[i] = t.Name
	}
	// A broker down for a moment does not make the cluster smaller: topics that exist name their
	// replicas on it (clusterSize). Topics still to be created need the brokers that answer.
	size := len(all)
	if meta, err := client.Metadata(ctx, &kafkago.MetadataRequest{Topics: names}); err == nil {
		size = max(size, clusterSize(meta))
	}
	replication, minInSync, err := r.effective(size)
	if err != nil {
		return err
	}
	configs := make([]kafkago.TopicConfig, 0, len(topics))
	for _, t := range topics {
		c := kafkago.TopicConfig{Topic: t.Name, NumPartitions: t.Partitions, ReplicationFactor: replication,
			ConfigEntries: []kafkago.ConfigEntry{{ConfigName: minInSyncReplicas, ConfigValue: strconv.Itoa(minInSync)}}}
		if strict {
			c.ConfigEntries = append(c.ConfigEntries, kafkago.ConfigEntry{ConfigName: uncleanElection, ConfigValue: "false"})
		}
		if t.MaxMessageBytes > 0 {
			c.ConfigEntries = append(c.ConfigEntries, kafkago.ConfigEntry{ConfigName: maxMessageBytes, ConfigValue: strconv.Itoa(t.MaxMessageBytes)})
		}
		configs = append(configs, c)
	}
	// CreateTopics answers TopicAlreadyExists for a topic that exists: that is success here.
	if err := cc.CreateTopics(configs...); err != nil && !errors.Is(err, kafkago.TopicAlreadyExists) {
		return fmt.Errorf("create topics: %w", err)
	}
	// Without kc the wait runs on kafka-go's DefaultTransport, the one plaintext writers share: its
	// metadata then knows the new topics, and a writer's first produce finds them.
	for _, t := range topics {
		if err := waitServed(ctx, client, t.Name); err != nil {
			return err
		}
		if t.MaxMessageBytes > 0 {
			if err := raiseMaxMessageBytes(ctx, client, t.Name, t.MaxMessageBytes); err != nil {
				return err
			}
		}
		if strict {
			if err := settle(ctx, client, t.Name, minInSync); err != nil {
				return err
			}
		}
	}
	if !strict {
		return nil
	}
	return check(ctx, client, r, log, names)
}

const maxMessageBytes = "max.message.bytes"

// MaxMessageBytes returns the topic's effective max.message.bytes (its own setting, else the broker's
// default): the largest record batch the broker accepts for it. It returns an error when the cluster
// cannot be reached or does not know the topic. kc carries any SASL/TLS settings (nil: plaintext).
func MaxMessageBytes(ctx context.Context, kc *kafkaconn.Conn, brokers []string, topic string) (int, error) {
	client := &kafkago.Client{Addr: kafkago.TCP(brokers...), Timeout: 5 * time.Second}
	if kc != nil {
		transport := kc.Transport()
		defer transport.CloseIdleConnections()
		client.Transport = transport
	}
	return MaxMessageBytesOf(ctx, client, topic)
}

// MaxMessageBytesOf is MaxMessageBytes through an existing client (its transport carries any SASL/TLS).
func MaxMessageBytesOf(ctx context.Context, c *kafkago.Client, topic string) (int, error) {
	settings, err := describe(ctx, c, topic, maxMessageBytes)
	if err != nil {
		return 0, err
	}
	v, ok := settings[maxMessageBytes]
	if !ok {
		return 0, fmt.Errorf("topic %s: no %s in the broker's answer", topic, maxMessageBytes)
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("topic %s: %s %q: %w", topic, maxMessageBytes, v, err)
	}
	return n, nil
}

// raiseMaxMessageBytes sets the topic's max.message.bytes to want when it is lower: a topic created
// before the limit was set, or by hand, gets it on the next migrate.
func raiseMaxMessageBytes(ctx context.Context, c *kafkago.Client, topic string, want int) error {
	have, err := MaxMessageBytesOf(ctx, c, topic)
	if err != nil {
		return err
	}
	if have >= want {
		return nil
	}
	res, err := c.IncrementalAlterConfigs(ctx, &kafkago.IncrementalAlterConfigsRequest{Resources: []kafkago.IncrementalAlterConfigsRequestResource{{
		ResourceType: kafkago.ResourceTypeTopic, ResourceName: topic,
		Configs: []kafkago.IncrementalAlterConfigsRequestConfig{{Name: maxMessageBytes, Value: strconv.Itoa(want), ConfigOperation: kafkago.ConfigOperationSet}},
	}}})
	if err == nil && len(res.Resources) == 1 {
		err = res.Resources[0].Error
	}
	if err != nil {
		return fmt.Errorf("raise %s of topic %s from %d to %d: %w", maxMessageBytes, topic, have, want, err)
	}
	// The controller has the new limit; the brokers apply it a moment later. Ensure returns once the
	// broker asked says so.
	return waitSetting(ctx, c, topic, maxMessageBytes, func(v string) bool { n, _ := strconv.Atoi(v); return n >= want })
}

// waitSetting polls the topic's setting name until ok accepts it (for up to 10 s).
func waitSetting(ctx context.Context, c *kafkago.Client, topic, name string, ok func(string) bool) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		settings, err := describe(ctx, c, topic, name)
		if err == nil && ok(settings[name]) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("topic %s: %s still %q after it was set (%v)", topic, name, settings[name], err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitServed polls the topic's metadata until every partition has a leader.
func waitServed(ctx context.Context, c *kafkago.Client, topic string) error {
	for {
		res, err := c.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{topic}})
		if err == nil && len(res.Topics) == 1 && res.Topics[0].Error == nil && len(res.Topics[0].Partitions) > 0 &&
			!slices.ContainsFunc(res.Topics[0].Partitions, func(p kafkago.Partition) bool { return p.Error != nil || p.Leader.Host == "" }) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topic %s not served yet: %w", topic, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
