// Package mysql migrates one MySQL or MariaDB database: it inspects the
// database and its accounts, blocks writes at the source (and restores them
// exactly), takes a consistent dump with the server's own dump tool,
// computes per-table checksums that any server of the family reproduces,
// imports into the destination with the same accounts and password hashes,
// verifies, and closes the source.
//
// A Server is an administrator's connection to one server. The steps that
// run these operations for the agent, with the object store and the state
// table, are in agent/steps; docs/engine-mysql.md says what each does and
// why.
package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"

	"github.com/fleetmigrate/fleetmigrate/engine"
)

// Families of servers.
const (
	MariaDB = "mariadb"
	MySQL   = "mysql"
)

// Options configure the engine on one agent. The zero value works.
type Options struct {
	// DumpTool and ClientTool are the paths of the dump tool (mariadb-dump
	// or mysqldump) and of the client (mariadb or mysql). Empty: the one of
	// the server's family, found on PATH.
	DumpTool, ClientTool string
	// SessionWait bounds how long blocking waits for the sessions it ended
	// to go away (default 30 s).
	SessionWait time.Duration
	// TempDir holds the short-lived 0600 credential files of the tools
	// (default: the system's temporary directory).
	TempDir string
	// Jobs is how many sessions load a dump's rows at once and checksum
	// tables at once when verifying an import (default 4; 1 loads a dump
	// through the client as one script).
	Jobs int
	// ParallelAbove is the database size (the server's estimate) above
	// which a dump is taken in parts, its rows loaded over Jobs sessions
	// and its tables verified Jobs at a time; smaller databases are dumped
	// and loaded as one script, which costs less per database. 0: 64 MiB;
	// negative: never.
	ParallelAbove int64
	// TLS is how every connection to a server over TCP uses TLS — the
	// engine's own, the tools', the binary log's: TLSDisabled,
	// TLSPreferred (default), TLSRequired or TLSVerifyIdentity.
	TLS string
	// CAFile is a PEM bundle of the CAs that sign the servers'
	// certificates, for TLSVerifyIdentity (empty: the system's CAs).
	CAFile string
	// Log receives what the engine does; nil discards.
	Log *slog.Logger
}

// Defaults of Options.
const (
	DefaultJobs          = 4
	DefaultParallelAbove = 64 << 20
)

// parallel tells whether a database of size bytes is dumped in parts and
// verified over Jobs sessions.
func (s *Server) parallel(size int64) bool {
	return s.opt.ParallelAbove >= 0 && size > s.opt.ParallelAbove && s.opt.Jobs > 1
}

// Server is an administrator's connection pool to one MySQL or MariaDB
// server. It is safe for concurrent use.
type Server struct {
	srv      engine.Server
	opt      Options
	db       *sql.DB
	version  string
	family   string
	ver      [3]int
	foldCase bool
	log      *slog.Logger
	tls      clientTLS

	tlsMu   sync.Mutex
	tlsSeen *SessionTLS // SessionTLS's answer
}

// Open connects to srv as its administrator and reads its version. An
// unreachable server is a transient error; refused credentials are
// permanent (engine.ErrPermanent).
func Open(ctx context.Context, srv engine.Server, opt Options) (*Server, error) {
	if opt.SessionWait <= 0 {
		opt.SessionWait = 30 * time.Second
	}
	if opt.Jobs <= 0 {
		opt.Jobs = DefaultJobs
	}
	if opt.ParallelAbove == 0 {
		opt.ParallelAbove = DefaultParallelAbove
	}
	log := opt.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t, err := opt.tlsFor(srv)
	if err != nil {
		return nil, err
	}
	cfg := driverConfig(srv, t)
	cfg.ParseTime, cfg.Loc = true, time.UTC
	cfg.InterpolateParams = true
	cfg.Params = map[string]string{"time_zone": "'+00:00'"}
	conn, err := mysqldrv.NewConnector(cfg)
	if err != nil {
		return nil, engine.Permanentf("mysql server %s: %v", srv, err)
	}
	s := &Server{srv: srv, opt: opt, db: sql.OpenDB(conn), log: log.With("server", srv.String()), tls: t}
	s.db.SetMaxOpenConns(8 + opt.Jobs)
	s.db.SetMaxIdleConns(2)
	s.db.SetConnMaxIdleTime(time.Minute)
	var lctn int
	err = s.db.QueryRowContext(ctx, "SELECT VERSION(), @@lower_case_table_names").Scan(&s.version, &lctn)
	if err != nil {
		s.db.Close()
		return nil, s.connectError(err)
	}
	s.foldCase = lctn != 0
	s.family, s.ver = parseVersion(s.version)
	return s, nil
}

// driverConfig is the driver's configuration for a connection to srv as
// its user, with t's TLS.
func driverConfig(srv engine.Server, t clientTLS) *mysqldrv.Config {
	cfg := mysqldrv.NewConfig()
	cfg.User, cfg.Passwd = srv.User, srv.Password
	cfg.Net, cfg.Addr = "tcp", srv.Address
	if strings.HasPrefix(srv.Address, "/") {
		cfg.Net = "unix"
	}
	cfg.Timeout = 10 * time.Second
	t.apply(cfg)
	return cfg
}

// connectError explains why the server could not be used.
func (s *Server) connectError(err error) error {
	if terr := s.tls.tlsError(s.srv, err); terr != nil {
		return terr
	}
	switch errNo(err) {
	case 1045, 1044, 1698:
		hint := "check the mysql section of the agent's configuration"
		if s.tls.cfg == nil && !strings.HasPrefix(s.srv.Address, "/") {
			// MariaDB refuses a plaintext login to a server that
			// requires TLS with this same error.
			hint += "; mysql.tls is disabled: a server with require_secure_transport refuses every plaintext login so"
		}
		return engine.Permanentf("mysql server %s refused the administrator account %q: %v (%s)", s.srv, s.srv.User, err, hint)
	}
	return fmt.Errorf("mysql server %s is unreachable: %w", s.srv, err)
}

var versionRE = regexp.MustCompile(`^(\d+)\.(\d+)\.(\d+)`)

// parseVersion reads the family and version number from VERSION().
func parseVersion(v string) (string, [3]int) {
	family := MySQL
	if strings.Contains(strings.ToLower(v), "mariadb") {
		family = MariaDB
	}
	var n [3]int
	if m := versionRE.FindStringSubmatch(v); m != nil {
		for i := range n {
			n[i], _ = strconv.Atoi(m[i+1])
		}
	}
	return family, n
}

// Close closes the connections.
func (s *Server) Close() error { return s.db.Close() }

// Address is how the server is reached (host:port, or a socket's path).
func (s *Server) Address() string { return s.srv.Address }

// Version is the server's VERSION().
func (s *Server) Version() string { return s.version }

// Family is MariaDB or MySQL.
func (s *Server) Family() string { return s.family }

// String names the server for messages.
func (s *Server) String() string { return s.srv.String() }

// atLeast reports whether the server's version is at least maj.min.patch.
func (s *Server) atLeast(maj, min, patch int) bool {
	return compareVersions(s.ver, [3]int{maj, min, patch}) >= 0
}

func compareVersions(a, b [3]int) int {
	for i := range a {
		if a[i] != b[i] {
			if a[i] < b[i] {
				return -1
			}
			return 1
		}
	}
	return 0
}

// readOnlyDatabases reports whether the server has ALTER DATABASE ...
// READ ONLY (MySQL 8.0.22+; MariaDB has no such statement).
func (s *Server) readOnlyDatabases() bool { return s.family == MySQL && s.atLeast(8, 0, 22) }

// errNo is the server's error number, 0 if err is not a server error.
func errNo(err error) uint16 {
	var me *mysqldrv.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

// Server error numbers this package acts on.
const (
	errNoSuchGrant      = 1141 // REVOKE of a privilege the account lacks
	errNoSuchTableGrant = 1147
	errUnknownThread    = 1094
	errLockWaitTimeout  = 1205
	errDeadlock         = 1213
	errCannotUser       = 1396 // CREATE USER of an existing account, DROP USER of a missing one
)

// conn gives one session, for statements that depend on session state.
func (s *Server) conn(ctx context.Context) (*sql.Conn, error) {
	c, err := s.db.Conn(ctx)
	if err != nil {
		return nil, s.connectError(err)
	}
	return c, nil
}

// execAll runs statements in order on one session, stopping at the first
// error; tolerate lists error numbers that count as done (a REVOKE of a
// privilege already gone, on a retry).
func (s *Server) execAll(ctx context.Context, stmts []string, tolerate ...uint16) error {
	if len(stmts) == 0 {
		return nil
	}
	c, err := s.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	for _, st := range stmts {
		if _, err := c.ExecContext(ctx, st); err != nil {
			if n := errNo(err); n != 0 && containsNo(tolerate, n) {
				continue
			}
			return fmt.Errorf("%s: %w", redactGrant(st), err)
		}
	}
	return nil
}

func containsNo(list []uint16, n uint16) bool {
	for _, v := range list {
		if v == n {
			return true
		}
	}
	return false
}

// schemaIs is a condition on an information_schema column holding a
// database name: the plain comparison lets the server look the database
// up directly, the binary one makes it exact (information_schema compares
// case-insensitively).
func schemaIs(col string) string {
	return "(" + col + " = ? AND BINARY " + col + " = BINARY ?)"
}

// Probe asks srv for an answer on a connection of its own, within ctx: nil
// if the server answered anything (an error from the server, such as too
// many connections, is an answer too); an error if it did not (refused,
// reset, or silent until ctx ended). The agents' hang watchdog uses it.
func Probe(ctx context.Context, srv engine.Server, opt Options) error {
	t, err := opt.tlsFor(srv)
	if err != nil {
		return err
	}
	cfg := driverConfig(srv, t)
	cfg.Timeout = 0
	conn, err := mysqldrv.NewConnector(cfg)
	if err != nil {
		return err
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	db.SetMaxOpenConns(1)
	err = db.PingContext(ctx)
	var me *mysqldrv.MySQLError
	if err == nil || errors.As(err, &me) || t.tlsError(srv, err) != nil {
		// A refused certificate is an answer too (the steps' own
		// connections say what is wrong with it).
		return nil
	}
	return err
}
