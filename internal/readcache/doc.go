// Package readcache keeps what sync reads in memory, in front of the store. Rows caches users'
// conversation lists: without the change feed each sync checks the user's version (one primary-key read)
// and answers what a read of the rows at that moment would; with it a list is served until a newer version is announced, so it is as current as
// the announcements this replica has received, and at most SYNC_CACHE_MAX_AGE old if one was lost.
// Recents caches stretches of channels' windows, kept exact by the same announcements (late messages and
// prunes), with the same age bound.
package readcache

import "time"

// Defaults of the caches' options (and of cmd/api's SYNC_CACHE_USERS, SYNC_CACHE_ROWS,
// RECENTS_CACHE_BYTES and SYNC_CACHE_MAX_AGE).
const (
	DefaultMaxUsers     = 100_000
	DefaultMaxRows      = 1_000_000
	DefaultRecentsBytes = 64 << 20
	DefaultMaxAge       = 5 * time.Second
)
