// Package statetest gives integration tests a fresh, upgraded state
// database on the harness's real PostgreSQL and MariaDB servers.
package statetest

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/migrations"
	"github.com/fleetmigrate/fleetmigrate/statemachine/sqlstore"
)

// DB is a state database: the driver and DSN a store or a process needs.
type DB struct {
	Driver string
	DSN    string
}

// Upgraded applies the schema to the (fresh) database at dsn.
func Upgraded(tb testing.TB, driver, dsn string) DB {
	tb.Helper()
	db, dialect, _, err := sqlstore.Connect(context.Background(), sqlstore.Config{Driver: driver, DSN: dsn})
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	if _, err := migrations.Up(context.Background(), db, dialect, nil); err != nil {
		tb.Fatal(err)
	}
	return DB{Driver: driver, DSN: dsn}
}

// Open opens a store with its own connection pool, closed at cleanup. now,
// when given, pins its clock.
func (d DB) Open(tb testing.TB, now ...func() time.Time) *sqlstore.Store {
	tb.Helper()
	cfg := sqlstore.Config{Driver: d.Driver, DSN: d.DSN, MaxOpenConns: 16}
	if len(now) > 0 {
		cfg.Now = now[0]
	}
	s, err := sqlstore.Open(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// Env configures a fleetmigrate process through the environment alone.
func (d DB) Env() []string {
	return []string{"FLEETMIGRATE_STATE_DSN=" + d.DSN, "FLEETMIGRATE_STATE_DRIVER=" + d.Driver}
}

// Engines runs fn twice, in parallel: on a fresh, upgraded state database
// on the shared PostgreSQL server, and on one on the shared MariaDB server.
// The package's TestMain must call fleettest.Main.
func Engines(t *testing.T, fn func(t *testing.T, db DB)) { engines(t, true, fn) }

// EnginesWithoutSchema is Engines with empty databases: no schema yet.
func EnginesWithoutSchema(t *testing.T, fn func(t *testing.T, db DB)) { engines(t, false, fn) }

func engines(t *testing.T, upgrade bool, fn func(t *testing.T, db DB)) {
	for _, e := range []struct {
		name, driver string
		dsn          func(t *testing.T) string
	}{
		{"PostgreSQL", "postgres", func(t *testing.T) string { s := fleettest.SharedPostgres(t); return s.DSN(s.NewDatabase(t)) }},
		{"MariaDB", "mysql", func(t *testing.T) string { s := fleettest.SharedMariaDB(t); return s.DSN(s.NewDatabase(t)) }},
	} {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			db := DB{Driver: e.driver, DSN: e.dsn(t)}
			if upgrade {
				db = Upgraded(t, e.driver, db.DSN)
			}
			fn(t, db)
		})
	}
}

// Server is a state database server a test may take down and bring back.
type Server interface {
	Down() error
	Up(context.Context) error
}

// EnginesOnPrivateServers is Engines with a server of the test's own on each
// engine, so the test may stop and restart it.
func EnginesOnPrivateServers(t *testing.T, fn func(t *testing.T, db DB, srv Server)) {
	t.Run("PostgreSQL", func(t *testing.T) {
		t.Parallel()
		srv := fleettest.NewPostgres(t, fleettest.PostgresConfig{})
		fn(t, Upgraded(t, "postgres", srv.DSN(srv.NewDatabase(t))), srv)
	})
	t.Run("MariaDB", func(t *testing.T) {
		t.Parallel()
		srv := fleettest.NewMariaDB(t, fleettest.MariaDBConfig{})
		fn(t, Upgraded(t, "mysql", srv.DSN(srv.NewDatabase(t))), srv)
	})
}

var loginSeq atomic.Int64

// AsAgent grants host an agent login of its own on d's state database
// (with the DNS rows when dns is set) and returns d logging in as it. The
// login's name is unique (logins belong to the server, which tests share);
// it is revoked at cleanup.
func (d DB) AsAgent(tb testing.TB, host string, dns bool) DB {
	tb.Helper()
	ctx := context.Background()
	db, dialect, _, err := sqlstore.Connect(ctx, sqlstore.Config{Driver: d.Driver, DSN: d.DSN})
	if err != nil {
		tb.Fatal(err)
	}
	admin := sqlstore.NewAdmin(db, dialect)
	pw := sqlstore.NewPassword()
	login := fmt.Sprintf("fm_t%d_%d_%s", os.Getpid()%100000, loginSeq.Add(1), host)
	if len(login) > sqlstore.MaxLoginLen {
		login = login[:sqlstore.MaxLoginLen]
	}
	l, created, err := admin.GrantAgent(ctx, sqlstore.AgentGrant{Host: host, Login: login, DNS: dns, Password: pw, By: "test"})
	if err != nil || !created {
		db.Close()
		tb.Fatalf("grant %s an agent login: %v (created %v)", host, err, created)
	}
	tb.Cleanup(func() {
		defer db.Close()
		if _, err := admin.RevokeAgent(context.Background(), l.Login); err != nil {
			tb.Errorf("revoke %s: %v", l.Login, err)
		}
	})
	dsn, err := sqlstore.DSNWithLogin(d.Driver, d.DSN, l.Login, pw)
	if err != nil {
		tb.Fatal(err)
	}
	return DB{Driver: d.Driver, DSN: dsn}
}
