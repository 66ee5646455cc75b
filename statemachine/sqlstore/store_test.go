package sqlstore_test

import (
	"database/sql"
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
		a := statetest.DB{Driver: driver, DSN: dsn}.AsAgent(t, host, dns).Open(t)
		return a, a.DB()
	}
	return storetest.Harness{Store: s, DB: s.DB(), Open: open, Q: s.Rebind, AsAgent: asAgent}
}
