// Package changefeed announces committed changes to API replicas over a Kafka topic and follows those
// announcements, so a replica can serve what it caches without asking the database whether it moved.
package changefeed

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/kafkaconn"
)

// Per record bounds, so a batch that changed many users or windows is a few records of modest size.
const (
	usersPerRecord    = 500
	windowsPerRecord  = 500
	channelsPerRecord = 200
)

// changeRecord is the value of a change-feed record: users whose conversation list changed, each with
// the version the change gave it; windows that changed other than by growing at the top; and when the
// oldest of the commits it announces happened (unix µs), so followers can measure the delay.
type changeRecord struct {
	Versions map[string]int64 `json:"versions,omitempty"`
	Windows  []windowRecord   `json:"windows,omitempty"`
	Channels []channelRecord  `json:"channels,omitempty"`
	AtMicros int64            `json:"at_us,omitempty"`
}

// channelRecord is a conversation.ChannelChange: the large channel's broadcast state before (arrivals
// and version) and after, and the late messages in between.
type channelRecord struct {
	Key            string       `json:"key"`
	Type           uint8        `json:"type"`
	BeforeArrivals int64        `json:"before_arrivals"`
	BeforeVersion  int64        `json:"before_version"`
	Arrivals       int64        `json:"arrivals"`
	RedDots        int64        `json:"red_dots"`
	MaxSeq         int64        `json:"max_seq"`
	ClientMsgNo    string       `json:"client_msg_no,omitempty"`
	Timestamp      int64        `json:"timestamp"`
	Version        int64        `json:"version"`
	Late           []lateRecord `json:"late,omitempty"`
}

type lateRecord struct {
	Arrival     int64  `json:"arrival"`
	Seq         int64  `json:"seq"`
	RedDot      bool   `json:"red_dot,omitempty"`
	ClientMsgNo string `json:"client_msg_no,omitempty"`
	Timestamp   int64  `json:"timestamp"`
}

func toChannelRecord(c conversation.ChannelChange) channelRecord {
	r := channelRecord{Key: c.Channel.Key, Type: c.Channel.Type, BeforeArrivals: c.Before.Arrivals, BeforeVersion: c.Before.Version,
		Arrivals: c.After.Arrivals, RedDots: c.After.RedDots, MaxSeq: c.After.MaxSeq, ClientMsgNo: c.After.ClientMsgNo,
		Timestamp: c.After.Timestamp, Version: c.After.Version}
	for _, m := range c.Late {
		r.Late = append(r.Late, lateRecord{Arrival: m.Arrival, Seq: m.Seq, RedDot: m.RedDot, ClientMsgNo: m.ClientMsgNo, Timestamp: m.Timestamp})
	}
	return r
}

func (r channelRecord) change() conversation.ChannelChange {
	k := conversation.ChannelKey{Key: r.Key, Type: r.Type}
	c := conversation.ChannelChange{Channel: k, Before: conversation.Broadcast{Arrivals: r.BeforeArrivals, Version: r.BeforeVersion},
		After: conversation.Broadcast{Arrivals: r.Arrivals, RedDots: r.RedDots, MaxSeq: r.MaxSeq, ClientMsgNo: r.ClientMsgNo,
			Timestamp: r.Timestamp, Version: r.Version}}
	for _, m := range r.Late {
		c.Late = append(c.Late, conversation.LateMsg{Channel: k, Arrival: m.Arrival, Seq: m.Seq, RedDot: m.RedDot,
			ClientMsgNo: m.ClientMsgNo, Timestamp: m.Timestamp})
	}
	return c
}

type windowRecord struct {
	Key     string `json:"key"`
	Type    uint8  `json:"type"`
	LateMin int64  `json:"late_min,omitempty"`
	LateMax int64  `json:"late_max,omitempty"`
	MinKept int64  `json:"min_kept,omitempty"`
}

// PublisherOptions tune a Publisher. Zero values pick the defaults named on the fields.
type PublisherOptions struct {
	// QueueLen bounds the commits waiting to be announced (default 4096). A commit that finds the queue
	// full is not announced (counted in conv_changes_dropped_total): followers then rely on their cache
	// age bound, as for a crash between a commit and its announcement.
	QueueLen int
	// WriteTimeout bounds one write to the broker, retries included (default 5s).
	WriteTimeout time.Duration
}

// Publisher writes the change feed: after a transaction committed, which users' conversation lists
// changed and to which version, and which channels' windows changed in a way a cached stretch cannot
// see (conversation.WindowChange). Readers of the feed (API replicas) use it to know when what they
// cache is out of date without asking the database.
//
// Publishing is asynchronous and bounded: AfterCommit only queues, so a slow or unreachable broker never
// holds up a projector batch or an API mutation. A goroutine writes what is queued, merging queued
// commits into one write. Delivery is best effort: a commit lost to a crash, a full queue or a failed
// write is why readers also bound the age of what they cache. Close drains the queue.
type Publisher struct {
	w       *kafkago.Writer
	log     *slog.Logger
	opts    PublisherOptions
	queue   chan pending
	stop    chan struct{}
	stopped sync.WaitGroup

	published prometheus.Counter
	failures  prometheus.Counter
	dropped   prometheus.Counter
	delay     prometheus.Histogram
}

// pending is a committed transaction's changes waiting to be published.
type pending struct {
	changes conversation.Changes
	at      time.Time
}

// NewPublisher returns a publisher to topic, with its metrics registered in reg, and starts its writing
// goroutine. It connects lazily, on the first write. Close it to drain and stop.
func NewPublisher(kc *kafkaconn.Conn, brokers []string, topic string, log *slog.Logger, reg prometheus.Registerer, opts PublisherOptions) (*Publisher, error) {
	if opts.QueueLen <= 0 {
		opts.QueueLen = 4096
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 5 * time.Second
	}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "conv", Subsystem: "changes", Name: name, Help: help})
	}
	p := &Publisher{
		log:       log,
		opts:      opts,
		queue:     make(chan pending, opts.QueueLen),
		stop:      make(chan struct{}),
		published: counter("published_total", "User versions announced on the change feed."),
		failures:  counter("publish_failures_total", "Change-feed writes that failed (readers then rely on their cache age bound)."),
		dropped:   counter("dropped_total", "Commits not announced because the publish queue was full (readers rely on their cache age bound)."),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "conv", Subsystem: "changes", Name: "publish_seconds",
			Help:    "From a commit to the broker acknowledging its announcement (queue wait included).",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16)}),
	}
	if err := errors.Join(reg.Register(p.published), reg.Register(p.failures), reg.Register(p.dropped), reg.Register(p.delay)); err != nil {
		return nil, err
	}
	p.w = &kafkago.Writer{
		Addr:      kafkago.TCP(brokers...),
		Topic:     topic,
		Transport: kc.Transport(),
		// Acknowledged by every in-sync replica (contract §6): an announcement the broker acknowledged
		// survives the loss of the broker that led its partition.
		RequiredAcks: kafkago.RequireAll,
		// The writing goroutine already gathers what queued up meanwhile: do not wait for a fuller batch.
		BatchTimeout: time.Millisecond,
		MaxAttempts:  3,
	}
	p.stopped.Add(1)
	go p.run()
	return p, nil
}

// AfterCommit queues the changes a transaction committed, as a mysql.Options.OnCommit hook. It never
// blocks: when the queue is full the changes are dropped and counted.
func (p *Publisher) AfterCommit(_ context.Context, changes conversation.Changes) {
	select {
	case p.queue <- pending{changes: changes, at: time.Now()}:
	default:
		p.dropped.Inc()
	}
}

// run writes what is queued until Close, then what is left.
func (p *Publisher) run() {
	defer p.stopped.Done()
	for {
		select {
		case first := <-p.queue:
			p.write(p.gather(first))
		case <-p.stop:
			for {
				select {
				case first := <-p.queue:
					p.write(p.gather(first))
				default:
					return
				}
			}
		}
	}
}

// gather merges first with whatever else is queued right now.
func (p *Publisher) gather(first pending) pending {
	merged := pending{at: first.at, changes: conversation.Changes{Versions: map[string]int64{}}}
	windows := map[conversation.ChannelKey]conversation.WindowChange{}
	var channels []conversation.ChannelChange
	add := func(c conversation.Changes) {
		for u, v := range c.Versions {
			merged.changes.Versions[u] = max(merged.changes.Versions[u], v)
		}
		for _, w := range c.Windows {
			windows[w.Channel] = mergeWindow(windows[w.Channel], w)
		}
		channels = append(channels, c.Channels...)
	}
	add(first.changes)
gathering:
	for range cap(p.queue) { // at most one queue's worth, so a steady stream still gets written
		select {
		case next := <-p.queue:
			add(next.changes)
		default:
			break gathering
		}
	}
	for _, w := range windows {
		merged.changes.Windows = append(merged.changes.Windows, w)
	}
	merged.changes.Channels = chainChannels(channels)
	return merged
}

// chainChannels merges the changes of each channel that follow one another into one, whatever order
// they were queued in (commits of one channel are ordered by its lock, but the hooks that queue them
// race). Changes that do not chain are kept apart, in the order of their Before: a reader applies
// those that start where it stands and drops the channel at a gap, so merging never hides one.
func chainChannels(in []conversation.ChannelChange) []conversation.ChannelChange {
	if len(in) <= 1 {
		return in
	}
	sorted := slices.Clone(in)
	slices.SortStableFunc(sorted, func(a, b conversation.ChannelChange) int {
		if c := a.Channel.Compare(b.Channel); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Before.Arrivals, b.Before.Arrivals); c != 0 {
			return c
		}
		return cmp.Compare(a.Before.Version, b.Before.Version)
	})
	out := sorted[:0:0]
	for _, c := range sorted {
		if n := len(out); n > 0 && out[n-1].Channel == c.Channel && c.Follows(out[n-1].After) {
			last := &out[n-1]
			last.After = c.After
			last.Late = append(slices.Clip(last.Late), c.Late...)
			continue
		}
		out = append(out, c)
	}
	return out
}

// mergeWindow is one announcement of a channel that means what a and b mean one after the other: the
// late seqs' span (a stretch that overlaps it is dropped, which covers each one) and the higher prune
// point.
func mergeWindow(a, b conversation.WindowChange) conversation.WindowChange {
	a.Channel = b.Channel
	if b.LateMin > 0 {
		if a.LateMin == 0 || b.LateMin < a.LateMin {
			a.LateMin = b.LateMin
		}
		a.LateMax = max(a.LateMax, b.LateMax)
	}
	a.MinKept = max(a.MinKept, b.MinKept)
	return a
}

func (p *Publisher) write(batch pending) {
	ctx, cancel := context.WithTimeout(context.Background(), p.opts.WriteTimeout)
	defer cancel()
	if err := p.Publish(ctx, batch.changes, batch.at); err != nil {
		p.failures.Inc()
		p.log.Warn("change feed publish failed", "users", len(batch.changes.Versions), "windows", len(batch.changes.Windows),
			"error", err.Error())
		return
	}
	p.published.Add(float64(len(batch.changes.Versions)))
	p.delay.Observe(time.Since(batch.at).Seconds())
}

// Publish writes changes committed at the given time, usersPerRecord users and windowsPerRecord windows
// to a record, and returns when the broker has them. Most callers want AfterCommit, which does not wait.
func (p *Publisher) Publish(ctx context.Context, changes conversation.Changes, at time.Time) error {
	if changes.Empty() {
		return nil
	}
	uids := make([]string, 0, len(changes.Versions))
	for u := range changes.Versions {
		uids = append(uids, u)
	}
	slices.Sort(uids)
	// Record i carries the i-th chunk of users and of windows, so a commit's announcement is one record
	// (read and applied as one) unless it is large. Large channels' states come in the last records,
	// after every user: a follower applies users first, so a cached list a commit rewrote is stale before
	// the channel state that commit reached is served with it (an old row at an old base with the new
	// state would count the member's own message, say).
	userChunks := slices.Collect(slices.Chunk(uids, usersPerRecord))
	windowChunks := slices.Collect(slices.Chunk(changes.Windows, windowsPerRecord))
	channelChunks := slices.Collect(slices.Chunk(changes.Channels, channelsPerRecord))
	n := max(len(userChunks), len(windowChunks))
	if len(channelChunks) > 0 {
		n = max(n, len(userChunks)-1+len(channelChunks), len(channelChunks))
	}
	recs := make([]changeRecord, n)
	for i := range recs {
		recs[i].AtMicros = at.UnixMicro()
		if i < len(userChunks) {
			recs[i].Versions = make(map[string]int64, len(userChunks[i]))
			for _, u := range userChunks[i] {
				recs[i].Versions[u] = changes.Versions[u]
			}
		}
		if i < len(windowChunks) {
			for _, w := range windowChunks[i] {
				recs[i].Windows = append(recs[i].Windows, windowRecord{Key: w.Channel.Key, Type: w.Channel.Type, LateMin: w.LateMin,
					LateMax: w.LateMax, MinKept: w.MinKept})
			}
		}
		// channels start in the record holding the last users
		if j := i - max(0, len(userChunks)-1); j >= 0 && j < len(channelChunks) {
			for _, c := range channelChunks[j] {
				recs[i].Channels = append(recs[i].Channels, toChannelRecord(c))
			}
		}
	}
	msgs := make([]kafkago.Message, len(recs))
	for i, rec := range recs {
		v, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		msgs[i] = kafkago.Message{Value: v}
	}
	if err := p.w.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("publish changes: %w", err)
	}
	return nil
}

// Close announces what is still queued (each write bounded by WriteTimeout), then closes the writer.
// Changes queued after Close are not announced.
func (p *Publisher) Close() error {
	close(p.stop)
	p.stopped.Wait()
	return p.w.Close()
}

// Follower reads the change feed.
type Follower struct {
	readers []*kafkago.Reader
	log     *slog.Logger
	delay   prometheus.Histogram
}

// NewFollower prepares to read every partition of the change feed from its current end, with its
// metrics registered in reg. It fails when the brokers cannot be reached or the topic does not exist;
// then nothing is followed.
func NewFollower(ctx context.Context, kc *kafkaconn.Conn, brokers []string, topic string, log *slog.Logger, reg prometheus.Registerer) (*Follower, error) {
	if len(brokers) == 0 {
		return nil, errors.New("no Kafka brokers configured")
	}
	conn, err := kc.Dialer().DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		return nil, fmt.Errorf("dial Kafka %s: %w", brokers[0], err)
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		return nil, fmt.Errorf("read partitions of %s: %w", topic, err)
	}
	f := &Follower{log: log, delay: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "conv", Subsystem: "changes",
		Name: "delivery_seconds", Help: "From a commit to this replica reading its announcement (clocks of both hosts involved).",
		Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16)})}
	if err := reg.Register(f.delay); err != nil {
		return nil, err
	}
	for _, part := range parts {
		r := kafkago.NewReader(kafkago.ReaderConfig{
			Brokers: brokers, Topic: topic, Partition: part.ID, MinBytes: 1, MaxBytes: 4 << 20, MaxWait: time.Second,
			Dialer: kc.Dialer(),
			ErrorLogger: kafkago.LoggerFunc(func(format string, args ...any) {
				log.Warn("change feed", "detail", fmt.Sprintf(format, args...))
			}),
		})
		if err := r.SetOffset(kafkago.LastOffset); err != nil {
			r.Close()
			f.Close()
			return nil, fmt.Errorf("follow %s/%d: %w", topic, part.ID, err)
		}
		f.readers = append(f.readers, r)
	}
	return f, nil
}

// Run calls notify with what each record of the feed announces until ctx ends, then closes the readers,
// and returns once every partition's goroutine has stopped. Read errors are logged and retried; a record
// that cannot be decoded is logged and skipped (the readers' age bound covers what it announced).
func (f *Follower) Run(ctx context.Context, notify func(conversation.Changes)) {
	var wg sync.WaitGroup
	for _, r := range f.readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.follow(ctx, r, notify)
		}()
	}
	wg.Wait()
	f.Close()
}

func (f *Follower) follow(ctx context.Context, r *kafkago.Reader, notify func(conversation.Changes)) {
	for {
		m, err := r.ReadMessage(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil { // the reader retries broker faults itself; this is rarer, so pause and go on
			f.log.Warn("change feed read failed", "partition", r.Config().Partition, "error", err.Error())
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		var rec changeRecord
		if err := json.Unmarshal(m.Value, &rec); err != nil {
			f.log.Warn("change feed record skipped", "partition", m.Partition, "offset", m.Offset, "error", err.Error())
			continue
		}
		changes := conversation.Changes{Versions: rec.Versions}
		for _, w := range rec.Windows {
			changes.Windows = append(changes.Windows, conversation.WindowChange{
				Channel: conversation.ChannelKey{Key: w.Key, Type: w.Type}, LateMin: w.LateMin, LateMax: w.LateMax, MinKept: w.MinKept})
		}
		for _, c := range rec.Channels {
			changes.Channels = append(changes.Channels, c.change())
		}
		notify(changes)
		if rec.AtMicros > 0 {
			f.delay.Observe(max(0, time.Since(time.UnixMicro(rec.AtMicros)).Seconds()))
		}
	}
}

// Close closes the readers.
func (f *Follower) Close() {
	for _, r := range f.readers {
		_ = r.Close()
	}
}
