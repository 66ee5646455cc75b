package steps_test

import (
	"context"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fleetmigrate/fleetmigrate/agent/steps"
	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// newPGOnlineSite is a customer's database that can stream: tables with
// primary keys (one referencing another), a serial, a table with replica
// identity FULL and no key, and no large objects.
func newPGOnlineSite(t *testing.T, f *fleet, prefix string, rows int) pgSite {
	t.Helper()
	n := seq.Add(1)
	st := pgSiteNamed(t, f, prefix, n)
	fleettest.PGExec(t, f.src.pg.Root(t, "postgres"),
		"CREATE ROLE "+qp(st.owner)+" LOGIN PASSWORD "+ident.QuotePostgresLiteral(st.pass),
		"CREATE DATABASE "+qp(st.db)+" OWNER "+qp(st.owner))
	// The session ends at once: its statistics (the tables' change
	// counters) are flushed then, not up to seconds later.
	setup := f.src.pg.Connect(t, st.db, st.owner, st.pass)
	defer func() { _ = setup.Close(context.Background()) }()
	fleettest.PGExec(t, setup,
		"CREATE TABLE items (id serial PRIMARY KEY, name text, body bytea)",
		fmt.Sprintf("INSERT INTO items (name, body) SELECT 'item ' || g || ' ✓', decode(md5(g::text), 'hex') FROM generate_series(1, %d) g", rows),
		"CREATE TABLE writes (n bigint PRIMARY KEY, item int REFERENCES items (id), at timestamptz DEFAULT now())",
		"CREATE TABLE log (line text)",
		"ALTER TABLE log REPLICA IDENTITY FULL",
		"INSERT INTO log VALUES ('one'), ('two')")
	return st
}

// writer inserts numbered rows into writes through whatever server the
// row's DNS name points at, as a customer's application would, and
// remembers which were acknowledged and when writes were refused.
type writer struct {
	mu           sync.Mutex
	acked        []int64
	firstRefused time.Time
	firstAtDst   time.Time
	stop, done   chan struct{}
	lastErr      string
}

func startWriter(t *testing.T, f *fleet, id int64, st pgSite, every time.Duration) *writer {
	t.Helper()
	w := &writer{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		var c *pgx.Conn
		var at *server
		n := int64(0)
		for {
			select {
			case <-w.stop:
				if c != nil {
					_ = c.Close(context.Background())
				}
				return
			case <-time.After(every):
			}
			if c == nil {
				at = f.src
				if m, err := f.state.Get(context.Background(), id); err == nil && !m.SwitchedAt.IsZero() {
					at = f.dst // what the DNS name resolves to now
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				var err error
				c, err = at.pg.Dial(ctx, st.db, st.owner, st.pass)
				cancel()
				if err != nil {
					w.refused(fmt.Errorf("connect to %s: %w", at.host, err))
					c = nil
					continue
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := c.Exec(ctx, "INSERT INTO writes (n, item) VALUES ($1, 1)", n+1)
			cancel()
			if err != nil {
				w.refused(err)
				_ = c.Close(context.Background())
				c = nil
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

func (w *writer) refused(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.firstRefused.IsZero() {
		w.firstRefused = time.Now()
	}
	w.lastErr = err.Error()
}

// finish stops the writer once it has written at the destination.
func (w *writer) finish(t *testing.T) {
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
		t.Fatalf("the writer never wrote at the destination (last error %s)", w.lastErr)
	}
}

// numbers reads the writes' numbers at a server.
func numbers(t *testing.T, c *pgx.Conn) map[int64]bool {
	t.Helper()
	rs, err := c.Query(ctx(t), "SELECT n FROM writes")
	if err != nil {
		t.Fatal(err)
	}
	ns, err := pgx.CollectRows(rs, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]bool{}
	for _, n := range ns {
		out[n] = true
	}
	return out
}

// pgStreams lists what of row id's stream exists at either server.
func (f *fleet) pgStreams(t *testing.T, id int64) []string {
	t.Helper()
	name := engine.StreamName(id, f.row(t, id).DatabaseName)
	var out []string
	var n int
	if err := f.src.pg.Root(t, "postgres").QueryRow(ctx(t), "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n > 0 {
		out = append(out, "slot at the source")
	}
	if err := f.dst.pg.Root(t, "postgres").QueryRow(ctx(t), "SELECT count(*) FROM pg_subscription WHERE subname = $1", name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n > 0 {
		out = append(out, "subscription at the destination")
	}
	rs, err := f.src.pg.Root(t, "postgres").Query(ctx(t), "SELECT datname FROM pg_database WHERE datallowconn AND datname <> 'template1'")
	if err != nil {
		t.Fatal(err)
	}
	dbs, err := pgx.CollectRows(rs, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, db := range dbs {
		c, err := f.src.pg.Dial(ctx(t), db, "postgres", f.src.pg.Password)
		if err != nil {
			continue // dropped meanwhile by another test
		}
		err = c.QueryRow(ctx(t), "SELECT count(*) FROM pg_publication WHERE pubname = $1", name).Scan(&n)
		_ = c.Close(ctx(t))
		if err == nil && n > 0 {
			out = append(out, "publication in "+db)
		}
	}
	return out
}

func onlineAgents(t *testing.T, f *fleet, opt agentOpts) {
	t.Helper()
	f.start(t, f.src, opt, statemachine.RoleClose, statemachine.RoleRollback)
	f.start(t, f.dst, opt, statemachine.RoleSync, statemachine.RoleDump, statemachine.RoleImport, statemachine.RoleCutover)
}

// TestPostgresOnlineToDone moves a database online under a steady writer
// that goes through the row's DNS name: every acknowledged write is at the
// destination, nothing was accepted at the source that is not, the
// sequence continues, the stream is gone and the dump is in the store.
func TestPostgresOnlineToDone(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	st := newPGOnlineSite(t, f, "pgonline", 20000)
	bench := startPgbench(t, f, st)
	id := f.planMode(t, statemachine.EnginePostgres, st.db, statemachine.ModeOnline)
	f.dnsAgent(t)
	w := startWriter(t, f, id, st, 5*time.Millisecond)
	onlineAgents(t, f, agentOpts{})
	m := f.waitStatus(t, id, statemachine.Done, statemachine.SyncFailed, statemachine.CutoverFailed, statemachine.DNSFailed, statemachine.CloseFailed)
	w.finish(t)
	bench()
	if m.Status != statemachine.Done {
		t.Fatalf("row ended %q: %s\n%s", m.Status, m.LastError, f.events(t, id))
	}
	events := f.events(t, id)
	for _, want := range []string{"streaming from source", "caught up", "cutover: blocking writes", "cut over in", "tables verified now", "stream removed", "dumped", "source closed"} {
		if !strings.Contains(events, want) {
			t.Errorf("events do not mention %q:\n%s", want, events)
		}
	}
	if m.Mode != statemachine.ModeOnline || m.DumpURL == "" || m.DumpSHA256 == "" || m.BlockedAt.IsZero() || m.SwitchedAt.IsZero() {
		t.Errorf("row fields: %+v", m)
	}
	dst := numbers(t, f.dst.pg.Root(t, st.db))
	src := numbers(t, f.src.pg.Root(t, st.db))
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
	window := w.firstAtDst.Sub(w.firstRefused)
	t.Logf("%d writes acknowledged, %d at the source; writer's window %s; row blocked %s", len(w.acked), len(src), window.Round(time.Millisecond), m.SwitchedAt.Sub(m.BlockedAt).Round(time.Millisecond))
	// The sequence continues at the destination.
	var next int
	if err := f.dst.pg.Connect(t, st.db, st.owner, st.pass).QueryRow(ctx(t), "INSERT INTO items (name) VALUES ('after') RETURNING id").Scan(&next); err != nil || next != 20001 {
		t.Errorf("insert at the destination got id %d (%v), want 20001", next, err)
	}
	if left := f.pgStreams(t, id); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	// pgbench's transactions: the same at both servers.
	q := "SELECT (SELECT count(*) FROM pgbench_history) || ' ' || (SELECT sum(abalance) FROM pgbench_accounts)"
	var atSrc, atDst string
	if err := f.src.pg.Root(t, st.db).QueryRow(ctx(t), q).Scan(&atSrc); err != nil {
		t.Fatal(err)
	}
	if err := f.dst.pg.Root(t, st.db).QueryRow(ctx(t), q).Scan(&atDst); err != nil {
		t.Fatal(err)
	}
	if atSrc != atDst || strings.HasPrefix(atSrc, "0 ") {
		t.Errorf("pgbench history and balances: %s at the source, %s at the destination", atSrc, atDst)
	}
	t.Logf("pgbench: history rows and balance sum %s at both", atDst)
}

// startPgbench initialises pgbench's tables in the site (its history
// table, which has no key, given REPLICA IDENTITY FULL as a customer
// would) and runs `pgbench -N` against the source as the owner, 100
// transactions/s, until the block ends its sessions; stop waits for it.
func startPgbench(t *testing.T, f *fleet, st pgSite) (stop func()) {
	t.Helper()
	bin, err := fleettest.PostgresBinDir()
	if err != nil {
		t.Fatal(err)
	}
	esc := strings.NewReplacer(`\`, `\\`, `:`, `\:`)
	pass := filepath.Join(t.TempDir(), "pgpass")
	if err := os.WriteFile(pass, []byte(fmt.Sprintf("*:*:*:%s:%s\n", esc.Replace(st.owner), esc.Replace(st.pass))), 0o600); err != nil {
		t.Fatal(err)
	}
	args := func(extra ...string) []string {
		return append([]string{"-h", f.src.pg.Host, "-p", fmt.Sprint(f.src.pg.Port), "-U", st.owner}, append(extra, st.db)...)
	}
	env := append(os.Environ(), "PGPASSFILE="+pass, "PGSSLMODE=disable")
	init := osexec.Command(filepath.Join(bin, "pgbench"), args("-i", "-s", "1", "-q")...)
	init.Env = env
	if out, err := init.CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	fleettest.PGExec(t, f.src.pg.Root(t, st.db), "ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
	run := osexec.Command(filepath.Join(bin, "pgbench"), args("-n", "-N", "-c", "2", "-j", "1", "-R", "100", "-T", "300")...)
	run.Env = env
	var out strings.Builder
	run.Stdout, run.Stderr = &out, &out
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = run.Wait(); close(done) }()
	t.Cleanup(func() { _ = run.Process.Kill(); <-done })
	return func() {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("pgbench still running after the cutover:\n%s", out.String())
		}
	}
}

// waitEvent waits until row id's events mention want.
func (f *fleet) waitEvent(t *testing.T, id int64, want string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(f.events(t, id), want) {
		if time.Now().After(deadline) {
			m := f.row(t, id)
			t.Fatalf("row %d (%q, %q) never said %q:\n%s", id, m.Status, m.LastError, want, f.events(t, id))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPostgresOnlineRefusesWhatItCannotCarry: mode online refuses a
// database with a table without a key (naming it) before anything
// changes, and its UPDATE and DELETE keep working at the source; mode auto
// moves a database with large objects in dump mode, saying why.
func TestPostgresOnlineRefusesWhatItCannotCarry(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	keyless := newPGOnlineSite(t, f, "pgkeyless", 10)
	fleettest.PGExec(t, f.src.pg.Connect(t, keyless.db, keyless.owner, keyless.pass), "CREATE TABLE bare (x int)", "INSERT INTO bare VALUES (1), (2)")
	withLO := newPGSite(t, f, "pgautolo")
	refused := f.planMode(t, statemachine.EnginePostgres, keyless.db, statemachine.ModeOnline)
	auto := f.planMode(t, statemachine.EnginePostgres, withLO.db, statemachine.ModeAuto)
	f.dnsAgent(t)
	onlineAgents(t, f, agentOpts{})
	m := f.waitStatus(t, refused, statemachine.SyncFailed, statemachine.ToCutOver, statemachine.Done)
	if m.Status != statemachine.SyncFailed || !strings.Contains(m.LastError, `"public"."bare"`) || !strings.Contains(m.LastError, "nothing was changed") {
		t.Errorf("online with a keyless table: %q %q", m.Status, m.LastError)
	}
	if !m.BlockedAt.IsZero() {
		t.Error("the refused row blocked writes")
	}
	fleettest.PGExec(t, f.src.pg.Connect(t, keyless.db, keyless.owner, keyless.pass), "UPDATE bare SET x = 3 WHERE x = 1", "DELETE FROM bare WHERE x = 2")
	if left := f.pgStreams(t, refused); len(left) > 0 {
		t.Errorf("the refused row left %v", left)
	}
	m = f.waitStatus(t, auto, statemachine.Done, statemachine.DumpFailed, statemachine.ImportFailed, statemachine.SyncFailed, statemachine.CloseFailed)
	if m.Status != statemachine.Done || m.Mode != statemachine.ModeDump {
		t.Fatalf("auto with large objects: %q mode %q %s\n%s", m.Status, m.Mode, m.LastError, f.events(t, auto))
	}
	if ev := f.events(t, auto); !strings.Contains(ev, "auto: dump mode") || !strings.Contains(ev, "1 large objects") {
		t.Errorf("auto does not say why it dumped:\n%s", ev)
	}
}

// TestPostgresOnlineDDLDuringSync: a keyless table the customer creates
// during the sync keeps taking UPDATE and DELETE at the source (it is not
// in the publication); the cutover sees the schema changed, refuses with
// writes restored and the stream and the destination's copy removed; once
// the customer gives the table a key, a retry syncs again and moves it.
func TestPostgresOnlineDDLDuringSync(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	st := newPGOnlineSite(t, f, "pgddl", 1000)
	id := f.planMode(t, statemachine.EnginePostgres, st.db, statemachine.ModeOnline)
	stopSync := f.start(t, f.dst, agentOpts{}, statemachine.RoleSync)
	stopSrc := f.start(t, f.src, agentOpts{}, statemachine.RoleRollback) // registers the source's address
	if m := f.waitStatus(t, id, statemachine.ToCutOver, statemachine.SyncFailed); m.Status != statemachine.ToCutOver {
		t.Fatalf("sync: %q %s", m.Status, m.LastError)
	}
	owner := f.src.pg.Connect(t, st.db, st.owner, st.pass)
	fleettest.PGExec(t, owner, "CREATE TABLE later (x int)", "INSERT INTO later VALUES (1), (2)", "UPDATE later SET x = 5 WHERE x = 1", "DELETE FROM later WHERE x = 2")
	stopSrc()
	f.dnsAgent(t)
	f.cutAfter(t, stopSync, agentOpts{}, agentOpts{})(statemachine.RoleClose)
	m := f.waitStatus(t, id, statemachine.CutoverFailed, statemachine.DNSToUpdate, statemachine.Done)
	if m.Status != statemachine.CutoverFailed || !strings.Contains(m.LastError, "changed during the sync") || !strings.Contains(m.LastError, `tables created: "public"."later"`) {
		t.Fatalf("cutover after DDL: %q %q", m.Status, m.LastError)
	}
	// The schema is checked before writes are blocked: they never were.
	if !m.BlockedAt.IsZero() || !strings.Contains(m.LastError, "before blocking writes") {
		t.Errorf("writes blocked for a cutover refused on its schema: blocked %v unblocked %v (%s)", m.BlockedAt, m.UnblockedAt, m.LastError)
	}
	if err := pgWrite(f.src.pg.Connect(t, st.db, st.owner, st.pass)); err != nil {
		t.Errorf("the owner cannot write after the refused cutover: %v", err)
	}
	if left := f.pgStreams(t, id); len(left) > 0 {
		t.Errorf("the refused cutover left %v", left)
	}
	var n int
	if err := f.dst.pg.Root(t, "postgres").QueryRow(ctx(t), "SELECT count(*) FROM pg_database WHERE datname = $1", st.db).Scan(&n); err != nil || n != 0 {
		t.Errorf("the destination's copy is still there (%d, %v)", n, err)
	}
	fleettest.PGExec(t, f.src.pg.Connect(t, st.db, st.owner, st.pass), "ALTER TABLE later ADD PRIMARY KEY (x)")
	if _, err := f.state.Operate(ctx(t), id, statemachine.ActionRetry, "test", "key added"); err != nil {
		t.Fatal(err)
	}
	m = f.waitStatus(t, id, statemachine.Done, statemachine.SyncFailed, statemachine.CutoverFailed, statemachine.CloseFailed)
	if m.Status != statemachine.Done {
		t.Fatalf("retry after DDL: %q %s\n%s", m.Status, m.LastError, f.events(t, id))
	}
	var x int
	if err := f.dst.pg.Root(t, st.db).QueryRow(ctx(t), "SELECT x FROM later").Scan(&x); err != nil || x != 5 {
		t.Errorf("the new table at the destination: %d, %v", x, err)
	}
}

// syncedBehindProxy syncs a new online site's row with the destination
// reaching the source through a proxy (which a test pauses to hold the
// stream), and returns once the row is To cut over, with no cutover agent
// running; opt is the source agent's options (the proxy published as the
// source's address).
func syncedBehindProxy(t *testing.T, f *fleet, prefix string, online steps.Online) (pgSite, int64, *fleettest.Proxy, agentOpts, func(...statemachine.Role)) {
	t.Helper()
	st := newPGOnlineSite(t, f, prefix, 1000)
	proxy, err := fleettest.StartProxy(f.src.pg.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	id := f.planMode(t, statemachine.EnginePostgres, st.db, statemachine.ModeOnline)
	opt := agentOpts{online: online, pgEndpoint: proxy.Addr}
	stopSync := f.start(t, f.dst, agentOpts{online: online}, statemachine.RoleSync)
	stopSrc := f.start(t, f.src, opt, statemachine.RoleRollback) // publishes the proxy as the source's address
	if m := f.waitStatus(t, id, statemachine.ToCutOver, statemachine.SyncFailed); m.Status != statemachine.ToCutOver {
		t.Fatalf("sync: %q %s", m.Status, m.LastError)
	}
	stopSrc()
	return st, id, proxy, opt, f.cutAfter(t, stopSync, agentOpts{online: online}, opt)
}

// TestPostgresOnlineCatchUpTimeout: the stream to the destination is held
// (its apply waits on a lock at the destination) when the cutover blocks
// writes:
// the catch-up times out, writes come back, the row goes back to syncing;
// once the stream flows again the next cutover moves it.
func TestPostgresOnlineCatchUpTimeout(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	st, id, _, _, cut := syncedBehindProxy(t, f, "pgslowdst", steps.Online{CutoverTimeout: 700 * time.Millisecond, CutoverAttempts: 3, CutoverBackoff: time.Second, LagEvery: 200 * time.Millisecond})
	release := holdPGApply(t, f, st)
	f.dnsAgent(t)
	cut(statemachine.RoleClose)
	f.waitEvent(t, id, "catch-up timed out")
	if err := pgWrite(f.src.pg.Connect(t, st.db, st.owner, st.pass)); err != nil {
		t.Errorf("the owner cannot write after the timed-out cutover: %v", err)
	}
	if m := f.row(t, id); m.UnblockedAt.IsZero() {
		t.Errorf("writes not recorded as restored: %+v", m)
	}
	release()
	m := f.waitStatus(t, id, statemachine.Done, statemachine.CutoverFailed, statemachine.SyncFailed, statemachine.CloseFailed)
	if m.Status != statemachine.Done {
		t.Fatalf("after the stream flows again: %q %s\n%s", m.Status, m.LastError, f.events(t, id))
	}
	if !strings.Contains(f.events(t, id), "Cutting over -> To sync") {
		t.Errorf("the row did not go back to syncing:\n%s", f.events(t, id))
	}
	var n int
	if err := f.dst.pg.Root(t, st.db).QueryRow(ctx(t), "SELECT count(*) FROM items WHERE name = 'still here?'").Scan(&n); err != nil || n != 1 {
		t.Errorf("the write made between the cutovers is not at the destination: %d, %v", n, err)
	}
}

// TestPostgresOnlineCutoverFailsForGood: the stream is held (its apply
// waits on a lock at the destination) at the last cutover attempt: writes come
// back and neither the slot and publication at the source nor the
// subscription and copy at the destination are left once the row says
// Cutover failed.
func TestPostgresOnlineCutoverFailsForGood(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	st, id, _, _, cut := syncedBehindProxy(t, f, "pgfaildst", steps.Online{CutoverTimeout: 500 * time.Millisecond, CutoverAttempts: 1, LagEvery: 200 * time.Millisecond})
	if left := f.pgStreams(t, id); len(left) < 2 {
		t.Fatalf("the synced row's stream is not there: %v", left)
	}
	release := holdPGApply(t, f, st)
	cut(statemachine.RoleRollback)
	// Once writes are restored (the timeout), the lock goes: dropping the
	// copy would wait for it.
	f.waitRestored(t, id)
	release()
	m := f.waitStatus(t, id, statemachine.CutoverFailed, statemachine.Done, statemachine.ToSync)
	if m.Status != statemachine.CutoverFailed || !strings.Contains(m.LastError, "did not catch up") {
		t.Fatalf("row: %q %s\n%s", m.Status, m.LastError, f.events(t, id))
	}
	if left := f.pgStreams(t, id); len(left) > 0 {
		t.Errorf("the failed cutover left %v\n%s", left, f.events(t, id))
	}
	var n int
	if err := f.dst.pg.Root(t, "postgres").QueryRow(ctx(t), "SELECT count(*) FROM pg_database WHERE datname = $1", st.db).Scan(&n); err != nil || n != 0 {
		t.Errorf("the failed cutover left the destination's copy: %d, %v", n, err)
	}
	if err := pgWrite(f.src.pg.Connect(t, st.db, st.owner, st.pass)); err != nil {
		t.Errorf("the owner cannot write at the source after the failed cutover: %v", err)
	}
}

// holdPGApply holds the destination's apply of st's stream: a lock there
// on items that writes wait for (reads do not), and a write at the source
// to apply. The returned function releases it.
func holdPGApply(t *testing.T, f *fleet, st pgSite) (release func()) {
	t.Helper()
	c := f.dst.pg.Root(t, st.db)
	tx, err := c.Begin(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx(t), "LOCK TABLE items IN SHARE MODE"); err != nil {
		t.Fatal(err)
	}
	fleettest.PGExec(t, f.src.pg.Connect(t, st.db, st.owner, st.pass), "INSERT INTO items (name) VALUES ('held')")
	var once sync.Once
	release = func() {
		once.Do(func() {
			if err := tx.Commit(context.Background()); err != nil {
				t.Errorf("release the lock: %v", err)
			}
		})
	}
	t.Cleanup(release)
	return release
}

// TestPostgresOnlineRollbackAndCancelWhileSyncing: rows whose stream is
// copying (throttled) are rolled back and cancelled by an operator: the
// sync step is fenced out, the rollback removes the slot, the publication,
// the subscription and the destination's copy, and the source never lost
// its writes.
func TestPostgresOnlineRollbackAndCancelWhileSyncing(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	a := newPGOnlineSite(t, f, "pgrbsync", 20000)
	b := newPGOnlineSite(t, f, "pgcancelsync", 20000)
	proxy, err := fleettest.StartProxy(f.src.pg.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	proxy.Slow(20 << 10)
	opt := agentOpts{online: steps.Online{LagEvery: 200 * time.Millisecond}, pgEndpoint: proxy.Addr}
	ids := []int64{f.planMode(t, statemachine.EnginePostgres, a.db, statemachine.ModeOnline), f.planMode(t, statemachine.EnginePostgres, b.db, statemachine.ModeOnline)}
	f.start(t, f.src, opt, statemachine.RoleRollback)
	f.start(t, f.dst, agentOpts{online: opt.online}, statemachine.RoleSync)
	for i, action := range []string{statemachine.ActionRollback, statemachine.ActionCancel} {
		f.waitEvent(t, ids[i], "syncing: initial copy")
		if _, err := f.state.Operate(ctx(t), ids[i], action, "test", "changed our mind"); err != nil {
			t.Fatalf("%s while syncing: %v", action, err)
		}
	}
	for i, site := range []pgSite{a, b} {
		m := f.waitStatus(t, ids[i], statemachine.RolledBack, statemachine.RollbackFailed)
		if m.Status != statemachine.RolledBack {
			t.Fatalf("row %d: %q %s\n%s", ids[i], m.Status, m.LastError, f.events(t, ids[i]))
		}
		if left := f.pgStreams(t, ids[i]); len(left) > 0 {
			t.Errorf("row %d left %v", ids[i], left)
		}
		var n int
		if err := f.dst.pg.Root(t, "postgres").QueryRow(ctx(t), "SELECT count(*) FROM pg_database WHERE datname = $1", site.db).Scan(&n); err != nil || n != 0 {
			t.Errorf("row %d: the destination's copy is still there (%d, %v)", ids[i], n, err)
		}
		if err := pgWrite(f.src.pg.Connect(t, site.db, site.owner, site.pass)); err != nil {
			t.Errorf("row %d: the owner cannot write: %v", ids[i], err)
		}
	}
}

// TestPostgresOnlineLateWriteStopsClose: a superuser's write at the source
// after the cutover (the block does not stop superusers) is found by the
// close, whose consistency-point dump differs from what the destination
// was verified to have.
func TestPostgresOnlineLateWriteStopsClose(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	st := newPGOnlineSite(t, f, "pgonlinelate", 500)
	id := f.planMode(t, statemachine.EnginePostgres, st.db, statemachine.ModeOnline)
	onlineAgents(t, f, agentOpts{})
	if m := f.waitStatus(t, id, statemachine.DNSToUpdate, statemachine.SyncFailed, statemachine.CutoverFailed); m.Status != statemachine.DNSToUpdate {
		t.Fatalf("%q %s", m.Status, m.LastError)
	}
	if ev := f.events(t, id); !strings.Contains(ev, "verified while streaming: 3 of 3 tables") || !strings.Contains(ev, "3 unchanged since verified while streaming") {
		t.Errorf("the cutover re-read tables that did not change:\n%s", ev)
	}
	fleettest.PGExec(t, f.src.pg.Root(t, st.db), "INSERT INTO items (id, name) VALUES (999999, 'late')")
	f.dnsAgent(t)
	m := f.waitStatus(t, id, statemachine.CloseFailed, statemachine.Done)
	if m.Status != statemachine.CloseFailed || !strings.Contains(m.LastError, "writes reached the source after the cutover (writes blocked since 20") ||
		!strings.Contains(m.LastError, `"public"."items": 501 rows, 500 expected`) {
		t.Fatalf("close: %q %q", m.Status, m.LastError)
	}
}

// TestPostgresOnlineStalledStreamIsMadeAgain: a stream that stops making
// progress while it syncs (here its subscription disabled by hand at the
// destination during a slowed initial copy: no worker copies or applies)
// is removed and made again from the start after the stall timeout; the
// row then moves to Done and nothing of either stream is left.
func TestPostgresOnlineStalledStreamIsMadeAgain(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	st := newPGOnlineSite(t, f, "pgstall", 20000)
	proxy, err := fleettest.StartProxy(f.src.pg.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	proxy.Slow(200 << 10)
	id := f.planMode(t, statemachine.EnginePostgres, st.db, statemachine.ModeOnline)
	// Above PostgreSQL's wal_retrieve_retry_interval (5 s): the launcher
	// may wait that long to start the remade subscription's apply worker,
	// which a 5 s stall timeout took for a second stall (seen once).
	opt := agentOpts{online: steps.Online{LagEvery: 200 * time.Millisecond, StallTimeout: 8 * time.Second}, pgEndpoint: proxy.Addr}
	f.dnsAgent(t)
	f.start(t, f.src, opt, statemachine.RoleClose, statemachine.RoleRollback)
	f.start(t, f.dst, agentOpts{online: opt.online}, statemachine.RoleSync, statemachine.RoleDump, statemachine.RoleImport, statemachine.RoleCutover)
	f.waitEvent(t, id, "syncing: initial copy")
	fleettest.PGExec(t, f.dst.pg.Root(t, st.db), "ALTER SUBSCRIPTION "+qp(engine.StreamName(id, st.db))+" DISABLE")
	f.waitEvent(t, id, "the stream made no progress for 8s")
	proxy.Slow(0)
	m := f.waitStatus(t, id, statemachine.Done, statemachine.SyncFailed, statemachine.CutoverFailed, statemachine.CloseFailed)
	if m.Status != statemachine.Done {
		t.Fatalf("after the stall: %q %s\n%s", m.Status, m.LastError, f.events(t, id))
	}
	if ev := f.events(t, id); !strings.Contains(ev, "syncing again from the start (1 of 2)") {
		t.Errorf("the stalled stream was not made again:\n%s", ev)
	}
	var n int
	if err := f.dst.pg.Connect(t, st.db, st.owner, st.pass).QueryRow(ctx(t), "SELECT count(*) FROM items").Scan(&n); err != nil || n != 20000 {
		t.Errorf("items at the destination: %d (%v), want 20000", n, err)
	}
	if left := f.pgStreams(t, id); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// startUpdater updates random rows of the site's items table at the
// source as its owner every few milliseconds until the session is ended
// (the block) or stop is called.
func startUpdater(t *testing.T, f *fleet, st pgSite, rows int) (stop func()) {
	t.Helper()
	c := f.src.pg.Connect(t, st.db, st.owner, st.pass)
	return keepUpdating(func(i int) error {
		_, err := c.Exec(context.Background(), "UPDATE items SET name = $1 WHERE id = $2", fmt.Sprintf("updated %d", i), 1+i*7919%rows)
		return err
	})
}

// keepUpdating calls update with 0, 1, 2, ... every 5 ms until it fails
// (its session ended by the block) or stop is called; stop waits for it.
func keepUpdating(update func(i int) error) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if update(i) != nil {
				return
			}
		}
	})
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

// TestPostgresOnlineVerifiedByRows: a table updated all the time through
// the sync is compared by rows while streaming; once the updates stop, a
// row the stream did not write is corrupted at the destination: the
// cutover compares only the rows written since, finds that one, and fails
// the row with writes restored and nothing of the stream left.
func TestPostgresOnlineVerifiedByRows(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	st := newPGOnlineSite(t, f, "pgbyrows", 20000)
	stopUpdates := startUpdater(t, f, st, 20000)
	id := f.planMode(t, statemachine.EnginePostgres, st.db, statemachine.ModeOnline)
	stopSrc := f.start(t, f.src, agentOpts{}, statemachine.RoleRollback) // publishes the source's address
	stopSync := f.start(t, f.dst, agentOpts{}, statemachine.RoleSync)
	if m := f.waitStatus(t, id, statemachine.ToCutOver, statemachine.SyncFailed); m.Status != statemachine.ToCutOver {
		t.Fatalf("sync: %q %s", m.Status, m.LastError)
	}
	stopSrc()
	stopUpdates()
	if ev := f.events(t, id); !strings.Contains(ev, "1 tables written meanwhile compared by rows (20000 rows") {
		t.Fatalf("the written table was not compared by rows:\n%s", ev)
	}
	// Row 12345 is not one the updater writes (its ids are 1 + i·7919 mod
	// 20000 for the few hundred i it reached).
	fleettest.PGExec(t, f.dst.pg.Root(t, st.db), "UPDATE items SET name = 'corrupted' WHERE id = 12346")
	f.cutAfter(t, stopSync, agentOpts{}, agentOpts{})(statemachine.RoleRollback)
	m := f.waitStatus(t, id, statemachine.CutoverFailed, statemachine.DNSToUpdate)
	if m.Status != statemachine.CutoverFailed || !strings.Contains(m.LastError, `table "public"."items"`) || !strings.Contains(m.LastError, "row 12346 differs") {
		t.Fatalf("cutover: %q %s\n%s", m.Status, m.LastError, f.events(t, id))
	}
	if !strings.Contains(m.LastError, "rows written since it was compared while streaming") {
		t.Errorf("the cutover did not compare by rows: %s", m.LastError)
	}
	if left := f.pgStreams(t, id); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestPostgresOnlineByRowsLateWrite: a table verified by rows at the
// cutover (its checksum not taken then) is still checked by the close: a
// write at the source after the cutover stops it.
func TestPostgresOnlineByRowsLateWrite(t *testing.T) {
	f := newFleet(t)
	t.Parallel()
	st := newPGOnlineSite(t, f, "pgbyrowslate", 20000)
	stopUpdates := startUpdater(t, f, st, 20000)
	defer stopUpdates()
	id := f.planMode(t, statemachine.EnginePostgres, st.db, statemachine.ModeOnline)
	onlineAgents(t, f, agentOpts{})
	if m := f.waitStatus(t, id, statemachine.DNSToUpdate, statemachine.SyncFailed, statemachine.CutoverFailed); m.Status != statemachine.DNSToUpdate {
		t.Fatalf("%q %s\n%s", m.Status, m.LastError, f.events(t, id))
	}
	if ev := f.events(t, id); !strings.Contains(ev, "tables compared by rows") {
		t.Errorf("the cutover did not compare the written table by rows:\n%s", ev)
	}
	fleettest.PGExec(t, f.src.pg.Root(t, st.db), "UPDATE items SET name = 'late' WHERE id = 3")
	f.dnsAgent(t)
	m := f.waitStatus(t, id, statemachine.CloseFailed, statemachine.Done)
	if m.Status != statemachine.CloseFailed || !strings.Contains(m.LastError, `rows of "public"."items" were written at the source after the cutover verified it`) {
		t.Fatalf("close: %q %q", m.Status, m.LastError)
	}
}
