package main

import (
	"context"
	"fmt"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/kafkaconn"
	"github.com/convsync/conversations/internal/topicadmin"
)

// cluster is convctl's admin connection to the brokers.
type cluster struct {
	brokers   []string
	conn      *kafkaconn.Conn
	transport *kafkago.Transport
	client    *kafkago.Client
}

func (e *cmdEnv) cluster() (*cluster, error) {
	kc, err := kafkaconn.New(e.cfg.Kafka)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	t := kc.Transport()
	return &cluster{brokers: e.cfg.KafkaBrokers, conn: kc, transport: t,
		client: &kafkago.Client{Addr: kafkago.TCP(e.cfg.KafkaBrokers...), Timeout: opTimeout, Transport: t}}, nil
}

func (c *cluster) Close() { c.transport.CloseIdleConnections() }

// partitions lists the topic's partition ids, sorted; an unknown topic is an error.
func (c *cluster) partitions(ctx context.Context, topic string) ([]int, error) {
	return topicadmin.Partitions(ctx, c.client, topic)
}

// offsets returns each partition's first and end offsets (the end is the next offset to be written).
func (c *cluster) offsets(ctx context.Context, topic string, parts []int) (first, end map[int]int64, err error) {
	reqs := make([]kafkago.OffsetRequest, 0, 2*len(parts))
	for _, p := range parts {
		reqs = append(reqs, kafkago.FirstOffsetOf(p), kafkago.LastOffsetOf(p))
	}
	res, err := c.client.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: map[string][]kafkago.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, nil, fmt.Errorf("list offsets of %s: %w", topic, err)
	}
	first, end = map[int]int64{}, map[int]int64{}
	for _, po := range res.Topics[topic] {
		if po.Error != nil {
			return nil, nil, fmt.Errorf("offsets of %s/%d: %w", topic, po.Partition, po.Error)
		}
		first[po.Partition], end[po.Partition] = po.FirstOffset, po.LastOffset
	}
	for _, p := range parts {
		if _, ok := end[p]; !ok {
			return nil, nil, fmt.Errorf("offsets of %s/%d: no answer", topic, p)
		}
	}
	return first, end, nil
}

// committed returns the group's committed offset per partition; -1 where it has none.
func (c *cluster) committed(ctx context.Context, group, topic string, parts []int) (map[int]int64, error) {
	got, err := topicadmin.CommittedOffsets(ctx, c.client, group, topic)
	if err != nil {
		return nil, err
	}
	out := make(map[int]int64, len(parts))
	for _, p := range parts {
		out[p] = -1
		if o, ok := got[p]; ok {
			out[p] = o
		}
	}
	return out, nil
}

// members is how many consumers the group has now.
func (c *cluster) members(ctx context.Context, group string) (int, error) {
	res, err := c.client.DescribeGroups(ctx, &kafkago.DescribeGroupsRequest{GroupIDs: []string{group}})
	if err != nil {
		return 0, fmt.Errorf("describe group %s: %w", group, err)
	}
	if len(res.Groups) != 1 {
		return 0, fmt.Errorf("describe group %s: %d answers", group, len(res.Groups))
	}
	if res.Groups[0].Error != nil {
		return 0, fmt.Errorf("describe group %s: %w", group, res.Groups[0].Error)
	}
	return len(res.Groups[0].Members), nil
}

// commit sets the group's committed offsets. The group must have no members: the commit is made
// outside any generation, which the coordinator accepts only for an empty group.
func (c *cluster) commit(ctx context.Context, group, topic string, offsets map[int]int64) error {
	var commits []kafkago.OffsetCommit
	for p, o := range offsets {
		commits = append(commits, kafkago.OffsetCommit{Partition: p, Offset: o})
	}
	res, err := c.client.OffsetCommit(ctx, &kafkago.OffsetCommitRequest{GroupID: group, GenerationID: -1,
		Topics: map[string][]kafkago.OffsetCommit{topic: commits}})
	if err != nil {
		return fmt.Errorf("commit offsets of group %s: %w", group, err)
	}
	for _, ps := range res.Topics {
		for _, p := range ps {
			if p.Error != nil {
				return fmt.Errorf("commit offset of %s/%d for group %s: %w", topic, p.Partition, group, p.Error)
			}
		}
	}
	return nil
}

// lagOf is end minus the committed offset per partition; a partition the group never committed lags
// by everything it still holds (the projector starts at the first offset).
func lagOf(first, end, committed map[int]int64) map[int]int64 {
	lag := map[int]int64{}
	for p, e := range end {
		from := committed[p]
		if from < 0 {
			from = first[p]
		}
		lag[p] = max(0, e-from)
	}
	return lag
}

// groupLag is the group's lag on topic, per partition.
func (c *cluster) groupLag(ctx context.Context, group, topic string) (parts []int, committed, end, lag map[int]int64, err error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if parts, err = c.partitions(ctx, topic); err != nil {
		return
	}
	var first map[int]int64
	if first, end, err = c.offsets(ctx, topic, parts); err != nil {
		return
	}
	if committed, err = c.committed(ctx, group, topic, parts); err != nil {
		return
	}
	return parts, committed, end, lagOf(first, end, committed), nil
}
