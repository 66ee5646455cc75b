//go:build faults

package faults_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fleetmigrate/fleetmigrate/internal/demo"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// onlineFleet is a PostgreSQL fleet whose rows move online, each database
// with a live writer (demo_writes, through its DNS name).
func onlineFleet(t *testing.T, dbs int, maxBytes int64) (*demo.Demo, context.Context) {
	return fleet(t, dbs, maxBytes, func(o *demo.Options) {
		o.Engine = demo.Postgres
		o.Mode = "online"
		o.Writers = dbs
		o.WriterRate = 20
		// A stuck stream is made again well within a case's time.
		o.StallTimeout = time.Minute
	})
}

// eventSaid reports whether row id's events mention s.
func eventSaid(ctx context.Context, t *testing.T, d *demo.Demo, id int64, s string) bool {
	t.Helper()
	evs, err := d.Store.Events(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if strings.Contains(e.Detail, s) {
			return true
		}
	}
	return false
}

// holdApply takes an exclusive lock on db's writer table at its
// destination, so the stream cannot apply the writer's inserts (a
// destination that cannot keep up); release lets it go on.
func holdApply(ctx context.Context, t *testing.T, d *demo.Demo, db *demo.Database) (release func()) {
	t.Helper()
	c, err := pgx.Connect(ctx, d.Fleet.Host(db.Destination).RootDSN(db.Name))
	if err != nil {
		t.Fatal(err)
	}
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE demo_writes IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	done := false
	release = func() {
		if !done {
			done = true
			_ = tx.Commit(context.Background())
			_ = c.Close(context.Background())
		}
	}
	t.Cleanup(release)
	return release
}

// toCutOver starts the migration with the source's agent down, so that
// db's row stops in To cut over (synced, its stream running), and returns
// it; restart the source's agent to let the cutover run.
func toCutOver(ctx context.Context, t *testing.T, d *demo.Demo, db *demo.Database) statemachine.Migration {
	t.Helper()
	if err := d.KillAgent(db.Source); err != nil {
		t.Fatal(err)
	}
	if err := d.StartMigration(ctx); err != nil {
		t.Fatal(err)
	}
	var m statemachine.Migration
	waitFor(ctx, t, d, "the row to be synced", 3*time.Minute, func() bool {
		m = row(ctx, t, d, db)
		return m.Status == statemachine.ToCutOver || m.Status.Failed()
	})
	if m.Status != statemachine.ToCutOver {
		t.Fatalf("row %s is %s (%s), want To cut over", m.String(), m.Status, m.LastError)
	}
	return m
}

// Case 10a: the destination's agent dies (SIGKILL) while it follows the
// initial copy of a large database; the stream goes on in the servers.
func TestOnlineKillSyncAgent(t *testing.T) {
	t.Parallel()
	r := record(t, "10a", "online: kill -9 the destination agent while Syncing")
	d, ctx := onlineFleet(t, 4, 40<<20)
	big := largest(d, demo.Postgres)
	streaming(ctx, t, d, big)
	if err := d.KillAgent(big.Destination); err != nil {
		t.Fatal(err)
	}
	r.inject("SIGKILL to the agent of %s while it followed the initial copy of %q (%d rows) under a live writer", big.Destination, big.Name, big.Rows)
	time.Sleep(time.Second)
	if err := d.RestartAgent(big.Destination); err != nil {
		t.Fatal(err)
	}
	settledDone(ctx, t, d, r, big)
}

// Case 10b: the source's agent dies (SIGKILL) during the cutover, with
// writes blocked and the destination held; its restart (after the lease)
// restores writes and the row goes on.
func TestOnlineKillCutoverAgent(t *testing.T) {
	t.Parallel()
	r := record(t, "10b", "online: kill -9 the source agent while Cutting over")
	d, ctx := onlineFleet(t, 3, 4<<20)
	db := largest(d, demo.Postgres)
	toCutOver(ctx, t, d, db)
	release := holdApply(ctx, t, d, db)
	if err := d.RestartAgent(db.Source); err != nil {
		t.Fatal(err)
	}
	var m statemachine.Migration
	waitFor(ctx, t, d, "the cutover to block writes", time.Minute, func() bool {
		m = row(ctx, t, d, db)
		return m.Status == statemachine.CuttingOver && !m.BlockedAt.IsZero()
	})
	if err := d.KillAgent(db.Source); err != nil {
		t.Fatal(err)
	}
	r.inject("SIGKILL to the agent of %s while its cutover of %q waited, writes blocked, for a destination whose apply was held (a lock on the writer's table)", db.Source, db.Name)
	release()
	time.Sleep(time.Second)
	if err := d.RestartAgent(db.Source); err != nil {
		t.Fatal(err)
	}
	settledDone(ctx, t, d, r, db)
}

// Case 10c: the destination cannot catch up within the cutover timeout:
// writes are restored at once, the row goes back to syncing, and once the
// destination applies again the next cutover moves it.
func TestOnlineCatchUpTimeout(t *testing.T) {
	t.Parallel()
	r := record(t, "10c", "online: catch-up timeout (destination held)")
	d, ctx := onlineFleet(t, 3, 4<<20)
	db := largest(d, demo.Postgres)
	toCutOver(ctx, t, d, db)
	release := holdApply(ctx, t, d, db)
	if err := d.RestartAgent(db.Source); err != nil {
		t.Fatal(err)
	}
	var m statemachine.Migration
	waitFor(ctx, t, d, "the catch-up to time out", time.Minute, func() bool {
		m = row(ctx, t, d, db)
		return eventSaid(ctx, t, d, m.ID, "catch-up timed out") && m.Status != statemachine.CuttingOver
	})
	r.inject("the destination's apply held (a lock on the writer's table) while the cutover of %q waited for it", db.Name)
	m = row(ctx, t, d, db)
	if m.UnblockedAt.IsZero() || m.UnblockedAt.Before(m.BlockedAt) {
		t.Errorf("after the timeout the row does not say writes were restored: blocked %v unblocked %v", m.BlockedAt, m.UnblockedAt)
	}
	if err := demo.ProbeWrite(ctx, db.Engine, d.Fleet.Host(db.Source).Addr(), db.User, db.Password, db.Name); err != nil {
		t.Errorf("the source refuses its owner's writes after the timed-out cutover: %v", err)
	}
	r.saw("after the timeout: %s, the source takes writes", m.Status)
	release()
	settledDone(ctx, t, d, r, db)
}

// Case 10d: the customer changes the schema during the sync (a table
// without a key): the source keeps taking writes to it, the cutover refuses
// (writes restored, stream and destination copy removed); once the table
// has a key, a retry syncs again and moves it.
func TestOnlineDDLDuringSync(t *testing.T) {
	t.Parallel()
	r := record(t, "10d", "online: DDL during the sync")
	d, ctx := onlineFleet(t, 3, 4<<20)
	db := largest(d, demo.Postgres)
	m := toCutOver(ctx, t, d, db)
	src := d.Fleet.Host(db.Source)
	owner, err := pgx.Connect(ctx, demo.OwnerDSN(src, db))
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(context.Background())
	for _, q := range []string{"CREATE TABLE added_later (x int)", "INSERT INTO added_later VALUES (1), (2)", "UPDATE added_later SET x = 3 WHERE x = 1", "DELETE FROM added_later WHERE x = 2"} {
		if _, err := owner.Exec(ctx, q); err != nil {
			t.Fatalf("the source refused %q during the sync: %v", q, err)
		}
	}
	r.inject("the owner of %q created a table without a key while it synced (row %d in %s), and updated and deleted rows in it", db.Name, m.ID, m.Status)
	if err := d.RestartAgent(db.Source); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, d, "the cutover to refuse", time.Minute, func() bool {
		m = row(ctx, t, d, db)
		return m.Status.Failed() || m.Status == statemachine.Done
	})
	if m.Status != statemachine.CutoverFailed || !strings.Contains(m.LastError, `"public"."added_later"`) {
		t.Fatalf("row %s is %s (%s), want Cutover failed naming the table", m.String(), m.Status, m.LastError)
	}
	r.saw("%s: %.160s", m.Status, m.LastError)
	owner.Close(ctx) // ended by the cutover's block
	if owner, err = pgx.Connect(ctx, demo.OwnerDSN(src, db)); err != nil {
		t.Fatalf("the owner cannot connect after the refused cutover: %v", err)
	}
	if _, err := owner.Exec(ctx, "ALTER TABLE added_later ADD PRIMARY KEY (x)"); err != nil {
		t.Fatal(err)
	}
	if out, err := d.Tool(ctx, "retry", "--id", fmt.Sprint(m.ID)); err != nil {
		t.Fatalf("retry: %v\n%s", err, out)
	}
	r.inject("the owner gave the table a key; migrate retry --id %d", m.ID)
	settle(ctx, t, d, false)
	m = row(ctx, t, d, db)
	if m.Status != statemachine.Done {
		t.Errorf("row %s is %s (%s), want Done", m.String(), m.Status, m.LastError)
	}
	r.saw("row: %s", trail(ctx, t, d, m.ID))
	// The table is new since the baseline checksum: it is at the
	// destination, with its row.
	var x int
	c, err := pgx.Connect(ctx, d.Fleet.Host(db.Destination).RootDSN(db.Name))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if err := c.QueryRow(ctx, "SELECT x FROM added_later").Scan(&x); err != nil || x != 3 {
		t.Errorf("the new table at the destination: %d, %v", x, err)
	}
	if _, err := c.Exec(ctx, "DROP TABLE added_later"); err != nil { // the baseline checksum has no such table
		t.Fatal(err)
	}
	rep := checkInvariants(ctx, t, d, r)
	onlineWriters(ctx, t, d, r)
	wantAllDone(t, d, rep)
}

// Case 10e: an operator rolls one syncing row back and cancels another
// while their initial copies run.
func TestOnlineRollbackAndCancelWhileSyncing(t *testing.T) {
	t.Parallel()
	r := record(t, "10e", "online: rollback and cancel while Syncing")
	d, ctx := onlineFleet(t, 4, 40<<20)
	if err := d.StartMigration(ctx); err != nil {
		t.Fatal(err)
	}
	var dbs []*demo.Database
	for _, db := range d.DBs {
		if db.Rows > 20000 {
			dbs = append(dbs, db)
		}
	}
	if len(dbs) < 2 {
		dbs = []*demo.Database{largest(d, demo.Postgres)}
	}
	actions := []string{"rollback", "cancel"}
	var ids []int64
	for i, db := range dbs[:min(2, len(dbs))] {
		var m statemachine.Migration
		waitFor(ctx, t, d, "a stream to start", 3*time.Minute, func() bool {
			m = row(ctx, t, d, db)
			switch m.Status {
			case statemachine.Waiting, statemachine.ToSync:
				return false
			case statemachine.Syncing:
				return eventSaid(ctx, t, d, m.ID, "streaming from")
			}
			return true
		})
		if m.Status != statemachine.Syncing {
			t.Logf("row %s is already %s: not %s while syncing", m.String(), m.Status, actions[i])
			continue
		}
		if out, err := d.Tool(ctx, actions[i], "--id", fmt.Sprint(m.ID), "--execute"); err != nil {
			t.Fatalf("%s: %v\n%s", actions[i], err, out)
		}
		r.inject("migrate %s --id %d --execute while %q (%d rows) was Syncing", actions[i], m.ID, db.Name, db.Rows)
		ids = append(ids, m.ID)
	}
	if len(ids) == 0 {
		t.Fatal("no row was caught syncing")
	}
	settle(ctx, t, d, false)
	for _, id := range ids {
		m, err := d.Store.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if m.Status != statemachine.RolledBack {
			t.Errorf("row %s is %s (%s), want Rolled back", m.String(), m.Status, m.LastError)
		}
		r.saw("row %d: %s", id, trail(ctx, t, d, id))
	}
	rep := checkInvariants(ctx, t, d, r)
	r.saw("%d rows Done, %d Rolled back", rep.Statuses[statemachine.Done], rep.Statuses[statemachine.RolledBack])
}

// streaming starts the migration and waits until db's row is Syncing with
// its stream created.
func streaming(ctx context.Context, t *testing.T, d *demo.Demo, db *demo.Database) statemachine.Migration {
	t.Helper()
	if err := d.StartMigration(ctx); err != nil {
		t.Fatal(err)
	}
	var m statemachine.Migration
	waitFor(ctx, t, d, "the large database's stream to start", 3*time.Minute, func() bool {
		m = row(ctx, t, d, db)
		return m.Status == statemachine.Syncing && eventSaid(ctx, t, d, m.ID, "streaming from")
	})
	return m
}

// settledDone waits for the fleet to settle and checks that db's row and
// every other reached Done, the invariants and the writers.
func settledDone(ctx context.Context, t *testing.T, d *demo.Demo, r *result, db *demo.Database) {
	t.Helper()
	settle(ctx, t, d, false)
	m := row(ctx, t, d, db)
	if m.Status != statemachine.Done || m.Mode != statemachine.ModeOnline {
		t.Errorf("row %s is %s mode %s (%s), want Done online", m.String(), m.Status, m.Mode, m.LastError)
	}
	r.saw("row: %s", trail(ctx, t, d, m.ID))
	rep := checkInvariants(ctx, t, d, r)
	onlineWriters(ctx, t, d, r)
	wantAllDone(t, d, rep)
}

// onlineWriters checks the live writers: every acknowledged write is at the
// destination, none was accepted at the source after the block.
func onlineWriters(ctx context.Context, t *testing.T, d *demo.Demo, r *result) {
	t.Helper()
	rep := d.CheckWriters(ctx)
	for _, p := range rep.Problems {
		t.Errorf("writers: %s", p)
	}
	r.saw("writers: %d writes acknowledged, %d missing at the destination, %d accepted at the source after the block", rep.Acked, rep.Missing, rep.LateAtSource)
}

// Case 10f: the destination server crashes (SIGKILL) during the initial
// copy of a large database and comes back after 3 s: the subscription
// resumes (its slot at the source kept its place), the copy finishes.
func TestOnlineDestinationRestartedMidSync(t *testing.T) {
	t.Parallel()
	r := record(t, "10f", "online: destination server killed mid-sync")
	d, ctx := onlineFleet(t, 3, 40<<20)
	big := largest(d, demo.Postgres)
	streaming(ctx, t, d, big)
	dst := d.Fleet.Host(big.Destination)
	dst.Kill()
	r.inject("PostgreSQL at %s SIGKILLed during the initial copy of %q (%d rows), started again 3 s later", big.Destination, big.Name, big.Rows)
	time.Sleep(3 * time.Second)
	if err := dst.Up(ctx); err != nil {
		t.Fatal(err)
	}
	// Rows whose attempts ran out while the server was down (their next
	// claim could not reach it) fail; the operator retries them, and the
	// retry starts from what they left (recorded, removed first).
	settle(ctx, t, d, false)
	if n, _ := d.Store.CountStatuses(ctx, statemachine.SyncFailed); n > 0 {
		if out, err := d.Tool(ctx, "retry", "--status", string(statemachine.SyncFailed)); err != nil {
			t.Fatalf("retry: %v\n%s", err, out)
		}
		r.inject("%d rows Sync failed (attempts used up while the server was down): migrate retry --status 'Sync failed'", n)
	}
	settledDone(ctx, t, d, r, big)
}
