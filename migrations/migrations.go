// Package migrations holds the versioned schema of the state database, one
// set of numbered SQL files per dialect, embedded in the binaries, and applies
// it with pressly/goose.
//
// Upgrades are idempotent and safe to run concurrently: a session-level lock
// (pg_advisory_lock / GET_LOCK) serialises runners, and the second one finds
// nothing left to do.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/pressly/goose/v3"
)

//go:embed postgres/*.sql mysql/*.sql
var files embed.FS

// Dialect names a state database flavour.
type Dialect string

// The dialects.
const (
	Postgres Dialect = "postgres"
	MySQL    Dialect = "mysql"
)

// VersionTable records which migrations have been applied.
const VersionTable = "fleetmigrate_schema_version"

// lockName is the session lock every upgrade takes.
const lockName = "fleetmigrate.schema"

// lockTimeout bounds how long an upgrade waits for a concurrent one.
const lockTimeout = 5 * time.Minute

// Version is the state of a database's schema.
type Version struct {
	// Current is the highest applied migration (0: none).
	Current int64
	// Latest is the highest migration this binary carries.
	Latest int64
}

// Outdated reports whether the database lacks migrations this binary needs.
func (v Version) Outdated() bool { return v.Current < v.Latest }

// Newer reports whether the database has migrations this binary does not
// know (a newer binary upgraded it).
func (v Version) Newer() bool { return v.Current > v.Latest }

// Up applies every pending migration and returns the versions it applied
// (none when the schema was current).
//
// The whole upgrade runs under a session lock held on a connection of its
// own. The lock is not handed to goose: goose's Up first checks for pending
// migrations without its locker, and on MySQL, where CREATE TABLE commits by
// itself, a concurrent upgrade could then see the version table before its
// first row ("missing zero version migration").
func Up(ctx context.Context, db *sql.DB, d Dialect, log *slog.Logger) ([]int64, error) {
	p, err := provider(db, d, log)
	if err != nil {
		return nil, err
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	l := &sessionLocker{dialect: d}
	if err := l.SessionLock(ctx, conn); err != nil {
		return nil, err
	}
	defer func() { _ = l.SessionUnlock(context.WithoutCancel(ctx), conn) }()
	res, err := p.Up(ctx)
	if err != nil {
		return nil, fmt.Errorf("upgrade %s state schema: %w", d, err)
	}
	var out []int64
	for _, r := range res {
		out = append(out, r.Source.Version)
	}
	return out, nil
}

// Status returns the schema version of db without changing anything. A
// database that has never been upgraded has Current 0.
func Status(ctx context.Context, db *sql.DB, d Dialect) (Version, error) {
	latest, err := Latest(d)
	if err != nil {
		return Version{}, err
	}
	exists, err := versionTableExists(ctx, db, d)
	if err != nil {
		return Version{}, err
	}
	if !exists {
		return Version{Latest: latest}, nil
	}
	var cur sql.NullInt64
	q := "SELECT MAX(version_id) FROM " + VersionTable + " WHERE is_applied"
	if err := db.QueryRowContext(ctx, q).Scan(&cur); err != nil {
		return Version{}, fmt.Errorf("read schema version: %w", err)
	}
	return Version{Current: cur.Int64, Latest: latest}, nil
}

// Latest returns the highest migration version embedded for d.
func Latest(d Dialect) (int64, error) {
	sub, err := dialectFS(d)
	if err != nil {
		return 0, err
	}
	entries, err := fs.Glob(sub, "*.sql")
	if err != nil {
		return 0, err
	}
	var latest int64
	for _, e := range entries {
		v, err := goose.NumericComponent(e)
		if err != nil {
			return 0, fmt.Errorf("migration file %s: %w", e, err)
		}
		latest = max(latest, v)
	}
	return latest, nil
}

func dialectFS(d Dialect) (fs.FS, error) {
	switch d {
	case Postgres, MySQL:
		return fs.Sub(files, string(d))
	default:
		return nil, fmt.Errorf("unknown state database dialect %q (want postgres or mysql)", d)
	}
}

func provider(db *sql.DB, d Dialect, log *slog.Logger) (*goose.Provider, error) {
	sub, err := dialectFS(d)
	if err != nil {
		return nil, err
	}
	gd := goose.DialectPostgres
	if d == MySQL {
		gd = goose.DialectMySQL
	}
	opts := []goose.ProviderOption{
		goose.WithTableName(VersionTable),
		goose.WithDisableGlobalRegistry(true),
	}
	if log != nil {
		opts = append(opts, goose.WithSlog(log))
	}
	return goose.NewProvider(gd, db, sub, opts...)
}

func versionTableExists(ctx context.Context, db *sql.DB, d Dialect) (bool, error) {
	var q string
	switch d {
	case Postgres:
		q = "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = '" + VersionTable + "'"
	default:
		q = "SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = '" + VersionTable + "'"
	}
	var n int
	if err := db.QueryRowContext(ctx, q).Scan(&n); err != nil {
		return false, fmt.Errorf("look for the schema version table: %w", err)
	}
	return n > 0, nil
}

// sessionLocker serialises upgrades with a lock held by the upgrading
// session. Both databases wait server-side, so a second runner proceeds the
// moment the first finishes (goose's own PostgreSQL locker polls every
// second or more). Its methods match goose's lock.SessionLocker.
type sessionLocker struct{ dialect Dialect }

func (l *sessionLocker) SessionLock(ctx context.Context, conn *sql.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, lockTimeout)
	defer cancel()
	switch l.dialect {
	case Postgres:
		if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock(hashtext($1))", lockName); err != nil {
			return fmt.Errorf("take the schema upgrade lock: %w", err)
		}
		return nil
	default:
		var got sql.NullInt64
		err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, ?)", lockName, int(lockTimeout.Seconds())).Scan(&got)
		if err != nil {
			return fmt.Errorf("take the schema upgrade lock: %w", err)
		}
		if got.Int64 != 1 {
			return fmt.Errorf("take the schema upgrade lock: another upgrade held it for %s", lockTimeout)
		}
		return nil
	}
}

func (l *sessionLocker) SessionUnlock(ctx context.Context, conn *sql.Conn) error {
	var err error
	switch l.dialect {
	case Postgres:
		_, err = conn.ExecContext(ctx, "SELECT pg_advisory_unlock(hashtext($1))", lockName)
	default:
		_, err = conn.ExecContext(ctx, "SELECT RELEASE_LOCK(?)", lockName)
	}
	if err != nil {
		return fmt.Errorf("release the schema upgrade lock: %w", err)
	}
	return nil
}
