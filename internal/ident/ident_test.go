package ident_test

import (
	"context"
	"database/sql"
	"strings"
	"testing"

	_ "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

func TestMain(m *testing.M) { fleettest.Main(m) }

func TestQuote(t *testing.T) {
	cases := []struct{ in, mysql, pg string }{
		{"shop", "`shop`", `"shop"`},
		{"back`tick", "`back``tick`", `"back` + "`" + `tick"`},
		{`dq"x`, "`dq\"x`", `"dq""x"`},
		{"sq'x", "`sq'x`", `"sq'x"`},
		{"a b", "`a b`", `"a b"`},
		{"``", "``````", "\"``\""},
	}
	for _, c := range cases {
		if got := ident.QuoteMySQL(c.in); got != c.mysql {
			t.Errorf("QuoteMySQL(%q) = %s, want %s", c.in, got, c.mysql)
		}
		if got := ident.QuotePostgres(c.in); got != c.pg {
			t.Errorf("QuotePostgres(%q) = %s, want %s", c.in, got, c.pg)
		}
	}
	if got := ident.QuotePostgresLiteral(`it's a \ path`); got != `E'it''s a \\ path'` {
		t.Errorf("QuotePostgresLiteral: %s", got)
	}
	if got := ident.QuotePostgresLiteral(`it's`); got != `'it''s'` {
		t.Errorf("QuotePostgresLiteral: %s", got)
	}
}

func TestValidate(t *testing.T) {
	mysqlOK := []string{"shop", "a b", "back`tick", strings.Repeat("é", 64), "数据库", " lead", "%_"}
	mysqlBad := []string{"", strings.Repeat("a", 65), "trailing ", "nul\x00", "emoji😀", "\xff\xfe"}
	pgOK := []string{"shop", "trailing ", strings.Repeat("x", 63), strings.Repeat("é", 31) + "x"}
	pgBad := []string{"", strings.Repeat("x", 64), strings.Repeat("é", 32), "nul\x00", "\xff"}
	for _, n := range mysqlOK {
		if err := ident.ValidateMySQL(n); err != nil {
			t.Errorf("ValidateMySQL(%q): %v", n, err)
		}
	}
	for _, n := range mysqlBad {
		if err := ident.ValidateMySQL(n); err == nil {
			t.Errorf("ValidateMySQL(%q) accepted", n)
		}
	}
	for _, n := range pgOK {
		if err := ident.ValidatePostgres(n); err != nil {
			t.Errorf("ValidatePostgres(%q): %v", n, err)
		}
	}
	for _, n := range pgBad {
		if err := ident.ValidatePostgres(n); err == nil {
			t.Errorf("ValidatePostgres(%q) accepted", n)
		}
	}
}

// awkward are names every engine must accept through our quoting.
var awkward = []string{
	"back`tick", `double"quote`, "single'quote", "with space", "100%_like",
	"ünïcødé_数据库", `semi;colon -- comment`, `back\slash`, "``", `""`,
}

// TestQuotedNamesOnRealServers creates databases with awkward names through
// the quote functions and reads the names back from the servers' catalogs:
// what the server stored is exactly what we asked for.
func TestQuotedNamesOnRealServers(t *testing.T) {
	ctx := context.Background()
	t.Run("MariaDB", func(t *testing.T) {
		t.Parallel()
		srv := fleettest.SharedMariaDB(t)
		db, err := sql.Open("mysql", srv.DSN(""))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		names := append(append([]string{}, awkward...), strings.Repeat("é", ident.MySQLMaxChars))
		for _, n := range names {
			if err := ident.ValidateMySQL(n); err != nil {
				t.Fatalf("%q: %v", n, err)
			}
			if _, err := db.ExecContext(ctx, "CREATE DATABASE "+ident.QuoteMySQL(n)); err != nil {
				t.Fatalf("create %q: %v", n, err)
			}
			var got string
			if err := db.QueryRowContext(ctx, "SELECT schema_name FROM information_schema.schemata WHERE schema_name = ?", n).Scan(&got); err != nil || got != n {
				t.Errorf("server has %q for %q (%v)", got, n, err)
			}
			if _, err := db.ExecContext(ctx, "CREATE TABLE "+ident.QuoteMySQL(n)+"."+ident.QuoteMySQL(n)+" (v INT)"); err != nil {
				t.Errorf("create table in %q: %v", n, err)
			}
			if _, err := db.ExecContext(ctx, "DROP DATABASE "+ident.QuoteMySQL(n)); err != nil {
				t.Errorf("drop %q: %v", n, err)
			}
		}
		// One character more than the limit is refused by the server too:
		// the validator and the server agree.
		long := strings.Repeat("é", ident.MySQLMaxChars+1)
		if _, err := db.ExecContext(ctx, "CREATE DATABASE "+ident.QuoteMySQL(long)); err == nil {
			t.Error("server accepted a 65-character name; the validator's limit is wrong")
		}
	})
	t.Run("PostgreSQL", func(t *testing.T) {
		t.Parallel()
		srv := fleettest.SharedPostgres(t)
		c, err := pgx.Connect(ctx, srv.DSN("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		names := append(append([]string{}, awkward...), "trailing space ", strings.Repeat("x", ident.PostgresMaxBytes))
		for _, n := range names {
			if err := ident.ValidatePostgres(n); err != nil {
				t.Fatalf("%q: %v", n, err)
			}
			if _, err := c.Exec(ctx, "CREATE DATABASE "+ident.QuotePostgres(n)); err != nil {
				t.Fatalf("create %q: %v", n, err)
			}
			var got string
			if err := c.QueryRow(ctx, "SELECT datname FROM pg_database WHERE datname = "+ident.QuotePostgresLiteral(n)).Scan(&got); err != nil || got != n {
				t.Errorf("server has %q for %q (%v)", got, n, err)
			}
			if _, err := c.Exec(ctx, "DROP DATABASE "+ident.QuotePostgres(n)); err != nil {
				t.Errorf("drop %q: %v", n, err)
			}
		}
		// PostgreSQL silently truncates longer names: two 64-byte names that
		// differ only in the last byte collide. That is why the validator
		// refuses them.
		a, b := strings.Repeat("y", 63)+"a", strings.Repeat("y", 63)+"b"
		if _, err := c.Exec(ctx, "CREATE DATABASE "+ident.QuotePostgres(a)); err != nil {
			t.Fatal(err)
		}
		defer func() { _, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+ident.QuotePostgres(a)) }()
		if _, err := c.Exec(ctx, "CREATE DATABASE "+ident.QuotePostgres(b)); err == nil {
			t.Error("server kept two 64-byte names apart; the truncation the validator guards against did not happen")
		}
		if ident.ValidatePostgres(a) == nil {
			t.Error("validator accepted a 64-byte name")
		}
	})
}
