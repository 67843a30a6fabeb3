package readcache

import (
	"container/list"
	"context"
	"sync"
	"time"

	"github.com/convsync/conversations/internal/conversation"
)

// RowsSource reads a user's conversation rows; *mysql.Store is one.
type RowsSource interface {
	// UserRows returns all of the user's rows, tombstones included, with the user's version, from one
	// snapshot.
	UserRows(ctx context.Context, uid string) ([]conversation.Row, int64, error)
	// UserVersion returns the user's current version.
	UserVersion(ctx context.Context, uid string) (int64, error)
	// UserVersions returns the current version of each of uids that has one.
	UserVersions(ctx context.Context, uids []string) (map[string]int64, error)
}

// LargeSource is what a RowsSource may also offer for lists that follow large channels (contract §5);
// *mysql.Store does. Such a list's conversations change with their channels, not with the user's
// version, but the rows as stored (followers at their base) do change only with it: Rows caches those
// and derives the conversations at every request, one read of the channels' states.
type LargeSource interface {
	// RawUserRows is UserRows with followers as stored, not derived.
	RawUserRows(ctx context.Context, uid string) ([]conversation.Row, int64, error)
	// DeriveLarge returns rows with every follower replaced by its conversation now.
	DeriveLarge(ctx context.Context, rows []conversation.Row) ([]conversation.Row, error)
}

// PageSource is what a RowsSource may also offer for paged incremental syncs (conversation.Query with
// Version and Limit): the rows of one page, not the whole list. *mysql.Store does.
type PageSource interface {
	// UserRowsPage returns what conversation.Select needs to answer q exactly, with the user's version.
	UserRowsPage(ctx context.Context, q conversation.Query) ([]conversation.Row, int64, error)
	// RawUserRowsPage is UserRowsPage with followers as stored, not derived.
	RawUserRowsPage(ctx context.Context, q conversation.Query) ([]conversation.Row, int64, error)
}

// RowsOptions size the rows cache. Zero values pick the defaults named on the fields.
type RowsOptions struct {
	// MaxUsers bounds how many users' lists are kept (default 100,000); least recently used go first.
	MaxUsers int
	// MaxRowsPerUser: a longer list is not cached (default 2,000).
	MaxRowsPerUser int
	// MaxRows bounds the rows of all lists together (default 1,000,000); least recently used lists go
	// first. With MaxUsers it bounds the cache's memory whatever the users' list lengths: about 250 bytes
	// a row live (docs/operations.md).
	MaxRows int
	// MaxAge > 0 lets a list be served with no database read at all for MaxAge after it was last
	// checked, as long as no newer version of the user was announced through Notify (the change feed).
	// It bounds how stale a list can be when an announcement is lost. 0 checks the version on every
	// request: as current as reading the rows at that moment, for one primary-key read per sync.
	MaxAge time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Metrics count how lists are served (default: counted, not exported).
	Metrics *Metrics
	// Large, when set (with the change feed), derives large channels' conversations from the states it
	// holds instead of reading them through the source's DeriveLarge at every request.
	Large *Large
}

// Rows serves sync's conversation lists. A user's version changes in the same commit as any of the
// user's rows (contract §3.6), so a cached list whose version equals the user's current version is
// exactly what the database holds. With MaxAge 0 each request checks that (one primary-key read instead
// of reading the rows) and no request is ever answered from a stale list. With MaxAge > 0 and the change
// feed calling Notify, a list is served from memory alone until a newer version is announced or MaxAge
// passes. Rows is safe for concurrent use.
type Rows struct {
	src  RowsSource
	opts RowsOptions
	// large is src as a LargeSource, when it is one (derives).
	large   LargeSource
	derives bool

	mu    sync.Mutex
	lru   *list.List // of *userRows, most recently used first
	index map[string]*list.Element
	rows  int // rows of the lists held
	// announced holds the highest version Notify reported per user, cached or not, so a list loaded just
	// before a change committed is not trusted after the announcement. Past 2*MaxUsers users it forgets
	// them all and every list is checked again once (checkedBefore).
	announced     announcements[string]
	checkedBefore time.Time
}

type userRows struct {
	uid     string
	version int64
	checked time.Time // when the version was last known current
	rows    []conversation.Row
	// large is set when the list holds conversations of large channels (contract §5): those change with
	// their channel, not with the user's version. With a LargeSource the list holds them as stored and
	// each request derives them; without one the list is never served from memory.
	large bool
}

// NewRows returns a rows cache in front of src.
func NewRows(src RowsSource, opts RowsOptions) *Rows {
	if opts.MaxUsers <= 0 {
		opts.MaxUsers = DefaultMaxUsers
	}
	if opts.MaxRowsPerUser <= 0 {
		opts.MaxRowsPerUser = 2_000
	}
	if opts.MaxRows <= 0 {
		opts.MaxRows = DefaultMaxRows
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	opts.Metrics = opts.Metrics.orUnregistered()
	c := &Rows{src: src, opts: opts, lru: list.New(), index: map[string]*list.Element{}, announced: newAnnouncements[string](2 * opts.MaxUsers)}
	c.large, c.derives = src.(LargeSource)
	return c
}

// Notify records that uid's conversation list changed to version (from the change feed, or a local
// commit): a cached list older than that is not served again.
func (c *Rows) Notify(uid string, version int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.announced.record(uid, version) {
		c.checkedBefore = c.opts.Now()
	}
}

// FloorSource is a source that answers no user below a version it was told of (internal/replica,
// which reads database replicas): ReadList tells it the version the requesting device already has, so
// that no list older than that is read for the device (contract §6).
type FloorSource interface {
	Notify(uid string, version int64)
}

// ReadList returns all of q.UID's rows, tombstones included, and their version, like the source's
// UserRows: as current as the user's version read at the start of the call, or, with MaxAge, from
// memory as described on Rows (Served.AsOf then says when the list, or the oldest large channel's
// state it was derived with, was last known current). The rows are shared with the cache: callers
// must not modify them (conversation.Select does not). When the source is unreachable, a cached list
// that no announcement made stale is served instead, whatever its age (the outage path, outage.go;
// Served.Outage). Errors are the source's.
//
// For a paged incremental sync (q.Version and q.Limit set) a list the cache may serve is served whole;
// otherwise, when the source is a PageSource, only q's page is read (and not cached), so that a user
// with more rows than MaxRowsPerUser, or one not cached, costs a page per page rather than the whole
// list. conversation.Select answers q exactly from either.
func (c *Rows) ReadList(ctx context.Context, q conversation.Query) (conversation.ListRead, error) {
	// What the device already has (q.Version) is what no answer may be below, here and in a source
	// that reads replicas.
	if f, ok := c.src.(FloorSource); ok && q.Version > 0 {
		f.Notify(q.UID, q.Version)
	}
	var page *conversation.Query
	if q.Version > 0 && q.Limit > 0 {
		page = &q
	}
	list, large, err := c.read(ctx, q.UID, q.Version, page)
	if err != nil || !c.derives || !large {
		return list, err
	}
	if c.opts.Large != nil {
		return c.opts.Large.Derive(ctx, list)
	}
	if list.Rows, err = c.large.DeriveLarge(ctx, list.Rows); err != nil {
		return conversation.ListRead{}, err
	}
	return list, nil
}

// read is ReadList before large channels' conversations are derived (with a LargeSource), and
// whether the list follows a large channel (known once per load, not rescanned per request). A list
// in memory older than has (the version the requesting device already has) is checked like an expired
// one. With page set and no list to serve, only the page is read, and not cached.
func (c *Rows) read(ctx context.Context, uid string, has int64, page *conversation.Query) (list conversation.ListRead, large bool, err error) {
	start := c.opts.Now()
	if c.opts.MaxAge > 0 {
		if e, ok := c.fresh(uid, start); ok && e.version >= has {
			c.opts.Metrics.rows.WithLabelValues("memory").Inc()
			return e.list(conversation.Served{AsOf: e.checked}), e.large, nil
		}
	}
	version, err := c.src.UserVersion(ctx, uid)
	if err != nil {
		list, err = c.outage(uid, err)
		return list, false, err // the outage path never serves a large list (lastKnown)
	}
	c.mu.Lock()
	if el, ok := c.index[uid]; ok {
		if e := el.Value.(*userRows); e.version == version && (!e.large || c.derives) {
			e.checked = start
			c.lru.MoveToFront(el)
			list, large := e.list(conversation.Served{}), e.large
			c.mu.Unlock()
			c.opts.Metrics.rows.WithLabelValues("checked").Inc()
			return list, large, nil
		}
	}
	c.mu.Unlock()
	var rows []conversation.Row

	loadStart := time.Now()
	load := c.src.UserRows
	if c.derives {
		load = c.large.RawUserRows
	}
	pager, paged := c.src.(PageSource)
	if paged && page != nil {
		if c.derives {
			rows, version, err = pager.RawUserRowsPage(ctx, *page)
		} else {
			rows, version, err = pager.UserRowsPage(ctx, *page)
		}
		if err != nil {
			list, err = c.outage(uid, err)
			return list, false, err
		}
		c.opts.Metrics.load.WithLabelValues("rows_page").Observe(time.Since(loadStart).Seconds())
		c.opts.Metrics.rows.WithLabelValues("page").Inc()
		return conversation.ListRead{Rows: rows, Version: version}, followsAny(rows), nil
	}
	rows, version, err = load(ctx, uid)
	if err != nil {
		list, err = c.outage(uid, err)
		return list, false, err
	}
	c.opts.Metrics.load.WithLabelValues("rows").Observe(time.Since(loadStart).Seconds())
	c.opts.Metrics.rows.WithLabelValues("loaded").Inc()
	large = followsAny(rows)
	if len(rows) <= c.opts.MaxRowsPerUser {
		c.put(&userRows{uid: uid, version: version, checked: start, rows: rows, large: large})
	}
	return conversation.ListRead{Rows: rows, Version: version}, large, nil
}

// outage answers from the cached list when the source failed for being unreachable and the list is
// not known stale (lastKnown); otherwise it returns err.
func (c *Rows) outage(uid string, err error) (conversation.ListRead, error) {
	if !unreachable(err) {
		return conversation.ListRead{}, err
	}
	e, ok := c.lastKnown(uid)
	if !ok {
		return conversation.ListRead{}, err
	}
	c.opts.Metrics.rows.WithLabelValues("outage").Inc()
	return e.list(conversation.Served{AsOf: e.checked, Outage: true}), nil
}

// list is the cached list as a read served as said.
func (e *userRows) list(served conversation.Served) conversation.ListRead {
	return conversation.ListRead{Rows: e.rows, Version: e.version, Served: served}
}

// fresh returns the cached list of uid when it may be served without asking the database.
func (c *Rows) fresh(uid string, now time.Time) (userRows, bool) {
	return c.unannounced(uid, true, func(e *userRows) bool {
		return (!e.large || c.derives) && now.Sub(e.checked) < c.opts.MaxAge
	})
}

// unannounced returns uid's cached list when no announcement made it stale (its version is at least
// the highest announced, and the announcements were not forgotten since it was checked) and accept
// takes it; a list returned is marked recently used when touch is set.
func (c *Rows) unannounced(uid string, touch bool, accept func(*userRows) bool) (userRows, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.index[uid]
	if !ok {
		return userRows{}, false
	}
	e := el.Value.(*userRows)
	if c.announced.newer(uid, e.version) || !e.checked.After(c.checkedBefore) || !accept(e) {
		return userRows{}, false
	}
	if touch {
		c.lru.MoveToFront(el)
	}
	return *e, true
}

// put stores e unless a newer list of the user is already there, and evicts the least recently used
// lists over MaxUsers or MaxRows.
func (c *Rows) put(e *userRows) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.index[e.uid]; ok {
		old := el.Value.(*userRows)
		if old.version > e.version {
			return // a concurrent request stored a newer snapshot
		}
		c.rows += len(e.rows) - len(old.rows)
		el.Value = e
		c.lru.MoveToFront(el)
	} else {
		c.index[e.uid] = c.lru.PushFront(e)
		c.rows += len(e.rows)
	}
	for c.lru.Len() > 1 && (c.lru.Len() > c.opts.MaxUsers || c.rows > c.opts.MaxRows) {
		last := c.lru.Back()
		c.lru.Remove(last)
		gone := last.Value.(*userRows)
		delete(c.index, gone.uid)
		c.rows -= len(gone.rows)
	}
	c.opts.Metrics.held.WithLabelValues("lists").Set(float64(c.lru.Len()))
	c.opts.Metrics.held.WithLabelValues("rows").Set(float64(c.rows))
}

// followsAny reports whether rows hold a conversation of a large channel.
func followsAny(rows []conversation.Row) bool {
	for i := range rows {
		if rows[i].Follows {
			return true
		}
	}
	return false
}

// Refresh revalidates, in bulk, every cached list checked more than MaxAge/2 ago: one query per few
// hundred users instead of one per user when each list's MaxAge runs out under traffic. A list whose
// version is unchanged counts as checked at the start of the call; one that moved is reloaded by its
// next request. With MaxAge 0 (no change feed) it does nothing: every request checks anyway. Run it
// every MaxAge/4 or so. Errors are the source's; nothing is changed then.
func (c *Rows) Refresh(ctx context.Context) error {
	if c.opts.MaxAge <= 0 {
		return nil
	}
	start := c.opts.Now()
	due := func() []string {
		var uids []string
		for uid, el := range c.index {
			if e := el.Value.(*userRows); (!e.large || c.derives) && start.Sub(e.checked) > c.opts.MaxAge/2 {
				uids = append(uids, uid) // without a LargeSource, large lists are read afresh by every request
			}
		}
		return uids
	}
	return refresh(ctx, &c.mu, c.opts.Metrics, "rows_bulk", due, c.src.UserVersions, func(uids []string, versions map[string]int64) {
		for _, uid := range uids {
			el, ok := c.index[uid]
			if !ok {
				continue
			}
			if e := el.Value.(*userRows); e.version == versions[uid] {
				if start.After(e.checked) {
					e.checked = start
				}
			} else if !c.announced.full() {
				c.announced.record(uid, versions[uid]) // moved without an announcement: reload on the next request
			}
		}
		c.opts.Metrics.rows.WithLabelValues("refreshed").Add(float64(len(uids)))
	})
}
