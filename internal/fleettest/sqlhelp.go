package fleettest

import (
	"bytes"
	"context"
	"database/sql"
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
