package steps_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"
	"github.com/klauspost/compress/zstd"
	mdns "github.com/miekg/dns"

	"github.com/fleetmigrate/fleetmigrate/agent"
	"github.com/fleetmigrate/fleetmigrate/agent/steps"
	"github.com/fleetmigrate/fleetmigrate/dns"
	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/mysql"
	"github.com/fleetmigrate/fleetmigrate/engine/postgres"
	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
	"github.com/fleetmigrate/fleetmigrate/internal/statetest"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/statemachine/sqlstore"
	"github.com/fleetmigrate/fleetmigrate/storage"
	"github.com/fleetmigrate/fleetmigrate/storage/file"
)

func TestMain(m *testing.M) { fleettest.Main(m) }

const (
	adminUser = "fleet admin"
	adminPass = `p"a's\w#rd ü;x`
	// peerUser reads the MariaDB and PostgreSQL servers of other hosts:
	// read-only (fleettest.PeerGrants, fleettest.PGPeerStatements), so a
	// step that changed a peer's server itself instead of asking its agent
	// fails these tests.
	peerUser = "fleet peer"
	peerPass = `r'e"a;d ônly`
)

// server is one fleet host's MariaDB and PostgreSQL as the tests see them.
type server struct {
	host string
	m    *fleettest.MariaDB
	root *sql.DB
	pg   *fleettest.Postgres
}

var pgAdmins sync.Map

func serverAs(t testing.TB, host string) *server {
	t.Helper()
	m := fleettest.SharedMariaDBAs(t, host)
	m.EnsureAdmin(t, adminUser, adminPass)
	m.EnsurePeer(t, peerUser, peerPass)
	pg := fleettest.SharedPostgresAs(t, host)
	once, _ := pgAdmins.LoadOrStore(pg.Addr(), &sync.Once{})
	once.(*sync.Once).Do(func() {
		fleettest.PGExec(t, pg.Root(t, "postgres"), "CREATE ROLE "+ident.QuotePostgres(adminUser)+" SUPERUSER LOGIN PASSWORD "+ident.QuotePostgresLiteral(adminPass))
	})
	pg.EnsurePeer(t, peerUser, peerPass)
	return &server{host: host, m: m, root: m.RootDB(t), pg: pg}
}

// fleet is a source and a destination host with their agents, a state
// database and a dump directory.
type fleet struct {
	src, dst *server
	state    *sqlstore.Store
	dumps    *file.Store
	dir      string
	logs     *fleettest.LogBuffer
	bind     *fleettest.BIND
	// dnsAllowed is the DNS agent's dns.allowed-targets (nil: the test
	// hosts' loopback and fd77:: networks).
	dnsAllowed []netip.Prefix
}

func newFleet(t *testing.T) *fleet {
	t.Helper()
	fleettest.Integration(t)
	sm := fleettest.SharedMariaDB(t)
	db := statetest.Upgraded(t, "mysql", sm.DSN(sm.NewDatabase(t)))
	dir := t.TempDir()
	st, err := file.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	return &fleet{src: serverAs(t, "source"), dst: serverAs(t, "destination"), state: db.Open(t), dumps: st, dir: dir, logs: &fleettest.LogBuffer{}}
}

// agentOpts adjust an agent of the fleet.
type agentOpts struct {
	dumpTool string
	// storeFirst: the dump step only stores the dump (no import beside it).
	storeFirst bool
	online     steps.Online
	// pgEndpoint, if set, is the PostgreSQL address the agent publishes
	// to the others (a fleettest.Proxy in front of its server).
	pgEndpoint string
	// askTimeout bounds the wait for a peer's answer (agent.Config).
	askTimeout time.Duration
	// noSteps: the agent registers and publishes its servers but has no
	// steps and answers no asks (an agent of a version before them).
	noSteps bool
}

// start runs the agent of host (source or destination) with roles until
// the test ends or stop is called.
func (f *fleet) start(t *testing.T, s *server, opt agentOpts, roles ...statemachine.Role) (stop func()) {
	t.Helper()
	cfg := agent.Config{Host: s.host, Roles: roles, PollInterval: 50 * time.Millisecond, Lease: 3 * time.Second,
		HeartbeatInterval: 500 * time.Millisecond, ShutdownTimeout: 5 * time.Second, RetryBase: 20 * time.Millisecond,
		ProgressInterval: 50 * time.Millisecond, MaxAttempts: 2, DNSTarget: map[bool]string{true: srcTarget, false: dstTarget}[s == f.src],
		Endpoints:  map[statemachine.Engine]string{statemachine.EngineMySQL: s.m.Addr(), statemachine.EnginePostgres: s.pg.Addr()},
		AskTimeout: opt.askTimeout}
	if opt.pgEndpoint != "" {
		cfg.Endpoints[statemachine.EnginePostgres] = opt.pgEndpoint
	}
	a, err := agent.New(f.state, cfg, slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})), nil)
	if err != nil {
		t.Fatal(err)
	}
	common := steps.Config{
		Host:          s.host,
		Store:         f.dumps,
		Level:         zstd.SpeedFastest,
		ProgressEvery: 20 * time.Millisecond,
		StoreFirst:    opt.storeFirst,
		Online:        opt.online,
	}
	my, pg := common, common
	my.Server = engine.Server{Address: s.m.Addr(), User: adminUser, Password: adminPass}
	my.PeerUser, my.PeerPassword = peerUser, peerPass
	pg.Server = engine.Server{Address: s.pg.Addr(), User: adminUser, Password: adminPass}
	pg.PeerUser, pg.PeerPassword = peerUser, peerPass
	if !opt.noSteps {
		(&steps.MySQL{Config: my, Options: mysql.Options{DumpTool: opt.dumpTool, SessionWait: 5 * time.Second}}).Register(a)
		(&steps.Postgres{Config: pg, Options: postgres.Options{SessionWait: 5 * time.Second, TempDir: t.TempDir()}}).Register(a)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := a.Run(ctx); err != nil {
			t.Errorf("agent %s: %v", s.host, err)
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	t.Cleanup(stop)
	// Registered before the test goes on: a peer's step that looked this
	// host up first would use its attempts on "no agent registered" (a
	// loaded machine runs two attempts in less time than a start takes).
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		agents, err := f.state.Agents(ctx, time.Minute)
		if err == nil && slices.ContainsFunc(agents, func(a statemachine.Agent) bool { return a.Host == s.host }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent %s not registered after 30 s: %v", s.host, err)
		}
	}
	return stop
}

// The hosts' DNS targets, as their agents publish them.
const (
	srcTarget = "127.77.0.1"
	dstTarget = "127.77.0.2, fd77::2"
)

// dnsAgent starts BIND serving db.example.test with a record pointing at
// the source for every row planned so far (or at what records says for its
// name), and the DNS host's agent.
func (f *fleet) dnsAgent(t *testing.T, records ...map[string]string) {
	t.Helper()
	rows, err := f.state.List(ctx(t), statemachine.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var recs []string
	for _, m := range rows {
		rr := "300 IN A " + srcTarget
		if len(records) > 0 && records[0][m.DNSName] != "" {
			rr = records[0][m.DNSName]
		}
		recs = append(recs, strings.TrimSuffix(m.DNSName, ".db.example.test")+" "+rr)
	}
	f.bind = fleettest.NewBIND(t, fleettest.BINDConfig{Records: recs})
	u, err := dns.New(dns.Config{Zones: []dns.Zone{{Name: f.bind.Zone, Primary: f.bind.Addr}},
		Key: dns.Key{Name: f.bind.KeyName, Secret: f.bind.KeySecret}, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.Close)
	cfg := agent.Config{Host: "dns", Roles: []statemachine.Role{statemachine.RoleDNS}, PollInterval: 50 * time.Millisecond,
		Lease: 3 * time.Second, HeartbeatInterval: 500 * time.Millisecond, ShutdownTimeout: time.Second, RetryBase: 20 * time.Millisecond, MaxAttempts: 2}
	a, err := agent.New(f.state, cfg, slog.New(slog.NewTextHandler(f.logs, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	allowed := f.dnsAllowed
	if allowed == nil {
		// the test hosts publish 127.77.0.1 and "127.77.0.2, fd77::2"
		allowed = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("fd77::/16")}
	}
	(&steps.DNS{Updater: u, Allowed: allowed}).Register(a)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// resolvesTo checks what the row's DNS name holds at BIND.
func (f *fleet) resolvesTo(t *testing.T, id int64, want string) {
	t.Helper()
	m := f.row(t, id)
	var got []string
	for _, qt := range []uint16{mdns.TypeA, mdns.TypeAAAA} {
		rrs, err := f.bind.Query(ctx(t), m.DNSName, qt)
		if err != nil {
			t.Fatal(err)
		}
		for _, rr := range rrs {
			switch r := rr.(type) {
			case *mdns.A:
				got = append(got, r.A.String())
			case *mdns.AAAA:
				got = append(got, r.AAAA.String())
			}
		}
	}
	if g := strings.Join(got, ", "); g != want {
		t.Errorf("%s resolves to %q, want %q", m.DNSName, g, want)
	}
}

// plan adds a row for db from the source to the destination and promotes it.
func (f *fleet) plan(t *testing.T, db string) int64 {
	t.Helper()
	return f.planEngine(t, statemachine.EngineMySQL, db)
}

// planEngine adds a row of an engine for db and promotes it.
func (f *fleet) planEngine(t *testing.T, eng statemachine.Engine, db string) int64 {
	t.Helper()
	return f.planMode(t, eng, db, statemachine.ModeDump)
}

// planMode adds a row of an engine and mode for db and promotes it.
func (f *fleet) planMode(t *testing.T, eng statemachine.Engine, db string, mode statemachine.Mode) int64 {
	t.Helper()
	rows := []statemachine.Planned{{Engine: eng, DatabaseName: db, Source: f.src.host, Destination: f.dst.host,
		DNSName: fmt.Sprintf("db-%08x.db.example.test", crc32.ChecksumIEEE([]byte(db))), Mode: mode}}
	if _, err := f.state.Plan(ctx(t), rows, "test", false); err != nil {
		t.Fatal(err)
	}
	if _, err := f.state.Promote(ctx(t), 1000, "test"); err != nil {
		t.Fatal(err)
	}
	var id int64
	if err := f.state.DB().QueryRowContext(ctx(t), "SELECT id FROM migration WHERE database_name = ? AND engine = ?", db, string(eng)).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

func (f *fleet) row(t *testing.T, id int64) statemachine.Migration {
	t.Helper()
	m, err := f.state.Get(ctx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// waitStatus waits until row id is in one of the statuses.
func (f *fleet) waitStatus(t *testing.T, id int64, want ...statemachine.Status) statemachine.Migration {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		m := f.row(t, id)
		for _, w := range want {
			if m.Status == w {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("row %d is %q (last error %q), want %v\nevents:\n%s\nlogs:\n%s", id, m.Status, m.LastError, want, f.events(t, id), tail(f.logs.String(), 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (f *fleet) events(t *testing.T, id int64) string {
	t.Helper()
	evs, err := f.state.Events(ctx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "  %s -> %s: %s\n", e.From, e.To, e.Detail)
	}
	return b.String()
}

// site is a customer database with an owner who has a password, rows, a
// view, a trigger and an event.
type site struct {
	db, user, pass string
	rows           int
}

var seq atomic.Int64

func newSite(t *testing.T, s *server, prefix string) site {
	t.Helper()
	n := seq.Add(1)
	st := site{db: fmt.Sprintf("%s %d 'ü`", prefix, n), user: fmt.Sprintf("u'%s%d", prefix, n), pass: fmt.Sprintf(`pw "%d" \ ü`, n), rows: 2000}
	q := ident.QuoteMySQL(st.db)
	exec(t, s.root,
		"CREATE DATABASE "+q+" CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
		"CREATE TABLE "+q+".items (id INT PRIMARY KEY, name VARCHAR(64), body BLOB)",
		"CREATE TABLE "+q+".log (at DATETIME, msg TEXT)",
		fmt.Sprintf("INSERT INTO %s.items SELECT seq, CONCAT('item ', seq, ' ✓'), RANDOM_BYTES(64) FROM %s.seq_1_to_%d", q, q, st.rows),
		"CREATE VIEW "+q+".cheap AS SELECT id, name FROM "+q+".items WHERE id < 10",
		"CREATE USER "+acct(st.user, "%")+" IDENTIFIED BY "+sqlString(st.pass),
		"GRANT ALL PRIVILEGES ON "+q+".* TO "+acct(st.user, "%"),
	)
	dropAt(t, s, st)
	return st
}

// dropAt removes a site from a server at the end of the test.
func dropAt(t *testing.T, s *server, st site) {
	t.Cleanup(func() {
		_, _ = s.root.Exec("DROP DATABASE IF EXISTS " + ident.QuoteMySQL(st.db))
		_, _ = s.root.Exec("DROP USER IF EXISTS " + acct(st.user, "%"))
	})
}

// customer connects as the site's owner.
func customer(t *testing.T, s *server, st site) *sql.DB {
	t.Helper()
	cfg := mysqldrv.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName = st.user, st.pass, "tcp", s.m.Addr(), st.db
	cfg.Timeout = 5 * time.Second
	cfg.TLSConfig = "preferred" // the harness's servers require TLS
	conn, err := mysqldrv.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	db.SetMaxIdleConns(0)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// contents reads a table whole, in order, as the root user sees it.
func contents(t *testing.T, s *server, db, table string) string {
	t.Helper()
	rows, err := s.root.QueryContext(ctx(t), "SELECT * FROM "+ident.QuoteMySQL(db)+"."+ident.QuoteMySQL(table)+" ORDER BY 1")
	if err != nil {
		t.Fatalf("read %s.%s on %s: %v", db, table, s.host, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var b strings.Builder
	for rows.Next() {
		vals := make([]sql.RawBytes, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		for _, v := range vals {
			fmt.Fprintf(&b, "%q,", v)
		}
		b.WriteByte('\n')
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func databaseExists(t *testing.T, s *server, db string) bool {
	t.Helper()
	var n int
	if err := s.root.QueryRowContext(ctx(t), "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = BINARY ?", db).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}

func grantsOf(t *testing.T, s *server, user string) string {
	t.Helper()
	rows, err := s.root.QueryContext(ctx(t), "SHOW GRANTS FOR "+acct(user, "%"))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var l string
		if err := rows.Scan(&l); err != nil {
			t.Fatal(err)
		}
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, "\n")
}

func canWrite(db interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}) error {
	_, err := db.ExecContext(context.Background(), "INSERT INTO log VALUES (NOW(), 'still here?')")
	return err
}

// TestMigrationToDone runs a database through every step with real agents:
// the customer logs in at the destination with the original password and
// finds the same rows; the source is closed to them; the row tells the story.
func TestMigrationToDone(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	st := newSite(t, f.src, "done")
	dropAt(t, f.dst, st)
	before := contents(t, f.src, st.db, "items")
	// A pooled client with a session open before the block.
	early, err := customer(t, f.src, st).Conn(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = early.Close() }()
	if err := canWrite(early); err != nil {
		t.Fatal(err)
	}
	id := f.plan(t, st.db)
	f.start(t, f.src, agentOpts{}, statemachine.RoleClose, statemachine.RoleRollback)
	f.start(t, f.dst, agentOpts{}, statemachine.RoleDump, statemachine.RoleImport)
	f.dnsAgent(t)
	m := f.waitStatus(t, id, statemachine.Done, statemachine.DumpFailed, statemachine.ImportFailed, statemachine.DNSFailed, statemachine.CloseFailed)
	if m.Status != statemachine.Done {
		t.Fatalf("row ended %q: %s\n%s", m.Status, m.LastError, f.events(t, id))
	}
	f.resolvesTo(t, id, "127.77.0.2, fd77::2")
	if m.SwitchedAt.IsZero() || m.SwitchedAt.Before(m.BlockedAt) {
		t.Errorf("switched_at %v (blocked_at %v)", m.SwitchedAt, m.BlockedAt)
	}
	if m.BlockedAt.IsZero() || m.DumpURL == "" || m.DumpBytes == 0 || m.SizeBytes == 0 || m.ConsistencyPoint.IsZero() {
		t.Errorf("row fields not recorded: %+v", m)
	}
	events := f.events(t, id)
	// The view was created by root: the warning says it can still write.
	for _, want := range []string{"blocking writes", "destination destination", "writes blocked", "dumped", "beside the dump", "done, imported while dumping", "verified", "source closed",
		"view cheap run as `root`@", "1 accounts lose write privileges", "writes blocked by the source's agent; 1 sessions ended"} {
		if !strings.Contains(events, want) {
			t.Errorf("events do not mention %q:\n%s", want, events)
		}
	}
	// The customer at the destination: original password, same rows, writes.
	at := customer(t, f.dst, st)
	if err := canWrite(at); err != nil {
		t.Fatalf("the owner cannot write at the destination with the original password: %v", err)
	}
	if got := contents(t, f.dst, st.db, "items"); got != before {
		t.Errorf("rows differ at the destination")
	}
	// The source is closed: new sessions are refused, the old one was ended.
	var n int
	if err := customer(t, f.src, st).QueryRow("SELECT COUNT(*) FROM items").Scan(&n); err == nil {
		t.Errorf("the owner still reads the closed source (%d rows)", n)
	}
	if err := canWrite(early); err == nil {
		t.Error("a session opened before the block still writes at the source")
	}
	if !databaseExists(t, f.src, st.db) {
		t.Error("closing dropped the source data: it must stay for the retention period")
	}
	// The secrets lie beside the dump, readable by the owner only.
	key, err := f.dumps.Key(m.DumpURL)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(f.dir, filepath.Dir(key), storage.SecretsFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("secrets: %v %v", fi, err)
	}
	man, err := os.ReadFile(filepath.Join(f.dir, filepath.Dir(key), storage.ManifestFile))
	if err != nil || bytes.Contains(man, []byte("PASSWORD")) || !bytes.Contains(man, []byte(m.DumpSHA256)) {
		t.Errorf("manifest: %v\n%s", err, man)
	}
}

// TestDestinationConflictFailsBeforeBlocking: a non-empty database of that
// name at the destination is found before the source is touched.
func TestDestinationConflictFailsBeforeBlocking(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	st := newSite(t, f.src, "conflict")
	q := ident.QuoteMySQL(st.db)
	exec(t, f.dst.root, "CREATE DATABASE "+q, "CREATE TABLE "+q+".theirs (a INT)")
	t.Cleanup(func() { _, _ = f.dst.root.Exec("DROP DATABASE IF EXISTS " + q) })
	grants := grantsOf(t, f.src, st.user)
	id := f.plan(t, st.db)
	f.start(t, f.dst, agentOpts{}, statemachine.RoleDump, statemachine.RoleImport)
	f.start(t, f.src, agentOpts{}, statemachine.RoleClose)
	m := f.waitStatus(t, id, statemachine.DumpFailed, statemachine.ToImport, statemachine.DNSToUpdate)
	if m.Status != statemachine.DumpFailed || !strings.Contains(m.LastError, "theirs") {
		t.Fatalf("row %q: %q", m.Status, m.LastError)
	}
	if !m.BlockedAt.IsZero() || grantsOf(t, f.src, st.user) != grants {
		t.Errorf("the source was touched: blocked at %v, grants now %s", m.BlockedAt, grantsOf(t, f.src, st.user))
	}
	if err := canWrite(customer(t, f.src, st)); err != nil {
		t.Errorf("the customer cannot write at the source: %v", err)
	}
}

// TestDumpWaitsForTheSourcesAgent: the destination does not block the
// source itself. With an agent at the source that does not answer (one of
// a version before peer asks) its dump step gets no answer, says so, and
// the row fails with the source untouched; an agent of this version
// started there then refuses the block asked by the step that has ended,
// and a retry migrates the database.
func TestDumpWaitsForTheSourcesAgent(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	st := newSite(t, f.src, "noagent")
	dropAt(t, f.dst, st)
	grants := grantsOf(t, f.src, st.user)
	id := f.plan(t, st.db)
	mute := f.start(t, f.src, agentOpts{noSteps: true}, statemachine.RoleClose)
	f.start(t, f.dst, agentOpts{askTimeout: 2 * time.Second}, statemachine.RoleDump, statemachine.RoleImport)
	m := f.waitStatus(t, id, statemachine.DumpFailed, statemachine.DNSToUpdate, statemachine.ToCloseSource)
	if m.Status != statemachine.DumpFailed || !strings.Contains(m.LastError, "agent has not answered") || !strings.Contains(m.LastError, "is migrate-agent running there") {
		t.Fatalf("row %q: %q", m.Status, m.LastError)
	}
	if got := grantsOf(t, f.src, st.user); got != grants {
		t.Errorf("the source's grants changed with no agent there: %s", got)
	}
	if err := canWrite(customer(t, f.src, st)); err != nil {
		t.Errorf("the customer cannot write at the source: %v", err)
	}
	if databaseExists(t, f.dst, st.db) {
		t.Error("the failed dump left its import at the destination")
	}
	// The source's agent comes: the asks left open are answered (the
	// block refused: the step that asked has ended) and nothing changes.
	mute()
	f.start(t, f.src, agentOpts{}, statemachine.RoleClose)
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, _, err := f.state.OpenAskSummary(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d asks still open after the source's agent started", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := grantsOf(t, f.src, st.user); got != grants {
		t.Errorf("a stale block was applied: grants now %s", got)
	}
	if err := canWrite(customer(t, f.src, st)); err != nil {
		t.Errorf("the customer cannot write at the source after the stale asks: %v", err)
	}
	if _, err := f.state.Operate(ctx(t), id, statemachine.ActionRetry, "test", "the source's agent runs now"); err != nil {
		t.Fatal(err)
	}
	f.dnsAgent(t)
	if m := f.waitStatus(t, id, statemachine.Done, statemachine.DumpFailed, statemachine.CloseFailed, statemachine.DNSFailed); m.Status != statemachine.Done {
		t.Fatalf("after the retry: %q: %s\n%s", m.Status, m.LastError, f.events(t, id))
	}
}

// TestKilledDumpIsNeverStoredAndWritesComeBack: a dump tool that dies
// midway fails the attempt; nothing is stored, writes are restored, and
// after the attempts the row is Dump failed with the tool's words.
func TestKilledDumpIsNeverStoredAndWritesComeBack(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	st := newSite(t, f.src, "killed")
	grants := grantsOf(t, f.src, st.user)
	tool := filepath.Join(t.TempDir(), "mariadb-dump")
	script := "#!/bin/sh\ncase \"$1\" in --version) exec mariadb-dump --version;; esac\n" +
		"echo '-- MariaDB dump'; echo 'CREATE TABLE half ('; kill -9 $$\n"
	if err := os.WriteFile(tool, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	id := f.plan(t, st.db)
	f.start(t, f.dst, agentOpts{dumpTool: tool}, statemachine.RoleDump, statemachine.RoleImport)
	f.start(t, f.src, agentOpts{}, statemachine.RoleClose)
	m := f.waitStatus(t, id, statemachine.DumpFailed, statemachine.ToImport, statemachine.DNSToUpdate)
	if m.Status != statemachine.DumpFailed || !strings.Contains(m.LastError, "killed") {
		t.Fatalf("row %q: %q", m.Status, m.LastError)
	}
	if m.Attempt < 2 {
		t.Errorf("a killed dump is transient: want the attempts used, got attempt %d", m.Attempt)
	}
	var stored []string
	for o, err := range f.dumps.List(ctx(t), storage.DumpsPrefix) {
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(o.Key, storage.EncodeName(st.db)) {
			stored = append(stored, o.Key)
		}
	}
	if len(stored) > 0 {
		t.Errorf("a killed dump was stored: %v", stored)
	}
	if databaseExists(t, f.dst, st.db) {
		t.Error("the import beside the killed dump left a database at the destination")
	}
	if !strings.Contains(f.events(t, id), "dropped the import") {
		t.Errorf("no event says the import beside the dump was dropped:\n%s", f.events(t, id))
	}
	if m.UnblockedAt.IsZero() || grantsOf(t, f.src, st.user) != grants {
		t.Errorf("writes not restored: unblocked at %v, grants %s, want %s", m.UnblockedAt, grantsOf(t, f.src, st.user), grants)
	}
	if err := canWrite(customer(t, f.src, st)); err != nil {
		t.Errorf("the customer cannot write at the source after the failed dump: %v", err)
	}
}

// TestCorruptDumpFailsImportAndRollbackRestores: a dump damaged in the
// store is refused by the import, which leaves nothing at the destination;
// the operator's rollback gives the customer back their writes.
func TestCorruptDumpFailsImportAndRollbackRestores(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	st := newSite(t, f.src, "corrupt")
	dropAt(t, f.dst, st)
	grants := grantsOf(t, f.src, st.user)
	id := f.plan(t, st.db)
	// The destination's agent only stores the dump (store-first): the
	// import step takes it from the store.
	stopDst := f.start(t, f.dst, agentOpts{storeFirst: true}, statemachine.RoleDump, statemachine.RoleRollback)
	f.start(t, f.src, agentOpts{}, statemachine.RoleRollback)
	m := f.waitStatus(t, id, statemachine.ToImport, statemachine.DumpFailed)
	if m.Status != statemachine.ToImport {
		t.Fatalf("dump: %q %s", m.Status, m.LastError)
	}
	if err := canWrite(customer(t, f.src, st)); err == nil {
		t.Fatal("the customer writes at the source while its dump waits for import")
	}
	f.corruptDump(t, m)
	stopDst()
	f.start(t, f.dst, agentOpts{}, statemachine.RoleImport)
	m = f.waitStatus(t, id, statemachine.ImportFailed, statemachine.DNSToUpdate)
	if m.Status != statemachine.ImportFailed || !strings.Contains(m.LastError, "corrupt") {
		t.Fatalf("import of a corrupt dump: %q %q", m.Status, m.LastError)
	}
	if databaseExists(t, f.dst, st.db) {
		t.Error("the failed import left the database at the destination")
	}
	if _, err := f.state.Operate(ctx(t), id, statemachine.ActionRollback, "test", "corrupt dump"); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	m = f.waitStatus(t, id, statemachine.RolledBack, statemachine.RollbackFailed)
	if m.Status != statemachine.RolledBack {
		t.Fatalf("rollback: %q %s", m.Status, m.LastError)
	}
	if grantsOf(t, f.src, st.user) != grants {
		t.Errorf("grants after rollback:\n%s\nwant\n%s", grantsOf(t, f.src, st.user), grants)
	}
	if err := canWrite(customer(t, f.src, st)); err != nil {
		t.Errorf("the customer cannot write after the rollback: %v", err)
	}
}

// TestMySQLCloseReadsNothingWhenNothingWrote: a source nobody wrote to
// since the dump is closed without reading its tables again: the binary
// log since the dump's position has nothing of it. Not parallel: other
// tests' writes to the shared server's binary log would make it longer
// than this database is large, and the close would (rightly) read it all.
func TestMySQLCloseReadsNothingWhenNothingWrote(t *testing.T) {
	f := newFleet(t)
	st := newSite(t, f.src, "quiet")
	dropAt(t, f.dst, st)
	id := f.plan(t, st.db)
	f.start(t, f.src, agentOpts{}, statemachine.RoleClose)
	f.start(t, f.dst, agentOpts{}, statemachine.RoleDump, statemachine.RoleImport)
	f.dnsAgent(t)
	if m := f.waitStatus(t, id, statemachine.Done, statemachine.CloseFailed, statemachine.DumpFailed, statemachine.ImportFailed); m.Status != statemachine.Done {
		t.Fatalf("%q %s", m.Status, m.LastError)
	}
	if ev := f.events(t, id); !strings.Contains(ev, "none read again") {
		t.Errorf("the close did not say it read nothing again:\n%s", ev)
	}
}

// TestWriteAfterTheConsistencyPointStopsClose: a row written at the source
// after the dump (here by an administrator, whom the block does not reach)
// is found when the source is closed: Close failed, naming the table, and
// the source left as it is.
func TestWriteAfterTheConsistencyPointStopsClose(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	st := newSite(t, f.src, "slipped")
	dropAt(t, f.dst, st)
	id := f.plan(t, st.db)
	f.start(t, f.src, agentOpts{}, statemachine.RoleClose)
	f.start(t, f.dst, agentOpts{}, statemachine.RoleDump, statemachine.RoleImport)
	m := f.waitStatus(t, id, statemachine.DNSToUpdate, statemachine.DumpFailed, statemachine.ImportFailed)
	if m.Status != statemachine.DNSToUpdate {
		t.Fatalf("%q %s", m.Status, m.LastError)
	}
	exec(t, f.src.root, "INSERT INTO "+ident.QuoteMySQL(st.db)+".items VALUES (999999, 'late', NULL)")
	f.dnsAgent(t)
	m = f.waitStatus(t, id, statemachine.CloseFailed, statemachine.Done)
	if m.Status != statemachine.CloseFailed || !strings.Contains(m.LastError, "writes reached the source after the consistency point") ||
		!strings.Contains(m.LastError, "items: 2001 rows, 2000 expected") {
		t.Fatalf("close: %q %q", m.Status, m.LastError)
	}
	var n int
	if err := f.src.root.QueryRow("SELECT COUNT(*) FROM mysql.db WHERE Db = ? AND User = ?", st.db, st.user).Scan(&n); err != nil || n != 1 {
		t.Errorf("the source's grants were changed by a close that failed: %d %v", n, err)
	}
}

// TestRecoveryRestoresWritesOfADeadDump: an agent that died while the
// source was blocked (its claim and block record left behind) is cleaned
// up by the next agent of the host: writes come back before the retry.
func TestRecoveryRestoresWritesOfADeadDump(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	st := newSite(t, f.src, "dead")
	grants := grantsOf(t, f.src, st.user)
	id := f.plan(t, st.db)
	// The dead agent: claimed the row, recorded and applied the block.
	claims, err := f.state.Claim(ctx(t), statemachine.ClaimRequest{Role: statemachine.RoleDump, Host: f.dst.host, Owner: "destination/pid 1", Limit: 1, Lease: 500 * time.Millisecond})
	if err != nil || len(claims) != 1 {
		t.Fatalf("claim: %v %v", claims, err)
	}
	srv, err := mysql.Open(ctx(t), engine.Server{Host: "source", Address: f.src.m.Addr(), User: adminUser, Password: adminPass}, mysql.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Close() }()
	s, err := srv.Inspect(ctx(t), st.db)
	if err != nil {
		t.Fatal(err)
	}
	a, err := srv.PlanBlock(ctx(t), s)
	if err != nil {
		t.Fatal(err)
	}
	body := fmt.Appendf(nil, `{"blocked":true,"access":%s}`, mustJSON(t, a))
	if err := f.state.PutRecord(ctx(t), &claims[0], "block", body); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Block(ctx(t), a); err != nil {
		t.Fatal(err)
	}
	if err := canWrite(customer(t, f.src, st)); err == nil {
		t.Fatal("fixture: writes not blocked")
	}
	// The dead agent's process must not look alive: the registry holds
	// none for the host, so the new agent takes over after the lease.
	time.Sleep(600 * time.Millisecond)
	f.start(t, f.src, agentOpts{}, statemachine.RoleClose)
	dropAt(t, f.dst, st)
	f.start(t, f.dst, agentOpts{}, statemachine.RoleDump, statemachine.RoleImport)
	m := f.waitStatus(t, id, statemachine.DNSToUpdate, statemachine.DumpFailed, statemachine.ImportFailed)
	if m.Status != statemachine.DNSToUpdate {
		t.Fatalf("%q %s\n%s", m.Status, m.LastError, f.events(t, id))
	}
	events := f.events(t, id)
	if !strings.Contains(events, "writes restored") || !strings.Contains(f.logs.String(), "recovering a step interrupted") {
		t.Errorf("recovery did not restore writes before the retry:\n%s", events)
	}
	if grantsOf(t, f.src, st.user) == grants {
		t.Errorf("the retried dump left writes unblocked while the row waits for DNS")
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return c
}

var (
	exec      = fleettest.Exec
	acct      = fleettest.MySQLAccount
	sqlString = fleettest.MySQLString
)

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// corruptDump flips a byte in the middle of the row's stored dump.
func (f *fleet) corruptDump(t *testing.T, m statemachine.Migration) {
	t.Helper()
	key, err := f.dumps.Key(m.DumpURL)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(f.dir, key)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
