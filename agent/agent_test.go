package agent_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fleetmigrate/fleetmigrate/agent"
	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/statetest"
	"github.com/fleetmigrate/fleetmigrate/scheduler"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/statemachine/sqlstore"
	"github.com/fleetmigrate/fleetmigrate/statemachine/storetest"
)

func TestMain(m *testing.M) { fleettest.Main(m) }

type stateDB = statetest.DB

func engines(t *testing.T, fn func(t *testing.T, db stateDB)) { statetest.Engines(t, fn) }

func upgraded(t *testing.T, driver, dsn string) stateDB { return statetest.Upgraded(t, driver, dsn) }

// fakeHandler runs fn (nil: succeed at once) and counts runs per row.
type fakeHandler struct {
	fn      func(ctx context.Context, job *agent.Job) error
	recover func(row statemachine.Migration) error
	mu      sync.Mutex
	runs    map[int64][]string // row -> the host that ran each attempt
}

func (h *fakeHandler) Run(ctx context.Context, job *agent.Job) (statemachine.Fields, error) {
	h.mu.Lock()
	if h.runs == nil {
		h.runs = map[int64][]string{}
	}
	owner, _, _ := strings.Cut(job.Row.Owner, "/")
	h.runs[job.Row.ID] = append(h.runs[job.Row.ID], owner)
	h.mu.Unlock()
	var err error
	if h.fn != nil {
		err = h.fn(ctx, job)
	}
	if err != nil || job.Row.Status != statemachine.Dumping {
		return statemachine.Fields{}, err
	}
	return storetest.FakeDump(), nil
}

func (h *fakeHandler) Recover(_ context.Context, job *agent.Job) error {
	if h.recover != nil {
		return h.recover(job.Row)
	}
	return nil
}

func (h *fakeHandler) runsOf(id int64) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.runs[id]...)
}

// fast is an agent configuration for tests: short intervals.
func fast(host string, roles ...statemachine.Role) agent.Config {
	return agent.Config{Host: host, Roles: roles, PollInterval: 100 * time.Millisecond, Lease: 2 * time.Second,
		HeartbeatInterval: 500 * time.Millisecond, ShutdownTimeout: 2 * time.Second, RetryBase: 20 * time.Millisecond,
		ProgressInterval: 50 * time.Millisecond}
}

// running is an agent's Run in the background: done closes when it
// returns, err is then its result.
type running struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// start runs an agent with h for all its roles until the test ends.
func start(t *testing.T, s statemachine.Store, cfg agent.Config, h agent.Handler, log *slog.Logger) *running {
	t.Helper()
	if log == nil {
		log = slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	}
	a, err := agent.New(s, cfg, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range cfg.Roles {
		a.Handle(r, "", h)
	}
	return runUntilCleanup(t, a)
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitDone waits until n rows are Done; on timeout it says where the rows
// are.
func waitDone(t *testing.T, s *sqlstore.Store, n int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for count(t, s, "WHERE status = 'Done'") != n {
		if time.Now().After(deadline) {
			counts, err := s.Counts(context.Background())
			t.Fatalf("timed out after %s waiting for %d rows Done; rows by status: %v %v", d, n, counts, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func count(t *testing.T, s *sqlstore.Store, where string, args ...any) int {
	t.Helper()
	var n int
	if err := s.DB().QueryRow(s.Rebind("SELECT COUNT(*) FROM migration "+where), args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func planOn(t *testing.T, s statemachine.Store, n int, sources, dests int, dns bool) {
	t.Helper()
	rows := make([]statemachine.Planned, n)
	for i := range rows {
		rows[i] = statemachine.Planned{Engine: statemachine.EngineMySQL, DatabaseName: fmt.Sprintf("db_%04d", i),
			Source: fmt.Sprintf("src-%d", i%sources), Destination: fmt.Sprintf("dst-%d", (i/sources)%dests)}
		if dns {
			rows[i].DNSName = fmt.Sprintf("db-%04d.example.test", i)
		}
	}
	if _, err := s.Plan(context.Background(), rows, "test", false); err != nil {
		t.Fatal(err)
	}
}

// TestTwentyAgentsDrainTwoThousandRows: 5 source hosts (close), 5
// destination hosts (dump, import) and 10 DNS agents, each with its own
// connections, drain 2,000 rows promoted by the real scheduler: every row
// reaches Done, each step ran exactly once, on the right host. "Exactly
// once" holds while no lease expires: the agents here get a lease long
// enough that a state database slowed by a loaded machine (calls timing
// out, leases lost, steps rightly redone) does not expire one — this test
// is about claims; the rescue of expired leases has tests of its own.
func TestTwentyAgentsDrainTwoThousandRows(t *testing.T) {
	fast := func(host string, roles ...statemachine.Role) agent.Config {
		c := fast(host, roles...)
		c.Lease = 15 * time.Second
		return c
	}
	engines(t, func(t *testing.T, db stateDB) {
		const rows = 2000
		s := db.Open(t)
		planOn(t, s, rows, 5, 5, true)
		handlers := map[statemachine.Role]*fakeHandler{}
		for _, r := range []statemachine.Role{statemachine.RoleDump, statemachine.RoleImport, statemachine.RoleDNS, statemachine.RoleClose} {
			handlers[r] = &fakeHandler{}
		}
		var agents int
		for i := range 5 {
			src := db.Open(t)
			start(t, src, fast(fmt.Sprintf("src-%d", i), statemachine.RoleClose), handlers[statemachine.RoleClose], nil)
			a, err := agent.New(db.Open(t), fast(fmt.Sprintf("dst-%d", i), statemachine.RoleDump, statemachine.RoleImport), slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)), nil)
			if err != nil {
				t.Fatal(err)
			}
			a.Handle(statemachine.RoleDump, "", handlers[statemachine.RoleDump])
			a.Handle(statemachine.RoleImport, "", handlers[statemachine.RoleImport])
			runUntilCleanup(t, a)
			agents += 2
		}
		for i := range 10 {
			start(t, db.Open(t), fast(fmt.Sprintf("dns-%d", i), statemachine.RoleDNS), handlers[statemachine.RoleDNS], nil)
			agents++
		}
		began := time.Now()
		stop := runScheduler(t, s, 200)
		defer stop()
		waitDone(t, s, rows, 3*time.Minute)
		took := time.Since(began)
		stop()

		all, err := s.List(context.Background(), statemachine.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range all {
			for role, want := range map[statemachine.Role]string{
				statemachine.RoleDump: m.Destination, statemachine.RoleClose: m.Source, statemachine.RoleImport: m.Destination, statemachine.RoleDNS: "dns-",
			} {
				runs := handlers[role].runsOf(m.ID)
				if len(runs) != 1 || !strings.HasPrefix(runs[0], want) {
					t.Fatalf("row %d: %s ran %d times on %v, want once on %s", m.ID, role, len(runs), runs, want)
				}
			}
			if m.Attempt != 0 || m.Fence != 4 {
				t.Fatalf("row %d: attempt %d fence %d, want 0 and 4 (one claim per step)", m.ID, m.Attempt, m.Fence)
			}
		}
		t.Logf("%d agents drained %d rows through 4 steps in %s: %.0f rows/s", agents, rows, took.Round(time.Millisecond), float64(rows)/took.Seconds())
	})
}

// runScheduler runs a scheduler with maxProcs and no per-host caps on s
// until the returned stop is called.
func runScheduler(t *testing.T, s statemachine.Store, maxProcs int) (stop func()) {
	t.Helper()
	sch, err := scheduler.New(s, scheduler.Config{MaxProcs: maxProcs, MaxPerSource: -1, MaxPerDestination: -1, Tick: 50 * time.Millisecond,
		Holder: "test pid 1"}, slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = sch.Run(ctx) }()
	return cancel
}

// runUntilCleanup runs an already configured agent until the test ends.
func runUntilCleanup(t *testing.T, a *agent.Agent) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan struct{})}
	go func() {
		r.err = a.Run(ctx)
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

func TestRetriesFailuresAndPanics(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		s := db.Open(t)
		planOn(t, s, 4, 1, 1, false)
		all, _ := s.List(context.Background(), statemachine.Filter{})
		flaky, broken, denied, panicky := all[0].ID, all[1].ID, all[2].ID, all[3].ID
		var flakyRuns atomic.Int32
		h := &fakeHandler{fn: func(ctx context.Context, job *agent.Job) error {
			switch job.Row.ID {
			case flaky:
				if flakyRuns.Add(1) < 3 {
					return errors.New("connection reset by peer")
				}
			case broken:
				return errors.New("lock wait timeout exceeded")
			case denied:
				return agent.Permanentf("access denied for user 'migrate'@'%s'", "10.0.0.1")
			case panicky:
				var none []int
				_ = none[len(job.Row.DatabaseName)] // index out of range: panics
			}
			return nil
		}}
		var logs fleettest.LogBuffer
		start(t, s, fast("dst-0", statemachine.RoleDump), h, slog.New(slog.NewJSONHandler(&logs, nil)))
		if _, err := s.Promote(context.Background(), 4, "test"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "all four rows settled", 20*time.Second, func() bool {
			return count(t, s, "WHERE status IN ('To import', 'Dump failed')") == 4
		})
		get := func(id int64) statemachine.Migration {
			m, err := s.Get(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			return m
		}
		if m := get(flaky); m.Status != statemachine.ToImport || len(h.runsOf(flaky)) != 3 {
			t.Errorf("flaky row: %s after %d runs, want To import after 3", m.Status, len(h.runsOf(flaky)))
		}
		if m := get(broken); m.Status != statemachine.DumpFailed || m.LastError != "gave up after 3 attempts: lock wait timeout exceeded" || m.Attempt != 3 {
			t.Errorf("broken row: %s attempt %d %q", m.Status, m.Attempt, m.LastError)
		}
		if m := get(denied); m.Status != statemachine.DumpFailed || !strings.Contains(m.LastError, "access denied") || len(h.runsOf(denied)) != 1 {
			t.Errorf("permanent failure: %s %q after %d runs, want 1 run", m.Status, m.LastError, len(h.runsOf(denied)))
		}
		if m := get(panicky); m.Status != statemachine.DumpFailed || !strings.Contains(m.LastError, "handler panicked: runtime error: index out of range") {
			t.Errorf("panicking handler: %s %q", m.Status, m.LastError)
		}
		evs, _ := s.Events(context.Background(), flaky)
		var retries []string
		for _, e := range evs {
			if strings.HasPrefix(e.Detail, "retry ") {
				retries = append(retries, e.Detail)
			}
		}
		if len(retries) != 2 || retries[0] != "retry 2 after: connection reset by peer" {
			t.Errorf("retry events: %v", retries)
		}
		// Every log line about a row names it, its database, step and attempt.
		for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
			if strings.Contains(line, `"row":`) {
				for _, key := range []string{`"database":`, `"step":"dump"`, `"attempt":`} {
					if !strings.Contains(line, key) {
						t.Errorf("log line about a row lacks %s: %s", key, line)
					}
				}
			}
		}
		if !strings.Contains(logs.String(), "handler panicked") || !strings.Contains(logs.String(), "goroutine") {
			t.Error("panic not logged with its stack")
		}
	})
}

// TestLeaseLostCancelsStep: when the row is taken from the agent (here its
// fence is bumped, as a rescue and re-claim would), the handler's context is
// cancelled and the agent writes nothing more to the row.
func TestLeaseLostCancelsStep(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		s := db.Open(t)
		planOn(t, s, 1, 1, 1, false)
		cause := make(chan error, 1)
		h := &fakeHandler{fn: func(ctx context.Context, job *agent.Job) error {
			<-ctx.Done()
			cause <- context.Cause(ctx)
			return ctx.Err()
		}}
		cfg := fast("dst-0", statemachine.RoleDump)
		cfg.Lease = 600 * time.Millisecond
		start(t, s, cfg, h, nil)
		if _, err := s.Promote(context.Background(), 1, "test"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the step to start", 5*time.Second, func() bool { return count(t, s, "WHERE status = 'Dumping'") == 1 })
		if _, err := s.DB().Exec("UPDATE migration SET fence = fence + 1"); err != nil {
			t.Fatal(err)
		}
		select {
		case c := <-cause:
			if c == nil || !strings.Contains(c.Error(), "lease lost") {
				t.Fatalf("handler cancelled with %v, want lease lost", c)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("handler not cancelled after its lease was lost")
		}
		time.Sleep(300 * time.Millisecond)
		m, _ := s.Get(context.Background(), 1)
		if m.Status != statemachine.Dumping || m.Fence != 2 {
			t.Fatalf("row after the lost lease: %s fence %d; the agent must not touch it", m.Status, m.Fence)
		}
	})
}

// TestGracefulStop: a step that ends within the shutdown timeout is
// finished and recorded; one that does not is cancelled, undoes its work,
// and its row goes back to To dump with the event saying why.
func TestGracefulStop(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		s := db.Open(t)
		planOn(t, s, 2, 1, 1, false)
		all, _ := s.List(context.Background(), statemachine.Filter{})
		quick, slow := all[0].ID, all[1].ID
		var cleaned atomic.Bool
		h := &fakeHandler{fn: func(ctx context.Context, job *agent.Job) error {
			d := 300 * time.Millisecond
			if job.Row.ID == slow {
				d = time.Hour
			}
			select {
			case <-time.After(d):
				return nil
			case <-ctx.Done():
				cleaned.Store(true)
				return ctx.Err()
			}
		}}
		cfg := fast("dst-0", statemachine.RoleDump)
		cfg.ShutdownTimeout = 800 * time.Millisecond
		r := start(t, s, cfg, h, nil)
		if _, err := s.Promote(context.Background(), 2, "test"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "both steps running", 5*time.Second, func() bool { return count(t, s, "WHERE status = 'Dumping'") == 2 })
		stopped := time.Now()
		r.cancel()
		select {
		case <-r.done:
			if r.err != nil {
				t.Fatal(r.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("agent did not stop")
		}
		if took := time.Since(stopped); took < cfg.ShutdownTimeout || took > cfg.ShutdownTimeout+2*time.Second {
			t.Errorf("stop took %s, want a little over the %s shutdown timeout", took, cfg.ShutdownTimeout)
		}
		mq, _ := s.Get(context.Background(), quick)
		ms, _ := s.Get(context.Background(), slow)
		if mq.Status != statemachine.ToImport {
			t.Errorf("the quick step was not waited for: %s", mq.Status)
		}
		if ms.Status != statemachine.ToDump || !cleaned.Load() || !strings.Contains(ms.LastError, "agent shutting down") {
			t.Errorf("the slow step: %s, cleanup %v, %q; want To dump, cleaned up, the reason", ms.Status, cleaned.Load(), ms.LastError)
		}
		evs, _ := s.Events(context.Background(), slow)
		if last := evs[len(evs)-1]; last.To != statemachine.ToDump || !strings.Contains(last.Detail, "agent shutting down") {
			t.Errorf("last event of the slow row: %+v", last)
		}
		if _, ok, _ := s.AgentFor(context.Background(), "src-0"); ok {
			t.Error("agent still registered after a clean stop")
		}
	})
}

func TestOneAgentPerHost(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		s := db.Open(t)
		start(t, s, fast("db-1", statemachine.RoleDump), &fakeHandler{}, nil)
		waitFor(t, "registration", 5*time.Second, func() bool { _, ok, _ := s.AgentFor(context.Background(), "db-1"); return ok })
		a, err := agent.New(db.Open(t), fast("db-1", statemachine.RoleImport), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = a.Run(context.Background())
		var held *statemachine.AgentHeldError
		if !errors.As(err, &held) || !strings.Contains(err.Error(), "host db-1 is already served by agent pid") {
			t.Fatalf("second agent for db-1: %v", err)
		}
		// An entry left by a dead process of this machine is taken over at once.
		if err := s.RegisterAgent(context.Background(), statemachine.Agent{Host: "db-2", Roles: []statemachine.Role{statemachine.RoleDump},
			PID: 999999, Machine: hostname(), Instance: "dead"}, time.Hour, ""); err != nil {
			t.Fatal(err)
		}
		start(t, db.Open(t), fast("db-2", statemachine.RoleDump), &fakeHandler{}, nil)
		waitFor(t, "take-over", 5*time.Second, func() bool {
			cur, _, _ := s.AgentFor(context.Background(), "db-2")
			return cur.Instance != "dead"
		})
	})
}

// TestRowsWithoutHandlerAreLeftAlone: an agent with a MySQL handler only
// leaves PostgreSQL rows for its host alone and says so once.
func TestRowsWithoutHandlerAreLeftAlone(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		s := db.Open(t)
		rows := []statemachine.Planned{
			{Engine: statemachine.EngineMySQL, DatabaseName: "my", Source: "src-0", Destination: "dst-0"},
			{Engine: statemachine.EnginePostgres, DatabaseName: "pg1", Source: "src-0", Destination: "dst-0"},
			{Engine: statemachine.EnginePostgres, DatabaseName: "pg2", Source: "src-0", Destination: "dst-0"},
		}
		if _, err := s.Plan(context.Background(), rows, "test", false); err != nil {
			t.Fatal(err)
		}
		var logs fleettest.LogBuffer
		a, err := agent.New(s, fast("dst-0", statemachine.RoleDump), slog.New(slog.NewTextHandler(&logs, nil)), nil)
		if err != nil {
			t.Fatal(err)
		}
		a.Handle(statemachine.RoleDump, statemachine.EngineMySQL, &fakeHandler{})
		runUntilCleanup(t, a)
		if _, err := s.Promote(context.Background(), 3, "test"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the MySQL row", 5*time.Second, func() bool { return count(t, s, "WHERE status = 'To import'") == 1 })
		time.Sleep(600 * time.Millisecond) // several more polls
		if n := count(t, s, "WHERE status = 'To dump' AND engine = 'postgres'"); n != 2 {
			t.Fatalf("%d PostgreSQL rows still To dump, want 2 left alone", n)
		}
		if c := strings.Count(logs.String(), "no handler for"); c != 1 {
			t.Errorf("warned %d times, want once:\n%s", c, logs.String())
		}
	})
}

// TestStateDatabaseRestart: the state database goes down mid-run and comes
// back; the agents log, back off, reconnect, and every row still reaches
// its next status, none lost or stuck.
func TestStateDatabaseRestart(t *testing.T) {
	statetest.EnginesOnPrivateServers(t, func(t *testing.T, db stateDB, srv statetest.Server) {
		s := db.Open(t)
		const rows = 60
		planOn(t, s, rows, 1, 2, false)
		h := &fakeHandler{fn: func(ctx context.Context, job *agent.Job) error {
			select {
			case <-time.After(100 * time.Millisecond):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}}
		var logs fleettest.LogBuffer
		log := slog.New(slog.NewTextHandler(&logs, nil))
		for i := range 2 {
			cfg := fast(fmt.Sprintf("dst-%d", i), statemachine.RoleDump)
			cfg.Lease = 4 * time.Second
			start(t, db.Open(t), cfg, h, log)
		}
		if _, err := s.Promote(context.Background(), rows, "test"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "some dumps done", 10*time.Second, func() bool { return count(t, s, "WHERE status = 'To import'") >= 5 })
		if err := srv.Down(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := srv.Up(ctx); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "every dump done after the restart", time.Minute, func() bool { return count(t, s, "WHERE status = 'To import'") == rows })
		if !strings.Contains(logs.String(), "state database call failed") || !strings.Contains(logs.String(), "state database answers again") {
			t.Errorf("outage and recovery not logged:\n%s", logs.String())
		}
		if n := count(t, s, "WHERE status <> 'To import'"); n != 0 {
			t.Errorf("%d rows not dumped", n)
		}
	})
}

func TestBadConfig(t *testing.T) {
	for _, cfg := range []agent.Config{
		{Roles: []statemachine.Role{statemachine.RoleDump}},
		{Host: "h"},
		{Host: "h", Roles: []statemachine.Role{"backup"}},
		{Host: "h", Roles: []statemachine.Role{statemachine.RoleDump}, MaxJobs: map[statemachine.Role]int{statemachine.RoleDump: 0}},
		{Host: "h", Roles: []statemachine.Role{statemachine.RoleDump}, Lease: -time.Second},
	} {
		if _, err := agent.New(nil, cfg, nil, nil); err == nil {
			t.Errorf("accepted %+v", cfg)
		}
	}
}

// TestWakeupsBeatThePollInterval: with PostgreSQL as the state database,
// agents polling only once a minute still take each hand-off (To dump → To
// import → DNS to update → To close source) within a second: the store's
// LISTEN/NOTIFY wake-ups start their polls. Five rows go through all steps
// well inside one poll interval.
func TestWakeupsBeatThePollInterval(t *testing.T) {
	t.Parallel()
	srv := fleettest.SharedPostgres(t)
	db := upgraded(t, "postgres", srv.DSN(srv.NewDatabase(t)))
	s := db.Open(t)
	h := &fakeHandler{}
	slow := func(host string, roles ...statemachine.Role) agent.Config {
		c := fast(host, roles...)
		c.PollInterval = time.Minute
		return c
	}
	// One set of metrics for the three agents: their roles differ.
	m := agent.NewMetrics(prometheus.NewRegistry())
	for _, cfg := range []agent.Config{
		slow("src-0", statemachine.RoleClose), slow("dst-0", statemachine.RoleDump, statemachine.RoleImport), slow("dns", statemachine.RoleDNS),
	} {
		a, err := agent.New(db.Open(t), cfg, slog.New(slog.DiscardHandler), m)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range cfg.Roles {
			a.Handle(r, "", h)
		}
		runUntilCleanup(t, a)
	}
	// Each role's poll loop is woken once when its channel is listened:
	// from then on a notification cannot be missed. (The first timed
	// polls, up to 30 s away with jitter, play no part.)
	waitFor(t, "every role's listener armed", 30*time.Second, func() bool {
		for _, r := range []statemachine.Role{statemachine.RoleDump, statemachine.RoleClose, statemachine.RoleImport, statemachine.RoleDNS} {
			if testutil.ToFloat64(m.Wakeups.WithLabelValues(string(r))) < 1 {
				return false
			}
		}
		return true
	})
	planOn(t, s, 5, 1, 1, true)
	began := time.Now()
	if _, err := s.Promote(context.Background(), 5, "test"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for count(t, s, "WHERE status = 'Done'") != 5 {
		if time.Now().After(deadline) {
			counts, _ := s.Counts(context.Background())
			var metrics []string
			for _, r := range []statemachine.Role{statemachine.RoleDump, statemachine.RoleImport, statemachine.RoleDNS, statemachine.RoleClose} {
				metrics = append(metrics, fmt.Sprintf("%s: %v wake-ups, %v polls, %v claims", r,
					testutil.ToFloat64(m.Wakeups.WithLabelValues(string(r))), testutil.ToFloat64(m.Polls.WithLabelValues(string(r))), testutil.ToFloat64(m.Claims.WithLabelValues(string(r)))))
			}
			t.Fatalf("5 rows not Done through wake-ups after 10 s: statuses %v; %s", counts, strings.Join(metrics, "; "))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Fatalf("5 rows took %s through 4 hand-offs; wake-ups should make that well under a second each", took)
	}
}

// abandoningHandler is a fakeHandler that is also an agent.Abandoner.
type abandoningHandler struct {
	*fakeHandler
	abandon   func(job *agent.Job) error
	abandoned sync.Map // row id -> attempt at which Abandon ran
}

func (h *abandoningHandler) Abandon(_ context.Context, job *agent.Job) error {
	h.abandoned.Store(job.Row.ID, job.Row.Attempt)
	return h.abandon(job)
}

// TestAbandonAfterLastAttempt: a row whose transient failures use up its
// attempts is abandoned once, after the last; a cleanup that does not
// finish is said in the failed row's error, not only in the log.
func TestAbandonAfterLastAttempt(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		s := db.Open(t)
		planOn(t, s, 3, 1, 1, false)
		all, _ := s.List(context.Background(), statemachine.Filter{})
		cleaned, stuck, denied := all[0].ID, all[1].ID, all[2].ID
		h := &abandoningHandler{
			fakeHandler: &fakeHandler{fn: func(_ context.Context, job *agent.Job) error {
				if job.Row.ID == denied {
					return agent.Permanentf("access denied")
				}
				return errors.New("dial tcp 10.0.0.2:3306: connect: connection refused")
			}},
			abandon: func(job *agent.Job) error {
				if job.Row.ID == stuck {
					return errors.New("drop the import beside the dump: server still down")
				}
				return nil
			},
		}
		start(t, s, fast("dst-0", statemachine.RoleDump), h, nil)
		if _, err := s.Promote(context.Background(), 3, "test"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "all three rows failed", 20*time.Second, func() bool {
			return count(t, s, "WHERE status = 'Dump failed'") == 3
		})
		for id, want := range map[int64]string{
			cleaned: "gave up after 3 attempts: dial tcp 10.0.0.2:3306: connect: connection refused",
			stuck:   "gave up after 3 attempts: dial tcp 10.0.0.2:3306: connect: connection refused; NOT cleaned up (a retry or a rollback does it): drop the import beside the dump: server still down",
			denied:  "access denied",
		} {
			m, err := s.Get(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			if m.LastError != want {
				t.Errorf("row %d: error %q, want %q", id, m.LastError, want)
			}
		}
		for _, id := range []int64{cleaned, stuck} {
			if at, ok := h.abandoned.Load(id); !ok || at.(int) != 3 {
				t.Errorf("row %d: abandoned at attempt %v (%v), want once after attempt 3", id, at, ok)
			}
		}
		if _, ok := h.abandoned.Load(denied); ok {
			t.Error("a permanent failure was abandoned: the handler cleans up those itself")
		}
	})
}

// TestAfterAdvance: what a step leaves for after its row moved on runs
// once the row has advanced (it sees the next status), only for a step
// that succeeded; one that fails is logged, the row is not touched.
func TestAfterAdvance(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		s := db.Open(t)
		planOn(t, s, 2, 1, 1, false)
		all, _ := s.List(context.Background(), statemachine.Filter{})
		ok, failing := all[0].ID, all[1].ID
		var seen sync.Map // row -> status seen by its after-work
		h := &fakeHandler{fn: func(_ context.Context, job *agent.Job) error {
			id := job.Row.ID
			job.AfterAdvance("check the row", func(ctx context.Context) error {
				m, err := s.Get(ctx, id)
				if err != nil {
					return err
				}
				seen.Store(id, m.Status)
				if id == failing {
					return errors.New("server gone")
				}
				return nil
			})
			return nil
		}}
		var logs fleettest.LogBuffer
		start(t, s, fast("dst-0", statemachine.RoleDump), h, slog.New(slog.NewTextHandler(&logs, nil)))
		if _, err := s.Promote(context.Background(), 2, "test"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "both rows' after-work", 20*time.Second, func() bool {
			_, a := seen.Load(ok)
			_, b := seen.Load(failing)
			return a && b
		})
		for _, id := range []int64{ok, failing} {
			if st, _ := seen.Load(id); st == statemachine.Dumping {
				t.Errorf("row %d: the after-work ran before the row advanced (saw %v)", id, st)
			}
			if m, _ := s.Get(context.Background(), id); m.Status.Failed() {
				t.Errorf("row %d failed: %s", id, m.LastError)
			}
		}
		waitFor(t, "the failure logged", 5*time.Second, func() bool {
			return strings.Contains(logs.String(), "after the step: check the row failed")
		})
	})
}
