// Package demo runs fleetmigrate's main job on a local fleet of real servers:
// `make demo` and the end-to-end test are both this package. It starts the
// fleet with internal/fleettest (a state database, MariaDB and PostgreSQL
// "hosts" on their own loopback addresses, BIND9, an S3 server), seeds
// databases that each have their own user, password and DNS name, plans
// them, runs the real migrate-agent and migrate binaries with configuration
// files as an operator would, and then proves that every database is where
// its users will look for it: its name resolves to the destination at the
// DNS server, the ORIGINAL user and password log in there, and the content
// has the checksum it had before.
package demo

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

// Engines.
const (
	MySQL    = "mysql"
	Postgres = "postgres"
)

// Host is one database server of the fleet, as the state table knows it.
type Host struct {
	// ID is the host ID of the rows (source/destination columns) and of the
	// agent that serves it.
	ID     string
	Engine string
	// Source is true for the hosts being emptied.
	Source bool
	// IP is the loopback address the server listens on; DNS names of its
	// databases point here.
	IP   string
	Port int

	my *fleettest.MariaDB
	pg *fleettest.Postgres
}

// Addr is host:port.
func (h *Host) Addr() string { return fmt.Sprintf("%s:%d", h.IP, h.Port) }

// RootDSN is the server's administrator (root or postgres) DSN for database
// (may be "" for MySQL): for tests that break things on purpose.
func (h *Host) RootDSN(database string) string {
	if h.my != nil {
		return h.my.DSN(database)
	}
	return h.pg.DSN(database)
}

// server is what a fault test does to a host's database server
// (fleettest.MariaDB and fleettest.Postgres alike).
type server interface {
	Kill()
	Up(ctx context.Context) error
	Pause() error
	Resume() error
	LogTail(lines int) string
}

func (h *Host) server() server {
	if h.my != nil {
		return h.my
	}
	return h.pg
}

// Kill ends the server with SIGKILL, as a crash would; Up starts it again
// (crash recovery).
func (h *Host) Kill() { h.server().Kill() }

// Up starts the server again after Kill, with its data.
func (h *Host) Up(ctx context.Context) error { return h.server().Up(ctx) }

// Pause freezes the server (SIGSTOP: connections open, nothing answers);
// Resume continues it.
func (h *Host) Pause() error { return h.server().Pause() }

// Resume continues a paused server.
func (h *Host) Resume() error { return h.server().Resume() }

// GrowDisk gives a MariaDB server with a size-capped data directory
// (FleetSize.MySQLDestinationDiskFree) free bytes more than it holds now.
func (h *Host) GrowDisk(ctx context.Context, free int64) error {
	if h.my == nil {
		return fmt.Errorf("%s: not a MariaDB server", h.ID)
	}
	return h.my.GrowDisk(ctx, free)
}

// Fleet is the running local fleet.
type Fleet struct {
	// State is the state database's PostgreSQL cluster.
	State *fleettest.Postgres
	Hosts []*Host
	BIND  *fleettest.BIND
	S3    *fleettest.S3
	// CA signed the S3 server's certificate.
	CA *fleettest.CA
	// Secrets: the administrator password the agents use on every server.
	AdminUser, AdminPassword string
	// PeerUser and PeerPassword: the read-only account the agents read
	// other hosts' MariaDB servers with (every change at a server is its
	// own agent's).
	PeerUser, PeerPassword string

	mu    sync.Mutex
	stops []func() error
	names []string
}

// The administrator account every agent uses on its server (the same on
// every server of the fleet, as the engines require).
const (
	adminUser = "fleetmigrate"
	peerUser  = "fleetmigrate_peer"
	// pgLogPrefix: each line of a PostgreSQL server's log names its role,
	// database and SQLSTATE.
	pgLogPrefix = "%m [%p] %q%u@%d %e "
)

// FleetSize says how many servers of each kind to start.
type FleetSize struct {
	MySQLSources, MySQLDestinations       int
	PostgresSources, PostgresDestinations int
	// MySQLDestinationDiskFree, when set, puts each MariaDB destination's
	// data directory on its own tmpfs with this many bytes free: a
	// destination whose disk fills up (fault tests; needs root).
	MySQLDestinationDiskFree int64
}

// StartServers starts the state database, the database servers and the S3
// server, in parallel. BIND starts later (StartDNS), once the databases and
// so the zone's records are known. On error, what was started is stopped.
//
// The S3 server speaks HTTPS with a certificate from a private CA whose
// certificate is written to dir (ca.pem): the agents trust it through
// storage.s3.ca-file, as they would a company CA.
func StartServers(ctx context.Context, size FleetSize, dir string) (*Fleet, error) {
	f := &Fleet{AdminUser: adminUser, AdminPassword: randomPassword(24), PeerUser: peerUser, PeerPassword: randomPassword(24)}
	// The CA's certificate must be readable by the PostgreSQL servers'
	// own user too (a destination's subscription checks its source's
	// certificate with it): a directory of its own, outside dir (0700).
	caDir, err := os.MkdirTemp("", "fleetmigrate-demo-ca-")
	if err == nil {
		err = os.Chmod(caDir, 0o755)
	}
	if err != nil {
		return nil, fmt.Errorf("create a CA for TLS: %w", err)
	}
	f.track("CA directory "+caDir, func() error { return os.RemoveAll(caDir) })
	ca, err := fleettest.NewCA(caDir)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("create a CA for TLS: %w", err), f.Stop())
	}
	if err := ca.CopyTo(filepath.Join(dir, "ca.pem")); err != nil {
		return nil, errors.Join(fmt.Errorf("keep the CA's certificate: %w", err), f.Stop())
	}
	f.CA = ca
	var hosts []*Host
	add := func(engine, side string, n int) {
		for i := 1; i <= n; i++ {
			hosts = append(hosts, &Host{ID: fmt.Sprintf("%s-%s-%d", engine, side, i), Engine: engine, Source: side == "src"})
		}
	}
	add(MySQL, "src", size.MySQLSources)
	add(MySQL, "dst", size.MySQLDestinations)
	add(Postgres, "src", size.PostgresSources)
	add(Postgres, "dst", size.PostgresDestinations)
	f.Hosts = hosts

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		// The password goes into a DSN URL: keep it to URL-safe characters.
		pg, err := fleettest.StartPostgres(gctx, fleettest.PostgresConfig{Password: randomHex(16), TLS: ca})
		if err != nil {
			return fmt.Errorf("start the state database: %w", err)
		}
		f.track("state database "+pg.Addr(), pg.Stop)
		f.State = pg
		return execPG(gctx, pg.DSN("postgres"), "CREATE DATABASE fleet")
	})
	g.Go(func() error {
		s3, err := fleettest.StartS3(gctx, fleettest.S3Config{Bucket: "dumps", TLS: ca})
		if err != nil {
			return fmt.Errorf("start the S3 server: %w", err)
		}
		f.track("S3 server "+s3.Endpoint, s3.Stop)
		f.S3 = s3
		return nil
	})
	for _, h := range hosts {
		g.Go(func() error { return f.startHost(gctx, h, size) })
	}
	if err := g.Wait(); err != nil {
		return nil, errors.Join(err, f.Stop())
	}
	return f, nil
}

func (f *Fleet) startHost(ctx context.Context, h *Host, size FleetSize) error {
	switch h.Engine {
	case MySQL:
		// Certificates from the fleet's CA; TLS required on every TCP
		// connection (fleettest's default), as a fleet between
		// datacentres would.
		// userstat: the servers count each account's sessions, rows
		// changed and refusals (the summary's peers line).
		cfg := fleettest.MariaDBConfig{TLS: f.CA, Args: []string{"--innodb-buffer-pool-size=256M", "--max-connections=500", "--userstat=1"}}
		if !h.Source {
			cfg.DiskFree = size.MySQLDestinationDiskFree
		}
		m, err := fleettest.StartMariaDB(ctx, cfg)
		if err != nil {
			return fmt.Errorf("start MariaDB for %s: %w", h.ID, err)
		}
		f.track(fmt.Sprintf("MariaDB %s (%s)", m.Addr(), h.ID), m.Stop)
		h.my, h.IP, h.Port = m, m.Host, m.Port
		db, err := sql.Open("mysql", m.DSN(""))
		if err != nil {
			return err
		}
		defer db.Close()
		acct, peer := fleettest.MySQLAccount(adminUser, "%"), fleettest.MySQLAccount(peerUser, "%")
		for _, q := range []string{
			"CREATE USER " + acct + " IDENTIFIED BY " + fleettest.MySQLString(f.AdminPassword),
			"GRANT ALL PRIVILEGES ON *.* TO " + acct + " WITH GRANT OPTION",
			"CREATE USER " + peer + " IDENTIFIED BY " + fleettest.MySQLString(f.PeerPassword) + " REQUIRE SSL",
			"GRANT " + fleettest.PeerGrants + " ON *.* TO " + peer,
		} {
			if _, err := db.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("%s: create the agent's account: %w", h.ID, err)
			}
		}
	case Postgres:
		// TLS required over TCP (hostnossl reject), a certificate from
		// the fleet's CA, as for MariaDB.
		// The log names each line's role and SQLSTATE: the summary counts
		// the peer role's sessions and refusals from it (peers.go).
		p, err := fleettest.StartPostgres(ctx, fleettest.PostgresConfig{Password: randomPassword(24), TLS: f.CA,
			Settings: map[string]string{"max_connections": "300", "log_line_prefix": pgLogPrefix}})
		if err != nil {
			return fmt.Errorf("start PostgreSQL for %s: %w", h.ID, err)
		}
		f.track(fmt.Sprintf("PostgreSQL %s (%s)", p.Addr(), h.ID), p.Stop)
		h.pg, h.IP, h.Port = p, p.Host, p.Port
		// The peers' read-only role (security.md, least privilege).
		stmts := append([]string{"CREATE ROLE " + ident.QuotePostgres(adminUser) + " SUPERUSER LOGIN PASSWORD " + ident.QuotePostgresLiteral(f.AdminPassword)},
			fleettest.PGPeerStatements(peerUser, f.PeerPassword)...)
		if err := execPG(ctx, p.DSN("postgres"), stmts...); err != nil {
			return fmt.Errorf("%s: create the agent's role: %w", h.ID, err)
		}
	}
	return nil
}

// StartDNS starts BIND9 serving zone with records (zone-file lines).
func (f *Fleet) StartDNS(ctx context.Context, zone string, records []string) error {
	b, err := fleettest.StartBIND(ctx, fleettest.BINDConfig{Zone: zone, Records: records})
	if err != nil {
		return fmt.Errorf("start BIND9: %w", err)
	}
	f.track("BIND9 "+b.Addr, b.Stop)
	f.BIND = b
	return nil
}

// Host returns the host with this ID.
func (f *Fleet) Host(id string) *Host {
	for _, h := range f.Hosts {
		if h.ID == id {
			return h
		}
	}
	return nil
}

// HostByIP returns the host listening on ip for engine.
func (f *Fleet) HostByIP(engine, ip string) *Host {
	for _, h := range f.Hosts {
		if h.Engine == engine && h.IP == ip {
			return h
		}
	}
	return nil
}

// StateDSN is the state database's DSN with the password as ${VAR}, for
// configuration files: the operator's login.
func (f *Fleet) StateDSN(passwordVar string) string { return f.StateDSNAs("postgres", passwordVar) }

// StateDSNAs is StateDSN logging in as login (an agent's own).
func (f *Fleet) StateDSNAs(login, passwordVar string) string {
	return fmt.Sprintf("postgres://%s:${%s}@%s/fleet", login, passwordVar, f.State.Addr())
}

func (f *Fleet) track(name string, stop func() error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.names = append(f.names, name)
	f.stops = append(f.stops, stop)
}

// Stop stops every server started, newest first, and says which failed.
func (f *Fleet) Stop() error {
	f.mu.Lock()
	stops, names := f.stops, f.names
	f.stops, f.names = nil, nil
	f.mu.Unlock()
	var errs []error
	for i := len(stops) - 1; i >= 0; i-- {
		if err := stops[i](); err != nil {
			errs = append(errs, fmt.Errorf("stop %s: %w", names[i], err))
		}
	}
	return errors.Join(errs...)
}

// Servers is how many servers are running.
func (f *Fleet) Servers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.stops)
}

func execPG(ctx context.Context, dsn string, stmts ...string) error {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx))
	for _, s := range stmts {
		if _, err := c.Exec(ctx, s); err != nil {
			return err
		}
	}
	return nil
}
