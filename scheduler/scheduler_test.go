package scheduler_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/procid"
	"github.com/fleetmigrate/fleetmigrate/internal/statetest"
	"github.com/fleetmigrate/fleetmigrate/scheduler"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/statemachine/sqlstore"
)

func TestMain(m *testing.M) { fleettest.Main(m) }

type stateDB = statetest.DB

func engines(t *testing.T, fn func(t *testing.T, db stateDB)) { statetest.Engines(t, fn) }

func plan(t *testing.T, s statemachine.Store, sources, perSource int, dests int) {
	t.Helper()
	var rows []statemachine.Planned
	for i := range perSource {
		for src := range sources {
			rows = append(rows, statemachine.Planned{
				Engine: statemachine.EngineMySQL, DatabaseName: fmt.Sprintf("db_%d_%d", src, i),
				Source: fmt.Sprintf("src-%d", src), Destination: fmt.Sprintf("dst-%d", (src+i)%dests),
			})
		}
	}
	if _, err := s.Plan(context.Background(), rows, "test", false); err != nil {
		t.Fatal(err)
	}
}

func newScheduler(t *testing.T, s statemachine.Store, cfg scheduler.Config, log *slog.Logger) *scheduler.Scheduler {
	t.Helper()
	if cfg.Holder == "" {
		cfg.Holder = "test-host pid 1"
	}
	sch, err := scheduler.New(s, cfg, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	return sch
}

func countSQL(t *testing.T, s *sqlstore.Store, where string, args ...any) int {
	t.Helper()
	var n int
	if err := s.DB().QueryRow(s.Rebind("SELECT COUNT(*) FROM migration "+where), args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func inFlightWhere() string {
	var q []string
	for _, st := range statemachine.InFlightStatuses() {
		q = append(q, "'"+string(st)+"'")
	}
	return "WHERE status IN (" + strings.Join(q, ", ") + ")"
}

// fakeAgent claims rows of one role and moves them on after a random delay;
// failRate of them fail instead.
func fakeAgent(ctx context.Context, s statemachine.Store, role statemachine.Role, host string, failRate float64, wg *sync.WaitGroup) {
	defer wg.Done()
	for ctx.Err() == nil {
		ms, err := s.Claim(ctx, statemachine.ClaimRequest{Role: role, Host: host, Owner: host + "/" + string(role), Limit: 2, Lease: time.Minute})
		if err != nil || len(ms) == 0 {
			time.Sleep(time.Duration(2+rand.IntN(5)) * time.Millisecond)
			continue
		}
		for i := range ms {
			time.Sleep(time.Duration(rand.IntN(15)) * time.Millisecond)
			m := &ms[i]
			if rand.Float64() < failRate {
				_ = s.Fail(ctx, m, statemachine.Fields{}, "injected failure")
				continue
			}
			f := statemachine.Fields{}
			if role == statemachine.RoleDump {
				f = statemachine.Fields{DumpURL: "file:///d", DumpSHA256: strings.Repeat("0", 64), DumpBytes: 1}
			}
			_ = s.Advance(ctx, m, f, "")
		}
	}
}

// TestInFlightNeverExceedsMax: fake agents advance rows at random speeds and
// fail some; an operator retries failures; ticks run, some of them racing.
// In flight never exceeds N (sampled continuously with SQL), and after every
// tick it is N whenever rows still wait.
func TestInFlightNeverExceedsMax(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		const n, ticks = 20, 200
		s := db.Open(t)
		plan(t, s, 6, 150, 3)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var wg sync.WaitGroup
		for src := range 6 {
			host := fmt.Sprintf("src-%d", src)
			wg.Add(2)
			go fakeAgent(ctx, s, statemachine.RoleDump, host, 0.03, &wg)
			go fakeAgent(ctx, s, statemachine.RoleClose, host, 0, &wg)
		}
		for d := range 3 {
			wg.Add(1)
			go fakeAgent(ctx, s, statemachine.RoleImport, fmt.Sprintf("dst-%d", d), 0.03, &wg)
		}
		wg.Add(2)
		go fakeAgent(ctx, s, statemachine.RoleDNS, "", 0, &wg)
		go func() { // the operator retries failed rows
			defer wg.Done()
			for ctx.Err() == nil {
				failed, _ := s.List(ctx, statemachine.Filter{Statuses: []statemachine.Status{statemachine.DumpFailed, statemachine.ImportFailed}})
				for _, m := range failed {
					_, _ = s.Operate(ctx, m.ID, statemachine.ActionRetry, "operator", "")
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
		var maxSeen, samples atomic.Int64
		wg.Add(1)
		go func() { // the sampler
			defer wg.Done()
			for ctx.Err() == nil {
				var c int
				if err := s.DB().QueryRowContext(ctx, "SELECT COUNT(*) FROM migration "+inFlightWhere()).Scan(&c); err == nil {
					samples.Add(1)
					if int64(c) > maxSeen.Load() {
						maxSeen.Store(int64(c))
					}
				}
			}
		}()

		cfg := scheduler.Config{MaxProcs: n, MaxPerSource: -1, MaxPerDestination: -1, Tick: time.Second}
		sch := newScheduler(t, s, cfg, nil)
		racers := []*scheduler.Scheduler{newScheduler(t, db.Open(t), cfg, nil), newScheduler(t, db.Open(t), cfg, nil)}
		if _, err := s.AcquireLeader(ctx, statemachine.LeaderClaim{Holder: "test-host pid 1", TTL: time.Minute, MaxProcs: n}); err != nil {
			t.Fatal(err)
		}
		reachedN := 0
		for i := range ticks {
			if i%10 == 0 { // a restart mid-tick: more ticks race this one
				var rw sync.WaitGroup
				for _, r := range racers {
					rw.Add(1)
					go func() {
						defer rw.Done()
						if _, err := r.Tick(ctx); err != nil {
							t.Error(err)
						}
					}()
				}
				defer rw.Wait()
			}
			res, err := sch.Tick(ctx)
			if err != nil {
				t.Fatalf("tick %d: %v", i, err)
			}
			if res.InFlight > n {
				t.Fatalf("tick %d: %d in flight, max %d", i, res.InFlight, n)
			}
			if waiting := countSQL(t, s, "WHERE status = 'Waiting'"); waiting > 0 {
				if res.InFlight != n {
					t.Fatalf("tick %d: %d in flight with %d rows waiting; want %d", i, res.InFlight, waiting, n)
				}
				reachedN++
			}
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
		wg.Wait()
		if maxSeen.Load() > n {
			t.Fatalf("sampled %d rows in flight, max %d", maxSeen.Load(), n)
		}
		// Under a loaded make test (race detector, packages in parallel)
		// ticks slow down relative to the fake agents, which drain the
		// 900 rows in ~95 ticks instead of ~150: a quarter of the ticks at
		// the limit still exercises it.
		if reachedN < ticks/4 || samples.Load() < 100 {
			t.Fatalf("only %d ticks with rows waiting, %d samples: the test did not exercise the limit", reachedN, samples.Load())
		}
		t.Logf("%d ticks at the limit, %d samples, max sampled %d, done %d", reachedN, samples.Load(), maxSeen.Load(),
			countSQL(t, s, "WHERE status = 'Done'"))
	})
}

// TestFairFirstTick: 10 sources × 100 rows, N = 20: after the first tick
// every source has 2 in flight.
func TestFairFirstTick(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		s := db.Open(t)
		plan(t, s, 10, 100, 4)
		sch := newScheduler(t, s, scheduler.Config{MaxProcs: 20}, nil)
		if _, err := s.AcquireLeader(context.Background(), statemachine.LeaderClaim{Holder: "test-host pid 1", TTL: time.Minute, MaxProcs: 20}); err != nil {
			t.Fatal(err)
		}
		res, err := sch.Tick(context.Background())
		if err != nil || res.Promoted != 20 {
			t.Fatalf("tick: %+v, %v", res, err)
		}
		rows, err := s.DB().Query("SELECT source, COUNT(*) FROM migration WHERE status = 'To dump' GROUP BY source")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		per := map[string]int{}
		for rows.Next() {
			var src string
			var c int
			if err := rows.Scan(&src, &c); err != nil {
				t.Fatal(err)
			}
			per[src] = c
		}
		if len(per) != 10 {
			t.Fatalf("sources with rows in flight: %v", per)
		}
		for src, c := range per {
			if c != 2 {
				t.Errorf("%s has %d in flight, want 2", src, c)
			}
		}
	})
}

// syncBuffer is a log sink tests can read while the scheduler writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func runScheduler(t *testing.T, s statemachine.Store, cfg scheduler.Config, log *slog.Logger) (cancel func(), done <-chan error) {
	t.Helper()
	sch := newScheduler(t, s, cfg, log)
	ctx, stop := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() { ch <- sch.Run(ctx) }()
	t.Cleanup(stop)
	return stop, ch
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

// TestTripAndResume: failures reach --max-failed; the switch trips within
// the watch interval with a reason naming the numbers; a restarted
// scheduler promotes nothing; after the failures are retried and the switch
// cleared, it promotes again.
func TestTripAndResume(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		s := db.Open(t)
		plan(t, s, 2, 20, 2)
		cfg := scheduler.Config{MaxProcs: 6, Tick: 100 * time.Millisecond, WatchInterval: 50 * time.Millisecond, MaxFailed: 3}
		var logs syncBuffer
		_, done := runScheduler(t, s, cfg, slog.New(slog.NewTextHandler(&logs, nil)))
		waitFor(t, "first promotions", 5*time.Second, func() bool { return countSQL(t, s, "WHERE status = 'To dump'") == 6 })
		// Three dumps fail with the same message.
		failedAt := time.Now()
		for range 3 {
			ms, err := claimDumpAny(s)
			if err != nil || len(ms) != 1 {
				t.Fatal(ms, err)
			}
			if err := s.Fail(context.Background(), &ms[0], statemachine.Fields{}, "source database does not exist"); err != nil {
				t.Fatal(err)
			}
		}
		var err error
		select {
		case err = <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("scheduler did not trip within 5 s")
		}
		var tripped *scheduler.TrippedError
		if !errors.As(err, &tripped) || time.Since(failedAt) > 2*time.Second {
			t.Fatalf("Run returned %v after %s; want a trip within 2 s", err, time.Since(failedAt))
		}
		sw, _ := s.StopSwitch(context.Background())
		for _, want := range []string{"3 rows are in a failed status", "--max-failed 3", "(3 rows): source database does not exist"} {
			if !sw.Set || !strings.Contains(sw.Reason, want) {
				t.Errorf("switch %+v: reason lacks %q", sw, want)
			}
		}
		if !strings.Contains(logs.String(), "stop switch tripped") {
			t.Errorf("trip not logged:\n%s", logs.String())
		}

		// Restart: the switch persists; nothing is promoted, and the log says why.
		before := countSQL(t, s, "WHERE status <> 'Waiting'")
		logs = syncBuffer{}
		stop, done := runScheduler(t, s, cfg, slog.New(slog.NewTextHandler(&logs, nil)))
		time.Sleep(500 * time.Millisecond)
		if got := countSQL(t, s, "WHERE status <> 'Waiting'"); got != before {
			t.Fatalf("promoted while the switch was set: %d rows started, %d before", got, before)
		}
		if !strings.Contains(logs.String(), "stop switch is set") {
			t.Errorf("restarted scheduler does not say why it promotes nothing:\n%s", logs.String())
		}
		// The operator rolls the failed rows back (out of flight), then resumes.
		failed, _ := s.List(context.Background(), statemachine.Filter{Statuses: []statemachine.Status{statemachine.DumpFailed}})
		for _, m := range failed {
			if _, err := s.Operate(context.Background(), m.ID, statemachine.ActionRollback, "op", ""); err != nil {
				t.Fatal(err)
			}
		}
		var ms []statemachine.Migration
		for _, src := range []string{"src-0", "src-1"} {
			got, _ := s.Claim(context.Background(), statemachine.ClaimRequest{Role: statemachine.RoleRollback, Host: src, Owner: "rb", Limit: 5, Lease: time.Minute})
			ms = append(ms, got...)
		}
		for i := range ms {
			if err := s.Advance(context.Background(), &ms[i], statemachine.Fields{}, ""); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.ClearStop(context.Background(), "op"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "promotions after resume", 5*time.Second, func() bool {
			return countSQL(t, s, "WHERE status = 'To dump'") == 6
		})
		stop()
		if err := <-done; err != nil {
			t.Fatalf("Run after resume: %v", err)
		}
	})
}

// TestFailureRateTrip: the rate threshold needs the minimum sample, and
// names the numbers.
func TestFailureRateTrip(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		s := db.Open(t)
		plan(t, s, 1, 30, 1)
		if _, err := s.Promote(context.Background(), 30, "test"); err != nil {
			t.Fatal(err)
		}
		sch := newScheduler(t, s, scheduler.Config{MaxProcs: 30, MaxFailureRate: 0.25, MinSample: 10}, nil)
		step := func(fail bool) {
			ms, err := claimDumpAny(s)
			if err != nil || len(ms) != 1 {
				t.Fatal(ms, err)
			}
			if fail {
				err = s.Fail(context.Background(), &ms[0], statemachine.Fields{}, "lock wait timeout")
			} else {
				err = s.Advance(context.Background(), &ms[0], statemachine.Fields{DumpURL: "x", DumpSHA256: strings.Repeat("a", 64), DumpBytes: 1}, "")
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		for range 3 {
			step(true) // 3 of 3 failed, but below the minimum sample
		}
		if reason, err := sch.CheckFailures(context.Background()); err != nil || reason != "" {
			t.Fatalf("below the minimum sample: %q, %v", reason, err)
		}
		for range 9 {
			step(false) // 3 of 12 = 25%
		}
		reason, err := sch.CheckFailures(context.Background())
		if err != nil || !strings.Contains(reason, "3 of the last 12 steps failed") || !strings.Contains(reason, "(3 times): lock wait timeout") {
			t.Fatalf("at 25%%: %q, %v", reason, err)
		}
	})
}

// TestSecondSchedulerRefused: a second scheduler is refused and told who
// holds the lease.
func TestSecondSchedulerRefused(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		s := db.Open(t)
		stop, done := runScheduler(t, s, scheduler.Config{MaxProcs: 5, Tick: 50 * time.Millisecond, Holder: "ops-1 pid 100"}, nil)
		waitFor(t, "the first scheduler's lease", 5*time.Second, func() bool { _, ok, _ := s.Leader(context.Background()); return ok })
		err := newScheduler(t, db.Open(t), scheduler.Config{MaxProcs: 5, Holder: "ops-2 pid 200"}, nil).Run(context.Background())
		var held *statemachine.LeaseHeldError
		if !errors.As(err, &held) || !strings.Contains(err.Error(), "ops-1 pid 100") {
			t.Fatalf("second scheduler: %v", err)
		}
		stop()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		// The first released the lease on the way out: a new one starts at once.
		if _, ok, _ := s.Leader(context.Background()); ok {
			t.Fatal("lease still held after a clean stop")
		}
	})
}

// TestTakeOverFromDeadPredecessor: a scheduler restarted after a crash on
// the same machine takes the dead one's unexpired lease at once and
// promotes; while the holder's process runs, or when it ran on another
// machine, the start is refused and says why.
func TestTakeOverFromDeadPredecessor(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		s := db.Open(t)
		plan(t, s, 2, 5, 2)
		// The "previous scheduler" is a real process of this machine.
		prev := exec.Command("sleep", "60")
		if err := prev.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = prev.Process.Kill(); _ = prev.Wait() })
		id, err := procid.Of(prev.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		dead := statemachine.LeaderClaim{Holder: fmt.Sprintf("ops-1 pid %d (prev)", id.PID), Process: id.String(), TTL: time.Hour, MaxProcs: 4}
		if _, err := s.AcquireLeader(ctx, dead); err != nil {
			t.Fatal(err)
		}
		cfg := scheduler.Config{MaxProcs: 4, Tick: 50 * time.Millisecond, Holder: "ops-1 pid 2 (next)"}

		// Alive: refused, and told that its process runs.
		err = newScheduler(t, s, cfg, nil).Run(ctx)
		var refused *scheduler.HeldError
		var held *statemachine.LeaseHeldError
		if !errors.As(err, &refused) || !errors.As(err, &held) || !strings.Contains(refused.Alive, "still runs") || refused.Lease.Holder != dead.Holder {
			t.Fatalf("while the holder runs: %v", err)
		}
		// Another machine's holder cannot be checked: refused too.
		otherID := id
		otherID.Machine = "ops-2"
		elsewhere := statemachine.LeaderClaim{Holder: "ops-2 pid 9 (else)", Process: otherID.String(), TTL: time.Hour, TakeOver: dead.Holder}
		if _, err := s.AcquireLeader(ctx, elsewhere); err != nil {
			t.Fatal(err)
		}
		err = newScheduler(t, s, cfg, nil).Run(ctx)
		if !errors.As(err, &refused) || !strings.Contains(refused.Alive, "machine ops-2") {
			t.Fatalf("held from another machine: %v", err)
		}
		if _, err := s.AcquireLeader(ctx, statemachine.LeaderClaim{Holder: dead.Holder, Process: dead.Process, TTL: time.Hour, TakeOver: elsewhere.Holder}); err != nil {
			t.Fatal(err)
		}

		// The holder crashes: the next start takes over at once.
		if err := prev.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = prev.Wait()
		var logs syncBuffer
		start := time.Now()
		_, done := runScheduler(t, s, cfg, slog.New(slog.NewTextHandler(&logs, nil)))
		waitFor(t, "the lease to be taken over", 5*time.Second, func() bool {
			l, ok, _ := s.Leader(ctx)
			return ok && l.Holder == cfg.Holder
		})
		waitFor(t, "promotions", 5*time.Second, func() bool { return countSQL(t, s, inFlightWhere()) == 4 })
		took := time.Since(start)
		l, _, _ := s.Leader(ctx)
		if self := procid.Self(); l.Process != self.String() {
			t.Errorf("the lease records process %q, want this one's %q", l.Process, self)
		}
		if !strings.Contains(logs.String(), "taking over at once") || !strings.Contains(logs.String(), fmt.Sprintf("no process has pid %d", id.PID)) {
			t.Errorf("the log does not say why it took over:\n%s", logs.String())
		}
		select {
		case err := <-done:
			t.Fatalf("the scheduler stopped: %v", err)
		default:
		}
		t.Logf("took over the lease of a dead scheduler (pid %d) and promoted 4 rows in %s", id.PID, took.Round(time.Millisecond))
	})
}

func TestBadConfig(t *testing.T) {
	for _, cfg := range []scheduler.Config{
		{MaxProcs: 0}, {MaxProcs: -3}, {MaxProcs: 5, MaxFailureRate: 1.5}, {MaxProcs: 5, MaxFailureRate: -0.1},
		{MaxProcs: 5, MaxFailed: -1}, {MaxProcs: 5, Order: "random"}, {MaxProcs: 5, Window: time.Millisecond},
		{MaxProcs: 5, MaxAttempts: -2}, {MaxProcs: 5, Tick: time.Second, LeaseTTL: time.Second},
	} {
		cfg.Holder = "h"
		if _, err := scheduler.New(nil, cfg, nil, nil); err == nil {
			t.Errorf("accepted %+v", cfg)
		}
	}
}

// claimDumpAny claims one To dump row at whichever of the destinations
// dst-0 ... dst-9 has one (the dump step runs at the destination).
func claimDumpAny(s statemachine.Store) ([]statemachine.Migration, error) {
	for d := range 10 {
		ms, err := s.Claim(context.Background(), statemachine.ClaimRequest{Role: statemachine.RoleDump, Host: fmt.Sprintf("dst-%d", d), Owner: "a", Limit: 1, Lease: time.Minute})
		if err != nil || len(ms) > 0 {
			return ms, err
		}
	}
	return nil, nil
}

// finish walks n rows that are To dump all the way to Done (they have no
// DNS name, so there is no DNS step).
func finish(t *testing.T, s statemachine.Store, n int) {
	t.Helper()
	ctx := context.Background()
	steps := []struct {
		role statemachine.Role
		host string
	}{{statemachine.RoleDump, "dst-0"}, {statemachine.RoleImport, "dst-0"}, {statemachine.RoleClose, "src-0"}}
	for _, st := range steps {
		ms, err := s.Claim(ctx, statemachine.ClaimRequest{Role: st.role, Host: st.host, Owner: "agent", Limit: n, Lease: time.Minute})
		if err != nil || len(ms) != n {
			t.Fatalf("claim %s: %d rows, %v", st.role, len(ms), err)
		}
		for i := range ms {
			f := statemachine.Fields{}
			if st.role == statemachine.RoleDump {
				f = statemachine.Fields{DumpURL: "x", DumpSHA256: strings.Repeat("b", 64), DumpBytes: 1}
			}
			if err := s.Advance(ctx, &ms[i], f, ""); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestStateDatabaseOutage stops the real state database server mid-run and
// starts it again: the scheduler keeps running, logs the outage once, and
// promotes again once the database answers.
func TestStateDatabaseOutage(t *testing.T) {
	statetest.EnginesOnPrivateServers(t, func(t *testing.T, db stateDB, srv statetest.Server) {
		s := db.Open(t)
		plan(t, s, 1, 30, 1)
		var logs syncBuffer
		_, done := runScheduler(t, s, scheduler.Config{MaxProcs: 5, MaxPerSource: -1, Tick: 100 * time.Millisecond}, slog.New(slog.NewTextHandler(&logs, nil)))
		waitFor(t, "first promotions", 5*time.Second, func() bool { return countSQL(t, s, "WHERE status = 'To dump'") == 5 })

		if err := srv.Down(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second)
		select {
		case err := <-done:
			t.Fatalf("scheduler gave up during the outage: %v", err)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := srv.Up(ctx); err != nil {
			t.Fatal(err)
		}
		finish(t, s, 2)
		waitFor(t, "promotions after the outage", 10*time.Second, func() bool { return countSQL(t, s, "WHERE status = 'To dump'") == 5 })
		if n := countSQL(t, s, "WHERE status <> 'Waiting'"); n != 7 {
			t.Errorf("%d rows started, want 7 (5 + 2 freed slots)", n)
		}
		out := logs.String()
		if c := strings.Count(out, "state database unavailable"); c != 1 {
			t.Errorf("outage logged %d times in 3 s, want once:\n%s", c, out)
		}
		if !strings.Contains(out, "state database answers again") {
			t.Errorf("recovery not logged:\n%s", out)
		}
		select {
		case err := <-done:
			t.Fatalf("scheduler stopped: %v", err)
		default:
		}
	})
}

// TestDestinationCapsDoNotStarve: every source's first rows go to the same
// destination (a plan sorted by destination). The per-destination cap
// rejects most of the first candidates; the tick must look past them and
// still fill every slot, in one tick.
func TestDestinationCapsDoNotStarve(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		s := db.Open(t)
		var rows []statemachine.Planned
		for i := range 40 { // 40 rows per source: rows 0-3 to dst-0, 4-7 to dst-1...
			for src := range 20 {
				rows = append(rows, statemachine.Planned{Engine: statemachine.EngineMySQL, DatabaseName: fmt.Sprintf("db_%d_%d", src, i),
					Source: fmt.Sprintf("src-%02d", src), Destination: fmt.Sprintf("dst-%d", i/4)})
			}
		}
		if _, err := s.Plan(context.Background(), rows, "test", false); err != nil {
			t.Fatal(err)
		}
		sch := newScheduler(t, s, scheduler.Config{MaxProcs: 30, MaxPerSource: 4, MaxPerDestination: 3}, nil)
		if _, err := s.AcquireLeader(context.Background(), statemachine.LeaderClaim{Holder: "test-host pid 1", TTL: time.Minute, MaxProcs: 30}); err != nil {
			t.Fatal(err)
		}
		res, err := sch.Tick(context.Background())
		if err != nil || res.Promoted != 30 || res.InFlight != 30 {
			t.Fatalf("first tick: %+v, %v; want 30 promoted", res, err)
		}
		rs, err := s.DB().Query("SELECT destination, COUNT(*) FROM migration WHERE status = 'To dump' GROUP BY destination")
		if err != nil {
			t.Fatal(err)
		}
		defer rs.Close()
		for rs.Next() {
			var d string
			var c int
			if err := rs.Scan(&d, &c); err != nil {
				t.Fatal(err)
			}
			if c > 3 {
				t.Errorf("%s has %d in flight, cap 3", d, c)
			}
		}
	})
}
