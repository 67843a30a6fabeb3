// Package httpapi is the HTTP API of contract §2, wire-compatible with WuKongIM's recent-conversations
// API: conversation sync and the setUnread, delete and clearUnread mutations, with health, readiness and
// Prometheus metrics beside them. gin lives only in this package.
package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/convsync/conversations/internal/conversation"
)

// Store is what the mutations and the readiness probe need of the read model; *mysql.Store implements it.
type Store interface {
	// Update applies change to one conversation and bumps its version when a field changed; the error
	// wraps conversation.ErrNotFound when there is no such conversation.
	Update(ctx context.Context, key conversation.ConvKey,
		change func(row conversation.Row, nowMS int64) (conversation.Row, bool)) (conversation.Row, error)
	// Ping reports whether the database answers.
	Ping(ctx context.Context) error
}

// Rows reads all of a user's conversations, tombstones included, with the user's version, in a bounded
// number of queries; sync selects among them (conversation.Select), in one place whatever serves them.
// How the list was served travels with it (conversation.Served): a list served from memory gives large
// channels' conversations versions taken when it was last known current, and an answer from the outage
// path is marked. *mysql.Store implements it; so does readcache.Rows in front of it.
//
// ReadList returns q.UID's list; for a paged incremental sync (q.Version and q.Limit set) it may return
// only the rows conversation.Select needs to answer q, so that a page costs about a page of rows read.
type Rows interface {
	ReadList(ctx context.Context, q conversation.Query) (conversation.ListRead, error)
}

// Recents reads messages out of channel windows: for each range, its recents as
// conversation.PickRecents defines them (the newest Count messages with After < message_seq <= UpTo,
// newest first), keyed by channel, and how they were served. *mysql.Store implements it; so does
// readcache.Recents in front of it. One call serves a whole sync, so an implementation can batch its
// reads.
type Recents interface {
	// ReadRecents reads for uid's sync: a read model sharded by user reads the windows from that
	// user's shard, whose copy of them its rows were written against (docs/proofs.md, "Sharded by user").
	ReadRecents(ctx context.Context, uid string, ranges []conversation.SeqRange) (conversation.RecentsRead, error)
}

// Defaults of Options (and of cmd/api's SYNC_MAX_MSG_COUNT and SYNC_MAX_CONVERSATIONS).
const (
	DefaultMaxMsgCount      = 100
	DefaultMaxConversations = 1000 // as WuKongIM
)

// Options configure the handler. The zero value of each field picks the default named on it.
type Options struct {
	// Token, when set, is the bearer token every API call must present (health and metrics need none).
	Token string
	// MaxMsgCount caps a sync's msg_count (default 100).
	MaxMsgCount int
	// MaxConversations caps how many conversations a full sync returns (default 1000).
	MaxConversations int
	// RequestTimeout bounds the store work of one request (default 10s).
	RequestTimeout time.Duration
	// Logger receives the access log and server faults (default: discard).
	Logger *slog.Logger
	// Replicas, when set, is the state of the database replicas sync reads (lag, usable), shown by
	// /readyz; a replica that is behind or down does not make the API unready: the primary answers.
	Replicas func() any
	// Registry receives the API's metrics and is what /metrics serves (default: a fresh registry with
	// the Go and process collectors).
	Registry *prometheus.Registry
}

// api holds the handlers' dependencies.
type api struct {
	store   Store
	rows    Rows
	recents Recents
	opts    Options
	log     *slog.Logger
	metrics *metrics
}

// New returns the API handler with every route of contract §2: mutations and readiness go to store,
// sync reads rows and recents (the store itself, or caches in front of it). It fails only when the
// metrics cannot be registered (a registry that already holds them).
func New(store Store, rows Rows, recents Recents, opts Options) (http.Handler, error) {
	if opts.MaxMsgCount <= 0 {
		opts.MaxMsgCount = DefaultMaxMsgCount
	}
	if opts.MaxConversations <= 0 {
		opts.MaxConversations = DefaultMaxConversations
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
		if err := errors.Join(
			opts.Registry.Register(collectors.NewGoCollector()),
			opts.Registry.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})),
		); err != nil {
			return nil, err
		}
	}
	m, err := newMetrics(opts.Registry)
	if err != nil {
		return nil, err
	}
	a := &api{store: store, rows: rows, recents: recents, opts: opts, log: opts.Logger, metrics: m}

	// gin's mode is process-wide: cmd/api's main sets it, not this constructor.
	r := gin.New()
	r.HandleMethodNotAllowed = true
	// A redirect would answer a POST with a 301/307 and no JSON body: unknown paths are a plain 404.
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	if err := r.SetTrustedProxies(nil); err != nil {
		return nil, err
	}
	r.Use(a.observe, a.recoverPanics)
	r.NoRoute(a.handle(func(*gin.Context) error { return errNotFound }))
	r.NoMethod(a.handle(func(*gin.Context) error { return errMethodNotAllowed }))

	r.GET("/healthz", a.healthz)
	r.GET("/readyz", a.readyz)
	r.GET("/metrics", gin.WrapH(promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{})))

	conv := r.Group("/")
	if opts.Token != "" {
		conv.Use(requireToken(opts.Token))
	}
	conv.POST("/conversation/sync", a.handle(a.sync))
	conv.POST("/conversations/setUnread", a.handle(a.setUnread))
	conv.POST("/conversations/delete", a.handle(a.delete))
	conv.POST("/conversations/clearUnread", a.handle(a.clearUnread))
	return r, nil
}
