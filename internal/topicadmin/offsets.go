package topicadmin

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// Offsets are read for three jobs: trafficgen continues the seqs of what a topic already holds, and the
// tests wait for a consumer group to commit everything. They share these functions.

// Partitions returns the ids of topic's partitions, sorted. It fails when the cluster cannot be reached
// or does not know the topic.
func Partitions(ctx context.Context, c *kafkago.Client, topic string) ([]int, error) {
	md, err := c.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("metadata of %s: %w", topic, err)
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil || len(md.Topics[0].Partitions) == 0 {
		var terr error
		if len(md.Topics) == 1 {
			terr = md.Topics[0].Error
		}
		return nil, fmt.Errorf("metadata of %s: no partitions (%v)", topic, terr)
	}
	ps := make([]int, 0, len(md.Topics[0].Partitions))
	for _, p := range md.Topics[0].Partitions {
		ps = append(ps, p.ID)
	}
	slices.Sort(ps)
	return ps, nil
}

// EndOffsets returns, for each partition of topic, the offset after its last record (the high watermark).
// A partition created a moment ago may fail with "not leader" for a little while: callers that just
// created the topic retry.
func EndOffsets(ctx context.Context, c *kafkago.Client, topic string) (map[int]int64, error) {
	ps, err := Partitions(ctx, c, topic)
	if err != nil {
		return nil, err
	}
	reqs := make([]kafkago.OffsetRequest, len(ps))
	for i, p := range ps {
		reqs[i] = kafkago.LastOffsetOf(p)
	}
	res, err := c.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: map[string][]kafkago.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	out := make(map[int]int64, len(ps))
	for _, p := range res.Topics[topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("end offset of %s/%d: %w", topic, p.Partition, p.Error)
		}
		out[p.Partition] = p.LastOffset
	}
	return out, nil
}

// CommittedOffsets returns group's committed offset for each partition of topic: the offset of the next
// record it will read, -1 where it committed nothing yet. While the group's coordinator is moving or
// still loading (a broker just started, say) it asks again, up to coordinatorWait, as long as ctx lasts.
func CommittedOffsets(ctx context.Context, c *kafkago.Client, group, topic string) (map[int]int64, error) {
	ps, err := Partitions(ctx, c, topic)
	if err != nil {
		return nil, err
	}
	var res *kafkago.OffsetFetchResponse
	deadline := time.Now().Add(coordinatorWait)
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		res, err = c.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: ps}})
		if err == nil {
			err = res.Error
		}
		if !coordinatorBusy(err) || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("committed offsets of %s in %s: %w", group, topic, errors.Join(err, ctx.Err()))
		case <-time.After(wait):
		}
	}
	if err != nil {
		return nil, fmt.Errorf("committed offsets of %s in %s: %w", group, topic, err)
	}
	out := make(map[int]int64, len(ps))
	for _, p := range res.Topics[topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("committed offset of %s in %s/%d: %w", group, topic, p.Partition, p.Error)
		}
		out[p.Partition] = p.CommittedOffset
	}
	return out, nil
}

// coordinatorWait bounds how long CommittedOffsets waits for a group coordinator that is not ready.
const coordinatorWait = 15 * time.Second

// coordinatorBusy reports whether err says the group's coordinator is not ready yet: asking again
// shortly is the protocol's answer.
func coordinatorBusy(err error) bool {
	return errors.Is(err, kafkago.NotCoordinatorForGroup) || errors.Is(err, kafkago.GroupCoordinatorNotAvailable) ||
		errors.Is(err, kafkago.GroupLoadInProgress)
}
