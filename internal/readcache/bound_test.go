package readcache

import (
	"context"
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/convsync/conversations/internal/conversation"
)

// listSource gives user "uN" a list of N rows, counting the loads.
type listSource struct{ loads int }

func (s *listSource) UserRows(_ context.Context, uid string) ([]conversation.Row, int64, error) {
	s.loads++
	var n int
	if _, err := fmt.Sscanf(uid, "u%d", &n); err != nil {
		return nil, 0, err
	}
	rows := make([]conversation.Row, n)
	for i := range rows {
		rows[i] = conversation.Row{ConvKey: conversation.ConvKey{UID: uid, ChannelID: fmt.Sprint("g", i), ChannelType: 2}, Version: 1}
	}
	return rows, 1, nil
}

func (s *listSource) UserVersion(context.Context, string) (int64, error) { return 1, nil }

func (s *listSource) UserVersions(_ context.Context, uids []string) (map[string]int64, error) {
	out := map[string]int64{}
	for _, u := range uids {
		out[u] = 1
	}
	return out, nil
}

// TestRowsBoundedByRows: the cache holds at most MaxRows rows of all lists together and MaxUsers lists,
// evicting the least recently used lists first, whatever the users' list lengths; what it holds is
// exported as conv_api_rows_cache_held.
func TestRowsBoundedByRows(t *testing.T) {
	src := &listSource{}
	reg := prometheus.NewRegistry()
	metrics, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	c := NewRows(src, RowsOptions{MaxUsers: 10, MaxRows: 100, Metrics: metrics})
	ctx := context.Background()
	get := func(uid string) {
		t.Helper()
		if _, err := c.ReadList(ctx, conversation.Query{UID: uid}); err != nil {
			t.Fatal(err)
		}
	}
	held := func(what string) float64 {
		t.Helper()
		var m dto.Metric
		if err := metrics.held.WithLabelValues(what).Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetGauge().GetValue()
	}
	for _, step := range []struct {
		name        string
		uids        []string
		loads       int     // loads the step costs
		lists, rows float64 // held after it
	}{
		{"three lists of 30 rows", []string{"u30", "u31", "u32"}, 3, 3, 93},
		{"held lists cost no load", []string{"u30", "u31", "u32"}, 0, 3, 93},
		{"a fourth long list evicts the least recently used", []string{"u40"}, 1, 2, 72},
		{"the evicted list is loaded again", []string{"u30"}, 1, 2, 70},
		{"short lists up to MaxUsers", []string{"u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "u9", "u10"}, 10, 10, 55},
	} {
		before := src.loads
		for _, u := range step.uids {
			get(u)
		}
		if got := src.loads - before; got != step.loads {
			t.Fatalf("%s: %d loads, want %d", step.name, got, step.loads)
		}
		if l, r := held("lists"), held("rows"); l != step.lists || r != step.rows {
			t.Fatalf("%s: holds %v lists and %v rows, want %v and %v", step.name, l, r, step.lists, step.rows)
		}
		if c.rows > 100 || c.lru.Len() > 10 {
			t.Fatalf("%s: %d rows in %d lists, over the bounds", step.name, c.rows, c.lru.Len())
		}
	}
}
