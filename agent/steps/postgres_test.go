package steps_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// pgSite is a customer's PostgreSQL database: an owner role with a
// password, a table with a serial column, a large object.
type pgSite struct {
	db, owner, pass string
}

func newPGSite(t *testing.T, f *fleet, prefix string) pgSite {
	t.Helper()
	n := seq.Add(1)
	st := pgSiteNamed(t, f, prefix, n)
	fleettest.PGExec(t, f.src.pg.Root(t, "postgres"),
		"CREATE ROLE "+qp(st.owner)+" LOGIN PASSWORD "+ident.QuotePostgresLiteral(st.pass),
		"CREATE DATABASE "+qp(st.db)+" OWNER "+qp(st.owner))
	fleettest.PGExec(t, f.src.pg.Connect(t, st.db, st.owner, st.pass),
		"CREATE TABLE items (id serial PRIMARY KEY, name text, body bytea)",
		"INSERT INTO items (name, body) SELECT 'item ' || g || ' ✓', decode(md5(g::text), 'hex') FROM generate_series(1, 2000) g",
		"SELECT lo_from_bytea(0, 'a large object')",
		// The peers' read-only role reads large objects only when granted
		// (pg_read_all_data does not cover them; docs/security.md).
		"DO $$ BEGIN EXECUTE format('GRANT SELECT ON LARGE OBJECT %s TO %I', (SELECT max(oid) FROM pg_largeobject_metadata), "+ident.QuotePostgresLiteral(peerUser)+"); END $$")
	return st
}

// pgSiteNamed names a site (awkward names, a password with quotes and a
// backslash) and drops its database and owner at both servers when the
// test ends.
func pgSiteNamed(t *testing.T, f *fleet, prefix string, n int64) pgSite {
	t.Helper()
	st := pgSite{db: fmt.Sprintf("%s %d \"ü", prefix, n), owner: fmt.Sprintf("o'%s%d", prefix, n), pass: fmt.Sprintf(`pw "%d" \ ü:`, n)}
	for _, s := range []*server{f.src, f.dst} {
		t.Cleanup(func() {
			c, err := s.pg.Dial(context.Background(), "postgres", "postgres", s.pg.Password)
			if err != nil {
				return
			}
			defer c.Close(context.Background())
			_, _ = c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+qp(st.db)+" WITH (FORCE)")
			_, _ = c.Exec(context.Background(), "DROP ROLE IF EXISTS "+qp(st.owner))
		})
	}
	return st
}

func qp(s string) string { return ident.QuotePostgres(s) }

// pgRows reads the items through c.
func pgRows(t *testing.T, c *pgx.Conn) []string {
	t.Helper()
	rs, err := c.Query(ctx(t), "SELECT t::text FROM items t ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rs, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func pgWrite(c *pgx.Conn) error {
	_, err := c.Exec(context.Background(), "INSERT INTO items (name) VALUES ('still here?')")
	return err
}

// TestPostgresToDone runs a PostgreSQL database through every step with
// real agents: the owner logs in at the destination with the original
// password, finds the same rows and inserts without a sequence collision;
// the source is closed to it, its open session ended.
func TestPostgresToDone(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	st := newPGSite(t, f, "pgdone")
	before := pgRows(t, f.src.pg.Root(t, st.db))
	early := f.src.pg.Connect(t, st.db, st.owner, st.pass)
	id := f.planEngine(t, statemachine.EnginePostgres, st.db)
	f.start(t, f.src, agentOpts{}, statemachine.RoleClose, statemachine.RoleRollback)
	f.start(t, f.dst, agentOpts{}, statemachine.RoleDump, statemachine.RoleImport)
	f.dnsAgent(t)
	m := f.waitStatus(t, id, statemachine.Done, statemachine.DumpFailed, statemachine.ImportFailed, statemachine.DNSFailed, statemachine.CloseFailed)
	if m.Status != statemachine.Done {
		t.Fatalf("row ended %q: %s\n%s", m.Status, m.LastError, f.events(t, id))
	}
	f.resolvesTo(t, id, "127.77.0.2, fd77::2")
	if m.SwitchedAt.IsZero() || m.SwitchedAt.Before(m.BlockedAt) {
		t.Errorf("switched_at %v (blocked_at %v)", m.SwitchedAt, m.BlockedAt)
	}
	if m.BlockedAt.IsZero() || m.DumpURL == "" || !strings.HasSuffix(m.DumpURL, "dump.pgdump.zst") || m.ConsistencyPoint.IsZero() {
		t.Errorf("row fields not recorded: %+v", m)
	}
	events := f.events(t, id)
	for _, want := range []string{"blocking writes", "PUBLIC and 1 roles lose CONNECT", "writes blocked by the source's agent", "; 2 sessions ended", "dumped", "at LSN", "beside the dump", "done, imported while dumping", "verified", "1 sequences", "source closed"} {
		if !strings.Contains(events, want) {
			t.Errorf("events do not mention %q:\n%s", want, events)
		}
	}
	at := f.dst.pg.Connect(t, st.db, st.owner, st.pass)
	if got := pgRows(t, at); !slices.Equal(got, before) {
		t.Errorf("rows differ at the destination: %d, %d at the source", len(got), len(before))
	}
	if err := pgWrite(at); err != nil {
		t.Errorf("the owner cannot write at the destination: %v", err)
	}
	if err := pgWrite(early); err == nil {
		t.Error("a session opened before the block still writes at the source")
	}
	c, err := f.src.pg.Dial(ctx(t), st.db, st.owner, st.pass)
	var pe *pgconn.PgError
	if err == nil {
		_ = c.Close(ctx(t))
		t.Error("the owner still connects to the closed source")
	} else if !errors.As(err, &pe) || pe.Code != "42501" {
		t.Errorf("closed source: %v", err)
	}
	if n := len(pgRows(t, f.src.pg.Root(t, st.db))); n != len(before) {
		t.Errorf("the closed source holds %d rows, %d before", n, len(before))
	}
}

// TestPostgresCorruptDumpAndRollback: a dump damaged in the store is
// refused by the import, which leaves nothing at the destination; the
// operator's rollback gives the owner back its database exactly.
func TestPostgresCorruptDumpAndRollback(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	st := newPGSite(t, f, "pgcorrupt")
	acl := func() string {
		var s string
		if err := f.src.pg.Root(t, "postgres").QueryRow(ctx(t), "SELECT pg_get_userbyid(datdba) || ' ' || coalesce(datacl::text, 'default') FROM pg_database WHERE datname = $1", st.db).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := acl()
	id := f.planEngine(t, statemachine.EnginePostgres, st.db)
	stopDst := f.start(t, f.dst, agentOpts{storeFirst: true}, statemachine.RoleDump, statemachine.RoleRollback)
	f.start(t, f.src, agentOpts{}, statemachine.RoleRollback)
	m := f.waitStatus(t, id, statemachine.ToImport, statemachine.DumpFailed)
	if m.Status != statemachine.ToImport {
		t.Fatalf("dump: %q %s", m.Status, m.LastError)
	}
	if _, err := f.src.pg.Dial(ctx(t), st.db, st.owner, st.pass); err == nil {
		t.Fatal("the owner connects to the source while its dump waits for import")
	}
	f.corruptDump(t, m)
	stopDst()
	f.start(t, f.dst, agentOpts{}, statemachine.RoleImport)
	m = f.waitStatus(t, id, statemachine.ImportFailed, statemachine.DNSToUpdate)
	if m.Status != statemachine.ImportFailed || !strings.Contains(m.LastError, "corrupt") {
		t.Fatalf("import of a corrupt dump: %q %q", m.Status, m.LastError)
	}
	var n int
	if err := f.dst.pg.Root(t, "postgres").QueryRow(ctx(t), "SELECT count(*) FROM pg_database WHERE datname = $1", st.db).Scan(&n); err != nil || n != 0 {
		t.Errorf("the failed import left the database at the destination (%d, %v)", n, err)
	}
	if _, err := f.state.Operate(ctx(t), id, statemachine.ActionRollback, "test", "corrupt dump"); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	m = f.waitStatus(t, id, statemachine.RolledBack, statemachine.RollbackFailed)
	if m.Status != statemachine.RolledBack {
		t.Fatalf("rollback: %q %s", m.Status, m.LastError)
	}
	if got := acl(); got != before {
		t.Errorf("after rollback %s, before %s", got, before)
	}
	if err := pgWrite(f.src.pg.Connect(t, st.db, st.owner, st.pass)); err != nil {
		t.Errorf("the owner cannot write after the rollback: %v", err)
	}
}

// TestPostgresLateWriteStopsClose: a row written at the source after the
// dump by a superuser, whom the block does not reach, is found when the
// source is closed: Close failed, naming the table.
func TestPostgresLateWriteStopsClose(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	st := newPGSite(t, f, "pgslipped")
	id := f.planEngine(t, statemachine.EnginePostgres, st.db)
	f.start(t, f.src, agentOpts{}, statemachine.RoleClose)
	f.start(t, f.dst, agentOpts{}, statemachine.RoleDump, statemachine.RoleImport)
	m := f.waitStatus(t, id, statemachine.DNSToUpdate, statemachine.DumpFailed, statemachine.ImportFailed)
	if m.Status != statemachine.DNSToUpdate {
		t.Fatalf("%q %s", m.Status, m.LastError)
	}
	// The writer is gone by the time the source is closed: the change
	// marks taken at the dump find the table; the close reads only it.
	c, err := f.src.pg.Dial(ctx(t), st.db, "postgres", f.src.pg.Password)
	if err != nil {
		t.Fatal(err)
	}
	fleettest.PGExec(t, c, "INSERT INTO items (id, name) VALUES (999999, 'late')")
	_ = c.Close(ctx(t))
	f.dnsAgent(t)
	m = f.waitStatus(t, id, statemachine.CloseFailed, statemachine.Done)
	if m.Status != statemachine.CloseFailed || !strings.Contains(m.LastError, "writes reached the source after the consistency point") ||
		!strings.Contains(m.LastError, `"public"."items": 2001 rows, 2000 expected`) {
		t.Fatalf("close: %q %q", m.Status, m.LastError)
	}
}

// TestPostgresCloseReadsNothingWhenNothingWrote: a source nobody wrote to
// since the dump is closed without reading its tables again (its change
// marks say so), and a session still connected to it makes the close read
// every table.
func TestPostgresCloseReadsNothingWhenNothingWrote(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	quietSite := newPGSite(t, f, "pgquiet")
	busy := newPGSite(t, f, "pgbusy")
	quietID := f.planEngine(t, statemachine.EnginePostgres, quietSite.db)
	busyID := f.planEngine(t, statemachine.EnginePostgres, busy.db)
	f.start(t, f.src, agentOpts{}, statemachine.RoleClose)
	f.start(t, f.dst, agentOpts{}, statemachine.RoleDump, statemachine.RoleImport)
	for _, id := range []int64{quietID, busyID} {
		if m := f.waitStatus(t, id, statemachine.DNSToUpdate, statemachine.DumpFailed, statemachine.ImportFailed); m.Status != statemachine.DNSToUpdate {
			t.Fatalf("%q %s", m.Status, m.LastError)
		}
	}
	// A superuser's session, idle, in the busy one.
	fleettest.PGExec(t, f.src.pg.Root(t, busy.db), "SELECT 1")
	f.dnsAgent(t)
	for _, id := range []int64{quietID, busyID} {
		if m := f.waitStatus(t, id, statemachine.Done, statemachine.CloseFailed); m.Status != statemachine.Done {
			t.Fatalf("%q %s", m.Status, m.LastError)
		}
	}
	if ev := f.events(t, quietID); !strings.Contains(ev, "none of its 2 tables written since the dump, none read again") {
		t.Errorf("the quiet source's close did not say it read nothing again:\n%s", ev)
	}
	if ev := f.events(t, busyID); !strings.Contains(ev, "all 2 tables read again (1 other sessions are connected") {
		t.Errorf("the busy source's close did not say it read every table again:\n%s", ev)
	}
}

// TestPostgresUnreadableLargeObjectsFailBeforeBlocking: a database with a
// large object the peers' read-only role may not read (pg_read_all_data
// does not cover them) fails saying so and what to do, before its writes
// are blocked; granted the read, a retry migrates it, the large object
// with it.
func TestPostgresUnreadableLargeObjectsFailBeforeBlocking(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	n := seq.Add(1)
	st := pgSiteNamed(t, f, "pglo", n)
	fleettest.PGExec(t, f.src.pg.Root(t, "postgres"),
		"CREATE ROLE "+qp(st.owner)+" LOGIN PASSWORD "+ident.QuotePostgresLiteral(st.pass),
		"CREATE DATABASE "+qp(st.db)+" OWNER "+qp(st.owner))
	owner := f.src.pg.Connect(t, st.db, st.owner, st.pass)
	fleettest.PGExec(t, owner, "CREATE TABLE items (id serial PRIMARY KEY, name text)", "INSERT INTO items (name) VALUES ('one')",
		"SELECT lo_from_bytea(0, 'private')", "SELECT lo_from_bytea(0, 'also private')")
	id := f.planEngine(t, statemachine.EnginePostgres, st.db)
	f.start(t, f.dst, agentOpts{}, statemachine.RoleDump, statemachine.RoleImport)
	f.start(t, f.src, agentOpts{}, statemachine.RoleClose, statemachine.RoleRollback)
	m := f.waitStatus(t, id, statemachine.DumpFailed, statemachine.ToImport, statemachine.DNSToUpdate)
	for _, want := range []string{"2 large objects the peers' read-only role", peerUser, "GRANT SELECT ON LARGE OBJECT"} {
		if m.Status != statemachine.DumpFailed || !strings.Contains(m.LastError, want) {
			t.Fatalf("row %q: %q; want it to say %q", m.Status, m.LastError, want)
		}
	}
	if !m.BlockedAt.IsZero() {
		t.Errorf("the source was blocked at %v", m.BlockedAt)
	}
	if err := pgWrite(owner); err != nil {
		t.Errorf("the owner cannot write at the source: %v", err)
	}
	// The remedy the error names, then a retry.
	fleettest.PGExec(t, owner, "DO $$ DECLARE o oid; BEGIN FOR o IN SELECT oid FROM pg_largeobject_metadata LOOP EXECUTE format('GRANT SELECT ON LARGE OBJECT %s TO %I', o, "+ident.QuotePostgresLiteral(peerUser)+"); END LOOP; END $$")
	if _, err := f.state.Operate(ctx(t), id, statemachine.ActionRetry, "test", "granted"); err != nil {
		t.Fatal(err)
	}
	if m := f.waitStatus(t, id, statemachine.DNSToUpdate, statemachine.DumpFailed, statemachine.ImportFailed); m.Status != statemachine.DNSToUpdate {
		t.Fatalf("after the grant: %q: %s", m.Status, m.LastError)
	}
	var got string
	if err := f.dst.pg.Root(t, st.db).QueryRow(ctx(t), "SELECT string_agg(convert_from(lo_get(oid), 'UTF8'), ',' ORDER BY oid) FROM pg_largeobject_metadata").Scan(&got); err != nil || got != "private,also private" {
		t.Errorf("large objects at the destination: %q, %v", got, err)
	}
}

// TestPostgresRoleConflictFailsBeforeBlocking: a role of the same name
// with another password at the destination is found before the source is
// touched.
func TestPostgresRoleConflictFailsBeforeBlocking(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	st := newPGSite(t, f, "pgconflict")
	fleettest.PGExec(t, f.dst.pg.Root(t, "postgres"), "CREATE ROLE "+qp(st.owner)+" LOGIN PASSWORD 'someone else''s'")
	id := f.planEngine(t, statemachine.EnginePostgres, st.db)
	f.start(t, f.dst, agentOpts{}, statemachine.RoleDump, statemachine.RoleImport)
	f.start(t, f.src, agentOpts{}, statemachine.RoleClose)
	m := f.waitStatus(t, id, statemachine.DumpFailed, statemachine.ToImport, statemachine.DNSToUpdate)
	if m.Status != statemachine.DumpFailed || !strings.Contains(m.LastError, "different password verifier") || !strings.Contains(m.LastError, st.owner) {
		t.Fatalf("row %q: %q", m.Status, m.LastError)
	}
	if !m.BlockedAt.IsZero() {
		t.Errorf("the source was blocked at %v", m.BlockedAt)
	}
	if err := pgWrite(f.src.pg.Connect(t, st.db, st.owner, st.pass)); err != nil {
		t.Errorf("the owner cannot write at the source: %v", err)
	}
}
