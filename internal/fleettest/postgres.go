package fleettest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

// PostgresPort is the port every PostgreSQL fleet host listens on (each on
// its own loopback address). It avoids the machine's own server on 5432.
const PostgresPort = 15432

// PostgresConfig configures StartPostgres. The zero value is ready to use.
type PostgresConfig struct {
	// Port defaults to PostgresPort.
	Port int
	// Host pins the loopback address (default: a free 127.42.x.y).
	Host string
	// Password, when set, turns on SCRAM password authentication over TCP for
	// every role, with this password for the superuser postgres. Otherwise
	// TCP connections are trusted.
	Password string
	// Settings are extra server settings (name → value).
	Settings map[string]string
	// TLS, when set, turns on ssl with a certificate from this CA for the
	// host address, refuses TCP connections without it (hostnossl
	// reject), and logs each connection (with its SSL details).
	TLS *CA
}

// Postgres is a running throwaway PostgreSQL cluster.
type Postgres struct {
	Host     string
	Port     int
	Dir      string
	Password string
	// BinDir holds the server's binaries (initdb, pg_dump, psql...).
	BinDir string
	// CA issued the server's certificate (nil: no TLS). DSN then asks
	// for TLS (sslmode=require).
	CA *CA

	proc    *process
	release func()
	dbSeq   atomic.Int64
}

// PostgresBinDir returns the directory of the newest installed PostgreSQL
// server binaries (FLEETTEST_PG_BIN overrides). The Debian wrappers in
// /usr/bin add 25-30 ms per call, so callers use these directly.
func PostgresBinDir() (string, error) {
	if d := os.Getenv("FLEETTEST_PG_BIN"); d != "" {
		return d, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) == 0 {
		return "", fmt.Errorf("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: run `make deps` (deploy/dev/install-deps.sh)")
	}
	sort.Slice(matches, func(i, j int) bool { return pgMajor(matches[i]) < pgMajor(matches[j]) })
	return filepath.Dir(matches[len(matches)-1]), nil
}

func pgMajor(initdb string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdb))))
	return n
}

// StartPostgres initialises a cluster and starts it on its own loopback
// address. PostgreSQL refuses to run as root, so under root the cluster runs
// as the postgres system user. Stop it with Stop.
func StartPostgres(ctx context.Context, cfg PostgresConfig) (*Postgres, error) {
	bin, err := PostgresBinDir()
	if err != nil {
		return nil, err
	}
	if cfg.Port == 0 {
		cfg.Port = PostgresPort
	}
	p := &Postgres{Port: cfg.Port, Password: cfg.Password, BinDir: bin}
	if cfg.Host != "" {
		rel, ok := claimAddr(cfg.Host, cfg.Port)
		if !ok {
			return nil, fmt.Errorf("postgres: %s:%d is in use", cfg.Host, cfg.Port)
		}
		p.Host, p.release = cfg.Host, rel
	} else if p.Host, p.release, err = allocHost(cfg.Port); err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			p.release()
		}
	}()
	cred, err := postgresCredential()
	if err != nil {
		return nil, err
	}
	if p.Dir, err = os.MkdirTemp("", "fleettest-postgres-"); err != nil {
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(p.Dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, err
		}
	}
	data := filepath.Join(p.Dir, "data")
	args := []string{"-D", data, "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8", "-N"}
	if cfg.Password != "" {
		pwfile := filepath.Join(p.Dir, "pwfile")
		if err := os.WriteFile(pwfile, []byte(cfg.Password+"\n"), 0o600); err != nil {
			return nil, err
		}
		if cred != nil {
			_ = os.Chown(pwfile, int(cred.Uid), int(cred.Gid))
		}
		args = append(args, "--pwfile="+pwfile, "--auth-local=trust", "--auth-host=scram-sha-256")
	} else {
		args = append(args, "-A", "trust")
	}
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), args...)
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if err := run(ctx, initdb); err != nil {
		_ = os.RemoveAll(p.Dir)
		return nil, fmt.Errorf("postgres: initdb: %w", err)
	}
	srvArgs := []string{"-D", data, "-p", strconv.Itoa(p.Port), "-k", p.Dir,
		"-c", "listen_addresses=" + p.Host,
		"-c", "max_connections=300",
		"-c", "shared_buffers=32MB",
		// fast and unsafe: these servers are thrown away
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "logging_collector=off",
		// online mode: every fleet server can be a source (logical WAL,
		// slots, WAL senders) and a destination (replication workers)
		"-c", "wal_level=logical", "-c", "max_replication_slots=64", "-c", "max_wal_senders=64",
		"-c", "max_logical_replication_workers=32", "-c", "max_worker_processes=48",
	}
	if cfg.TLS != nil {
		certFile, keyFile, err := cfg.TLS.Issue(p.Dir, p.Host)
		if err != nil {
			_ = os.RemoveAll(p.Dir)
			return nil, fmt.Errorf("postgres: certificate: %w", err)
		}
		if cred != nil {
			_ = os.Chown(certFile, int(cred.Uid), int(cred.Gid))
			_ = os.Chown(keyFile, int(cred.Uid), int(cred.Gid))
		}
		srvArgs = append(srvArgs, "-c", "ssl=on", "-c", "ssl_cert_file="+certFile, "-c", "ssl_key_file="+keyFile, "-c", "log_connections=on")
		// TLS or nothing over TCP, as require_secure_transport does for
		// MariaDB: the first matching line of pg_hba.conf wins.
		hba := filepath.Join(data, "pg_hba.conf")
		lines, err := os.ReadFile(hba)
		if err != nil {
			_ = os.RemoveAll(p.Dir)
			return nil, fmt.Errorf("postgres: read pg_hba.conf: %w", err)
		}
		if err := os.WriteFile(hba, append([]byte("hostnossl all all all reject\n"), lines...), 0o600); err != nil {
			_ = os.RemoveAll(p.Dir)
			return nil, fmt.Errorf("postgres: write pg_hba.conf: %w", err)
		}
		if cred != nil {
			_ = os.Chown(hba, int(cred.Uid), int(cred.Gid))
		}
		p.CA = cfg.TLS
	}
	keys := make([]string, 0, len(cfg.Settings))
	for k := range cfg.Settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		srvArgs = append(srvArgs, "-c", k+"="+cfg.Settings[k])
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), srvArgs...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	// The server's own libpq connections (a subscription's) look for a
	// client certificate under $HOME/.postgresql: the server's user's
	// home, as under systemd, not the caller's (root's: unreadable).
	cmd.Env = append(os.Environ(), "HOME="+p.Dir)
	logPath := filepath.Join(p.Dir, "postgres.log")
	if p.proc, err = startProcess("postgres "+p.Addr(), logPath, cmd); err != nil {
		_ = os.RemoveAll(p.Dir)
		return nil, err
	}
	if err := waitReady(ctx, p.proc, func(ctx context.Context) error {
		c, err := pgx.Connect(ctx, p.DSN("postgres"))
		if err != nil {
			return err
		}
		return c.Close(ctx)
	}); err != nil {
		p.proc.kill()
		_ = removeDir(p.Dir)
		return nil, err
	}
	ok = true
	return p, nil
}

// postgresCredential returns the postgres system user's credential when we
// are root, nil otherwise (run as ourselves).
func postgresCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("postgres: running as root needs the postgres system user (install the postgresql package): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// NewPostgres starts a private PostgreSQL cluster for t.
func NewPostgres(t testing.TB, cfg PostgresConfig) *Postgres {
	t.Helper()
	return startForTest(t, func(ctx context.Context) (*Postgres, error) { return StartPostgres(ctx, cfg) })
}

// SharedPostgres returns the test binary's shared PostgreSQL cluster,
// starting it on first use. The package's TestMain must call Main.
func SharedPostgres(t testing.TB) *Postgres {
	t.Helper()
	return shared(t, "postgres", func(ctx context.Context) (*Postgres, error) { return StartPostgres(ctx, PostgresConfig{}) })
}

// Addr is host:port.
func (p *Postgres) Addr() string { return fmt.Sprintf("%s:%d", p.Host, p.Port) }

// DSN is a URL for the superuser over TCP to database.
func (p *Postgres) DSN(database string) string {
	mode := "disable"
	if p.CA != nil {
		mode = "require"
	}
	u := url.URL{Scheme: "postgres", Host: p.Addr(), Path: "/" + database, RawQuery: "sslmode=" + mode + "&connect_timeout=5"}
	if p.Password != "" {
		u.User = url.UserPassword("postgres", p.Password)
	} else {
		u.User = url.User("postgres")
	}
	return u.String()
}

// LogFile is the path of the server's log.
func (p *Postgres) LogFile() string { return filepath.Join(p.Dir, "postgres.log") }

// NewDatabase creates an empty database with a fresh name for t and drops it
// at cleanup. It returns the name.
func (p *Postgres) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("fleettest_%d_%d", os.Getpid(), p.dbSeq.Add(1))
	ctx := context.Background()
	c, err := pgx.Connect(ctx, p.DSN("postgres"))
	if err != nil {
		t.Fatalf("fleettest: connect to %s: %v", p.Addr(), err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+ident.QuotePostgres(name)); err != nil {
		t.Fatalf("fleettest: create database on %s: %v", p.Addr(), err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, p.DSN("postgres"))
		if err != nil {
			return
		}
		defer c.Close(ctx)
		_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+ident.QuotePostgres(name)+" WITH (FORCE)")
	})
	return name
}

// Stop shuts the cluster down (fast shutdown) and removes its directory.
func (p *Postgres) Stop() error {
	return shutdown(&p.proc, syscall.SIGINT, 30*time.Second, p.release, p.Dir)
}

// Kill ends the postmaster with SIGKILL, as a crash would; Stop still cleans
// up.
func (p *Postgres) Kill() { p.proc.kill() }

// LogTail returns the last lines of the server log.
func (p *Postgres) LogTail(lines int) string {
	return tailFile(filepath.Join(p.Dir, "postgres.log"), lines)
}

func (p *Postgres) describe() string { return "postgres " + p.Addr() }

// Down stops the server but keeps its data and its address, as an outage
// would; Up starts it again.
func (p *Postgres) Down() error {
	if p.proc == nil {
		return errors.New("server is stopped for good")
	}
	return p.proc.stop(syscall.SIGINT, 30*time.Second)
}

// Up starts the server again after Down, with the same data, address and
// settings, and waits until it answers.
func (p *Postgres) Up(ctx context.Context) error {
	return bringUp(ctx, &p.proc, func(ctx context.Context) error {
		c, err := pgx.Connect(ctx, p.DSN("postgres"))
		if err != nil {
			return err
		}
		return c.Close(ctx)
	})
}

// PostgresPassword is the superuser's password on the clusters of
// SharedPostgresAs, which authenticate TCP clients with SCRAM-SHA-256.
const PostgresPassword = "fleettest pg: superuser's 'pw'"

// SharedPostgresAs returns the test binary's shared PostgreSQL cluster for
// a role ("source", "destination"...), one cluster per role, each on its
// own address, with SCRAM password authentication over TCP
// (PostgresPassword for postgres). The package's TestMain must call Main.
func SharedPostgresAs(t testing.TB, role string) *Postgres {
	t.Helper()
	return shared(t, "postgres/"+role, func(ctx context.Context) (*Postgres, error) {
		return StartPostgres(ctx, PostgresConfig{Password: PostgresPassword})
	})
}

// Connect opens a session as user with password to database over TCP,
// closed at cleanup.
func (p *Postgres) Connect(t testing.TB, database, user, password string) *pgx.Conn {
	t.Helper()
	c, err := p.Dial(context.Background(), database, user, password)
	if err != nil {
		t.Fatalf("fleettest: connect to %s/%s as %q: %v", p.Addr(), database, user, err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// Dial opens a session as user with password to database over TCP; the
// caller closes it.
func (p *Postgres) Dial(ctx context.Context, database, user, password string) (*pgx.Conn, error) {
	mode := "disable"
	if p.CA != nil {
		mode = "require"
	}
	// The host in the string: pgx derives the TLS settings from it (none
	// for the default, a Unix socket).
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d sslmode=%s connect_timeout=5", p.Host, p.Port, mode))
	if err != nil {
		return nil, err
	}
	cfg.Database, cfg.User, cfg.Password = database, user, password
	return pgx.ConnectConfig(ctx, cfg)
}

// Root opens a superuser session to database, closed at cleanup.
func (p *Postgres) Root(t testing.TB, database string) *pgx.Conn {
	t.Helper()
	return p.Connect(t, database, "postgres", p.Password)
}

// PGExec runs statements on c, failing the test on the first error.
func PGExec(t testing.TB, c *pgx.Conn, stmts ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, s := range stmts {
		if _, err := c.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// PID is the server's main process (benchmarks read its CPU time).
func (p *Postgres) PID() int { return p.proc.cmd.Process.Pid }

// Pause freezes the server (SIGSTOP): connections stay open and nothing
// answers, as a hung server or a black-holed network would. Resume
// continues it.
func (p *Postgres) Pause() error { return p.proc.pause() }

// Resume continues a paused server.
func (p *Postgres) Resume() error { return p.proc.resume() }
