package mysql_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/enginetest"
	"github.com/fleetmigrate/fleetmigrate/engine/mysql"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

// The engine conformance suite against two real MariaDB servers.
func TestDriverContract(t *testing.T) {
	src, dst := fleet(t)
	server := func(s *side) engine.Server {
		return engine.Server{Host: s.name, Address: s.m.Addr(), User: adminUser, Password: adminPass}
	}
	enginetest.Run(t, enginetest.Fleet{
		Driver:      mysql.Driver{Options: mysql.Options{SessionWait: 5 * time.Second, ParallelAbove: 1}},
		Source:      server(src),
		Destination: server(dst),
		Customer:    &mysqlCustomer{src: src, dst: dst},
	})
}

// mysqlCustomer is a customer of MariaDB: an account with a password that
// needs quoting, owning one database.
type mysqlCustomer struct {
	src, dst *side
}

var customers atomic.Int64

const customerPass = `cu's"t\ pw ü`

func (c *mysqlCustomer) Create(t *testing.T) string {
	t.Helper()
	db := c.src.m.NewDatabase(t)
	user := fmt.Sprintf("cust_%d_%d", os.Getpid()%100000, customers.Add(1))
	customerUsers.Store(db, user)
	exec(t, c.src.root,
		"CREATE TABLE "+ident.QuoteMySQL(db)+".orders (id INT AUTO_INCREMENT PRIMARY KEY, item VARCHAR(100), qty INT)",
		"CREATE TABLE "+ident.QuoteMySQL(db)+".notes (id INT PRIMARY KEY, body TEXT) ENGINE=InnoDB",
		"INSERT INTO "+ident.QuoteMySQL(db)+".orders (item, qty) VALUES ('a', 1), ('b', 2), ('ü \\' \"', 3)",
		"INSERT INTO "+ident.QuoteMySQL(db)+".notes VALUES (1, 'one'), (2, 'two')",
		"CREATE USER "+acct(user, "%")+" IDENTIFIED BY "+sqlString(customerPass),
		"GRANT ALL ON "+ident.QuoteMySQL(db)+".* TO "+acct(user, "%"))
	t.Cleanup(func() {
		for _, s := range []*side{c.src, c.dst} {
			_, _ = s.root.Exec("DROP DATABASE IF EXISTS " + ident.QuoteMySQL(db))
			_, _ = s.root.Exec("DROP USER IF EXISTS " + acct(user, "%"))
		}
	})
	return db
}

// customerUsers maps each database to its customer's account.
var customerUsers sync.Map

func (c *mysqlCustomer) Write(ctx context.Context, srv engine.Server, db string) error {
	user, _ := customerUsers.Load(db)
	cfg := mysqldrv.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName = user.(string), customerPass, "tcp", srv.Address, db
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = 5*time.Second, 5*time.Second, 5*time.Second
	cfg.TLSConfig = "preferred" // the harness's servers require TLS
	conn, err := mysqldrv.NewConnector(cfg)
	if err != nil {
		return err
	}
	h := sql.OpenDB(conn)
	defer h.Close()
	_, err = h.ExecContext(ctx, "INSERT INTO orders (item, qty) VALUES ('by the customer', 7)")
	return err
}

func (c *mysqlCustomer) root(srv engine.Server) *sql.DB {
	if srv.Address == c.dst.m.Addr() {
		return c.dst.root
	}
	return c.src.root
}

func (c *mysqlCustomer) Tamper(t *testing.T, srv engine.Server, db string) {
	exec(t, c.root(srv), "UPDATE "+ident.QuoteMySQL(db)+".notes SET body = CONCAT(body, '!') WHERE id = 1")
}

func (c *mysqlCustomer) Exists(t *testing.T, srv engine.Server, db string) bool {
	var n int
	if err := c.root(srv).QueryRow("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = ?", db).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

func (c *mysqlCustomer) Occupy(t *testing.T, db string) {
	exec(t, c.dst.root,
		"CREATE DATABASE "+ident.QuoteMySQL(db),
		"CREATE TABLE "+ident.QuoteMySQL(db)+".theirs (id INT PRIMARY KEY)",
		"INSERT INTO "+ident.QuoteMySQL(db)+".theirs VALUES (1)")
}
