// Package readcache keeps what sync reads in memory, in front of the store, without ever serving a
// stale conversation list: Rows checks the user's version (one primary-key read) before it serves a
// cached list, and Recents serves only messages, which never change.
package readcache
