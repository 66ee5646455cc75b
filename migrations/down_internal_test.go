package migrations

import (
	"context"
	"database/sql"
	"testing"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
)

func TestMain(m *testing.M) { fleettest.Main(m) }

// TestLatestDownThenUp: the newest migration's Down undoes its Up on
// both dialects (an operator rolling a binary back runs it), and Up applies
// it again.
func TestLatestDownThenUp(t *testing.T) {
	for _, e := range []struct {
		name    string
		dialect Dialect
		driver  string
		dsn     func(t *testing.T) string
	}{
		{"PostgreSQL", Postgres, "pgx", func(t *testing.T) string { s := fleettest.SharedPostgres(t); return s.DSN(s.NewDatabase(t)) }},
		{"MariaDB", MySQL, "mysql", func(t *testing.T) string { s := fleettest.SharedMariaDB(t); return s.DSN(s.NewDatabase(t)) }},
	} {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db, err := sql.Open(e.driver, e.dsn(t))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := Up(ctx, db, e.dialect, nil); err != nil {
				t.Fatal(err)
			}
			p, err := provider(db, e.dialect, nil)
			if err != nil {
				t.Fatal(err)
			}
			res, err := p.Down(ctx)
			if err != nil {
				t.Fatalf("down: %v", err)
			}
			v, err := Status(ctx, db, e.dialect)
			if err != nil || v.Current != v.Latest-1 {
				t.Fatalf("after down of %v: %+v, %v", res, v, err)
			}
			if _, err := Up(ctx, db, e.dialect, nil); err != nil {
				t.Fatalf("up again: %v", err)
			}
			if v, err := Status(ctx, db, e.dialect); err != nil || v.Outdated() {
				t.Fatalf("after up: %+v, %v", v, err)
			}
		})
	}
}
