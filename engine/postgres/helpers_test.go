package postgres_test

import (
	"bytes"
	"context"
	"fmt"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/postgres"
	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

func TestMain(m *testing.M) { fleettest.Main(m) }

// The engine's administrator: a superuser whose password needs quoting in
// the password file.
const (
	adminUser = "fleet:admin"
	adminPass = `p:a's\w#rd ü`
)

var pgExec = fleettest.PGExec

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	return c
}

// side is one cluster as the tests see it.
type side struct {
	pg  *fleettest.Postgres
	srv *postgres.Server
}

var admins sync.Map

func sideOf(t *testing.T, pg *fleettest.Postgres, host string, opt postgres.Options) *side {
	t.Helper()
	once, _ := admins.LoadOrStore(pg.Addr(), &sync.Once{})
	once.(*sync.Once).Do(func() {
		pgExec(t, pg.Root(t, "postgres"), "CREATE ROLE "+qi(adminUser)+" SUPERUSER LOGIN PASSWORD "+ql(adminPass))
	})
	srv, err := postgres.Open(ctx(t), engine.Server{Host: host, Address: pg.Addr(), User: adminUser, Password: adminPass}, opt)
	if err != nil {
		t.Fatalf("open %s: %v", host, err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return &side{pg: pg, srv: srv}
}

// fleet returns the shared source and destination clusters (SCRAM on).
func fleet(t *testing.T) (src, dst *side) {
	t.Helper()
	fleettest.Integration(t)
	src = sideOf(t, fleettest.SharedPostgresAs(t, "source"), "source", postgres.Options{})
	dst = sideOf(t, fleettest.SharedPostgresAs(t, "destination"), "destination", postgres.Options{})
	return src, dst
}

func qi(s string) string { return ident.QuotePostgres(s) }
func ql(s string) string { return ident.QuotePostgresLiteral(s) }

var seq atomic.Int64

// unique gives names that no other test uses (roles are cluster-wide).
func unique(prefix string) string {
	return fmt.Sprintf("%s%d_%d", prefix, time.Now().UnixNano()%1e6, seq.Add(1))
}

// dropAfter drops database and roles on both clusters at cleanup.
func dropAfter(t *testing.T, database string, roles []string, sides ...*side) {
	t.Cleanup(func() {
		for _, s := range sides {
			c, err := s.pg.Dial(context.Background(), "postgres", "postgres", s.pg.Password)
			if err != nil {
				continue
			}
			_, _ = c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+qi(database)+" WITH (FORCE)")
			for _, r := range roles {
				_, _ = c.Exec(context.Background(), "DROP ROLE IF EXISTS "+qi(r))
			}
			_ = c.Close(context.Background())
		}
	})
}

// fixture is a customer database: an owner and a reader login role with
// their passwords.
type fixture struct {
	db                string
	owner, reader     string
	ownerPw, readerPw string
	tables            []string
}

// newFixture creates on s a database with several schemas, tables with and
// without primary keys, bytea, jsonb, arrays, a serial and an identity
// column, a view, a materialized view, a function, a trigger, pgcrypto and
// citext, a large object, and the two login roles.
func newFixture(t *testing.T, s, other *side, db, owner, reader string) *fixture {
	t.Helper()
	f := &fixture{db: db, owner: owner, reader: reader, ownerPw: `own'er "pw" ü` + owner, readerPw: `rea:der\pw` + reader}
	dropAfter(t, db, []string{owner, reader}, s, other)
	root := s.pg.Root(t, "postgres")
	pgExec(t, root,
		"CREATE ROLE "+qi(owner)+" LOGIN PASSWORD "+ql(f.ownerPw)+" CONNECTION LIMIT 20 VALID UNTIL '2099-01-01 00:00:00+00'",
		"CREATE ROLE "+qi(reader)+" LOGIN PASSWORD "+ql(f.readerPw),
		"ALTER ROLE "+qi(reader)+" SET statement_timeout = '33s'",
		"CREATE DATABASE "+qi(db)+" OWNER "+qi(owner),
		"ALTER DATABASE "+qi(db)+" SET search_path = \"$user\", public, \"Sales Dept\"",
		"ALTER DATABASE "+qi(db)+" SET work_mem = '8MB'",
		"REVOKE TEMPORARY ON DATABASE "+qi(db)+" FROM PUBLIC",
		"GRANT CONNECT ON DATABASE "+qi(db)+" TO "+qi(reader),
	)
	c := s.pg.Root(t, db)
	pgExec(t, c,
		"CREATE EXTENSION pgcrypto",
		"CREATE EXTENSION citext",
		"SET ROLE "+qi(owner),
		`CREATE SCHEMA "Sales Dept"`,
		`CREATE SCHEMA inventory`,
		`CREATE TABLE "Sales Dept"."Orders" (id serial PRIMARY KEY, customer citext NOT NULL, total numeric(12,2), tags text[], doc jsonb, blob bytea, at timestamptz DEFAULT now())`,
		`CREATE TABLE inventory.items (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, sku text UNIQUE, qty int, digest bytea)`,
		`CREATE TABLE inventory.log (line text, n int)`, // no primary key
		`INSERT INTO "Sales Dept"."Orders" (customer, total, tags, doc, blob)
		   SELECT 'Customer ' || g, g * 1.25, ARRAY['a' || g, 'b''q', NULL], jsonb_build_object('g', g, 'ü', 'x"y'), decode(md5(g::text), 'hex')
		   FROM generate_series(1, 500) g`,
		`INSERT INTO inventory.items (sku, qty, digest) SELECT 'sku-' || g, g % 7, digest('x' || g, 'sha256') FROM generate_series(1, 300) g`,
		`INSERT INTO inventory.log SELECT 'line ' || (g % 10), g % 3 FROM generate_series(1, 200) g`,
		`INSERT INTO inventory.log VALUES ('dup', 1), ('dup', 1), (NULL, NULL)`,
		`CREATE VIEW "Sales Dept".big_orders AS SELECT id, customer FROM "Sales Dept"."Orders" WHERE total > 100`,
		`CREATE MATERIALIZED VIEW inventory.stock AS SELECT qty, count(*) AS n FROM inventory.items GROUP BY qty`,
		`CREATE FUNCTION inventory.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.qty := coalesce(NEW.qty, 0); RETURN NEW; END $$`,
		`CREATE TRIGGER items_touch BEFORE INSERT ON inventory.items FOR EACH ROW EXECUTE FUNCTION inventory.touch()`,
		`SELECT lo_from_bytea(0, convert_to(repeat('large object ', 1000), 'UTF8'))`,
		`GRANT USAGE ON SCHEMA "Sales Dept", inventory TO `+qi(reader),
		`GRANT SELECT ON ALL TABLES IN SCHEMA "Sales Dept", inventory TO `+qi(reader),
		"RESET ROLE",
	)
	f.tables = []string{`"Sales Dept"."Orders"`, `inventory.items`, `inventory.log`, `inventory.stock`, `"Sales Dept".big_orders`}
	return f
}

// dumpTo blocks writes at src, dumps f's database and returns the dump,
// the manifest, the secrets and the block.
func dumpDB(t *testing.T, src *side, db string) ([]byte, *engine.Manifest, engine.Secrets, *postgres.Access) {
	t.Helper()
	s, err := src.srv.Inspect(ctx(t), db)
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	// As the dump step does (it asks the destination too; the tests' two
	// clusters run on this machine and hash alike).
	if _, err := src.srv.ChooseChecksum(ctx(t), s, src.srv); err != nil {
		t.Fatal(err)
	}
	access, err := src.srv.PlanBlock(ctx(t), s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.srv.Block(ctx(t), access); err != nil {
		t.Fatalf("block: %v", err)
	}
	snap, err := src.srv.Snapshot(ctx(t), db)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close(ctx(t))
	var buf bytes.Buffer
	m, sec, _, err := src.srv.Dump(ctx(t), s, snap, "source", &buf, nil)
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	return buf.Bytes(), m, sec, access
}

// importDB imports a dump at dst and verifies it; it returns the record.
func importDB(t *testing.T, dst *side, dump []byte, m *engine.Manifest, sec engine.Secrets) (postgres.ImportRecord, error) {
	t.Helper()
	var rec postgres.ImportRecord
	_, err := dst.srv.Import(ctx(t), m, sec, bytes.NewReader(dump), func(r postgres.ImportRecord) error { rec = r; return nil }, nil)
	if err == nil {
		err = dst.srv.Verify(ctx(t), m, nil)
	}
	return rec, err
}

// rows reads a table's rows as text, sorted, through c.
func rows(t *testing.T, c *pgx.Conn, table string) []string {
	t.Helper()
	rs, err := c.Query(ctx(t), "SELECT t::text FROM "+table+" t")
	if err != nil {
		t.Fatalf("read %s: %v", table, err)
	}
	out, err := pgx.CollectRows(rs, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("read %s: %v", table, err)
	}
	slices.Sort(out)
	return out
}

// acl is the database's privileges, sorted, as the server spells them.
func acl(t *testing.T, pg *fleettest.Postgres, db string) string {
	t.Helper()
	var owner string
	var items []string
	err := pg.Root(t, "postgres").QueryRow(ctx(t), `SELECT pg_get_userbyid(datdba),
		coalesce((SELECT array_agg(x::text ORDER BY x::text) FROM unnest(coalesce(datacl, acldefault('d', datdba))) x), '{}')
		FROM pg_database WHERE datname = $1`, db).Scan(&owner, &items)
	if err != nil {
		t.Fatal(err)
	}
	return "owner " + owner + " " + strings.Join(items, " ")
}

// stopAfter reads r and calls stop once after bytes were read.
type stopAfter struct {
	r     *bytes.Reader
	after int64
	n     int64
	stop  func()
	done  bool
}

func (s *stopAfter) Read(p []byte) (int, error) {
	if len(p) > 64<<10 {
		p = p[:64<<10]
	}
	n, err := s.r.Read(p)
	s.n += int64(n)
	if !s.done && s.n >= s.after {
		s.done = true
		s.stop()
	}
	return n, err
}

// osUser returns a system user's uid and gid.
func osUser(name string) ([2]int, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return [2]int{}, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return [2]int{uid, gid}, nil
}
