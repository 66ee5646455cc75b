package fleettest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

// MariaDBPort is the port every MariaDB fleet host listens on (each on its
// own loopback address). It avoids the machine's own server on 3306.
const MariaDBPort = 13306

// redoLogSize keeps each instance's data directory small (the default redo
// log alone is 96 MB); cfg.Args may set a larger one for bulk loads.
const redoLogSize = "--innodb-log-file-size=32M"

// MariaDBConfig configures StartMariaDB. The zero value is ready to use.
type MariaDBConfig struct {
	// Port defaults to MariaDBPort.
	Port int
	// Host pins the loopback address (default: a free 127.42.x.y).
	Host string
	// Args are extra mariadbd options.
	Args []string
	// DiskFree, when set, puts the data directory on its own tmpfs with
	// this many bytes free once the server is initialised: a destination
	// whose disk fills up. Needs root (mount).
	DiskFree int64
	// TLS is the CA that issues the server's certificate (default: a CA
	// of its own, in its directory: CA). The server requires TLS on every
	// TCP connection (require_secure_transport), as the fleet's do.
	TLS *CA
	// CertHost is the name or address the certificate is issued for
	// (default: Host): another one makes a certificate that does not
	// match the address clients reach it by.
	CertHost string
	// Plaintext starts the server without a certificate and without the
	// requirement: a server that offers no TLS.
	Plaintext bool
}

// serverID is a server id unique to an address: its last two octets and
// the port.
func serverID(host string, port int) uint32 {
	ip := net.ParseIP(host).To4()
	if ip == nil {
		return uint32(port)
	}
	return uint32(ip[2])<<24 | uint32(ip[3])<<16 | uint32(port&0xffff)
}

// MariaDB is a running throwaway MariaDB server. Root has no password over
// TCP.
type MariaDB struct {
	Host string
	Port int
	Dir  string
	// CA issued the server's certificate (nil: Plaintext). Its CertFile
	// is what a client's ca-file names.
	CA *CA

	proc    *process
	release func()
	dbSeq   atomic.Int64
}

// StartMariaDB initialises a data directory and starts mariadbd on its own
// loopback address. Stop it with Stop.
func StartMariaDB(ctx context.Context, cfg MariaDBConfig) (*MariaDB, error) {
	installDB, err := findTool("mariadb-install-db")
	if err != nil {
		return nil, err
	}
	mariadbd, err := findTool("mariadbd")
	if err != nil {
		return nil, err
	}
	if cfg.Port == 0 {
		cfg.Port = MariaDBPort
	}
	m := &MariaDB{Port: cfg.Port}
	if cfg.Host != "" {
		rel, ok := claimAddr(cfg.Host, cfg.Port)
		if !ok {
			return nil, fmt.Errorf("mariadb: %s:%d is in use", cfg.Host, cfg.Port)
		}
		m.Host, m.release = cfg.Host, rel
	} else if m.Host, m.release, err = allocHost(cfg.Port); err != nil {
		return nil, fmt.Errorf("mariadb: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			m.release()
		}
	}()
	if m.Dir, err = os.MkdirTemp("", "fleettest-mariadb-"); err != nil {
		return nil, err
	}
	data, tmp := m.dataDir(), filepath.Join(m.Dir, "tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return nil, err
	}
	user := currentUser()
	if cfg.DiskFree > 0 {
		umount, err := mountTmpfs(ctx, data)
		if err != nil {
			_ = os.RemoveAll(m.Dir)
			return nil, fmt.Errorf("mariadb: a size-capped data directory: %w", err)
		}
		release := m.release
		m.release = func() { umount(); release() }
	}
	// Each instance has its own tmpdir: parallel installs sharing /tmp fail.
	install := exec.CommandContext(ctx, installDB, "--no-defaults", "--datadir="+data, "--user="+user,
		"--auth-root-authentication-method=normal", "--skip-test-db", "--tmpdir="+tmp, redoLogSize)
	install.Env = append(os.Environ(), "TMPDIR="+tmp)
	if err := run(ctx, install); err != nil {
		_ = os.RemoveAll(m.Dir)
		return nil, fmt.Errorf("mariadb: initialise data directory: %w", err)
	}
	args := []string{
		"--no-defaults", "--user=" + user, "--datadir=" + data, "--tmpdir=" + tmp,
		"--socket=" + filepath.Join(m.Dir, "mysqld.sock"), "--pid-file=" + filepath.Join(m.Dir, "mysqld.pid"),
		"--bind-address=" + m.Host, fmt.Sprintf("--port=%d", m.Port),
		"--log-error=" + filepath.Join(m.Dir, "error.log"), "--skip-name-resolve",
		"--max-connections=500",
		// small and fast: these servers are thrown away
		"--innodb-buffer-pool-size=64M", "--aria-pagecache-buffer-size=8M", "--key-buffer-size=1M",
		"--innodb-log-buffer-size=2M", "--performance-schema=OFF",
		"--innodb-flush-log-at-trx-commit=2", "--innodb-doublewrite=0", "--sync-binlog=0",
		redoLogSize,
		fmt.Sprintf("--server-id=%d", serverID(m.Host, m.Port)),
	}
	if cfg.DiskFree == 0 {
		// Online mode: every fleet server can be a source (a binary log of
		// full row images). Not a size-capped one: with a binary log, a
		// full disk makes MariaDB wait for space instead of failing the
		// statement ("table is full"), and those servers are destinations.
		args = append(args, "--log-bin=mariadb-bin", "--binlog-format=ROW", "--binlog-row-image=FULL")
	}
	if !cfg.Plaintext {
		tlsArgs, err := m.certificate(cfg)
		if err != nil {
			_ = os.RemoveAll(m.Dir)
			return nil, fmt.Errorf("mariadb: certificate: %w", err)
		}
		args = append(args, tlsArgs...)
	}
	args = append(args, cfg.Args...)
	m.proc, err = startProcess("mariadb "+m.Addr(), filepath.Join(m.Dir, "error.log"), exec.Command(mariadbd, args...))
	if err != nil {
		_ = os.RemoveAll(m.Dir)
		return nil, err
	}
	db, err := sql.Open("mysql", m.DSN(""))
	if err != nil {
		m.proc.kill()
		return nil, err
	}
	defer db.Close()
	if err := waitReady(ctx, m.proc, db.PingContext); err != nil {
		m.proc.kill()
		_ = removeDir(m.Dir)
		return nil, err
	}
	if cfg.DiskFree > 0 {
		// once running: the server creates its temporary tablespace at start
		if err := capTmpfs(ctx, data, cfg.DiskFree); err != nil {
			m.proc.kill()
			_ = removeDir(m.Dir)
			return nil, fmt.Errorf("mariadb: cap the data directory: %w", err)
		}
	}
	ok = true
	return m, nil
}

// certificate issues the server's certificate and returns the options
// that make it require TLS.
func (m *MariaDB) certificate(cfg MariaDBConfig) ([]string, error) {
	m.CA = cfg.TLS
	if m.CA == nil {
		var err error
		if m.CA, err = NewCA(m.Dir); err != nil {
			return nil, err
		}
	}
	name := cfg.CertHost
	if name == "" {
		name = m.Host
	}
	certFile, keyFile, err := m.CA.Issue(m.Dir, name)
	if err != nil {
		return nil, err
	}
	// ssl-ca: a client certificate from the CA is accepted (not asked
	// for); sysbench sends one.
	return []string{"--ssl-cert=" + certFile, "--ssl-key=" + keyFile, "--ssl-ca=" + m.CA.CertFile, "--require-secure-transport=ON"}, nil
}

// NewMariaDB starts a private MariaDB server for t.
func NewMariaDB(t testing.TB, cfg MariaDBConfig) *MariaDB {
	t.Helper()
	return startForTest(t, func(ctx context.Context) (*MariaDB, error) { return StartMariaDB(ctx, cfg) })
}

// SharedMariaDB returns the test binary's shared MariaDB server, starting it
// on first use. The package's TestMain must call Main.
func SharedMariaDB(t testing.TB) *MariaDB {
	t.Helper()
	return shared(t, "mariadb", func(ctx context.Context) (*MariaDB, error) { return StartMariaDB(ctx, MariaDBConfig{}) })
}

// SharedMariaDBAs returns the test binary's shared MariaDB server for a
// role ("source", "destination"...), one server per role, each on its own
// address, starting it on first use. The package's TestMain must call Main.
func SharedMariaDBAs(t testing.TB, role string) *MariaDB {
	t.Helper()
	return shared(t, "mariadb/"+role, func(ctx context.Context) (*MariaDB, error) { return StartMariaDB(ctx, MariaDBConfig{}) })
}

// Addr is host:port.
func (m *MariaDB) Addr() string { return fmt.Sprintf("%s:%d", m.Host, m.Port) }

// DSN is a go-sql-driver/mysql DSN for root over TCP to database (may be
// ""), over TLS when the server offers it (tls=preferred: encrypted, the
// certificate not checked).
func (m *MariaDB) DSN(database string) string {
	c := mysql.NewConfig()
	c.TLSConfig = "preferred"
	c.User = "root"
	c.Net = "tcp"
	c.Addr = m.Addr()
	c.DBName = database
	c.Timeout = 5 * time.Second
	return c.FormatDSN()
}

// NewDatabase creates an empty database with a fresh name for t and drops it
// at cleanup. It returns the name.
func (m *MariaDB) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("fleettest_%d_%d", os.Getpid(), m.dbSeq.Add(1))
	db, err := sql.Open("mysql", m.DSN(""))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(context.Background(), "CREATE DATABASE "+ident.QuoteMySQL(name)); err != nil {
		t.Fatalf("fleettest: create database on %s: %v", m.Addr(), err)
	}
	t.Cleanup(func() {
		db, err := sql.Open("mysql", m.DSN(""))
		if err != nil {
			return
		}
		defer db.Close()
		_, _ = db.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+ident.QuoteMySQL(name))
	})
	return name
}

// Stop shuts the server down, waits for the process (the pid file vanishes
// before it exits) and removes its directory.
func (m *MariaDB) Stop() error {
	return shutdown(&m.proc, syscall.SIGTERM, 30*time.Second, m.release, m.Dir)
}

func (m *MariaDB) dataDir() string { return filepath.Join(m.Dir, "data") }

// Kill ends the server with SIGKILL, as a crash would; Stop still cleans up.
func (m *MariaDB) Kill() { m.proc.kill() }

// ErrorLog is the path of the server's error log.
func (m *MariaDB) ErrorLog() string { return filepath.Join(m.Dir, "error.log") }

// LogTail returns the last lines of the server's error log.
func (m *MariaDB) LogTail(lines int) string {
	return tailFile(filepath.Join(m.Dir, "error.log"), lines)
}

func (m *MariaDB) describe() string { return "mariadb " + m.Addr() }

func currentUser() string {
	if os.Geteuid() == 0 {
		return "root"
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return fmt.Sprint(os.Geteuid())
}

// Down stops the server but keeps its data and its address, as an outage
// would; Up starts it again.
func (m *MariaDB) Down() error {
	if m.proc == nil {
		return errors.New("server is stopped for good")
	}
	return m.proc.stop(syscall.SIGTERM, 30*time.Second)
}

// Up starts the server again after Down, with the same data, address and
// settings, and waits until it answers.
func (m *MariaDB) Up(ctx context.Context) error {
	return bringUp(ctx, &m.proc, func(ctx context.Context) error {
		db, err := sql.Open("mysql", m.DSN(""))
		if err != nil {
			return err
		}
		defer db.Close()
		return db.PingContext(ctx)
	})
}

// PID is the server's main process (benchmarks read its CPU time).
func (m *MariaDB) PID() int { return m.proc.cmd.Process.Pid }

// Pause freezes the server (SIGSTOP): connections stay open and nothing
// answers, as a hung server or a black-holed network would. Resume
// continues it.
func (m *MariaDB) Pause() error { return m.proc.pause() }

// Resume continues a paused server.
func (m *MariaDB) Resume() error { return m.proc.resume() }
