package readcache

import (
	"errors"

	"github.com/convsync/conversations/internal/conversation"
)

// While the database cannot be reached nothing commits, so a cached list or stretch that no
// announcement has made stale is still exactly what the database holds: the caches serve it, whatever
// its age, instead of failing (the outage path). They say so in what they return
// (conversation.Served.Outage), so the API can tell its caller, and count it (result "outage" of the
// cache metrics). What is not cached still fails with the source's error.

// unreachable reports whether err is the database being out of reach, the one failure the outage path
// stands in for.
func unreachable(err error) bool { return errors.Is(err, conversation.ErrUnavailable) }

// lastKnown returns uid's cached list when no announcement made it stale: its version is at least the
// highest announced, and the announcements were not forgotten since it was checked. Its age does not
// matter: see the outage path above.
func (c *Rows) lastKnown(uid string) (userRows, bool) {
	return c.unannounced(uid, false, func(e *userRows) bool { return !e.large })
}

// cachedAnswers answers every range from cached stretches whatever their age, or returns false if one
// of them is not cached.
func (c *Recents) cachedAnswers(ranges []conversation.SeqRange) (map[conversation.ChannelKey][]conversation.Message, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[conversation.ChannelKey][]conversation.Message, len(ranges))
	for _, r := range ranges {
		el, ok := c.index[r.Channel]
		if !ok {
			return nil, false
		}
		msgs, ok := el.Value.(*entry).stretch.Answer(r)
		if !ok {
			return nil, false
		}
		out[r.Channel] = msgs
	}
	return out, true
}
