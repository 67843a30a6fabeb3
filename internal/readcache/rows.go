package readcache

import (
	"container/list"
	"context"
	"sync"

	"github.com/convsync/conversations/internal/conversation"
)

// RowsSource reads a user's conversation rows; *mysql.Store is one.
type RowsSource interface {
	// UserRows returns all of the user's rows, tombstones included, with the user's version, from one
	// snapshot.
	UserRows(ctx context.Context, uid string) ([]conversation.Row, int64, error)
	// UserVersion returns the user's current version.
	UserVersion(ctx context.Context, uid string) (int64, error)
}

// RowsOptions size the rows cache. Zero values pick the defaults named on the fields.
type RowsOptions struct {
	// MaxUsers bounds how many users' lists are kept (default 100,000); least recently used go first.
	MaxUsers int
	// MaxRowsPerUser: a longer list is not cached (default 2,000).
	MaxRowsPerUser int
}

// Rows serves sync's conversation lists. A user's version changes in the same commit as any of the
// user's rows (contract §3.6), so a cached list whose version equals the user's current version is
// exactly what the database holds: each request costs one primary-key read instead of reading the rows,
// and no request is ever answered from a stale list, whichever replica or projector changed it. Rows is
// safe for concurrent use.
type Rows struct {
	src  RowsSource
	opts RowsOptions

	mu    sync.Mutex
	lru   *list.List // of *userRows, most recently used first
	index map[string]*list.Element
}

type userRows struct {
	uid     string
	version int64
	rows    []conversation.Row
}

// NewRows returns a rows cache in front of src.
func NewRows(src RowsSource, opts RowsOptions) *Rows {
	if opts.MaxUsers <= 0 {
		opts.MaxUsers = 100_000
	}
	if opts.MaxRowsPerUser <= 0 {
		opts.MaxRowsPerUser = 2_000
	}
	return &Rows{src: src, opts: opts, lru: list.New(), index: map[string]*list.Element{}}
}

// Conversations returns the rows q selects (conversation.Select), as current as the user's version read
// at the start of the call. Errors are the source's.
func (c *Rows) Conversations(ctx context.Context, q conversation.Query) ([]conversation.Row, error) {
	version, err := c.src.UserVersion(ctx, q.UID)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if el, ok := c.index[q.UID]; ok {
		if e := el.Value.(*userRows); e.version == version {
			c.lru.MoveToFront(el)
			rows := e.rows
			c.mu.Unlock()
			return conversation.Select(rows, q), nil
		}
	}
	c.mu.Unlock()

	rows, version, err := c.src.UserRows(ctx, q.UID)
	if err != nil {
		return nil, err
	}
	if len(rows) <= c.opts.MaxRowsPerUser {
		c.put(&userRows{uid: q.UID, version: version, rows: rows})
	}
	return conversation.Select(rows, q), nil
}

// put stores e unless a newer list of the user is already there, and evicts over MaxUsers.
func (c *Rows) put(e *userRows) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.index[e.uid]; ok {
		if el.Value.(*userRows).version > e.version {
			return // a concurrent request stored a newer snapshot
		}
		el.Value = e
		c.lru.MoveToFront(el)
		return
	}
	c.index[e.uid] = c.lru.PushFront(e)
	for c.lru.Len() > c.opts.MaxUsers {
		last := c.lru.Back()
		c.lru.Remove(last)
		delete(c.index, last.Value.(*userRows).uid)
	}
}
