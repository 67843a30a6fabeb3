// Package kafka holds what the service needs of Kafka besides the consume loop: creating its topics.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"

	kafkago "github.com/segmentio/kafka-go"
)

// Topic is a topic to create and how.
type Topic struct {
	Name       string
	Partitions int
}

// EnsureTopics creates the topics that do not exist yet, with replication factor min(3, brokers in the
// cluster); existing topics are left as they are (their partition count is not changed). It returns an
// error when the cluster cannot be reached or refuses a topic.
func EnsureTopics(ctx context.Context, brokers []string, topics ...Topic) error {
	if len(brokers) == 0 {
		return errors.New("no Kafka brokers configured")
	}
	var d kafkago.Dialer
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
	return nil
}
