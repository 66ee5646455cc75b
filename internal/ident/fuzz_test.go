package ident_test

import (
	"strings"
	"testing"

	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

// unquote reads back a quoted identifier: outer quotes q, inner quotes
// doubled; ok is false if the text is not exactly one such identifier.
func unquote(s string, q byte) (string, bool) {
	if len(s) < 2 || s[0] != q || s[len(s)-1] != q {
		return "", false
	}
	var b strings.Builder
	in := s[1 : len(s)-1]
	for i := 0; i < len(in); i++ {
		if in[i] == q {
			if i+1 >= len(in) || in[i+1] != q {
				return "", false // a lone quote would end the identifier early
			}
			i++
		}
		b.WriteByte(in[i])
	}
	return b.String(), true
}

// unquoteLiteral reads back a PostgreSQL string constant as the server
// does, in either standard_conforming_strings setting.
func unquoteLiteral(s string) (string, bool) {
	escape := strings.HasPrefix(s, "E")
	v, ok := unquote(strings.TrimPrefix(s, "E"), '\'')
	if !ok {
		return "", false
	}
	if !escape {
		return v, !strings.Contains(v, `\`)
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' {
			if i+1 >= len(v) || v[i+1] != '\\' {
				return "", false // an escape other than \\ would change the value
			}
			i++
		}
		b.WriteByte(v[i])
	}
	return b.String(), true
}

// FuzzQuote: every quoted form reads back, as the server reads it, to
// exactly the name given, whatever the name holds.
func FuzzQuote(f *testing.F) {
	for _, s := range []string{"plain", "a`b", `a"b`, "a'b", `a\b`, "a b", "ü 😀", "`", `"`, `'`, `\`, "``", "'\\'", strings.Repeat("é", 64), "x\x00y", "\n;DROP"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if got, ok := unquote(ident.QuoteMySQL(name), '`'); !ok || got != name {
			t.Fatalf("QuoteMySQL(%q) = %s reads back as %q, %v", name, ident.QuoteMySQL(name), got, ok)
		}
		if got, ok := unquote(ident.QuotePostgres(name), '"'); !ok || got != name {
			t.Fatalf("QuotePostgres(%q) = %s reads back as %q, %v", name, ident.QuotePostgres(name), got, ok)
		}
		if got, ok := unquoteLiteral(ident.QuotePostgresLiteral(name)); !ok || got != name {
			t.Fatalf("QuotePostgresLiteral(%q) = %s reads back as %q, %v", name, ident.QuotePostgresLiteral(name), got, ok)
		}
		// A name the validators accept is one the servers take as it is.
		if ident.ValidateMySQL(name) == nil && (strings.ContainsRune(name, 0) || strings.HasSuffix(name, " ") || len([]rune(name)) > ident.MySQLMaxChars) {
			t.Fatalf("ValidateMySQL accepted %q", name)
		}
		if ident.ValidatePostgres(name) == nil && (strings.ContainsRune(name, 0) || len(name) > ident.PostgresMaxBytes || name == "") {
			t.Fatalf("ValidatePostgres accepted %q", name)
		}
	})
}
