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
	// Fill is how many messages a miss loads at least (default 20), so the next requests of the channel's
	// other members hit even when they ask for more than the first one did.
	Fill int
	// MaxAge bounds how long a stretch is served after it was loaded (default 5 s). Announced changes
	// (Apply) keep stretches exact; MaxAge bounds the harm of an announcement that was lost.
	MaxAge time.Duration
	// Encode, when set, gives each loaded message its wire form (conversation.Message.Encoded), so every
	// answer that serves it from the cache only copies bytes (httpapi.EncodeRecent).
	Encode func(*conversation.Message) []byte
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Metrics count hits and misses (default: counted, not exported).
	Metrics *Metrics
}

// Recents keeps stretches of busy channels' windows (conversation.Stretch) in front of the store's
// recents query. Messages are immutable and a conversation row names the newest seq its user may see, so
// a cached stretch answers a recents request exactly whenever it holds all of the request's messages,
// and needs nothing when new messages arrive on top: a request for a seq above the stretch misses and
// reloads.
//
// What a stretch cannot see is a message inserted inside it after it was loaded (a late one, out of seq
// order) and a message the window pruned since. The store announces both with every commit (the change
// feed); Apply drops the stretches a late message falls into and trims pruned messages from the others,
// so what is served is never older than what this replica has been told. A stretch whose load raced an
// announcement of its channel is not kept. MaxAge bounds how long a stretch lives if an announcement is
// lost (a crash between a commit and its announcement, or a full publish queue). Unread counts are never
// affected: rows do not come from this cache. Recents is safe for concurrent use.
type Recents struct {
	src  RecentsSource
	opts RecentsOptions

	mu    sync.Mutex
	lru   *list.List // of *entry, most recently used first
	index map[conversation.ChannelKey]*list.Element
	bytes int
	// announced counts announcements per channel, cached or not, so a load that raced one is not kept
	// (bounded at maxTouched channels).
	announced announcements[conversation.ChannelKey]
}

// maxTouched bounds the channels whose last announcement Recents remembers.
const maxTouched = 200_000

// entry is one channel's cached stretch.
type entry struct {
	key      conversation.ChannelKey
	stretch  conversation.Stretch
	bytes    int
	loadedAt time.Time
}

// NewRecents returns a recents cache in front of src.
func NewRecents(src RecentsSource, opts RecentsOptions) *Recents {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultRecentsBytes
	}
	if opts.Fill <= 0 {
		opts.Fill = 20
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = DefaultMaxAge
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	opts.Metrics = opts.Metrics.orUnregistered()
	return &Recents{src: src, opts: opts, lru: list.New(), index: map[conversation.ChannelKey]*list.Element{},
		announced: newAnnouncements[conversation.ChannelKey](maxTouched)}
}

// Apply brings the cached stretches up to date with announced window changes (from the change feed, or
// a local commit): a stretch a late message falls into is dropped, pruned messages leave the others.
func (c *Recents) Apply(changes []conversation.WindowChange) {
	if len(changes) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range changes {
		c.announced.announce(w.Channel)
		el, ok := c.index[w.Channel]
		if !ok {
			continue
		}
		e := el.Value.(*entry)
		s, keep := e.stretch.Apply(w)
		if !keep {
			c.remove(el)
			continue
		}
		c.bytes -= e.bytes
		e.stretch, e.bytes = s, size(s.Msgs)
		c.bytes += e.bytes
	}
}

// ReadRecents answers like the source's Recents (conversation.PickRecents per range). Ranges a cached
// stretch answers cost nothing; the others go to the source in one call. When the source is
// unreachable and every missed range is in a cached stretch, however old, those answer instead (the
// outage path, outage.go; Served.Outage). Errors are the source's.
func (c *Recents) ReadRecents(ctx context.Context, _ string, ranges []conversation.SeqRange) (conversation.RecentsRead, error) {
	out := make(map[conversation.ChannelKey][]conversation.Message, len(ranges))
	var miss []conversation.SeqRange
	hits := 0
	now := c.opts.Now()
	c.mu.Lock()
	mark := c.announced.mark()
	for _, r := range ranges {
		if r.Empty() {
			continue
		}
		if el, ok := c.index[r.Channel]; ok {
			e := el.Value.(*entry)
			if now.Sub(e.loadedAt) < c.opts.MaxAge {
				if msgs, ok := e.stretch.Answer(r); ok {
					c.lru.MoveToFront(el)
					out[r.Channel] = msgs
					hits++
					continue
				}
			}
		}
		miss = append(miss, r)
	}
	c.mu.Unlock()
	c.opts.Metrics.recents.WithLabelValues("hit").Add(float64(hits))
	c.opts.Metrics.recents.WithLabelValues("miss").Add(float64(len(miss)))
	if len(miss) == 0 {
		return conversation.RecentsRead{Messages: out}, nil
	}

	// Load at least Fill messages at or below UpTo, whatever the request's After: other members ask for
	// the same channel with other read points.
	load := make([]conversation.SeqRange, len(miss))
	for i, r := range miss {
		load[i] = conversation.SeqRange{Channel: r.Channel, UpTo: r.UpTo, Count: max(r.Count, c.opts.Fill)}
	}
	start := time.Now()
	loaded, err := c.src.Recents(ctx, load)
	if err != nil {
		if !unreachable(err) {
			return conversation.RecentsRead{}, err
		}
		cached, ok := c.cachedAnswers(miss)
		if !ok {
			return conversation.RecentsRead{}, err
		}
		c.opts.Metrics.recents.WithLabelValues("outage").Add(float64(len(miss)))
		for k, msgs := range cached {
			out[k] = msgs
		}
		return conversation.RecentsRead{Messages: out, Served: conversation.Served{Outage: true}}, nil
	}
	c.encode(loaded)
	c.opts.Metrics.load.WithLabelValues("recents").Observe(time.Since(start).Seconds())
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, r := range miss {
		s := conversation.StretchOf(load[i], loaded[r.Channel])
		msgs, _ := s.Answer(r) // a stretch loaded for r holds r whole
		out[r.Channel] = msgs
		if c.announced.since(r.Channel, mark) {
			continue // an announcement of the channel arrived while loading: the load may predate it
		}
		c.put(&entry{key: r.Channel, stretch: s, bytes: size(s.Msgs), loadedAt: now})
	}
	return conversation.RecentsRead{Messages: out}, nil
}

// Refresh reloads, in bulk, every stretch loaded more than MaxAge/2 ago, so that under traffic stretches
// are renewed a few hundred per query instead of one per miss when their MaxAge runs out. A reload that
// races an announcement of its channel is not kept, as for a miss. Run it every MaxAge/4 or so. Errors
// are the source's; nothing is changed then.
func (c *Recents) Refresh(ctx context.Context) error {
	start := c.opts.Now()
	var mark int64
	var old []*entry
	due := func() []conversation.SeqRange {
		mark = c.announced.mark()
		var load []conversation.SeqRange
		for _, el := range c.index {
			e := el.Value.(*entry)
			if start.Sub(e.loadedAt) > c.opts.MaxAge/2 {
				load = append(load, conversation.SeqRange{Channel: e.key, UpTo: e.stretch.Hi, Count: max(len(e.stretch.Msgs), c.opts.Fill)})
				old = append(old, e)
			}
		}
		return load
	}
	read := func(ctx context.Context, load []conversation.SeqRange) (map[conversation.ChannelKey][]conversation.Message, error) {
		loaded, err := c.src.Recents(ctx, load)
		if err == nil {
			c.encode(loaded)
		}
		return loaded, err
	}
	return refresh(ctx, &c.mu, c.opts.Metrics, "recents_bulk", due, read, func(load []conversation.SeqRange, loaded map[conversation.ChannelKey][]conversation.Message) {
		for i, r := range load {
			if el, ok := c.index[r.Channel]; !ok || el.Value.(*entry) != old[i] {
				continue // evicted, or replaced by a newer load
			}
			if c.announced.since(r.Channel, mark) {
				continue
			}
			s := conversation.StretchOf(r, loaded[r.Channel])
			c.put(&entry{key: r.Channel, stretch: s, bytes: size(s.Msgs), loadedAt: start})
		}
		c.opts.Metrics.recents.WithLabelValues("refreshed").Add(float64(len(load)))
	})
}

// encode gives loaded messages their wire form when the cache has an encoder.
func (c *Recents) encode(loaded map[conversation.ChannelKey][]conversation.Message) {
	if c.opts.Encode == nil {
		return
	}
	for _, msgs := range loaded {
		for i := range msgs {
			msgs[i].Encoded = c.opts.Encode(&msgs[i])
		}
	}
}

// put stores e, replacing the channel's older entry, and evicts least recently used entries over budget.
func (c *Recents) put(e *entry) {
	if el, ok := c.index[e.key]; ok {
		c.remove(el)
	}
	if e.bytes > c.opts.MaxBytes {
		return
	}
	c.index[e.key] = c.lru.PushFront(e)
	c.bytes += e.bytes
	for c.bytes > c.opts.MaxBytes {
		c.remove(c.lru.Back())
	}
}

func (c *Recents) remove(el *list.Element) {
	e := el.Value.(*entry)
	c.lru.Remove(el)
	delete(c.index, e.key)
	c.bytes -= e.bytes
}

// size approximates an entry's memory: payloads plus a fixed cost per message.
func size(msgs []conversation.Message) int {
	n := 0
	for _, m := range msgs {
		n += len(m.Payload) + len(m.ClientMsgNo) + len(m.FromUID) + len(m.ChannelID) + len(m.Encoded) + 96
	}
	return n
}
