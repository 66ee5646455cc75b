package mysql_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/mysql"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

var streamRows atomic.Int64

// everyByte is the 256 byte values in order, as hex.
var everyByte = func() string {
	var b strings.Builder
	for i := range 256 {
		fmt.Fprintf(&b, "%02X", i)
	}
	return b.String()
}()

// TestOnlineCopyStreamAndStop copies a database while a writer inserts
// into it, streams from the copy's position with a streamer that applies
// only that database (another customer's database of the same name at the
// destination, and a statement in the stream naming it, are left alone),
// then checks that the destination caught up with every row, that the
// tables the writer touched are the ones the binary log names, that a
// paused stream applies nothing, and that removing its record stops it.
func TestOnlineCopyStreamAndStop(t *testing.T) {
	src, dst := fleet(t)
	t.Parallel()
	db := name("onl'ine `db` ")
	shop(t, src, db)
	exec(t, src.root, "CREATE TABLE "+ident.QuoteMySQL(db)+".`types ü` (id INT PRIMARY KEY, i8 TINYINT, u8 TINYINT UNSIGNED, i16 SMALLINT, u16 SMALLINT UNSIGNED, "+
		"i24 MEDIUMINT, u24 MEDIUMINT UNSIGNED, i32 INT, u32 INT UNSIGNED, i64 BIGINT, u64 BIGINT UNSIGNED, dec_ DECIMAL(30,10), dbl DOUBLE, flt FLOAT, "+
		"bits BIT(3), e ENUM('a','b'), st SET('x','y','z'), d DATE, tm TIME, dt DATETIME(6), ts TIMESTAMP(6) NULL, yr YEAR, txt TEXT CHARACTER SET utf8mb4, "+
		"bin VARBINARY(10), lat VARCHAR(20) CHARACTER SET latin1, js LONGTEXT, gen INT AS (id * 2) VIRTUAL)",
		"CREATE TABLE "+ident.QuoteMySQL(db)+".quiet (id INT PRIMARY KEY)", "INSERT INTO "+ident.QuoteMySQL(db)+".quiet VALUES (1)",
		"CREATE SEQUENCE "+ident.QuoteMySQL(db)+".seq START WITH 100", "SELECT NEXTVAL("+ident.QuoteMySQL(db)+".seq)")
	other := name("other_customer")
	q, qo := ident.QuoteMySQL(db), ident.QuoteMySQL(other)
	// The other database exists at both servers (a customer the destination
	// already serves, with the same name as one at the source).
	exec(t, src.root, "CREATE DATABASE "+qo, "CREATE TABLE "+qo+".t (id INT PRIMARY KEY)", "INSERT INTO "+qo+".t VALUES (1)")
	exec(t, dst.root, "CREATE DATABASE "+qo, "CREATE TABLE "+qo+".t (id INT PRIMARY KEY)", "INSERT INTO "+qo+".t VALUES (42)")
	t.Cleanup(func() {
		_, _ = src.root.Exec("DROP DATABASE IF EXISTS " + qo)
		_, _ = dst.root.Exec("DROP DATABASE IF EXISTS " + qo)
	})

	for _, side := range []*side{src, dst} {
		r, err := side.srv.SourceReadiness(ctx(t))
		if err != nil || len(r.Problems) > 0 {
			t.Fatalf("%s as a source: %+v, %v", side.name, r, err)
		}
	}
	if r, err := dst.srv.DestinationReadiness(ctx(t), src.srv); err != nil || len(r.Problems) > 0 {
		t.Fatalf("destination readiness: %+v, %v", r, err)
	}
	s, err := src.srv.Inspect(ctx(t), db)
	if err != nil {
		t.Fatal(err)
	}
	problems, notes, err := src.srv.OnlineBlockers(ctx(t), s)
	if err != nil || len(problems) > 0 || len(notes) != 1 || !strings.Contains(notes[0], "`log`") {
		t.Fatalf("blockers: %v, notes %v, %v", problems, notes, err)
	}

	// A writer inserts into items for the whole copy.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var written atomic.Int64
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := src.root.Exec("INSERT INTO "+q+".items (name, price) VALUES (?, 1.5)", fmt.Sprintf("written %d", i)); err == nil {
				written.Add(1)
			}
			time.Sleep(2 * time.Millisecond)
		}
	})
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()

	st, tables, streamer, ran := copyAndStream(t, src, dst, s)
	// Every kind of value through the stream: inserted, updated, deleted
	// (a table with a key, one without with duplicate rows, the shop's).
	typed := ident.QuoteMySQL("types ü")
	exec(t, src.root,
		"INSERT INTO "+q+"."+typed+" VALUES (1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295, -9223372036854775808, 18446744073709551615, "+
			"-12345678901234567890.1234567890, 1.5e300, 0.1, b'101', 'b', 'x,z', '2026-02-03', '-838:59:59', '2026-02-03 04:05:06.123456', '2026-02-03 04:05:06.654321', 2026, "+
			"'café ✓', X'00FF80', 'latin é', '{\"a\": [1, 2]}', DEFAULT)",
		"INSERT INTO "+q+"."+typed+" (id) VALUES (2)",
		"UPDATE "+q+"."+typed+" SET u64 = 1, dec_ = 0.5, txt = NULL, bin = X'', e = 'a' WHERE id = 2",
		"UPDATE "+q+"."+typed+" SET id = 3 WHERE id = 2",
		"INSERT INTO "+q+".log VALUES ('2026-01-01 00:00:00', 'same', 1)",
		"DELETE FROM "+q+".log WHERE msg = 'same' LIMIT 1",
		"UPDATE "+q+".log SET n = 7 WHERE msg IS NULL LIMIT 1",
		"UPDATE "+q+".`odd ``name`` ü` SET b = b'11111', l = 'ça' WHERE `col, x` = 1",
		"DELETE FROM "+q+".items WHERE id % 7 = 0",
		"UPDATE "+q+".items SET photo = X'0001FEFF', price = price * 2 WHERE id % 5 = 0",
		// Every byte value, quotes and backslashes among them: the stream
		// writes them as escaped literals (batch.go).
		"UPDATE "+q+".items SET photo = X'"+everyByte+"', note = CONCAT('it''s \\ \"q\" ', id) WHERE id % 11 = 0",
		"SELECT NEXTVAL("+q+".seq)", "SELECT NEXTVAL("+q+".seq)",
		// a large transaction: many rows events, one commit
		"INSERT INTO "+q+".items (name, price, note) SELECT CONCAT('bulk ', seq), seq / 100, REPEAT('b', 200) FROM "+q+".seq_1_to_30000",
	)

	// Changes the stream must not apply: another database's row, and a
	// statement run from this database that names the other one.
	exec(t, src.root, "INSERT INTO "+qo+".t VALUES (2)")
	beforeDrop, err := src.srv.BinlogNow(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	c, err := src.root.Conn(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{"USE " + q, "DROP TABLE " + qo + ".t"} {
		if _, err := c.ExecContext(ctx(t), stmt); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.Close()
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()

	now, err := src.srv.BinlogNow(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	ok, srec, err := dst.srv.WaitStreamApplied(ctx(t), st.Name, now, 20*time.Second)
	if err != nil || !ok {
		t.Fatalf("the destination did not apply up to %s: %v, %v (%+v)", now, ok, err, srec)
	}
	srcSums, err := src.srv.ChecksumsAll(ctx(t), db, tables)
	if err != nil {
		t.Fatal(err)
	}
	dstSums, err := dst.srv.ChecksumsAll(ctx(t), db, tables)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(srcSums, dstSums) {
		t.Errorf("after catching up: source %v, destination %v", srcSums, dstSums)
	}
	// The writer's single-row transactions after the copy, one after
	// another, were applied in groups: fewer commits than source
	// transactions.
	rows, txns, commits := streamer.Applied()
	if txns < 20 || rows < 30000 || commits == 0 || commits*2 > txns {
		t.Errorf("applied %d rows in %d source transactions and %d commits; the writer's transactions should be grouped", rows, txns, commits)
	}
	t.Logf("applied %d rows in %d source transactions, %d destination commits", rows, txns, commits)
	// The sequence moved on at the source: at the destination too.
	var seqSrc, seqDst int64
	if err := src.root.QueryRow("SELECT NEXT_NOT_CACHED_VALUE FROM " + q + ".seq").Scan(&seqSrc); err != nil {
		t.Fatal(err)
	}
	if err := dst.root.QueryRow("SELECT NEXT_NOT_CACHED_VALUE FROM " + q + ".seq").Scan(&seqDst); err != nil || seqDst != seqSrc {
		t.Errorf("the sequence's next value not cached: %d at the source, %d at the destination (%v)", seqSrc, seqDst, err)
	}
	var n, atSrc int64
	if err := dst.root.QueryRow("SELECT COUNT(*) FROM " + q + ".items WHERE name LIKE 'written %'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if err := src.root.QueryRow("SELECT COUNT(*) FROM " + q + ".items WHERE name LIKE 'written %'").Scan(&atSrc); err != nil || n != atSrc || n == 0 {
		t.Errorf("written rows: %d at the destination, %d at the source (%v), %d acknowledged", n, atSrc, err, written.Load())
	}
	var kept int
	if err := dst.root.QueryRow("SELECT id FROM " + qo + ".t").Scan(&kept); err != nil || kept != 42 {
		t.Errorf("the destination's other database was touched by the stream: %d, %v", kept, err)
	}
	changed, err := src.srv.ChangedTables(ctx(t), db, tables, st.Start, beforeDrop)
	if err != nil || len(changed) != 4 || !changed["items"] || !changed["log"] || !changed["types ü"] || !changed["odd `name` ü"] || changed["quiet"] {
		t.Errorf("tables changed since the copy: %v, %v", changed, err)
	}
	// A statement run from the database (the DROP TABLE of the other one)
	// may have written to it for all the log says: every table counts.
	if changed, err := src.srv.ChangedTables(ctx(t), db, tables, st.Start, now); err != nil || len(changed) != len(tables) {
		t.Errorf("tables changed since the copy, across a statement run from the database: %v, %v", changed, err)
	}
	at, sums, err := src.srv.SnapshotChecksums(ctx(t), db, tables)
	if err != nil || !slices.Equal(sums, srcSums) || at.Compare(now) < 0 {
		t.Errorf("snapshot checksums at %s: %v, %v (want %v at or after %s)", at, sums, err, srcSums, now)
	}
	// Paused, the stream applies nothing; resumed, it goes on.
	paused, err := streamer.Pause(ctx(t))
	if err != nil || paused.Compare(now) < 0 {
		t.Fatalf("pause at %s: %v", paused, err)
	}
	exec(t, src.root, "INSERT INTO "+q+".items (name, price) VALUES ('while paused', 2)")
	time.Sleep(300 * time.Millisecond)
	if err := dst.root.QueryRow("SELECT COUNT(*) FROM " + q + ".items WHERE name = 'while paused'").Scan(&n); err != nil || n != 0 {
		t.Errorf("a paused stream applied a row: %d, %v", n, err)
	}
	streamer.Resume()
	now, _ = src.srv.BinlogNow(ctx(t))
	if ok, _, err := dst.srv.WaitStreamApplied(ctx(t), st.Name, now, 10*time.Second); !ok || err != nil {
		t.Fatalf("after resuming: %v, %v", ok, err)
	}
	recs, err := dst.srv.StreamRecords(ctx(t), engine.StreamPrefix)
	if err != nil || !slices.ContainsFunc(recs, func(r mysql.StreamRecord) bool { return r.Name == st.Name && r.Database == db }) {
		t.Fatalf("stream records: %v, %v", recs, err)
	}
	// Removing the record stops the streamer (fenced): what is written
	// after is not applied.
	for range 2 { // idempotent
		if err := dst.srv.RemoveStreamRecord(ctx(t), st.Name); err != nil {
			t.Fatal(err)
		}
	}
	exec(t, src.root, "INSERT INTO "+q+".items (name, price) VALUES ('after the stream', 3)")
	select {
	case err := <-ran:
		if !errors.Is(err, mysql.ErrFenced) {
			t.Errorf("the streamer ended with %v, want ErrFenced", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the streamer did not stop after its record was removed")
	}
	if err := dst.root.QueryRow("SELECT COUNT(*) FROM " + q + ".items WHERE name = 'after the stream'").Scan(&n); err != nil || n != 0 {
		t.Errorf("a row written after the stream's removal reached the destination: %d, %v", n, err)
	}
	if r, err := dst.srv.StreamRecordOf(ctx(t), st.Name); err != nil || r.Exists {
		t.Errorf("after removal: %+v, %v", r, err)
	}
}

// TestOnlineBlockers: a table that is not InnoDB keeps a database from
// streaming (named); nothing changes.
func TestOnlineBlockers(t *testing.T) {
	src, _ := fleet(t)
	t.Parallel()
	for _, c := range []struct{ db, ddl, want string }{
		{name("myisam"), "CREATE TABLE %s.old (id INT PRIMARY KEY) ENGINE=MyISAM", "`old` (MyISAM)"},
	} {
		q := ident.QuoteMySQL(c.db)
		exec(t, src.root, "CREATE DATABASE "+q, fmt.Sprintf(c.ddl, q))
		t.Cleanup(func() { _, _ = src.root.Exec("DROP DATABASE IF EXISTS " + q) })
		s, err := src.srv.Inspect(ctx(t), c.db)
		if err != nil {
			t.Fatal(err)
		}
		problems, _, err := src.srv.OnlineBlockers(ctx(t), s)
		if err != nil || len(problems) != 1 || !strings.Contains(problems[0], c.want) {
			t.Errorf("%s: %v, %v (want one naming %s)", c.db, problems, err, c.want)
		}
	}
}

func TestBinlogPositions(t *testing.T) {
	files := []mysql.BinlogPos{{File: "b.000001", Pos: 1000}, {File: "b.000002", Pos: 500}, {File: "b.000003", Pos: 300}}
	for _, c := range []struct {
		from, to mysql.BinlogPos
		want     int64
	}{
		{mysql.BinlogPos{File: "b.000001", Pos: 400}, mysql.BinlogPos{File: "b.000001", Pos: 900}, 500},
		{mysql.BinlogPos{File: "b.000001", Pos: 400}, mysql.BinlogPos{File: "b.000003", Pos: 100}, 600 + 500 + 100},
		{mysql.BinlogPos{File: "b.000003", Pos: 100}, mysql.BinlogPos{File: "b.000002", Pos: 100}, 0},
	} {
		if got := mysql.LagBytes(c.from, c.to, files); got != c.want {
			t.Errorf("LagBytes(%s, %s) = %d, want %d", c.from, c.to, got, c.want)
		}
	}
	if !mysql.Purged(mysql.BinlogPos{File: "b.000000", Pos: 4}, files) || mysql.Purged(mysql.BinlogPos{File: "b.000002", Pos: 4}, files) {
		t.Error("Purged")
	}
	p, err := mysql.ParseBinlogPos("mariadb-bin.000012:3456")
	if err != nil || p.File != "mariadb-bin.000012" || p.Pos != 3456 || p.String() != "mariadb-bin.000012:3456" {
		t.Errorf("ParseBinlogPos: %+v, %v", p, err)
	}
	if _, err := mysql.ParseBinlogPos("nothing"); err == nil {
		t.Error("ParseBinlogPos accepted a position without a number")
	}
}

// TestStatementSince: the cutover's check of the schema under the block
// finds a DDL statement about the database in the log since a position
// (run from it or from another database), and nothing when only rows and
// other databases' statements were logged.
func TestStatementSince(t *testing.T) {
	src, _ := fleet(t)
	t.Parallel()
	db := name("stmt `since` ")
	other := name("stmt_other")
	q, qo := ident.QuoteMySQL(db), ident.QuoteMySQL(other)
	exec(t, src.root, "CREATE DATABASE "+q, "CREATE TABLE "+q+".t (id INT PRIMARY KEY)", "CREATE DATABASE "+qo, "CREATE TABLE "+qo+".t (id INT PRIMARY KEY)")
	t.Cleanup(func() {
		_, _ = src.root.Exec("DROP DATABASE IF EXISTS " + q)
		_, _ = src.root.Exec("DROP DATABASE IF EXISTS " + qo)
	})
	at := func() mysql.BinlogPos {
		p, err := src.srv.BinlogNow(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p0 := at()
	exec(t, src.root, "INSERT INTO "+q+".t VALUES (1)", "UPDATE "+q+".t SET id = 2", "ALTER TABLE "+qo+".t ADD c INT", "INSERT INTO "+qo+".t VALUES (1, 1)")
	p1 := at()
	if stmt, err := src.srv.StatementSince(ctx(t), db, p0, p1); err != nil || stmt != "" {
		t.Errorf("rows only, and another database's DDL: %q, %v", stmt, err)
	}
	exec(t, src.root, "ALTER TABLE "+q+".t ADD c INT")
	p2 := at()
	if stmt, err := src.srv.StatementSince(ctx(t), db, p1, p2); err != nil || !strings.Contains(stmt, "ALTER TABLE") {
		t.Errorf("a DDL statement on the database: %q, %v", stmt, err)
	}
	c, err := src.root.Conn(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, stmt := range []string{"USE " + q, "CREATE TABLE u (id INT PRIMARY KEY)"} {
		if _, err := c.ExecContext(ctx(t), stmt); err != nil {
			t.Fatal(err)
		}
	}
	if stmt, err := src.srv.StatementSince(ctx(t), db, p2, at()); err != nil || !strings.Contains(stmt, "CREATE TABLE") {
		t.Errorf("a DDL statement run from the database: %q, %v", stmt, err)
	}
}

// TestStreamRowMissingAtDestination: a row deleted by hand at the
// destination is then updated at the source, in a transaction that also
// inserts a row: the stream breaks naming the update and its table, the
// record says why, and nothing of that transaction was applied (the
// group's batch stopped before COMMIT).
func TestStreamRowMissingAtDestination(t *testing.T) {
	src, dst := fleet(t)
	t.Parallel()
	db := name("missing `row` ")
	shop(t, src, db)
	q := ident.QuoteMySQL(db)
	s, err := src.srv.Inspect(ctx(t), db)
	if err != nil {
		t.Fatal(err)
	}
	st, _, _, ran := copyAndStream(t, src, dst, s)
	var id int64
	if err := src.root.QueryRow("SELECT MIN(id) FROM " + q + ".items").Scan(&id); err != nil {
		t.Fatal(err)
	}
	exec(t, dst.root, fmt.Sprintf("DELETE FROM %s.items WHERE id = %d", q, id))
	tx, err := src.root.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		"INSERT INTO " + q + ".items (name, price) VALUES ('before the missing row', 1)",
		fmt.Sprintf("UPDATE %s.items SET price = price + 1 WHERE id = %d", q, id),
	} {
		if _, err := tx.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ran:
		if err == nil || !strings.Contains(err.Error(), "update of table `items`") || !strings.Contains(err.Error(), "the row to update is not at the destination") {
			t.Errorf("the streamer ended with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the stream did not stop")
	}
	r, err := dst.srv.StreamRecordOf(ctx(t), st.Name)
	if err != nil || !strings.Contains(r.Error, "the row to update is not at the destination") {
		t.Errorf("the record: %+v, %v", r, err)
	}
	var n int
	if err := dst.root.QueryRow("SELECT COUNT(*) FROM " + q + ".items WHERE name = 'before the missing row'").Scan(&n); err != nil || n != 0 {
		t.Errorf("the broken transaction's insert was applied: %d, %v", n, err)
	}
}

// copyAndStream copies database s from src to dst (dropped at the end with
// the accounts the copy made) and streams it from the copy's position
// with a streamer of its own; ran gets what the streamer's Run returns.
func copyAndStream(t *testing.T, src, dst *side, s *mysql.Source) (st mysql.Stream, tables []string, streamer *mysql.Streamer, ran chan error) {
	t.Helper()
	db := s.Database
	fp, tables, err := src.srv.SchemaFingerprint(ctx(t), db)
	if err != nil {
		t.Fatal(err)
	}
	n := streamRows.Add(1) // the stream's name and its replica id: unique among parallel tests
	st = mysql.Stream{Name: engine.StreamName(9_000_000+n, db), Database: db, Tables: tables, Fingerprint: fp}
	var rec mysql.ImportRecord
	pos, _, err := dst.srv.CopyFrom(ctx(t), src.srv, s, "source", func(r mysql.ImportRecord) error { rec = r; return nil }, nil)
	var accounts []string
	for _, u := range rec.CreatedUsers {
		accounts = append(accounts, acct(u.Name, u.Host))
	}
	dropAtEnd(t, dst, db, accounts...)
	if err != nil {
		t.Fatalf("copy: %v", err)
	}
	st.Start = pos
	t.Cleanup(func() { _ = dst.srv.RemoveStreamRecord(context.Background(), st.Name) })
	if err := dst.srv.CreateStreamRecord(ctx(t), &st, src.m.Addr()); err != nil {
		t.Fatalf("record the stream: %v", err)
	}
	streamer = dst.srv.NewStreamer(st.Name, engine.Server{User: adminUser, Password: adminPass}, 4242+uint32(n), nil)
	ran = make(chan error, 1)
	go func() { ran <- streamer.Run(context.Background()) }()
	return st, tables, streamer, ran
}
