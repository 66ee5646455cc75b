package mysql_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/mysql"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

// TestVerifySinceReadsTheBinaryLog dumps a database under the block, then
// re-checks the source as the close step does: nothing read while nothing
// was written; after a superuser's row write, only that table; after a
// statement logged as such (TRUNCATE; DML under statement-based logging),
// every table. Not parallel: the other tests' writes to the shared
// server's binary log would make it longer than this database is large,
// and the check would (rightly) read every table.
func TestVerifySinceReadsTheBinaryLog(t *testing.T) {
	src, _ := fleet(t)
	db := name("since_")
	q := ident.QuoteMySQL(db)
	dropAtEnd(t, src, db)
	exec(t, src.root,
		"CREATE DATABASE "+q,
		"CREATE TABLE "+q+".a (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB",
		"CREATE TABLE "+q+".`b q` (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB",
		"INSERT INTO "+q+".a SELECT seq, 'x' FROM "+q+".seq_1_to_100",
		"INSERT INTO "+q+".`b q` SELECT seq, 'y' FROM "+q+".seq_1_to_100")
	mg := dumpBlocked(t, src, db)
	m := mg.manifest
	if m.BinlogFile == "" {
		t.Fatalf("the manifest has no binary log position: %+v", m)
	}
	checksummed := 0
	read, why, err := src.srv.VerifySince(ctx(t), m, func(_, total int) { checksummed = total })
	if err != nil || why != "" || read != 0 || checksummed != 0 {
		t.Fatalf("nothing written: read %d tables (%q, %d checksummed), %v; want none", read, why, checksummed, err)
	}
	exec(t, src.root, "UPDATE "+q+".`b q` SET v = 'leaked' WHERE id = 7")
	read, why, err = src.srv.VerifySince(ctx(t), m, func(_, total int) { checksummed = total })
	if !errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), "b q") || read != 1 || why != "" || checksummed != 1 {
		t.Fatalf("after a row written to `b q`: read %d tables (%q), %v; want `b q` read, found different", read, why, err)
	}
	// A statement-logged write: the log says a statement named the
	// database, not which rows; every table is read.
	c, err := src.root.Conn(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, s := range []string{"SET SESSION binlog_format = 'STATEMENT'", "INSERT INTO " + q + ".a VALUES (1000, 'stmt')"} {
		if _, err := c.ExecContext(ctx(t), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	read, why, err = src.srv.VerifySince(ctx(t), m, nil)
	if read != 2 || !strings.Contains(why, "statement naming the database") || !strings.Contains(why, "INSERT INTO") || err == nil {
		t.Fatalf("after a statement-logged insert: read %d tables (%q), %v; want all read, the writes found", read, why, err)
	}
	// Without a position (log_bin off at the dump) every table is read.
	m.BinlogFile = ""
	if read, why, _ = src.srv.VerifySince(ctx(t), m, nil); read != 2 || !strings.Contains(why, "no binary log position") {
		t.Fatalf("without a position: read %d tables (%q); want all", read, why)
	}
}

// TestVerifySinceSeesTruncate: TRUNCATE is logged as a statement even
// under row-based logging.
func TestVerifySinceSeesTruncate(t *testing.T) {
	src, _ := fleet(t)
	db := name("since_tr_")
	q := ident.QuoteMySQL(db)
	dropAtEnd(t, src, db)
	exec(t, src.root,
		"CREATE DATABASE "+q,
		"CREATE TABLE "+q+".a (id INT PRIMARY KEY) ENGINE=InnoDB",
		"INSERT INTO "+q+".a SELECT seq FROM "+q+".seq_1_to_10")
	m := dumpBlocked(t, src, db).manifest
	exec(t, src.root, "TRUNCATE "+q+".a")
	read, why, err := src.srv.VerifySince(ctx(t), m, nil)
	if read != 1 || !strings.Contains(why, "TRUNCATE") || !errors.Is(err, engine.ErrPermanent) {
		t.Fatalf("after TRUNCATE: read %d tables (%q), %v; want all read, the table found empty", read, why, err)
	}
}

// TestVerifySinceWithoutLogAccess: an administrator that may not read the
// binary log gets every table read (and the reason), not a failed close.
func TestVerifySinceWithoutLogAccess(t *testing.T) {
	src, _ := fleet(t)
	db := name("since_nolog_")
	q := ident.QuoteMySQL(db)
	user := name("nolog_")
	dropAtEnd(t, src, db, acct(user, "%"))
	exec(t, src.root,
		"CREATE DATABASE "+q,
		"CREATE TABLE "+q+".a (id INT PRIMARY KEY) ENGINE=InnoDB",
		"INSERT INTO "+q+".a SELECT seq FROM "+q+".seq_1_to_10",
		"CREATE USER "+acct(user, "%")+" IDENTIFIED BY 'pw'",
		"GRANT SELECT, SHOW VIEW, EVENT, TRIGGER ON *.* TO "+acct(user, "%"))
	m := dumpBlocked(t, src, db).manifest
	limited, err := mysql.Open(ctx(t), engine.Server{Host: "source", Address: src.m.Addr(), User: user, Password: "pw"}, mysql.Options{})
	if err != nil {
		t.Fatalf("open as %s: %v", user, err)
	}
	defer func() { _ = limited.Close() }()
	read, why, err := limited.VerifySince(ctx(t), m, nil)
	if err != nil || read != 1 || !strings.Contains(why, "may not read the binary log") {
		t.Fatalf("without access to the log: read %d tables (%q), %v; want all read, the reason given", read, why, err)
	}
}
