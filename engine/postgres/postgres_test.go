package postgres_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/postgres"
	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
)

// TestMigrateDatabase moves a database with every kind of object and two
// login roles, then checks independently of the engine: each role logs in
// at the destination over TCP with its ORIGINAL password (SCRAM) and reads
// the same rows as at the source; sequences continue; unblocking the
// source restores its owner and privileges exactly.
func TestMigrateDatabase(t *testing.T) {
	t.Parallel()
	src, dst := fleet(t)
	db := unique("shop_")
	f := newFixture(t, src, dst, db, unique("owner_"), unique("reader_"))
	before := acl(t, src.pg, db)

	dump, m, sec, access := dumpDB(t, src, db)
	if m.LSN == "" || m.ConsistencyPoint.IsZero() || m.ChecksumAlgorithm != postgres.ChecksumRowMD5 {
		t.Errorf("manifest lacks its consistency point: %+v", m)
	}
	if len(m.Postgres.Roles) != 2 || len(sec.Users) != 2 || !strings.HasPrefix(sec.Users[0].Verifier, "SCRAM-SHA-256$") {
		t.Errorf("roles: %+v; secrets %d", m.Postgres.Roles, len(sec.Users))
	}
	if _, err := importDB(t, dst, dump, m, sec); err != nil {
		t.Fatalf("import: %v", err)
	}

	srcRoot := src.pg.Root(t, db)
	for _, who := range []struct{ user, pw string }{{f.owner, f.ownerPw}, {f.reader, f.readerPw}} {
		c := dst.pg.Connect(t, db, who.user, who.pw)
		for _, table := range f.tables {
			if got, want := rows(t, c, table), rows(t, srcRoot, table); !slices.Equal(got, want) || len(want) == 0 {
				t.Errorf("%s as %s: %d rows at the destination, %d at the source, or they differ", table, who.user, len(got), len(want))
			}
		}
		var lo []byte
		if err := c.QueryRow(ctx(t), "SELECT lo_get(oid) FROM pg_largeobject_metadata").Scan(&lo); err != nil && who.user == f.owner {
			t.Errorf("large object as its owner: %v", err)
		} else if who.user == f.owner && !bytes.HasPrefix(lo, []byte("large object large object")) {
			t.Errorf("large object: %q", lo[:20])
		}
	}
	var wrong error
	if c, err := dst.pg.Dial(ctx(t), db, f.owner, "not the password"); err == nil {
		_ = c.Close(ctx(t))
		t.Error("a wrong password logs in at the destination")
	} else {
		wrong = err
	}
	if !strings.Contains(wrong.Error(), "password authentication failed") {
		t.Errorf("wrong password: %v", wrong)
	}
	owner := dst.pg.Connect(t, db, f.owner, f.ownerPw)
	pgExec(t, owner,
		`INSERT INTO "Sales Dept"."Orders" (customer) VALUES ('after the move')`,
		`INSERT INTO inventory.items (sku) VALUES ('after the move')`)
	var setting string
	if err := dst.pg.Connect(t, db, f.reader, f.readerPw).QueryRow(ctx(t), "SELECT current_setting('search_path') || ' ' || current_setting('statement_timeout')").Scan(&setting); err != nil || setting != `"$user", public, "Sales Dept" 33s` {
		t.Errorf("settings at the destination: %q %v", setting, err)
	}
	if got, want := acl(t, dst.pg, db), before; got != want {
		t.Errorf("destination privileges %s, source's %s", got, want)
	}

	warnings, err := src.srv.Unblock(ctx(t), access)
	if err != nil || len(warnings) > 0 {
		t.Fatalf("unblock: %v %v", err, warnings)
	}
	if got := acl(t, src.pg, db); got != before {
		t.Errorf("after unblock: %s, before %s", got, before)
	}
	pgExec(t, src.pg.Connect(t, db, f.owner, f.ownerPw), `INSERT INTO inventory.log VALUES ('writes again', 9)`)
}

// TestWriteBlock proves the block with a real client: a session opened
// before and a new one cannot INSERT, whatever they set; the owner cannot
// grant itself access back from another database; reads of other
// databases go on; Unblock restores exactly a non-default ACL.
func TestWriteBlock(t *testing.T) {
	t.Parallel()
	src, dst := fleet(t)
	db, owner := unique("block_"), unique("blockowner_")
	f := newFixture(t, src, dst, db, owner, unique("blockreader_"))
	other := unique("blockother_")
	pgExec(t, src.pg.Root(t, "postgres"),
		"GRANT CREATE ON DATABASE "+qi(db)+" TO "+qi(f.reader)+" WITH GRANT OPTION",
		"CREATE DATABASE "+qi(other)+" OWNER "+qi(owner))
	dropAfter(t, other, nil, src)
	pgExec(t, src.pg.Connect(t, db, f.reader, f.readerPw), "SET ROLE "+qi(f.reader), "GRANT CREATE ON DATABASE "+qi(db)+" TO "+qi(owner))
	before := acl(t, src.pg, db)

	early := src.pg.Connect(t, db, owner, f.ownerPw)
	s, err := src.srv.Inspect(ctx(t), db)
	if err != nil {
		t.Fatal(err)
	}
	a, err := src.srv.PlanBlock(ctx(t), s)
	if err != nil {
		t.Fatal(err)
	}
	ended, err := src.srv.Block(ctx(t), a)
	if err != nil || ended < 1 {
		t.Fatalf("block: %d sessions ended, %v", ended, err)
	}
	count := func() (n int) {
		if err := src.pg.Root(t, db).QueryRow(ctx(t), "SELECT count(*) FROM inventory.log").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	rowsBefore := count()
	attempt := []string{"SET default_transaction_read_only = off", "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", "INSERT INTO inventory.log VALUES ('blocked?', 1)"}
	for _, st := range attempt {
		if _, err := early.Exec(ctx(t), st); err == nil {
			t.Errorf("session opened before the block: %s succeeded", st)
		}
	}
	if c, err := src.pg.Dial(ctx(t), db, owner, f.ownerPw); err == nil {
		for _, st := range attempt {
			if _, err := c.Exec(ctx(t), st); err == nil {
				t.Errorf("new session: %s succeeded", st)
			}
		}
		_ = c.Close(ctx(t))
	} else {
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "42501" {
			t.Errorf("new session refused, but not for lack of CONNECT: %v", err)
		}
	}
	// From a database it may still use, the former owner tries to undo.
	o := src.pg.Connect(t, other, owner, f.ownerPw)
	for _, st := range []string{"GRANT CONNECT ON DATABASE " + qi(db) + " TO " + qi(owner), "ALTER DATABASE " + qi(db) + " OWNER TO " + qi(owner),
		"ALTER DATABASE " + qi(db) + " SET default_transaction_read_only = off"} {
		if _, err := o.Exec(ctx(t), st); err == nil {
			t.Errorf("the former owner undid the block: %s", st)
		}
	}
	if n := count(); n != rowsBefore {
		t.Errorf("rows %d after the block, %d before", n, rowsBefore)
	}
	if _, err := src.srv.Block(ctx(t), a); err != nil {
		t.Errorf("block again: %v", err)
	}
	if warnings, err := src.srv.Unblock(ctx(t), a); err != nil || len(warnings) > 0 {
		t.Fatalf("unblock: %v %v", err, warnings)
	}
	if got := acl(t, src.pg, db); got != before {
		t.Errorf("after unblock:\n %s\nbefore:\n %s", got, before)
	}
	if _, err := src.srv.Unblock(ctx(t), a); err != nil {
		t.Errorf("unblock again: %v", err)
	}
	pgExec(t, src.pg.Connect(t, db, owner, f.ownerPw), "INSERT INTO inventory.log VALUES ('after', 2)")
}

// TestVerifyFindsDifference plants a difference at the destination.
func TestVerifyFindsDifference(t *testing.T) {
	t.Parallel()
	src, dst := fleet(t)
	db := unique("planted_")
	newFixture(t, src, dst, db, unique("po_"), unique("pr_"))
	dump, m, sec, _ := dumpDB(t, src, db)
	if _, err := importDB(t, dst, dump, m, sec); err != nil {
		t.Fatal(err)
	}
	pgExec(t, dst.pg.Root(t, db), `UPDATE inventory.log SET n = 5 WHERE line = 'line 3' AND n = 0`, `SELECT setval('inventory.items_id_seq', 999)`)
	err := dst.srv.Verify(ctx(t), m, nil)
	if !errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), `"inventory"."log": same row count`) || !strings.Contains(err.Error(), "items_id_seq") {
		t.Errorf("verify: %v", err)
	}
}

// TestVerifyFindsDifferenceHash64: a database above ChecksumSplit (here
// 8 kB, so the fixture is one) is checksummed with ChecksumRowHash64, its
// tables in block ranges over three sessions at each side; the import
// verifies, and a changed row and a dropped one are found.
func TestVerifyFindsDifferenceHash64(t *testing.T) {
	t.Parallel()
	fleettest.Integration(t)
	opt := postgres.Options{ChecksumSplit: 8 << 10, Jobs: 3}
	src := sideOf(t, fleettest.SharedPostgresAs(t, "source"), "source", opt)
	dst := sideOf(t, fleettest.SharedPostgresAs(t, "destination"), "destination", opt)
	db := unique("hash64_")
	newFixture(t, src, dst, db, unique("ho_"), unique("hr_"))
	dump, m, sec, _ := dumpDB(t, src, db)
	if m.ChecksumAlgorithm != postgres.ChecksumRowHash64 {
		t.Fatalf("manifest's algorithm %q, want %s", m.ChecksumAlgorithm, postgres.ChecksumRowHash64)
	}
	if _, err := importDB(t, dst, dump, m, sec); err != nil {
		t.Fatal(err)
	}
	pgExec(t, dst.pg.Root(t, db), `UPDATE "Sales Dept"."Orders" SET total = total + 0.01 WHERE id = 499`, `DELETE FROM inventory.items WHERE id = 7`)
	err := dst.srv.Verify(ctx(t), m, nil)
	if !errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), `"Sales Dept"."Orders": same row count`) || !strings.Contains(err.Error(), `"inventory"."items"`) {
		t.Errorf("verify: %v", err)
	}
}

// TestNames moves databases and roles whose names need quoting.
func TestNames(t *testing.T) {
	t.Parallel()
	src, dst := fleet(t)
	for _, name := range []string{`it's "quoted"`, "with space Mixed", "ünïcödé データ", strings.Repeat("é", 31) + "x"} {
		t.Run(name, func(t *testing.T) {
			db := name
			if len(db) < 63 {
				db = unique(db + " ")
			}
			owner := unique(`o"w n'er ü `)
			f := newFixture(t, src, dst, db, owner, unique("r "))
			dump, m, sec, _ := dumpDB(t, src, db)
			if _, err := importDB(t, dst, dump, m, sec); err != nil {
				t.Fatalf("import: %v", err)
			}
			c := dst.pg.Connect(t, db, f.owner, f.ownerPw)
			if got, want := rows(t, c, "inventory.items"), rows(t, src.pg.Root(t, db), "inventory.items"); !slices.Equal(got, want) {
				t.Error("rows differ")
			}
		})
	}
}

// TestRefusals are the bad inputs refused before anything changes.
func TestRefusals(t *testing.T) {
	t.Parallel()
	src, dst := fleet(t)
	db := unique("refused_")
	f := newFixture(t, src, dst, db, unique("ro_"), unique("rr_"))
	s, err := src.srv.Inspect(ctx(t), db)
	if err != nil {
		t.Fatal(err)
	}
	in := postgres.IncomingFromSource(s, src.srv.Major())

	t.Run("missing extension", func(t *testing.T) {
		bad := in
		bad.DB.Extensions = append(slices.Clone(bad.DB.Extensions), engine.Extension{Name: "fm_no_such_ext", Version: "1.0"})
		_, err := dst.srv.CheckDestination(ctx(t), bad)
		if !errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), "lacks extensions") || !strings.Contains(err.Error(), "fm_no_such_ext") {
			t.Errorf("%v", err)
		}
	})
	t.Run("role verifier conflict", func(t *testing.T) {
		pgExec(t, dst.pg.Root(t, "postgres"), "CREATE ROLE "+qi(f.reader)+" LOGIN PASSWORD 'another one'")
		_, err := dst.srv.CheckDestination(ctx(t), in)
		if !errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), f.reader) || !strings.Contains(err.Error(), "different password verifier") {
			t.Errorf("%v", err)
		}
		pgExec(t, dst.pg.Root(t, "postgres"), "DROP ROLE "+qi(f.reader))
	})
	t.Run("same verifier reused", func(t *testing.T) {
		sec, _ := in.Secrets.Secret(f.reader, "")
		pgExec(t, dst.pg.Root(t, "postgres"), sec.CreateUser)
		d, err := dst.srv.CheckDestination(ctx(t), in)
		if err != nil || !slices.Contains(d.ReuseRoles, f.reader) || slices.Contains(d.CreateRoles, f.reader) {
			t.Errorf("%+v %v", d, err)
		}
		pgExec(t, dst.pg.Root(t, "postgres"), "DROP ROLE "+qi(f.reader))
	})
	t.Run("encoding mismatch", func(t *testing.T) {
		pgExec(t, dst.pg.Root(t, "postgres"), "CREATE DATABASE "+qi(db)+" TEMPLATE template0 ENCODING 'LATIN1' LOCALE 'C'")
		defer pgExec(t, dst.pg.Root(t, "postgres"), "DROP DATABASE "+qi(db))
		_, err := dst.srv.CheckDestination(ctx(t), in)
		if !errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), "encoding mismatch") || !strings.Contains(err.Error(), "LATIN1") {
			t.Errorf("%v", err)
		}
	})
	t.Run("non-empty destination", func(t *testing.T) {
		pgExec(t, dst.pg.Root(t, "postgres"), "CREATE DATABASE "+qi(db))
		defer pgExec(t, dst.pg.Root(t, "postgres"), "DROP DATABASE "+qi(db)+" WITH (FORCE)")
		pgExec(t, dst.pg.Root(t, db), "CREATE TABLE theirs (x int)")
		_, err := dst.srv.CheckDestination(ctx(t), in)
		if !errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), `table "public"."theirs"`) {
			t.Errorf("%v", err)
		}
	})
	t.Run("missing database", func(t *testing.T) {
		_, err := src.srv.Inspect(ctx(t), db+"_nope")
		if !errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), "does not exist") {
			t.Errorf("%v", err)
		}
	})
	t.Run("tablespace", func(t *testing.T) {
		dir := t.TempDir()
		chownPostgres(t, dir)
		space := unique("space_")
		root := src.pg.Root(t, "postgres")
		pgExec(t, root, "CREATE TABLESPACE "+qi(space)+" LOCATION "+ql(dir))
		c := src.pg.Root(t, db)
		pgExec(t, c, "CREATE TABLE inventory.elsewhere (x int) TABLESPACE "+qi(space))
		t.Cleanup(func() {
			pgExec(t, c, "DROP TABLE inventory.elsewhere")
			pgExec(t, root, "DROP TABLESPACE "+qi(space))
		})
		_, err := src.srv.Inspect(ctx(t), db)
		if !errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), space) || !strings.Contains(err.Error(), "inventory.elsewhere") {
			t.Errorf("%v", err)
		}
	})
}

// chownPostgres gives dir to the postgres system user when the clusters
// run as it.
func chownPostgres(t *testing.T, dir string) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	out, err := osUser("postgres")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, out[0], out[1]); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestDumpToolTooOld: a pg_dump older than the server is refused, naming
// the package to install.
func TestDumpToolTooOld(t *testing.T) {
	t.Parallel()
	src, dst := fleet(t)
	root := t.TempDir()
	bin := filepath.Join(root, "14", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "pg_dump"), []byte("#!/bin/sh\necho 'pg_dump (PostgreSQL) 14.9'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	old := sideOf(t, src.pg, "source", postgres.Options{ToolsRoot: root})
	db := unique("oldtool_")
	newFixture(t, src, dst, db, unique("oo_"), unique("or_"))
	s, err := old.srv.Inspect(ctx(t), db)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := old.srv.Snapshot(ctx(t), db)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close(ctx(t))
	_, _, _, err = old.srv.Dump(ctx(t), s, snap, "source", &bytes.Buffer{}, nil)
	if !errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), "postgresql-client-15") || !strings.Contains(err.Error(), "14") {
		t.Errorf("%v", err)
	}
}

// TestImportFailures: a corrupt dump and a destination that goes away in
// the middle of the restore fail the import; DropImport then leaves
// nothing of it, and the retry succeeds.
func TestImportFailures(t *testing.T) {
	t.Parallel()
	src, _ := fleet(t)
	dpg := fleettest.NewPostgres(t, fleettest.PostgresConfig{Password: "own cluster"})
	dst := sideOf(t, dpg, "destination", postgres.Options{})
	db := unique("fail_")
	newFixture(t, src, dst, db, unique("fo_"), unique("fr_"))
	pgExec(t, src.pg.Root(t, db), `INSERT INTO inventory.log SELECT repeat(md5(g::text), 20), g FROM generate_series(1, 60000) g`)
	dump, m, sec, _ := dumpDB(t, src, db)

	gone := func(rec postgres.ImportRecord) {
		t.Helper()
		if _, err := dst.srv.DropImport(ctx(t), rec); err != nil {
			t.Fatalf("drop import: %v", err)
		}
		var n int
		if err := dpg.Root(t, "postgres").QueryRow(ctx(t), "SELECT (SELECT count(*) FROM pg_database WHERE datname = $1) + (SELECT count(*) FROM pg_roles WHERE rolname = ANY($2))",
			db, []string{m.Postgres.Roles[0].Name, m.Postgres.Roles[1].Name}).Scan(&n); err != nil || n != 0 {
			t.Errorf("after DropImport: %d of the database and roles left (%v)", n, err)
		}
	}

	corrupt := slices.Clone(dump)
	for i := len(corrupt) / 2; i < len(corrupt)/2+4096; i++ {
		corrupt[i] ^= 0x5a
	}
	rec, err := importDB(t, dst, corrupt, m, sec)
	if err == nil {
		t.Fatal("a corrupt dump imported")
	}
	t.Logf("corrupt dump: %v", err)
	gone(rec)

	rec, err = importDB(t, dst, dump[:len(dump)*2/3], m, sec)
	if err == nil {
		t.Fatal("a cut-off dump imported")
	}
	t.Logf("cut-off dump: %v", err)
	gone(rec)

	r := &stopAfter{r: bytes.NewReader(dump), after: int64(len(dump) / 2), stop: func() {
		if err := dpg.Down(); err != nil {
			t.Error(err)
		}
	}}
	_, err = dst.srv.Import(ctx(t), m, sec, r, func(x postgres.ImportRecord) error { rec = x; return nil }, nil)
	if err == nil {
		t.Fatal("import survived its destination going away")
	}
	t.Logf("destination went away: %v", err)
	if err := dpg.Up(ctx(t)); err != nil {
		t.Fatal(err)
	}
	dst = sideOf(t, dpg, "destination", postgres.Options{})
	gone(rec)
	if _, err := importDB(t, dst, dump, m, sec); err != nil {
		t.Fatalf("retry: %v", err)
	}
}

// TestParallelRestore imports above the parallel threshold: spooled, two
// workers, same result.
func TestParallelRestore(t *testing.T) {
	t.Parallel()
	src, dst := fleet(t)
	par := sideOf(t, dst.pg, "destination", postgres.Options{ParallelAbove: 1, Jobs: 2, TempDir: t.TempDir()})
	db := unique("parallel_")
	f := newFixture(t, src, dst, db, unique("pa_"), unique("pb_"))
	dump, m, sec, _ := dumpDB(t, src, db)
	// Above the threshold the dump goes through the spool directory: one
	// that does not exist fails the import there, and nothing is left.
	nowhere := sideOf(t, dst.pg, "destination", postgres.Options{ParallelAbove: 1, Jobs: 2, TempDir: filepath.Join(t.TempDir(), "missing")})
	rec, err := importDB(t, nowhere, dump, m, sec)
	if err == nil || !strings.Contains(err.Error(), "spool the dump") {
		t.Fatalf("import without a spool directory: %v", err)
	}
	if _, err := nowhere.srv.DropImport(ctx(t), rec); err != nil {
		t.Fatal(err)
	}
	if _, err := importDB(t, par, dump, m, sec); err != nil {
		t.Fatalf("parallel import: %v", err)
	}
	if got, want := rows(t, dst.pg.Connect(t, db, f.reader, f.readerPw), `"Sales Dept"."Orders"`), rows(t, src.pg.Root(t, db), `"Sales Dept"."Orders"`); !slices.Equal(got, want) {
		t.Error("rows differ")
	}
}

// TestClose closes a database: sessions ended and counted, no role can
// connect, the data stays.
func TestClose(t *testing.T) {
	t.Parallel()
	src, dst := fleet(t)
	db := unique("close_")
	f := newFixture(t, src, dst, db, unique("co_"), unique("cr_"))
	_ = src.pg.Connect(t, db, f.reader, f.readerPw)
	_, m, _, access := dumpDB(t, src, db)
	if _, err := src.srv.Unblock(ctx(t), access); err != nil {
		t.Fatal(err)
	}
	_ = src.pg.Connect(t, db, f.reader, f.readerPw)
	if err := src.srv.Verify(ctx(t), m, nil); err != nil {
		t.Fatalf("re-check of the untouched source: %v", err)
	}
	a, err := src.srv.PlanClose(ctx(t), m)
	if err != nil {
		t.Fatal(err)
	}
	ended, err := src.srv.CloseAccess(ctx(t), a)
	if err != nil || ended != 1 {
		t.Errorf("close: %d sessions ended, %v", ended, err)
	}
	for _, who := range [][2]string{{f.owner, f.ownerPw}, {f.reader, f.readerPw}} {
		if c, err := src.pg.Dial(ctx(t), db, who[0], who[1]); err == nil {
			_ = c.Close(ctx(t))
			t.Errorf("%s connects to the closed source", who[0])
		}
	}
	if err := src.srv.Verify(ctx(t), m, nil); err != nil {
		t.Errorf("the closed source's data: %v", err)
	}
}

// TestReusedRole: a role that exists at the destination with the same
// verifier is used as it is, logs in with its original password, and a
// dropped import keeps it while it drops the role the import created.
func TestReusedRole(t *testing.T) {
	t.Parallel()
	src, dst := fleet(t)
	db := unique("reuse_")
	f := newFixture(t, src, dst, db, unique("ru_"), unique("rv_"))
	dump, m, sec, _ := dumpDB(t, src, db)
	reader, _ := sec.Secret(f.reader, "")
	pgExec(t, dst.pg.Root(t, "postgres"), reader.CreateUser)
	rec, err := importDB(t, dst, dump, m, sec)
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	if got, want := rows(t, dst.pg.Connect(t, db, f.reader, f.readerPw), "inventory.items"), rows(t, src.pg.Root(t, db), "inventory.items"); !slices.Equal(got, want) {
		t.Error("the reused role reads other rows")
	}
	if _, err := dst.srv.DropImport(ctx(t), rec); err != nil {
		t.Fatal(err)
	}
	var kept []string
	if err := dst.pg.Root(t, "postgres").QueryRow(ctx(t), "SELECT coalesce(array_agg(rolname ORDER BY rolname), '{}') FROM pg_roles WHERE rolname = ANY($1)",
		[]string{f.owner, f.reader}).Scan(&kept); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(kept, []string{f.reader}) {
		t.Errorf("after DropImport the destination has roles %q; want only the reused %q", kept, f.reader)
	}
}
