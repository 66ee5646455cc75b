package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/mysql"
	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/storage"
	"github.com/fleetmigrate/fleetmigrate/storage/file"
)

const linkSecret = "0123456789abcdef0123456789abcdef"

// storageYAML configures a directory store at dir and links on base.
func storageYAML(dir, base string) string {
	return fmt.Sprintf("storage:\n  backend: file\n  dir: %q\nlinks:\n  secret: %q\n  public-base: %q\n  rate-limit: 0\n", dir, linkSecret, base)
}

// rowWithDump plans a row, stores a dump for it taken at cp, and walks it
// to the given status (Done or To import).
func rowWithDump(t *testing.T, s statemachine.Store, objects storage.Store, host, name string, cp time.Time, to statemachine.Status) (statemachine.Migration, string) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.Plan(ctx, []statemachine.Planned{{Engine: statemachine.EngineMySQL, DatabaseName: name, Source: host, Destination: host + "-new"}}, "test", false); err != nil {
		t.Fatal(err)
	}
	rows, _ := s.List(ctx, statemachine.Filter{Source: host, DatabaseName: name})
	id := rows[0].ID
	ref := storage.DumpRef{Engine: "mysql", Source: host, Database: name, ConsistencyPoint: cp}
	res, err := objects.Put(ctx, ref.DumpKey("sql"), strings.NewReader("dump of "+name), storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := objects.Put(ctx, ref.ManifestKey(), strings.NewReader("{}"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Promote(ctx, 10, "test"); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		role statemachine.Role
		host string
		f    statemachine.Fields
	}{
		{statemachine.RoleDump, host + "-new", statemachine.Fields{DumpURL: objects.URL(ref.DumpKey("sql")), DumpSHA256: res.SHA256, DumpBytes: res.Size, ConsistencyPoint: cp}},
		{statemachine.RoleImport, host + "-new", statemachine.Fields{}},
		{statemachine.RoleClose, host, statemachine.Fields{}},
	}
	for _, st := range steps {
		m, _ := s.Get(ctx, id)
		if m.Status == to {
			break
		}
		ms, err := s.Claim(ctx, statemachine.ClaimRequest{Role: st.role, Host: st.host, Owner: st.host + "/t", Limit: 1, Lease: time.Minute})
		if err != nil || len(ms) != 1 {
			t.Fatal(ms, err)
		}
		if err := s.Advance(ctx, &ms[0], st.f, ""); err != nil {
			t.Fatal(err)
		}
	}
	m, _ := s.Get(ctx, id)
	return m, ref.Prefix()
}

func exists(t *testing.T, objects storage.Store, prefix string) int {
	t.Helper()
	n := 0
	for _, err := range objects.List(context.Background(), prefix) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	return n
}

func TestGC(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		dir := t.TempDir()
		objects, _ := file.New(dir)
		s := db.Open(t)
		now := time.Now().UTC()
		old, recent := now.Add(-40*24*time.Hour), now.Add(-2*time.Hour)
		done, donePrefix := rowWithDump(t, s, objects, "h1", "shop", old, statemachine.Done)
		inFlight, inFlightPrefix := rowWithDump(t, s, objects, "h2", "blog", old, statemachine.ToImport)
		_, recentPrefix := rowWithDump(t, s, objects, "h3", "wiki", recent, statemachine.Done)
		orphan := storage.DumpRef{Engine: "mysql", Source: "h9", Database: "gone", ConsistencyPoint: old}
		if _, err := objects.Put(context.Background(), orphan.DumpKey("sql"), strings.NewReader("x"), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		stale := storage.DumpRef{Engine: "mysql", Source: "h1", Database: "shop", ConsistencyPoint: old.Add(-time.Hour)} // superseded by a newer dump
		if _, err := objects.Put(context.Background(), stale.DumpKey("sql"), strings.NewReader("x"), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := objects.Put(context.Background(), "dumps/notes.txt", strings.NewReader("x"), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		cfg := storageYAML(dir, "http://x")

		code, out, stderr := migrateWith(t, db, cfg, "", "gc")
		if code != 0 || !strings.Contains(out, "dry run: would delete 3 dumps") || !strings.Contains(out, "kept 1 still needed") {
			t.Fatalf("dry run: %d\n%s\n%s", code, out, stderr)
		}
		for _, want := range []string{"orphan: no row refers to it", "superseded: row", fmt.Sprintf("row %d, Done", done.ID), fmt.Sprintf("keep   %s: row %d is To import", inFlightPrefix, inFlight.ID)} {
			if !strings.Contains(out, want) {
				t.Errorf("dry run lacks %q:\n%s", want, out)
			}
		}
		if exists(t, objects, "dumps/") != 9 {
			t.Fatalf("the dry run deleted something: %d objects", exists(t, objects, "dumps/"))
		}
		if code, _, stderr := migrateWith(t, db, cfg, "", "gc", "--older-than", "10m"); code != 2 || !strings.Contains(stderr, "may still be needed") {
			t.Errorf("--older-than 10m: %d %s", code, stderr)
		}

		code, out, stderr = migrateWith(t, db, cfg, "", "gc", "--execute")
		if code != 0 || !strings.Contains(out, "delete 3 dumps") {
			t.Fatalf("gc --execute: %d\n%s\n%s", code, out, stderr)
		}
		if exists(t, objects, donePrefix) != 0 || exists(t, objects, orphan.Prefix()) != 0 || exists(t, objects, stale.Prefix()) != 0 {
			t.Error("old dumps still there")
		}
		if exists(t, objects, inFlightPrefix) != 2 || exists(t, objects, recentPrefix) != 2 || exists(t, objects, "dumps/notes.txt") != 1 {
			t.Error("gc deleted what it had to keep")
		}
		m, _ := s.Get(context.Background(), done.ID)
		evs, _ := s.Events(context.Background(), done.ID)
		if m.DumpURL != "" || m.DumpSHA256 == "" || !strings.Contains(evs[len(evs)-1].Detail, "dump deleted by retention") {
			t.Errorf("row after gc: %+v, last event %+v", m, evs[len(evs)-1])
		}
		if m, _ := s.Get(context.Background(), inFlight.ID); m.DumpURL == "" {
			t.Error("gc cleared the dump of a row in flight")
		}
		// Running again finds nothing more.
		if code, out, _ := migrateWith(t, db, cfg, "", "gc", "--execute"); code != 0 || !strings.Contains(out, "delete 0 dumps") {
			t.Errorf("second gc: %d %s", code, out)
		}
	})
}

func TestDumpLinkAndServe(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		dir := t.TempDir()
		objects, _ := file.New(dir)
		s := db.Open(t)
		old := time.Now().UTC().Add(-40 * 24 * time.Hour)
		row, prefix := rowWithDump(t, s, objects, "h1", "shop", old, statemachine.Done)
		pending, _ := rowWithDump(t, s, objects, "h2", "blog", old, statemachine.ToImport)
		addr := fleettest.FreeAddr(t)
		cfg := storageYAML(dir, "http://"+addr)

		ctx, stop := context.WithCancel(context.Background())
		served := make(chan int, 1)
		go func() {
			code, _, _ := migrateCtx(ctx, t, db, cfg, "", "serve", "--listen", addr)
			served <- code
		}()
		defer func() {
			stop()
			if code := <-served; code != 0 {
				t.Errorf("migrate serve exited %d", code)
			}
		}()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, err := fleettest.Get("http://" + addr + "/healthz"); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("migrate serve did not come up")
			}
			time.Sleep(50 * time.Millisecond)
		}

		code, out, stderr := migrateWith(t, db, cfg, "", "dump-link", "--id", fmt.Sprint(row.ID), "--ttl", "2d")
		if code != 0 || !strings.HasPrefix(out, "http://"+addr+"/dumps/v1.") || !strings.Contains(stderr, "shop-") ||
			!strings.Contains(stderr, "retention deletes this dump") {
			t.Fatalf("dump-link: %d %q %q", code, out, stderr)
		}
		link := strings.TrimSpace(out)
		body, err := fleettest.Get(link)
		want, _ := os.ReadFile(filepath.Join(dir, filepath.FromSlash(prefix), "dump.sql.zst"))
		if err != nil || !bytes.Equal([]byte(body), want) {
			t.Fatalf("download through migrate serve: %q, %v; want %q", body, err, want)
		}
		if code, _, stderr := migrateWith(t, db, cfg, "", "dump-link", "--id", "999999"); code != 1 || !strings.Contains(stderr, "999999") {
			t.Errorf("dump-link of a missing row: %d %s", code, stderr)
		}
		// gc deletes the dump: the link answers 410.
		if code, out, _ := migrateWith(t, db, cfg, "", "gc", "--execute"); code != 0 || !strings.Contains(out, "delete 1 dumps") {
			t.Fatalf("gc: %d %s", code, out)
		}
		resp, err := http.Get(link)
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusGone || !strings.Contains(string(msg), "no longer available") {
			t.Fatalf("after gc: %d %q", resp.StatusCode, msg)
		}
		if code, _, stderr := migrateWith(t, db, cfg, "", "dump-link", "--id", fmt.Sprint(row.ID)); code != 1 || !strings.Contains(stderr, "deleted by retention") {
			t.Errorf("dump-link after gc: %d %s", code, stderr)
		}
		if code, _, stderr := migrateWith(t, db, strings.Replace(cfg, linkSecret, "short", 1), "", "dump-link", "--id", fmt.Sprint(pending.ID)); code != 1 || !strings.Contains(stderr, "at least 32 bytes") {
			t.Errorf("short secret: %d %s", code, stderr)
		}
	})
}

// TestGCAbortsUnfinishedUploads: what a killed agent left mid-upload (here
// the directory backend's temporary files; S3's incomplete multipart
// uploads go through the same storage.Janitor, see storage's contract
// suite) is aborted once older than --uploads-older-than, unless the row is
// dumping now.
func TestGCAbortsUnfinishedUploads(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		dir := t.TempDir()
		objects, _ := file.New(dir)
		s := db.Open(t)
		ctx := context.Background()
		now := time.Now().UTC()
		rowWithDump(t, s, objects, "h1", "shop", now.Add(-72*time.Hour), statemachine.Done)
		rowWithDump(t, s, objects, "h2", "blog", now.Add(-72*time.Hour), statemachine.ToDump)
		if ms, err := s.Claim(ctx, statemachine.ClaimRequest{Role: statemachine.RoleDump, Host: "h2-new", Owner: "h2-new/t", Limit: 1, Lease: time.Minute}); err != nil || len(ms) != 1 {
			t.Fatal(ms, err)
		}
		leave := func(host, name string, age time.Duration) string {
			ref := storage.DumpRef{Engine: "mysql", Source: host, Database: name, ConsistencyPoint: now.Add(-age)}
			at := filepath.Join(dir, filepath.FromSlash(ref.Prefix()), ".tmp-98765")
			if err := os.MkdirAll(filepath.Dir(at), 0o750); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(at, []byte(strings.Repeat("d", 3000)), 0o640); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(at, now.Add(-age), now.Add(-age)); err != nil {
				t.Fatal(err)
			}
			return at
		}
		killed := leave("h1", "shop", 48*time.Hour)  // its row is Done: abort
		dumping := leave("h2", "blog", 48*time.Hour) // its row is Dumping: keep
		recent := leave("h9", "other", 2*time.Hour)  // younger than a day: leave
		cfg := storageYAML(dir, "http://x")
		there := func(path string) bool { _, err := os.Stat(path); return err == nil }

		code, out, stderr := migrateWith(t, db, cfg, "", "gc")
		if code != 0 || !strings.Contains(out, "would abort 1 unfinished uploads") || !strings.Contains(out, "kept 1 of rows dumping now") ||
			!strings.Contains(out, "keep   unfinished upload of dumps/mysql/h2/blog/") {
			t.Fatalf("dry run: %d\n%s\n%s", code, out, stderr)
		}
		if !there(killed) || !there(dumping) || !there(recent) {
			t.Fatal("the dry run removed an unfinished upload")
		}
		if code, _, stderr := migrateWith(t, db, cfg, "", "gc", "--uploads-older-than", "10m"); code != 2 || !strings.Contains(stderr, "may still be under way") {
			t.Errorf("--uploads-older-than 10m: %d %s", code, stderr)
		}
		code, out, stderr = migrateWith(t, db, cfg, "", "gc", "--execute")
		if code != 0 || !strings.Contains(out, "abort 1 unfinished uploads") || !strings.Contains(out, "(2.9 KiB)") {
			t.Fatalf("gc --execute: %d\n%s\n%s", code, out, stderr)
		}
		if there(killed) || there(filepath.Dir(killed)) || !there(dumping) || !there(recent) {
			t.Errorf("after gc --execute: killed %v (its directory %v), dumping %v, recent %v; want only the killed one gone",
				there(killed), there(filepath.Dir(killed)), there(dumping), there(recent))
		}
		if exists(t, objects, "dumps/") != 4 {
			t.Errorf("gc touched finished dumps: %d objects left, want 4", exists(t, objects, "dumps/"))
		}
	})
}

// TestGCRemovesStreamsOfRowsThatDoNotStream: a slot and a publication of a
// row cancelled by hand are removed (after a dry run that lists them); the
// stream of a row still syncing, a name of a row this state database does
// not have and a name that is not ours are left alone.
func TestGCRemovesStreamsOfRowsThatDoNotStream(t *testing.T) {
	fleettest.Integration(t)
	pg := fleettest.SharedPostgresAs(t, "gc-streams")
	engines(t, func(t *testing.T, db stateDB) {
		ctx := context.Background()
		s := db.Open(t)
		host := fmt.Sprintf("pg-%s-%d", db.Driver, time.Now().UnixNano())
		name := func(i int) string { return fmt.Sprintf("gc %s %d", db.Driver, i) }
		var planned []statemachine.Planned
		for i := range 2 {
			fleettest.PGExec(t, pg.Root(t, "postgres"), "CREATE DATABASE "+qpg(name(i)))
			t.Cleanup(func() {
				fleettest.PGExec(t, pg.Root(t, "postgres"), "DROP DATABASE IF EXISTS "+qpg(name(i))+" WITH (FORCE)")
			})
			planned = append(planned, statemachine.Planned{Engine: statemachine.EnginePostgres, DatabaseName: name(i), Source: host, Destination: host + "-new", Mode: statemachine.ModeOnline})
		}
		if _, err := s.Plan(ctx, planned, "test", false); err != nil {
			t.Fatal(err)
		}
		rows, _ := s.List(ctx, statemachine.Filter{Source: host})
		cancelled, syncing := rows[0], rows[1]
		if _, err := s.Operate(ctx, cancelled.ID, statemachine.ActionCancel, "test", ""); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Promote(ctx, 10, "test"); err != nil {
			t.Fatal(err)
		}
		mk := func(db, stream string) {
			fleettest.PGExec(t, pg.Root(t, db), "CREATE PUBLICATION "+qpg(stream), "SELECT pg_create_logical_replication_slot('"+stream+"', 'pgoutput')")
			t.Cleanup(func() {
				c := pg.Root(t, db)
				_, _ = c.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", stream)
			})
		}
		gone := engine.StreamName(cancelled.ID, cancelled.DatabaseName)
		kept := engine.StreamName(syncing.ID, syncing.DatabaseName)
		foreign := engine.StreamName(987654, "elsewhere "+db.Driver) // the engines' cases share the server
		mk(name(0), gone)
		mk(name(1), kept)
		mk(name(1), foreign)
		custom := "fleetmigrate_custom_" + db.Driver
		fleettest.PGExec(t, pg.Root(t, name(1)), "SELECT pg_create_logical_replication_slot('"+custom+"', 'pgoutput')")
		t.Cleanup(func() {
			_, _ = pg.Root(t, "postgres").Exec(ctx, "SELECT pg_drop_replication_slot('"+custom+"')")
		})
		if err := s.RegisterAgent(ctx, statemachine.Agent{Host: host, Roles: []statemachine.Role{statemachine.RoleSync}, Instance: "i-" + host,
			Endpoints: map[statemachine.Engine]string{statemachine.EnginePostgres: pg.Addr()}}, time.Minute, ""); err != nil {
			t.Fatal(err)
		}
		cfg := storageYAML(t.TempDir(), "http://x") + fmt.Sprintf("postgres:\n  user: postgres\n  password: %q\n", pg.Password)
		slots := func() []string {
			rs, err := pg.Root(t, "postgres").Query(ctx, "SELECT slot_name::text FROM pg_replication_slots ORDER BY 1")
			if err != nil {
				t.Fatal(err)
			}
			out, _ := pgx.CollectRows(rs, pgx.RowTo[string])
			return out
		}
		code, out, stderr := migrateWith(t, db, cfg, "", "gc")
		if code != 0 || !strings.Contains(out, "would remove replication slot "+gone) || !strings.Contains(out, "would remove publication "+gone) ||
			!strings.Contains(out, "dry run: would remove 2 ") {
			t.Fatalf("dry run: %d\n%s\n%s", code, out, stderr)
		}
		if !slices.Contains(slots(), gone) {
			t.Fatal("the dry run removed the slot")
		}
		code, out, stderr = migrateWith(t, db, cfg, "", "gc", "--execute")
		if code != 0 {
			t.Fatalf("gc --execute: %d\n%s\n%s", code, out, stderr)
		}
		left := slots()
		if slices.Contains(left, gone) || !slices.Contains(left, kept) || !slices.Contains(left, foreign) || !slices.Contains(left, custom) {
			t.Errorf("slots after gc: %v", left)
		}
		for _, want := range []string{"is To sync and streams", "no row 987654 in this state database"} {
			if !strings.Contains(out, want) {
				t.Errorf("gc does not say %q:\n%s", want, out)
			}
		}
		var n int
		if err := pg.Root(t, name(0)).QueryRow(ctx, "SELECT count(*) FROM pg_publication").Scan(&n); err != nil || n != 0 {
			t.Errorf("publication of the cancelled row: %d, %v", n, err)
		}
	})
}

func qpg(s string) string { return ident.QuotePostgres(s) }

// TestGCRemovesMariaDBStreamRecords: the stream record of a MariaDB row
// cancelled by hand is removed (after a dry run that lists it); the record
// of a row still syncing and one of a row this state database does not
// have are left alone.
func TestGCRemovesMariaDBStreamRecords(t *testing.T) {
	fleettest.Integration(t)
	m := fleettest.SharedMariaDBAs(t, "gc-streams")
	engines(t, func(t *testing.T, db stateDB) {
		ctx := context.Background()
		s := db.Open(t)
		host := fmt.Sprintf("my-%s-%d", db.Driver, time.Now().UnixNano())
		var planned []statemachine.Planned
		for i := range 2 {
			planned = append(planned, statemachine.Planned{Engine: statemachine.EngineMySQL, DatabaseName: fmt.Sprintf("gc my %s %d", db.Driver, i), Source: host, Destination: host + "-new", Mode: statemachine.ModeOnline})
		}
		if _, err := s.Plan(ctx, planned, "test", false); err != nil {
			t.Fatal(err)
		}
		rows, _ := s.List(ctx, statemachine.Filter{Source: host})
		cancelled, syncing := rows[0], rows[1]
		if _, err := s.Operate(ctx, cancelled.ID, statemachine.ActionCancel, "test", ""); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Promote(ctx, 10, "test"); err != nil {
			t.Fatal(err)
		}
		srv, err := mysql.Open(ctx, engine.Server{Address: m.Addr(), User: "root"}, mysql.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = srv.Close() }()
		gone := engine.StreamName(cancelled.ID, cancelled.DatabaseName)
		kept := engine.StreamName(syncing.ID, syncing.DatabaseName)
		foreign := engine.StreamName(987654, "elsewhere my "+db.Driver)
		for _, n := range []string{gone, kept, foreign} {
			if err := srv.CreateStreamRecord(ctx, &mysql.Stream{Name: n, Database: "x", Start: mysql.BinlogPos{File: "b.000001", Pos: 4}}, "127.0.0.1:1"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = srv.RemoveStreamRecord(context.Background(), n) })
		}
		if err := s.RegisterAgent(ctx, statemachine.Agent{Host: host, Roles: []statemachine.Role{statemachine.RoleSync}, Instance: "i-" + host,
			Endpoints: map[statemachine.Engine]string{statemachine.EngineMySQL: m.Addr()}}, time.Minute, ""); err != nil {
			t.Fatal(err)
		}
		cfg := storageYAML(t.TempDir(), "http://x") + "mysql:\n  user: root\n"
		exists := func(name string) bool {
			r, err := srv.StreamRecordOf(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			return r.Exists
		}
		code, out, stderr := migrateWith(t, db, cfg, "", "gc")
		if code != 0 || !strings.Contains(out, "would remove stream record "+gone) || !exists(gone) {
			t.Fatalf("dry run: %d\n%s\n%s", code, out, stderr)
		}
		code, out, stderr = migrateWith(t, db, cfg, "", "gc", "--execute")
		if code != 0 || exists(gone) || !exists(kept) || !exists(foreign) {
			t.Fatalf("gc --execute: %d (records: gone %v, kept %v, foreign %v)\n%s\n%s", code, exists(gone), exists(kept), exists(foreign), out, stderr)
		}
	})
}
