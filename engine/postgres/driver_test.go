package postgres_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/enginetest"
	"github.com/fleetmigrate/fleetmigrate/engine/postgres"
	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
)

// The engine conformance suite against two real PostgreSQL clusters.
func TestDriverContract(t *testing.T) {
	src, dst := fleet(t)
	server := func(s *side, host string) engine.Server {
		return engine.Server{Host: host, Address: s.pg.Addr(), User: adminUser, Password: adminPass}
	}
	enginetest.Run(t, enginetest.Fleet{
		Driver:      postgres.Driver{Options: postgres.Options{SessionWait: 5 * time.Second, TempDir: t.TempDir(), Pools: new(postgres.Pools)}},
		Source:      server(src, "source"),
		Destination: server(dst, "destination"),
		Customer:    &pgCustomer{src: src.pg, dst: dst.pg},
	})
}

// pgCustomer is a customer of PostgreSQL: a login role with a password
// that needs quoting, owning one database and its tables.
type pgCustomer struct {
	src, dst *fleettest.Postgres
}

const customerPass = `cu:s't\ pw ü`

// customerRoles maps each database to its customer's role.
var customerRoles sync.Map

func (c *pgCustomer) Create(t *testing.T) string {
	t.Helper()
	db, role := unique("contract_"), unique("cust_")
	customerRoles.Store(db, role)
	dropAfter(t, db, []string{role}, &side{pg: c.src}, &side{pg: c.dst})
	pgExec(t, c.src.Root(t, "postgres"),
		"CREATE ROLE "+qi(role)+" LOGIN PASSWORD "+ql(customerPass),
		"CREATE DATABASE "+qi(db)+" OWNER "+qi(role))
	conn := c.src.Root(t, db)
	pgExec(t, conn,
		"SET ROLE "+qi(role),
		"CREATE TABLE orders (id serial PRIMARY KEY, item text, qty int)",
		"CREATE TABLE notes (id int PRIMARY KEY, body text)",
		"INSERT INTO orders (item, qty) VALUES ('a', 1), ('b', 2), ('ü '' \"', 3)",
		"INSERT INTO notes VALUES (1, 'one'), (2, 'two')",
		"RESET ROLE")
	return db
}

func (c *pgCustomer) cluster(srv engine.Server) *fleettest.Postgres {
	if srv.Address == c.dst.Addr() {
		return c.dst
	}
	return c.src
}

func (c *pgCustomer) Write(ctx context.Context, srv engine.Server, db string) error {
	role, _ := customerRoles.Load(db)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := c.cluster(srv).Dial(ctx, db, role.(string), customerPass)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.Background()) }()
	_, err = conn.Exec(ctx, "INSERT INTO orders (item, qty) VALUES ('by the customer', 7)")
	return err
}

func (c *pgCustomer) Tamper(t *testing.T, srv engine.Server, db string) {
	pgExec(t, c.cluster(srv).Root(t, db), "UPDATE notes SET body = body || '!' WHERE id = 1")
}

func (c *pgCustomer) Exists(t *testing.T, srv engine.Server, db string) bool {
	var n int
	if err := c.cluster(srv).Root(t, "postgres").QueryRow(context.Background(), "SELECT count(*) FROM pg_database WHERE datname = $1", db).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

func (c *pgCustomer) Occupy(t *testing.T, db string) {
	pgExec(t, c.dst.Root(t, "postgres"), "CREATE DATABASE "+qi(db))
	pgExec(t, c.dst.Root(t, db), "CREATE TABLE theirs (id int PRIMARY KEY)", "INSERT INTO theirs VALUES (1)")
}
