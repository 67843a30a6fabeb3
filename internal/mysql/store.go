// Package mysql is the read model's store on MySQL 8.x, MariaDB 10.11 or TiDB, through sqlx. Every SQL
// statement of the service lives in this package, next to the method that runs it.
//
// Transactions run at READ COMMITTED: locking reads then take no gap locks, so batches that lock rows in
// sorted order cannot deadlock on the gaps between them. Deadlocks and lock-wait timeouts that happen
// anyway are retried, whole transaction at a time.
package mysql

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jmoiron/sqlx"
	"github.com/pressly/goose/v3"

	"github.com/convsync/conversations/internal/conversation"
	"github.com/convsync/conversations/migrations"
)

// DefaultMaxOpenConns is Options.MaxOpenConns's default (and cmd/api's MYSQL_MAX_OPEN_CONNS).
const DefaultMaxOpenConns = 32

// Options tune a Store. The zero value of each field picks the default named on it.
type Options struct {
	// RecentsWindow is how many of a channel's newest message seqs are kept for recents (default
	// conversation.DefaultRecentsWindow).
	RecentsWindow int64
	// MaxOpenConns bounds the connection pool (default 32).
	MaxOpenConns int
	// ConflictRetries is how often a transaction that lost a deadlock or lock wait is retried (default 8).
	ConflictRetries int
	// Now is the clock versions are taken from (default time.Now).
	Now func() time.Time
	// OnCommit, when set, is called after every transaction that changed conversation rows or a
	// channel's window other than by growing it at the top has committed, with what changed: readers that
	// cache lists and recents learn of changes from it (the change feed). It runs on the committing
	// goroutine, so it must not block; it cannot undo or fail the commit.
	OnCommit func(ctx context.Context, changes conversation.Changes)
	// TLS, when it names a CA file, makes every connection TLS, verified against that CA.
	TLS TLS
	// LargeChannelMembers is the stored membership at which a group-like channel fans out at read time
	// (contract §5); it stops below half of it. 0 (the default) keeps per-member fan-out everywhere and
	// turns large channels back into per-member rows as batches touch their membership.
	LargeChannelMembers int
	// LargeChannelLeave is the membership below which a large channel stops being large (default half
	// of LargeChannelMembers; at most LargeChannelMembers).
	LargeChannelLeave int
	// Shard, on a read model sharded by user (Vitess, shard.go), is the shard the DSN targets: batches
	// write the conversation rows and versions of the users it owns only. The zero value owns every user.
	Shard KeyRange
	// OneStatementPerTrip sends each statement of a batch in a round trip of its own. By default a
	// batch's writes travel together, several statements per round trip (the connection allows multiple
	// statements): for a server or proxy that refuses them, and to measure the difference.
	OneStatementPerTrip bool
}

// TLS is how to reach a server that requires TLS with a private CA. Binaries embed it in their
// configuration. A DSN's own tls= parameter (true, skip-verify, preferred) still works when CAFile is
// empty; with CAFile set it is overridden.
type TLS struct {
	// CAFile is a PEM file of the CAs that sign the server's certificate. Default none (the DSN decides).
	CAFile string `env:"MYSQL_TLS_CA_FILE"`
	// CertFile and KeyFile are a PEM client certificate and key, for servers that require X.509
	// authentication. Default none; set both or neither, and only with CAFile.
	CertFile string `env:"MYSQL_TLS_CERT_FILE"`
	KeyFile  string `env:"MYSQL_TLS_KEY_FILE"`
}

// Validate reports what is inconsistent, naming the variables.
func (t TLS) Validate() error {
	var errs []error
	if (t.CertFile == "") != (t.KeyFile == "") {
		errs = append(errs, errors.New("MYSQL_TLS_CERT_FILE and MYSQL_TLS_KEY_FILE: set both or neither"))
	}
	if t.CAFile == "" && t.CertFile != "" {
		errs = append(errs, errors.New("MYSQL_TLS_CERT_FILE: needs MYSQL_TLS_CA_FILE"))
	}
	return errors.Join(errs...)
}

// config is the TLS configuration for a server at addr ("host:port"), nil when no CA file is set.
func (t TLS) config(addr string) (*tls.Config, error) {
	if t.CAFile == "" {
		return nil, nil
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	pem, err := os.ReadFile(t.CAFile)
	if err != nil {
		return nil, fmt.Errorf("MYSQL_TLS_CA_FILE: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("MYSQL_TLS_CA_FILE: %s holds no PEM certificate", t.CAFile)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: host}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("MYSQL_TLS_CERT_FILE/MYSQL_TLS_KEY_FILE: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// Store is the read model. It is safe for concurrent use.
type Store struct {
	db *sqlx.DB
	// multi: statements may share a round trip (Options.OneStatementPerTrip unset).
	multi    bool
	window   int64
	retries  int
	now      func() time.Time
	onCommit func(ctx context.Context, changes conversation.Changes)
	large    conversation.LargeThresholds
	// flavour is MariaDB or MySQL once a replication position was read (replication.go).
	flavour atomic.Int32
	shard   KeyRange
	// vitess is set when the DSN's database is a vtgate target ("conv:-80", "conv@primary"). A
	// transaction then sets no isolation level: through vtgate that becomes a session setting that
	// reserves a tablet connection (and a "transaction_isolation" MariaDB does not know); the
	// tablets' MySQL is configured READ COMMITTED instead.
	vitess bool
}

// Open connects to the database named by dsn (go-sql-driver/mysql format). It does not wait for the
// server: Ping tells whether it answers. The DSN's params are kept; interpolateParams is forced on, so
// each statement is one round trip instead of prepare, execute and close, and multiStatements follows
// Options.OneStatementPerTrip.
func Open(dsn string, opts Options) (*Store, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse MySQL DSN: %w", err)
	}
	cfg.InterpolateParams = true
	// With the values interpolated client-side, several statements can travel in one round trip; the
	// statements are this package's own, their values always escaped by the driver.
	cfg.MultiStatements = !opts.OneStatementPerTrip && !strings.ContainsAny(cfg.DBName, ":@")
	cfg.ParseTime = false
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if tc, err := opts.TLS.config(cfg.Addr); err != nil {
		return nil, err
	} else if tc != nil {
		cfg.TLS = tc
	}
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("mysql connector: %w", err)
	}
	db := sqlx.NewDb(sql.OpenDB(connector), "mysql")
	if opts.MaxOpenConns <= 0 {
		opts.MaxOpenConns = DefaultMaxOpenConns
	}
	db.SetMaxOpenConns(opts.MaxOpenConns)
	db.SetMaxIdleConns(opts.MaxOpenConns)
	db.SetConnMaxLifetime(30 * time.Minute)
	// Vitess (a keyspace name in the DSN) gets one statement per round trip: its tests ran that way.
	vitess := strings.ContainsAny(cfg.DBName, ":@")
	s := &Store{db: db, multi: cfg.MultiStatements, window: opts.RecentsWindow, retries: opts.ConflictRetries,
		now: opts.Now, onCommit: opts.OnCommit, large: conversation.LargeThresholdsOf(opts.LargeChannelMembers), shard: opts.Shard,
		vitess: vitess}
	if opts.LargeChannelLeave > 0 && s.large.Enter > 0 {
		s.large.Leave = min(opts.LargeChannelLeave, s.large.Enter)
	}
	if s.window <= 0 {
		s.window = conversation.DefaultRecentsWindow
	}
	if s.retries <= 0 {
		s.retries = 8
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

// RouteDriverLog sends go-sql-driver's own messages (a dropped connection, say) through log instead of
// plain text on stderr. The driver's logger is process-wide: only a main calls this, once.
func RouteDriverLog(log *slog.Logger) {
	_ = mysql.SetLogger(driverLog{log}) // fails only for a nil logger
}

type driverLog struct{ log *slog.Logger }

func (d driverLog) Print(v ...any) { d.log.Warn("mysql driver", "detail", fmt.Sprint(v...)) }

// Close closes the connection pool.
func (s *Store) Close() error { return s.db.Close() }

// DB returns the underlying pool, for benchmarks that issue the same SQL directly.
func (s *Store) DB() *sqlx.DB { return s.db }

// Ping reports whether the database answers; the error wraps conversation.ErrUnavailable.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("%w: %w", conversation.ErrUnavailable, err)
	}
	return nil
}

// Migrate applies every pending migration of migrations.FS and logs each one. It is safe to run from
// several processes at once only if the database serialises DDL; run it from one place (the migrate
// command) in production.
func (s *Store) Migrate(ctx context.Context, log *slog.Logger) error {
	fsys, err := fs.Sub(migrations.FS, ".")
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(goose.DialectMySQL, s.db.DB, fsys)
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	results, err := p.Up(ctx)
	for _, r := range results {
		log.Info("migration applied", "version", r.Source.Version, "file", r.Source.Path, "duration_ms", r.Duration.Milliseconds())
	}
	if err != nil {
		return fmt.Errorf("apply migrations: %w", translate(err))
	}
	v, err := p.GetDBVersion(ctx)
	if err != nil {
		return fmt.Errorf("read schema version: %w", translate(err))
	}
	log.Info("schema up to date", "version", v)
	return nil
}

// committed reports what a committed transaction changed to the OnCommit hook.
func (s *Store) committed(ctx context.Context, changes conversation.Changes) {
	if s.onCommit != nil && !changes.Empty() {
		s.onCommit(ctx, changes)
	}
}

// nowMS is the store clock in unix milliseconds.
func (s *Store) nowMS() int64 { return s.now().UnixMilli() }

// inTx runs fn in a READ COMMITTED transaction and commits. A deadlock or lock-wait timeout retries the
// whole transaction (fn must be safe to run again); any other error rolls back and is returned,
// translated into the domain's sentinels.
func (s *Store) inTx(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	return s.inTxTimed(ctx, fn, nil)
}

// inTxTimed is inTx telling step (when not nil) how long each begin, commit and retry_wait took.
func (s *Store) inTxTimed(ctx context.Context, fn func(tx *sqlx.Tx) error, step func(string, time.Duration)) error {
	backoff := 5 * time.Millisecond
	for attempt := 0; ; attempt++ {
		err := s.tryTx(ctx, fn, step)
		if err == nil || !errors.Is(err, conversation.ErrConflict) || attempt >= s.retries {
			return err
		}
		// Jitter keeps two batches that deadlocked from colliding again in lockstep.
		wait := backoff/2 + rand.N(backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		if step != nil {
			step("retry_wait", wait)
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

func (s *Store) tryTx(ctx context.Context, fn func(tx *sqlx.Tx) error, step func(string, time.Duration)) error {
	txOpts := &sql.TxOptions{Isolation: sql.LevelReadCommitted}
	if s.vitess {
		txOpts = nil // the tablets' MySQL runs READ COMMITTED by default (deploy/vitess/README.md)
	}
	timed := func(name string, start time.Time) {
		if step != nil {
			step(name, time.Since(start))
		}
	}
	start := time.Now()
	tx, err := s.db.BeginTxx(ctx, txOpts)
	if err != nil {
		return translate(err)
	}
	timed("begin", start)
	if err := fn(tx); err != nil {
		_ = tx.Rollback() // the error that matters is fn's
		return translate(err)
	}
	start = time.Now()
	err = tx.Commit()
	timed("commit", start)
	return translate(err)
}

// MySQL error numbers the store translates.
const (
	errLockWaitTimeout = 1205
	errDeadlock        = 1213
)

// translate maps driver errors onto the domain's sentinels, keeping the original in the chain, and hides
// what a server error quotes from the statement's values, so the store's errors are safe to log.
func translate(err error) error {
	if err == nil || errors.Is(err, conversation.ErrConflict) || errors.Is(err, conversation.ErrUnavailable) {
		return err
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		err = redacted{err}
		switch me.Number {
		case errDeadlock, errLockWaitTimeout:
			return fmt.Errorf("%w: %w", conversation.ErrConflict, err)
		case 1040, 1053, 2002, 2003, 2006, 2013: // too many connections, shutdown, gone away, lost
			return fmt.Errorf("%w: %w", conversation.ErrUnavailable, err)
		}
		return err
	}
	var netErr net.Error
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, mysql.ErrInvalidConn) || errors.As(err, &netErr) ||
		errors.Is(err, sql.ErrConnDone) {
		return fmt.Errorf("%w: %w", conversation.ErrUnavailable, err)
	}
	return err
}

// redacted is an error whose text has the quoted parts of a server error (a duplicate key's entry, an
// incorrect string value) replaced: those are bound values, which are never logged (user ids, message
// numbers). errors.Is and errors.As still reach the driver's error.
type redacted struct{ err error }

func (r redacted) Error() string { return quoted.ReplaceAllString(r.err.Error(), "'…'") }
func (r redacted) Unwrap() error { return r.err }

var quoted = regexp.MustCompile(`'[^']*'`)

// placeholders returns n copies of tuple joined by commas: placeholders(2, "(?,?)") = "(?,?),(?,?)".
func placeholders(n int, tuple string) string {
	var b strings.Builder
	b.Grow(n * (len(tuple) + 1))
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(tuple)
	}
	return b.String()
}

// chunks calls fn with consecutive index ranges [lo, hi) of at most size items out of n.
func chunks(n, size int, fn func(lo, hi int) error) error {
	for lo := 0; lo < n; lo += size {
		if err := fn(lo, min(lo+size, n)); err != nil {
			return err
		}
	}
	return nil
}
