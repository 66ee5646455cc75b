// Package postgres migrates one PostgreSQL database: it inspects the
// database and the roles that come with it, blocks writes at the source
// (and restores them exactly), takes a snapshot-consistent dump with the
// pg_dump of the server's major version, computes per-table checksums in
// the same snapshot, imports into the destination with the same roles and
// password verifiers, verifies, and closes the source.
//
// A Server is a superuser's connection to one cluster. The steps that run
// these operations for the agent are in agent/steps; docs/engines.md says
// what each does and why.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

// Options configure the engine on one agent. The zero value works.
type Options struct {
	// BinDir holds pg_dump and pg_restore. Empty: ToolsRoot/<major>/bin
	// for the server's major version, or the oldest newer one installed.
	BinDir string
	// ToolsRoot is where the versioned binaries are installed (default
	// /usr/lib/postgresql, Debian's layout).
	ToolsRoot string
	// MaintenanceDB is the database the engine connects to when it works
	// on the cluster rather than on one database (default postgres).
	MaintenanceDB string
	// SessionWait bounds how long blocking and closing wait for the
	// sessions they ended to go away (default 30 s).
	SessionWait time.Duration
	// TempDir holds the short-lived 0600 password files of the tools and
	// the spooled dumps of parallel restores (default: the system's
	// temporary directory).
	TempDir string
	// ParallelAbove is the database size above which the import spools
	// the dump to TempDir and restores with Jobs parallel workers
	// (default 512 MiB; negative: never).
	ParallelAbove int64
	// Jobs is the number of parallel restore workers and checksum
	// sessions (default 2).
	Jobs int
	// ChecksumSplit is the size below which a database's checksums take
	// one session, and above which a table's are read in block ranges by
	// up to Jobs sessions at once (default 64 MiB).
	ChecksumSplit int64
	// SkipAnalyze leaves the imported database without fresh planner
	// statistics (ANALYZE runs after the restore by default).
	SkipAnalyze bool
	// SSLMode is libpq's sslmode for every connection of the engine and
	// its tools: disable, allow, prefer (libpq's default when empty),
	// require, verify-ca or verify-full.
	SSLMode string
	// SSLRootCert is the CA bundle (PEM) that verify-ca / verify-full
	// check the server's certificate against.
	SSLRootCert string
	// Peer is the role other hosts' agents read this cluster with (the
	// fleet's read-only peer role, postgres.peer-user): blocking writes to
	// a database keeps its CONNECT, and spares its sessions, as the
	// administrator's (the destination dumps, checks and streams under
	// the block). Empty: peers use the administrator.
	Peer string
	// Log receives what the engine does; nil discards.
	Log *slog.Logger
	// Pools, when not nil, keeps the administrator's sessions to each
	// cluster for every Server opened with it (an agent's life) instead of
	// a pool per Server: every step opens its servers, and on PostgreSQL a
	// new session is a backend started, authenticated and its catalogue
	// loaded (about 30 ms of the server's CPU): a tiny database's dump step
	// and close started three of them otherwise.
	Pools *Pools
}

// Pools are the administrators' connection pools of an agent's clusters,
// one per address, role and password, shared by the Servers opened with
// them (Options.Pools). Idle sessions close after a minute as in any
// Server's pool; a session found dead is replaced. Safe for concurrent
// use; the zero value is ready.
type Pools struct {
	mu sync.Mutex
	m  map[string]*pgxpool.Pool
}

// get returns the pool of cfg's connection string and password, making it.
func (ps *Pools) get(ctx context.Context, cfg *pgxpool.Config) (*pgxpool.Pool, error) {
	key := cfg.ConnString() + "\x00" + cfg.ConnConfig.Password
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if p := ps.m[key]; p != nil {
		return p, nil
	}
	p, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if ps.m == nil {
		ps.m = map[string]*pgxpool.Pool{}
	}
	ps.m[key] = p
	return p, nil
}

// Close closes every pool; a Server still open with them fails from now on.
func (ps *Pools) Close() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for k, p := range ps.m {
		p.Close()
		delete(ps.m, k)
	}
}

func (o *Options) defaults() {
	if o.ChecksumSplit <= 0 {
		o.ChecksumSplit = 64 << 20
	}
	if o.SessionWait <= 0 {
		o.SessionWait = 30 * time.Second
	}
	if o.ToolsRoot == "" {
		o.ToolsRoot = "/usr/lib/postgresql"
	}
	if o.MaintenanceDB == "" {
		o.MaintenanceDB = "postgres"
	}
	if o.ParallelAbove == 0 {
		o.ParallelAbove = 512 << 20
	}
	if o.Jobs <= 0 {
		o.Jobs = 2
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
}

// Server is a superuser's connection pool to one PostgreSQL cluster. It is
// safe for concurrent use.
type Server struct {
	srv     engine.Server
	opt     Options
	cfg     *pgxpool.Config
	pool    *pgxpool.Pool
	version string
	// num is server_version_num (150004 for 15.4).
	num   int
	admin string
	log   *slog.Logger
	// shared: pool is Options.Pools', not closed with the Server.
	shared bool

	// dbPools are the sessions to single databases (inDatabase), kept for
	// the Server's life: a cutover runs a dozen short statements in the
	// customer's database with its writes blocked, and a new session costs
	// a backend's start each time.
	mu      sync.Mutex
	dbPools map[string]*pgxpool.Pool
}

// Open connects to srv as its administrator, which must be a superuser
// (it changes ownerships, creates roles with their verifiers), or, with
// srv.ReadOnly, as a peer's read-only role (pg_read_all_data, REPLICATION:
// docs/security.md). An unreachable server is a transient error; refused
// credentials and a non-superuser administrator are permanent
// (engine.ErrPermanent).
func Open(ctx context.Context, srv engine.Server, opt Options) (*Server, error) {
	opt.defaults()
	host, port, err := splitAddress(srv.Address)
	if err != nil {
		return nil, engine.Permanentf("postgres server %s: %v", srv, err)
	}
	// The same connection string as the tools get: every fallback
	// (sslmode=prefer tries TLS, then plain) goes to this server only.
	switch opt.SSLMode {
	case "", "disable", "allow", "prefer", "require", "verify-ca", "verify-full":
	default:
		return nil, engine.Permanentf("postgres server %s: sslmode %q: want disable, allow, prefer, require, verify-ca or verify-full", srv, opt.SSLMode)
	}
	cfg, err := pgxpool.ParseConfig(opt.connString(host, port, srv.User, opt.MaintenanceDB))
	if err != nil {
		return nil, engine.Permanentf("postgres server %s: %v", srv, err)
	}
	cfg.ConnConfig.Password = srv.Password
	cfg.ConnConfig.RuntimeParams["TimeZone"] = "UTC"
	cfg.MaxConns = 8
	cfg.MaxConnIdleTime = time.Minute
	s := &Server{srv: srv, opt: opt, cfg: cfg, log: opt.Log.With("server", srv.String()), shared: opt.Pools != nil}
	if s.shared {
		// shared by every step of an agent at once (each of its own used
		// to have up to 8 sessions); idle ones close after a minute
		shared := cfg.Copy()
		shared.MaxConns = 32
		s.pool, err = opt.Pools.get(ctx, shared)
	} else {
		s.pool, err = pgxpool.NewWithConfig(ctx, cfg)
	}
	if err != nil {
		return nil, engine.Permanentf("postgres server %s: %v", srv, err)
	}
	var super bool
	err = s.pool.QueryRow(ctx, `SELECT current_setting('server_version'), current_setting('server_version_num')::int, current_user, rolsuper
		FROM pg_roles WHERE rolname = current_user`).Scan(&s.version, &s.num, &s.admin, &super)
	if err != nil {
		_ = s.Close()
		return nil, s.connectError(err)
	}
	if !super && !srv.ReadOnly {
		_ = s.Close()
		return nil, engine.Permanentf("postgres server %s: the administrator role %q is not a superuser; the engine needs one at its own server (it creates roles with their password verifiers and changes database ownership)", srv, srv.User)
	}
	return s, nil
}

// splitAddress splits host:port; an absolute path is a Unix socket
// directory (port 5432).
func splitAddress(addr string) (string, uint16, error) {
	if strings.HasPrefix(addr, "/") {
		return addr, 5432, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, 5432, nil //nolint:nilerr // no port: the default one
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("address %q: port %q is not a number", addr, port)
	}
	return host, uint16(n), nil
}

// connectError explains why the server could not be used.
func (s *Server) connectError(err error) error {
	switch sqlState(err) {
	case "28P01", "28000":
		who := "the administrator role"
		if s.srv.ReadOnly {
			who = "the peers' read-only role"
		}
		return engine.Permanentf("postgres server %s refused %s %q: %v (check the postgres section of the agent's configuration)", s.srv, who, s.srv.User, err)
	}
	return fmt.Errorf("postgres server %s is unreachable: %w", s.srv, err)
}

// sqlState is the server's SQLSTATE, "" if err is not a server error.
func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// Close closes the connections (those of Options.Pools stay open for
// the next Server).
func (s *Server) Close() error {
	s.mu.Lock()
	pools := s.dbPools
	s.dbPools = nil
	s.mu.Unlock()
	for _, p := range pools {
		p.Close()
	}
	if !s.shared {
		s.pool.Close()
	}
	return nil
}

// sessionError explains a failure to get a session to database: a
// database that does not exist is permanent, the rest as connectError.
func (s *Server) sessionError(database string, err error) error {
	if sqlState(err) == "3D000" {
		return engine.Permanentf("database %q does not exist on %s", database, s)
	}
	if sqlState(err) == "42501" && s.srv.ReadOnly {
		// A blocked database keeps the peers' role's CONNECT only if the
		// blocking agent knows that role.
		return fmt.Errorf("the peers' read-only role %q may not connect to %q at %s: %w (while its writes are blocked, that host's agent keeps CONNECT for the role named by its postgres.peer-user: set it there as here)", s.srv.User, database, s, err)
	}
	return s.connectError(err)
}

// dbPool returns the pool of sessions to database, creating it.
func (s *Server) dbPool(ctx context.Context, database string) (*pgxpool.Pool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.dbPools[database]; p != nil {
		return p, nil
	}
	cfg := s.cfg.Copy()
	cfg.ConnConfig.Database = database
	cfg.MaxConns = int32(max(s.opt.Jobs, 2) + 1)
	cfg.MinConns = 0
	cfg.MaxConnIdleTime = 5 * time.Second
	p, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, engine.Permanentf("postgres server %s: %v", s.srv, err)
	}
	if s.dbPools == nil {
		s.dbPools = map[string]*pgxpool.Pool{}
	}
	s.dbPools[database] = p
	return p, nil
}

// forgetDatabase closes the sessions kept to database (before it is
// dropped or recreated).
func (s *Server) forgetDatabase(database string) {
	s.mu.Lock()
	p := s.dbPools[database]
	delete(s.dbPools, database)
	s.mu.Unlock()
	if p != nil {
		p.Close()
	}
}

// Version is the server's server_version.
func (s *Server) Version() string { return s.version }

// Major is the server's major version (15 for 15.4).
func (s *Server) Major() int { return s.num / 10000 }

// String names the server for messages.
func (s *Server) String() string { return s.srv.String() }

// connect opens a session to database.
func (s *Server) connect(ctx context.Context, database string) (*pgx.Conn, error) {
	cc := s.cfg.ConnConfig.Copy()
	cc.Database = database
	c, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, s.sessionError(database, err)
	}
	return c, nil
}

// inDatabase runs fn on a new session to database, closed after.
func (s *Server) inDatabase(ctx context.Context, database string, fn func(*pgx.Conn) error) error {
	c, err := s.connect(ctx, database)
	if err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx))
	return fn(c)
}

// inDatabaseKept runs fn on one of the sessions kept to database for the
// Server's life (the online steps' many short statements, some under the
// block, and the checksums). fn must leave the session as it found it (no
// SET, no open transaction). Dropping the database closes them first
// (forgetDatabase).
func (s *Server) inDatabaseKept(ctx context.Context, database string, fn func(*pgx.Conn) error) error {
	p, err := s.dbPool(ctx, database)
	if err != nil {
		return err
	}
	c, err := p.Acquire(ctx)
	if err != nil {
		return s.sessionError(database, err)
	}
	defer c.Release()
	return fn(c.Conn())
}

// qi quotes an identifier; ql a string literal.
func qi(name string) string { return ident.QuotePostgres(name) }
func ql(s string) string    { return ident.QuotePostgresLiteral(s) }

// systemDatabases are never migrated.
var systemDatabases = map[string]bool{"template0": true, "template1": true, "postgres": true}

// validName checks a database name before any statement uses it.
func validName(name string) error {
	if err := ident.ValidatePostgres(name); err != nil {
		return engine.Permanentf("database name %q: %v", name, err)
	}
	if systemDatabases[name] {
		return engine.Permanentf("database %q is a system database: it is not migrated", name)
	}
	return nil
}

// Probe asks srv for an answer on a connection of its own, within ctx: nil
// if the server answered anything (an error from the server, such as too
// many connections, is an answer too); an error if it did not (refused,
// reset, or silent until ctx ended). The agents' hang watchdog uses it.
func Probe(ctx context.Context, srv engine.Server, opt Options) error {
	opt.defaults()
	host, port, err := splitAddress(srv.Address)
	if err != nil {
		return err
	}
	cfg, err := pgx.ParseConfig(opt.connString(host, port, srv.User, opt.MaintenanceDB))
	if err != nil {
		return err
	}
	cfg.Password = srv.Password
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err == nil {
		defer c.Close(context.WithoutCancel(ctx))
		_, err = c.Exec(ctx, "SELECT 1")
	}
	var pe *pgconn.PgError
	if err == nil || errors.As(err, &pe) {
		return nil
	}
	return err
}

// SessionTLS says how a session of the pool is secured, as the server
// reports it (pg_stat_ssl): "plaintext", or the protocol and cipher.
// migrate-agent --check prints it.
func (s *Server) SessionTLS(ctx context.Context) (string, error) {
	var (
		on              bool
		version, cipher *string
	)
	err := s.pool.QueryRow(ctx, "SELECT ssl, version, cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&on, &version, &cipher)
	if err != nil {
		return "", fmt.Errorf("read the TLS of a session at %s: %w", s.srv, err)
	}
	if !on || version == nil || cipher == nil {
		return "plaintext", nil
	}
	return *version + " " + *cipher, nil
}

// Role is what the role a session logged in as may do, as
// migrate-agent --check reports it for the peers' read-only role.
type Role struct {
	Name                                                string
	Super, CreateRole, CreateDB, Replication, BypassRLS bool
	// MemberOf are the roles it is a member of (directly or not).
	MemberOf []string
	// Owns counts the databases it owns (an owner may change them).
	Owns int
	// ReadOnlyDefault: its sessions start read-only
	// (default_transaction_read_only).
	ReadOnlyDefault bool
}

// SessionRole describes the role this Server's sessions log in as.
func (s *Server) SessionRole(ctx context.Context) (Role, error) {
	var r Role
	err := s.pool.QueryRow(ctx, `SELECT r.rolname, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolreplication, r.rolbypassrls,
		coalesce(array(SELECT b.rolname::text FROM pg_roles b WHERE b.oid <> r.oid AND pg_has_role(r.oid, b.oid, 'MEMBER') ORDER BY 1), '{}'),
		(SELECT count(*) FROM pg_database d WHERE d.datdba = r.oid)::int,
		current_setting('default_transaction_read_only')::bool
		FROM pg_roles r WHERE r.rolname = current_user`).Scan(&r.Name, &r.Super, &r.CreateRole, &r.CreateDB, &r.Replication, &r.BypassRLS, &r.MemberOf, &r.Owns, &r.ReadOnlyDefault)
	if err != nil {
		return Role{}, fmt.Errorf("read the role of a session at %s: %w", s.srv, err)
	}
	return r, nil
}

// CanReplicate opens a logical replication connection as this Server's
// role to its maintenance database and identifies the system, as a
// subscription at another server does with the peers' role: nil, or why
// it cannot (no REPLICATION, no replication line in pg_hba.conf, ...).
// migrate-agent --check runs it.
func (s *Server) CanReplicate(ctx context.Context) error {
	cfg := s.cfg.ConnConfig.Config.Copy()
	cfg.RuntimeParams["replication"] = "database"
	c, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("open a replication connection to %s as %q: %w", s.srv, s.srv.User, err)
	}
	defer func() { _ = c.Close(context.WithoutCancel(ctx)) }()
	if _, err := c.Exec(ctx, "IDENTIFY_SYSTEM").ReadAll(); err != nil {
		return fmt.Errorf("identify the system over a replication connection to %s as %q: %w", s.srv, s.srv.User, err)
	}
	return nil
}
