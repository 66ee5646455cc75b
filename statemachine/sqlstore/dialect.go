package sqlstore

import (
	"errors"
	"strconv"
	"strings"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/fleetmigrate/fleetmigrate/migrations"
)

// dialect holds the few places where PostgreSQL and MySQL/MariaDB differ.
// Statements are written with ? placeholders and rebound for PostgreSQL.
type dialect struct{ name migrations.Dialect }

func (d dialect) pg() bool { return d.name == migrations.Postgres }

// q rebinds ? placeholders to $1, $2... for PostgreSQL. Our statements
// contain no ? inside string literals or identifiers.
func (d dialect) q(query string) string {
	if !d.pg() {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 16)
	n := 0
	inQuote := false
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case c == '\'':
			inQuote = !inQuote
			b.WriteByte(c)
		case c == '?' && !inQuote:
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// now is the clock expression; it takes one argument, Store.nowArg().
func (d dialect) now() string {
	if d.pg() {
		return "coalesce(CAST(? AS timestamptz), now())"
	}
	return "COALESCE(CAST(? AS DATETIME(6)), NOW(6))"
}

// plusMicros adds a number of microseconds (one more argument) to a time
// expression.
func (d dialect) plusMicros(expr string) string {
	if d.pg() {
		return "(" + expr + " + CAST(? AS bigint) * interval '1 microsecond')"
	}
	return "DATE_ADD(" + expr + ", INTERVAL ? MICROSECOND)"
}

// insertIgnore starts an INSERT that silently skips a row whose key exists;
// suffix closes it.
func (d dialect) insertIgnore() (prefix, suffix string) {
	if d.pg() {
		return "INSERT INTO", " ON CONFLICT DO NOTHING"
	}
	return "INSERT IGNORE INTO", ""
}

// forUpdateSkipLocked ends a SELECT that picks rows to claim.
func (d dialect) forUpdateSkipLocked() string { return " FOR UPDATE SKIP LOCKED" }

// retryable reports errors after which the whole transaction may be retried:
// deadlocks, serialisation failures, lock wait timeouts.
func (d dialect) retryable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "40001" || pgErr.Code == "40P01" || pgErr.Code == "55P03"
	}
	var myErr *mysql.MySQLError
	if errors.As(err, &myErr) {
		return myErr.Number == 1213 || myErr.Number == 1205
	}
	return false
}

// uniqueViolation reports a duplicate key.
func (d dialect) uniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "23505"
	}
	var myErr *mysql.MySQLError
	if errors.As(err, &myErr) {
		return myErr.Number == 1062
	}
	return false
}

// guardViolation reports the transition trigger's refusal.
func (d dialect) guardViolation(err error) bool {
	return strings.Contains(d.message(err), "is not in the transition table")
}

// message is the server's own text of a database error.
func (d dialect) message(err error) string {
	if msg, ok := serverMessage(err); ok {
		return msg
	}
	return err.Error()
}

// serverMessage returns the text of an error the database server sent.
func serverMessage(err error) (string, bool) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Message, true
	}
	var myErr *mysql.MySQLError
	if errors.As(err, &myErr) {
		return myErr.Message, true
	}
	return "", false
}

// placeholders returns "?, ?, ?" for n arguments.
func placeholders(n int) string {
	if n <= 0 {
		return ""
	}
	return strings.Repeat("?, ", n-1) + "?"
}
