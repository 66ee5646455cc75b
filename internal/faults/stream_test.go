//go:build faults

package faults_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/demo"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// The streaming hand-off (issue 24): the destination's dump step runs the
// dump tool against the source server and imports what it writes as it
// writes it, beside the store. These cases break it while both run.

// Case 12a: the source's agent dies (SIGKILL) while the destination
// streams its database: the source agent holds no part of the stream (the
// destination reaches the source server itself), so the row goes on.
func TestStreamKillSourceAgent(t *testing.T) {
	t.Parallel()
	r := record(t, "12a", "kill -9 the source agent mid-stream while the destination imports")
	d, ctx, big := streamingFleet(t)
	before := row(ctx, t, d, big)
	if err := d.KillAgent(big.Source); err != nil {
		t.Fatal(err)
	}
	r.inject("SIGKILL to the agent of %s while %s streamed %q from it (dump tool running, tables created at the destination); restarted 5 s later", big.Source, big.Destination, big.Name)
	time.Sleep(5 * time.Second)
	if m := row(ctx, t, d, big); m.Status.Failed() || (m.Status == statemachine.Dumping && m.Fence != before.Fence) {
		t.Errorf("the stream was disturbed by the source agent's death: %s, fence %d (was %d): %s", m.Status, m.Fence, before.Fence, m.LastError)
	}
	if err := d.RestartAgent(big.Source); err != nil {
		t.Fatal(err)
	}
	settle(ctx, t, d, false)
	m := row(ctx, t, d, big)
	r.saw("row: %s", trail(ctx, t, d, m.ID))
	rep := checkInvariants(ctx, t, d, r)
	r.saw("%d of %d rows Done", rep.Statuses[statemachine.Done], len(d.DBs))
	wantAllDone(t, d, rep)
}

// Case 12c: the object store goes down while the dump streams into it and
// the import beside it runs: the attempt fails (nothing stored), the
// import beside it is dropped, writes are restored; S3 back, the retry
// takes the database whole.
func TestStreamStoreDown(t *testing.T) {
	t.Parallel()
	r := record(t, "12c", "object store down while dump and import both run")
	d, ctx, big := streamingFleet(t)
	if err := d.Fleet.S3.Down(); err != nil {
		t.Fatal(err)
	}
	// Down until the attempt gives up on the store (the S3 client rides
	// out a short outage by itself).
	down := time.Now()
	waitFor(ctx, t, d, "the attempt to fail on the store", 3*time.Minute, func() bool {
		return eventSaid(ctx, t, d, row(ctx, t, d, big).ID, "dropped the import")
	})
	r.inject("S3 server killed while %q streamed (dump tool running, tables created at %s), until the attempt gave up on it (%s)", big.Name, big.Destination, time.Since(down).Round(time.Second))
	if err := d.Fleet.S3.Up(ctx); err != nil {
		t.Fatal(err)
	}
	settle(ctx, t, d, false)
	m := row(ctx, t, d, big)
	r.saw("row: %s", trail(ctx, t, d, m.ID))
	wantEvent(ctx, t, d, r, m, "dropped the import")
	rep := checkInvariants(ctx, t, d, r)
	r.saw("rows: %s", statusLine(rep.Statuses))
	wantAllDone(t, d, rep)
}

// Case 12d: the dump fails after the import beside it started: the dump
// tool is killed at the destination's host with rows already loaded. The
// import reads the failure, not an end: it is dropped, nothing is stored,
// writes are restored, and the next attempt takes the database whole.
func TestStreamDumpDiesAfterImportStarted(t *testing.T) {
	t.Parallel()
	r := record(t, "12d", "the dump fails after the import beside it started")
	d, ctx, big := streamingFleet(t)
	pids := dumpToolsOf(t, big)
	if len(pids) == 0 {
		t.Fatalf("the dump tool of %q ended before it could be killed", big.Name)
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	r.inject("SIGKILL to the dump tool (pid %v) streaming %q while the import beside it loaded it at %s (its tables created there)", pids, big.Name, big.Destination)
	settle(ctx, t, d, false)
	m := row(ctx, t, d, big)
	r.saw("row: %s", trail(ctx, t, d, m.ID))
	wantEvent(ctx, t, d, r, m, "dropped the import")
	wantEvent(ctx, t, d, r, m, "writes restored at the source")
	rep := checkInvariants(ctx, t, d, r)
	r.saw("rows: %s", statusLine(rep.Statuses))
	wantAllDone(t, d, rep)
}

// streamingFleet starts a migration on a fleet whose largest database is
// about 40 MiB and returns once that database streams (streamUnderWay).
func streamingFleet(t *testing.T) (*demo.Demo, context.Context, *demo.Database) {
	t.Helper()
	d, ctx := fleet(t, 8, 40<<20, nil)
	big := largest(d, demo.MySQL)
	if err := d.StartMigration(ctx); err != nil {
		t.Fatal(err)
	}
	streamUnderWay(t, d, big)
	return d, ctx, big
}

// streamUnderWay waits until db's dump step streams: its dump tool runs
// and the import beside it has created the database's orders table at the
// destination. It returns the dump tool's processes.
func streamUnderWay(t *testing.T, d *demo.Demo, db *demo.Database) []int {
	t.Helper()
	ctx := t.Context()
	root := destinationRoot(t, d, db)
	var pids []int
	waitFor(ctx, t, d, "the large database's dump and import to be under way", 3*time.Minute, func() bool {
		if row(ctx, t, d, db).Status != statemachine.Dumping {
			return false
		}
		var n int
		err := root.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'orders'", db.Name).Scan(&n)
		if err != nil || n == 0 {
			return false
		}
		pids = dumpToolsOf(t, db)
		return len(pids) > 0
	})
	return pids
}

// dumpToolsOf finds the dump tool processes running for db (their
// command line names the database last).
func dumpToolsOf(t *testing.T, db *demo.Database) []int {
	t.Helper()
	var out []int
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range dirs {
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		tool := filepath.Base(args[0])
		if tool != "mariadb-dump" && tool != "mysqldump" && tool != "pg_dump" {
			continue
		}
		if args[len(args)-1] != db.Name && !strings.Contains(args[len(args)-1], "dbname="+db.Name) {
			continue
		}
		var pid int
		for _, c := range strings.TrimPrefix(strings.TrimSuffix(p, "/cmdline"), "/proc/") {
			pid = pid*10 + int(c-'0')
		}
		out = append(out, pid)
	}
	return out
}

// wantEvent fails the test unless one of m's events mentions what.
func wantEvent(ctx context.Context, t *testing.T, d *demo.Demo, r *result, m statemachine.Migration, what string) {
	t.Helper()
	evs, err := d.Store.Events(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if strings.Contains(e.Detail, what) {
			r.saw("event: %.200s", e.Detail)
			return
		}
	}
	t.Errorf("no event of row %s mentions %q", m.String(), what)
}
