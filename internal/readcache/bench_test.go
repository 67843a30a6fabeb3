package readcache

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/convsync/conversations/internal/conversation"
)

type staticRows map[string][]conversation.Row

func (s staticRows) UserRows(_ context.Context, uid string) ([]conversation.Row, int64, error) {
	return s[uid], 1, nil
}
func (s staticRows) UserVersion(context.Context, string) (int64, error) { return 1, nil }
func (s staticRows) UserVersions(context.Context, []string) (map[string]int64, error) {
	return nil, nil
}

// BenchmarkHits: what a sync costs in the caches when everything hits (the peer workload's shape: 2,000
// users with 3 conversations each, msg_count 10), from concurrent requests.
func BenchmarkHits(b *testing.B) {
	rows := staticRows{}
	w := &window{msgs: map[conversation.ChannelKey]map[int64]conversation.Message{}}
	for u := range 2000 {
		uid := fmt.Sprintf("u%d", u)
		for c := range 3 {
			ch := fmt.Sprintf("g%d", (u*3+c)%1200)
			rows[uid] = append(rows[uid], conversation.Row{ConvKey: conversation.ConvKey{UID: uid, ChannelID: ch, ChannelType: 2}, LastMsgSeq: 50, Version: 1})
		}
	}
	for c := range 1200 {
		for s := int64(1); s <= 50; s++ {
			w.add(conversation.ChannelKey{Key: fmt.Sprintf("g%d", c), Type: 2}, s)
		}
	}
	rc := NewRows(rows, RowsOptions{MaxAge: time.Hour})
	rec := NewRecents(w, RecentsOptions{MaxAge: time.Hour})
	ctx := context.Background()
	sync := func(i int) {
		uid := fmt.Sprintf("u%d", i%2000)
		rs, _, _ := rowsOf(rc.ReadList(ctx, conversation.Query{UID: uid}))
		ranges := make([]conversation.SeqRange, len(rs))
		for j := range rs {
			ranges[j] = conversation.RecentsRange(&rs[j], conversation.ChannelKey{Key: rs[j].ChannelID, Type: 2}, 0, 10)
		}
		_, _ = messagesOf(rec.ReadRecents(ctx, "u1", ranges))
	}
	for i := range 2000 {
		rc.Notify(fmt.Sprintf("u%d", i), 1)
		sync(i)
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			sync(i)
			i += 7
		}
	})
}

// BenchmarkRowsMemory reports the heap a cached row costs (bytes_per_row, after a garbage collection):
// 100,000 users with 10 conversations each, ids and client_msg_no as the scale bench preloads them,
// every list held. docs/operations.md sizes SYNC_CACHE_ROWS with it.
func BenchmarkRowsMemory(b *testing.B) {
	for range b.N {
		const users, perUser = 100_000, 10
		c := NewRows(staticRows{}, RowsOptions{MaxUsers: users, MaxRows: users * perUser})
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for u := range users {
			uid := fmt.Sprintf("u%d", u)
			rows := make([]conversation.Row, perUser) // as a load scans them: each its own strings
			for i := range rows {
				ch := fmt.Sprintf("sg%d", u*perUser+i)
				rows[i] = conversation.Row{ConvKey: conversation.ConvKey{UID: fmt.Sprintf("u%d", u), ChannelID: ch, ChannelType: 2},
					LastClientMsgNo: fmt.Sprintf("c%s-%d", ch, 1234), Version: 1}
			}
			c.put(&userRows{uid: uid, version: 1, checked: time.Now(), rows: rows})
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(c.rows), "bytes_per_row")
		runtime.KeepAlive(c)
	}
}
