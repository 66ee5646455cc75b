// Package sqlstore implements statemachine.Store on PostgreSQL (pgx/v5) and
// MySQL 8 / MariaDB 10.6+ (go-sql-driver/mysql).
//
// One implementation serves both: the statements are the same compare-and-set
// UPDATEs, written once, with a small dialect layer for placeholders, the
// clock, upserts and error codes. Claims pick rows with SELECT ... FOR UPDATE
// SKIP LOCKED at READ COMMITTED over an index that covers the WHERE and the
// ORDER BY, then move them with one conditional UPDATE (MariaDB has no
// UPDATE ... RETURNING, so the claimed rows are read back inside the same
// transaction while still locked).
package sqlstore

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver

	"github.com/fleetmigrate/fleetmigrate/migrations"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// Defaults.
const (
	DefaultMaxOpenConns   = 8
	DefaultConnectTimeout = 10 * time.Second
	// maxTxRetries bounds retries of a transaction the database aborted to
	// break a deadlock or a serialisation conflict.
	maxTxRetries = 5
)

// ErrUnreachable: the state database did not answer (a retry may succeed).
var ErrUnreachable = errors.New("state database unreachable")

// unreachableError is an ErrUnreachable with the full one-line message.
type unreachableError struct{ msg string }

func (e *unreachableError) Error() string { return e.msg }
func (e *unreachableError) Unwrap() error { return ErrUnreachable }

// Config says how to reach the state database.
type Config struct {
	// Driver is "postgres" or "mysql" (MySQL and MariaDB).
	Driver string
	// DSN is a pgx connection string or URL, or a go-sql-driver/mysql DSN.
	DSN string
	// CAFile is a PEM bundle of the CAs that sign the state database
	// server's certificate. Set, the connection is TLS with the server's
	// certificate checked against it and its name (MySQL: a TLS
	// configuration of its own; PostgreSQL: sslrootcert, and sslmode
	// verify-full unless the DSN says otherwise). Empty: the DSN decides.
	CAFile string
	// MaxOpenConns caps the connection pool (default DefaultMaxOpenConns).
	MaxOpenConns int
	// Now pins the clock for tests: when set, every timestamp the store
	// writes or compares is Now() instead of the database's clock.
	Now func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Store is a statemachine.Store on a SQL database.
type Store struct {
	db    *sql.DB
	d     dialect
	cfg   Config
	log   *slog.Logger
	where string
	dsn   string // as prepared for the driver (the wake-up listener connects with it)

	wakeOnce sync.Once
	waker    *waker
}

var _ statemachine.Store = (*Store)(nil)

// Open connects to the state database and checks that its schema is the one
// this binary expects: an older schema is refused with an error wrapping
// statemachine.ErrSchemaOutdated that says to run `migrate db upgrade`.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	db, d, where, dsn, err := connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	v, err := migrations.Status(ctx, db, d.name)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("check the schema of the state database (%s): %w", where, err)
	}
	if v.Outdated() {
		db.Close()
		if v.Current == 0 {
			return nil, fmt.Errorf("%w: the state database has no fleetmigrate schema yet (this binary needs version %d): run `migrate db upgrade`",
				statemachine.ErrSchemaOutdated, v.Latest)
		}
		return nil, fmt.Errorf("%w: the state database is at version %d, this binary needs %d: run `migrate db upgrade`",
			statemachine.ErrSchemaOutdated, v.Current, v.Latest)
	}
	s := &Store{db: db, d: d, cfg: cfg, log: cfg.Logger, where: where, dsn: dsn}
	if s.log == nil {
		s.log = slog.Default()
	}
	if v.Newer() {
		s.log.Warn("state database schema is newer than this binary; upgrade the binary",
			"schema_version", v.Current, "binary_version", v.Latest)
	}
	return s, nil
}

// Connect opens and pings the state database without looking at its schema,
// for `migrate db upgrade` and `migrate db status`. It returns the pool, the
// schema dialect, and a password-free description of the server for
// messages. Connection problems come back as one line naming the server,
// never a stack of driver errors.
func Connect(ctx context.Context, cfg Config) (*sql.DB, migrations.Dialect, string, error) {
	db, d, where, _, err := connect(ctx, cfg)
	return db, d.name, where, err
}

func connect(ctx context.Context, cfg Config) (*sql.DB, dialect, string, string, error) {
	d, dsn, where, err := prepareDSN(cfg.Driver, cfg.DSN, cfg.CAFile)
	if err != nil {
		return nil, dialect{}, "", "", err
	}
	driverName := "mysql"
	if d.name == migrations.Postgres {
		driverName = "pgx"
	}
	db, err := sql.Open(driverName, dsn)
	if err != nil {
		return nil, dialect{}, "", "", fmt.Errorf("state database (%s): %w", where, err)
	}
	n := cfg.MaxOpenConns
	if n <= 0 {
		n = DefaultMaxOpenConns
	}
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	db.SetConnMaxIdleTime(5 * time.Minute)
	pctx, cancel := context.WithTimeout(ctx, DefaultConnectTimeout+2*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, dialect{}, "", "", &unreachableError{fmt.Sprintf("cannot reach the state database (%s): %s; check state.dsn in the configuration and that the server is up",
			where, connectReason(err))}
	}
	return db, d, where, dsn, nil
}

// prepareDSN validates the DSN, adds the session settings the store relies
// on, and returns a description of the server ("postgres at host:port") for
// messages. The description never contains the password.
func prepareDSN(driver, dsn, caFile string) (dialect, string, string, error) {
	if dsn == "" {
		return dialect{}, "", "", errors.New("no state database configured: set state.dsn in the configuration (or FLEETMIGRATE_STATE_DSN)")
	}
	switch driver {
	case "postgres", "postgresql":
		pc, err := pgx.ParseConfig(dsn)
		if err != nil {
			return dialect{}, "", "", fmt.Errorf("state.dsn is not a valid PostgreSQL connection string: %s", redactErr(err, dsn))
		}
		where := fmt.Sprintf("postgres at %s, database %q", net.JoinHostPort(pc.Host, fmt.Sprint(pc.Port)), pc.Database)
		if !strings.Contains(dsn, "connect_timeout") {
			dsn = appendPGParam(dsn, "connect_timeout", fmt.Sprint(int(DefaultConnectTimeout.Seconds())))
		}
		// Statuses are skewed (most rows Waiting or Done): a generic plan for
		// "status = $1" guesses an even spread and may scan the table for a
		// rare status. Plan every statement for its actual values.
		if !strings.Contains(dsn, "plan_cache_mode") {
			dsn = appendPGParam(dsn, "plan_cache_mode", "force_custom_plan")
		}
		if caFile != "" {
			if strings.Contains(dsn, "sslmode=disable") {
				return dialect{}, "", "", fmt.Errorf("state.ca-file is set and state.dsn says sslmode=disable: remove one")
			}
			if !strings.Contains(dsn, "sslrootcert") {
				dsn = appendPGParam(dsn, "sslrootcert", caFile)
			}
			if !strings.Contains(dsn, "sslmode") {
				dsn = appendPGParam(dsn, "sslmode", "verify-full")
			}
		}
		return dialect{name: migrations.Postgres}, dsn, where, nil
	case "mysql", "mariadb":
		mc, err := mysql.ParseDSN(dsn)
		if err != nil {
			return dialect{}, "", "", fmt.Errorf("state.dsn is not a valid MySQL DSN (user:password@tcp(host:port)/database): %s", redactErr(err, dsn))
		}
		if mc.DBName == "" {
			return dialect{}, "", "", errors.New("state.dsn names no database: add /<database> after the address")
		}
		where := fmt.Sprintf("mysql at %s, database %q", mc.Addr, mc.DBName)
		mc.ParseTime = true
		mc.Loc = time.UTC
		// Affected rows must count matched rows: a compare-and-set that
		// writes the values already there (a pinned test clock) still won.
		mc.ClientFoundRows = true
		// One round trip per statement instead of prepare/execute/close.
		mc.InterpolateParams = true
		if mc.Timeout == 0 {
			mc.Timeout = DefaultConnectTimeout
		}
		if mc.Params == nil {
			mc.Params = map[string]string{}
		}
		if caFile != "" {
			name, err := stateTLS(mc, caFile)
			if err != nil {
				return dialect{}, "", "", err
			}
			mc.TLSConfig = name
		}
		// DATETIME columns hold UTC; NOW() must agree.
		mc.Params["time_zone"] = "'+00:00'"
		mc.Params["sql_mode"] = "'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,ONLY_FULL_GROUP_BY'"
		return dialect{name: migrations.MySQL}, mc.FormatDSN(), where, nil
	case "":
		return dialect{}, "", "", errors.New("no state database driver configured: set state.driver to postgres or mysql")
	default:
		return dialect{}, "", "", fmt.Errorf("unknown state database driver %q: want postgres or mysql", driver)
	}
}

func appendPGParam(dsn, k, v string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		sep := "?"
		if strings.Contains(dsn, "?") {
			sep = "&"
		}
		return dsn + sep + k + "=" + v
	}
	return strings.TrimSpace(dsn) + " " + k + "=" + v
}

// redactErr returns err's text with the DSN's password removed, should the
// driver have echoed it.
func redactErr(err error, dsn string) string {
	msg := err.Error()
	if pw := dsnPassword(dsn); pw != "" {
		msg = strings.ReplaceAll(msg, pw, "xxxxx")
	}
	return msg
}

func dsnPassword(dsn string) string {
	if mc, err := mysql.ParseDSN(dsn); err == nil && mc.Passwd != "" {
		return mc.Passwd
	}
	if pc, err := pgconn.ParseConfig(dsn); err == nil {
		return pc.Password
	}
	return ""
}

// connectReason boils a driver's connection error down to its cause.
func connectReason(err error) string {
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Err != nil {
		return opErr.Op + ": " + opErr.Err.Error()
	}
	if msg, ok := serverMessage(err); ok {
		return msg
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "no answer within " + DefaultConnectTimeout.String()
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 && strings.HasPrefix(msg, "failed to connect") {
		msg = msg[i+2:]
	}
	return msg
}

// DB returns the connection pool (for schema commands and tests).
func (s *Store) DB() *sql.DB { return s.db }

// Where describes the state database for messages (no password).
func (s *Store) Where() string { return s.where }

// Dialect returns "postgres" or "mysql".
func (s *Store) Dialect() migrations.Dialect { return s.d.name }

// Close closes the connection pool.
func (s *Store) Close() error {
	if s.waker != nil {
		s.waker.close()
	}
	return s.db.Close()
}

// nowArg is the argument for every now() placeholder: nil (the database's
// clock) unless the test clock is pinned.
func (s *Store) nowArg() any {
	if s.cfg.Now != nil {
		return s.cfg.Now().UTC()
	}
	return nil
}

// Now returns the clock the store uses.
func (s *Store) Now(ctx context.Context) (time.Time, error) {
	var t time.Time
	err := s.db.QueryRowContext(ctx, s.d.q("SELECT "+s.d.now()), s.nowArg()).Scan(&t)
	return t.UTC(), err
}

// inTx runs fn in a READ COMMITTED transaction, retrying it when the database
// aborted it to break a deadlock or a serialisation conflict.
func (s *Store) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	var err error
	for attempt := 1; ; attempt++ {
		err = s.tryTx(ctx, fn)
		if err == nil || !s.d.retryable(err) || attempt >= maxTxRetries || ctx.Err() != nil {
			return err
		}
		s.log.Debug("state database transaction retried", "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt*attempt) * 5 * time.Millisecond):
		}
	}
}

// retried runs fn (statements outside a transaction) again when the
// database aborted it to break a deadlock, like inTx.
func (s *Store) retried(ctx context.Context, fn func() error) error {
	var err error
	for attempt := 1; ; attempt++ {
		err = fn()
		if err == nil || !s.d.retryable(err) || attempt >= maxTxRetries || ctx.Err() != nil {
			return err
		}
		s.log.Debug("state database statement retried", "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt*attempt) * 5 * time.Millisecond):
		}
	}
}

func (s *Store) tryTx(ctx context.Context, fn func(tx *sql.Tx) error) (err error) {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// wrapDBErr turns the database's refusals into the store's errors.
func (s *Store) wrapDBErr(err error) error {
	if err == nil {
		return nil
	}
	if s.d.guardViolation(err) {
		return fmt.Errorf("%w: the state database refused it: %s", statemachine.ErrInvalidTransition, s.d.message(err))
	}
	if s.d.refusedByLogin(err) {
		return fmt.Errorf("%w: the state database refused it: %s", statemachine.ErrNotPermitted, s.d.message(err))
	}
	return err
}

// Rebind rewrites a statement written with ? placeholders for the dialect.
func (s *Store) Rebind(query string) string { return s.d.q(query) }

// stateTLS registers, for the MySQL driver, a TLS configuration that
// checks the state database server's certificate against the CAs of
// caFile and its name (the DSN's host), and returns its name.
func stateTLS(mc *mysql.Config, caFile string) (string, error) {
	if mc.TLSConfig == "false" || mc.TLSConfig == "skip-verify" || mc.TLSConfig == "preferred" {
		return "", fmt.Errorf("state.ca-file is set and state.dsn says tls=%s: remove one", mc.TLSConfig)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return "", fmt.Errorf("state.ca-file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return "", fmt.Errorf("state.ca-file %s holds no PEM certificate", caFile)
	}
	host, _, err := net.SplitHostPort(mc.Addr)
	if err != nil {
		host = mc.Addr
	}
	sum := sha256.Sum256(append(pem, host...))
	name := "fleetmigrate-state-" + hex.EncodeToString(sum[:8])
	if err := mysql.RegisterTLSConfig(name, &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12}); err != nil {
		return "", fmt.Errorf("state.ca-file: %w", err)
	}
	return name, nil
}
