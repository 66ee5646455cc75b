package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/fleetmigrate/fleetmigrate/engine"
)

var toolVersionRE = regexp.MustCompile(`\(PostgreSQL\) (\d+)(?:\.(\d+))?`)

// toolMajor reads the major version from a --version line ("pg_dump
// (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)" is 15), 0 if unknown.
func toolMajor(version string) int {
	m := toolVersionRE.FindStringSubmatch(version)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// tool finds program (pg_dump or pg_restore) of major version need or
// newer: Options.BinDir if set, else ToolsRoot/<need>/bin, else the
// oldest newer one installed. An older one only is a permanent error that
// names the package to install: pg_dump refuses servers newer than itself,
// and pg_restore archives of newer pg_dumps.
func (s *Server) tool(ctx context.Context, program string, need int) (path, version string, err error) {
	pkg := fmt.Sprintf("install the postgresql-client-%d package (PostgreSQL's apt repository has every version)", need)
	check := func(path string) (string, error) {
		v, err := engine.ToolVersion(ctx, path)
		if err != nil {
			return "", engine.Permanentf("%s cannot run: %v; %s", path, err, pkg)
		}
		if got := toolMajor(v); got < need {
			return v, engine.Permanentf("%s is version %d (%q), older than PostgreSQL %d that it must work with; %s", path, got, v, need, pkg)
		}
		return v, nil
	}
	if s.opt.BinDir != "" {
		p := filepath.Join(s.opt.BinDir, program)
		v, err := check(p)
		return p, v, err
	}
	found, _ := filepath.Glob(filepath.Join(s.opt.ToolsRoot, "*", "bin", program))
	type candidate struct {
		major int
		path  string
	}
	var cands []candidate
	for _, p := range found {
		if n, err := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(p)))); err == nil {
			cands = append(cands, candidate{n, p})
		}
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].major < cands[j].major })
	var have []string
	for _, c := range cands {
		have = append(have, strconv.Itoa(c.major))
		if c.major >= need {
			v, err := check(c.path)
			return c.path, v, err
		}
	}
	if len(have) == 0 {
		return "", "", engine.Permanentf("no %s in %s/*/bin for PostgreSQL %d; %s", program, s.opt.ToolsRoot, need, pkg)
	}
	return "", "", engine.Permanentf("%s for PostgreSQL %d is needed but only version %s is installed in %s; %s",
		program, need, strings.Join(have, ", "), s.opt.ToolsRoot, pkg)
}

// passfile writes the administrator's password to a fresh 0600 password
// file in a 0700 directory, for PGPASSFILE: passwords never go on a
// command line or into the environment. cleanup removes both.
func (s *Server) passfile() (dir, file string, cleanup func(), err error) {
	dir, err = os.MkdirTemp(s.opt.TempDir, "fleetmigrate-postgres-")
	if err != nil {
		return "", "", nil, fmt.Errorf("create a password file: %w", err)
	}
	cleanup = func() { _ = os.RemoveAll(dir) }
	esc := strings.NewReplacer(`\`, `\\`, `:`, `\:`)
	line := fmt.Sprintf("*:*:*:%s:%s\n", esc.Replace(s.srv.User), esc.Replace(s.srv.Password))
	file = filepath.Join(dir, "pgpass")
	if err := os.WriteFile(file, []byte(line), 0o600); err != nil {
		cleanup()
		return "", "", nil, fmt.Errorf("write a password file: %w", err)
	}
	return dir, file, cleanup, nil
}

// conninfo is a libpq connection string to database (no password).
func (s *Server) conninfo(database string) string {
	cc := s.cfg.ConnConfig
	return s.opt.connString(cc.Host, cc.Port, cc.User, database)
}

// connString is a libpq keyword/value connection string (no password).
// It carries the TLS settings, so pgx and the tools connect alike.
func (o Options) connString(host string, port uint16, user, database string) string {
	kv := func(k, v string) string {
		return k + "='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
	}
	parts := []string{kv("host", host), kv("port", strconv.Itoa(int(port))), kv("user", user),
		kv("dbname", database), kv("application_name", "fleetmigrate"), kv("connect_timeout", "10")}
	if o.SSLMode != "" {
		parts = append(parts, kv("sslmode", o.SSLMode))
	}
	if o.SSLRootCert != "" {
		parts = append(parts, kv("sslrootcert", o.SSLRootCert))
	}
	return strings.Join(parts, " ")
}

// run runs a PostgreSQL program with the password file and a minimal
// environment (engine.RunTool).
func (s *Server) run(ctx context.Context, tool string, args []string, w io.Writer, stdin io.Reader) error {
	dir, pass, cleanup, err := s.passfile()
	if err != nil {
		return err
	}
	defer cleanup()
	// HOME is the password file's directory: no ~/.pgpass or
	// ~/.pg_service.conf can interfere; no other PG* variable is passed.
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "PGPASSFILE=" + pass, "LC_ALL=C.UTF-8", "TZ=UTC"}
	return redactToolError(engine.RunTool(ctx, tool, args, env, w, stdin))
}

// What the server says about a row it refused quotes the row: the
// customer's data must not reach rows, events and logs through our errors.
var (
	// DETAIL:  Key (email)=(alice@example.com) already exists.
	keyValues = regexp.MustCompile(`(Key \([^)]*\))=\(.*?\)( already exists| is not present| is duplicated| conflicts)`)
	// DETAIL:  Failing row contains (1, alice@example.com, null).
	failingRow = regexp.MustCompile(`Failing row contains \(.*\)`)
	// CONTEXT:  COPY orders, line 5, column email: "alice@example.com"
	copyValue = regexp.MustCompile(`(COPY [^,]+, line \d+(, column [^:]+)?): .*`)
	// ERROR:  invalid input syntax for type integer: "alice@example.com"
	// (and: value "…" is out of range, syntax error at or near "…")
	quotedValue = regexp.MustCompile(`(invalid input (?:syntax|value) for [^:\n]+: |value |at or near )"(?:[^"\n]|"")*"`)
	// psql's echo of the statement: LINE 1: INSERT INTO ... and its caret
	echoLine = regexp.MustCompile(`(?m)^LINE \d+: .*$\n?(^\s*\^\s*$\n?)?`)
)

// redactToolError takes the quoted values out of a tool's message, keeping
// what failed where: "Key (email)=(…) already exists", "COPY orders, line 5,
// column email".
func redactToolError(err error) error {
	var te *engine.ToolError
	if !errors.As(err, &te) {
		return err
	}
	msg := keyValues.ReplaceAllString(te.Stderr, "$1=(…)$2")
	msg = failingRow.ReplaceAllString(msg, "Failing row contains (…)")
	msg = copyValue.ReplaceAllString(msg, "$1")
	msg = quotedValue.ReplaceAllString(msg, `$1"…"`)
	te.Stderr = strings.TrimSpace(echoLine.ReplaceAllString(msg, ""))
	return err
}
