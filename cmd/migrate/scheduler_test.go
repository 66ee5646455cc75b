package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/statetest"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/statemachine/storetest"
)

// planRows plans n rows spread over sources src-0.. via the CLI.
func planRows(t *testing.T, db stateDB, sources, perSource int) {
	t.Helper()
	var b strings.Builder
	b.WriteString("engine,database,source,destination,dns_name\n")
	for i := range perSource {
		for s := range sources {
			fmt.Fprintf(&b, "mysql,db_%d_%d,src-%d,dst-%d,\n", s, i, s, s)
		}
	}
	if code, _, stderr := migrate(t, db, b.String(), "plan", "--file", "-"); code != 0 {
		t.Fatalf("plan: %s", stderr)
	}
}

func startScheduler(t *testing.T, db stateDB, args ...string) *fleettest.Proc {
	t.Helper()
	return fleettest.Start(t, fleettest.Build(t, "."), processEnv(t, db), args...)
}

func countWhere(t *testing.T, db stateDB, where string) int {
	t.Helper()
	s := testStore(t, db)
	var n int
	if err := s.DB().QueryRow("SELECT COUNT(*) FROM migration " + where).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func eventually(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func TestTwoSchedulersOneRuns(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		mustUpgrade(t, db)
		planRows(t, db, 2, 5)
		a := startScheduler(t, db, "--max-procs", "4", "--tick", "100ms")
		b := startScheduler(t, db, "--max-procs", "4", "--tick", "100ms")
		// Exactly one of them exits, non-zero, naming the other.
		var loser, winner *fleettest.Proc
		eventually(t, "one scheduler to give up", 10*time.Second, func() bool { return !a.Running() || !b.Running() })
		if !a.Running() {
			loser, winner = a, b
		} else {
			loser, winner = b, a
		}
		// Exit 4: the shipped unit restarts it (a standby), unlike 1-3.
		if code := loser.ExitCode(t, time.Second); code != 4 {
			t.Fatalf("losing scheduler exit %d, want 4\n%s", code, loser.Stderr.String())
		}
		for _, want := range []string{
			fmt.Sprintf("another scheduler is running: held by %s pid %d (", hostname(), winner.Pid()),
			fmt.Sprintf("pid %d still runs", winner.Pid()),
		} {
			if !strings.Contains(loser.Stderr.String(), want) {
				t.Errorf("loser says:\n%s\nwant %q", loser.Stderr.String(), want)
			}
		}
		eventually(t, "promotions", 5*time.Second, func() bool { return countWhere(t, db, "WHERE status = 'To dump'") == 4 })
		if !winner.Running() {
			t.Fatal("the winner stopped")
		}
	})
}

// TestKilledSchedulerRestartsAtOnce: kill -9 of the scheduler, restarted
// at once as systemd would: the new process sees that the lease's holder
// is a process of this machine that is gone, takes the lease within a
// tick or two instead of after it (15 s), and goes on promoting without
// ever exceeding --max-procs.
func TestKilledSchedulerRestartsAtOnce(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		mustUpgrade(t, db)
		planRows(t, db, 2, 10)
		first := startScheduler(t, db, "--max-procs", "4", "--tick", "100ms")
		eventually(t, "promotions", 10*time.Second, func() bool { return countWhere(t, db, "WHERE status = 'To dump'") == 4 })
		s := testStore(t, db)
		l, ok, err := s.Leader(context.Background())
		if err != nil || !ok || time.Until(l.ExpiresAt) < 10*time.Second {
			t.Fatalf("lease: %+v, %v, %v (want one that outlives the restart by far)", l, ok, err)
		}
		if err := first.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		first.ExitCode(t, 5*time.Second)
		// Two rows finish meanwhile (their agents go on): the restarted
		// scheduler refills exactly to --max-procs.
		done := statetest.Walk(t, s, []statetest.Step{{Role: statemachine.RoleDump, Host: "dst-0"}, {Role: statemachine.RoleImport, Host: "dst-0"},
			{Role: statemachine.RoleClose, Host: "src-0"}}, nil)
		if n := countWhere(t, db, "WHERE status = 'Done'"); n != 2 || len(done) != 2 {
			t.Fatalf("%d rows Done by hand, want 2", n)
		}
		restarted := time.Now()
		second := startScheduler(t, db, "--max-procs", "4", "--tick", "100ms")
		eventually(t, "the restarted scheduler to lead", 2*time.Second, func() bool {
			cur, ok, _ := s.Leader(context.Background())
			return ok && strings.Contains(cur.Holder, fmt.Sprintf(" pid %d (", second.Pid()))
		})
		eventually(t, "promotions by the restarted scheduler", 2*time.Second, func() bool { return countWhere(t, db, "WHERE status = 'To dump'") == 4 })
		took := time.Since(restarted)
		for range 10 {
			if n := countWhere(t, db, "WHERE status = 'To dump'"); n != 4 {
				t.Fatalf("%d rows in flight, want --max-procs 4", n)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if !second.Running() {
			t.Fatalf("the restarted scheduler stopped:\n%s", second.Stderr.String())
		}
		if !strings.Contains(second.Stderr.String(), "taking over at once") || !strings.Contains(second.Stderr.String(), fmt.Sprintf("no process has pid %d", first.Pid())) {
			t.Errorf("the restarted scheduler does not say why it took over:\n%s", second.Stderr.String())
		}
		t.Logf("the restarted scheduler led and promoted %s after its start (lease left: %s)", took.Round(time.Millisecond), time.Until(l.ExpiresAt).Round(time.Second))
	})
}

// hostname is the host ID a migrate process uses by default.
func hostname() string {
	h, _ := os.Hostname()
	return strings.ToLower(h)
}

func TestSIGINTStopsAtOnce(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		mustUpgrade(t, db)
		planRows(t, db, 3, 10)
		p := startScheduler(t, db, "--max-procs", "6", "--tick", "100ms")
		eventually(t, "promotions", 10*time.Second, func() bool { return countWhere(t, db, "WHERE status = 'To dump'") == 6 })
		s := testStore(t, db)
		snapshot := func() string {
			rows, err := s.List(context.Background(), statemachine.Filter{})
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			for _, m := range rows {
				fmt.Fprintf(&b, "%d %s %d %s|", m.ID, m.Status, m.Fence, m.UpdatedAt)
			}
			return b.String()
		}
		before := snapshot()
		sent := time.Now()
		if err := p.Cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		code := p.ExitCode(t, 5*time.Second)
		took := time.Since(sent)
		if code != 0 || took > time.Second {
			t.Fatalf("exit %d after %s; want 0 within 1 s\n%s", code, took, p.Stderr.String())
		}
		if !strings.Contains(p.Stdout.String(), "6 rows still in flight") {
			t.Errorf("stdout: %q", p.Stdout.String())
		}
		// Free two slots: nobody promotes into them, and nothing else moved.
		freeSlots(t, s, 2)
		time.Sleep(500 * time.Millisecond)
		if n := countWhere(t, db, "WHERE status = 'To dump'"); n != 4 {
			t.Errorf("%d rows To dump after the stop, want the 4 left", n)
		}
		if n := countWhere(t, db, "WHERE status = 'Waiting'"); n != 24 {
			t.Errorf("%d rows Waiting, want 24: something promoted after SIGINT", n)
		}
		if after := snapshot(); countChanged(before, after) != 2 {
			t.Errorf("%d rows changed after SIGINT, want only the 2 the test moved", countChanged(before, after))
		}
		if _, held, _ := s.Leader(context.Background()); held {
			t.Error("lease still held: a new scheduler would have to wait")
		}
	})
}

// freeSlots takes n To dump rows out of flight the way the fleet would.
func freeSlots(t *testing.T, s statemachine.Store, n int) {
	t.Helper()
	done := 0
	for src := 0; done < n && src < 10; src++ {
		done += storetest.RollBackOut(t, s, fmt.Sprintf("dst-%d", src), n-done)
	}
	if done != n {
		t.Fatalf("freed %d slots, want %d", done, n)
	}
}

func countChanged(before, after string) int {
	a, b := strings.Split(before, "|"), strings.Split(after, "|")
	n := 0
	for i := range a {
		if i >= len(b) || a[i] != b[i] {
			n++
		}
	}
	return n
}

func TestTripRestartResume(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		mustUpgrade(t, db)
		planRows(t, db, 2, 10)
		args := []string{"--max-procs", "6", "--tick", "100ms", "--max-failed", "3"}
		p := startScheduler(t, db, args...)
		eventually(t, "promotions", 10*time.Second, func() bool { return countWhere(t, db, "WHERE status = 'To dump'") == 6 })
		s := testStore(t, db)
		ctx := context.Background()
		ms, err := s.Claim(ctx, statemachine.ClaimRequest{Role: statemachine.RoleDump, Host: "dst-0", Owner: "agent", Limit: 3, Lease: time.Minute})
		if err != nil || len(ms) != 3 {
			t.Fatal(ms, err)
		}
		for i := range ms {
			if err := s.Fail(ctx, &ms[i], statemachine.Fields{}, "access denied for user 'root'@'10.1.2.3'"); err != nil {
				t.Fatal(err)
			}
		}
		if code := p.ExitCode(t, 5*time.Second); code != exitTripped {
			t.Fatalf("exit %d, want %d\n%s", code, exitTripped, p.Stderr.String())
		}
		for _, want := range []string{"stop switch tripped: 3 rows are in a failed status (--max-failed 3)", "(3 rows): access denied", "migrate resume"} {
			if !strings.Contains(p.Stderr.String(), want) {
				t.Errorf("stderr lacks %q:\n%s", want, p.Stderr.String())
			}
		}
		// status shows the switch and the failures grouped by error.
		code, out, _ := migrate(t, db, "", "status")
		if code != 0 || !strings.Contains(out, "stop switch:    SET by scheduler") || !strings.Contains(out, "3  access denied for user") {
			t.Errorf("status after the trip:\n%s", out)
		}

		// Restart: the switch stays set; nothing is promoted.
		p = startScheduler(t, db, args...)
		freeSlots(t, s, 1)
		time.Sleep(600 * time.Millisecond)
		if n := countWhere(t, db, "WHERE status = 'Waiting'"); n != 14 {
			t.Fatalf("%d rows Waiting, want 14: promoted while the switch was set", n)
		}
		if !strings.Contains(p.Stderr.String(), "stop switch is set") {
			t.Errorf("restarted scheduler does not say why it promotes nothing:\n%s", p.Stderr.String())
		}
		// The operator rolls the failures back (the rollback agent finishes
		// them) and resumes: promotions start again.
		code, out, stderr := migrate(t, db, "", "rollback", "--status", "Dump failed")
		if code != 0 || !strings.Contains(out, "dry run: would roll back 3 rows") {
			t.Fatalf("rollback dry run: %d %q %q", code, out, stderr)
		}
		if n := countWhere(t, db, "WHERE status = 'Dump failed'"); n != 3 {
			t.Fatalf("dry run changed rows: %d Dump failed", n)
		}
		if code, out, stderr := migrate(t, db, "", "rollback", "--status", "Dump failed", "--execute"); code != 0 || !strings.Contains(out, "rollback: 3 rows") {
			t.Fatalf("rollback: %d %q %q", code, out, stderr)
		}
		rb, err := s.Claim(ctx, statemachine.ClaimRequest{Role: statemachine.RoleRollback, Host: "src-0", Owner: "agent", Limit: 5, Lease: time.Minute})
		if err != nil || len(rb) != 3 {
			t.Fatal(rb, err)
		}
		for i := range rb {
			if err := s.Advance(ctx, &rb[i], statemachine.Fields{}, ""); err != nil {
				t.Fatal(err)
			}
		}
		if code, out, _ := migrate(t, db, "", "resume"); code != 0 || !strings.Contains(out, "stop switch cleared") {
			t.Fatalf("resume: %d %q", code, out)
		}
		eventually(t, "promotions after resume", 5*time.Second, func() bool { return countWhere(t, db, "WHERE status = 'To dump'") == 6 })
		if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := p.ExitCode(t, 5*time.Second); code != 0 {
			t.Fatalf("SIGTERM: exit %d\n%s", code, p.Stderr.String())
		}
	})
}

func TestSchedulerBadInput(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--max-procs", "0"}, {"--max-procs", "-5"}, {"--tick", "10s"},
		{"--max-procs", "10", "--max-failure-rate", "1.5"}, {"--max-procs", "10", "--max-failure-rate", "-1"},
		{"--max-procs", "10", "--max-failed", "-1"}, {"--max-procs", "10", "--order", "random"},
		{"--max-procs", "10", "--max-per-source", "-1"}, {"--max-procs", "10", "--window", "0s"},
		{"--max-procs", "10", "--min-sample", "-3"}, {"--max-procs", "ten"}, {"--max-procs", "10", "--tick", "0s"},
		{"--max-procs", "10", "--max-attempts", "0"}, {"--max-procs", "10", "--lease", "1s"},
	} {
		var out, errb bytes.Buffer
		code := run(context.Background(), args, strings.NewReader(""), &out, &errb)
		if code != 2 {
			t.Errorf("migrate %v: exit %d, want 2; stderr %q", args, code, errb.String())
		}
	}
}

func TestOperatorCommands(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		mustUpgrade(t, db)
		planRows(t, db, 2, 3) // rows 1..6: src-0 has db_0_*, src-1 has db_1_*
		s := testStore(t, db)
		ctx := context.Background()

		// stop / resume
		if code, _, _ := migrate(t, db, "", "stop"); code != 2 {
			t.Error("stop without --reason accepted")
		}
		code, out, _ := migrate(t, db, "", "stop", "--reason", "DC power work")
		if code != 0 || !strings.Contains(out, "stop switch set by") {
			t.Fatalf("stop: %d %q", code, out)
		}
		if sw, _ := s.StopSwitch(ctx); !sw.Set || sw.Reason != "DC power work" {
			t.Fatalf("switch in the table: %+v", sw)
		}
		if code, out, _ := migrate(t, db, "", "stop", "--reason", "again"); code != 0 || !strings.Contains(out, "already set") {
			t.Errorf("second stop: %d %q", code, out)
		}
		if code, out, _ := migrate(t, db, "", "resume"); code != 0 || !strings.Contains(out, "DC power work") {
			t.Errorf("resume: %d %q", code, out)
		}
		if sw, _ := s.StopSwitch(ctx); sw.Set {
			t.Fatal("switch still set after resume")
		}

		// cancel: dry run by default, Waiting only, filter required
		if code, _, _ := migrate(t, db, "", "cancel"); code != 2 {
			t.Error("cancel without a filter accepted")
		}
		code, out, _ = migrate(t, db, "", "cancel", "--source", "src-1")
		if code != 0 || !strings.Contains(out, "dry run: would cancel 3 rows") || countWhere(t, db, "WHERE status = 'Cancelled'") != 0 {
			t.Fatalf("cancel dry run: %d %q", code, out)
		}
		code, out, _ = migrate(t, db, "", "cancel", "--source", "src-1", "--execute")
		if code != 0 || !strings.Contains(out, "cancel: 3 rows") || countWhere(t, db, "WHERE status = 'Cancelled'") != 3 {
			t.Fatalf("cancel: %d %q", code, out)
		}

		// retry touches only failed rows matching the filter
		if _, err := s.Promote(ctx, 3, "test"); err != nil {
			t.Fatal(err)
		}
		ms, _ := s.Claim(ctx, statemachine.ClaimRequest{Role: statemachine.RoleDump, Host: "dst-0", Owner: "a", Limit: 3, Lease: time.Minute})
		for i := range ms[:2] {
			if err := s.Fail(ctx, &ms[i], statemachine.Fields{}, "boom"); err != nil {
				t.Fatal(err)
			}
		}
		code, out, _ = migrate(t, db, "", "retry", "--id", fmt.Sprint(ms[0].ID))
		if code != 0 || !strings.Contains(out, "Dump failed -> To dump") || countWhere(t, db, "WHERE status = 'Dump failed'") != 1 {
			t.Fatalf("retry --id: %d %q", code, out)
		}
		if code, _, stderr := migrate(t, db, "", "retry", "--status", "Waiting"); code != 2 || !strings.Contains(stderr, "applies to rows in") {
			t.Errorf("retry --status Waiting: %d %q", code, stderr)
		}
		if code, _, stderr := migrate(t, db, "", "retry", "--id", fmt.Sprint(ms[2].ID)); code != 1 || !strings.Contains(stderr, `is "Dumping"`) {
			t.Errorf("retry of a Dumping row: %d %q", code, stderr)
		}
		code, out, _ = migrate(t, db, "", "retry")
		if code != 0 || !strings.Contains(out, "retry: 1 row") || countWhere(t, db, "WHERE status = 'Dump failed'") != 0 {
			t.Fatalf("retry all: %d %q", code, out)
		}

		// rollback refuses rows whose DNS name moved, unless told
		m := ms[2]
		if err := s.Record(ctx, &m, statemachine.Fields{Marks: []statemachine.Mark{statemachine.MarkSwitched}}, ""); err != nil {
			t.Fatal(err)
		}
		if err := s.Fail(ctx, &m, statemachine.Fields{}, "verify failed"); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := migrate(t, db, "", "rollback", "--id", fmt.Sprint(m.ID), "--execute")
		if code != 1 || !strings.Contains(stderr, "--discard-destination-writes") {
			t.Fatalf("rollback of a switched row: %d %q", code, stderr)
		}
		// ...and then the name must go back to the source first, which
		// needs the dns section (TestRollbackPointsDNSBack does it)
		code, _, stderr = migrate(t, db, "", "rollback", "--id", fmt.Sprint(m.ID), "--execute", "--discard-destination-writes")
		if code != 1 || !strings.Contains(stderr, "needs the dns section") || countWhere(t, db, "WHERE status = 'To roll back'") != 0 {
			t.Fatalf("rollback --discard-destination-writes without DNS: %d %q", code, stderr)
		}

		// pause-source / resume-source
		code, out, _ = migrate(t, db, "", "pause-source", "SRC-0", "--reason", "disk swap")
		if code != 0 || !strings.Contains(out, "source src-0 paused") {
			t.Fatalf("pause-source: %d %q", code, out)
		}
		if rep := statusJSON(t, db); len(rep.PausedSources) != 1 || rep.PausedSources[0].Reason != "disk swap" {
			t.Fatalf("status shows pauses: %+v", rep.PausedSources)
		}
		if code, out, _ := migrate(t, db, "", "resume-source", "src-0"); code != 0 || !strings.Contains(out, "resumed") {
			t.Errorf("resume-source: %d %q", code, out)
		}
		if code, out, _ := migrate(t, db, "", "resume-source", "src-0"); code != 0 || !strings.Contains(out, "was not paused") {
			t.Errorf("resume-source twice: %d %q", code, out)
		}
		if code, _, _ := migrate(t, db, "", "pause-source"); code != 2 {
			t.Error("pause-source without a host accepted")
		}
	})
}

// TestStatusMatchesSQL seeds rows in many statuses and compares status's
// counts with counts read directly from the table.
func TestStatusMatchesSQL(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		mustUpgrade(t, db)
		planRows(t, db, 4, 10)
		s := testStore(t, db)
		ctx := context.Background()
		if _, err := s.Promote(ctx, 25, "test"); err != nil {
			t.Fatal(err)
		}
		ms, _ := s.Claim(ctx, statemachine.ClaimRequest{Role: statemachine.RoleDump, Host: "dst-0", Owner: "a", Limit: 5, Lease: time.Minute})
		for i := range ms[:3] {
			if err := s.Fail(ctx, &ms[i], statemachine.Fields{}, fmt.Sprintf("error %d", i%2)); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Advance(ctx, &ms[3], statemachine.Fields{DumpURL: "x", DumpSHA256: strings.Repeat("c", 64), DumpBytes: 1}, ""); err != nil {
			t.Fatal(err)
		}
		freeSlots(t, s, 2) // two Rolled back
		rep := statusJSON(t, db)
		rows, err := s.DB().Query("SELECT status, COUNT(*) FROM migration GROUP BY status")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		sqlCounts := map[statemachine.Status]int{}
		total := 0
		for rows.Next() {
			var st string
			var n int
			if err := rows.Scan(&st, &n); err != nil {
				t.Fatal(err)
			}
			sqlCounts[statemachine.Status(st)] = n
			total += n
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		for _, st := range statemachine.Statuses {
			if rep.Counts[st] != sqlCounts[st] {
				t.Errorf("%s: status says %d, SQL %d", st, rep.Counts[st], sqlCounts[st])
			}
		}
		inFlight := countWhere(t, db, "WHERE status NOT IN ('Waiting', 'Done', 'Cancelled', 'Rolled back')")
		failed := countWhere(t, db, "WHERE status LIKE '%failed'")
		if rep.Total != total || rep.InFlight != inFlight || rep.Failed != failed || rep.Finished != sqlCounts[statemachine.RolledBack] {
			t.Errorf("totals: %+v; SQL total %d in flight %d failed %d", rep, total, inFlight, failed)
		}
		if len(rep.FailedByError) != 2 || rep.FailedByError[0] != (statemachine.ErrorGroup{Error: "error 0", Count: 2}) {
			t.Errorf("failed by error: %+v", rep.FailedByError)
		}
		// The text form shows the same numbers.
		code, out, _ := migrate(t, db, "", "status")
		for _, want := range []string{
			fmt.Sprintf("in flight:      %d / no scheduler (%d failed", inFlight, failed),
			fmt.Sprintf("  %-16s %10d", "Waiting", sqlCounts[statemachine.Waiting]),
			fmt.Sprintf("%d of %d finished", sqlCounts[statemachine.RolledBack], total),
		} {
			if code != 0 || !strings.Contains(out, want) {
				t.Errorf("status text lacks %q:\n%s", want, out)
			}
		}
	})
}

func TestStatusWatchRedraws(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		mustUpgrade(t, db)
		planRows(t, db, 1, 3)
		// Frames come every 2 s; 4.5 s leaves a loaded machine time for
		// the second (it failed at 2.5 s when the tests ran beside others).
		ctx, cancel := context.WithTimeout(context.Background(), 4500*time.Millisecond)
		defer cancel()
		var out, errb bytes.Buffer
		cfgArgs := []string{"status", "--watch", "--state-dsn", db.DSN, "--state-driver", db.Driver}
		if code := run(ctx, cfgArgs, strings.NewReader(""), &out, &errb); code != 0 {
			t.Fatalf("watch: %d %s", code, errb.String())
		}
		if frames := strings.Count(out.String(), "\033[H\033[2J"); frames < 2 || frames > 3 {
			t.Errorf("%d frames in 4.5 s, want 2 or 3 (one every 2 s)", frames)
		}
		if !strings.Contains(out.String(), "progress:       [") {
			t.Errorf("no progress bar:\n%s", out.String())
		}
	})
}

func TestMetricsEndpoint(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		mustUpgrade(t, db)
		planRows(t, db, 2, 5)
		addr := fleettest.FreeAddr(t)
		p := startScheduler(t, db, "--max-procs", "3", "--tick", "100ms", "--metrics-addr", addr)
		eventually(t, "promotions", 10*time.Second, func() bool { return countWhere(t, db, "WHERE status = 'To dump'") == 3 })
		var body string
		eventually(t, "metrics after a tick", 5*time.Second, func() bool {
			var err error
			if body, err = fleettest.Get("http://" + addr + "/metrics"); err != nil {
				return false
			}
			return strings.Contains(body, "fleetmigrate_in_flight 3") && strings.Contains(body, `fleetmigrate_rows{status="To dump"} 3`)
		})
		for _, want := range []string{
			"fleetmigrate_max_procs 3", `fleetmigrate_rows{status="To dump"} 3`, `fleetmigrate_rows{status="Waiting"} 7`,
			"fleetmigrate_promoted_total 3", "fleetmigrate_stop_switch 0", "fleetmigrate_scheduler_leader 1",
			"fleetmigrate_scheduler_tick_seconds_count", "fleetmigrate_rows_lease_expired 0",
			"fleetmigrate_write_blocked_rows 0", "fleetmigrate_write_blocked_max_seconds 0",
		} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics lacks %q; it has:\n%s", want, grepLines(body, "fleetmigrate_"))
			}
		}
		if strings.Contains(body, "src-0") || strings.Contains(body, "db_0") {
			t.Error("/metrics carries host or database names")
		}
		if ok, err := fleettest.Get("http://" + addr + "/healthz"); err != nil || ok != "ok\n" {
			t.Fatalf("/healthz: %q %v", ok, err)
		}
		_ = p.Cmd.Process.Signal(syscall.SIGTERM)
		if code := p.ExitCode(t, 5*time.Second); code != 0 {
			t.Fatalf("exit %d", code)
		}
	})
}

// grepLines returns the lines of s that start with prefix.
func grepLines(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
