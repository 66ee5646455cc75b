//go:build faults

package faults_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/demo"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// dnsWaiting starts the migration with the DNS agent stopped and waits
// until every row waits for DNS.
func dnsWaiting(t *testing.T, d *demo.Demo) {
	t.Helper()
	ctx := t.Context()
	if err := d.KillAgent("dns-1"); err != nil {
		t.Fatal(err)
	}
	if err := d.StartMigration(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, d, "every row to wait for DNS", 3*time.Minute, func() bool {
		n, err := d.Store.CountStatuses(ctx, statemachine.DNSToUpdate)
		return err == nil && n == len(d.DBs)
	})
}

// retryDNS is the operator's fix: migrate retry, then every row Done.
func retryDNS(t *testing.T, d *demo.Demo, r *result) {
	t.Helper()
	ctx := t.Context()
	if _, err := d.Tool(ctx, "retry", "--status", string(statemachine.DNSFailed)); err != nil {
		t.Fatal(err)
	}
	settle(ctx, t, d, false)
	rep := checkInvariants(ctx, t, d, r)
	r.saw("after the fix and migrate retry: %s", statusLine(rep.Statuses))
	wantAllDone(t, d, rep)
}

// failedDNS checks every row is DNS failed with a reason containing want.
func failedDNS(t *testing.T, d *demo.Demo, r *result, want string) {
	t.Helper()
	ctx := t.Context()
	settle(ctx, t, d, false)
	for i, db := range d.DBs {
		m := row(ctx, t, d, db)
		if m.Status != statemachine.DNSFailed || !strings.Contains(m.LastError, want) {
			t.Errorf("row %s is %s (%q), want DNS failed saying %q", m.String(), m.Status, m.LastError, want)
		}
		if i == 0 {
			r.saw("every row: %s", trail(ctx, t, d, m.ID))
		}
	}
	rep := checkInvariants(ctx, t, d, r)
	r.saw("invariants while failed: %s", rep.Summary())
}

// Case 6a: the DNS server is down when the rows reach DNS.
func TestBINDDown(t *testing.T) {
	t.Parallel()
	r := record(t, "6a", "BIND9 down")
	d, ctx := fleet(t, 6, 1<<20, nil)
	dnsWaiting(t, d)
	if err := d.Fleet.BIND.Down(); err != nil {
		t.Fatal(err)
	}
	if err := d.RestartAgent("dns-1"); err != nil {
		t.Fatal(err)
	}
	r.inject("BIND9 stopped while %d rows waited for DNS; started again once they failed", len(d.DBs))
	settle(ctx, t, d, false)
	if err := d.Fleet.BIND.Up(ctx); err != nil {
		t.Fatal(err)
	}
	failedDNS(t, d, r, "connection refused")
	retryDNS(t, d, r)
}

// Case 6b: the TSIG key is rotated at the DNS server, not in the agent's
// configuration.
func TestTSIGRotated(t *testing.T) {
	t.Parallel()
	r := record(t, "6b", "TSIG key rotated under us")
	d, ctx := fleet(t, 6, 1<<20, nil)
	dnsWaiting(t, d)
	if err := d.Fleet.BIND.RotateKey(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.RestartAgent("dns-1"); err != nil {
		t.Fatal(err)
	}
	r.inject("BIND9's TSIG secret replaced while %d rows waited for DNS; the agent keeps the old one", len(d.DBs))
	failedDNS(t, d, r, "BADSIG")
	d.SetSecret("FLEETMIGRATE_TSIG_SECRET", d.Fleet.BIND.KeySecret)
	if err := d.RestartAgent("dns-1"); err != nil {
		t.Fatal(err)
	}
	r.saw("fix: the new secret in the environment file, agent restarted")
	retryDNS(t, d, r)
}

// Case 7: the destination server crashes (SIGKILL) during an import and
// comes back after 3 s (InnoDB crash recovery).
func TestDestinationKilledMidImport(t *testing.T) {
	t.Parallel()
	r := record(t, "7", "destination server killed mid-import")
	d, ctx, big, loaded := midImport(t, nil)
	dst := d.Fleet.Host(big.Destination)
	dst.Kill()
	r.inject("MariaDB at %s SIGKILLed while it imported %q (%d of %d rows loaded), started again 3 s later", big.Destination, big.Name, loaded, big.Rows)
	time.Sleep(3 * time.Second)
	if err := dst.Up(ctx); err != nil {
		t.Fatal(err)
	}
	doneOrImportFailed(ctx, t, d, r, big)
}

// Case 7b: the destination's disk fills up during the imports (its data
// directory is a tmpfs with 24 MiB free; the largest database needs more).
func TestDestinationDiskFull(t *testing.T) {
	t.Parallel()
	r := record(t, "7b", "destination disk full")
	const free = 24 << 20
	d, ctx := fleet(t, 8, 40<<20, func(o *demo.Options) { o.Size.MySQLDestinationDiskFree = free })
	big := largest(d, demo.MySQL)
	dst := d.Fleet.Host(big.Destination)
	r.inject("MariaDB %s's data directory on a tmpfs with %d MiB free; %q alone holds %d rows (about %d MiB)", big.Destination, free>>20, big.Name, big.Rows, big.Rows*200>>20)
	if err := d.StartMigration(ctx); err != nil {
		t.Fatal(err)
	}
	settle(ctx, t, d, false)
	m := row(ctx, t, d, big)
	if m.Status != statemachine.ImportFailed || !strings.Contains(m.LastError, "disk") {
		t.Errorf("row %s is %s (%q), want Import failed naming the full disk", m.String(), m.Status, m.LastError)
	}
	r.saw("row: %s", trail(ctx, t, d, m.ID))
	rep := checkInvariants(ctx, t, d, r)
	r.saw("rows: %s; invariants while failed: %s (the partial imports dropped)", statusLine(rep.Statuses), rep.Summary())

	if err := dst.GrowDisk(ctx, 512<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Tool(ctx, "retry", "--status", string(statemachine.ImportFailed)); err != nil {
		t.Fatal(err)
	}
	settle(ctx, t, d, false)
	rep = checkInvariants(ctx, t, d, r)
	r.saw("the disk grown to 512 MiB free, migrate retry --status 'Import failed': %s", statusLine(rep.Statuses))
	wantAllDone(t, d, rep)
}

// frozenMidImport is midImport, then its destination server frozen
// (SIGSTOP: connections open, nothing answers).
func frozenMidImport(t *testing.T, tweak func(*demo.Options)) (*demo.Demo, context.Context, *demo.Database, *demo.Host) {
	t.Helper()
	d, ctx, big, _ := midImport(t, tweak)
	dst := d.Fleet.Host(big.Destination)
	if err := dst.Pause(); err != nil {
		t.Fatal(err)
	}
	return d, ctx, big, dst
}

// doneOrImportFailed waits for the fleet to settle and checks the
// invariants; db's row must have arrived or failed its import — in the
// import step, or in the dump step that imports as it dumps (both are
// right after its server went away) — nothing in between.
func doneOrImportFailed(ctx context.Context, t *testing.T, d *demo.Demo, r *result, db *demo.Database) {
	t.Helper()
	settle(ctx, t, d, false)
	m := row(ctx, t, d, db)
	r.saw("row: %s", trail(ctx, t, d, m.ID))
	rep := checkInvariants(ctx, t, d, r)
	r.saw("rows: %s", statusLine(rep.Statuses))
	if m.Status != statemachine.Done && m.Status != statemachine.ImportFailed && m.Status != statemachine.DumpFailed {
		t.Errorf("row %s is %s", m.String(), m.Status)
	}
	if strings.Contains(m.LastError, "NOT cleaned up") {
		t.Errorf("row %s failed without cleaning up: %s", m.String(), m.LastError)
	}
}

// Case 7c/7d: the destination server is killed mid-import and stays down
// through every attempt of the step; it comes back while the last
// attempt's cleanup waits for it. The row fails (its attempts are used
// up), but leaves nothing at the destination, and a retry completes it.
func TestDestinationDownThroughEveryAttempt(t *testing.T) {
	destinationDownThroughEveryAttempt(t, demo.MySQL, "7c")
}
func TestPostgresDestinationDownThroughEveryAttempt(t *testing.T) {
	destinationDownThroughEveryAttempt(t, demo.Postgres, "7d")
}

func destinationDownThroughEveryAttempt(t *testing.T, eng, id string) {
	t.Parallel()
	r := record(t, id, "destination server ("+eng+") down through every attempt of the import")
	d, ctx, big, loaded := midImportOf(t, eng)
	dst := d.Fleet.Host(big.Destination)
	killed := time.Now()
	dst.Kill()
	logPath := d.Agent(big.Destination).LogPath()
	// The last attempt's: after "attempts used up" (a cleanup of an
	// earlier attempt waits the same way, and under load the server could
	// then come back before the attempts ran out).
	waitFor(ctx, t, d, "the last attempt's cleanup to wait for "+big.Destination, 2*time.Minute, func() bool {
		b, _ := os.ReadFile(logPath)
		_, after, used := strings.Cut(string(b), "attempts used up")
		return used && strings.Contains(after, "failed; trying again until it works")
	})
	time.Sleep(2 * time.Second)
	if err := dst.Up(ctx); err != nil {
		t.Fatal(err)
	}
	r.inject("%s at %s SIGKILLed while it imported %q (%d of %d rows loaded); started again %s later, once every attempt had failed and the last one's cleanup waited for it",
		serverName(eng), big.Destination, big.Name, loaded, big.Rows, time.Since(killed).Round(time.Second))
	settle(ctx, t, d, false)
	m := row(ctx, t, d, big)
	r.saw("row: %s", trail(ctx, t, d, m.ID))
	if (m.Status != statemachine.DumpFailed && m.Status != statemachine.ImportFailed) || !strings.Contains(m.LastError, "gave up after") {
		t.Errorf("row %s is %s (%q), want failed after its attempts", m.String(), m.Status, m.LastError)
	}
	// Every row that was at that destination when it went down failed the
	// same way; none may have left anything behind.
	rows, err := d.Store.List(ctx, statemachine.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	failed := 0
	for _, x := range rows {
		if x.Status != statemachine.DumpFailed && x.Status != statemachine.ImportFailed {
			continue
		}
		failed++
		if strings.Contains(x.LastError, "NOT cleaned up") {
			t.Errorf("row %s: the cleanup did not wait for the server: %s", x.String(), x.LastError)
		}
	}
	rep := checkInvariants(ctx, t, d, r)
	r.saw("rows: %s; invariants while failed: %s (the partial imports dropped once the server answered)", statusLine(rep.Statuses), rep.Summary())
	for _, st := range []statemachine.Status{statemachine.DumpFailed, statemachine.ImportFailed} {
		if n, _ := d.Store.CountStatuses(ctx, st); n > 0 {
			if out, err := d.Tool(ctx, "retry", "--status", string(st)); err != nil {
				t.Fatalf("retry: %v\n%s", err, out)
			}
		}
	}
	settle(ctx, t, d, false)
	rep = checkInvariants(ctx, t, d, r)
	r.saw("migrate retry of the %d failed rows: %s", failed, statusLine(rep.Statuses))
	wantAllDone(t, d, rep)
}

// Case 9a: the destination server hangs (SIGSTOP: connections open,
// nothing answers) for longer than the agent's lease, shorter than its hang
// timeout (the default 5 minutes), during an import.
func TestDestinationHangs(t *testing.T) {
	t.Parallel()
	r := record(t, "9a", "destination server hangs (connections open, no answers) mid-import, shorter than the hang timeout")
	d, ctx, big, dst := frozenMidImport(t, nil)
	const hang = 25 * time.Second
	time.Sleep(hang)
	if err := dst.Resume(); err != nil {
		t.Fatal(err)
	}
	r.inject("MariaDB at %s frozen (SIGSTOP) for %s (the lease is 6 s) while it imported %q", big.Destination, hang, big.Name)
	doneOrImportFailed(ctx, t, d, r, big)
}

// Case 9b: the destination server hangs for longer than the agents' hang
// timeout (5 s here): the watchdog must cancel the import — it would wait
// on the frozen server forever, its row Importing, its lease renewed — and
// the retry must complete once the server is back.
func TestDestinationHangsPastTimeout(t *testing.T) {
	t.Parallel()
	r := record(t, "9b", "destination server hangs longer than the hang timeout mid-import")
	const hangTimeout = 5 * time.Second
	d, ctx, big, dst := frozenMidImport(t, func(o *demo.Options) { o.HangTimeout = hangTimeout })
	fired := waitWatchdog(ctx, t, d, big.Destination, time.Now(), hangTimeout)
	r.inject("MariaDB at %s frozen (SIGSTOP) while it imported %q, agents' hang timeout %s; resumed once the watchdog fired", big.Destination, big.Name, hangTimeout)
	if err := dst.Resume(); err != nil {
		t.Fatal(err)
	}
	tr := retriedAfterHang(ctx, t, d, r, big)
	r.saw("the watchdog cancelled the import %s after the freeze; row: %s", fired.Round(time.Second), tr)
}
