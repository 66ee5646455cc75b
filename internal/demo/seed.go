package demo

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"strings"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

// Database is one customer database of the demo, with what its users know
// of it: its DNS name, user and password.
type Database struct {
	Engine   string
	Name     string
	User     string
	Password string
	// DNSName is the customers' name for the database's server.
	DNSName     string
	Source      string
	Destination string
	// Rows of the orders table; the database is about 200 bytes per row.
	Rows int
	// View: the database also has a view over its tables.
	View bool
	// Before is the content checksum taken before the migration, through
	// DNS with the database's own credentials.
	Before Checksum
}

// awkward names: quotes, backticks, spaces, unicode, SQL punctuation and the
// longest names the servers take. The plan file, the engines and this
// package must all carry them byte for byte.
var (
	awkwardMySQL = []string{
		"Café Ünïcødé", "with space", "back`tick", "it's", `say "hi"`, "100%_sure", "semi;colon -- x",
		"名前データ", "dash-and.dot", strings.Repeat("L", 64),
	}
	awkwardMySQLUsers = []string{"user with space", "ü-user", "o'brien", "back`user", strings.Repeat("u", 32)}
	awkwardPostgres   = []string{"Mixed Case", "ünï pg db", `quote"pg`, "it's pg", strings.Repeat("P", 63)}
	awkwardPGRoles    = []string{"Role Ünï", `o"quote`, "role it's", strings.Repeat("r", 63)}
)

// Layout decides the demo's databases: how many, their engines, names,
// users, sizes and hosts.
type Layout struct {
	// DBs is the number of databases; every fifth is PostgreSQL.
	DBs int
	// MaxBytes caps the largest database (about); 0: 50 MiB.
	MaxBytes int64
	// Seed makes the sizes and the spread over hosts repeatable.
	Seed uint64
	// PlainNames: no awkward names (for tools that cannot take them, like
	// mydumper 0.10 with non-ASCII names).
	PlainNames bool
	// SizeBytes, when set, makes every database about this size.
	SizeBytes int64
	// Tiny makes every database one table of 10 rows, without a view: the
	// per-database fixed cost benchmark.
	Tiny bool
	// Engine, when set (MySQL or Postgres), makes every database of that
	// engine instead of every fifth PostgreSQL.
	Engine string
}

// Plan returns the databases for the fleet's hosts. Sizes: one in a hundred
// is MaxBytes, one in ten 5 MiB, the rest between 8 KiB and 1 MiB
// (log-uniform), all capped at MaxBytes.
func (l Layout) Plan(f *Fleet, zone string) []*Database {
	maxBytes := l.MaxBytes
	if maxBytes <= 0 {
		maxBytes = 50 << 20
	}
	rng := mrand.New(mrand.NewPCG(l.Seed, 0x5eed))
	var src, dst = map[string][]*Host{}, map[string][]*Host{}
	for _, h := range f.Hosts {
		if h.Source {
			src[h.Engine] = append(src[h.Engine], h)
		} else {
			dst[h.Engine] = append(dst[h.Engine], h)
		}
	}
	var out []*Database
	nMy, nPG := 0, 0
	for i := range l.DBs {
		d := &Database{Engine: MySQL, Password: randomPassword(20), DNSName: fmt.Sprintf("db-%04d.%s", i+1, zone)}
		if (l.Engine == Postgres || l.Engine == "" && i%5 == 4) && len(src[Postgres]) > 0 && len(dst[Postgres]) > 0 {
			d.Engine = Postgres
		}
		switch d.Engine {
		case MySQL:
			d.Name, d.User = fmt.Sprintf("shop_%04d", i+1), fmt.Sprintf("u%04d", i+1)
			if nMy < len(awkwardMySQL) && !l.PlainNames {
				d.Name = awkwardMySQL[nMy]
			}
			if nMy < len(awkwardMySQLUsers) && !l.PlainNames {
				d.User = awkwardMySQLUsers[nMy]
			}
			nMy++
		case Postgres:
			d.Name, d.User = fmt.Sprintf("app_%04d", i+1), fmt.Sprintf("r%04d", i+1)
			if nPG < len(awkwardPostgres) && !l.PlainNames {
				d.Name = awkwardPostgres[nPG]
			}
			if nPG < len(awkwardPGRoles) && !l.PlainNames {
				d.User = awkwardPGRoles[nPG]
			}
			nPG++
		}
		s, t := src[d.Engine], dst[d.Engine]
		d.Source = s[i%len(s)].ID
		d.Destination = t[(i/len(s))%len(t)].ID
		var size int64
		switch {
		case i%100 == 7:
			size = maxBytes
		case i%10 == 3:
			size = 5 << 20
		default:
			size = int64(math.Exp(math.Log(8<<10) + rng.Float64()*(math.Log(1<<20)-math.Log(8<<10))))
		}
		size = min(size, maxBytes)
		if l.SizeBytes > 0 {
			size = l.SizeBytes
		}
		d.Rows = max(int(size/200), 10)
		d.View = i%3 == 0
		if l.Tiny {
			d.Rows, d.View = 10, false
		}
		out = append(out, d)
	}
	return out
}

// Records are the zone-file lines pointing each database's name at its
// source, with a TTL of 300 s (the demo lowers it first, as the runbook
// says).
func Records(f *Fleet, dbs []*Database, zone string) []string {
	out := make([]string, 0, len(dbs))
	for _, d := range dbs {
		rel := strings.TrimSuffix(d.DNSName, "."+zone)
		out = append(out, fmt.Sprintf("%s 300 IN A %s", rel, f.Host(d.Source).IP))
	}
	return out
}

// Seed creates the database at its source with its own account and fills
// it.
func Seed(ctx context.Context, f *Fleet, d *Database) error {
	h := f.Host(d.Source)
	var err error
	switch d.Engine {
	case MySQL:
		err = seedMySQL(ctx, h, d)
	case Postgres:
		err = seedPostgres(ctx, h, d)
	}
	if err != nil {
		return fmt.Errorf("seed %s database %q on %s: %w", d.Engine, d.Name, d.Source, err)
	}
	return nil
}

func seedMySQL(ctx context.Context, h *Host, d *Database) error {
	db, err := sql.Open("mysql", h.my.DSN(""))
	if err != nil {
		return err
	}
	defer db.Close()
	q := ident.QuoteMySQL(d.Name)
	customers := max(5, d.Rows/20)
	acct := fleettest.MySQLAccount(d.User, "%")
	stmts := []string{
		"CREATE DATABASE " + q + " CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
		"CREATE TABLE " + q + ".customers (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(100) NOT NULL, email VARCHAR(200), created DATETIME(6) NOT NULL)",
		fmt.Sprintf("INSERT INTO %s.customers (name, email, created) SELECT CONCAT('Kunde ', seq, ' Ünïcødé ✓ ''q'''), IF(seq %% 7 = 0, NULL, CONCAT('c', seq, '@example.test')), TIMESTAMP'2026-01-01 00:00:00' + INTERVAL seq * 1000003 MICROSECOND FROM %s.seq_1_to_%d", q, q, customers),
		"CREATE TABLE " + q + ".orders (id BIGINT PRIMARY KEY, customer_id INT NOT NULL, amount DECIMAL(12,2) NOT NULL, note TEXT, payload VARBINARY(64), KEY (customer_id))",
		fmt.Sprintf("INSERT INTO %s.orders SELECT seq, 1 + seq %% %d, (seq * 7919 %% 1000000) / 100, SHA2(CONCAT(seq, ':', %s), 512), UNHEX(SHA2(seq, 256)) FROM %s.seq_1_to_%d",
			q, customers, fleettest.MySQLString(d.Name), q, d.Rows),
		"CREATE USER " + acct + " IDENTIFIED BY " + fleettest.MySQLString(d.Password),
		"GRANT ALL PRIVILEGES ON " + q + ".* TO " + acct,
	}
	if d.View {
		stmts = append(stmts, "CREATE SQL SECURITY INVOKER VIEW "+q+".big_orders AS SELECT o.id, c.name, o.amount FROM "+q+".orders o JOIN "+q+".customers c ON c.id = o.customer_id WHERE o.amount > 9000")
	}
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("%.60s...: %w", s, err)
		}
	}
	return nil
}

func seedPostgres(ctx context.Context, h *Host, d *Database) error {
	role := ident.QuotePostgres(d.User)
	if err := execPG(ctx, h.pg.DSN("postgres"),
		"CREATE ROLE "+role+" LOGIN PASSWORD "+ident.QuotePostgresLiteral(d.Password),
		"CREATE DATABASE "+ident.QuotePostgres(d.Name)+" OWNER "+role,
	); err != nil {
		return err
	}
	customers := max(5, d.Rows/20)
	stmts := []string{
		"SET ROLE " + role,
		"CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text, created timestamptz NOT NULL)",
		fmt.Sprintf("INSERT INTO customers (name, email, created) SELECT 'Kunde ' || g || ' Ünïcødé ✓ ''q''', CASE WHEN g %% 7 = 0 THEN NULL ELSE 'c' || g || '@example.test' END, timestamptz '2026-01-01 00:00:00+00' + g * interval '1.000003 second' FROM generate_series(1, %d) g", customers),
		"CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL REFERENCES customers, amount numeric(12,2) NOT NULL, note text, payload bytea)",
		fmt.Sprintf("INSERT INTO orders SELECT g, 1 + g %% %d, (g::bigint * 7919 %% 1000000) / 100.0, encode(sha512((g || ':' || %s)::bytea), 'hex'), sha256(g::text::bytea) FROM generate_series(1, %d) g",
			customers, ident.QuotePostgresLiteral(d.Name), d.Rows),
		"CREATE INDEX ON orders (customer_id)",
	}
	if d.View {
		stmts = append(stmts, "CREATE VIEW big_orders AS SELECT o.id, c.name, o.amount FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.amount > 9000")
	}
	return execPG(ctx, pgDSN(h.pg.Addr(), "postgres", h.pg.Password, d.Name), stmts...)
}

// randomPassword returns n characters including the ones that break naive
// quoting: quotes, backslash, dollar, percent, spaces.
func randomPassword(n int) string {
	const alphabet = `abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789'"\$%@ ;:,.!#`
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
