//go:build faults

package faults_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/demo"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// Case 8a: a second scheduler started beside the first is refused; the
// first killed with SIGKILL mid-run and restarted at once, as systemd
// would: the restarted one takes the dead one's lease at once, never keeps
// more than --max-procs in flight and promotes no row twice.
func TestTwoSchedulersAndKill(t *testing.T) {
	t.Parallel()
	r := record(t, "8a", "two schedulers; the leader killed with kill -9 and restarted at once")
	const maxProcs = 3
	d, ctx := fleet(t, 12, 5<<20, func(o *demo.Options) { o.MaxProcs = maxProcs })
	if err := d.StartMigration(ctx); err != nil {
		t.Fatal(err)
	}
	// In flight, sampled every 50 ms for the whole run.
	mctx, stopWatch := context.WithCancel(ctx)
	peak := make(chan int, 1)
	go func() {
		most := 0
		for mctx.Err() == nil {
			if n, err := d.Store.CountStatuses(mctx, statemachine.InFlightStatuses()...); err == nil {
				most = max(most, n)
			}
			time.Sleep(50 * time.Millisecond)
		}
		peak <- most
	}()
	// A second scheduler is refused while the first holds the lead.
	waitFor(ctx, t, d, "the first scheduler to lead", 30*time.Second, func() bool {
		l, ok, err := d.Store.Leader(ctx)
		return err == nil && ok && strings.Contains(l.Holder, fmt.Sprintf(" pid %d (", d.Scheduler().PID()))
	})
	second, err := d.StartScheduler("second")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, d, "the second scheduler to exit", 30*time.Second, second.Exited)
	msg := tailOf(second.LogPath())
	if second.ExitCode() != 4 || !strings.Contains(msg, "another scheduler is running") || !strings.Contains(msg, "still runs") {
		t.Errorf("second scheduler: exit %d (want 4), output:\n%s", second.ExitCode(), msg)
	}
	r.saw("the second refused at once (exit %d: %q)", second.ExitCode(), firstLine(msg))
	waitFor(ctx, t, d, "a few rows Done", 3*time.Minute, func() bool {
		n, err := d.Store.CountStatuses(ctx, statemachine.Done)
		return err == nil && n >= 3
	})
	l, _, err := d.Store.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d.KillScheduler()
	t0 := time.Now()
	if err := d.RestartScheduler(); err != nil {
		t.Fatal(err)
	}
	r.inject("--max-procs %d; a second scheduler started beside the first; then the first SIGKILLed after 3 rows were Done and restarted at once (its lease had %s left)",
		maxProcs, time.Until(l.ExpiresAt).Round(time.Second))
	waitFor(ctx, t, d, "the restarted scheduler to lead", 2*time.Second, func() bool {
		cur, ok, err := d.Store.Leader(ctx)
		return err == nil && ok && strings.Contains(cur.Holder, fmt.Sprintf(" pid %d (", d.Scheduler().PID()))
	})
	led := time.Since(t0)
	if d.Scheduler().Exited() {
		t.Fatalf("the restarted scheduler exited: %s", tailOf(d.Scheduler().LogPath()))
	}
	r.saw("the restarted one led %s after the kill (its predecessor's lease had not expired)", led.Round(time.Millisecond))
	settle(ctx, t, d, false)
	stopWatch()
	most := <-peak
	if most > maxProcs {
		t.Errorf("%d rows were in flight at once, more than --max-procs %d", most, maxProcs)
	}
	for _, db := range d.DBs {
		m := row(ctx, t, d, db)
		evs, err := d.Store.Events(ctx, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		promoted := 0
		for _, e := range evs {
			if e.From == statemachine.Waiting {
				promoted++
			}
		}
		if promoted != 1 {
			t.Errorf("row %s was promoted %d times", m.String(), promoted)
		}
	}
	rep := checkInvariants(ctx, t, d, r)
	r.saw("at most %d rows in flight at any sample, every row promoted once; rows: %s", most, statusLine(rep.Statuses))
	wantAllDone(t, d, rep)
}

// Case 8b: a wave of failures trips the stop switch: databases of the
// same names already exist at the destination (not ours: they must be
// left alone), so their dumps' preflight refuses them before any block.
func TestStopSwitchTrips(t *testing.T) {
	t.Parallel()
	r := record(t, "8b", "stop switch tripped by a wave of planted failures")
	d, ctx := fleet(t, 14, 1<<20, func(o *demo.Options) { o.MaxProcs = 4; o.MaxFailed = 3 })
	planted := 0
	for _, db := range d.DBs {
		if db.Engine == demo.MySQL && planted < 6 {
			if err := d.PlantForeign(ctx, db.Destination, db.Name); err != nil {
				t.Fatal(err)
			}
			planted++
		}
	}
	r.inject("%d of %d databases already exist (non-empty, someone else's) at their destination; --max-failed 3, --max-procs 4 (failed rows hold their slot)", planted, len(d.DBs))
	if err := d.StartMigration(ctx); err != nil {
		t.Fatal(err)
	}
	var sw statemachine.StopSwitch
	waitFor(ctx, t, d, "the stop switch", 3*time.Minute, func() bool {
		var err error
		sw, err = d.Store.StopSwitch(ctx)
		return err == nil && sw.Set
	})
	settle(ctx, t, d, true)
	rep := checkInvariants(ctx, t, d, r)
	r.saw("stop switch set (%q); rows: %s", sw.Reason, statusLine(rep.Statuses))
	if rep.Statuses[statemachine.Waiting] == 0 {
		t.Errorf("statuses %v: the stop switch should have left rows waiting", rep.Statuses)
	}
	if n := rep.Statuses[statemachine.DumpFailed]; n < 3 {
		t.Errorf("statuses %v: want at least 3 Dump failed (the dump's preflight sees the conflict)", rep.Statuses)
	}
	for _, db := range d.DBs {
		if m := row(ctx, t, d, db); m.Status == statemachine.DumpFailed {
			r.saw("a failed row: %q", m.LastError)
			break
		}
	}
}

func tailOf(path string) string {
	b, _ := os.ReadFile(path)
	s := strings.TrimSpace(string(b))
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return s
}

func firstLine(s string) string {
	lines := strings.Split(s, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], "another scheduler") {
			return strings.TrimSpace(lines[i])
		}
	}
	return lines[0]
}
