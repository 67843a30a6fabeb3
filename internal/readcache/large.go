package readcache

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/convsync/conversations/internal/conversation"
)

// LargeStatesSource reads large channels' broadcast states (contract §5); *mysql.Store is one.
type LargeStatesSource interface {
	// LargeStates returns, from one snapshot, the state of each channel of since that exists and its
	// late messages with an arrival number above since's.
	LargeStates(ctx context.Context, since map[conversation.ChannelKey]int64) (map[conversation.ChannelKey]conversation.ChannelState, map[conversation.ChannelKey][]conversation.LateMsg, error)
	// ChannelHeads returns the broadcast arrivals and version of each of keys that exists.
	ChannelHeads(ctx context.Context, keys []conversation.ChannelKey) (map[conversation.ChannelKey]conversation.Broadcast, error)
}

// LargeOptions size the large channels' cache. Zero values pick the defaults named on the fields.
type LargeOptions struct {
	// MaxChannels bounds the channels held (default 100,000); past it an arbitrary one goes.
	MaxChannels int
	// MaxLate bounds the late messages held per channel (default 256): a channel with more is dropped
	// and read from the database by each request.
	MaxLate int
	// MaxAge is how long a state is served after it was last known current (loaded or revalidated);
	// it bounds the harm of a lost announcement. It must be > 0: without the change feed nothing
	// keeps states current and Rows derives through the database.
	MaxAge time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Metrics count how states are served (default: counted, not exported).
	Metrics *Metrics
}

// Large holds large channels' broadcast states and late messages, fed by the change feed (Apply), so
// that deriving a follower's conversation (conversation.Derive) needs no database read. Exactness rests
// on three rules (docs/proofs.md "Holding large channels' states"):
//   - an announced change is applied only when it starts where the held state stands (its Before); an
//     older one is ignored and one beyond a gap drops the channel;
//   - a load that was in flight when a change of its channel was announced answers its request but is
//     not kept;
//   - a state is served for at most MaxAge after it was last known current (loaded, or found unchanged
//     by Refresh), and the time it was known current goes with the answer (conversation.Served.AsOf),
//     since the versions sync answers are taken at that time.
//
// Large is safe for concurrent use.
type Large struct {
	src  LargeStatesSource
	opts LargeOptions

	mu       sync.Mutex
	channels map[conversation.ChannelKey]*largeEntry
	// announced counts announcements per channel, held or not, so a load that raced one is not kept
	// (bounded at 2*MaxChannels channels).
	announced announcements[conversation.ChannelKey]
}

type largeEntry struct {
	b conversation.Broadcast
	// late holds every late message with an arrival number in (since, b.Arrivals].
	late  []conversation.LateMsg
	since int64
	// checked is when the state was last known current: every commit before it is in b.
	checked time.Time
	// used is when a request last derived with it: Refresh forgets what no request needs any more
	// rather than revalidate it forever.
	used time.Time
}

// NewLarge returns a cache of large channels' states in front of src.
func NewLarge(src LargeStatesSource, opts LargeOptions) *Large {
	if opts.MaxChannels <= 0 {
		opts.MaxChannels = 100_000
	}
	if opts.MaxLate <= 0 {
		opts.MaxLate = 256
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	opts.Metrics = opts.Metrics.orUnregistered()
	return &Large{src: src, opts: opts, channels: map[conversation.ChannelKey]*largeEntry{},
		announced: newAnnouncements[conversation.ChannelKey](2 * opts.MaxChannels)}
}

// Apply applies announced changes of large channels, in order (from the change feed, or a local
// commit). A change that starts where the held state stands moves it; one that is older (its After is
// not past the held state) is ignored; any other drops the channel, which the next request loads.
func (l *Large) Apply(changes []conversation.ChannelChange) {
	if len(changes) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range changes {
		l.announced.announce(c.Channel)
		e, ok := l.channels[c.Channel]
		switch {
		case !ok:
		case c.Follows(e.b) && len(e.late)+len(c.Late) <= l.opts.MaxLate:
			e.b = c.After
			e.late = append(slices.Clip(e.late), c.Late...)
		case c.Before.Arrivals >= 0 && c.After.Arrivals < e.b.Arrivals,
			c.Before.Arrivals >= 0 && c.After.Arrivals == e.b.Arrivals && c.After.Version == e.b.Version:
			// already held (a local commit applied, then its announcement read from the feed)
		default:
			delete(l.channels, c.Channel)
		}
	}
}

// Derive returns list with every follower of a large channel replaced by its conversation
// (conversation.DeriveList), from held states where they are current enough, reading the others in one
// statement. list.Rows is not modified. When a held state is used, the time it was last known current
// joins list.Served.AsOf (the earliest stands). Errors are the source's.
func (l *Large) Derive(ctx context.Context, list conversation.ListRead) (conversation.ListRead, error) {
	var oldest time.Time
	rows, err := conversation.DeriveList(ctx, list.Rows, func(ctx context.Context, since map[conversation.ChannelKey]int64) (
		map[conversation.ChannelKey]conversation.ChannelState, map[conversation.ChannelKey][]conversation.LateMsg, error) {
		var channels map[conversation.ChannelKey]conversation.ChannelState
		var late map[conversation.ChannelKey][]conversation.LateMsg
		var err error
		channels, late, oldest, err = l.states(ctx, since)
		return channels, late, err
	})
	if err != nil {
		return conversation.ListRead{}, err
	}
	list.Rows = rows
	if !oldest.IsZero() {
		list.Served = list.Served.Join(conversation.Served{AsOf: oldest})
	}
	return list, nil
}

// states returns the states of the channels of since, and their late messages since since's base:
// held ones where they are current enough (oldest is the earliest time one of those was last known
// current, zero when none was used), the others read from the source in one statement and kept when
// no announcement raced the read.
func (l *Large) states(ctx context.Context, since map[conversation.ChannelKey]int64) (
	channels map[conversation.ChannelKey]conversation.ChannelState, late map[conversation.ChannelKey][]conversation.LateMsg, oldest time.Time, err error) {
	start := l.opts.Now()
	channels = make(map[conversation.ChannelKey]conversation.ChannelState, len(since))
	late = make(map[conversation.ChannelKey][]conversation.LateMsg, len(since))
	missing := map[conversation.ChannelKey]int64{}
	l.mu.Lock()
	for k, s := range since {
		e, ok := l.channels[k]
		if !ok || e.since > s || start.Sub(e.checked) >= l.opts.MaxAge {
			missing[k] = s
			continue
		}
		channels[k], late[k] = conversation.ChannelState{Broadcast: e.b}, e.late
		e.used = start
		if oldest.IsZero() || e.checked.Before(oldest) {
			oldest = e.checked
		}
	}
	mark := l.announced.mark()
	l.mu.Unlock()
	if held := len(since) - len(missing); held > 0 {
		l.opts.Metrics.large.WithLabelValues("memory").Add(float64(held))
	}
	if len(missing) == 0 {
		return channels, late, oldest, nil
	}
	loadStart := time.Now()
	loaded, loadedLate, err := l.src.LargeStates(ctx, missing)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	l.opts.Metrics.load.WithLabelValues("large").Observe(time.Since(loadStart).Seconds())
	l.opts.Metrics.large.WithLabelValues("loaded").Add(float64(len(missing)))
	for k := range missing {
		channels[k], late[k] = loaded[k], loadedLate[k]
	}
	l.keep(missing, loaded, loadedLate, mark, start)
	return channels, late, oldest, nil
}

// keep stores loaded states whose channel had no announcement since the load's mark, and that are not
// behind a held state.
func (l *Large) keep(since map[conversation.ChannelKey]int64, channels map[conversation.ChannelKey]conversation.ChannelState,
	late map[conversation.ChannelKey][]conversation.LateMsg, mark int64, start time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, s := range since {
		st, ok := channels[k]
		if !ok || l.announced.since(k, mark) || len(late[k]) > l.opts.MaxLate {
			continue
		}
		if e, ok := l.channels[k]; ok && e.b.Arrivals > st.Broadcast.Arrivals {
			continue
		}
		if _, ok := l.channels[k]; !ok && len(l.channels) >= l.opts.MaxChannels {
			for other := range l.channels {
				delete(l.channels, other)
				break
			}
		}
		l.channels[k] = &largeEntry{b: st.Broadcast, late: late[k], since: s, checked: start, used: start}
	}
}

// Refresh forgets the states no request used for MaxAge and revalidates, in one query per few hundred
// channels, every other state checked more than MaxAge/2 ago: one whose broadcast arrivals and version are those in the database counts as checked at the
// start of the call; any other (changed without an announcement that reached this replica, or by
// convctl raising versions or switching schemas) is dropped. Run it every MaxAge/4 or so. Errors are
// the source's; nothing is changed then.
func (l *Large) Refresh(ctx context.Context) error {
	start := l.opts.Now()
	due := func() []conversation.ChannelKey {
		var keys []conversation.ChannelKey
		for k, e := range l.channels {
			switch {
			case start.Sub(e.used) >= l.opts.MaxAge:
				delete(l.channels, k) // no request needed it for MaxAge: forget rather than revalidate it
			case start.Sub(e.checked) > l.opts.MaxAge/2:
				keys = append(keys, k)
			}
		}
		return keys
	}
	return refresh(ctx, &l.mu, l.opts.Metrics, "large_bulk", due, l.src.ChannelHeads,
		func(keys []conversation.ChannelKey, heads map[conversation.ChannelKey]conversation.Broadcast) {
			for _, k := range keys {
				e, ok := l.channels[k]
				if !ok {
					continue
				}
				if h, ok := heads[k]; ok && h.Arrivals == e.b.Arrivals && h.Version == e.b.Version {
					if start.After(e.checked) {
						e.checked = start
					}
					continue
				}
				delete(l.channels, k)
			}
			l.opts.Metrics.large.WithLabelValues("refreshed").Add(float64(len(keys)))
		})
}
