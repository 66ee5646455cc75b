//go:build faults

package faults_test

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fleetmigrate/fleetmigrate/internal/demo"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// Case 12e: writes reach the sources between the dump and the close, by an
// administrator whom the block does not keep out: a row at a MariaDB
// source and at a PostgreSQL source (their sessions gone by the close),
// and at another PostgreSQL database through a session still open. The
// close reads again only what the servers' change marks (PostgreSQL's
// statistics, MariaDB's binary log) say was written, every table when they
// cannot tell: each write must be found (Close failed naming the table,
// the source left as it is), the untouched rows closed without reading
// their tables again.
func TestLateWritesFoundByTheClose(t *testing.T) {
	t.Parallel()
	r := record(t, "12e", "administrators' writes at the sources between the dump and the close")
	d, ctx := fleet(t, 15, 1<<20, nil) // every fifth is PostgreSQL: 12 + 3
	// The sources' agents do not close yet: every row waits at To close
	// source once its DNS name moved.
	for _, id := range []string{"mysql-src-1", "postgres-src-1"} {
		if err := d.SetRoles(id, "rollback"); err != nil {
			t.Fatal(err)
		}
		if err := d.RestartAgent(id); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.StartMigration(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, d, "every row to wait for its close", 3*time.Minute, func() bool {
		n, err := d.Store.CountStatuses(ctx, statemachine.ToCloseSource)
		return err == nil && n == len(d.DBs)
	})
	var mine, pgs []*demo.Database
	for _, db := range d.DBs {
		if db.Engine == demo.MySQL {
			mine = append(mine, db)
		} else {
			pgs = append(pgs, db)
		}
	}
	if len(mine) < 2 || len(pgs) < 3 {
		t.Fatalf("want 2 MariaDB and 3 PostgreSQL databases, have %d and %d", len(mine), len(pgs))
	}
	myWritten, pgWritten, pgOpen := mine[0], pgs[0], pgs[1]
	insert := "INSERT INTO customers (name, email, created) VALUES ('late', 'late@example.test', now())"
	my, err := sql.Open("mysql", d.Fleet.Host(myWritten.Source).RootDSN(myWritten.Name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := my.ExecContext(ctx, insert); err != nil {
		t.Fatal(err)
	}
	_ = my.Close()
	pgOnce(ctx, t, d.Fleet.Host(pgWritten.Source).RootDSN(pgWritten.Name), insert).Close(context.Background())
	open := pgOnce(ctx, t, d.Fleet.Host(pgOpen.Source).RootDSN(pgOpen.Name), insert)
	defer open.Close(context.Background())
	for _, db := range []*demo.Database{myWritten, pgWritten, pgOpen} {
		if err := d.WroteAtSource(ctx, db); err != nil {
			t.Fatal(err)
		}
	}
	r.inject("after the DNS switch, before the close: a row inserted as root into %q's customers (MariaDB) and as postgres into %q's (session closed) and %q's (session left open)",
		myWritten.Name, pgWritten.Name, pgOpen.Name)
	for _, id := range []string{"mysql-src-1", "postgres-src-1"} {
		if err := d.SetRoles(id, ""); err != nil {
			t.Fatal(err)
		}
		if err := d.RestartAgent(id); err != nil {
			t.Fatal(err)
		}
	}
	settle(ctx, t, d, false)
	for _, db := range []*demo.Database{myWritten, pgWritten, pgOpen} {
		m := row(ctx, t, d, db)
		table := ident.QuotePostgres("public") + "." + ident.QuotePostgres("customers")
		if db.Engine == demo.MySQL {
			table = "customers"
		}
		if m.Status != statemachine.CloseFailed || !strings.Contains(m.LastError, "writes reached the source after the consistency point") ||
			!strings.Contains(m.LastError, table+": ") {
			t.Errorf("row %s is %s (%q), want Close failed naming %s", m.String(), m.Status, m.LastError, table)
		}
		r.saw("%s %q: %s", db.Engine, db.Name, trail(ctx, t, d, m.ID))
	}
	for _, db := range []*demo.Database{mine[1], pgs[2]} {
		m := row(ctx, t, d, db)
		if m.Status != statemachine.Done || !eventSaid(ctx, t, d, m.ID, "none read again") {
			t.Errorf("row %s is %s (%s); want Done, closed without reading its tables again; its close said: %s", m.String(), m.Status, m.LastError, recheckSaid(ctx, t, d, m.ID))
		}
	}
	r.saw("the untouched rows: Done, each close noting %q", "source re-checked by its change marks: none of its N tables written since the dump, none read again")
	rep := checkInvariants(ctx, t, d, r)
	if rep.Statuses[statemachine.Done] != len(d.DBs)-3 {
		t.Errorf("statuses %v, want all but the three written Done", rep.Statuses)
	}
}

// recheckSaid is what row id's close said of its re-check.
func recheckSaid(ctx context.Context, t *testing.T, d *demo.Demo, id int64) string {
	t.Helper()
	evs, err := d.Store.Events(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if strings.Contains(e.Detail, "re-checked") {
			return e.Detail
		}
	}
	return "(nothing)"
}

// pgOnce runs q as the superuser on a session of its own, left open.
func pgOnce(ctx context.Context, t *testing.T, dsn, q string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, q); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return c
}
