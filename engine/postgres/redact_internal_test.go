package postgres

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/fleetmigrate/fleetmigrate/engine"
)

// What pg_restore and psql print when the server refuses a row quotes the
// row; the error we keep names what failed and where, not the values.
func TestRedactToolError(t *testing.T) {
	for _, c := range []struct{ stderr, keep string }{
		{"pg_restore: error: COPY failed for table \"c\": ERROR:  duplicate key value violates unique constraint \"c_email_key\"\nDETAIL:  Key (email)=(alice@secret.example) already exists.\nCONTEXT:  COPY c, line 1",
			"DETAIL:  Key (email)=(…) already exists.\nCONTEXT:  COPY c, line 1"},
		{"pg_restore: error: COPY failed for table \"c\": ERROR:  invalid input syntax for type integer: \"alice@secret.example\"\nCONTEXT:  COPY c, line 5, column n: \"alice@secret.example\"",
			"CONTEXT:  COPY c, line 5, column n"},
		{"pg_restore: error: could not execute query: ERROR:  null value in column \"n\" of relation \"c\" violates not-null constraint\nDETAIL:  Failing row contains (1, alice@secret.example, null).",
			"DETAIL:  Failing row contains (…)."},
		{"pg_restore: error: could not execute query: ERROR:  insert or update on table \"o\" violates foreign key constraint \"o_c_fkey\"\nDETAIL:  Key (c_email)=(alice@secret.example) is not present in table \"c\".",
			"Key (c_email)=(…) is not present"},
		{"psql:/tmp/x.sql:33: ERROR:  syntax error at or near \"alice@secret.example\"\nLINE 1: INSERT INTO c VALUES (1, alice@secret.example, 2);\n                                 ^",
			"psql:/tmp/x.sql:33: ERROR:  syntax error"},
	} {
		err := redactToolError(&engine.ToolError{Tool: "pg_restore", Err: &exec.ExitError{}, Stderr: c.stderr})
		var te *engine.ToolError
		if !errors.As(err, &te) {
			t.Fatalf("%v: not a tool error any more", err)
		}
		if strings.Contains(err.Error(), "alice@secret.example") || !strings.Contains(err.Error(), c.keep) {
			t.Errorf("redacted %q\nto %q\nwant it to keep %q and lose the value", c.stderr, te.Stderr, c.keep)
		}
	}
}
