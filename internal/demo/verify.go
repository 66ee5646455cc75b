package demo

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	mdns "github.com/miekg/dns"

	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

// Checksum is what a database holds, as its own user reads it: every table
// and view by name, with a SHA-256 over its rows in primary-key order.
type Checksum struct {
	Objects int
	Rows    int64
	SHA256  string
}

func (c Checksum) String() string {
	return fmt.Sprintf("%d tables/views, %d rows, sha256 %.16s", c.Objects, c.Rows, c.SHA256)
}

// Resolve asks the DNS server for the A record of name and returns the
// address, as a client of the database would find its server.
func Resolve(ctx context.Context, server, name string) (string, error) {
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(name), mdns.TypeA)
	c := &mdns.Client{Net: "tcp", Timeout: 5 * time.Second}
	in, _, err := c.ExchangeContext(ctx, m, server)
	if err != nil {
		return "", fmt.Errorf("resolve %s at %s: %w", name, server, err)
	}
	if in.Rcode != mdns.RcodeSuccess {
		return "", fmt.Errorf("resolve %s at %s: %s", name, server, mdns.RcodeToString[in.Rcode])
	}
	var addrs []string
	for _, rr := range in.Answer {
		if a, ok := rr.(*mdns.A); ok {
			addrs = append(addrs, a.A.String())
		}
	}
	if len(addrs) != 1 {
		return "", fmt.Errorf("resolve %s at %s: want one A record, got %v", name, server, in.Answer)
	}
	return addrs[0], nil
}

// ReadAs connects to the database at addr as user with password (no
// administrator involved) and checksums its content.
func ReadAs(ctx context.Context, engine, addr, user, password, database string) (Checksum, error) {
	switch engine {
	case MySQL:
		return readMySQL(ctx, mysqlDSN(addr, user, password, database))
	case Postgres:
		return readPostgres(ctx, pgDSN(addr, user, password, database))
	}
	return Checksum{}, fmt.Errorf("unknown engine %q", engine)
}

func mysqlDSN(addr, user, password, database string) string {
	c := mysql.NewConfig()
	c.User, c.Passwd, c.Net, c.Addr, c.DBName = user, password, "tcp", addr, database
	c.Timeout, c.ReadTimeout = 5*time.Second, 2*time.Minute
	c.TLSConfig = "preferred" // the fleet's servers require TLS
	return c.FormatDSN()
}

func pgDSN(addr, user, password, database string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(user, password), Host: addr, Path: "/" + database,
		RawQuery: "sslmode=require&connect_timeout=5"} // the fleet's servers require TLS
	return u.String()
}

type rowHasher struct {
	h    hash.Hash
	rows int64
	objs int
}

func newRowHasher() *rowHasher { return &rowHasher{h: sha256.New()} }

func (r *rowHasher) object(name, kind string) {
	r.objs++
	r.field([]byte(kind + " " + name))
}

// field writes a length-prefixed value; NULL is length -1.
func (r *rowHasher) field(b []byte) {
	var n [8]byte
	if b == nil {
		binary.BigEndian.PutUint64(n[:], ^uint64(0))
		r.h.Write(n[:])
		return
	}
	binary.BigEndian.PutUint64(n[:], uint64(len(b)))
	r.h.Write(n[:])
	r.h.Write(b)
}

func (r *rowHasher) sum() Checksum {
	return Checksum{Objects: r.objs, Rows: r.rows, SHA256: hex.EncodeToString(r.h.Sum(nil))}
}

func readMySQL(ctx context.Context, dsn string) (Checksum, error) {
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return Checksum{}, err
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return Checksum{}, fmt.Errorf("log in: %w", err)
	}
	defer conn.Close()
	rows, err := conn.QueryContext(ctx, "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME NOT IN ('"+writesTable+"', '"+hotTable+"') ORDER BY TABLE_NAME")
	if err != nil {
		return Checksum{}, fmt.Errorf("list tables: %w", err)
	}
	defer rows.Close()
	type obj struct{ name, kind string }
	var objs []obj
	for rows.Next() {
		var o obj
		if err := rows.Scan(&o.name, &o.kind); err != nil {
			return Checksum{}, err
		}
		objs = append(objs, o)
	}
	if err := rows.Err(); err != nil {
		return Checksum{}, err
	}
	h := newRowHasher()
	for _, o := range objs {
		h.object(o.name, o.kind)
		if err := hashRows(ctx, conn, h, "SELECT * FROM "+ident.QuoteMySQL(o.name)+" ORDER BY 1"); err != nil {
			return Checksum{}, fmt.Errorf("read %s: %w", o.name, err)
		}
	}
	return h.sum(), nil
}

func hashRows(ctx context.Context, conn *sql.Conn, h *rowHasher, q string) error {
	rows, err := conn.QueryContext(ctx, q)
	if err != nil {
		return err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return err
	}
	vals := make([]sql.RawBytes, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		for _, v := range vals {
			h.field(v)
		}
		h.rows++
	}
	return rows.Err()
}

func readPostgres(ctx context.Context, dsn string) (Checksum, error) {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return Checksum{}, fmt.Errorf("log in: %w", err)
	}
	defer c.Close(context.WithoutCancel(ctx))
	rows, err := c.Query(ctx, "SELECT table_name::text, table_type::text FROM information_schema.tables WHERE table_schema = 'public' AND table_name NOT IN ('"+writesTable+"', '"+hotTable+"') ORDER BY 1")
	if err != nil {
		return Checksum{}, fmt.Errorf("list tables: %w", err)
	}
	type obj struct{ name, kind string }
	objs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (obj, error) {
		var o obj
		return o, r.Scan(&o.name, &o.kind)
	})
	if err != nil {
		return Checksum{}, err
	}
	h := newRowHasher()
	for _, o := range objs {
		h.object(o.name, o.kind)
		rows, err := c.Query(ctx, "SELECT x::text FROM public."+ident.QuotePostgres(o.name)+" x ORDER BY x.id")
		if err != nil {
			return Checksum{}, fmt.Errorf("read %s: %w", o.name, err)
		}
		for rows.Next() {
			h.field(rows.RawValues()[0])
			h.rows++
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return Checksum{}, fmt.Errorf("read %s: %w", o.name, err)
		}
	}
	return h.sum(), nil
}

// ProbeWrite checks that user may write to the database at addr: it
// inserts a customer in a transaction and rolls it back.
func ProbeWrite(ctx context.Context, engine, addr, user, password, database string) error {
	switch engine {
	case MySQL:
		db, err := sql.Open("mysql", mysqlDSN(addr, user, password, database))
		if err != nil {
			return err
		}
		defer db.Close()
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback() }()
		_, err = tx.ExecContext(ctx, "INSERT INTO customers (name, created) VALUES ('write probe', NOW())")
		return err
	case Postgres:
		c, err := pgx.Connect(ctx, pgDSN(addr, user, password, database))
		if err != nil {
			return err
		}
		defer c.Close(context.WithoutCancel(ctx))
		tx, err := c.Begin(ctx)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
		_, err = tx.Exec(ctx, "INSERT INTO customers (name, created) VALUES ('write probe', now())")
		return err
	}
	return fmt.Errorf("unknown engine %q", engine)
}

// Problem is one database that is not where and what its users expect.
type Problem struct {
	DB  *Database
	Err error
}

func (p Problem) Error() string {
	return fmt.Sprintf("%s database %q (%s): %v", p.DB.Engine, p.DB.Name, p.DB.DNSName, p.Err)
}

// Check looks at the database the way its users will: resolve its name at
// the DNS server, expect the address of the wanted host, log in there with
// the ORIGINAL user and password, checksum the content and compare it with
// want (when set), and write (rolled back).
func Check(ctx context.Context, f *Fleet, d *Database, wantHost string, want *Checksum) (Checksum, error) {
	ip, err := Resolve(ctx, f.BIND.Addr, d.DNSName)
	if err != nil {
		return Checksum{}, err
	}
	h := f.Host(wantHost)
	if ip != h.IP {
		at := "no host of the fleet"
		if o := f.HostByIP(d.Engine, ip); o != nil {
			at = o.ID
		}
		return Checksum{}, fmt.Errorf("DNS: %s points to %s (%s), expected %s (%s)", d.DNSName, ip, at, h.IP, h.ID)
	}
	addr := net.JoinHostPort(ip, strconv.Itoa(h.Port))
	got, err := ReadAs(ctx, d.Engine, addr, d.User, d.Password, d.Name)
	if err != nil {
		return Checksum{}, fmt.Errorf("as %q at %s: %w", d.User, addr, err)
	}
	if want != nil && got != *want {
		return got, fmt.Errorf("content differs at %s: %s, before the migration %s", addr, got, *want)
	}
	if err := ProbeWrite(ctx, d.Engine, addr, d.User, d.Password, d.Name); err != nil {
		return got, fmt.Errorf("as %q at %s: cannot write: %w", d.User, addr, err)
	}
	return got, nil
}
