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
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/convsync/conversations/internal/changefeed"
	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/internal/httpapi"
	"github.com/convsync/conversations/internal/kafkaconn"
	"github.com/convsync/conversations/internal/mysql"
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

	reg := prometheus.NewRegistry()
	if err := errors.Join(
		reg.Register(collectors.NewGoCollector()),
		reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})),
	); err != nil {
		return fmt.Errorf("register runtime metrics: %w", err)
	}

	// The change feed (optional): follow it to keep cached lists and recents current without reading the
	// database, and announce this replica's own mutations on it. A committed mutation also updates this
	// replica's caches at once (they are set before the server starts, so before any commit).
	kc, err := kafkaconn.New(cfg.Kafka)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var rows *readcache.Rows
	var recentsCache *readcache.Recents
	var largeCache *readcache.Large
	var follower *changefeed.Follower
	var publish func(context.Context, conversation.Changes)
	maxAge := time.Duration(0) // without the feed, every sync checks the user's version
	if len(cfg.KafkaBrokers) > 0 && cfg.SyncCacheUsers > 0 {
		// The feed's topic must keep an acknowledged announcement through the loss of a broker (contract
		// §6); a cluster that cannot be asked yet is not a reason to refuse: the API then reads more.
		checkCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := topicadmin.Check(checkCtx, kc, cfg.KafkaBrokers, cfg.Replication, log, cfg.KafkaChangesTopic)
		cancel()
		if errors.Is(err, topicadmin.ErrNotDurable) {
			return fmt.Errorf("change feed: %w", err)
		}
		if err != nil {
			log.Warn("change feed replication not checked: the cluster cannot be asked yet", "error", err.Error())
		}
		follower, err = changefeed.NewFollower(ctx, kc, cfg.KafkaBrokers, cfg.KafkaChangesTopic, log, reg)
		if err != nil {
			log.Warn("change feed unavailable: every sync checks the database", "error", err.Error())
		} else {
			maxAge = cfg.SyncCacheMaxAge
		}
		changes, err := changefeed.NewPublisher(kc, cfg.KafkaBrokers, cfg.KafkaChangesTopic, log, reg, changefeed.PublisherOptions{})
		if err != nil {
			return fmt.Errorf("change feed: %w", err)
		}
		defer func() {
			if err := changes.Close(); err != nil {
				log.Warn("change feed publisher close", "error", err.Error())
			}
		}()
		publish = changes.AfterCommit
	}
	var router *replica.Router
	notify := func(c conversation.Changes) {
		if router != nil {
			for uid, v := range c.Versions {
				router.Notify(uid, v)
			}
		}
		if rows != nil {
			for uid, v := range c.Versions {
				rows.Notify(uid, v)
			}
		}
		if recentsCache != nil {
			recentsCache.Apply(c.Windows)
		}
		// After the users: a list a commit rewrote must be stale before the channel state that commit
		// reached can be derived with it.
		if largeCache != nil {
			largeCache.Apply(c.Channels)
		}
	}
	store, err := mysql.Open(cfg.MySQLDSN, mysql.Options{MaxOpenConns: cfg.MySQLMaxOpenConns, TLS: cfg.MySQLTLS,
		OnCommit: func(ctx context.Context, c conversation.Changes) {
			notify(c)
			if publish != nil {
				publish(ctx, c)
			}
		}})
	if err != nil {
		return err
	}
	defer store.Close()
	pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if err := store.Ping(pingCtx); err != nil {
		// Not fatal: the database may start after us. /readyz answers 503 until it answers.
		log.Warn("database not reachable yet", "error", err.Error())
	}
	cancel()

	// Sync reads conversation lists through the cache (size 0 turns it off).
	cacheMetrics, err := readcache.NewMetrics(reg)
	if err != nil {
		return fmt.Errorf("register cache metrics: %w", err)
	}
	// Database replicas answer per-user reads when they are current enough (internal/replica); only with
	// the feed, whose announcements are what their answers are checked against.
	var rowsCacheSource readcache.RowsSource = store
	if len(cfg.ReadDSNs) > 0 && maxAge > 0 {
		var named []replica.Named
		addrs := readAddrs(cfg.ReadDSNs)
		for i, d := range cfg.ReadDSNs {
			rs, err := mysql.Open(d, mysql.Options{MaxOpenConns: cfg.MySQLMaxOpenConns, TLS: cfg.MySQLTLS})
			if err != nil {
				return fmt.Errorf("MYSQL_READ_DSNS: %w", err)
			}
			defer rs.Close()
			named = append(named, replica.Named{Name: addrs[i], DB: rs})
		}
		router, err = replica.New(store, named, replica.Options{MaxLag: cfg.MaxReplicaLag, Wait: cfg.ReplicaWait,
			ReadTimeout: cfg.ReplicaReadTimeout, Registry: reg, Logger: log})
		if err != nil {
			return err
		}
		routerCtx, stopRouter := context.WithCancel(ctx)
		var routing sync.WaitGroup
		routing.Go(func() { router.Run(routerCtx) })
		defer func() {
			stopRouter()
			routing.Wait()
		}()
		rowsCacheSource = router
	} else if len(cfg.ReadDSNs) > 0 {
		log.Warn("change feed unavailable: MYSQL_READ_DSNS not used, the primary answers every read")
	}
	var rowsSource httpapi.Rows = store
	if cfg.SyncCacheUsers > 0 {
		// Large channels' states are held only with the feed: its announcements keep them current, and
		// SYNC_CACHE_MAX_AGE bounds a lost one. Without it each sync reads them.
		if maxAge > 0 {
			largeCache = readcache.NewLarge(store, readcache.LargeOptions{MaxAge: maxAge, Metrics: cacheMetrics})
		}
		rows = readcache.NewRows(rowsCacheSource, readcache.RowsOptions{MaxUsers: cfg.SyncCacheUsers, MaxRows: cfg.SyncCacheRows, MaxAge: maxAge, Metrics: cacheMetrics,
			Large: largeCache})
		rowsSource = rows
	}
	// Recents come from the cache only with the feed: its announcements of late messages and prunes keep
	// cached stretches exact, and SYNC_CACHE_MAX_AGE bounds a lost one. Without the feed the API serves
	// nothing that could be stale.
	var recents httpapi.Recents = store
	if maxAge > 0 && cfg.RecentsCacheBytes > 0 {
		recentsCache = readcache.NewRecents(store, readcache.RecentsOptions{MaxBytes: cfg.RecentsCacheBytes, MaxAge: maxAge,
			Encode: httpapi.EncodeRecent, Metrics: cacheMetrics})
		recents = recentsCache
	}
	if follower != nil && rows != nil {
		followCtx, stopFollowing := context.WithCancel(ctx)
		var following sync.WaitGroup
		following.Go(func() { follower.Run(followCtx, notify) })
		// Revalidate what the caches hold in bulk before SYNC_CACHE_MAX_AGE runs out, rather than one
		// database read per list and per stretch as requests find them expired.
		following.Go(func() { refreshCaches(followCtx, maxAge/4, log, rows, recentsCache, largeCache) })
		defer func() {
			stopFollowing()
			following.Wait()
		}()
	}
	handler, err := httpapi.New(store, rowsSource, recents, httpapi.Options{
		Registry:         reg,
		Token:            cfg.Token,
		MaxMsgCount:      cfg.SyncMaxMsgCount,
		MaxConversations: cfg.SyncMaxConversations,
		Logger:           log,
		Replicas:         replicaStatus(router),
	})
	if err != nil {
		return err
	}
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

// refreshCaches revalidates the caches every interval until ctx ends. A failure is logged: the requests
// then revalidate what they need themselves.
func refreshCaches(ctx context.Context, interval time.Duration, log *slog.Logger, rows *readcache.Rows, recents *readcache.Recents, large *readcache.Large) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := rows.Refresh(ctx); err != nil && ctx.Err() == nil {
			log.Warn("conversation list refresh failed", "error", err.Error())
		}
		if large != nil {
			if err := large.Refresh(ctx); err != nil && ctx.Err() == nil {
				log.Warn("large channels refresh failed", "error", err.Error())
			}
		}
		if recents == nil {
			continue
		}
		if err := recents.Refresh(ctx); err != nil && ctx.Err() == nil {
			log.Warn("recents refresh failed", "error", err.Error())
		}
	}
}

// replicaStatus is what /readyz shows of the replicas (nil without them).
func replicaStatus(r *replica.Router) func() any {
	if r == nil {
		return nil
	}
	return func() any { return r.Status() }
}
