package readcache

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/convsync/conversations/internal/conversation"
)

// fakeRows is a user's rows and version as the database has them, counting the reads.
type fakeRows struct {
	version             int64
	versionReads, loads int
	bulkReads           int
}

func (f *fakeRows) UserRows(context.Context, string) ([]conversation.Row, int64, error) {
	f.loads++
	return []conversation.Row{{ConvKey: conversation.ConvKey{UID: "u", ChannelID: "g", ChannelType: 2}, Version: f.version}}, f.version, nil
}

func (f *fakeRows) UserVersions(_ context.Context, uids []string) (map[string]int64, error) {
	f.bulkReads++
	out := map[string]int64{}
	for _, u := range uids {
		out[u] = f.version
	}
	return out, nil
}

func (f *fakeRows) UserVersion(context.Context, string) (int64, error) {
	f.versionReads++
	return f.version, nil
}

func TestRowsWithChangeFeed(t *testing.T) {
	now := time.Unix(1000, 0)
	src := &fakeRows{version: 1}
	reg := prometheus.NewRegistry()
	metrics, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	c := NewRows(src, RowsOptions{MaxAge: 5 * time.Second, Now: func() time.Time { return now }, Metrics: metrics})
	ctx := context.Background()
	version := func() int64 {
		t.Helper()
		rows, _, err := rowsOf(c.ReadList(ctx, conversation.Query{UID: "u"}))
		if err != nil || len(rows) != 1 {
			t.Fatalf("UserRows = %v, %v", rows, err)
		}
		return rows[0].Version
	}
	steps := []struct {
		name                    string
		before                  func()
		wantVersion             int64
		wantVersionReads, loads int
	}{
		{"first request loads", nil, 1, 1, 1},
		{"within MaxAge: no database read", func() { now = now.Add(time.Second) }, 1, 1, 1},
		{"an unannounced change is not seen within MaxAge", func() { src.version = 2 }, 1, 1, 1},
		{"announced change: reload", func() { c.Notify("u", 2) }, 2, 2, 2},
		{"announcement older than the list: still served", func() { c.Notify("u", 1) }, 2, 2, 2},
		{"MaxAge passed: version checked, unchanged, no reload", func() { now = now.Add(6 * time.Second) }, 2, 3, 2},
		{"checked again counts as fresh", func() { now = now.Add(time.Second) }, 2, 3, 2},
		{"announced before the load finished is not lost", func() { src.version = 3; c.Notify("u", 4); src.version = 4 }, 4, 4, 3},
	}
	for _, st := range steps {
		if st.before != nil {
			st.before()
		}
		if got := version(); got != st.wantVersion || src.versionReads != st.wantVersionReads || src.loads != st.loads {
			t.Errorf("%s: version %d, %d version reads, %d loads; want %d, %d, %d", st.name, got,
				src.versionReads, src.loads, st.wantVersion, st.wantVersionReads, st.loads)
		}
	}
	for result, want := range map[string]float64{"memory": 4, "checked": 1, "loaded": 3} {
		if got := counterValue(metrics.rows.WithLabelValues(result)); got != want {
			t.Errorf("conv_api_rows_cache_total{result=%q} = %v, want %v", result, got, want)
		}
	}
	t.Run("announcements are bounded in memory", func(t *testing.T) {
		small := NewRows(src, RowsOptions{MaxUsers: 2, MaxAge: time.Minute, Now: func() time.Time { return now }})
		for i := range 10 {
			small.Notify(string(rune('a'+i)), 1)
		}
		if len(small.announced.latest) > 4 {
			t.Errorf("%d announcements kept, want at most 2*MaxUsers", len(small.announced.latest))
		}
	})
}

// counterValue reads a counter's current value.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m) // a counter always writes
	return m.GetCounter().GetValue()
}

func TestRowsRefreshRevalidatesInBulk(t *testing.T) {
	now := time.Unix(1000, 0)
	src := &fakeRows{version: 1}
	c := NewRows(src, RowsOptions{MaxAge: 4 * time.Second, Now: func() time.Time { return now }})
	ctx := context.Background()
	get := func() int64 {
		t.Helper()
		_, v, err := rowsOf(c.ReadList(ctx, conversation.Query{UID: "u"}))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	get() // loaded at 1000 s
	now = now.Add(3 * time.Second)
	if err := c.Refresh(ctx); err != nil || src.bulkReads != 1 {
		t.Fatalf("Refresh: %v, %d bulk reads; want one", err, src.bulkReads)
	}
	now = now.Add(1500 * time.Millisecond) // past MaxAge since the load, 1.5 s after the refresh
	if v := get(); v != 1 || src.versionReads != 1 || src.loads != 1 {
		t.Errorf("after a refresh: version %d, %d version reads, %d loads; want served from memory", v, src.versionReads, src.loads)
	}
	if err := c.Refresh(ctx); err != nil || src.bulkReads != 1 {
		t.Errorf("refreshed again within MaxAge/2: %d bulk reads", src.bulkReads)
	}
	src.version = 2 // a change whose announcement was lost
	now = now.Add(3 * time.Second)
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if v := get(); v != 2 || src.loads != 2 {
		t.Errorf("after a refresh that saw a new version: version %d, %d loads; want 2 and a reload", v, src.loads)
	}
}
