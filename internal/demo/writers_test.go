package demo

import (
	"errors"
	"fmt"
	"testing"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestIsDuplicate(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&mysql.MySQLError{Number: 1062, Message: "Duplicate entry '109' for key 'PRIMARY'"}, true},
		{fmt.Errorf("insert: %w", &mysql.MySQLError{Number: 1062}), true},
		{&mysql.MySQLError{Number: 1142, Message: "INSERT command denied"}, false},
		{&pgconn.PgError{Code: "23505"}, true},
		{fmt.Errorf("insert: %w", &pgconn.PgError{Code: "23505"}), true},
		{&pgconn.PgError{Code: "25006"}, false}, // read-only transaction
		{errors.New("invalid connection"), false},
	} {
		if got := isDuplicate(c.err); got != c.want {
			t.Errorf("isDuplicate(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
