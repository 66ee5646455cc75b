// Package ident validates and quotes identifiers that come from users:
// database names, role and user names. Every SQL statement that names a
// user's object builds the name with a Quote function from here, never by
// hand.
package ident

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Engine limits on database names.
const (
	// MySQLMaxChars is MySQL/MariaDB's limit on a database name, in characters.
	MySQLMaxChars = 64
	// PostgresMaxBytes is PostgreSQL's limit (NAMEDATALEN-1). Longer names are
	// silently truncated by the server, so two long names could collide.
	PostgresMaxBytes = 63
)

// ErrEmpty is returned for an empty name.
var ErrEmpty = errors.New("name is empty")

// QuoteMySQL quotes name as a MySQL/MariaDB identifier: `name`, with
// backticks doubled.
func QuoteMySQL(name string) string {
	return "`" + strings.ReplaceAll(name, "`", "``") + "`"
}

// QuotePostgres quotes name as a PostgreSQL identifier: "name", with double
// quotes doubled.
func QuotePostgres(name string) string {
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

// QuotePostgresLiteral quotes s as a PostgreSQL string constant, doubling
// single quotes, and uses the E-prefixed form with doubled backslashes when s
// contains a backslash, so that the result means the same whatever
// standard_conforming_strings says.
func QuotePostgresLiteral(s string) string {
	q := "'" + strings.ReplaceAll(s, "'", "''") + "'"
	if strings.Contains(s, `\`) {
		return "E" + strings.ReplaceAll(q, `\`, `\\`)
	}
	return q
}

// ValidateMySQL checks that name is a legal MySQL/MariaDB database name:
// non-empty valid UTF-8, at most 64 characters, no NUL, no characters outside
// the Basic Multilingual Plane (the servers refuse them), not ending in a
// space (the servers refuse that too).
func ValidateMySQL(name string) error {
	if err := validateCommon(name); err != nil {
		return err
	}
	if n := utf8.RuneCountInString(name); n > MySQLMaxChars {
		return fmt.Errorf("name is %d characters long; MySQL/MariaDB allow at most %d", n, MySQLMaxChars)
	}
	for _, r := range name {
		if r > 0xFFFF {
			return fmt.Errorf("name contains %q (U+%04X), outside the Basic Multilingual Plane, which MySQL/MariaDB do not allow in identifiers", r, r)
		}
	}
	if strings.HasSuffix(name, " ") {
		return errors.New("name ends with a space, which MySQL/MariaDB do not allow")
	}
	return nil
}

// ValidatePostgres checks that name is a legal PostgreSQL database name that
// the server will not truncate: non-empty valid UTF-8, at most 63 bytes, no
// NUL.
func ValidatePostgres(name string) error {
	if err := validateCommon(name); err != nil {
		return err
	}
	if n := len(name); n > PostgresMaxBytes {
		return fmt.Errorf("name is %d bytes long; PostgreSQL allows at most %d and would silently truncate it", n, PostgresMaxBytes)
	}
	return nil
}

func validateCommon(name string) error {
	if name == "" {
		return ErrEmpty
	}
	if !utf8.ValidString(name) {
		return errors.New("name is not valid UTF-8")
	}
	if strings.ContainsRune(name, 0) {
		return errors.New("name contains a NUL character")
	}
	return nil
}
