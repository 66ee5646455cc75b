package sqlstore_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/statetest"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/statemachine/sqlstore"
	"github.com/fleetmigrate/fleetmigrate/statemachine/storetest"
)

func TestMain(m *testing.M) { fleettest.Main(m) }

// TestStore runs the conformance suite on both state database engines.
func TestStore(t *testing.T) {
	t.Run("PostgreSQL", func(t *testing.T) {
		t.Parallel()
		storetest.Run(t, func(t *testing.T) storetest.Harness {
			srv := fleettest.SharedPostgres(t)
			return harness(t, "postgres", srv.DSN(srv.NewDatabase(t)))
		})
	})
	t.Run("MariaDB", func(t *testing.T) {
		t.Parallel()
		storetest.Run(t, func(t *testing.T) storetest.Harness {
			srv := fleettest.SharedMariaDB(t)
			return harness(t, "mysql", srv.DSN(srv.NewDatabase(t)))
		})
	})
}

// openUpgraded upgrades a fresh database and opens a store on it.
func openUpgraded(tb testing.TB, driver, dsn string, now func() time.Time) *sqlstore.Store {
	tb.Helper()
	db := statetest.Upgraded(tb, driver, dsn)
	if now == nil {
		return db.Open(tb)
	}
	return db.Open(tb, now)
}

// harness upgrades the fresh database and opens stores on it.
func harness(t *testing.T, driver, dsn string) storetest.Harness {
	t.Helper()
	s := openUpgraded(t, driver, dsn, nil)
	open := func(t *testing.T, now func() time.Time) statemachine.Store { return openUpgraded(t, driver, dsn, now) }
	asAgent := func(t *testing.T, host string, dns bool) (statemachine.Store, *sql.DB) {
		a := grantAgent(t, s, driver, dsn, host, dns)
		return a, a.DB()
	}
	return storetest.Harness{Store: s, DB: s.DB(), Open: open, Q: s.Rebind, AsAgent: asAgent}
}

// grantAgent grants host an agent login of the test's own on the state
// database of operator store s (logins are the server's, shared by every
// test's database: the name is unique) and opens a store logging in as it.
// The login is revoked at cleanup.
func grantAgent(t testing.TB, s *sqlstore.Store, driver, operatorDSN, host string, dns bool) *sqlstore.Store {
	t.Helper()
	ctx := context.Background()
	admin := sqlstore.NewAdmin(s.DB(), s.Dialect())
	pw := sqlstore.NewPassword()
	l, created, err := admin.GrantAgent(ctx, sqlstore.AgentGrant{Host: host, Login: fmt.Sprintf("fm_t%d_%s", loginSeq.Add(1), host), DNS: dns, Password: pw, By: "test"})
	if err != nil || !created {
		t.Fatalf("grant %s an agent login: %v (created %v)", host, err, created)
	}
	t.Cleanup(func() {
		if _, err := admin.RevokeAgent(context.Background(), l.Login); err != nil {
			t.Errorf("revoke %s: %v", l.Login, err)
		}
	})
	dsn, err := sqlstore.DSNWithLogin(driver, operatorDSN, l.Login, pw)
	if err != nil {
		t.Fatal(err)
	}
	a, err := sqlstore.Open(ctx, sqlstore.Config{Driver: driver, DSN: dsn, MaxOpenConns: 4})
	if err != nil {
		t.Fatalf("open the store as %s: %v", l.Login, err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

var loginSeq atomic.Int64
