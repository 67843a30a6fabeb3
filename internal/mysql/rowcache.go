package mysql

import (
	"sync"

	"github.com/convsync/conversations/internal/conversation"
)

// rowCache holds conversation rows as a projector's batches last committed or read them, so that the
// next batch that changes one needs no read (batch.RowsForUpdate). It is only a guess: the optimistic
// write checks every row's version against the stored one (upsertRowsIf), so a row changed since by
// an API mutation, a purge or another projector (a rebalance handing the partition over and back)
// makes the attempt fail with a conflict; the cache is then emptied and the retry reads every row.
// Bounded by max rows: when full, an arbitrary eighth of it goes (Go's map order).
type rowCache struct {
	mu   sync.Mutex
	rows map[conversation.ConvKey]conversation.Row
	max  int
}

func newRowCache(max int) *rowCache {
	return &rowCache{rows: map[conversation.ConvKey]conversation.Row{}, max: max}
}

// get returns the cached row of each of keys that has one.
func (c *rowCache) get(keys []conversation.ConvKey) map[conversation.ConvKey]conversation.Row {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[conversation.ConvKey]conversation.Row, len(keys))
	for _, k := range keys {
		if r, ok := c.rows[k]; ok {
			out[k] = r
		}
	}
	return out
}

// put records rows as committed.
func (c *rowCache) put(rows map[conversation.ConvKey]conversation.Row) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.rows)+len(rows) > c.max {
		drop := max(c.max/8, len(c.rows)+len(rows)-c.max)
		for k := range c.rows {
			if drop--; drop < 0 {
				break
			}
			delete(c.rows, k)
		}
	}
	for k, r := range rows {
		if len(c.rows) >= c.max {
			return
		}
		c.rows[k] = r
	}
}

// clear drops every row.
func (c *rowCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.rows)
}
