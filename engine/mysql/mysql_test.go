package mysql_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	mysqldrv "github.com/go-sql-driver/mysql"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/mysql"
	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

func errNo(err error) uint16 {
	var me *mysqldrv.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

func count(t *testing.T, db *sql.DB, q string) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(ctx(t), q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func TestMigrateKeepsLoginsRowsAndObjects(t *testing.T) {
	src, dst := fleet(t)
	t.Parallel()
	db := name("shop_")
	u := shop(t, src, db)
	mg := migrate(t, src, dst, db)
	sameDatabase(t, src, dst, db)

	m := mg.manifest
	if m.Database != db || m.ServerFamily != mysql.MariaDB || m.Charset != "utf8mb4" || m.Collation != "utf8mb4_unicode_ci" ||
		m.ConsistencyPoint.IsZero() || m.ChecksumAlgorithm != mysql.ChecksumAlgorithm || len(m.Tables) != 3 {
		t.Errorf("manifest: %+v", m)
	}
	wantRows := map[string]int64{"items": 300, "log": 4, "odd `name` ü": 2}
	for _, ts := range m.Tables {
		if ts.Rows != wantRows[ts.Name] {
			t.Errorf("manifest: %s has %d rows, want %d", ts.Name, ts.Rows, wantRows[ts.Name])
		}
	}
	if !slices.Equal(m.Objects, []string{"event purge", "procedure add_log", "trigger items_note", "view cheap"}) {
		t.Errorf("manifest objects %q", m.Objects)
	}
	if len(m.Events) != 1 || m.Events[0].Name != "purge" || len(m.Users) != 2 || len(mg.secrets.Users) != 2 {
		t.Errorf("manifest events %+v, users %+v", m.Events, m.Users)
	}
	for _, us := range mg.secrets.Users {
		if !strings.Contains(us.CreateUser, "IDENTIFIED BY PASSWORD '*") {
			t.Errorf("secret of %s: %q", us.Name, us.CreateUser)
		}
	}
	for _, mu := range m.Users {
		for _, g := range mu.Grants {
			if strings.Contains(g, "PASSWORD") {
				t.Errorf("a grant in the manifest carries a hash: %q", g)
			}
		}
	}

	// The destination's event runs again, as the customer.
	var status, definer string
	if err := dst.root.QueryRow("SELECT STATUS, DEFINER FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ?", db).Scan(&status, &definer); err != nil ||
		status != "ENABLED" || definer != u.owner+"@%" {
		t.Errorf("event at the destination: %s as %s, %v", status, definer, err)
	}

	// The owner logs in at the destination with the original password,
	// reads what was there, writes; the trigger and procedure work.
	owner := customer(t, dst.m, u.owner, u.ownerPass, db, "")
	if n := count(t, owner, "SELECT COUNT(*) FROM items"); n != 300 {
		t.Errorf("owner reads %d items at the destination", n)
	}
	if _, err := owner.Exec("INSERT INTO items (name, price) VALUES ('after', 1)"); err != nil {
		t.Fatalf("owner writes at the destination: %v", err)
	}
	var note string
	if err := owner.QueryRow("SELECT note FROM items WHERE name = 'after'").Scan(&note); err != nil || note != "auto" {
		t.Errorf("trigger at the destination: %q, %v", note, err)
	}
	if _, err := owner.Exec("CALL add_log('called')"); err != nil {
		t.Errorf("procedure at the destination: %v", err)
	}
	if n := count(t, owner, "SELECT COUNT(*) FROM cheap"); n == 0 {
		t.Error("view at the destination is empty")
	}
	// The host-specific account logs in from its host only.
	reader := customer(t, dst.m, u.reader, u.readerPass, db, "127.0.0.9")
	if _, err := reader.Exec("INSERT INTO items (name) VALUES ('by reader')"); err != nil {
		t.Errorf("reader writes items at the destination: %v", err)
	}
	if err := customer(t, dst.m, u.reader, u.readerPass, db, "").Ping(); errNo(err) != 1045 {
		t.Errorf("reader from another host: %v, want access denied", err)
	}
	if err := customer(t, dst.m, u.owner, "wrong", db, "").Ping(); errNo(err) != 1045 {
		t.Errorf("owner with a wrong password: %v, want access denied", err)
	}

	// The source is still blocked: reads only.
	srcOwner := customer(t, src.m, u.owner, u.ownerPass, db, "")
	if n := count(t, srcOwner, "SELECT COUNT(*) FROM items"); n != 300 {
		t.Errorf("owner reads %d items at the blocked source", n)
	}
	if _, err := srcOwner.Exec("INSERT INTO items (name) VALUES ('late')"); errNo(err) != 1142 {
		t.Errorf("owner writes at the blocked source: %v", err)
	}
}

func TestBlockingHoldsForEverySessionAndUnblockRestoresGrants(t *testing.T) {
	src, _ := fleet(t)
	t.Parallel()
	db := name("blk_")
	u := shop(t, src, db)
	ownerBefore, readerBefore := grantsOf(t, src, u.owner, "%"), grantsOf(t, src, u.reader, "127.0.0.9")

	// Session 1, opened before blocking and idle.
	s1 := customer(t, src.m, u.owner, u.ownerPass, db, "")
	s1.SetMaxIdleConns(1)
	if err := s1.Ping(); err != nil {
		t.Fatal(err)
	}
	// Session 2, opened before blocking, in a write transaction.
	s2db := customer(t, src.m, u.owner, u.ownerPass, db, "")
	tx, err := s2db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec("INSERT INTO log VALUES (NOW(), 'uncommitted', 2)"); err != nil {
		t.Fatal(err)
	}

	s, err := src.srv.Inspect(ctx(t), db)
	if err != nil {
		t.Fatal(err)
	}
	a, err := src.srv.PlanBlock(ctx(t), s)
	if err != nil {
		t.Fatal(err)
	}
	ended, err := src.srv.Block(ctx(t), a)
	if err != nil {
		t.Fatal(err)
	}
	if ended < 2 {
		t.Errorf("block ended %d sessions, want at least 2", ended)
	}
	// Session 1 cannot write: its connection is gone, and the pool's next
	// one is refused.
	if _, err := s1.Exec("INSERT INTO log VALUES (NOW(), 's1', 1)"); err == nil {
		t.Error("session opened before blocking wrote")
	}
	// Session 2's transaction was rolled back and cannot commit.
	if err := tx.Commit(); err == nil {
		t.Error("a transaction open across the block committed")
	}
	if n := count(t, src.root, "SELECT COUNT(*) FROM "+ident.QuoteMySQL(db)+".log WHERE msg IN ('uncommitted', 's1')"); n != 0 {
		t.Errorf("%d writes reached the blocked database", n)
	}
	// Session 3, new: reads, cannot write, cannot call the procedure that writes.
	s3 := customer(t, src.m, u.owner, u.ownerPass, db, "")
	if n := count(t, s3, "SELECT COUNT(*) FROM items"); n != 300 {
		t.Errorf("new session reads %d items", n)
	}
	for _, st := range []string{"INSERT INTO log VALUES (NOW(), 's3', 3)", "UPDATE items SET price = 0", "DELETE FROM log", "CREATE TABLE x (a int)", "CALL add_log('s3')"} {
		if _, err := s3.Exec(st); err == nil {
			t.Errorf("blocked: %s succeeded", st)
		}
	}
	reader := customer(t, src.m, u.reader, u.readerPass, db, "127.0.0.9")
	if _, err := reader.Exec("INSERT INTO items (name) VALUES ('r')"); errNo(err) != 1142 {
		t.Errorf("table-level writer while blocked: %v", err)
	}
	if n := count(t, reader, "SELECT COUNT(*) FROM items"); n != 300 {
		t.Errorf("table-level reader reads %d while blocked", n)
	}
	var status string
	if err := src.root.QueryRow("SELECT STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ?", db).Scan(&status); err != nil || status != "DISABLED" {
		t.Errorf("event while blocked: %s, %v", status, err)
	}

	// Unblock: exactly the original grants, writes work again. Twice: it
	// is idempotent.
	// The sessions opened while blocked (the reader's and the owner's
	// above) are ended at the first: they would keep the block's
	// privileges.
	for i := range 2 {
		warnings, err := src.srv.Unblock(ctx(t), a)
		ended := len(warnings) == 1 && strings.Contains(warnings[0], "sessions opened while writes were blocked were ended")
		if err != nil || i == 0 && !ended || i == 1 && len(warnings) > 0 {
			t.Fatalf("unblock %d: %v %q", i+1, err, warnings)
		}
	}
	if got := grantsOf(t, src, u.owner, "%"); !slices.Equal(got, ownerBefore) {
		t.Errorf("owner's grants after unblock:\n%q\nbefore:\n%q", got, ownerBefore)
	}
	if got := grantsOf(t, src, u.reader, "127.0.0.9"); !slices.Equal(got, readerBefore) {
		t.Errorf("reader's grants after unblock:\n%q\nbefore:\n%q", got, readerBefore)
	}
	s4 := customer(t, src.m, u.owner, u.ownerPass, db, "")
	if _, err := s4.Exec("CALL add_log('after')"); err != nil {
		t.Errorf("write after unblock: %v", err)
	}
	if _, err := reader.Exec("INSERT INTO items (name) VALUES ('r2')"); err != nil {
		t.Errorf("table-level write after unblock: %v", err)
	}
	var definer string
	if err := src.root.QueryRow("SELECT STATUS, DEFINER FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ?", db).Scan(&status, &definer); err != nil ||
		status != "ENABLED" || definer != u.owner+"@%" {
		t.Errorf("event after unblock: %s as %s, %v", status, definer, err)
	}
}

func TestVerifyCatchesAPlantedDifference(t *testing.T) {
	src, dst := fleet(t)
	t.Parallel()
	db := name("plant_")
	shop(t, src, db)
	mg := dumpBlocked(t, src, db)
	t.Cleanup(func() { _, _ = src.srv.Unblock(context.Background(), mg.access) })
	rec, err := importInto(t, dst, mg)
	t.Cleanup(func() { _ = dst.srv.DropImport(context.Background(), *rec) })
	if err != nil {
		t.Fatal(err)
	}
	exec(t, dst.root, "DELETE FROM "+ident.QuoteMySQL(db)+".log WHERE msg IS NULL LIMIT 1")
	err = dst.srv.Verify(ctx(t), mg.manifest, nil)
	if !errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), "log: 3 rows, 4 expected") {
		t.Fatalf("verify after deleting a row: %v", err)
	}
	exec(t, dst.root, "INSERT INTO "+ident.QuoteMySQL(db)+".log VALUES (NULL, NULL, NULL)",
		"UPDATE "+ident.QuoteMySQL(db)+".items SET name = 'changed' WHERE id = 7")
	err = dst.srv.Verify(ctx(t), mg.manifest, nil)
	if !errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), "items: same row count (300), different contents") || strings.Contains(err.Error(), "log") {
		t.Fatalf("verify after changing a value: %v", err)
	}
	// DropImport removes the database and the accounts the import created.
	if err := dst.srv.DropImport(ctx(t), *rec); err != nil {
		t.Fatal(err)
	}
	if n := count(t, dst.root, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = "+sqlString(db)); n != 0 {
		t.Error("database still there after DropImport")
	}
	for _, u := range rec.CreatedUsers {
		if n := count(t, dst.root, "SELECT COUNT(*) FROM mysql.user WHERE User = "+sqlString(u.Name)); n != 0 {
			t.Errorf("account %s still there after DropImport", u.Name)
		}
	}
}

func TestAwkwardNames(t *testing.T) {
	src, dst := fleet(t)
	t.Parallel()
	names := []string{"we`ird", "it's \"quoted\"", "with space", "100%", "under_score", "ünïcødé 数据库", strings.Repeat("x", 64),
		strings.Repeat("é", 64), "-dash", `back\slash`, "semi;colon -- x"}
	for i, db := range names {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			u := shop(t, src, db)
			migrate(t, src, dst, db)
			sameDatabase(t, src, dst, db)
			owner := customer(t, dst.m, u.owner, u.ownerPass, db, "")
			if _, err := owner.Exec("INSERT INTO log VALUES (NOW(), 'hello', 1)"); err != nil {
				t.Errorf("%q: owner writes at the destination: %v", db, err)
			}
		})
	}
}

func TestAccountWithTwoDatabasesKeepsTheOther(t *testing.T) {
	src, dst := fleet(t)
	t.Parallel()
	db, other := name("two_a_"), name("two_b_")
	u := shop(t, src, db)
	exec(t, src.root, "CREATE DATABASE "+ident.QuoteMySQL(other), "CREATE TABLE "+ident.QuoteMySQL(other)+".t (a INT)",
		"GRANT SELECT, INSERT ON "+ident.QuoteMySQL(other)+".t TO "+acct(u.owner, "%"))
	t.Cleanup(func() { _, _ = src.root.Exec("DROP DATABASE IF EXISTS " + ident.QuoteMySQL(other)) })
	otherLine := func(s *side) []string {
		var out []string
		for _, l := range grantsOf(t, s, u.owner, "%") {
			if strings.Contains(l, other) {
				out = append(out, l)
			}
		}
		return out
	}
	before := otherLine(src)
	if len(before) != 1 {
		t.Fatalf("fixture: %q", before)
	}
	mg := migrate(t, src, dst, db)
	if got := otherLine(src); !slices.Equal(got, before) {
		t.Errorf("the other database's grants changed at the source while blocked: %q", got)
	}
	srcOwner := customer(t, src.m, u.owner, u.ownerPass, other, "")
	if _, err := srcOwner.Exec("INSERT INTO t VALUES (1)"); err != nil {
		t.Errorf("the other database is blocked too: %v", err)
	}
	if got := otherLine(dst); len(got) != 0 {
		t.Errorf("the destination gave the account grants on the other database: %q", got)
	}
	// Closing the source takes the migrated database away, not the other.
	s, err := src.srv.Inspect(ctx(t), db)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := src.srv.PlanClose(ctx(t), s)
	if err != nil {
		t.Fatal(err)
	}
	open := customer(t, src.m, u.owner, u.ownerPass, db, "")
	if err := open.Ping(); err != nil {
		t.Fatal(err)
	}
	ended, err := src.srv.CloseAccess(ctx(t), cl)
	if err != nil || ended < 1 {
		t.Fatalf("close: ended %d sessions, %v", ended, err)
	}
	if got := otherLine(src); !slices.Equal(got, before) {
		t.Errorf("the other database's grants changed at close: %q", got)
	}
	if err := customer(t, src.m, u.owner, u.ownerPass, db, "").Ping(); errNo(err) != 1044 {
		t.Errorf("owner connects to the closed database: %v, want access denied", err)
	}
	if _, err := customer(t, src.m, u.owner, u.ownerPass, other, "").Exec("INSERT INTO t VALUES (2)"); err != nil {
		t.Errorf("the other database after close: %v", err)
	}
	if sums, err := src.srv.Checksums(ctx(t), db, s.Tables, nil); err != nil || len(engine.Diff(mg.manifest.Tables, sums)) != 0 {
		t.Errorf("closed source no longer matches its dump: %v %v", err, engine.Diff(mg.manifest.Tables, sums))
	}
}

func TestWildcardGrantIsNarrowedAndRestored(t *testing.T) {
	src, dst := fleet(t)
	t.Parallel()
	prefix := name("cust")
	a, b := prefix+"_a", prefix+"_b"
	user := prefix + " user"
	for _, d := range []string{a, b} {
		exec(t, src.root, "CREATE DATABASE "+ident.QuoteMySQL(d), "CREATE TABLE "+ident.QuoteMySQL(d)+".t (a INT)")
	}
	exec(t, src.root, "CREATE USER "+acct(user, "%")+" IDENTIFIED BY 'pw'",
		"GRANT ALL PRIVILEGES ON "+ident.QuoteMySQL(prefix+`\_%`)+".* TO "+acct(user, "%"))
	t.Cleanup(func() {
		_, _ = src.root.Exec("DROP DATABASE IF EXISTS " + ident.QuoteMySQL(a))
		_, _ = src.root.Exec("DROP DATABASE IF EXISTS " + ident.QuoteMySQL(b))
		_, _ = src.root.Exec("DROP USER IF EXISTS " + acct(user, "%"))
	})
	before := grantsOf(t, src, user, "%")
	mg := dumpBlocked(t, src, a)
	c := customer(t, src.m, user, "pw", "", "")
	if _, err := c.Exec("INSERT INTO " + ident.QuoteMySQL(b) + ".t VALUES (1)"); err != nil {
		t.Errorf("the wildcard's other database is blocked: %v", err)
	}
	if _, err := c.Exec("INSERT INTO " + ident.QuoteMySQL(a) + ".t VALUES (1)"); errNo(err) != 1142 {
		t.Errorf("write to the blocked database through a wildcard grant: %v", err)
	}
	rec, err := importInto(t, dst, mg)
	dropAtEnd(t, dst, a, acct(user, "%"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{fmt.Sprintf("%q", "GRANT ALL PRIVILEGES ON "+ident.QuoteMySQL(strings.ReplaceAll(a, "_", `\_`))+".* TO "+acct(user, "%"))}
	var got []string
	for _, l := range grantsOf(t, dst, user, "%") {
		if !strings.Contains(l, "USAGE") {
			got = append(got, l)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("destination grants %q, want the exact database %q", got, want)
	}
	_ = rec
	if _, err := src.srv.Unblock(ctx(t), mg.access); err != nil {
		t.Fatal(err)
	}
	if got := grantsOf(t, src, user, "%"); !slices.Equal(got, before) {
		t.Errorf("grants after unblock %q, before %q", got, before)
	}
	// Closing keeps the other database reachable through an exact grant.
	s, _ := src.srv.Inspect(ctx(t), a)
	cl, err := src.srv.PlanClose(ctx(t), s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.srv.CloseAccess(ctx(t), cl); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec("INSERT INTO " + ident.QuoteMySQL(b) + ".t VALUES (2)"); err != nil {
		t.Errorf("the wildcard's other database after close: %v", err)
	}
	if _, err := c.Exec("SELECT * FROM " + ident.QuoteMySQL(a) + ".t"); errNo(err) != 1142 {
		t.Errorf("read of the closed database: %v", err)
	}
}

func TestSourceProblems(t *testing.T) {
	src, _ := fleet(t)
	t.Parallel()
	_, err := src.srv.Inspect(ctx(t), "no such database")
	if !errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), `database "no such database" does not exist on source`) {
		t.Errorf("missing database: %v", err)
	}
	// Case matters: Shop is not shop.
	db := name("case_")
	shop(t, src, db)
	if _, err := src.srv.Inspect(ctx(t), strings.ToUpper(db)); !errors.Is(err, engine.ErrPermanent) {
		t.Errorf("inspect %s found %s: %v", strings.ToUpper(db), db, err)
	}
	// An administrator that cannot log in is told so, permanently.
	_, err = mysql.Open(ctx(t), engine.Server{Host: "source", Address: src.m.Addr(), User: adminUser, Password: "wrong"}, mysql.Options{})
	if !errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), "refused the administrator account") || strings.Contains(err.Error(), "wrong") {
		t.Errorf("wrong admin password: %v", err)
	}
	// An unreachable server is transient.
	_, err = mysql.Open(ctx(t), engine.Server{Host: "gone", Address: fleettest.FreeAddr(t), User: adminUser}, mysql.Options{})
	if err == nil || errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("unreachable server: %v", err)
	}
}

func TestDestinationConflicts(t *testing.T) {
	src, dst := fleet(t)
	t.Parallel()
	db := name("conflict_")
	u := shop(t, src, db)
	s, err := src.srv.Inspect(ctx(t), db)
	if err != nil {
		t.Fatal(err)
	}
	in := mysql.IncomingFromSource(s)

	// A database with something in it: refused, naming what is there.
	exec(t, dst.root, "CREATE DATABASE "+ident.QuoteMySQL(db), "CREATE TABLE "+ident.QuoteMySQL(db)+".precious (a INT)")
	dropAtEnd(t, dst, db)
	_, err = dst.srv.CheckDestination(ctx(t), in)
	if !errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), "table precious") {
		t.Errorf("non-empty destination database: %v", err)
	}
	// An empty one may be used.
	exec(t, dst.root, "DROP TABLE "+ident.QuoteMySQL(db)+".precious")
	d, err := dst.srv.CheckDestination(ctx(t), in)
	if err != nil || !d.ExistsEmpty || len(d.Create) != 2 {
		t.Fatalf("empty destination database: %+v, %v", d, err)
	}
	// Room: checked where the server tells (MariaDB's DISKS plugin).
	if _, err := dst.root.Exec("INSTALL SONAME 'disks'"); err != nil && !strings.Contains(err.Error(), "already") {
		t.Fatal(err)
	}
	huge := in
	huge.SizeBytes = 1 << 60
	if _, err := dst.srv.CheckDestination(ctx(t), huge); !errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), "free") {
		t.Errorf("no room: %v", err)
	}
	if d, err := dst.srv.CheckDestination(ctx(t), in); err != nil || len(d.Notes) != 0 {
		t.Errorf("room checked: %+v, %v", d, err)
	}
	// The same account with another password: refused, nothing changed.
	exec(t, dst.root, "CREATE USER "+acct(u.owner, "%")+" IDENTIFIED BY 'another'")
	dropAtEnd(t, dst, db, acct(u.owner, "%"))
	_, err = dst.srv.CheckDestination(ctx(t), in)
	if !errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), "another password") || !strings.Contains(err.Error(), u.owner) {
		t.Errorf("account with another password: %v", err)
	}
	// The same account with the same password is reused.
	exec(t, dst.root, "DROP USER "+acct(u.owner, "%"), "CREATE USER "+acct(u.owner, "%")+" IDENTIFIED BY "+sqlString(u.ownerPass))
	d, err = dst.srv.CheckDestination(ctx(t), in)
	if err != nil || len(d.Reuse) != 1 || d.Reuse[0].Name != u.owner || len(d.Create) != 1 {
		t.Errorf("account with the same password: %+v, %v", d, err)
	}
	// A newer source, another family: refused with the reason.
	newer := in
	newer.Version = "99.1.0-MariaDB"
	if _, err := dst.srv.CheckDestination(ctx(t), newer); !errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), "older than the source") {
		t.Errorf("newer source: %v", err)
	}
	other := in
	other.Family, other.Version = mysql.MySQL, "8.0.36"
	if _, err := dst.srv.CheckDestination(ctx(t), other); !errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), "across families") {
		t.Errorf("MySQL into MariaDB: %v", err)
	}
}

func TestPluginMissingAtDestination(t *testing.T) {
	src, dst := fleet(t)
	t.Parallel()
	if _, err := src.root.Exec("INSTALL SONAME 'auth_ed25519'"); err != nil && !strings.Contains(err.Error(), "already") {
		t.Fatal(err)
	}
	db := name("ed_")
	user := name("ed user ")
	exec(t, src.root, "CREATE DATABASE "+ident.QuoteMySQL(db),
		"CREATE USER "+acct(user, "%")+" IDENTIFIED VIA ed25519 USING PASSWORD('pw')",
		"GRANT ALL ON "+exactDB(db)+".* TO "+acct(user, "%"))
	t.Cleanup(func() {
		_, _ = src.root.Exec("DROP DATABASE " + ident.QuoteMySQL(db))
		_, _ = src.root.Exec("DROP USER " + acct(user, "%"))
	})
	s, err := src.srv.Inspect(ctx(t), db)
	if err != nil {
		t.Fatal(err)
	}
	_, err = dst.srv.CheckDestination(ctx(t), mysql.IncomingFromSource(s))
	if !errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), "ed25519 plugin") || !strings.Contains(err.Error(), user) {
		t.Errorf("ed25519 account into a server without the plugin: %v", err)
	}
}

func TestTruncatedOrCorruptDumpLeavesNothing(t *testing.T) {
	src, dst := fleet(t)
	t.Parallel()
	db := name("trunc_")
	shop(t, src, db)
	mg := dumpBlocked(t, src, db)
	t.Cleanup(func() { _, _ = src.srv.Unblock(context.Background(), mg.access) })
	whole := mg.dump

	check := func(label string, dump []byte, wantPermanent bool) {
		t.Helper()
		mg.dump = dump
		rec, err := importInto(t, dst, mg)
		if err == nil {
			t.Fatalf("%s: import succeeded", label)
		}
		if errors.Is(err, engine.ErrPermanent) != wantPermanent {
			t.Errorf("%s: permanent = %v, want %v: %v", label, !wantPermanent, wantPermanent, err)
		}
		if rec.Database != db || !rec.CreatedDatabase || len(rec.CreatedUsers) != 2 {
			t.Errorf("%s: record %+v", label, rec)
		}
		if err := dst.srv.DropImport(ctx(t), *rec); err != nil {
			t.Fatal(err)
		}
		if n := count(t, dst.root, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = "+sqlString(db)); n != 0 {
			t.Errorf("%s: partial database left", label)
		}
		for _, u := range rec.CreatedUsers {
			if n := count(t, dst.root, "SELECT COUNT(*) FROM mysql.user WHERE User = "+sqlString(u.Name)); n != 0 {
				t.Errorf("%s: account %s left", label, u.Name)
			}
		}
	}
	check("truncated", whole[:len(whole)*2/3], true)
	mg.dump = whole[:len(whole)/3]
	if rec, err := importInto(t, dst, mg); !errors.Is(err, mysql.ErrNoTrailer) {
		t.Errorf("a third of the dump: %v", err)
	} else if err := dst.srv.DropImport(ctx(t), *rec); err != nil {
		t.Fatal(err)
	}
	garbled := bytes.Clone(whole)
	copy(garbled[len(garbled)/2:], "\n);) GARBAGE ((\n")
	check("garbled", garbled, false)
}

func TestDestinationGoesAwayMidImport(t *testing.T) {
	src, _ := fleet(t)
	t.Parallel()
	priv := fleettest.NewMariaDB(t, fleettest.MariaDBConfig{})
	root := priv.RootDB(t)
	exec(t, root, "CREATE USER "+acct(adminUser, "%")+" IDENTIFIED BY "+sqlString(adminPass),
		"GRANT ALL PRIVILEGES ON *.* TO "+acct(adminUser, "%")+" WITH GRANT OPTION")
	dst := &side{name: "private", m: priv, root: root, srv: openServer(t, priv, "private", mysql.Options{})}

	db := name("away_")
	shop(t, src, db)
	big := ident.QuoteMySQL(db) + ".big"
	exec(t, src.root, "CREATE TABLE "+big+" (id INT PRIMARY KEY, pad VARCHAR(255))",
		"INSERT INTO "+big+" SELECT seq, REPEAT('x', 200) FROM "+ident.QuoteMySQL(db)+".seq_1_to_300000")
	mg := dumpBlocked(t, src, db)
	t.Cleanup(func() { _, _ = src.srv.Unblock(context.Background(), mg.access) })

	// Feed the dump slowly enough to stop the server in the middle.
	pr, pw := io.Pipe()
	var rec mysql.ImportRecord
	errc := make(chan error, 1)
	go func() {
		_, err := dst.srv.Import(context.Background(), mg.manifest, mg.secrets, pr, func(r mysql.ImportRecord) error { rec = r; return nil }, nil)
		errc <- err
	}()
	half := len(mg.dump) / 2
	if _, err := pw.Write(mg.dump[:half]); err != nil {
		t.Fatal(err)
	}
	if err := priv.Down(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_, _ = pw.Write(mg.dump[half:])
		_ = pw.Close()
	}()
	err := <-errc
	_ = pr.Close() // the import stopped reading: release the writer
	if err == nil || errors.Is(err, engine.ErrPermanent) {
		t.Fatalf("import into a server that went away: %v (want a transient error)", err)
	}
	if err := priv.Up(ctx(t)); err != nil {
		t.Fatal(err)
	}
	// The retry drops the partial import first, then imports and verifies.
	if err := dst.srv.DropImport(ctx(t), rec); err != nil {
		t.Fatalf("drop the partial import: %v", err)
	}
	if n := count(t, root, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = "+sqlString(db)); n != 0 {
		t.Fatal("partial database left")
	}
	if _, err := importInto(t, dst, mg); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if err := dst.srv.Verify(ctx(t), mg.manifest, nil); err != nil {
		t.Fatalf("verify the retry: %v", err)
	}
}

// fakeTool writes an executable script standing in for a dump tool.
func fakeTool(t *testing.T, dir, name, version, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	script := "#!/bin/sh\nif [ \"$2\" = --version ] || [ \"$1\" = --version ]; then echo '" + version + "'; exit 0; fi\n" + body + "\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

const (
	mariadbVersion = "mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)"
	mysqlVersion   = "mysqldump  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)"
)

func TestDumpToolProblems(t *testing.T) {
	src, _ := fleet(t)
	t.Parallel()
	db := name("tools_")
	shop(t, src, db)
	dir := t.TempDir()
	dump := func(opt mysql.Options) error {
		t.Helper()
		srv := openServer(t, src.m, "source", opt)
		var buf bytes.Buffer
		_, err := srv.Dump(ctx(t), db, false, &buf, nil)
		return err
	}
	err := dump(mysql.Options{DumpTool: filepath.Join(dir, "missing")})
	if !errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), "mariadb-client") {
		t.Errorf("missing tool: %v", err)
	}
	err = dump(mysql.Options{DumpTool: fakeTool(t, dir, "mysqldump", mysqlVersion, "exit 0")})
	if !errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), "MySQL's") || !strings.Contains(err.Error(), "runs MariaDB") {
		t.Errorf("MySQL's tool for a MariaDB server: %v", err)
	}
	// A tool killed midway, or one that stops early and exits 0: never a
	// dump that counts.
	err = dump(mysql.Options{DumpTool: fakeTool(t, dir, "killed", mariadbVersion, "echo 'CREATE TABLE t (a int);'; kill -9 $$")})
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("killed tool: %v", err)
	}
	err = dump(mysql.Options{DumpTool: fakeTool(t, dir, "short", mariadbVersion, "echo 'CREATE TABLE t (a int);'; exit 0")})
	if err == nil || !strings.Contains(err.Error(), "completion trailer") {
		t.Errorf("tool that stopped early: %v", err)
	}
	err = dump(mysql.Options{DumpTool: fakeTool(t, dir, "failing", mariadbVersion, "echo 'Got error: 2013: Lost connection' >&2; exit 2")})
	var te *mysql.ToolError
	if !errors.As(err, &te) || !strings.Contains(te.Stderr, "Lost connection") {
		t.Errorf("failing tool: %v", err)
	}
	// The credentials reach the tool through a file, not its arguments.
	argsFile := filepath.Join(dir, "args")
	err = dump(mysql.Options{DumpTool: fakeTool(t, dir, "spy", mariadbVersion, `echo "$@" > `+argsFile+`; cat "${1#--defaults-extra-file=}" >> `+argsFile+`; echo '-- Dump completed'`)})
	if err != nil {
		t.Fatal(err)
	}
	spied, _ := os.ReadFile(argsFile)
	args, cnf, _ := strings.Cut(string(spied), "\n")
	if !strings.HasPrefix(args, "--defaults-extra-file=") || strings.Contains(args, adminPass) || strings.Contains(args, "p\"a") {
		t.Errorf("tool arguments: %q", args)
	}
	if !strings.Contains(cnf, `password="p\"a's\\w#rd ü;x"`) {
		t.Errorf("credential file: %q", cnf)
	}
	credFile := strings.TrimPrefix(strings.Fields(args)[0], "--defaults-extra-file=")
	if _, err := os.Stat(credFile); !os.IsNotExist(err) {
		t.Errorf("credential file left behind: %v", err)
	}
}

func TestDumpToolNotOnPath(t *testing.T) {
	src, _ := fleet(t)
	db := name("path_")
	shop(t, src, db)
	dir := t.TempDir()
	t.Setenv("PATH", dir)
	srv := openServer(t, src.m, "source", mysql.Options{})
	_, err := srv.Dump(ctx(t), db, false, &bytes.Buffer{}, nil)
	if !errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), "no dump tool (mariadb-dump or mysqldump)") || !strings.Contains(err.Error(), "mariadb-client") {
		t.Errorf("no tool on PATH: %v", err)
	}
	fakeTool(t, dir, "mysqldump", mysqlVersion, "exit 0")
	_, err = srv.Dump(ctx(t), db, false, &bytes.Buffer{}, nil)
	if !errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), "MySQL's") {
		t.Errorf("only MySQL's mysqldump on PATH: %v", err)
	}
}

func TestCancelledDumpFails(t *testing.T) {
	src, _ := fleet(t)
	t.Parallel()
	db := name("cancel_")
	shop(t, src, db)
	exec(t, src.root, "CREATE TABLE "+ident.QuoteMySQL(db)+".big (id INT PRIMARY KEY, pad VARCHAR(255))",
		"INSERT INTO "+ident.QuoteMySQL(db)+".big SELECT seq, REPEAT('y', 200) FROM "+ident.QuoteMySQL(db)+".seq_1_to_200000")
	c, cancel := context.WithCancel(ctx(t))
	w := &cancelAfter{n: 1 << 20, cancel: cancel}
	_, err := src.srv.Dump(c, db, true, w, nil)
	if err == nil {
		t.Fatal("a dump cancelled midway succeeded")
	}
	// The schema part before the rows is complete; the dump is not.
	if bytes.Contains(w.buf.Bytes(), []byte("-- fleetmigrate: dump completed")) || bytes.Count(w.buf.Bytes(), []byte("-- Dump completed")) > 1 {
		t.Error("a cancelled dump has its trailer")
	}
}

type cancelAfter struct {
	buf    bytes.Buffer
	n      int
	cancel func()
}

func (c *cancelAfter) Write(p []byte) (int, error) {
	c.buf.Write(p)
	if c.buf.Len() > c.n {
		c.cancel()
	}
	return len(p), nil
}

// A dump comes in three parts that load either way: as one script through
// the client (Jobs 1, or an agent that ignores the parts) or with the rows
// over several sessions; both verify and give the same database.
func TestDumpPartsLoadEitherWay(t *testing.T) {
	src, dst := fleet(t)
	t.Parallel()
	db := name("parts_")
	u := shop(t, src, db)
	q := ident.QuoteMySQL(db)
	for i := range 12 {
		tq := q + "." + ident.QuoteMySQL(fmt.Sprintf("wide %d ü", i))
		exec(t, src.root, "CREATE TABLE "+tq+" (id INT PRIMARY KEY, b BLOB, s VARCHAR(100))",
			fmt.Sprintf("INSERT INTO %s SELECT seq, UNHEX(SHA2(seq, 256)), CONCAT('row ', seq, ';\n', %d) FROM %s.seq_1_to_%d", tq, i, q, 2000+i*500))
	}
	// Keys at the ends of their ranges: the ranges a verification with
	// several jobs splits them into must not overflow or miss a row.
	exec(t, src.root, "CREATE TABLE "+q+".signed (id BIGINT PRIMARY KEY, v INT)",
		"INSERT INTO "+q+".signed VALUES (-9223372036854775808, 1), (-5, 2), (0, NULL), (7, 4), (9223372036854775807, 5)",
		"CREATE TABLE "+q+".unsigned (id BIGINT UNSIGNED PRIMARY KEY, v INT)",
		"INSERT INTO "+q+".unsigned VALUES (0, 1), (18446744073709551615, 2), (9223372036854775808, 3)",
		"CREATE TABLE "+q+".one (id TINYINT PRIMARY KEY)", "INSERT INTO "+q+".one VALUES (3)",
		"CREATE TABLE "+q+".none (id SMALLINT PRIMARY KEY)")
	mg := dumpBlocked(t, src, db)
	t.Cleanup(func() { _, _ = src.srv.Unblock(context.Background(), mg.access) })
	var names []string
	var total int64
	for _, p := range mg.manifest.DumpParts {
		names = append(names, p.Name)
		total += p.Bytes
	}
	if !slices.Equal(names, []string{"schema", "data", "post"}) || total != int64(len(mg.dump)) {
		t.Fatalf("dump parts %+v for a dump of %d bytes", mg.manifest.DumpParts, len(mg.dump))
	}
	accounts := []string{acct(u.owner, "%"), acct(u.reader, "127.0.0.9")}
	for _, jobs := range []int{1, 3} {
		d := &side{name: dst.name, m: dst.m, root: dst.root, srv: openServer(t, dst.m, "destination", mysql.Options{Jobs: jobs, ParallelAbove: 1})}
		rec, err := importInto(t, d, mg)
		dropAtEnd(t, dst, db, accounts...)
		if err != nil {
			t.Fatalf("jobs %d: import: %v", jobs, err)
		}
		if err := d.srv.Verify(ctx(t), mg.manifest, nil); err != nil {
			t.Fatalf("jobs %d: verify: %v", jobs, err)
		}
		sameDatabase(t, src, d, db)
		if err := d.srv.DropImport(ctx(t), *rec); err != nil {
			t.Fatal(err)
		}
	}

	// A manifest whose parts do not add up to the dump is refused, and
	// nothing of the attempt remains once it is dropped.
	for _, c := range []struct {
		name  string
		delta int64
		want  string
	}{
		{"more bytes than the parts", -10, "without its completion trailer"},
		{"fewer bytes than the parts", +10, "truncated"},
	} {
		lying := *mg.manifest
		lying.DumpParts = slices.Clone(mg.manifest.DumpParts)
		lying.DumpParts[2].Bytes += c.delta
		rec, err := importInto(t, dst, &migrated{manifest: &lying, secrets: mg.secrets, dump: mg.dump})
		if !errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", c.name, err)
		}
		if err := dst.srv.DropImport(ctx(t), *rec); err != nil {
			t.Fatal(err)
		}
	}
	// A database under mysql.parallel-above is dumped in one run, without
	// parts, and loads as one script at a destination with several jobs.
	whole := dumpBlocked(t, &side{name: src.name, m: src.m, root: src.root, srv: openServer(t, src.m, "source", mysql.Options{ParallelAbove: -1})}, db)
	if whole.manifest.DumpParts != nil || bytes.Count(whole.dump, []byte("-- Dump completed")) != 1 {
		t.Errorf("a dump in one run has parts %+v", whole.manifest.DumpParts)
	}
	if rec, err := importInto(t, dst, whole); err != nil {
		t.Errorf("import of a dump in one run: %v", err)
	} else if err := dst.srv.Verify(ctx(t), whole.manifest, nil); err != nil {
		t.Errorf("verify a dump in one run: %v", err)
	} else if err := dst.srv.DropImport(ctx(t), *rec); err != nil {
		t.Fatal(err)
	}

	appended := append(slices.Clone(mg.dump), "DROP DATABASE mysql;\n"...)
	rec, err := importInto(t, dst, &migrated{manifest: mg.manifest, secrets: mg.secrets, dump: appended})
	if !errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), "21 bytes more than the parts") {
		t.Errorf("bytes after the last part: %v", err)
	}
	if err := dst.srv.DropImport(ctx(t), *rec); err != nil {
		t.Fatal(err)
	}
}
