package readcache

import (
	"container/list"
	"context"
	"sync"
	"time"

	"github.com/convsync/conversations/internal/conversation"
)

// RecentsSource loads recents; *mysql.Store is one.
type RecentsSource interface {
	Recents(ctx context.Context, ranges []conversation.SeqRange) (map[conversation.ChannelKey][]conversation.Message, error)
}

// RecentsOptions size the recents cache. Zero values pick the defaults named on the fields.
type RecentsOptions struct {
	// MaxBytes bounds the payload bytes held (default 64 MiB); least recently used channels go first.
	MaxBytes int
	// Fill is how many seqs a miss loads at least (default 20), so the next requests of the channel's
	// other members hit even when they ask for more than the first one did.
	Fill int
	// TTL bounds how long an entry is served (default 10 s).
	TTL time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Metrics count hits and misses (default: counted, not exported).
	Metrics *Metrics
}

// Recents keeps the newest messages of busy channels in front of the store's recents query. Messages
// are immutable and a conversation row names the newest seq its user may see, so a cached stretch of a
// channel's seqs answers a recents request exactly whenever it covers the requested seqs, and needs no
// invalidation when new messages arrive: a request for a seq above the stretch misses and reloads.
//
// What a cached stretch can get wrong is a message that arrives late, out of seq order, after the stretch
// was loaded (absent from the stretch), and a message the channel's window pruned since (still in it).
// Entries therefore expire after a TTL, which bounds both; unread counts are never affected, since rows
// never come from this cache. Recents is safe for concurrent use.
type Recents struct {
	src  RecentsSource
	opts RecentsOptions

	mu    sync.Mutex
	lru   *list.List // of *entry, most recently used first
	index map[conversation.ChannelKey]*list.Element
	bytes int
}

// entry holds every window message of one channel with lo <= seq <= hi, newest first.
type entry struct {
	key      conversation.ChannelKey
	lo, hi   int64
	msgs     []conversation.Message
	bytes    int
	loadedAt time.Time
}

// NewRecents returns a recents cache in front of src.
func NewRecents(src RecentsSource, opts RecentsOptions) *Recents {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 64 << 20
	}
	if opts.Fill <= 0 {
		opts.Fill = 20
	}
	if opts.TTL <= 0 {
		opts.TTL = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	opts.Metrics = opts.Metrics.orUnregistered()
	return &Recents{src: src, opts: opts, lru: list.New(), index: map[conversation.ChannelKey]*list.Element{}}
}

// Recents answers like Source.Recents: for each range, the window's messages with After < seq <= UpTo,
// at most Count, newest first. Ranges the cache covers cost nothing; the others go to the source in
// one call. Errors are the source's.
func (c *Recents) Recents(ctx context.Context, ranges []conversation.SeqRange) (map[conversation.ChannelKey][]conversation.Message, error) {
	out := make(map[conversation.ChannelKey][]conversation.Message, len(ranges))
	var miss []conversation.SeqRange
	hits := 0
	now := c.opts.Now()
	c.mu.Lock()
	for _, r := range ranges {
		if r.Count <= 0 || r.UpTo <= r.After {
			continue
		}
		from := max(r.After+1, r.UpTo-int64(r.Count)+1)
		if el, ok := c.index[r.Channel]; ok {
			e := el.Value.(*entry)
			if e.lo <= from && r.UpTo <= e.hi && now.Sub(e.loadedAt) < c.opts.TTL {
				c.lru.MoveToFront(el)
				out[r.Channel] = pick(e.msgs, from, r.UpTo)
				hits++
				continue
			}
		}
		miss = append(miss, r)
	}
	c.mu.Unlock()
	c.opts.Metrics.recents.WithLabelValues("hit").Add(float64(hits))
	c.opts.Metrics.recents.WithLabelValues("miss").Add(float64(len(miss)))
	if len(miss) == 0 {
		return out, nil
	}

	// Load at least Fill seqs below UpTo, whatever the request's After: other members ask for the same
	// channel with other read points.
	load := make([]conversation.SeqRange, len(miss))
	for i, r := range miss {
		n := max(r.Count, c.opts.Fill)
		load[i] = conversation.SeqRange{Channel: r.Channel, After: max(0, r.UpTo-int64(n)), UpTo: r.UpTo, Count: n}
	}
	loaded, err := c.src.Recents(ctx, load)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, r := range miss {
		msgs := loaded[r.Channel]
		c.put(&entry{key: r.Channel, lo: load[i].After + 1, hi: r.UpTo, msgs: msgs, bytes: size(msgs), loadedAt: now})
		out[r.Channel] = pick(msgs, max(r.After+1, r.UpTo-int64(r.Count)+1), r.UpTo)
	}
	return out, nil
}

// put stores e, replacing the channel's older entry, and evicts least recently used entries over budget.
func (c *Recents) put(e *entry) {
	if el, ok := c.index[e.key]; ok {
		old := el.Value.(*entry)
		c.bytes -= old.bytes
		c.lru.Remove(el)
	}
	if e.bytes > c.opts.MaxBytes {
		delete(c.index, e.key)
		return
	}
	c.index[e.key] = c.lru.PushFront(e)
	c.bytes += e.bytes
	for c.bytes > c.opts.MaxBytes {
		last := c.lru.Back()
		old := last.Value.(*entry)
		c.lru.Remove(last)
		delete(c.index, old.key)
		c.bytes -= old.bytes
	}
}

// pick returns the messages of msgs (newest first) with from <= seq <= upTo; the result shares msgs'
// backing array and must not be modified.
func pick(msgs []conversation.Message, from, upTo int64) []conversation.Message {
	i := 0
	for i < len(msgs) && msgs[i].MessageSeq > upTo {
		i++
	}
	j := i
	for j < len(msgs) && msgs[j].MessageSeq >= from {
		j++
	}
	return msgs[i:j:j]
}

// size approximates an entry's memory: payloads plus a fixed cost per message.
func size(msgs []conversation.Message) int {
	n := 0
	for _, m := range msgs {
		n += len(m.Payload) + len(m.ClientMsgNo) + len(m.FromUID) + len(m.ChannelID) + 96
	}
	return n
}
