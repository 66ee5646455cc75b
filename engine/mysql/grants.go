package mysql

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

// grant is one line of SHOW GRANTS, taken apart.
//
//	GRANT <privs> ON [PROCEDURE|FUNCTION|PACKAGE [BODY]] <db>.<table> TO <grantee> [WITH GRANT OPTION]
//
// The privilege list, the target and the grantee are kept as the server
// printed them (quoted, with column lists), so that statements built from
// them name exactly what the server stored.
type grant struct {
	// Privs is the privilege list as printed ("SELECT (`a`), UPDATE (`a`)").
	Privs string
	// Kind is "" for databases and tables, else PROCEDURE, FUNCTION,
	// PACKAGE or PACKAGE BODY.
	Kind string
	// DB and Table are unquoted; "*" stands for all. A database-level DB is
	// a LIKE pattern (with \ escapes) as stored in mysql.db.
	DB, Table string
	// Target is the target as printed ("`db`.*", "PROCEDURE `db`.`p`").
	Target string
	// Grantee is the account as printed ("`u`@`%`").
	Grantee     string
	GrantOption bool
	// Other marks lines this code never changes: roles granted to the
	// account ("GRANT r TO u"), PROXY.
	Other bool
}

// readPrivileges are the privileges a blocked account keeps: reading.
var readPrivileges = []string{"SELECT", "SHOW VIEW"}

// parseGrant takes a SHOW GRANTS line apart. Secrets printed on global lines
// (IDENTIFIED BY PASSWORD '...') are dropped.
func parseGrant(line string) (grant, error) {
	bad := func(why string) (grant, error) {
		return grant{}, fmt.Errorf("cannot read grant %q: %s", redactGrant(line), why)
	}
	rest, ok := strings.CutPrefix(line, "GRANT ")
	if !ok {
		return bad("it does not start with GRANT")
	}
	on := topLevelIndex(rest, " ON ")
	to := topLevelIndex(rest, " TO ")
	if to < 0 {
		return bad("no TO clause")
	}
	if on < 0 || on > to { // GRANT role TO user
		return grant{Other: true, Privs: rest[:to], Grantee: grantee(rest[to+4:])}, nil
	}
	g := grant{Privs: rest[:on]}
	if g.Privs == "PROXY" {
		return grant{Other: true, Privs: g.Privs, Target: rest[on+4 : to], Grantee: grantee(rest[to+4:])}, nil
	}
	target := rest[on+4 : to]
	g.Target = target
	for _, kind := range []string{"PACKAGE BODY ", "PACKAGE ", "PROCEDURE ", "FUNCTION "} {
		if t, ok := strings.CutPrefix(target, kind); ok {
			g.Kind, target = strings.TrimSpace(kind), t
			break
		}
	}
	db, tail, err := readIdent(target)
	if err != nil {
		return bad(err.Error())
	}
	tail, ok = strings.CutPrefix(tail, ".")
	if !ok {
		return bad("target is not db.table")
	}
	table, tail, err := readIdent(tail)
	if err != nil || tail != "" {
		return bad("target is not db.table")
	}
	g.DB, g.Table = db, table
	after := rest[to+4:]
	g.Grantee = grantee(after)
	g.GrantOption = strings.Contains(after[len(g.Grantee):], " WITH GRANT OPTION")
	return g, nil
}

// grantee returns the account at the start of s: `u`@`h` or 'u'@'h'.
func grantee(s string) string {
	_, rest, err := readIdent(s)
	if err != nil {
		return s
	}
	if r, ok := strings.CutPrefix(rest, "@"); ok {
		if _, rest2, err := readIdent(r); err == nil {
			rest = rest2
		}
	}
	return s[:len(s)-len(rest)]
}

// readIdent reads one identifier at the start of s: `quoted` (backticks
// doubled), 'quoted', or a bare word or *; it returns it unquoted and what
// follows.
func readIdent(s string) (string, string, error) {
	if s == "" {
		return "", "", errors.New("identifier expected")
	}
	switch q := s[0]; q {
	case '`', '\'', '"':
		var b strings.Builder
		for i := 1; i < len(s); i++ {
			if s[i] == q {
				if i+1 < len(s) && s[i+1] == q {
					b.WriteByte(q)
					i++
					continue
				}
				return b.String(), s[i+1:], nil
			}
			if q != '`' && s[i] == '\\' && i+1 < len(s) {
				i++
			}
			b.WriteByte(s[i])
		}
		return "", "", errors.New("unterminated quoted identifier")
	}
	i := strings.IndexAny(s, ".@ ")
	if i < 0 {
		i = len(s)
	}
	if i == 0 {
		return "", "", errors.New("identifier expected")
	}
	return s[:i], s[i:], nil
}

// topLevelIndex finds sep in s outside quotes and parentheses.
func topLevelIndex(s, sep string) int {
	depth := 0
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				if i+1 < len(s) && s[i+1] == quote {
					i++
				} else {
					quote = 0
				}
			}
		case c == '`' || c == '\'' || c == '"':
			quote = c
		case c == '(':
			depth++
		case c == ')':
			depth--
		case depth == 0 && strings.HasPrefix(s[i:], sep):
			return i
		}
	}
	return -1
}

// splitPrivileges splits a privilege list at top-level commas.
func splitPrivileges(privs string) []string {
	var out []string
	for {
		i := topLevelIndex(privs, ",")
		if i < 0 {
			return append(out, strings.TrimSpace(privs))
		}
		out = append(out, strings.TrimSpace(privs[:i]))
		privs = privs[i+1:]
	}
}

// privilegeName is a list item without its column list: "SELECT (`a`)" → "SELECT".
func privilegeName(item string) string {
	if i := strings.Index(item, " ("); i >= 0 {
		return item[:i]
	}
	if i := strings.Index(item, "("); i >= 0 {
		return strings.TrimSpace(item[:i])
	}
	return item
}

func isAll(privs string) bool { return privs == "ALL PRIVILEGES" || privs == "ALL" }

// global reports a line on *.* (server-wide privileges).
func (g grant) global() bool { return g.DB == "*" }

// dbLevel reports a line on <db>.* (a pattern).
func (g grant) dbLevel() bool { return g.Kind == "" && g.DB != "*" && g.Table == "*" }

// writes reports whether the line gives more than reading: any privilege
// besides SELECT and SHOW VIEW, or the grant option.
func (g grant) writes() bool {
	if g.GrantOption || isAll(g.Privs) {
		return true
	}
	for _, p := range splitPrivileges(g.Privs) {
		if !slices.Contains(readPrivileges, privilegeName(p)) && privilegeName(p) != "USAGE" {
			return true
		}
	}
	return false
}

// readPart is the reading part of the line's privileges ("" if none).
func (g grant) readPart() string {
	if g.Kind != "" {
		return ""
	}
	if isAll(g.Privs) {
		return strings.Join(readPrivileges, ", ")
	}
	var keep []string
	for _, p := range splitPrivileges(g.Privs) {
		if slices.Contains(readPrivileges, privilegeName(p)) {
			keep = append(keep, p)
		}
	}
	return strings.Join(keep, ", ")
}

// on reports whether the line targets database db (a pattern that matches
// it, at database level; the exact name, at table and routine level).
func (g grant) on(db string, foldCase bool) bool {
	switch {
	case g.Other || g.global():
		return false
	case g.dbLevel():
		return likeMatch(g.DB, db, foldCase)
	}
	if foldCase {
		return strings.EqualFold(g.DB, db)
	}
	return g.DB == db
}

// exact reports whether a database-level pattern names exactly db (no
// unescaped wildcard).
func exactPattern(pattern, db string) bool { return pattern == escapeLike(db) }

// grantStmt is the line as a GRANT on target.
func (g grant) grantStmt(privs, target string) string {
	s := "GRANT " + privs + " ON " + target + " TO " + g.Grantee
	if g.GrantOption && privs == g.Privs {
		s += " WITH GRANT OPTION"
	}
	return s
}

// revokeStmts revoke what the line grants.
func (g grant) revokeStmts() []string {
	if isAll(g.Privs) {
		out := []string{"REVOKE ALL PRIVILEGES ON " + g.Target + " FROM " + g.Grantee}
		if g.GrantOption {
			out = append(out, "REVOKE GRANT OPTION ON "+g.Target+" FROM "+g.Grantee)
		}
		return out
	}
	privs := g.Privs
	if g.GrantOption {
		privs += ", GRANT OPTION"
	}
	return []string{"REVOKE " + privs + " ON " + g.Target + " FROM " + g.Grantee}
}

// dbTarget is the database-level target naming exactly db.
func dbTarget(db string) string { return ident.QuoteMySQL(escapeLike(db)) + ".*" }

// escapeLike escapes the LIKE wildcards (and the escape character) of a
// database name, as GRANT ... ON `db`.* reads it.
func escapeLike(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `_`, `\_`, `%`, `\%`)
	return r.Replace(s)
}

// likeMatch reports whether s matches the LIKE pattern p (% any run, _ one
// character, \ escapes), as the server matches database-level grants.
func likeMatch(p, s string, foldCase bool) bool {
	if foldCase {
		p, s = strings.ToLower(p), strings.ToLower(s)
	}
	for len(p) > 0 {
		c, n := utf8.DecodeRuneInString(p)
		switch c {
		case '%':
			rest := p[n:]
			for {
				if likeMatch(rest, s, false) {
					return true
				}
				if s == "" {
					return false
				}
				_, m := utf8.DecodeRuneInString(s)
				s = s[m:]
			}
		case '_':
			if s == "" {
				return false
			}
			_, m := utf8.DecodeRuneInString(s)
			p, s = p[n:], s[m:]
			continue
		case '\\':
			if len(p) > n {
				c2, n2 := utf8.DecodeRuneInString(p[n:])
				c, n = c2, n+n2
			}
		}
		d, m := utf8.DecodeRuneInString(s)
		if s == "" || d != c {
			return false
		}
		p, s = p[n:], s[m:]
	}
	return s == ""
}

// redactGrant drops what follows IDENTIFIED in a grant line (a password
// hash) so that the line can be logged.
func redactGrant(line string) string {
	if i := strings.Index(line, " IDENTIFIED "); i >= 0 {
		return line[:i] + " IDENTIFIED <redacted>"
	}
	return line
}

// accountName quotes an account for statements: `user`@`host`.
func accountName(user, host string) string {
	return ident.QuoteMySQL(user) + "@" + ident.QuoteMySQL(host)
}
