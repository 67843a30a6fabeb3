package mysql_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/testenv"
)

// BenchmarkApplyBatch measures the store's batch alone, without Kafka: b.N group messages in batches
// of 500, each to the 20 inline subscribers of one of 100 groups (the projector benchmark's
// workload), and, as "large", the same through groups whose stored membership of 20 (size) makes them large
// (read-time fan-out: only the sender's row is written). It reports events and rows written per second.
func BenchmarkApplyBatch(b *testing.B) {
	const groups, size, batch = 100, 20, 500
	for _, tc := range []struct {
		name  string
		large int
	}{{"fanout", 0}, {"large", size}} {
		b.Run(tc.name, func(b *testing.B) {
			s, _ := testenv.Store(b, mysql.Options{LargeChannelMembers: tc.large})
			ctx := context.Background()
			subscribers := make([][]string, groups)
			for g := range subscribers {
				for m := range size {
					subscribers[g] = append(subscribers[g], "u"+strconv.Itoa((g*7+m)%1000))
				}
				if tc.large > 0 {
					if _, err := s.ApplyBatch(ctx, []conversation.Event{members("g"+strconv.Itoa(g), true, subscribers[g]...)}); err != nil {
						b.Fatal(err)
					}
				}
			}
			events := make([]conversation.Event, 0, b.N)
			for i := range b.N {
				g := i % groups
				var subs []string
				if tc.large == 0 {
					subs = subscribers[g]
				}
				events = append(events, groupMsg("g"+strconv.Itoa(g), int64(i/groups+1), subscribers[g][i%size], subs...))
			}
			b.ResetTimer()
			var rows int
			for lo := 0; lo < len(events); lo += batch {
				res, err := s.ApplyBatch(ctx, events[lo:min(lo+batch, len(events))])
				if err != nil {
					b.Fatal(err)
				}
				rows += res.RowsWritten
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
