// Command api serves the conversation API of contract §2 (WuKongIM-compatible sync, setUnread, delete,
// clearUnread) from the read model in MySQL, with /healthz, /readyz and /metrics. It stops gracefully
// on SIGTERM or SIGINT: in-flight requests get SHUTDOWN_TIMEOUT to finish.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/convsync/conversations/internal/changefeed"
	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/httpapi"
	"github.com/convsync/conversations/internal/kafkaconn"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/probes"
	"github.com/convsync/conversations/internal/readcache"
	"github.com/convsync/conversations/internal/replica"
	"github.com/convsync/conversations/internal/topicadmin"
)

func main() {
	// gin keeps its mode in a package variable, so only main sets it; debug mode only adds console noise.
	gin.SetMode(gin.ReleaseMode)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, env.ToMap(os.Environ()), os.Stdout)
	stop()
	if err != nil {
		slog.New(slog.NewJSONHandler(os.Stdout, nil)).Error("api failed", "error", err.Error())
		os.Exit(1)
	}
}

// HTTP server limits. Reads are small JSON bodies; writes allow a full sync of a slow client.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 15 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 120 * time.Second
	maxHeaderBytes    = 64 << 10
)

// What run wires together, checked at compile time rather than found missing at run time: the store
// serves sync directly or as the caches' source, and readcache.Rows finds the optional LargeSource by a
// type assertion, which a renamed method would silently turn off.
var (
	_ httpapi.Store               = (*mysql.Store)(nil)
	_ httpapi.Rows                = (*mysql.Store)(nil)
	_ httpapi.Rows                = (*readcache.Rows)(nil)
	_ httpapi.Recents             = (*mysql.Store)(nil)
	_ httpapi.Recents             = (*readcache.Recents)(nil)
	_ readcache.RowsSource        = (*mysql.Store)(nil)
	_ readcache.LargeSource       = (*mysql.Store)(nil)
	_ readcache.PageSource        = (*mysql.Store)(nil)
	_ readcache.RecentsSource     = (*mysql.Store)(nil)
	_ readcache.LargeStatesSource = (*mysql.Store)(nil)
	_ readcache.RowsSource        = (*replica.Router)(nil)
	_ readcache.LargeSource       = (*replica.Router)(nil)
	_ readcache.PageSource        = (*replica.Router)(nil)
	_ readcache.FloorSource       = (*replica.Router)(nil)
)

// run serves until ctx is done, configured by environ (the process environment in main), logging JSON
// lines to stdout. It returns an error when the configuration is invalid, the port cannot be bound, the
// server fails, or the shutdown outlasts SHUTDOWN_TIMEOUT.
func run(ctx context.Context, environ map[string]string, stdout io.Writer) error {
	cfg, err := loadConfig(environ)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: cfg.LogLevel}))
	mysql.RouteDriverLog(log)

	reg, err := probes.NewRegistry()
	if err != nil {
		return err
	}
	if cfg.VitessShards != "" {
		return serveSharded(ctx, cfg, log, reg)
	}
	feed, err := openFeed(ctx, cfg, log, reg)
	if err != nil {
		return err
	}
	defer feed.close()
	// A committed mutation updates this replica's caches at once, and is announced to the others.
	cs := &caches{}
	store, err := mysql.Open(cfg.MySQLDSN, mysql.Options{MaxOpenConns: cfg.MySQLMaxOpenConns, TLS: cfg.MySQLTLS,
		OnCommit: func(ctx context.Context, c conversation.Changes) {
			cs.apply(c)
			if feed.publish != nil {
				feed.publish(ctx, c)
			}
		}})
	if err != nil {
		return err
	}
	defer store.Close()
	pingOrWarn(ctx, store, log)

	// The router and the caches are set before the server starts, so before any commit reaches cs.apply.
	var rowsCacheSource readcache.RowsSource = store
	if len(cfg.ReadDSNs) > 0 && feed.maxAge > 0 {
		stop, err := cs.route(ctx, cfg, store, reg, log)
		if err != nil {
			return err
		}
		defer stop()
		rowsCacheSource = cs.router
	} else if len(cfg.ReadDSNs) > 0 {
		log.Warn("change feed unavailable: MYSQL_READ_DSNS not used, the primary answers every read")
	}
	rows, recents, err := cs.build(cfg, store, rowsCacheSource, reg, feed.maxAge)
	if err != nil {
		return err
	}
	if feed.follower != nil && cs.rows != nil {
		stop := cs.follow(ctx, feed.follower, feed.maxAge, log)
		defer stop()
	}
	opts := apiOptions(cfg, reg, log)
	opts.Replicas = replicaStatus(cs.router)
	handler, err := httpapi.New(store, rows, recents, opts)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, handler, log)
}

// pingOrWarn asks the database once at start. Not fatal: the database may start after us; /readyz
// answers 503 until it answers.
func pingOrWarn(ctx context.Context, db interface{ Ping(context.Context) error }, log *slog.Logger) {
	pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := db.Ping(pingCtx); err != nil {
		log.Warn("database not reachable yet", "error", err.Error())
	}
}

// apiOptions are the handler's settings from the configuration, alike however the API is served.
func apiOptions(cfg config, reg *prometheus.Registry, log *slog.Logger) httpapi.Options {
	return httpapi.Options{
		Registry:         reg,
		Token:            cfg.Token,
		MaxMsgCount:      cfg.SyncMaxMsgCount,
		MaxConversations: cfg.SyncMaxConversations,
		Logger:           log,
	}
}

// feed is the change feed (optional): followed to keep cached lists and recents current without
// reading the database, and written with this replica's own mutations.
type feed struct {
	follower *changefeed.Follower // nil: not followed (no brokers, no cache, or the broker unreachable)
	publish  func(context.Context, conversation.Changes)
	close    func()
	// maxAge is how long the caches may serve from memory: SYNC_CACHE_MAX_AGE while the feed is
	// followed, 0 otherwise (every sync checks the user's version).
	maxAge time.Duration
}

func openFeed(ctx context.Context, cfg config, log *slog.Logger, reg prometheus.Registerer) (feed, error) {
	f := feed{close: func() {}}
	kc, err := kafkaconn.New(cfg.Kafka)
	if err != nil {
		return f, fmt.Errorf("config: %w", err)
	}
	if len(cfg.KafkaBrokers) == 0 || cfg.SyncCacheUsers <= 0 {
		return f, nil
	}
	// The feed's topic must keep an acknowledged announcement through the loss of a broker (contract
	// §6); a cluster that cannot be asked yet is not a reason to refuse: the API then reads more.
	checkCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err = topicadmin.Check(checkCtx, kc, cfg.KafkaBrokers, cfg.Replication, log, cfg.KafkaChangesTopic)
	cancel()
	if errors.Is(err, topicadmin.ErrNotDurable) {
		return f, fmt.Errorf("change feed: %w", err)
	}
	if err != nil {
		log.Warn("change feed replication not checked: the cluster cannot be asked yet", "error", err.Error())
	}
	f.follower, err = changefeed.NewFollower(ctx, kc, cfg.KafkaBrokers, cfg.KafkaChangesTopic, log, reg)
	if err != nil {
		log.Warn("change feed unavailable: every sync checks the database", "error", err.Error())
	} else {
		f.maxAge = cfg.SyncCacheMaxAge
	}
	changes, err := changefeed.NewPublisher(kc, cfg.KafkaBrokers, cfg.KafkaChangesTopic, log, reg, changefeed.PublisherOptions{})
	if err != nil {
		return f, fmt.Errorf("change feed: %w", err)
	}
	f.publish = changes.AfterCommit
	f.close = func() {
		if err := changes.Close(); err != nil {
			log.Warn("change feed publisher close", "error", err.Error())
		}
	}
	return f, nil
}

// caches are the API's in-memory reads, and the router that sends per-user reads to database
// replicas; a nil one is off.
type caches struct {
	router  *replica.Router
	rows    *readcache.Rows
	recents *readcache.Recents
	large   *readcache.Large
}

// route opens the database replicas of MYSQL_READ_DSNS and routes per-user reads to one that is current
// enough for the user, else the primary (internal/replica); only with the feed, whose announcements
// are what their answers are checked against. stop ends the router and closes the replicas.
func (cs *caches) route(ctx context.Context, cfg config, primary *mysql.Store, reg prometheus.Registerer, log *slog.Logger) (stop func(), err error) {
	var named []replica.Named
	var opened []*mysql.Store
	closeAll := func() {
		for _, rs := range opened {
			rs.Close()
		}
	}
	addrs := readAddrs(cfg.ReadDSNs)
	for i, d := range cfg.ReadDSNs {
		rs, err := mysql.Open(d, mysql.Options{MaxOpenConns: cfg.MySQLMaxOpenConns, TLS: cfg.MySQLTLS})
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("MYSQL_READ_DSNS: %w", err)
		}
		opened = append(opened, rs)
		named = append(named, replica.Named{Name: addrs[i], DB: rs})
	}
	router, err := replica.New(primary, named, replica.Options{MaxLag: cfg.MaxReplicaLag, Wait: cfg.ReplicaWait,
		ReadTimeout: cfg.ReplicaReadTimeout, Registry: reg, Logger: log})
	if err != nil {
		closeAll()
		return nil, err
	}
	cs.router = router
	routerCtx, stopRouter := context.WithCancel(ctx)
	var routing sync.WaitGroup
	routing.Go(func() { router.Run(routerCtx) })
	return func() {
		stopRouter()
		routing.Wait()
		closeAll()
	}, nil
}

// build creates the caches the configuration asks for, lists read through src, and returns what sync
// reads through: the caches, or the store itself where a cache is off.
func (cs *caches) build(cfg config, store *mysql.Store, src readcache.RowsSource, reg prometheus.Registerer, maxAge time.Duration) (httpapi.Rows, httpapi.Recents, error) {
	metrics, err := readcache.NewMetrics(reg)
	if err != nil {
		return nil, nil, fmt.Errorf("register cache metrics: %w", err)
	}
	var rows httpapi.Rows = store
	if cfg.SyncCacheUsers > 0 { // size 0 turns the lists' cache off
		// Large channels' states are held only with the feed: its announcements keep them current, and
		// SYNC_CACHE_MAX_AGE bounds a lost one. Without it each sync reads them.
		if maxAge > 0 {
			cs.large = readcache.NewLarge(store, readcache.LargeOptions{MaxAge: maxAge, Metrics: metrics})
		}
		cs.rows = readcache.NewRows(src, readcache.RowsOptions{MaxUsers: cfg.SyncCacheUsers, MaxRows: cfg.SyncCacheRows,
			MaxAge: maxAge, Metrics: metrics, Large: cs.large})
		rows = cs.rows
	}
	// Recents come from the cache only with the feed: its announcements of late messages and prunes keep
	// cached stretches exact, and SYNC_CACHE_MAX_AGE bounds a lost one. Without the feed the API serves
	// nothing that could be stale.
	var recents httpapi.Recents = store
	if maxAge > 0 && cfg.RecentsCacheBytes > 0 {
		cs.recents = readcache.NewRecents(store, readcache.RecentsOptions{MaxBytes: cfg.RecentsCacheBytes, MaxAge: maxAge,
			Encode: httpapi.EncodeRecent, Metrics: metrics})
		recents = cs.recents
	}
	return rows, recents, nil
}

// apply brings the router and the caches up to date with committed changes, announced on the feed or
// committed by this replica.
func (cs *caches) apply(c conversation.Changes) {
	for uid, v := range c.Versions {
		if cs.router != nil {
			cs.router.Notify(uid, v)
		}
		if cs.rows != nil {
			cs.rows.Notify(uid, v)
		}
	}
	if cs.recents != nil {
		cs.recents.Apply(c.Windows)
	}
	// After the users: a list a commit rewrote must be stale before the channel state that commit
	// reached can be derived with it.
	if cs.large != nil {
		cs.large.Apply(c.Channels)
	}
}

// follow applies the feed to the caches and revalidates them in bulk before SYNC_CACHE_MAX_AGE runs
// out (rather than one database read per list and per stretch as requests find them expired), until
// the returned stop is called; stop waits for both to end.
func (cs *caches) follow(ctx context.Context, f *changefeed.Follower, maxAge time.Duration, log *slog.Logger) (stop func()) {
	followCtx, cancel := context.WithCancel(ctx)
	var following sync.WaitGroup
	following.Go(func() { f.Run(followCtx, cs.apply) })
	following.Go(func() { readcache.RefreshEvery(followCtx, maxAge/4, log, cs.rows, cs.large, cs.recents) })
	return func() {
		cancel()
		following.Wait()
	}
}

// serve runs the HTTP server until ctx is done, then shuts it down within SHUTDOWN_TIMEOUT.
func serve(ctx context.Context, cfg config, handler http.Handler, log *slog.Logger) error {
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("api listening", "addr", ln.Addr().String(), "config", cfg)

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "timeout", cfg.ShutdownTimeout.String())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("api stopped")
	return nil
}

// replicaStatus is what /readyz shows of the replicas (nil without them).
func replicaStatus(r *replica.Router) func() any {
	if r == nil {
		return nil
	}
	return func() any { return r.Status() }
}
