package steps_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"

	"github.com/fleetmigrate/fleetmigrate/agent/steps"
	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/mysql"
	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// newMyOnlineSite is a customer database that can stream: newSite's, plus
// an auto-increment table the writer fills and a trigger and an event.
func newMyOnlineSite(t *testing.T, f *fleet, prefix string) site {
	t.Helper()
	st := newSite(t, f.src, prefix)
	q := ident.QuoteMySQL(st.db)
	exec(t, f.src.root,
		"CREATE TABLE "+q+".writes (n BIGINT PRIMARY KEY, auto_id INT, at DATETIME(6) DEFAULT NOW(6))",
		"CREATE TABLE "+q+".autos (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20), stamped VARCHAR(20))",
		"CREATE TRIGGER "+q+".stamp BEFORE INSERT ON "+q+".autos FOR EACH ROW SET NEW.stamped = CONCAT('t:', NEW.v)",
		"CREATE EVENT "+q+".tick ON SCHEDULE EVERY 1 HOUR DO DELETE FROM log WHERE at < NOW() - INTERVAL 10 YEAR",
	)
	dropAt(t, f.dst, st)
	return st
}

// myWriter inserts numbered rows through whatever server the row's DNS
// name points at (the source until DNS moved), as the site's owner, and
// remembers which were acknowledged.
type myWriter struct {
	mu           sync.Mutex
	acked        []int64
	firstRefused time.Time
	firstAtDst   time.Time
	lastErr      string
	stop, done   chan struct{}
}

func startMyWriter(t *testing.T, f *fleet, id int64, st site, every time.Duration) *myWriter {
	t.Helper()
	w := &myWriter{stop: make(chan struct{}), done: make(chan struct{})}
	open := func(s *server) *sql.DB {
		cfg := mysqldrv.NewConfig()
		cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName = st.user, st.pass, "tcp", s.m.Addr(), st.db
		cfg.Timeout = 2 * time.Second
		cfg.TLSConfig = "preferred" // the harness's servers require TLS
		conn, err := mysqldrv.NewConnector(cfg)
		if err != nil {
			t.Error(err)
			return nil
		}
		db := sql.OpenDB(conn)
		db.SetMaxOpenConns(1)
		return db
	}
	go func() {
		defer close(w.done)
		var db *sql.DB
		var at *server
		n := int64(0)
		for {
			select {
			case <-w.stop:
				if db != nil {
					_ = db.Close()
				}
				return
			case <-time.After(every):
			}
			if db == nil {
				at = f.src
				if m, err := f.state.Get(context.Background(), id); err == nil && !m.SwitchedAt.IsZero() {
					at = f.dst
				}
				db = open(at)
			}
			c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := db.ExecContext(c, "INSERT INTO autos (v) VALUES (?)", fmt.Sprint(n+1))
			if err == nil {
				_, err = db.ExecContext(c, "INSERT INTO writes (n, auto_id) VALUES (?, LAST_INSERT_ID())", n+1)
			}
			cancel()
			var me *mysqldrv.MySQLError
			if errors.As(err, &me) && me.Number == 1062 {
				// Write n+1 committed without an answer (its session
				// ended after the commit, before the reply): its retry
				// finds it. It counts as acknowledged.
				err = nil
			}
			if err != nil {
				w.mu.Lock()
				if w.firstRefused.IsZero() {
					w.firstRefused = time.Now()
				}
				w.lastErr = err.Error()
				w.mu.Unlock()
				_ = db.Close()
				db = nil
				continue
			}
			n++
			w.mu.Lock()
			w.acked = append(w.acked, n)
			if at == f.dst && w.firstAtDst.IsZero() {
				w.firstAtDst = time.Now()
			}
			w.mu.Unlock()
		}
	}()
	return w
}

// finish stops the writer once it has written at the destination.
func (w *myWriter) finish(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		w.mu.Lock()
		ok := !w.firstAtDst.IsZero()
		w.mu.Unlock()
		if ok || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(w.stop)
	<-w.done
	if w.firstAtDst.IsZero() {
		t.Fatalf("the writer never wrote at the destination (%d writes acknowledged, last error %q)", len(w.acked), w.lastErr)
	}
}

// numbersAt reads the writer's numbers at a server.
func numbersAt(t *testing.T, s *server, db string) map[int64]bool {
	t.Helper()
	rows, err := s.root.QueryContext(ctx(t), "SELECT n FROM "+ident.QuoteMySQL(db)+".writes")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[int64]bool{}
	for rows.Next() {
		var n int64
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		out[n] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// startSysbench runs sysbench's oltp_write_only against the site at the
// source as its owner, 50 transactions/s, until the block ends its
// sessions or stop is called.
func startSysbench(t *testing.T, f *fleet, st site) (stop func()) {
	t.Helper()
	bin, err := osexec.LookPath("sysbench")
	if err != nil {
		t.Fatalf("sysbench is not installed (deploy/dev/install-deps.sh installs it): %v", err)
	}
	host, port, _ := strings.Cut(f.src.m.Addr(), ":")
	args := []string{"oltp_write_only", "--db-driver=mysql", "--mysql-host=" + host, "--mysql-port=" + port,
		"--mysql-user=" + st.user, "--mysql-password=" + st.pass, "--mysql-db=" + st.db, "--tables=2", "--table-size=2000",
		"--mysql-ssl=on"}
	// The harness's servers require TLS. sysbench 1.0 loads its TLS files
	// from fixed names in its working directory: the CA, and a client
	// certificate the server does not ask for but the library reads.
	dir := t.TempDir()
	if err := f.src.m.CA.IssueTo(dir, "sysbench", "client-cert.pem", "client-key.pem"); err != nil {
		t.Fatal(err)
	}
	if err := f.src.m.CA.CopyTo(filepath.Join(dir, "cacert.pem")); err != nil {
		t.Fatal(err)
	}
	prepare := osexec.CommandContext(ctx(t), bin, append(args, "prepare")...)
	prepare.Dir = dir
	if out, err := prepare.CombinedOutput(); err != nil {
		t.Fatalf("sysbench prepare: %v\n%s", err, out)
	}
	c, cancel := context.WithCancel(context.Background())
	cmd := osexec.CommandContext(c, bin, append(args, "--rate=50", "--time=0", "--threads=2", "--mysql-ignore-errors=all", "run")...)
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// TestMySQLOnlineToDone moves a MariaDB database online under a steady
// writer through the row's DNS name and sysbench's oltp_write_only, while
// another database of the same source moves in dump mode and a database
// of the destination's own is left alone: every acknowledged write is at
// the destination, none accepted at the source that is not, the
// auto-increment continues, the trigger did not fire twice, the event
// came over, the stream is gone and the dump is in the store.
func TestMySQLOnlineToDone(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	st := newMyOnlineSite(t, f, "myonline")
	dumped := newSite(t, f.src, "mydumped")
	dropAt(t, f.dst, dumped)
	// The destination's own customer.
	own := newSite(t, f.dst, "myown")
	before := contents(t, f.dst, own.db, "items")
	bench := startSysbench(t, f, st)
	id := f.planMode(t, statemachine.EngineMySQL, st.db, statemachine.ModeOnline)
	dumpID := f.planMode(t, statemachine.EngineMySQL, dumped.db, statemachine.ModeDump)
	f.dnsAgent(t)
	w := startMyWriter(t, f, id, st, 5*time.Millisecond)
	onlineAgents(t, f, agentOpts{})
	m := f.waitStatus(t, id, statemachine.Done, statemachine.SyncFailed, statemachine.CutoverFailed, statemachine.DNSFailed, statemachine.CloseFailed)
	w.finish(t)
	bench()
	if m.Status != statemachine.Done {
		t.Fatalf("row ended %q: %s\n%s", m.Status, m.LastError, f.events(t, id))
	}
	if d := f.waitStatus(t, dumpID, statemachine.Done, statemachine.DumpFailed, statemachine.ImportFailed, statemachine.CloseFailed); d.Status != statemachine.Done {
		t.Errorf("the dump-mode row of the same source ended %q: %s", d.Status, d.LastError)
	}
	events := f.events(t, id)
	for _, want := range []string{"copying", "streaming from source", "verified while streaming", "caught up", "cutover: blocking writes", "cut over in", "tables verified now", "stream removed", "dumped", "source closed"} {
		if !strings.Contains(events, want) {
			t.Errorf("events do not mention %q:\n%s", want, events)
		}
	}
	if m.Mode != statemachine.ModeOnline || m.DumpURL == "" || m.DumpSHA256 == "" || m.BlockedAt.IsZero() || m.SwitchedAt.IsZero() {
		t.Errorf("row fields: %+v", m)
	}
	dst, src := numbersAt(t, f.dst, st.db), numbersAt(t, f.src, st.db)
	missing := 0
	for _, n := range w.acked {
		if !dst[n] {
			missing++
		}
	}
	for n := range src {
		if !dst[n] {
			t.Errorf("write %d was accepted at the source and is not at the destination", n)
		}
	}
	if missing > 0 || len(w.acked) == 0 {
		t.Errorf("%d of %d acknowledged writes missing at the destination", missing, len(w.acked))
	}
	if testing.Verbose() {
		evs, _ := f.state.Events(ctx(t), id)
		for _, e := range evs {
			t.Logf("%s %s -> %s: %s", e.At.Format("15:04:05.000"), e.From, e.To, e.Detail)
		}
	}
	t.Logf("%d writes acknowledged, %d at the source; writer's window %s; row blocked %s", len(w.acked), len(src), w.firstAtDst.Sub(w.firstRefused).Round(time.Millisecond), m.SwitchedAt.Sub(m.BlockedAt).Round(time.Millisecond))
	q := ident.QuoteMySQL(st.db)
	// The auto-increment continues where the source's stopped, and every
	// row the trigger stamped once (replicated rows do not fire it again).
	var maxID, next int64
	if err := f.dst.root.QueryRowContext(ctx(t), "SELECT MAX(id) FROM "+q+".autos").Scan(&maxID); err != nil {
		t.Fatal(err)
	}
	owner := customer(t, f.dst, st)
	res, err := owner.ExecContext(ctx(t), "INSERT INTO autos (v) VALUES ('after')")
	if err == nil {
		next, err = res.LastInsertId()
	}
	if err != nil || next != maxID+1 {
		t.Errorf("insert at the destination got id %d (%v), want %d", next, err, maxID+1)
	}
	var bad int
	if err := f.dst.root.QueryRowContext(ctx(t), "SELECT COUNT(*) FROM "+q+".autos WHERE stamped <> CONCAT('t:', v)").Scan(&bad); err != nil || bad != 0 {
		t.Errorf("%d rows of autos stamped other than once by the trigger (%v)", bad, err)
	}
	var nev int
	if err := f.dst.root.QueryRowContext(ctx(t), "SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ? AND EVENT_NAME = 'tick' AND STATUS = 'ENABLED'", st.db).Scan(&nev); err != nil || nev != 1 {
		t.Errorf("the event at the destination: %d enabled (%v)", nev, err)
	}
	// sysbench's tables: the same at both servers.
	for _, tb := range []string{"sbtest1", "sbtest2"} {
		if a, b := contents(t, f.src, st.db, tb), contents(t, f.dst, st.db, tb); a != b {
			t.Errorf("sysbench table %s differs between source and destination", tb)
		}
	}
	if after := contents(t, f.dst, own.db, "items"); after != before {
		t.Errorf("the destination's own database changed during the migration")
	}
	// Only this row's: the destination server is shared with the other
	// tests, whose rows stream meanwhile (every test's state database
	// numbers its rows from 1; the name's digest tells them apart).
	if f.myStream(t, id) {
		t.Errorf("the row's stream record %s is left at the destination", engine.StreamName(id, st.db))
	}
}

// myStreams lists the stream records of ours at the destination, read
// there as root.
func (f *fleet) myStreams(t *testing.T) []string {
	t.Helper()
	rows, err := f.dst.root.QueryContext(ctx(t), "SELECT name FROM `"+mysql.StreamsDatabase+"`.streams WHERE name LIKE 'fleetmigrate\\_%'")
	if err != nil {
		var me *mysqldrv.MySQLError
		if errors.As(err, &me) && (me.Number == 1146 || me.Number == 1049) {
			return nil // no stream was ever recorded there
		}
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// myStream reports whether row id's stream record exists at the
// destination.
func (f *fleet) myStream(t *testing.T, id int64) bool {
	t.Helper()
	name := engine.StreamName(id, f.row(t, id).DatabaseName)
	for _, n := range f.myStreams(t) {
		if n == name {
			return true
		}
	}
	return false
}

// TestMySQLOnlineRefusesAndAutoDumps: mode online refuses a database with
// a MyISAM table before anything changes, naming it; mode auto moves it in
// dump mode, saying why.
func TestMySQLOnlineRefusesAndAutoDumps(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	a, b := newSite(t, f.src, "myisam on"), newSite(t, f.src, "myisam auto")
	for _, s := range []site{a, b} {
		exec(t, f.src.root, "CREATE TABLE "+ident.QuoteMySQL(s.db)+".old (id INT PRIMARY KEY) ENGINE=MyISAM")
		dropAt(t, f.dst, s)
	}
	online := f.planMode(t, statemachine.EngineMySQL, a.db, statemachine.ModeOnline)
	auto := f.planMode(t, statemachine.EngineMySQL, b.db, statemachine.ModeAuto)
	f.dnsAgent(t)
	onlineAgents(t, f, agentOpts{})
	m := f.waitStatus(t, online, statemachine.SyncFailed, statemachine.Done)
	if m.Status != statemachine.SyncFailed || !strings.Contains(m.LastError, "`old` (MyISAM)") || !strings.Contains(m.LastError, "nothing was changed") {
		t.Errorf("online row: %q %s", m.Status, m.LastError)
	}
	if databaseExists(t, f.dst, a.db) || f.myStream(t, online) {
		t.Error("the refused row left something at the destination")
	}
	if m := f.waitStatus(t, auto, statemachine.Done, statemachine.DumpFailed, statemachine.ImportFailed); m.Status != statemachine.Done || m.Mode != statemachine.ModeDump ||
		!strings.Contains(f.events(t, auto), "auto: dump mode for") {
		t.Errorf("auto row: %q mode %q %s\n%s", m.Status, m.Mode, m.LastError, f.events(t, auto))
	}
}

// TestMySQLOnlineDDLDuringSync: a table created during the sync refuses
// the cutover (writes restored, stream and copy removed); a retry syncs
// again and moves it.
func TestMySQLOnlineDDLDuringSync(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	st := newMyOnlineSite(t, f, "myddl")
	id := f.planMode(t, statemachine.EngineMySQL, st.db, statemachine.ModeOnline)
	f.dnsAgent(t)
	stopSrc := f.start(t, f.src, agentOpts{}, statemachine.RoleRollback) // publishes the source's address
	stopSync := f.start(t, f.dst, agentOpts{}, statemachine.RoleSync)
	if m := f.waitStatus(t, id, statemachine.ToCutOver, statemachine.SyncFailed); m.Status != statemachine.ToCutOver {
		t.Fatalf("sync: %q %s", m.Status, m.LastError)
	}
	stopSrc()
	if !f.myStream(t, id) {
		t.Fatal("no stream record at the destination while the row waits to be cut over")
	}
	owner := customer(t, f.src, st)
	if _, err := owner.ExecContext(ctx(t), "CREATE TABLE added_later (x INT PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	f.cutAfter(t, stopSync, agentOpts{}, agentOpts{})(statemachine.RoleClose, statemachine.RoleRollback)
	m := f.waitStatus(t, id, statemachine.CutoverFailed, statemachine.Done)
	if m.Status != statemachine.CutoverFailed || !strings.Contains(m.LastError, "tables created: `added_later`") {
		t.Fatalf("cutover: %q %s", m.Status, m.LastError)
	}
	if err := canWrite(customer(t, f.src, st)); err != nil || f.myStream(t, id) || databaseExists(t, f.dst, st.db) {
		t.Errorf("after the refused cutover: source write %v, stream %v, copy %v", err, f.myStream(t, id), databaseExists(t, f.dst, st.db))
	}
	if _, err := f.state.Operate(ctx(t), id, statemachine.ActionRetry, "test", "retry"); err != nil {
		t.Fatal(err)
	}
	if m := f.waitStatus(t, id, statemachine.Done, statemachine.SyncFailed, statemachine.CutoverFailed, statemachine.CloseFailed); m.Status != statemachine.Done {
		t.Fatalf("after the retry: %q %s\n%s", m.Status, m.LastError, f.events(t, id))
	}
}

// TestMySQLOnlineBrokenStreamFailsOnlyItsRow: a row the destination
// already has (planted there during the sync) stops that database's stream
// with a duplicate key: only its row fails, with the error (the value
// redacted), its stream and copy removed; another row streaming to the same
// destination moves on.
func TestMySQLOnlineBrokenStreamFailsOnlyItsRow(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	broken, fine := newMyOnlineSite(t, f, "mybroken"), newMyOnlineSite(t, f, "myfine")
	opt := agentOpts{online: steps.Online{LagEvery: 200 * time.Millisecond}}
	ids := []int64{f.planMode(t, statemachine.EngineMySQL, broken.db, statemachine.ModeOnline), f.planMode(t, statemachine.EngineMySQL, fine.db, statemachine.ModeOnline)}
	f.dnsAgent(t)
	// No cutover agent yet: both rows sync and wait.
	stopSrc := f.start(t, f.src, opt, statemachine.RoleRollback) // publishes the source's address
	stopSync := f.start(t, f.dst, opt, statemachine.RoleSync)
	for _, id := range ids {
		if m := f.waitStatus(t, id, statemachine.ToCutOver, statemachine.SyncFailed); m.Status != statemachine.ToCutOver {
			t.Fatalf("sync: %q %s", m.Status, m.LastError)
		}
	}
	stopSrc()
	// A customer's row written at the destination by mistake, then the
	// same key at the source: the stream stops on a duplicate key.
	exec(t, f.dst.root, "INSERT INTO "+ident.QuoteMySQL(broken.db)+".writes (n) VALUES (987654321)")
	exec(t, f.src.root, "INSERT INTO "+ident.QuoteMySQL(broken.db)+".writes (n) VALUES (987654321)")
	f.cutAfter(t, stopSync, opt, opt)(statemachine.RoleClose, statemachine.RoleRollback)
	m := f.waitStatus(t, ids[0], statemachine.CutoverFailed, statemachine.SyncFailed, statemachine.Done)
	if m.Status != statemachine.CutoverFailed || !strings.Contains(m.LastError, "1062") || !strings.Contains(m.LastError, "insert of table `writes`") || strings.Contains(m.LastError, "987654321") {
		t.Errorf("the broken row: %q %s", m.Status, m.LastError)
	}
	if canWrite(customer(t, f.src, broken)) != nil || f.myStream(t, ids[0]) || databaseExists(t, f.dst, broken.db) {
		t.Error("the broken row left its source blocked, its stream or its copy")
	}
	if m := f.waitStatus(t, ids[1], statemachine.Done, statemachine.CutoverFailed, statemachine.SyncFailed, statemachine.CloseFailed); m.Status != statemachine.Done {
		t.Errorf("the other row: %q %s", m.Status, m.LastError)
	}
}

// syncedMySQL syncs a new online site's row and returns once it is To cut
// over, with no cutover agent running; opt is the agents' options, and cut
// starts the cutover: the destination's agent again with the cutover, and
// the source's (which blocks when asked) with srcRoles.
func syncedMySQL(t *testing.T, f *fleet, prefix string, online steps.Online) (st site, id int64, opt agentOpts, cut func(srcRoles ...statemachine.Role)) {
	t.Helper()
	st = newMyOnlineSite(t, f, prefix)
	id = f.planMode(t, statemachine.EngineMySQL, st.db, statemachine.ModeOnline)
	opt = agentOpts{online: online}
	stopSrc := f.start(t, f.src, opt, statemachine.RoleRollback) // publishes the source's address
	stopSync := f.start(t, f.dst, opt, statemachine.RoleSync)
	if m := f.waitStatus(t, id, statemachine.ToCutOver, statemachine.SyncFailed); m.Status != statemachine.ToCutOver {
		t.Fatalf("sync: %q %s", m.Status, m.LastError)
	}
	stopSrc()
	return st, id, opt, f.cutAfter(t, stopSync, opt, opt)
}

// cutAfter returns what starts a cutover once the sync agent (stopSync)
// is stopped: the destination's agent with sync and cutover (dstOpt), and
// the source's with srcRoles (srcOpt).
func (f *fleet) cutAfter(t *testing.T, stopSync func(), dstOpt, srcOpt agentOpts) func(srcRoles ...statemachine.Role) {
	return func(srcRoles ...statemachine.Role) {
		t.Helper()
		stopSync()
		f.start(t, f.src, srcOpt, srcRoles...)
		f.start(t, f.dst, dstOpt, statemachine.RoleSync, statemachine.RoleCutover)
	}
}

// waitRestored waits (a minute at most) until the row says writes were
// blocked and then restored.
func (f *fleet) waitRestored(t *testing.T, id int64) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if m := f.row(t, id); !m.BlockedAt.IsZero() && m.UnblockedAt.After(m.BlockedAt) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("writes not restored a minute after the cutover started:\n%s", f.events(t, id))
		}
	}
}

// holdMySQLApply holds the destination's applier: a lock there on the
// site's writes table, to which a write at the source then goes. The
// caller releases it (UNLOCK TABLES) and closes the session.
func holdMySQLApply(t *testing.T, f *fleet, st site) *sql.Conn {
	t.Helper()
	lock, err := f.dst.root.Conn(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.ExecContext(ctx(t), "LOCK TABLES "+ident.QuoteMySQL(st.db)+".writes WRITE"); err != nil {
		t.Fatal(err)
	}
	if _, err := customer(t, f.src, st).ExecContext(ctx(t), "INSERT INTO writes (n) VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	return lock
}

// TestMySQLOnlineCatchUpTimeout: the destination's applier is held (a lock
// on the writer's table at the destination) when the cutover blocks
// writes: the catch-up times out, writes come back, the row goes back to
// syncing; once the lock goes the next cutover moves it.
func TestMySQLOnlineCatchUpTimeout(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	st, id, _, cut := syncedMySQL(t, f, "myslow", steps.Online{CutoverTimeout: 700 * time.Millisecond, CutoverAttempts: 3, CutoverBackoff: time.Second, LagEvery: 200 * time.Millisecond})
	f.dnsAgent(t) // after the plan: it serves the records of the rows planned by then
	lock := holdMySQLApply(t, f, st)
	cut(statemachine.RoleClose, statemachine.RoleRollback)
	f.waitEvent(t, id, "catch-up timed out")
	if err := canWrite(customer(t, f.src, st)); err != nil {
		t.Errorf("the owner cannot write after the timed-out cutover: %v", err)
	}
	if m := f.row(t, id); m.UnblockedAt.IsZero() {
		t.Errorf("writes not recorded as restored: %+v", m)
	}
	if _, err := lock.ExecContext(ctx(t), "UNLOCK TABLES"); err != nil {
		t.Fatal(err)
	}
	_ = lock.Close()
	m := f.waitStatus(t, id, statemachine.Done, statemachine.CutoverFailed, statemachine.SyncFailed, statemachine.CloseFailed)
	if m.Status != statemachine.Done || !strings.Contains(f.events(t, id), "Cutting over -> To sync") {
		t.Fatalf("after the lock went: %q %s\n%s", m.Status, m.LastError, f.events(t, id))
	}
}

// TestMySQLOnlineCutoverFailsForGood: the destination cannot catch up at
// the last cutover attempt: writes come back at the source and nothing of
// the row's stream (its position record, its streamer) or of its copy is
// left at the destination once the row says Cutover failed.
func TestMySQLOnlineCutoverFailsForGood(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	st, id, _, cut := syncedMySQL(t, f, "myfail", steps.Online{CutoverTimeout: 500 * time.Millisecond, CutoverAttempts: 1, LagEvery: 200 * time.Millisecond})
	if !f.myStream(t, id) {
		t.Fatal("no stream record at the destination while the row is synced")
	}
	lock := holdMySQLApply(t, f, st)
	defer func() { _ = lock.Close() }()
	cut(statemachine.RoleRollback)
	// Once writes are restored (the timeout), the lock goes: dropping the
	// copy would wait for it.
	f.waitRestored(t, id)
	if _, err := lock.ExecContext(ctx(t), "UNLOCK TABLES"); err != nil {
		t.Fatal(err)
	}
	m := f.waitStatus(t, id, statemachine.CutoverFailed, statemachine.Done, statemachine.ToSync)
	if m.Status != statemachine.CutoverFailed || !strings.Contains(m.LastError, "did not catch up") {
		t.Fatalf("row: %q %s\n%s", m.Status, m.LastError, f.events(t, id))
	}
	if f.myStream(t, id) {
		t.Errorf("the failed cutover left its stream record at the destination\n%s", f.events(t, id))
	}
	if databaseExists(t, f.dst, st.db) {
		t.Errorf("the failed cutover left the destination's copy")
	}
	if err := canWrite(customer(t, f.src, st)); err != nil {
		t.Errorf("the owner cannot write at the source after the failed cutover: %v", err)
	}
}

// TestMySQLOnlineNotConverging: a cutover times out (the destination's
// applier held) and, back to syncing, the stream's lag keeps growing under
// a writer: the row is reported as not converging (an event) and, having
// missed a catch-up already, fails one window later, its stream and copy
// removed, the source writable.
func TestMySQLOnlineNotConverging(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	st, id, _, cut := syncedMySQL(t, f, "mynoconv", steps.Online{CutoverTimeout: 500 * time.Millisecond, CutoverAttempts: 3, CutoverBackoff: time.Second,
		LagEvery: 200 * time.Millisecond, MaxLagBytes: 2048, ConvergeWindow: 3 * time.Second})
	lock := holdMySQLApply(t, f, st)
	defer func() { _ = lock.Close() }()
	// The customer writes all along (refused while blocked).
	w := customer(t, f.src, st)
	var wrote atomic.Int64
	var lastErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var n int64
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				wctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				// A number per attempt: one that committed without an
				// answer (its session ended) must not be tried again.
				n++
				if _, err := w.ExecContext(wctx, "INSERT INTO writes (n) VALUES (?)", 1_000_000+n); err == nil {
					wrote.Add(1)
				} else {
					lastErr.Store(err.Error())
				}
				cancel()
			}
		}
	})
	defer func() { close(stop); wg.Wait() }()
	cut(statemachine.RoleRollback)
	f.waitEvent(t, id, "catch-up timed out")
	f.waitEvent(t, id, statemachine.NotConvergingNote)
	// Writes came back after the timed-out cutover, for the sessions
	// opened while it blocked them too (they are ended at the unblock).
	if n := wrote.Load(); n < 20 {
		t.Errorf("the customer wrote %d rows (last refusal: %v)", n, lastErr.Load())
	}
	// Having missed a catch-up, the row fails one window after it says so:
	// its stream record goes first, then the lock (dropping the copy waits
	// for it).
	for deadline := time.Now().Add(time.Minute); f.myStream(t, id); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the stream is still there a minute after it was reported as not converging:\n%s", f.events(t, id))
		}
	}
	if _, err := lock.ExecContext(ctx(t), "UNLOCK TABLES"); err != nil {
		t.Fatal(err)
	}
	m := f.waitStatus(t, id, statemachine.SyncFailed, statemachine.Done, statemachine.CutoverFailed, statemachine.DNSToUpdate)
	if m.Status != statemachine.SyncFailed || !strings.Contains(m.LastError, "the stream is not converging (lag grew from") || !strings.Contains(m.LastError, "after 1 cutovers that timed out") {
		t.Fatalf("row: %q %s\n%s", m.Status, m.LastError, f.events(t, id))
	}
	if !strings.Contains(f.events(t, id), "source transactions/s") {
		t.Errorf("the not-converging note gives no apply rates:\n%s", f.events(t, id))
	}
	for deadline := time.Now().Add(30 * time.Second); f.myStream(t, id) || databaseExists(t, f.dst, st.db); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after the row failed: stream %v, copy %v\n%s", f.myStream(t, id), databaseExists(t, f.dst, st.db), f.events(t, id))
		}
	}
	if err := canWrite(customer(t, f.src, st)); err != nil {
		t.Errorf("the owner cannot write at the source: %v", err)
	}
}

// TestMySQLOnlineRollbackWhileSyncing: a row whose stream runs is rolled
// back by an operator: the sync step is fenced out, the rollback removes
// the stream record and the destination's copy, and the source
// never lost its writes.
func TestMySQLOnlineRollbackWhileSyncing(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	st := newMyOnlineSite(t, f, "myrb")
	id := f.planMode(t, statemachine.EngineMySQL, st.db, statemachine.ModeOnline)
	f.start(t, f.src, agentOpts{}, statemachine.RoleRollback)
	f.start(t, f.dst, agentOpts{}, statemachine.RoleSync)
	if m := f.waitStatus(t, id, statemachine.ToCutOver, statemachine.SyncFailed); m.Status != statemachine.ToCutOver {
		t.Fatalf("sync: %q %s", m.Status, m.LastError)
	}
	if _, err := f.state.Operate(ctx(t), id, statemachine.ActionRollback, "test", "changed our mind"); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	if m := f.waitStatus(t, id, statemachine.RolledBack, statemachine.RollbackFailed); m.Status != statemachine.RolledBack {
		t.Fatalf("%q %s\n%s", m.Status, m.LastError, f.events(t, id))
	}
	if f.myStream(t, id) || databaseExists(t, f.dst, st.db) || canWrite(customer(t, f.src, st)) != nil {
		t.Errorf("after the rollback: stream %v, copy %v", f.myStream(t, id), databaseExists(t, f.dst, st.db))
	}
}

// TestMySQLOnlinePurgedUnderTheStream: while the destination's agent is
// down, the source purges the binary log the stream still needs: the
// stream cannot go on (error 1236), the row syncs again from the start and
// moves to Done with every write. (A source of its own: purging would cut
// the other tests' streams.)
func TestMySQLOnlinePurgedUnderTheStream(t *testing.T) {
	f := newFleet(t)
	f.src = serverAs(t, "purgesrc")
	t.Parallel()
	st := newMyOnlineSite(t, f, "mypurge")
	id := f.planMode(t, statemachine.EngineMySQL, st.db, statemachine.ModeOnline)
	f.dnsAgent(t)
	opt := agentOpts{online: steps.Online{LagEvery: 200 * time.Millisecond}}
	stopSrc := f.start(t, f.src, opt, statemachine.RoleRollback) // publishes the source's address
	stopDst := f.start(t, f.dst, opt, statemachine.RoleSync)
	if m := f.waitStatus(t, id, statemachine.ToCutOver, statemachine.SyncFailed); m.Status != statemachine.ToCutOver {
		t.Fatalf("sync: %q %s", m.Status, m.LastError)
	}
	stopDst() // its streams stop with it
	stopSrc()
	owner := customer(t, f.src, st)
	for i := range 20 {
		if _, err := owner.ExecContext(ctx(t), "INSERT INTO writes (n) VALUES (?)", 5000+i); err != nil {
			t.Fatal(err)
		}
	}
	if err := fleettest.PurgeBinaryLogs(ctx(t), f.src.root); err != nil {
		t.Fatal(err)
	}
	onlineAgents(t, f, opt)
	m := f.waitStatus(t, id, statemachine.Done, statemachine.SyncFailed, statemachine.CutoverFailed, statemachine.CloseFailed)
	if m.Status != statemachine.Done {
		t.Fatalf("after the purge: %q %s\n%s", m.Status, m.LastError, f.events(t, id))
	}
	if ev := f.events(t, id); !strings.Contains(ev, "no longer has the binary log") || !strings.Contains(ev, "from the start") {
		t.Errorf("the purge is not told:\n%s", ev)
	}
	dst := numbersAt(t, f.dst, st.db)
	for i := range 20 {
		if !dst[int64(5000+i)] {
			t.Errorf("write %d is not at the destination", 5000+i)
		}
	}
	if f.myStream(t, id) {
		t.Error("the stream record is left")
	}
}

// newMyHotSite is newMyOnlineSite with 20,000 items (verification by keys
// starts at 10,000 rows) and an updater that keeps rewriting them through
// the sync, as the site's owner (stop ends it).
func newMyHotSite(t *testing.T, f *fleet, prefix string) (st site, stop func()) {
	t.Helper()
	st = newMyOnlineSite(t, f, prefix)
	q := ident.QuoteMySQL(st.db)
	exec(t, f.src.root, fmt.Sprintf("INSERT INTO %s.items SELECT seq, CONCAT('item ', seq), RANDOM_BYTES(64) FROM %s.seq_%d_to_20000", q, q, st.rows+1))
	owner := customer(t, f.src, st)
	stop = keepUpdating(func(i int) error {
		// Ids 1 + i·7919 mod 20000: never 12346 for the i reached.
		_, err := owner.ExecContext(context.Background(), "UPDATE items SET name = ? WHERE id = ?", fmt.Sprintf("updated %d", i), 1+i*7919%20000)
		return err
	})
	t.Cleanup(stop)
	return st, stop
}

// TestMySQLOnlineVerifiedByKeys: a table updated all the time through the
// sync is verified by keys while streaming; once the updates stop, a row
// is written at the source and the stream's write of it is corrupted at
// the destination (a trigger there, as a faulty applier would): the cutover
// compares only the rows written since (not the table whole), finds that
// one, and fails the row with writes restored and nothing of the stream
// left.
func TestMySQLOnlineVerifiedByKeys(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	st, stopUpdates := newMyHotSite(t, f, "mybykeys")
	id := f.planMode(t, statemachine.EngineMySQL, st.db, statemachine.ModeOnline)
	opt := agentOpts{online: steps.Online{LagEvery: 200 * time.Millisecond}}
	stopSrc := f.start(t, f.src, opt, statemachine.RoleRollback) // publishes the source's address
	stopSync := f.start(t, f.dst, opt, statemachine.RoleSync)
	if m := f.waitStatus(t, id, statemachine.ToCutOver, statemachine.SyncFailed); m.Status != statemachine.ToCutOver {
		t.Fatalf("sync: %q %s", m.Status, m.LastError)
	}
	stopSrc()
	stopUpdates()
	if ev := f.events(t, id); !strings.Contains(ev, "1 tables written meanwhile compared by keys (20000 rows") {
		t.Fatalf("the written table was not compared by keys:\n%s", ev)
	}
	q := ident.QuoteMySQL(st.db)
	exec(t, f.dst.root, "CREATE TRIGGER "+q+".corrupt BEFORE UPDATE ON "+q+".items FOR EACH ROW SET NEW.body = 'corrupted'")
	exec(t, f.src.root, "UPDATE "+q+".items SET name = 'written after' WHERE id = 12346")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var body string
		if err := f.dst.root.QueryRow("SELECT body FROM " + q + ".items WHERE id = 12346 AND name = 'written after'").Scan(&body); err == nil && body == "corrupted" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the stream did not apply the write to row 12346")
		}
	}
	exec(t, f.dst.root, "DROP TRIGGER "+q+".corrupt")
	f.cutAfter(t, stopSync, opt, opt)(statemachine.RoleRollback)
	m := f.waitStatus(t, id, statemachine.CutoverFailed, statemachine.DNSToUpdate)
	if m.Status != statemachine.CutoverFailed || !strings.Contains(m.LastError, "table items") || !strings.Contains(m.LastError, "row 12346 differs") {
		t.Fatalf("cutover: %q %s\n%s", m.Status, m.LastError, f.events(t, id))
	}
	if !strings.Contains(m.LastError, "rows written since it was verified while streaming") {
		t.Errorf("the cutover did not compare by keys: %s", m.LastError)
	}
	if f.myStream(t, id) {
		t.Error("the stream record is left")
	}
	if err := canWrite(customer(t, f.src, st)); err != nil {
		t.Errorf("the owner cannot write at the source after the failed cutover: %v", err)
	}
}

// TestMySQLOnlineByKeysLateWrite: a table verified by keys at the cutover
// (its checksum not taken then) is still checked by the close: a write at
// the source after the cutover (root's: the block does not stop it) stops
// it; without one the row is Done with every row at the destination.
func TestMySQLOnlineByKeysLateWrite(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	st, stopUpdates := newMyHotSite(t, f, "mybykeyslate")
	defer stopUpdates()
	id := f.planMode(t, statemachine.EngineMySQL, st.db, statemachine.ModeOnline)
	opt := agentOpts{online: steps.Online{LagEvery: 200 * time.Millisecond}}
	onlineAgents(t, f, opt)
	if m := f.waitStatus(t, id, statemachine.DNSToUpdate, statemachine.SyncFailed, statemachine.CutoverFailed); m.Status != statemachine.DNSToUpdate {
		t.Fatalf("%q %s\n%s", m.Status, m.LastError, f.events(t, id))
	}
	if ev := f.events(t, id); !strings.Contains(ev, "tables compared by keys") || !strings.Contains(ev, "1 by keys") {
		t.Errorf("the cutover did not compare the written table by keys:\n%s", ev)
	}
	if a, b := contents(t, f.src, st.db, "items"), contents(t, f.dst, st.db, "items"); a != b {
		t.Errorf("items differ between the source and the destination after the cutover")
	}
	exec(t, f.src.root, "UPDATE "+ident.QuoteMySQL(st.db)+".items SET name = 'late' WHERE id = 3")
	f.dnsAgent(t)
	m := f.waitStatus(t, id, statemachine.CloseFailed, statemachine.Done)
	if m.Status != statemachine.CloseFailed || !strings.Contains(m.LastError, "rows of items were written at the source after the cutover verified it") {
		t.Fatalf("close: %q %q", m.Status, m.LastError)
	}
}

// TestMySQLOnlineTruncateDuringSync: a TRUNCATE at the source after the
// tables were verified while streaming is logged as a statement, which the
// stream does not apply: the cutover must not take the table as unchanged.
// It reads it whole, finds the destination still has the rows, fails the
// row with writes restored and the copy removed; a retry syncs again and
// moves it with the table empty at the destination too.
func TestMySQLOnlineTruncateDuringSync(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	st, id, _, cut := syncedMySQL(t, f, "mytrunc", steps.Online{LagEvery: 200 * time.Millisecond})
	if _, err := customer(t, f.src, st).ExecContext(ctx(t), "TRUNCATE TABLE items"); err != nil {
		t.Fatal(err)
	}
	f.dnsAgent(t)
	cut(statemachine.RoleClose, statemachine.RoleRollback)
	m := f.waitStatus(t, id, statemachine.CutoverFailed, statemachine.DNSToUpdate, statemachine.Done)
	if m.Status != statemachine.CutoverFailed || !strings.Contains(m.LastError, "items") {
		t.Fatalf("cutover after a TRUNCATE: %q %s\n%s", m.Status, m.LastError, f.events(t, id))
	}
	if err := canWrite(customer(t, f.src, st)); err != nil || f.myStream(t, id) || databaseExists(t, f.dst, st.db) {
		t.Errorf("after the failed cutover: source write %v, stream %v, copy %v", err, f.myStream(t, id), databaseExists(t, f.dst, st.db))
	}
	if _, err := f.state.Operate(ctx(t), id, statemachine.ActionRetry, "test", "retry"); err != nil {
		t.Fatal(err)
	}
	if m := f.waitStatus(t, id, statemachine.Done, statemachine.SyncFailed, statemachine.CutoverFailed, statemachine.CloseFailed); m.Status != statemachine.Done {
		t.Fatalf("after the retry: %q %s\n%s", m.Status, m.LastError, f.events(t, id))
	}
	if n := contents(t, f.dst, st.db, "items"); n != "" {
		t.Errorf("items at the destination after the retry: %.200s", n)
	}
}
