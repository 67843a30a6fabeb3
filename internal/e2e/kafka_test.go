package e2e

import (
	"context"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/topicadmin"
)

// endOffsets returns each partition's high watermark, waiting a little for a topic created a moment ago.
func (s *stack) endOffsets(ctx context.Context, topic string) map[int]int64 {
	s.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := topicadmin.EndOffsets(ctx, s.kafka, topic)
		if err == nil {
			return out
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("end offsets of %s: %v", topic, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// committed returns the group's committed offset per partition of the events topic (-1: none yet).
func (s *stack) committed(ctx context.Context, group string) (map[int]int64, error) {
	return topicadmin.CommittedOffsets(ctx, s.kafka, group, s.topic)
}

// progress is how many of the topic's records the group has committed, and how many there are.
func (s *stack) progress(ctx context.Context, group string, end map[int]int64) (done, total int64) {
	s.t.Helper()
	got, err := s.committed(ctx, group)
	if err != nil {
		return 0, 0 // the coordinator may be busy with a rebalance; ask again
	}
	for p, e := range end {
		total += e
		done += max(0, min(got[p], e))
	}
	return done, total
}

// waitCommitted waits until group has committed every record of the events topic: by the projector's
// ack rules everything is then applied (or dead-lettered). It fails if no live projector is left.
func (s *stack) waitCommitted(group string, timeout time.Duration, procs ...*proc) time.Duration {
	s.t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	end := s.endOffsets(ctx, s.topic)
	for {
		done, total := s.progress(ctx, group, end)
		if total > 0 && done == total {
			return time.Since(start)
		}
		alive := false
		for _, p := range procs {
			alive = alive || p.running()
		}
		if !alive {
			s.t.Fatalf("no projector running, %d of %d records committed", done, total)
		}
		select {
		case <-ctx.Done():
			s.t.Fatalf("group %s committed %d of %d records after %s", group, done, total, timeout)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// evictMembers removes the group's members from the coordinator at once, standing in for the session
// timeout that would notice a killed process only after tens of seconds. The kill stays a kill: nothing
// was committed or left on the dead process's behalf.
func (s *stack) evictMembers(group string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := s.kafka.DescribeGroups(ctx, &kafkago.DescribeGroupsRequest{GroupIDs: []string{group}})
	if err != nil {
		s.t.Fatalf("describe group %s: %v", group, err)
	}
	var members []kafkago.LeaveGroupRequestMember
	for _, g := range res.Groups {
		for _, m := range g.Members {
			members = append(members, kafkago.LeaveGroupRequestMember{ID: m.MemberID})
		}
	}
	if len(members) == 0 {
		return
	}
	lr, err := s.kafka.LeaveGroup(ctx, &kafkago.LeaveGroupRequest{GroupID: group, Members: members})
	if err == nil {
		err = lr.Error
	}
	if err != nil {
		s.t.Logf("evicting %d members of %s: %v (the session timeout will do it)", len(members), group, err)
	}
}

// deadLetter is one record read back from the dead-letter topic.
type deadLetter struct {
	value   []byte
	headers map[string]string
}

// readDLQ reads every record of the dead-letter topic.
func (s *stack) readDLQ() []deadLetter {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []deadLetter
	for p, end := range s.endOffsets(ctx, s.dlq) {
		if end == 0 {
			continue
		}
		r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: s.brokers, Topic: s.dlq, Partition: p, MaxWait: 100 * time.Millisecond})
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				s.t.Fatalf("read %s/%d: %v", s.dlq, p, err)
			}
			h := map[string]string{}
			for _, kv := range m.Headers {
				h[kv.Key] = string(kv.Value)
			}
			out = append(out, deadLetter{value: m.Value, headers: h})
			if m.Offset >= end-1 {
				break
			}
		}
		r.Close()
	}
	return out
}
