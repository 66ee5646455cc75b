package mysql

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/fleetmigrate/fleetmigrate/engine"
)

// toolKind is a program the engine runs.
type toolKind int

const (
	dumpTool toolKind = iota
	clientTool
)

// candidates are the program names of a kind, for a server family, best
// first. On MariaDB installations mysqldump and mysql are links to
// MariaDB's programs; elsewhere they are MySQL's, hence the family check.
func (k toolKind) candidates(family string) []string {
	switch {
	case k == dumpTool && family == MariaDB:
		return []string{"mariadb-dump", "mysqldump"}
	case k == dumpTool:
		return []string{"mysqldump"}
	case family == MariaDB:
		return []string{"mariadb", "mysql"}
	}
	return []string{"mysql"}
}

func (k toolKind) String() string {
	if k == dumpTool {
		return "dump tool"
	}
	return "client"
}

// packageFor names what provides a family's tools.
func packageFor(family string) string {
	if family == MariaDB {
		return "the mariadb-client package (deploy/dev/install-deps.sh installs it)"
	}
	return "MySQL's own client programs (package mysql-client or mysql-community-client; MariaDB's do not work with MySQL 8)"
}

// toolFamily reads a program's family from its --version line.
func toolFamily(version string) string {
	if strings.Contains(version, "MariaDB") {
		return MariaDB
	}
	return MySQL
}

// tool finds the program of kind for this server: the configured path, or
// the first candidate on PATH whose family matches the server's. A missing
// program or one of the wrong family is a permanent error saying what to
// install.
func (s *Server) tool(ctx context.Context, kind toolKind) (path, version string, err error) {
	configured := s.opt.DumpTool
	if kind == clientTool {
		configured = s.opt.ClientTool
	}
	check := func(path string) (string, error) {
		v, err := engine.ToolVersion(ctx, path)
		if err != nil {
			return "", engine.Permanentf("%s %s cannot run: %v; install %s", kind, path, err, packageFor(s.family))
		}
		if f := toolFamily(v); f != s.family {
			return v, engine.Permanentf("%s %s is %s's (%q), but %s runs %s %s: its dumps and imports do not work reliably across families; install %s or configure mysql.%s",
				kind, path, familyName(f), v, s, familyName(s.family), s.version, packageFor(s.family), map[toolKind]string{dumpTool: "dump-tool", clientTool: "client-tool"}[kind])
		}
		return v, nil
	}
	if configured != "" {
		v, err := check(configured)
		return configured, v, err
	}
	var mismatch error
	for _, name := range kind.candidates(s.family) {
		p, err := exec.LookPath(name)
		if err != nil {
			continue
		}
		v, err := check(p)
		if err == nil {
			return p, v, nil
		}
		if mismatch == nil {
			mismatch = err
		}
	}
	if mismatch != nil {
		return "", "", mismatch
	}
	return "", "", engine.Permanentf("no %s (%s) on this machine's PATH (%s): install %s",
		kind, strings.Join(kind.candidates(s.family), " or "), os.Getenv("PATH"), packageFor(s.family))
}

func familyName(f string) string {
	if f == MariaDB {
		return "MariaDB"
	}
	return "MySQL"
}

// credentials writes the server's address and the administrator's
// credentials to a fresh 0600 option file in a 0700 directory, for
// --defaults-extra-file: passwords never go on a command line or into the
// environment. cleanup removes both.
func (s *Server) credentials(ctx context.Context) (dir, file string, cleanup func(), err error) {
	tlsOpts, err := s.toolTLS(ctx)
	if err != nil {
		return "", "", nil, err
	}
	dir, err = os.MkdirTemp(s.opt.TempDir, "fleetmigrate-mysql-")
	if err != nil {
		return "", "", nil, fmt.Errorf("create a credential file: %w", err)
	}
	cleanup = func() { _ = os.RemoveAll(dir) }
	var b strings.Builder
	b.WriteString("[client]\n")
	fmt.Fprintf(&b, "user=%s\n", optionValue(s.srv.User))
	fmt.Fprintf(&b, "password=%s\n", optionValue(s.srv.Password))
	if strings.HasPrefix(s.srv.Address, "/") {
		fmt.Fprintf(&b, "socket=%s\nprotocol=SOCKET\n", optionValue(s.srv.Address))
	} else {
		host, port, ok := strings.Cut(s.srv.Address, ":")
		if i := strings.LastIndex(s.srv.Address, ":"); strings.HasPrefix(s.srv.Address, "[") && i > 0 {
			host, port, ok = strings.Trim(s.srv.Address[:i], "[]"), s.srv.Address[i+1:], true
		}
		if !ok {
			port = "3306"
		}
		if _, err := strconv.Atoi(port); err != nil {
			cleanup()
			return "", "", nil, engine.Permanentf("mysql server address %q: port %q is not a number", s.srv.Address, port)
		}
		fmt.Fprintf(&b, "host=%s\nport=%s\nprotocol=TCP\n", optionValue(host), port)
	}
	b.WriteString(tlsOpts)
	file = filepath.Join(dir, "client.cnf")
	if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
		cleanup()
		return "", "", nil, fmt.Errorf("write a credential file: %w", err)
	}
	return dir, file, cleanup, nil
}

// optionValue quotes a value for an option file: in double quotes (so
// that '#' and spaces survive), with the escapes the servers' option file
// reader understands.
func optionValue(v string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "\t", `\t`)
	return `"` + r.Replace(v) + `"`
}

// run runs a tool with the credential file as its first option and a
// minimal environment (engine.RunTool).
func (s *Server) run(ctx context.Context, tool string, args []string, w io.Writer, stdin io.Reader) error {
	dir, cnf, cleanup, err := s.credentials(ctx)
	if err != nil {
		return err
	}
	defer cleanup()
	// HOME is the credential directory: no ~/.my.cnf can override it.
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "LC_ALL=C.UTF-8", "TZ=UTC"}
	return engine.RunTool(ctx, tool, append([]string{"--defaults-extra-file=" + cnf}, args...), env, w, stdin)
}

// ToolError is a tool that failed: its exit status and what it said.
type ToolError = engine.ToolError

type tailBuffer = engine.TailBuffer
