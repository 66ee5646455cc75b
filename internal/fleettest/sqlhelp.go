package fleettest

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

// RootDB is a root connection pool to the server (multiple statements and
// parsed times allowed), closed at cleanup: for fixtures and independent
// checks.
func (m *MariaDB) RootDB(t testing.TB) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", m.DSN("")+"&multiStatements=true&parseTime=true")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

var admins sync.Map

// EnsureAdmin creates, once per server and account, an administrator
// account user@'%' with password and every privilege WITH GRANT OPTION:
// what the engine's configured account is in production.
func (m *MariaDB) EnsureAdmin(t testing.TB, user, password string) {
	t.Helper()
	once, _ := admins.LoadOrStore(m.Addr()+"\x00"+user, &sync.Once{})
	once.(*sync.Once).Do(func() {
		root := m.RootDB(t)
		Exec(t, root, "CREATE USER IF NOT EXISTS "+MySQLAccount(user, "%")+" IDENTIFIED BY "+MySQLString(password),
			"GRANT ALL PRIVILEGES ON *.* TO "+MySQLAccount(user, "%")+" WITH GRANT OPTION")
	})
}

// PeerGrants are the privileges of the read-only account peers read a
// MariaDB server with (docs/security.md): data, definitions (views,
// triggers and events: MariaDB shows their definitions only to accounts
// that may create them), the accounts and their hashes (SELECT on mysql),
// sessions, the binary log's position and contents. Nothing that changes
// data, accounts or grants.
const PeerGrants = "SELECT, SHOW VIEW, TRIGGER, EVENT, PROCESS, REPLICATION SLAVE, BINLOG MONITOR"

// EnsurePeer creates, once per server, a read-only account with
// PeerGrants (and password).
func (m *MariaDB) EnsurePeer(t testing.TB, user, password string) {
	t.Helper()
	once, _ := admins.LoadOrStore(m.Addr()+"\x00peer\x00"+user, &sync.Once{})
	once.(*sync.Once).Do(func() {
		root := m.RootDB(t)
		Exec(t, root, "CREATE USER IF NOT EXISTS "+MySQLAccount(user, "%")+" IDENTIFIED BY "+MySQLString(password),
			"GRANT "+PeerGrants+" ON *.* TO "+MySQLAccount(user, "%"))
	})
}

// PGPeerStatements create PostgreSQL's read-only peer role (and
// password), what other hosts' agents read a server with
// (docs/security.md): every table, view and sequence and the catalogues
// (pg_read_all_data, which in PostgreSQL 14 and later reads pg_authid's
// password verifiers too), settings and sessions (pg_monitor), every row
// whatever its policies (BYPASSRLS: a copy or a checksum that saw only the
// rows a policy shows would be wrong), and logical replication
// (REPLICATION: a subscription's slot and copy). Its sessions default to
// read-only transactions. Nothing that changes data, objects, roles or
// grants; large objects are not covered by pg_read_all_data
// (docs/security.md says what that means).
func PGPeerStatements(user, password string) []string {
	r := ident.QuotePostgres(user)
	return []string{
		"CREATE ROLE " + r + " LOGIN REPLICATION BYPASSRLS PASSWORD " + ident.QuotePostgresLiteral(password),
		"GRANT pg_read_all_data, pg_monitor TO " + r,
		"ALTER ROLE " + r + " SET default_transaction_read_only = on",
	}
}

// EnsurePeer creates, once per server, the read-only peer role
// (PGPeerStatements).
func (p *Postgres) EnsurePeer(t testing.TB, user, password string) {
	t.Helper()
	once, _ := admins.LoadOrStore(p.Addr()+"\x00peer\x00"+user, &sync.Once{})
	once.(*sync.Once).Do(func() {
		PGExec(t, p.Root(t, "postgres"), PGPeerStatements(user, password)...)
	})
}

// Exec runs statements, failing the test on the first error.
func Exec(t testing.TB, db *sql.DB, stmts ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// MySQLAccount is `user`@`host`, quoted.
func MySQLAccount(user, host string) string {
	return ident.QuoteMySQL(user) + "@" + ident.QuoteMySQL(host)
}

// MySQLString quotes a string literal for the servers' default sql_mode.
func MySQLString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(s) + "'"
}

// LogBuffer is a concurrency-safe sink for a test's logs.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// PurgeBinaryLogs makes a MariaDB server (through root, a root session
// pool) forget every binary log but a new one, as an operator's PURGE or
// an expiry would: it waits until no replica reads the logs (a server
// keeps a log a connected reader reads), rotates, and purges until only the
// newest is left (a log stays until crash recovery no longer needs it).
func PurgeBinaryLogs(ctx context.Context, root *sql.DB) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	wait := func(what string, done func() (bool, error)) error {
		for {
			ok, err := done()
			if err != nil || ok {
				return err
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("purge the binary logs: %s: %w", what, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	err := wait("binary log readers still connected", func() (bool, error) {
		var readers int
		err := root.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'").Scan(&readers)
		return readers == 0, err
	})
	if err != nil {
		return err
	}
	if _, err := root.ExecContext(ctx, "FLUSH BINARY LOGS"); err != nil {
		return err
	}
	return wait("older logs still kept", func() (bool, error) {
		logs, err := binaryLogs(ctx, root)
		if err != nil || len(logs) <= 1 {
			return err == nil, err
		}
		_, err = root.ExecContext(ctx, "PURGE BINARY LOGS TO "+MySQLString(logs[len(logs)-1]))
		return false, err
	})
}

// binaryLogs lists a server's binary log files, oldest first.
func binaryLogs(ctx context.Context, root *sql.DB) ([]string, error) {
	rows, err := root.QueryContext(ctx, "SHOW BINARY LOGS")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var logs []string
	for rows.Next() {
		var name string
		var size any
		if err := rows.Scan(&name, &size); err != nil {
			return nil, err
		}
		logs = append(logs, name)
	}
	return logs, rows.Err()
}
