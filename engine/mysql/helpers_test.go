package mysql_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/mysql"
	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

func TestMain(m *testing.M) { fleettest.Main(m) }

// The administrator account the engine uses: its password needs every kind
// of quoting in the tools' credential file.
const (
	adminUser = "fleet admin"
	adminPass = `p"a's\w#rd ü;x`
)

// side is one fleet server as the tests see it: root for fixtures and
// independent checks, the engine's administrator connection.
type side struct {
	name string
	m    *fleettest.MariaDB
	root *sql.DB
	srv  *mysql.Server
}

// fleet returns the shared source and destination servers.
func fleet(t *testing.T) (src, dst *side) {
	t.Helper()
	fleettest.Integration(t)
	return serverAs(t, "source"), serverAs(t, "destination")
}

func serverAs(t *testing.T, role string) *side {
	t.Helper()
	m := fleettest.SharedMariaDBAs(t, role)
	root := m.RootDB(t)
	m.EnsureAdmin(t, adminUser, adminPass)
	// Every database above 1 byte counts as large: the tests take the
	// path of large databases (dumps in parts, rows and checksums over
	// several sessions) unless they say otherwise.
	return &side{name: role, m: m, root: root, srv: openServer(t, m, role, mysql.Options{ParallelAbove: 1})}
}

func openServer(t testing.TB, m *fleettest.MariaDB, host string, opt mysql.Options) *mysql.Server {
	t.Helper()
	srv, err := mysql.Open(ctx(t), engine.Server{Host: host, Address: m.Addr(), User: adminUser, Password: adminPass}, opt)
	if err != nil {
		t.Fatalf("open %s: %v", host, err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return c
}

var (
	exec      = fleettest.Exec
	acct      = fleettest.MySQLAccount
	sqlString = fleettest.MySQLString
)

var dialers sync.Map

// customer connects as a customer account, from a given loopback address
// (host-specific accounts) or, with from empty, from 127.0.0.1.
func customer(t *testing.T, m *fleettest.MariaDB, user, pass, db, from string) *sql.DB {
	t.Helper()
	cfg := mysqldrv.NewConfig()
	cfg.User, cfg.Passwd, cfg.Addr, cfg.DBName = user, pass, m.Addr(), db
	cfg.Net = "tcp"
	cfg.Timeout = 5 * time.Second
	cfg.TLSConfig = "preferred" // the harness's servers require TLS
	if from != "" {
		cfg.Net = "from-" + from
		if _, loaded := dialers.LoadOrStore(from, true); !loaded {
			mysqldrv.RegisterDialContext(cfg.Net, func(ctx context.Context, addr string) (net.Conn, error) {
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
				return d.DialContext(ctx, "tcp", addr)
			})
		}
	}
	conn, err := mysqldrv.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	db2 := sql.OpenDB(conn)
	t.Cleanup(func() { db2.Close() })
	return db2
}

var seq struct {
	sync.Mutex
	n int
}

// name returns a fresh name with a prefix (databases and accounts are
// shared by parallel tests on the same servers).
func name(prefix string) string {
	seq.Lock()
	defer seq.Unlock()
	seq.n++
	return fmt.Sprintf("%s%d", prefix, seq.n)
}

// shop creates a database that exercises the engine: a table without a
// primary key holding duplicate rows, BLOBs with every byte, utf8mb4 text,
// a FULLTEXT index, NULLs, a view, a trigger, a procedure and an event
// defined by the customer, and two customer accounts: owner@% with all
// privileges, reader@127.0.0.9 with table-level SELECT and INSERT.
type shopUsers struct {
	owner, ownerPass   string
	reader, readerPass string
}

func shop(t *testing.T, s *side, db string) shopUsers {
	t.Helper()
	u := shopUsers{owner: name("owner '` "), ownerPass: "s3cret 'quoted' \\ \"x\"", reader: name("reader_%"), readerPass: "pw-2 ü"}
	q := ident.QuoteMySQL(db)
	owner, reader := acct(u.owner, "%"), acct(u.reader, "127.0.0.9")
	exec(t, s.root,
		"CREATE DATABASE "+q+" CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
		"CREATE USER "+owner+" IDENTIFIED BY "+sqlString(u.ownerPass),
		"CREATE USER "+reader+" IDENTIFIED BY "+sqlString(u.readerPass),
		"GRANT ALL PRIVILEGES ON "+exactDB(db)+".* TO "+owner,
		"CREATE TABLE "+q+".items (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(200) NOT NULL, price DECIMAL(10,2), photo LONGBLOB, "+
			"ratio DOUBLE, created TIMESTAMP(6) NULL, note TEXT, FULLTEXT KEY ft (name, note)) ENGINE=InnoDB",
		"CREATE TABLE "+q+".log (at DATETIME, msg VARCHAR(100), n INT) ENGINE=InnoDB",
		"CREATE TABLE "+q+".`odd ``name`` ü` (`col, x` INT, b BIT(5), l VARCHAR(20) CHARACTER SET latin1, e ENUM('a','b'), d DATE) ENGINE=InnoDB",
		"GRANT SELECT, INSERT ON "+q+".items TO "+reader,
		"CREATE DEFINER = "+owner+" SQL SECURITY DEFINER VIEW "+q+".cheap AS SELECT id, name FROM "+q+".items WHERE price < 10",
		"CREATE DEFINER = "+owner+" TRIGGER "+q+".items_note BEFORE INSERT ON "+q+".items FOR EACH ROW SET NEW.note = COALESCE(NEW.note, 'auto')",
		"CREATE DEFINER = "+owner+" PROCEDURE "+q+".add_log(m VARCHAR(100)) INSERT INTO log VALUES (NOW(), m, 1)",
		"CREATE DEFINER = "+owner+" EVENT "+q+".purge ON SCHEDULE EVERY 1 DAY DO DELETE FROM log WHERE at < NOW() - INTERVAL 10 YEAR",
	)
	var b strings.Builder
	b.WriteString("INSERT INTO " + q + ".items (name, price, photo, ratio, created, note) VALUES ")
	for i := range 300 {
		if i > 0 {
			b.WriteString(", ")
		}
		photo := make([]byte, i%97)
		for j := range photo {
			photo[j] = byte((i*31 + j*7) % 256)
		}
		note := "NULL"
		if i%3 == 0 {
			note = sqlString(fmt.Sprintf("Grüße 😀 \"%d\" 'x' \\ ok", i))
		}
		fmt.Fprintf(&b, "(%s, %d.%02d, X'%X', %v, '2026-01-02 03:04:05.%06d', %s)",
			sqlString(fmt.Sprintf("item %d ünïcødé 😀", i)), i, i%100, photo, float64(i)/7, i, note)
	}
	exec(t, s.root, b.String(),
		"INSERT INTO "+q+".log VALUES ('2026-01-01 00:00:00', 'same', 1), ('2026-01-01 00:00:00', 'same', 1), (NULL, NULL, NULL), (NULL, NULL, NULL)",
		"INSERT INTO "+q+".`odd ``name`` ü` VALUES (1, b'10101', 'café', 'a', '2026-02-03'), (NULL, NULL, NULL, NULL, NULL)")
	t.Cleanup(func() {
		for _, st := range []string{"DROP DATABASE IF EXISTS " + q, "DROP USER IF EXISTS " + owner + ", " + reader} {
			_, _ = s.root.Exec(st)
		}
	})
	return u
}

// exactDB quotes a database name for a database-level GRANT, its LIKE
// wildcards escaped.
func exactDB(db string) string {
	return ident.QuoteMySQL(strings.NewReplacer(`\`, `\\`, "_", `\_`, "%", `\%`).Replace(db))
}

// dropAtEnd drops what a test migrated to a server.
func dropAtEnd(t *testing.T, s *side, db string, accounts ...string) {
	t.Cleanup(func() {
		_, _ = s.root.Exec("DROP DATABASE IF EXISTS " + ident.QuoteMySQL(db))
		for _, a := range accounts {
			_, _ = s.root.Exec("DROP USER IF EXISTS " + a)
		}
	})
}

// migrated is what a migration through the engine produced.
type migrated struct {
	src      *mysql.Source
	access   *mysql.Access
	manifest *engine.Manifest
	secrets  engine.Secrets
	dump     []byte
}

// dumpBlocked inspects, blocks and dumps db at the source.
func dumpBlocked(t *testing.T, src *side, db string) *migrated {
	t.Helper()
	s, err := src.srv.Inspect(ctx(t), db)
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	a, err := src.srv.PlanBlock(ctx(t), s)
	if err != nil {
		t.Fatalf("plan block: %v", err)
	}
	if _, err := src.srv.Block(ctx(t), a); err != nil {
		t.Fatalf("block: %v", err)
	}
	var buf bytes.Buffer
	pos, err := src.srv.Position(ctx(t))
	if err != nil {
		t.Fatalf("position: %v", err)
	}
	m, sec, stats, err := src.srv.Snapshot(ctx(t), s, src.name, pos, &buf, nil)
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if stats.Bytes != int64(buf.Len()) || !strings.Contains(stats.ToolVersion, "MariaDB") {
		t.Errorf("dump stats %+v for %d bytes", stats, buf.Len())
	}
	return &migrated{src: s, access: a, manifest: m, secrets: sec, dump: buf.Bytes()}
}

// importInto imports a dump at the destination, recording what it created.
func importInto(t *testing.T, dst *side, mg *migrated) (*mysql.ImportRecord, error) {
	t.Helper()
	var rec mysql.ImportRecord
	_, err := dst.srv.Import(ctx(t), mg.manifest, mg.secrets, bytes.NewReader(mg.dump), func(r mysql.ImportRecord) error {
		rec = r
		return nil
	}, nil)
	return &rec, err
}

// migrate moves db from src to dst through the engine and verifies it.
func migrate(t *testing.T, src, dst *side, db string) *migrated {
	t.Helper()
	mg := dumpBlocked(t, src, db)
	rec, err := importInto(t, dst, mg)
	var accounts []string
	for _, u := range rec.CreatedUsers {
		accounts = append(accounts, acct(u.Name, u.Host))
	}
	dropAtEnd(t, dst, db, accounts...)
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	if err := dst.srv.Verify(ctx(t), mg.manifest, nil); err != nil {
		t.Fatalf("verify: %v", err)
	}
	return mg
}

// rows reads a table's rows, as text, sorted (a multiset: tables without
// a key may hold duplicates).
func rows(t *testing.T, db *sql.DB, q string) []string {
	t.Helper()
	r, err := db.QueryContext(ctx(t), q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer r.Close()
	cols, _ := r.Columns()
	var out []string
	for r.Next() {
		vals := make([]sql.RawBytes, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := r.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		parts := make([]string, len(vals))
		for i, v := range vals {
			if v == nil {
				parts[i] = "NULL"
			} else {
				parts[i] = fmt.Sprintf("%q", v)
			}
		}
		out = append(out, strings.Join(parts, ","))
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

var autoInc = regexp.MustCompile(` AUTO_INCREMENT=\d+`)

// sameDatabase compares two servers' copies of db independently of the
// engine: every table's definition and rows, every view's, routine's,
// trigger's and event's definition.
func sameDatabase(t *testing.T, a, b *side, db string) {
	t.Helper()
	q := ident.QuoteMySQL(db)
	tables, types := tablesOf(t, a, db)
	if got, _ := tablesOf(t, b, db); !slices.Equal(got, tables) {
		t.Fatalf("tables differ:\n%q\n%q", tables, got)
	}
	for i, tname := range tables {
		typ := types[i]
		tq := q + "." + ident.QuoteMySQL(tname)
		var n1, n2, def1, def2 string
		if err := a.root.QueryRow("SHOW CREATE TABLE "+tq).Scan(&n1, &def1); err != nil && typ == "BASE TABLE" {
			t.Fatal(err)
		}
		if typ == "BASE TABLE" {
			if err := b.root.QueryRow("SHOW CREATE TABLE "+tq).Scan(&n2, &def2); err != nil {
				t.Fatal(err)
			}
			if autoInc.ReplaceAllString(def1, "") != autoInc.ReplaceAllString(def2, "") {
				t.Errorf("table %s defined differently:\n%s\n%s", tname, def1, def2)
			}
		}
		r1, r2 := rows(t, a.root, "SELECT * FROM "+tq), rows(t, b.root, "SELECT * FROM "+tq)
		if !slices.Equal(r1, r2) {
			t.Errorf("table %s: rows differ (%d at %s, %d at %s)", tname, len(r1), a.name, len(r2), b.name)
		}
	}
	for _, q := range []string{
		"SELECT ROUTINE_NAME, ROUTINE_TYPE, DEFINER, ROUTINE_DEFINITION, SECURITY_TYPE FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ",
		"SELECT TRIGGER_NAME, DEFINER, ACTION_STATEMENT FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ",
		"SELECT TABLE_NAME, DEFINER, VIEW_DEFINITION, SECURITY_TYPE FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ",
		"SELECT EVENT_NAME, DEFINER, EVENT_DEFINITION FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ",
	} {
		if r1, r2 := rows(t, a.root, q+sqlString(db)), rows(t, b.root, q+sqlString(db)); !slices.Equal(r1, r2) {
			t.Errorf("%s...: differ:\n%s\n%s", q[:40], r1, r2)
		}
	}
}

func tablesOf(t *testing.T, s *side, db string) (names, types []string) {
	t.Helper()
	r, err := s.root.QueryContext(ctx(t), "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME", db)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for r.Next() {
		var n, ty string
		if err := r.Scan(&n, &ty); err != nil {
			t.Fatal(err)
		}
		names, types = append(names, n), append(types, ty)
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	return names, types
}

// grantsOf is SHOW GRANTS for an account, sorted.
func grantsOf(t *testing.T, s *side, user, host string) []string {
	t.Helper()
	return rows(t, s.root, "SHOW GRANTS FOR "+acct(user, host))
}
