package projector

import (
	"strconv"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/testenv"
)

// BenchmarkProjectGroupMessages measures end-to-end projection: b.N records already in a 6-partition
// topic, one projector with the real store, until its group committed them all. Each message goes to the
// 20 subscribers of one of 100 groups. It reports events and conversation rows written per second.
func BenchmarkProjectGroupMessages(b *testing.B) {
	brokers, topic, dlq := integration(b, 6)
	store, _ := testenv.Store(b, mysql.Options{})
	const groups, members = 100, 20
	subscribers := make([][]string, groups)
	for g := range subscribers {
		for m := range members {
			subscribers[g] = append(subscribers[g], "u"+strconv.Itoa((g*7+m)%1000))
		}
	}
	recs := make([]record, 0, b.N)
	for i := range b.N {
		g := i % groups
		recs = append(recs, groupMsg(b, "g"+strconv.Itoa(g), int64(i/groups+1), "bot", subscribers[g]))
	}
	produce(b, brokers, topic, recs...)
	group := testenv.Name("group.")
	p, reg := newProjector(b, Config{Brokers: brokers, Topic: topic, DLQTopic: dlq, GroupID: group}, store)

	b.ResetTimer()
	r := start(b, p)
	waitCommittedToEnd(b, brokers, group, topic, 6, 10*time.Minute)
	b.StopTimer()
	if err := r.stop(b); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(metricValue(b, reg, "conv_projector_rows_written_total")/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(metricValue(b, reg, "conv_projector_records_consumed_total")/metricValue(b, reg, "conv_projector_batch_records"), "records/batch")
}
