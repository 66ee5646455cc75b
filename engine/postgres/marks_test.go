package postgres_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/postgres"
)

// quiet waits until no session is connected to database: a backend
// reports its counts before it leaves pg_stat_activity.
func quiet(t *testing.T, s *side, database string) {
	t.Helper()
	c := s.pg.Root(t, "postgres")
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := c.QueryRow(ctx(t), `SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'`, database).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			var who string
			_ = c.QueryRow(ctx(t), `SELECT string_agg(pid || ' ' || backend_start || ' ' || usename || ' ' || application_name || ' ' || state || ': ' || query, '; ') FROM pg_stat_activity WHERE datname = $1`, database).Scan(&who)
			t.Fatalf("%d sessions still connected to %q: %s", n, database, who)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// onceAs runs statements on a session of its own to database, as the
// superuser (whom no block keeps out), and waits until it is gone.
func onceAs(t *testing.T, s *side, database string, stmts ...string) {
	t.Helper()
	c, err := s.pg.Dial(ctx(t), database, "postgres", s.pg.Password)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range stmts {
		if _, err := c.Exec(ctx(t), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	_ = c.Close(ctx(t))
	quiet(t, s, database)
}

// marksNow takes database's marks through a server of its own, closed
// after (its kept session with it), as a close step does.
func marksNow(t *testing.T, s *side, database string) (*engine.Marks, int, error) {
	t.Helper()
	closer := sideOf(t, s.pg, "source", postgres.Options{})
	defer func() { _ = closer.srv.Close() }()
	return closer.srv.Marks(ctx(t), database)
}

// TestMarksSeeEveryKindOfWrite takes a database's change marks, writes to
// it in each way a leaked write could, and checks that the marks name the
// table written (or say "all"), and nothing else.
func TestMarksSeeEveryKindOfWrite(t *testing.T) {
	t.Parallel()
	src, _ := fleet(t)
	db := unique("marks_")
	dropAfter(t, db, nil, src)
	pgExec(t, src.pg.Root(t, "postgres"), "CREATE DATABASE "+qi(db))
	onceAs(t, src, db,
		`CREATE TABLE a (id int PRIMARY KEY, v text)`,
		`CREATE TABLE "B q" (id int, v text)`,
		`CREATE SEQUENCE s`,
		`INSERT INTO a SELECT g, 'x' || g FROM generate_series(1, 50) g`,
		`INSERT INTO "B q" SELECT g, 'y' FROM generate_series(1, 50) g`,
		`SELECT lo_from_bytea(0, 'lo')`)
	for _, c := range []struct {
		name   string
		stmts  []string
		tables []string
		all    string
	}{
		{"a read", []string{`SELECT count(*) FROM a`, `SELECT nextval('s')`}, nil, ""},
		{"insert", []string{`INSERT INTO a VALUES (1000, 'new')`}, []string{`"public"."a"`}, ""},
		{"update", []string{`UPDATE "B q" SET v = 'z' WHERE id = 3`}, []string{`"public"."B q"`}, ""},
		{"delete", []string{`DELETE FROM a WHERE id = 2`}, []string{`"public"."a"`}, ""},
		{"rolled back", []string{`BEGIN`, `INSERT INTO a VALUES (2000, 'gone')`, `ROLLBACK`}, []string{`"public"."a"`}, ""},
		{"truncate", []string{`TRUNCATE "B q"`}, []string{`"public"."B q"`}, ""},
		{"copy", []string{`COPY a FROM PROGRAM 'echo 3000,copied' WITH (FORMAT csv)`}, []string{`"public"."a"`}, ""},
		{"large object", []string{`SELECT lo_from_bytea(0, 'more')`}, []string{"large objects"}, ""},
		{"column added without a rewrite", []string{`ALTER TABLE a ADD COLUMN extra int DEFAULT 5`}, nil, "schema"},
		{"table created", []string{`CREATE TABLE c (id int)`}, nil, "schema"},
		{"statistics reset", []string{`SELECT pg_stat_reset()`}, nil, "started again"},
	} {
		before, n, err := marksNow(t, src, db)
		if err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("%s: %d sessions counted before the write", c.name, n)
		}
		onceAs(t, src, db, c.stmts...)
		after, _, err := marksNow(t, src, db)
		if err != nil {
			t.Fatal(err)
		}
		tables, all := before.Changed(after)
		if !slices.Equal(tables, c.tables) || (all == "") != (c.all == "") || !strings.Contains(all, c.all) {
			t.Errorf("%s: marks say tables %q, all %q; want %q, all saying %q", c.name, tables, all, c.tables, c.all)
		}
	}
	// A session still connected may not have reported its writes.
	open, err := src.pg.Dial(ctx(t), db, "postgres", src.pg.Password)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close(context.Background())
	if _, n, err := marksNow(t, src, db); err != nil || n != 1 {
		t.Errorf("with a session open: %d sessions counted (%v), want 1", n, err)
	}
}

// TestVerifySinceReadsOnlyWrittenTables dumps a database under the block,
// then re-checks it as the close step does: nothing read while nothing was
// written; after a superuser's write, only that table, and the difference
// found.
func TestVerifySinceReadsOnlyWrittenTables(t *testing.T) {
	t.Parallel()
	src, _ := fleet(t)
	db, owner := unique("since_"), unique("since_o_")
	dropAfter(t, db, []string{owner}, src)
	pgExec(t, src.pg.Root(t, "postgres"), "CREATE ROLE "+qi(owner)+" LOGIN PASSWORD 'pw'", "CREATE DATABASE "+qi(db)+" OWNER "+qi(owner))
	onceAs(t, src, db,
		`SET ROLE `+qi(owner),
		`CREATE TABLE a (id int PRIMARY KEY, v text)`,
		`CREATE TABLE b (id int PRIMARY KEY, v text)`,
		`INSERT INTO a SELECT g, 'x' || g FROM generate_series(1, 100) g`,
		`INSERT INTO b SELECT g, 'y' || g FROM generate_series(1, 100) g`)
	_, m, _, _ := dumpDB(t, src, db)
	_ = src.srv.Close() // the dump's agent is done with the source
	quiet(t, src, db)
	if m.Marks == nil || len(m.Marks.Tables) != 3 {
		t.Fatalf("the manifest's marks: %+v, want a, b and the large objects", m.Marks)
	}
	// Each close step opens its own server, as in the agent, and closes
	// it (its kept sessions with it).
	recheck := func() (int, string, error) {
		closer := sideOf(t, src.pg, "source", postgres.Options{})
		defer func() { _ = closer.srv.Close() }()
		checksummed := 0
		read, why, err := closer.srv.VerifySince(ctx(t), m, func(_, total int) { checksummed = total })
		if checksummed != read {
			t.Errorf("VerifySince says it read %d tables, it checksummed %d", read, checksummed)
		}
		return read, why, err
	}
	read, why, err := recheck()
	if err != nil || why != "" || read != 0 {
		t.Fatalf("nothing written: read %d tables (%q), %v; want none", read, why, err)
	}
	onceAs(t, src, db, `UPDATE b SET v = 'leaked' WHERE id = 7`)
	read, why, err = recheck()
	if !errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), `"public"."b": same row count (100), different contents`) || read != 1 || why != "" {
		t.Fatalf("after a write to b: read %d tables (%q), %v; want b read and found different", read, why, err)
	}
	// Without marks (a manifest of an earlier version) every table is read.
	m.Marks = nil
	read, why, err = recheck()
	if read != 3 || !strings.Contains(why, "no change marks") || err == nil {
		t.Fatalf("without marks: read %d tables (%q), %v; want all read, the write found", read, why, err)
	}
}
