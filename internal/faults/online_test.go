//go:build faults

package faults_test

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fleetmigrate/fleetmigrate/internal/demo"
	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// onlineFleet is a fleet of one engine whose rows move online, each
// database with a live writer (demo_writes, through its DNS name).
func onlineFleet(t *testing.T, eng string, dbs int, maxBytes int64) (*demo.Demo, context.Context) {
	return fleet(t, dbs, maxBytes, func(o *demo.Options) {
		o.Engine = eng
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
	h := d.Fleet.Host(db.Destination)
	var unlock func()
	switch db.Engine {
	case demo.Postgres:
		c, err := pgx.Connect(ctx, h.RootDSN(db.Name))
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
		unlock = func() {
			_ = tx.Commit(context.Background())
			_ = c.Close(context.Background())
		}
	default:
		sdb, err := sql.Open("mysql", h.RootDSN(db.Name))
		if err != nil {
			t.Fatal(err)
		}
		c, err := sdb.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.ExecContext(ctx, "LOCK TABLES demo_writes WRITE"); err != nil {
			t.Fatal(err)
		}
		unlock = func() {
			_, _ = c.ExecContext(context.Background(), "UNLOCK TABLES")
			_ = c.Close()
			_ = sdb.Close()
		}
	}
	done := false
	release = func() {
		if !done {
			done = true
			unlock()
		}
	}
	t.Cleanup(release)
	return release
}

// toCutOver starts the migration and takes the source's agent down, so
// that db's row is synced (its stream running) and its cutover — the
// destination's step — waits for the source's agent to plan the block,
// nothing blocked; it returns the row. Restart the source's agent to let
// the cutover run. A PostgreSQL row's sync asks the source's agent to
// publish first: that agent goes down right after it has answered (the
// sync's copy and verification take far longer than 20 ms); a MariaDB
// row's sync asks it nothing, and it is down from the start.
func toCutOver(ctx context.Context, t *testing.T, d *demo.Demo, db *demo.Database) statemachine.Migration {
	t.Helper()
	if db.Engine != demo.Postgres {
		if err := d.KillAgent(db.Source); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.StartMigration(ctx); err != nil {
		t.Fatal(err)
	}
	if db.Engine == demo.Postgres {
		id := row(ctx, t, d, db).ID
		waitFor(ctx, t, d, "the source's agent to publish the database", 2*time.Minute, func() bool {
			asks, err := d.Store.AsksOf(ctx, id, "")
			if err != nil {
				t.Fatal(err)
			}
			return slices.ContainsFunc(asks, func(a statemachine.Ask) bool { return a.Action == "publish" && a.Answered() })
		})
		if err := d.KillAgent(db.Source); err != nil {
			t.Fatal(err)
		}
	}
	var m statemachine.Migration
	waitFor(ctx, t, d, "the row to be synced", 3*time.Minute, func() bool {
		m = row(ctx, t, d, db)
		return m.Status == statemachine.ToCutOver || m.Status == statemachine.CuttingOver || m.Status.Failed()
	})
	if (m.Status != statemachine.ToCutOver && m.Status != statemachine.CuttingOver) || !m.BlockedAt.IsZero() {
		t.Fatalf("row %s is %s (%s, blocked at %v), want To cut over or Cutting over, nothing blocked", m.String(), m.Status, m.LastError, m.BlockedAt)
	}
	return m
}

// Case 10a/11a: the destination's agent dies (SIGKILL) while it syncs a
// large database (PostgreSQL: its stream goes on in the servers; MariaDB:
// its stream stops with it, and the restarted agent resumes it from its
// position record).
func TestOnlineKillSyncAgent(t *testing.T)      { onlineKillSyncAgent(t, demo.Postgres, "10a") }
func TestMySQLOnlineKillSyncAgent(t *testing.T) { onlineKillSyncAgent(t, demo.MySQL, "11a") }

func onlineKillSyncAgent(t *testing.T, eng, id string) {
	t.Parallel()
	r := record(t, id, "online ("+eng+"): kill -9 the destination agent while Syncing")
	d, ctx := onlineFleet(t, eng, 4, 40<<20)
	big := largest(d, eng)
	streaming(ctx, t, d, big)
	if err := d.KillAgent(big.Destination); err != nil {
		t.Fatal(err)
	}
	r.inject("SIGKILL to the agent of %s while it synced %q (%d rows) under a live writer", big.Destination, big.Name, big.Rows)
	time.Sleep(time.Second)
	if err := d.RestartAgent(big.Destination); err != nil {
		t.Fatal(err)
	}
	settledDone(ctx, t, d, r, big)
}

// Case 10b/11b: the cutover's agent — the destination's — dies (SIGKILL)
// during the cutover, with writes blocked at the source and the
// destination's apply held; its restart takes the row back at once (its
// predecessor is gone), has the source's agent restore writes, and the row
// goes on.
func TestOnlineKillCutoverAgent(t *testing.T)      { onlineKillCutoverAgent(t, demo.Postgres, "10b") }
func TestMySQLOnlineKillCutoverAgent(t *testing.T) { onlineKillCutoverAgent(t, demo.MySQL, "11b") }

func onlineKillCutoverAgent(t *testing.T, eng, id string) {
	t.Parallel()
	r := record(t, id, "online ("+eng+"): kill -9 the cutover's agent (the destination's) while Cutting over")
	d, ctx := onlineFleet(t, eng, 3, 4<<20)
	db := largest(d, eng)
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
	if err := d.KillAgent(db.Destination); err != nil {
		t.Fatal(err)
	}
	r.inject("SIGKILL to the agent of %s while its cutover of %q waited, writes blocked at the source, for its apply, held (a lock on the writer's table)", db.Destination, db.Name)
	release()
	time.Sleep(time.Second)
	if err := d.RestartAgent(db.Destination); err != nil {
		t.Fatal(err)
	}
	settledDone(ctx, t, d, r, db)
}

// Case 10c/11c: the destination cannot catch up within the cutover
// timeout: writes are restored at once, the row goes back to syncing, and
// once the destination applies again the next cutover moves it.
func TestOnlineCatchUpTimeout(t *testing.T)      { onlineCatchUpTimeout(t, demo.Postgres, "10c") }
func TestMySQLOnlineCatchUpTimeout(t *testing.T) { onlineCatchUpTimeout(t, demo.MySQL, "11c") }

func onlineCatchUpTimeout(t *testing.T, eng, id string) {
	t.Parallel()
	r := record(t, id, "online ("+eng+"): catch-up timeout (destination held)")
	d, ctx := onlineFleet(t, eng, 3, 4<<20)
	db := largest(d, eng)
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

// Case 10d/11d: the customer changes the schema during the sync (a table
// without a key): the source keeps taking writes to it, the cutover
// refuses (writes restored, stream and destination copy removed); once the
// table has a key, a retry syncs again and moves it.
func TestOnlineDDLDuringSync(t *testing.T) {
	onlineDDLDuringSync(t, demo.Postgres, "10d", `"public"."added_later"`)
}
func TestMySQLOnlineDDLDuringSync(t *testing.T) {
	onlineDDLDuringSync(t, demo.MySQL, "11d", "`added_later`")
}

func onlineDDLDuringSync(t *testing.T, eng, id, named string) {
	t.Parallel()
	r := record(t, id, "online ("+eng+"): DDL during the sync")
	d, ctx := onlineFleet(t, eng, 3, 4<<20)
	db := largest(d, eng)
	m := toCutOver(ctx, t, d, db)
	src := d.Fleet.Host(db.Source)
	if err := demo.OwnerExec(ctx, src, db, "CREATE TABLE added_later (x int)", "INSERT INTO added_later VALUES (1), (2)",
		"UPDATE added_later SET x = 3 WHERE x = 1", "DELETE FROM added_later WHERE x = 2"); err != nil {
		t.Fatalf("the source refused the owner's DDL and writes during the sync: %v", err)
	}
	r.inject("the owner of %q created a table without a key while it synced (row %d in %s), and updated and deleted rows in it", db.Name, m.ID, m.Status)
	if err := d.RestartAgent(db.Source); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, d, "the cutover to refuse", time.Minute, func() bool {
		m = row(ctx, t, d, db)
		return m.Status.Failed() || m.Status == statemachine.Done
	})
	if m.Status != statemachine.CutoverFailed || !strings.Contains(m.LastError, named) {
		t.Fatalf("row %s is %s (%s), want Cutover failed naming the table", m.String(), m.Status, m.LastError)
	}
	r.saw("%s: %.160s", m.Status, m.LastError)
	if err := demo.OwnerExec(ctx, src, db, "ALTER TABLE added_later ADD PRIMARY KEY (x)"); err != nil {
		t.Fatalf("the owner cannot change the table after the refused cutover: %v", err)
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
	// destination, with its row; then it goes (the baseline has no such
	// table).
	dst := d.Fleet.Host(db.Destination)
	if got := scalar(ctx, t, db.Engine, dst.RootDSN(db.Name), "SELECT x FROM added_later"); got != "3" {
		t.Errorf("the new table at the destination holds %q, want 3", got)
	}
	scalar(ctx, t, db.Engine, dst.RootDSN(db.Name), "DROP TABLE added_later")
	rep := checkInvariants(ctx, t, d, r)
	onlineWriters(ctx, t, d, r)
	wantAllDone(t, d, rep)
}

// Case 10e/11e: an operator rolls one syncing row back and cancels another
// while they sync.
func TestOnlineRollbackAndCancelWhileSyncing(t *testing.T) {
	onlineRollbackAndCancel(t, demo.Postgres, "10e")
}
func TestMySQLOnlineRollbackAndCancelWhileSyncing(t *testing.T) {
	onlineRollbackAndCancel(t, demo.MySQL, "11e")
}

func onlineRollbackAndCancel(t *testing.T, eng, id string) {
	t.Parallel()
	r := record(t, id, "online ("+eng+"): rollback and cancel while Syncing")
	d, ctx := onlineFleet(t, eng, 4, 40<<20)
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
		dbs = []*demo.Database{largest(d, eng)}
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
				return eventSaid(ctx, t, d, m.ID, "streaming from") || eventSaid(ctx, t, d, m.ID, "copying")
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
	waitFor(ctx, t, d, "the large database's sync to start", 3*time.Minute, func() bool {
		m = row(ctx, t, d, db)
		return m.Status == statemachine.Syncing && (eventSaid(ctx, t, d, m.ID, "streaming from") || eventSaid(ctx, t, d, m.ID, "copying"))
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
	r.saw("writers: %d writes acknowledged (%d more committed without an answer), %d missing at the destination, %d accepted at the source after the block", rep.Acked, rep.Unanswered, rep.Missing, rep.LateAtSource)
}

// Case 10f/11f: the destination server crashes (SIGKILL) while a large
// database syncs and comes back after 3 s: the stream resumes (PostgreSQL:
// its slot at the source kept its place; MariaDB: its position record
// committed with what it applied), or is made again from the start.
func TestOnlineDestinationRestartedMidSync(t *testing.T) {
	onlineDestinationRestarted(t, demo.Postgres, "10f")
}
func TestMySQLOnlineDestinationRestartedMidSync(t *testing.T) {
	onlineDestinationRestarted(t, demo.MySQL, "11f")
}

func onlineDestinationRestarted(t *testing.T, eng, id string) {
	t.Parallel()
	r := record(t, id, "online ("+eng+"): destination server killed mid-sync")
	d, ctx := onlineFleet(t, eng, 3, 40<<20)
	big := largest(d, eng)
	streaming(ctx, t, d, big)
	dst := d.Fleet.Host(big.Destination)
	dst.Kill()
	r.inject("the %s server at %s SIGKILLed while %q (%d rows) synced, started again 3 s later", eng, big.Destination, big.Name, big.Rows)
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

// scalar runs a statement as the administrator on one engine's server and
// returns the first column of its first row ("" if none).
func scalar(ctx context.Context, t *testing.T, eng, dsn, q string) string {
	t.Helper()
	var out sql.NullString
	switch eng {
	case demo.Postgres:
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		rows, err := c.Query(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		defer rows.Close()
		if rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				t.Fatal(err)
			}
			out = sql.NullString{String: fmt.Sprint(vals[0]), Valid: true}
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	default:
		db, err := sql.Open("mysql", dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		rows, err := db.QueryContext(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		defer rows.Close()
		if rows.Next() {
			if err := rows.Scan(&out); err != nil {
				t.Fatal(err)
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return out.String
}

// Case 11g: the destination's agent dies (SIGKILL) while its row waits to
// be cut over — its stream dies with it — and, while it is down, the
// source purges the binary log the stream still needs: once restarted, its
// cutover sees it before blocking anything and sends the row back to
// syncing, and it syncs it again from the start.
func TestMySQLOnlinePurgedUnderTheStream(t *testing.T) {
	t.Parallel()
	r := record(t, "11g", "online (mysql): kill -9 the destination agent, binary log purged under its stream")
	d, ctx := onlineFleet(t, demo.MySQL, 3, 4<<20)
	db := largest(d, demo.MySQL)
	m := toCutOver(ctx, t, d, db)
	if err := d.KillAgent(db.Destination); err != nil {
		t.Fatal(err)
	}
	root, err := sql.Open("mysql", d.Fleet.Host(db.Source).RootDSN(""))
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if err := fleettest.PurgeBinaryLogs(ctx, root); err != nil {
		t.Fatal(err)
	}
	r.inject("SIGKILL to the agent of %s while row %d waited to be cut over (its stream died with it); the source's binary logs purged up to the newest", db.Destination, m.ID)
	if err := d.RestartAgent(db.Source); err != nil {
		t.Fatal(err)
	}
	// The cutover (the destination's, taken back by its restarted agent)
	// sees the purge before it blocks anything: back to syncing.
	if err := d.RestartAgent(db.Destination); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, d, "the cutover to see the purge", time.Minute, func() bool {
		return eventSaid(ctx, t, d, m.ID, "no longer has the binary log")
	})
	if mm := row(ctx, t, d, db); !mm.BlockedAt.IsZero() {
		t.Errorf("row %s blocked writes for a stream whose log was purged", mm.String())
	}
	r.saw("the cutover: %s", "the source no longer has the binary log the stream reads: back to syncing, before any block")
	settledDone(ctx, t, d, r, db)
}

// Case 10h/11i: a stream that cannot keep up. The destination's apply is
// held (a lock on the writer's table) while the customer writes about
// 150 inserts and 150 updates a second: the cutover times out (writes
// restored), the row goes back to syncing, its lag grows, and it is
// reported as not converging (its event, `migrate status`) within a
// minute; having missed a catch-up already, it fails one window later
// (Sync failed) with the rates, its stream and copy removed, while the
// other rows move.
func TestOnlineNotConverging(t *testing.T)      { onlineNotConverging(t, demo.Postgres, "10h") }
func TestMySQLOnlineNotConverging(t *testing.T) { onlineNotConverging(t, demo.MySQL, "11i") }

func onlineNotConverging(t *testing.T, eng, id string) {
	t.Parallel()
	r := record(t, id, "online ("+eng+"): a stream that cannot keep up")
	d, ctx := fleet(t, 3, 4<<20, func(o *demo.Options) {
		o.Engine = eng
		o.Mode = "online"
		o.Writers = 3
		o.WriterRate = 150
		o.HotRows = 20000
		o.StallTimeout = time.Minute
		o.CutoverTimeout = 2 * time.Second
		o.CutoverBackoff = time.Minute // no second cutover before it is judged
		o.ConvergeWindow = 10 * time.Second
	})
	db := largest(d, eng)
	toCutOver(ctx, t, d, db)
	release := holdApply(ctx, t, d, db)
	if err := d.RestartAgent(db.Source); err != nil {
		t.Fatal(err)
	}
	var m statemachine.Migration
	waitFor(ctx, t, d, "the catch-up to time out", time.Minute, func() bool {
		m = row(ctx, t, d, db)
		return eventSaid(ctx, t, d, m.ID, "catch-up timed out")
	})
	missed := time.Now()
	r.inject("the destination's apply held (a lock on the writer's table) from the cutover of %q on, its writer inserting and updating 150 rows/s each", db.Name)
	waitFor(ctx, t, d, "the row to be reported as not converging", 2*time.Minute, func() bool {
		return eventSaid(ctx, t, d, m.ID, statemachine.NotConvergingNote)
	})
	reported := time.Since(missed)
	if reported > time.Minute {
		t.Errorf("reported as not converging %s after the timed-out cutover, want within a minute", reported.Round(time.Second))
	}
	out, err := d.Tool(ctx, "status")
	if err != nil || !strings.Contains(out, "streams NOT CONVERGING") || !strings.Contains(out, fmt.Sprintf("row %-8d", m.ID)) {
		t.Errorf("migrate status does not list row %d as not converging (%v):\n%s", m.ID, err, out)
	}
	// One window later the row fails, removing the stream and then the
	// copy (a MariaDB copy's drop waits for the lock: it is released once
	// the stream's record is gone).
	dst := d.Fleet.Host(db.Destination)
	waitFor(ctx, t, d, "the row to fail and remove its stream", 2*time.Minute, func() bool {
		if m = row(ctx, t, d, db); m.Status.Failed() || m.Status == statemachine.Done {
			return true
		}
		return eng == demo.MySQL && scalar(ctx, t, eng, dst.RootDSN("mysql"),
			fmt.Sprintf("SELECT COUNT(*) FROM _fleetmigrate.streams WHERE name LIKE 'fleetmigrate\\_%d\\_%%'", m.ID)) == "0"
	})
	release()
	settle(ctx, t, d, false)
	m = row(ctx, t, d, db)
	if m.Status != statemachine.SyncFailed || !strings.Contains(m.LastError, "the stream is not converging (lag grew from") {
		t.Errorf("row %s is %s (%s), want Sync failed, not converging", m.String(), m.Status, m.LastError)
	}
	r.saw("reported as not converging %s after the timed-out cutover; row: %s", reported.Round(time.Second), trail(ctx, t, d, m.ID))
	if err := demo.ProbeWrite(ctx, db.Engine, d.Fleet.Host(db.Source).Addr(), db.User, db.Password, db.Name); err != nil {
		t.Errorf("the source refuses its owner's writes after the row failed: %v", err)
	}
	rep := checkInvariants(ctx, t, d, r)
	if rep.Checked[demo.InvStreams] != 0 {
		t.Errorf("%d stream objects of ours are left at the servers", rep.Checked[demo.InvStreams])
	}
	onlineWriters(ctx, t, d, r)
	if rep.Statuses[statemachine.Done] != len(d.DBs)-1 || rep.Statuses[statemachine.SyncFailed] != 1 {
		t.Errorf("rows: %s; want the others Done", statusLine(rep.Statuses))
	}
}

// Case 10i/11j: one destination's server stops (SIGKILL) while rows of the
// same source stream to it and to another destination: the rows to the
// other destination stream, cut over and reach Done while it is down; once
// it is back, its rows resume or (attempts used up) are retried, and every
// row reaches Done with nothing left behind.
func TestOnlineDestinationDownOthersMove(t *testing.T) {
	onlineDestinationDown(t, demo.Postgres, "10i")
}
func TestMySQLOnlineDestinationDownOthersMove(t *testing.T) {
	onlineDestinationDown(t, demo.MySQL, "11j")
}

func onlineDestinationDown(t *testing.T, eng, id string) {
	t.Parallel()
	r := record(t, id, "online ("+eng+"): a destination down while the same source's rows to another one move")
	d, ctx := fleet(t, 4, 4<<20, func(o *demo.Options) {
		o.Engine = eng
		o.Mode = "online"
		o.Writers = 4
		o.WriterRate = 20
		o.StallTimeout = time.Minute
		o.Size = demo.FleetSize{MySQLSources: 1, MySQLDestinations: 2, PostgresSources: 1, PostgresDestinations: 2}
	})
	var down *demo.Database
	for _, db := range d.DBs {
		if db.Engine == eng && (down == nil || db.Rows > down.Rows) {
			down = db
		}
	}
	var others []*demo.Database
	for _, db := range d.DBs {
		if db.Engine == eng && db.Destination != down.Destination && db.Source == down.Source {
			others = append(others, db)
		}
	}
	if len(others) == 0 {
		t.Fatalf("no row of source %s goes to another destination than %s", down.Source, down.Destination)
	}
	streaming(ctx, t, d, down)
	h := d.Fleet.Host(down.Destination)
	h.Kill()
	stopped := time.Now()
	r.inject("the %s server of %s SIGKILLed while %q synced from %s, kept down until the %d rows of %s to %s were Done", eng, down.Destination, down.Name, down.Source, len(others), down.Source, others[0].Destination)
	waitFor(ctx, t, d, "the other destination's rows to be Done", 4*time.Minute, func() bool {
		for _, db := range others {
			if m := row(ctx, t, d, db); m.Status != statemachine.Done {
				return false
			}
		}
		return true
	})
	r.saw("%d rows of %s to %s Done %s after %s went down", len(others), down.Source, others[0].Destination, time.Since(stopped).Round(time.Second), down.Destination)
	if err := h.Up(ctx); err != nil {
		t.Fatal(err)
	}
	settle(ctx, t, d, false)
	if n, _ := d.Store.CountStatuses(ctx, statemachine.SyncFailed); n > 0 {
		if out, err := d.Tool(ctx, "retry", "--status", string(statemachine.SyncFailed)); err != nil {
			t.Fatalf("retry: %v\n%s", err, out)
		}
		r.inject("%d rows failed while %s was down (attempts used up): migrate retry --status 'Sync failed'", n, down.Destination)
	}
	settledDone(ctx, t, d, r, down)
}
