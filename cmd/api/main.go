// Command api serves the conversation API of contract §2 (WuKongIM-compatible sync, setUnread, delete,
// clearUnread) from the read model in MySQL, with /healthz, /readyz and /metrics. It stops gracefully
// on SIGTERM or SIGINT: in-flight requests get SHUTDOWN_TIMEOUT to finish.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/convsync/conversations/internal/httpapi"
	"github.com/convsync/conversations/internal/mysql"
	"github.com/convsync/conversations/internal/readcache"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx)
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

func run(ctx context.Context) error {
	cfg, err := loadConfig(nil)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: cfg.LogLevel}))
	mysql.RouteDriverLog(log)

	store, err := mysql.Open(cfg.MySQLDSN, mysql.Options{MaxOpenConns: cfg.MySQLMaxOpenConns})
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

	// Sync reads through the caches: conversation lists checked against the user's version, and
	// channels' newest messages, which never change. Size 0 turns a cache off.
	var rows httpapi.Rows = store
	if cfg.SyncCacheUsers > 0 {
		rows = readcache.NewRows(store, readcache.RowsOptions{MaxUsers: cfg.SyncCacheUsers})
	}
	var recents httpapi.Recents = store
	if cfg.RecentsCacheBytes > 0 {
		recents = readcache.NewRecents(store, readcache.RecentsOptions{MaxBytes: cfg.RecentsCacheBytes, TTL: cfg.RecentsCacheTTL})
	}
	handler, err := httpapi.New(store, rows, recents, httpapi.Options{
		Token:            cfg.Token,
		MaxMsgCount:      cfg.SyncMaxMsgCount,
		MaxConversations: cfg.SyncMaxConversations,
		Logger:           log,
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
