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

// Case 4: the state database stops for 30 s while migrations are in
// flight.
func TestStateDatabaseOutage(t *testing.T) {
	t.Parallel()
	r := record(t, "4", "state database stopped for 30 s mid-run")
	d, ctx := fleet(t, 8, 40<<20, nil)
	big := largest(d, demo.MySQL)
	if err := d.StartMigration(ctx); err != nil {
		t.Fatal(err)
	}
	var inFlight, done int
	waitFor(ctx, t, d, "some rows Done and the largest in flight", 3*time.Minute, func() bool {
		counts, err := d.Store.Counts(ctx)
		if err != nil {
			return false
		}
		done = counts[statemachine.Done]
		inFlight = 0
		for st, n := range counts {
			if st.InFlight() {
				inFlight += n
			}
		}
		st := row(ctx, t, d, big).Status
		return done > 0 && (st == statemachine.Dumping || st == statemachine.Importing)
	})
	if err := d.Fleet.State.Down(); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	time.Sleep(30 * time.Second)
	if err := d.Fleet.State.Up(ctx); err != nil {
		t.Fatal(err)
	}
	r.inject("PostgreSQL state database stopped (fast shutdown) for %.0f s with %d rows Done and %d in flight, then started again", time.Since(t0).Seconds(), done, inFlight)
	settle(ctx, t, d, false)
	agents := []string{"dns-1"}
	for _, h := range d.Fleet.Hosts {
		agents = append(agents, h.ID)
	}
	for _, id := range agents {
		if d.Agent(id).Exited() {
			t.Errorf("agent %s exited during the outage", id)
		}
	}
	m := row(ctx, t, d, big)
	r.saw("every agent kept running; the largest row: %s", trail(ctx, t, d, m.ID))
	rep := checkInvariants(ctx, t, d, r)
	r.saw("%d of %d rows Done, none lost or duplicated", rep.Statuses[statemachine.Done], len(d.DBs))
	wantAllDone(t, d, rep)
}

// s3DownMidUpload starts a migration on a fleet whose largest database is
// about 40 MiB, waits until that database's dump is uploading (a multipart
// upload in progress) and kills the S3 server.
func s3DownMidUpload(t *testing.T) (*demo.Demo, context.Context, *demo.Database) {
	t.Helper()
	d, ctx := fleet(t, 8, 40<<20, nil)
	big := largest(d, demo.MySQL)
	prefix := dumpPrefix(big)
	if err := d.StartMigration(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, d, "the largest dump's upload", 2*time.Minute, func() bool {
		return row(ctx, t, d, big).Status == statemachine.Dumping && uploads(ctx, d, prefix) > 0
	})
	if err := d.Fleet.S3.Down(); err != nil {
		t.Fatal(err)
	}
	return d, ctx, big
}

// Case 5a: the S3 server goes down while a dump is being uploaded.
func TestS3DownMidUpload(t *testing.T) {
	t.Parallel()
	r := record(t, "5a", "S3 server down mid-upload")
	d, ctx, big := s3DownMidUpload(t)
	time.Sleep(8 * time.Second)
	if err := d.Fleet.S3.Up(ctx); err != nil {
		t.Fatal(err)
	}
	r.inject("S3 server killed for 8 s while %q's dump was uploading (other rows dumping and importing too)", big.Name)
	settle(ctx, t, d, false)
	m := row(ctx, t, d, big)
	r.saw("largest row: %s", trail(ctx, t, d, m.ID))
	rep := checkInvariants(ctx, t, d, r)
	r.saw("rows: %s", statusLine(rep.Statuses))
	// Either retried to Done, or failed with writes restored (the
	// invariants check the source); nothing else.
	for _, db := range d.DBs {
		m := row(ctx, t, d, db)
		if m.Status != statemachine.Done && !m.Status.Failed() {
			t.Errorf("row %s is %s", m.String(), m.Status)
		}
		if m.Status.Failed() && m.LastError == "" {
			t.Errorf("row %s is %s without a reason", m.String(), m.Status)
		}
	}
}

// Case 5c: the S3 server goes down mid-upload and stays down: the retries
// run out, the dump fails with the reason and writes restored at its
// source; rows past the dump fail their import (their sources stay
// blocked: the dump is their data) or their close (it re-checks the source
// against the stored manifest). S3 back, migrate retry: all Done.
func TestS3DownForGood(t *testing.T) {
	t.Parallel()
	r := record(t, "5c", "S3 server down mid-upload until the retries run out")
	d, ctx, big := s3DownMidUpload(t)
	r.inject("S3 server killed while %q's dump was uploading, and left down until every row settled", big.Name)
	settle(ctx, t, d, false)
	m := row(ctx, t, d, big)
	if m.Status != statemachine.DumpFailed || !strings.Contains(m.LastError, "refused") {
		t.Errorf("row %s is %s (%q), want Dump failed saying the store refused connections", m.String(), m.Status, m.LastError)
	}
	r.saw("largest row: %s", trail(ctx, t, d, m.ID))
	// the checker lists the bucket: S3 up first, nothing retried yet
	if err := d.Fleet.S3.Up(ctx); err != nil {
		t.Fatal(err)
	}
	rep := checkInvariants(ctx, t, d, r)
	r.saw("rows once settled with S3 down: %s; invariants then (S3 back, nothing retried yet): %s (failed dumps' sources writable again, failed imports' still blocked)", statusLine(rep.Statuses), rep.Summary())
	for st, n := range rep.Statuses {
		// a close reads the manifest from the store too (it re-checks the
		// source against it), so Close failed is expected as well
		if st.Failed() && n > 0 {
			if _, err := d.Tool(ctx, "retry", "--status", string(st)); err != nil {
				t.Fatal(err)
			}
		}
	}
	settle(ctx, t, d, false)
	rep = checkInvariants(ctx, t, d, r)
	r.saw("S3 up, migrate retry of the failed rows: %s", statusLine(rep.Statuses))
	wantAllDone(t, d, rep)
}

// Case 5b: a stored dump is corrupted on the S3 server's disk, another is
// deleted, before their imports; then the operator rolls both back.
func TestCorruptAndMissingDumps(t *testing.T) {
	t.Parallel()
	r := record(t, "5b", "a dump corrupted on disk, another deleted, before import")
	// The dumps are stored first (agent.store-first) by destination
	// agents that do not import yet.
	d, ctx := fleet(t, 10, 5<<20, func(o *demo.Options) { o.StoreFirst = true })
	for _, id := range []string{"mysql-dst-1", "postgres-dst-1"} {
		if err := d.SetRoles(id, "dump, close, rollback"); err != nil {
			t.Fatal(err)
		}
		if err := d.RestartAgent(id); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.StartMigration(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, d, "every row to wait for its import", 3*time.Minute, func() bool {
		n, err := d.Store.CountStatuses(ctx, statemachine.ToImport)
		return err == nil && n == len(d.DBs)
	})
	corrupt, missing := largest(d, demo.MySQL), largest(d, demo.Postgres)
	key := func(db *demo.Database) string {
		m := row(ctx, t, d, db)
		k := strings.TrimPrefix(m.DumpURL, "s3://"+d.Fleet.S3.Bucket+"/")
		if k == m.DumpURL {
			t.Fatalf("dump_url %q", m.DumpURL)
		}
		return k
	}
	path := d.Fleet.S3.ObjectPath(d.Fleet.S3.Bucket, key(corrupt))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x20
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(d.Fleet.S3.ObjectPath(d.Fleet.S3.Bucket, key(missing))); err != nil {
		t.Fatal(err)
	}
	r.inject("dumps stored first, the import role off at the destinations: one bit flipped in the middle of %q's stored dump (%d bytes) on the S3 server's disk; %q's dump file deleted", corrupt.Name, len(b), missing.Name)
	for _, id := range []string{"mysql-dst-1", "postgres-dst-1"} {
		if err := d.SetRoles(id, ""); err != nil {
			t.Fatal(err)
		}
		if err := d.RestartAgent(id); err != nil {
			t.Fatal(err)
		}
	}
	settle(ctx, t, d, false)
	for db, want := range map[*demo.Database]string{corrupt: "sha", missing: "not"} {
		m := row(ctx, t, d, db)
		if m.Status != statemachine.ImportFailed || !strings.Contains(strings.ToLower(m.LastError), want) {
			t.Errorf("row %s is %s (%q), want Import failed saying %q", m.String(), m.Status, m.LastError, want)
		}
		r.saw("%q: %s", db.Name, trail(ctx, t, d, m.ID))
	}
	rep := checkInvariants(ctx, t, d, r)
	if rep.Statuses[statemachine.Done] != len(d.DBs)-2 {
		t.Errorf("statuses %v, want all but the two Done", rep.Statuses)
	}
	// The operator's way out: roll both back; the sources take writes again.
	for _, db := range []*demo.Database{corrupt, missing} {
		if _, err := d.Tool(ctx, "rollback", "--id", fmt.Sprint(row(ctx, t, d, db).ID), "--execute"); err != nil {
			t.Fatal(err)
		}
	}
	settle(ctx, t, d, false)
	for _, db := range []*demo.Database{corrupt, missing} {
		if m := row(ctx, t, d, db); m.Status != statemachine.RolledBack {
			t.Errorf("after rollback row %s is %s (%s)", m.String(), m.Status, m.LastError)
		}
	}
	rep = checkInvariants(ctx, t, d, r)
	r.saw("then migrate rollback of both: %s; sources writable again", statusLine(rep.Statuses))
}

func statusLine(c map[statemachine.Status]int) string {
	var parts []string
	for _, st := range statemachine.Statuses {
		if c[st] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", c[st], st))
		}
	}
	return strings.Join(parts, ", ")
}
