package changefeed_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/convsync/conversations/internal/changefeed"
	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/testenv"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// followAndPublish starts a follower of a fresh topic, whose reads it returns in got, and a publisher
// to that topic. stop cancels the follower and returns once its Run did (once its readers stopped).
func followAndPublish(t *testing.T) (ctx context.Context, got chan conversation.Changes, p *changefeed.Publisher, stop func()) {
	t.Helper()
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.Topics(t, brokers, 1).Changes
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	f, err := changefeed.NewFollower(ctx, nil, brokers, topic, quiet, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	got = make(chan conversation.Changes, 16)
	done := make(chan struct{})
	go func() {
		f.Run(ctx, func(c conversation.Changes) { got <- c })
		close(done)
	}()
	p, err = changefeed.NewPublisher(nil, brokers, topic, quiet, prometheus.NewRegistry(), changefeed.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ctx, got, p, func() {
		cancel()
		<-done
	}
}

// TestFollowerReadsWhatWasPublished: what commits announce reaches a follower, merged per user (highest
// version) and per channel (span of late seqs, highest watermark), and Close drains what is queued.
func TestFollowerReadsWhatWasPublished(t *testing.T) {
	ctx, got, p, stop := followAndPublish(t)
	g1 := conversation.ChannelKey{Key: "g:1", Type: 2}
	p.AfterCommit(ctx, conversation.Changes{Versions: map[string]int64{"bob": 5, "alice": 5},
		Windows: []conversation.WindowChange{{Channel: g1, LateMin: 7, LateMax: 7}}})
	p.AfterCommit(ctx, conversation.Changes{Versions: map[string]int64{"bob": 6},
		Windows: []conversation.WindowChange{{Channel: g1, LateMin: 3, LateMax: 4, MinKept: 2}}})
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	versions := map[string]int64{}
	var windows []conversation.WindowChange
	for len(versions) < 2 || versions["bob"] < 6 || !announced(windows, 3) {
		c := <-got
		for u, v := range c.Versions {
			versions[u] = max(versions[u], v)
		}
		windows = append(windows, c.Windows...)
	}
	if versions["alice"] != 5 || versions["bob"] != 6 {
		t.Errorf("versions %v, want alice 5, bob 6", versions)
	}
	// Merged or not, the announcements must cover late seqs 3, 4 and 7 and the watermark 2.
	covers := func(seq int64) bool {
		for _, w := range windows {
			if w.Channel == g1 && w.LateMin <= seq && seq <= w.LateMax {
				return true
			}
		}
		return false
	}
	var minKept int64
	for _, w := range windows {
		minKept = max(minKept, w.MinKept)
	}
	if !covers(3) || !covers(4) || !covers(7) || minKept != 2 {
		t.Errorf("windows %+v do not announce late 3, 4, 7 and watermark 2", windows)
	}
	stop()
}

// announced reports whether some window change names late seq seq.
func announced(ws []conversation.WindowChange, seq int64) bool {
	for _, w := range ws {
		if w.LateMin <= seq && seq <= w.LateMax {
			return true
		}
	}
	return false
}

// TestPublishNeverBlocks: with a broker that never answers, AfterCommit still returns at once; what the
// queue cannot hold is dropped and counted, and Close gives up after the write timeout.
func TestPublishNeverBlocks(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0") // accepts connections, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	reg := prometheus.NewRegistry()
	p, err := changefeed.NewPublisher(nil, []string{ln.Addr().String()}, "changes", quiet, reg,
		changefeed.PublisherOptions{QueueLen: 2, WriteTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		p.AfterCommit(t.Context(), conversation.Changes{Versions: map[string]int64{"u": int64(i + 1)}})
	}
	_ = p.Close() // the write fails: the broker never answered
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var dropped float64
	for _, mf := range mfs {
		if mf.GetName() == "conv_changes_dropped_total" {
			dropped = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if dropped < 40 {
		t.Errorf("dropped %v of 50 commits, want most of them (queue of 2, writer stuck)", dropped)
	}
}

// TestChannelChangesChain: changes of a large channel reach a follower as a chain it can apply from the
// state before the first, late messages included, whether the publisher merged them or not.
func TestChannelChangesChain(t *testing.T) {
	ctx, got, p, stop := followAndPublish(t)
	g := conversation.ChannelKey{Key: "big", Type: 2}
	state := func(n int64) conversation.Broadcast {
		return conversation.Broadcast{Arrivals: n, RedDots: n, MaxSeq: 10 * n, ClientMsgNo: "c", Timestamp: n, Version: 100 + n}
	}
	late := conversation.LateMsg{Channel: g, Arrival: 2, Seq: 5, RedDot: true, ClientMsgNo: "l", Timestamp: 2}
	c1 := conversation.ChannelChange{Channel: g, Before: state(0), After: state(1)}
	c2 := conversation.ChannelChange{Channel: g, Before: state(1), After: state(2), Late: []conversation.LateMsg{late}}
	c3 := conversation.ChannelChange{Channel: g, Before: state(2), After: state(3)}
	for _, c := range []conversation.ChannelChange{c1, c2, c3} {
		p.AfterCommit(ctx, conversation.Changes{Versions: map[string]int64{"u": c.After.Version}, Channels: []conversation.ChannelChange{c}})
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	held, gaps := state(0), 0
	var lates []conversation.LateMsg
	for held != state(3) && gaps == 0 {
		c := <-got
		for _, ch := range c.Channels {
			switch {
			case ch.Follows(held):
				held = ch.After
				lates = append(lates, ch.Late...)
			case ch.After.Arrivals <= held.Arrivals:
			default:
				gaps++
			}
		}
	}
	if gaps > 0 || len(lates) != 1 || lates[0] != late {
		t.Errorf("held %+v after %d gaps with late %+v; want state 3, no gap, late %+v", held, gaps, lates, late)
	}
	stop()
}
