// Package topicadmin creates the service's Kafka topics (events, dead letters, change feed) and waits until
// the cluster serves them.
package topicadmin

import (
	"context"
	"errors"
	"fmt"
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
}

// Ensure creates the topics that do not exist yet, with replication factor min(3, brokers in the
// cluster), and returns once the cluster serves every partition of each (a topic just created refuses
// produce requests for a moment). Existing topics are left as they are: their partition count is not
// changed. It returns an error when the cluster cannot be reached, refuses a topic, or ctx ends first.
func Ensure(ctx context.Context, kc *kafkaconn.Conn, brokers []string, topics ...Topic) error {
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
	replication := min(3, len(all))
	configs := make([]kafkago.TopicConfig, 0, len(topics))
	for _, t := range topics {
		configs = append(configs, kafkago.TopicConfig{Topic: t.Name, NumPartitions: t.Partitions, ReplicationFactor: replication})
	}
	// CreateTopics answers TopicAlreadyExists for a topic that exists: that is success here.
	if err := cc.CreateTopics(configs...); err != nil && !errors.Is(err, kafkago.TopicAlreadyExists) {
		return fmt.Errorf("create topics: %w", err)
	}
	client := &kafkago.Client{Addr: kafkago.TCP(brokers...), Timeout: 5 * time.Second}
	if kc != nil {
		transport := kc.Transport()
		defer transport.CloseIdleConnections()
		client.Transport = transport
	}
	// Without kc the wait runs on kafka-go's DefaultTransport, the one plaintext writers share: its
	// metadata then knows the new topics, and a writer's first produce finds them.
	for _, t := range topics {
		if err := waitServed(ctx, client, t.Name); err != nil {
			return err
		}
	}
	return nil
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
