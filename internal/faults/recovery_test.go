//go:build faults

package faults_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/demo"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// longLease is the agents' lease in the crash-recovery cases: far above the
// 5 s within which a restarted agent must take its predecessor's rows back,
// so that a lease running out cannot pass for it.
const longLease = time.Minute

// takenBackWithin is how soon after its restart an agent must have taken
// back the rows its killed predecessor held.
const takenBackWithin = 5 * time.Second

// Case 13a/13b: an agent killed with kill -9 in every step, restarted at
// once (as systemd would): the rows it held are taken back by its
// successor within 5 s of the restart, though their lease (1 min) still
// runs, and every row reaches Done. 13a moves dump-mode rows with the dump
// only stored (Dumping, Importing, Updating DNS, Closing source), 13b
// online rows under live writers (Syncing, Cutting over, Closing source).
func TestKillInEveryStep(t *testing.T) {
	t.Parallel()
	r := record(t, "13a", "kill -9 an agent in every step of dump mode, restarted at once (lease 1 min)")
	d, ctx := fleet(t, 16, 6<<20, func(o *demo.Options) {
		o.Lease = longLease
		o.StoreFirst = true
		o.MaxProcs = 4
	})
	if err := d.StartMigration(ctx); err != nil {
		t.Fatal(err)
	}
	killEveryStep(ctx, t, d, r, statemachine.Dumping, statemachine.Importing, statemachine.UpdatingDNS, statemachine.ClosingSource)
	settle(ctx, t, d, false)
	rep := checkInvariants(ctx, t, d, r)
	r.saw("rows: %s", statusLine(rep.Statuses))
	wantAllDone(t, d, rep)
}

func TestOnlineKillInEveryStep(t *testing.T) {
	t.Parallel()
	r := record(t, "13b", "online: kill -9 an agent in every step, restarted at once (lease 1 min)")
	d, ctx := fleet(t, 12, 6<<20, func(o *demo.Options) {
		o.Lease = longLease
		o.Mode = "online"
		o.Writers = 12
		o.WriterRate = 20
		o.MaxProcs = 4
	})
	if err := d.StartMigration(ctx); err != nil {
		t.Fatal(err)
	}
	killEveryStep(ctx, t, d, r, statemachine.Syncing, statemachine.CuttingOver, statemachine.ClosingSource)
	settle(ctx, t, d, false)
	rep := checkInvariants(ctx, t, d, r)
	onlineWriters(ctx, t, d, r)
	r.saw("rows: %s", statusLine(rep.Statuses))
	wantAllDone(t, d, rep)
}

// killEveryStep waits, step by step, for an agent to hold a row in the
// step, kills it with kill -9 and restarts it at once; then it checks that
// each killed agent's rows were taken back within takenBackWithin of its
// restart.
func killEveryStep(ctx context.Context, t *testing.T, d *demo.Demo, r *result, steps ...statemachine.Status) {
	t.Helper()
	for _, st := range steps {
		// A row may leave the step between a look and the kill: look again.
		waitFor(ctx, t, d, "an agent to hold a row in "+string(st)+" and be killed", 3*time.Minute, func() bool {
			_, err := d.KillHolder(ctx, st)
			if err != nil && !errors.Is(err, demo.ErrNoHolder) {
				t.Fatalf("kill the agent holding rows in %s: %v", st, err)
			}
			return err == nil
		})
	}
	kills, err := d.Kills(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, k := range kills {
		// A held row is taken back once its successor's first poll runs:
		// wait for that before judging.
		deadline := time.Now().Add(takenBackWithin + 10*time.Second)
		for len(k.Waited) < len(k.Held) && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
			fresh, err := d.Kills(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range fresh {
				if f.Process == k.Process && f.At.Equal(k.At) {
					k = f
				}
			}
		}
		worst := time.Duration(0)
		for _, m := range k.Held {
			w, ok := k.Waited[m.ID]
			switch {
			case !ok:
				t.Errorf("%s (killed in %s): row %s, held in %s, was not taken back: %s", k.Process, k.Step, m.String(), m.Status, trail(ctx, t, d, m.ID))
			case w > takenBackWithin:
				t.Errorf("%s (killed in %s): row %s was taken back %s after the restart, want within %s", k.Process, k.Step, m.String(), w.Round(time.Millisecond), takenBackWithin)
			}
			worst = max(worst, w)
		}
		if len(k.Held)+k.Landed == 0 {
			t.Errorf("%s (killed in %s) held no row when it died", k.Process, k.Step)
		}
		rows := "rows"
		if len(k.Held) == 1 {
			rows = "row"
		}
		parts = append(parts, fmt.Sprintf("in %s, %s holding %d %s: taken back within %s of its restart",
			k.Step, k.Process, len(k.Held), rows, worst.Round(time.Millisecond)))
	}
	r.inject("SIGKILL to the agent holding rows in each of %v as soon as one did, each restarted at once; lease 1 min", steps)
	r.saw("%s", strings.Join(parts, "; "))
}

// Case 10g/11h: the destination cannot catch up at the row's last cutover
// attempt (online.cutover-attempts 1): the cutover fails for good, and
// nothing of its stream — PostgreSQL slot, publication, subscription;
// MariaDB position record — nor its copy is left at either server.
func TestOnlineCutoverFailsForGood(t *testing.T) { onlineCutoverFailsForGood(t, demo.Postgres, "10g") }
func TestMySQLOnlineCutoverFailsForGood(t *testing.T) {
	onlineCutoverFailsForGood(t, demo.MySQL, "11h")
}

func onlineCutoverFailsForGood(t *testing.T, eng, id string) {
	t.Parallel()
	r := record(t, id, "online ("+eng+"): a cutover that fails for good (destination held through its last attempt)")
	d, ctx := fleet(t, 3, 4<<20, func(o *demo.Options) {
		o.Engine = eng
		o.Mode = "online"
		o.Writers = 3
		o.WriterRate = 20
		o.StallTimeout = time.Minute
		o.CutoverAttempts = 1
		o.CutoverTimeout = 2 * time.Second
	})
	db := largest(d, eng)
	toCutOver(ctx, t, d, db)
	release := holdApply(ctx, t, d, db)
	if err := d.RestartAgent(db.Source); err != nil {
		t.Fatal(err)
	}
	// Writes come back at the timeout; then the hold goes (dropping the
	// copy would wait for a MariaDB table lock).
	waitFor(ctx, t, d, "writes restored after the cutover timed out", 2*time.Minute, func() bool {
		m := row(ctx, t, d, db)
		return !m.BlockedAt.IsZero() && m.UnblockedAt.After(m.BlockedAt)
	})
	release()
	r.inject("the destination's apply held (a lock on the writer's table) through the only cutover attempt of %q (cutover-timeout 2 s, cutover-attempts 1)", db.Name)
	settle(ctx, t, d, false)
	m := row(ctx, t, d, db)
	if m.Status != statemachine.CutoverFailed || !strings.Contains(m.LastError, "did not catch up") {
		t.Errorf("row %s is %s (%s), want Cutover failed for the catch-up", m.String(), m.Status, m.LastError)
	}
	r.saw("row: %s", trail(ctx, t, d, m.ID))
	if err := demo.ProbeWrite(ctx, db.Engine, d.Fleet.Host(db.Source).Addr(), db.User, db.Password, db.Name); err != nil {
		t.Errorf("the source refuses its owner's writes after the failed cutover: %v", err)
	}
	rep := checkInvariants(ctx, t, d, r)
	if rep.Checked[demo.InvStreams] != 0 {
		t.Errorf("%d stream objects of ours are left at the servers", rep.Checked[demo.InvStreams])
	}
	onlineWriters(ctx, t, d, r)
	r.saw("no stream object of any row left at any server (%d found), the source takes writes; rows: %s", rep.Checked[demo.InvStreams], statusLine(rep.Statuses))
	if rep.Statuses[statemachine.Done] != len(d.DBs)-1 {
		t.Errorf("rows: %s; want every other row Done", statusLine(rep.Statuses))
	}
}

// Case 4b: the state database goes away while a large dump runs, then the
// dump's agent gets SIGTERM (systemctl stop). The agent exits within its
// stop bound (shutdown-timeout 20 s + stop-grace 5 s), saying which row it
// left; once the database is back, its restart takes that row back at once
// and the row reaches Done.
func TestSIGTERMWithStateDatabaseDown(t *testing.T) {
	t.Parallel()
	r := record(t, "4b", "SIGTERM to an agent while the state database is down")
	const shutdown, grace = 20 * time.Second, 5 * time.Second
	d, ctx := fleet(t, 8, 40<<20, func(o *demo.Options) {
		o.Lease = longLease
		o.StopGrace = grace
	})
	big := largest(d, demo.MySQL)
	if err := d.StartMigration(ctx); err != nil {
		t.Fatal(err)
	}
	var id int64
	waitFor(ctx, t, d, "the largest database's dump", 3*time.Minute, func() bool {
		m := row(ctx, t, d, big)
		id = m.ID
		return m.Status == statemachine.Dumping && !m.BlockedAt.IsZero()
	})
	if err := d.Fleet.State.Down(); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	if err := d.StopAgent(big.Destination, 2*time.Minute); err != nil {
		t.Fatalf("stop the agent of %s: %v", big.Destination, err)
	}
	took := time.Since(sent)
	r.inject("PostgreSQL state database stopped while %q was dumped (writes blocked at its source); then SIGTERM to the agent of %s (shutdown-timeout %s, stop-grace %s)", big.Name, big.Destination, shutdown, grace)
	if bound := shutdown + grace + 3*time.Second; took > bound {
		t.Errorf("the agent stopped %s after SIGTERM, want within %s", took.Round(time.Millisecond), bound)
	}
	p := d.Agent(big.Destination)
	logged, _ := os.ReadFile(p.LogPath())
	if code := p.ExitCode(); code != 0 {
		t.Errorf("the agent exited %d", code)
	}
	said := ""
	for _, l := range strings.Split(string(logged), "\n") {
		if strings.Contains(l, "stopped before every step ended") {
			said = l
		}
	}
	if said == "" || !strings.Contains(said, fmt.Sprintf("row %d (", id)) {
		t.Errorf("the agent's log does not name row %d, which it left: %q", id, said)
	}
	r.saw("the agent exited 0 after %s and logged the row it left", took.Round(100*time.Millisecond))
	if err := d.Fleet.State.Up(ctx); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	if err := d.RestartAgent(big.Destination); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, d, "the row to be taken back", time.Minute, func() bool { return eventSaid(ctx, t, d, id, "is gone (its process ended") })
	back := time.Since(restarted)
	if back > takenBackWithin+2*time.Second {
		t.Errorf("the row was taken back %s after the restart (lease 1 min), want within %s", back.Round(time.Millisecond), takenBackWithin)
	}
	settle(ctx, t, d, false)
	r.saw("state database back, agent restarted: the row taken back %s later; row: %s", back.Round(100*time.Millisecond), trail(ctx, t, d, id))
	rep := checkInvariants(ctx, t, d, r)
	wantAllDone(t, d, rep)
}
