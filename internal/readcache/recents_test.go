package readcache

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/storetest"
)

// window is an in-memory stand-in for the store: each channel's messages by seq.
type window struct {
	msgs  map[conversation.ChannelKey]map[int64]conversation.Message
	calls int
}

func (w *window) add(ch conversation.ChannelKey, seqs ...int64) {
	if w.msgs[ch] == nil {
		w.msgs[ch] = map[int64]conversation.Message{}
	}
	for _, s := range seqs {
		w.msgs[ch][s] = conversation.Message{MessageSeq: s, Payload: []byte(fmt.Sprintf("m%d", s))}
	}
}

// prune deletes the channel's messages below minKept, as the store's window does.
func (w *window) prune(ch conversation.ChannelKey, minKept int64) {
	for s := range w.msgs[ch] {
		if s < minKept {
			delete(w.msgs[ch], s)
		}
	}
}

func (w *window) Recents(_ context.Context, ranges []conversation.SeqRange) (map[conversation.ChannelKey][]conversation.Message, error) {
	w.calls++
	out := map[conversation.ChannelKey][]conversation.Message{}
	for _, r := range ranges {
		for s := r.UpTo; s > r.After && len(out[r.Channel]) < r.Count; s-- {
			if m, ok := w.msgs[r.Channel][s]; ok {
				out[r.Channel] = append(out[r.Channel], m)
			}
		}
	}
	return out, nil
}

func seqs(ms []conversation.Message) string {
	return fmt.Sprint(storetest.Seqs(ms))
}

var g1 = conversation.ChannelKey{Key: "g1", Type: 2}

func TestCacheAnswersLikeTheSource(t *testing.T) {
	w := &window{msgs: map[conversation.ChannelKey]map[int64]conversation.Message{}}
	for s := int64(1); s <= 50; s++ {
		w.add(g1, s)
	}
	metrics, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	c := NewRecents(w, RecentsOptions{Fill: 20, Metrics: metrics})
	ctx := context.Background()
	tests := []struct {
		name      string
		r         conversation.SeqRange
		want      string
		wantCalls int
	}{
		{"miss loads the fill", conversation.SeqRange{Channel: g1, After: 0, UpTo: 40, Count: 5}, "[40 39 38 37 36]", 1},
		{"other member, other read point: hit", conversation.SeqRange{Channel: g1, After: 30, UpTo: 40, Count: 20}, "[40 39 38 37 36 35 34 33 32 31]", 1},
		{"older last seq inside the stretch: hit", conversation.SeqRange{Channel: g1, After: 0, UpTo: 35, Count: 3}, "[35 34 33]", 1},
		{"newer seq than cached: miss", conversation.SeqRange{Channel: g1, After: 0, UpTo: 45, Count: 2}, "[45 44]", 2},
		{"more than cached: miss", conversation.SeqRange{Channel: g1, After: 0, UpTo: 45, Count: 30}, seqsDown(45, 16), 3},
		{"count 0 asks nothing", conversation.SeqRange{Channel: g1, After: 0, UpTo: 45, Count: 0}, "[]", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := messagesOf(c.ReadRecents(ctx, "u1", []conversation.SeqRange{tt.r}))
			if err != nil {
				t.Fatal(err)
			}
			direct, _ := (&window{msgs: w.msgs}).Recents(ctx, []conversation.SeqRange{tt.r})
			if seqs(got[g1]) != tt.want || seqs(direct[g1]) != tt.want {
				t.Errorf("cache %s, source %s, want %s", seqs(got[g1]), seqs(direct[g1]), tt.want)
			}
			if w.calls != tt.wantCalls {
				t.Errorf("source called %d times, want %d", w.calls, tt.wantCalls)
			}
		})
	}
	// Each range counts once; a range that asks nothing (count 0) is not counted.
	for result, want := range map[string]float64{"hit": 2, "miss": 3} {
		if got := counterValue(metrics.recents.WithLabelValues(result)); got != want {
			t.Errorf("conv_api_recents_cache_total{result=%q} = %v, want %v", result, got, want)
		}
	}
}

func seqsDown(from, to int64) string {
	var out []int64
	for s := from; s >= to; s-- {
		out = append(out, s)
	}
	return fmt.Sprint(out)
}

func TestCacheExpiresAndEvicts(t *testing.T) {
	w := &window{msgs: map[conversation.ChannelKey]map[int64]conversation.Message{}}
	w.add(g1, 1, 2, 3)
	now := time.Unix(0, 0)
	c := NewRecents(w, RecentsOptions{MaxAge: time.Second, Now: func() time.Time { return now }})
	ctx := context.Background()
	r := []conversation.SeqRange{{Channel: g1, UpTo: 3, Count: 3}}
	_, _ = messagesOf(c.ReadRecents(ctx, "u1", r))
	w.add(g1, 2) // unchanged content; what matters is whether the source is asked
	_, _ = messagesOf(c.ReadRecents(ctx, "u1", r))
	if w.calls != 1 {
		t.Fatalf("calls = %d, want 1 (second request is a hit)", w.calls)
	}
	now = now.Add(2 * time.Second)
	_, _ = messagesOf(c.ReadRecents(ctx, "u1", r))
	if w.calls != 2 {
		t.Errorf("calls = %d, want 2: an expired entry is reloaded", w.calls)
	}

	small := NewRecents(w, RecentsOptions{MaxBytes: 300})
	g2 := conversation.ChannelKey{Key: "g2", Type: 2}
	w.add(g2, 1, 2, 3)
	_, _ = messagesOf(small.ReadRecents(ctx, "u1", r))
	_, _ = messagesOf(small.ReadRecents(ctx, "u1", []conversation.SeqRange{{Channel: g2, UpTo: 3, Count: 3}}))
	if small.bytes > 300 || len(small.index) != 1 {
		t.Errorf("over budget: %d bytes in %d entries", small.bytes, len(small.index))
	}
	if _, ok := small.index[g2]; !ok {
		t.Errorf("the most recent channel was evicted")
	}
}

// TestStaleStretchesAreNeverServed: after every change of the window and its announcement, every request
// the cache answers equals the source's answer: a late message inside a cached stretch and a pruned
// message are never served from the stretch loaded before them.
func TestStaleStretchesAreNeverServed(t *testing.T) {
	w := &window{msgs: map[conversation.ChannelKey]map[int64]conversation.Message{}}
	w.add(g1, 1, 2, 4, 7, 8, 9, 10, 11, 12) // 3, 5, 6 still to come, late
	c := NewRecents(w, RecentsOptions{Fill: 6, MaxAge: time.Hour})
	ctx := context.Background()
	check := func(step string) {
		t.Helper()
		for upTo := int64(1); upTo <= 12; upTo++ {
			for after := int64(0); after < upTo; after++ {
				for _, count := range []int{1, 3, 10} {
					r := conversation.SeqRange{Channel: g1, After: after, UpTo: upTo, Count: count}
					got, err := messagesOf(c.ReadRecents(ctx, "u1", []conversation.SeqRange{r}))
					if err != nil {
						t.Fatal(err)
					}
					want, _ := (&window{msgs: w.msgs}).Recents(ctx, []conversation.SeqRange{r})
					if seqs(got[g1]) != seqs(want[g1]) {
						t.Fatalf("%s: %+v answered %s, the window holds %s", step, r, seqs(got[g1]), seqs(want[g1]))
					}
				}
			}
		}
	}
	check("loaded")
	w.add(g1, 6)
	c.Apply([]conversation.WindowChange{{Channel: g1, LateMin: 6, LateMax: 6}})
	check("late message inside the stretch")
	w.add(g1, 3, 5)
	c.Apply([]conversation.WindowChange{{Channel: g1, LateMin: 3, LateMax: 5}})
	check("late messages at the bottom")
	w.prune(g1, 8)
	c.Apply([]conversation.WindowChange{{Channel: g1, MinKept: 8}})
	check("pruned")
}

// racingWindow applies a change, and its announcement, while a load is in flight: the load may have read
// the window before the change.
type racingWindow struct {
	*window
	during func()
}

func (r *racingWindow) Recents(ctx context.Context, ranges []conversation.SeqRange) (map[conversation.ChannelKey][]conversation.Message, error) {
	out, err := r.window.Recents(ctx, ranges)
	if r.during != nil {
		f := r.during
		r.during = nil
		f()
	}
	return out, err
}

func TestLoadRacingAnAnnouncementIsNotKept(t *testing.T) {
	w := &window{msgs: map[conversation.ChannelKey]map[int64]conversation.Message{}}
	w.add(g1, 1, 2, 4, 5)
	src := &racingWindow{window: w}
	c := NewRecents(src, RecentsOptions{MaxAge: time.Hour})
	r := []conversation.SeqRange{{Channel: g1, UpTo: 5, Count: 3}}
	src.during = func() {
		w.add(g1, 3)
		c.Apply([]conversation.WindowChange{{Channel: g1, LateMin: 3, LateMax: 3}})
	}
	first, _ := messagesOf(c.ReadRecents(context.Background(), "u1", r))
	if seqs(first[g1]) != "[5 4 2]" {
		t.Fatalf("first answer %s, want what the load read, [5 4 2]", seqs(first[g1]))
	}
	again, _ := messagesOf(c.ReadRecents(context.Background(), "u1", r))
	if seqs(again[g1]) != "[5 4 3]" || w.calls != 2 {
		t.Errorf("after the announcement: %s with %d loads, want [5 4 3] from a second load", seqs(again[g1]), w.calls)
	}
}

func TestRecentsRefresh(t *testing.T) {
	w := &window{msgs: map[conversation.ChannelKey]map[int64]conversation.Message{}}
	w.add(g1, 1, 2, 4, 5)
	now := time.Unix(0, 0)
	src := &racingWindow{window: w}
	c := NewRecents(src, RecentsOptions{MaxAge: 4 * time.Second, Now: func() time.Time { return now }})
	ctx := context.Background()
	r := []conversation.SeqRange{{Channel: g1, UpTo: 5, Count: 3}}
	_, _ = messagesOf(c.ReadRecents(ctx, "u1", r))
	// A late message whose announcement was lost: a refresh after MaxAge/2 picks it up.
	w.add(g1, 3)
	now = now.Add(3 * time.Second)
	if err := c.Refresh(ctx); err != nil || w.calls != 2 {
		t.Fatalf("Refresh: %v, %d loads; want a second", err, w.calls)
	}
	now = now.Add(3 * time.Second) // 6 s after the first load, within MaxAge of the refresh
	got, _ := messagesOf(c.ReadRecents(ctx, "u1", r))
	if seqs(got[g1]) != "[5 4 3]" || w.calls != 2 {
		t.Errorf("after the refresh: %s with %d loads, want [5 4 3] from memory", seqs(got[g1]), w.calls)
	}
	// A refresh racing an announcement of its channel is not kept.
	now = now.Add(3 * time.Second)
	src.during = func() { c.Apply([]conversation.WindowChange{{Channel: g1, LateMin: 3, LateMax: 3}}) }
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.index[g1]; ok {
		t.Errorf("a refresh that raced an announcement was kept")
	}
}
