package steps

// The change streams' conformance suite: the same case, through the same
// interface the online steps use (streams, syncSide, cutoverSide), run on
// real MariaDB and real PostgreSQL servers: start (copy and stream),
// catch up, writes carried, stop (nothing more carried), teardown
// (nothing left at either server). A new engine's stream passes it.

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/fleetmigrate/fleetmigrate/agent"
	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/mysql"
	"github.com/fleetmigrate/fleetmigrate/engine/postgres"
	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/storage/file"
)

const (
	streamAdmin     = "stream contract admin"
	streamAdminPass = `s't"r:e\am ü`
	streamPeer      = "stream contract peer"
	streamPeerPass  = `r'e"a\d ü`
)

// streamFleet is one engine's two servers, as the suite needs them.
type streamFleet struct {
	engine   statemachine.Engine
	driver   engine.Driver
	src, dst engine.Server
	// peer is the read-only login the destination reads the source with.
	peer       engine.Server
	newStreams func(h *host, store statemachine.Store) streams
	// exec runs statements in database at a server as its superuser;
	// count counts the rows of table t there.
	exec  func(t *testing.T, srv engine.Server, database string, stmts ...string)
	count func(t *testing.T, srv engine.Server, database string) int
	// left says what of stream name is still at either server ("":
	// nothing).
	left func(t *testing.T, name, database string) string
}

var streamRows atomic.Int64

func TestStreamsContract(t *testing.T) {
	fleettest.Integration(t)
	t.Run("mysql", func(t *testing.T) { runStreamContract(t, mysqlStreamFleet(t)) })
	t.Run("postgres", func(t *testing.T) { runStreamContract(t, pgStreamFleet(t)) })
}

func runStreamContract(t *testing.T, f *streamFleet) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	db := fmt.Sprintf("stream_contract_%d_%d", time.Now().UnixNano()%1e6, streamRows.Add(1))
	f.exec(t, f.src, "", "CREATE DATABASE "+f.quote(db))
	drop := "DROP DATABASE IF EXISTS " + f.quote(db)
	if f.engine == statemachine.EnginePostgres {
		drop += " WITH (FORCE)"
	}
	t.Cleanup(func() {
		f.exec(t, f.src, "", drop)
		f.exec(t, f.dst, "", drop)
	})
	f.exec(t, f.src, db, "CREATE TABLE items (id INT PRIMARY KEY, v VARCHAR(64))")
	insert := func(from, to int) {
		for i := from; i < to; i++ {
			f.exec(t, f.src, db, fmt.Sprintf("INSERT INTO items VALUES (%d, 'row %d ü')", i, i))
		}
	}
	insert(0, 100)

	// The destination's agent, its state in memory.
	store := &memStore{records: map[string][]byte{}, endpoints: map[string]string{"source": f.src.Address, "destination": f.dst.Address}, engine: f.engine}
	a, err := agent.New(store, agent.Config{Host: "destination", Roles: []statemachine.Role{statemachine.RoleSync}}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	dumps, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h := newHost(Config{Host: "destination", Server: f.dst, PeerUser: f.peer.User, PeerPassword: f.peer.Password, Store: dumps, Level: zstd.SpeedFastest, ProgressEvery: time.Hour}, f.driver)
	h.streams = f.newStreams(h, store)
	row := statemachine.Migration{ID: 1_000_000 + streamRows.Add(1), DatabaseName: db, Engine: f.engine, Source: "source", Destination: "destination", Mode: statemachine.ModeOnline, Status: statemachine.Syncing}
	job := a.JobFor(statemachine.RoleSync, row)
	// The source's agent answers the destination's asks (what changes at
	// the source is its own: the destination reads it read-only).
	srcAgent, err := agent.New(store, agent.Config{Host: "source", Roles: []statemachine.Role{statemachine.RoleCutover}}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	sh := newHost(Config{Host: "source", Server: f.src, Store: dumps}, f.driver)
	sh.streams = f.newStreams(sh, store)
	sh.registerAnswers(srcAgent)
	store.row, store.peer = row, srcAgent
	src, err := h.peer(ctx, job, "source")
	if err != nil {
		t.Fatal(err)
	}
	defer closeConn(src)
	dst, err := h.local(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeConn(dst)
	name := engine.StreamName(row.ID, db)
	t.Cleanup(func() { _ = h.streams.teardown(context.Background(), job, src, dst) })

	// Start: the copy, then the stream.
	side, err := h.streams.syncSide(ctx, job, src, dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, started, err := h.startSync(ctx, job, src, dst, side); err != nil || !started {
		t.Fatalf("start: started %t, %v", started, err)
	}
	if ok, err := h.streams.recorded(ctx, job); err != nil || !ok {
		t.Fatalf("no stream recorded after the start: %v", err)
	}
	// Writes while it streams.
	insert(100, 150)
	f.exec(t, f.src, db, "UPDATE items SET v = 'changed' WHERE id = 7", "DELETE FROM items WHERE id = 8")
	// Catch up: the copy done, applying, the lag small.
	deadline := time.Now().Add(90 * time.Second)
	for {
		st, err := side.state(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.gone != "" || st.broken != "" {
			t.Fatalf("the stream is gone or broken: %q %q", st.gone, st.broken)
		}
		if st.copying == "" && st.applying && st.lag <= settleLag {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not caught up after 90 s: %s, lag %d", st.describe(), st.lag)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The cutover's side, at the source's agent (the same servers here).
	cjob := a.JobFor(statemachine.RoleCutover, row)
	cs, err := h.streams.cutoverSide(ctx, cjob, src, dst)
	if err != nil {
		t.Fatal(err)
	}
	if why, err := cs.ready(ctx); err != nil || why != "" {
		t.Fatalf("ready: %q, %v", why, err)
	}
	if _, err := cs.prepare(ctx); err != nil {
		t.Fatalf("prepare: %v", err)
	}
	insert(150, 160)
	pos, err := cs.position(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lag, err := cs.waitApplied(ctx, pos, 30*time.Second)
	if err != nil || lag >= 0 {
		t.Fatalf("waitApplied(%s) = %d, %v: the destination did not apply the source's writes", pos, lag, err)
	}
	if got, want := f.count(t, f.dst, db), f.count(t, f.src, db); got != want || want != 159 {
		t.Fatalf("after catching up: %d rows at the destination, %d at the source (want 159)", got, want)
	}
	// Stop: nothing more reaches the destination.
	if err := cs.stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	insert(160, 170)
	time.Sleep(2 * time.Second)
	if got := f.count(t, f.dst, db); got != 159 {
		t.Errorf("a write after the stream stopped reached the destination: %d rows there, want 159", got)
	}
	// Teardown: nothing of it left anywhere, the record says so.
	if err := h.streams.teardown(ctx, job, src, dst); err != nil {
		t.Fatalf("teardown: %v", err)
	}
	if what := f.left(t, name, db); what != "" {
		t.Errorf("left behind by the teardown: %s", what)
	}
	if ok, err := h.streams.recorded(ctx, job); err != nil || ok {
		t.Errorf("the stream is still recorded after the teardown (%v)", err)
	}
	// The copy goes with its import record.
	if err := h.dropImport(ctx, job, dst, "the test"); err != nil {
		t.Fatal(err)
	}
}

func (f *streamFleet) quote(name string) string {
	if f.engine == statemachine.EngineMySQL {
		return ident.QuoteMySQL(name)
	}
	return ident.QuotePostgres(name)
}

func mysqlStreamFleet(t *testing.T) *streamFleet {
	m := map[string]*fleettest.MariaDB{"source": fleettest.SharedMariaDBAs(t, "source"), "destination": fleettest.SharedMariaDBAs(t, "destination")}
	server := func(host string) engine.Server {
		m[host].EnsureAdmin(t, streamAdmin, streamAdminPass)
		m[host].EnsurePeer(t, streamPeer, streamPeerPass)
		return engine.Server{Host: host, Address: m[host].Addr(), User: streamAdmin, Password: streamAdminPass}
	}
	root := func(srv engine.Server) *sql.DB { return m[srv.Host].RootDB(t) }
	f := &streamFleet{engine: statemachine.EngineMySQL, driver: mysql.Driver{Options: mysql.Options{SessionWait: 5 * time.Second}}, src: server("source"), dst: server("destination"),
		peer: engine.Server{User: streamPeer, Password: streamPeerPass}}
	f.newStreams = func(h *host, store statemachine.Store) streams {
		st := &mysqlStreams{h: h, run: &mysqlStreamers{h: h, state: store, host: "destination"}}
		t.Cleanup(st.run.stopAll)
		return st
	}
	pools := map[string]*sql.DB{}
	f.exec = func(t *testing.T, srv engine.Server, database string, stmts ...string) {
		key := srv.Host + "/" + database
		db := pools[key]
		if db == nil {
			var err error
			if db, err = sql.Open("mysql", m[srv.Host].DSN(database)); err != nil {
				t.Fatal(err)
			}
			db.SetMaxOpenConns(1)
			pools[key] = db
			t.Cleanup(func() { _ = db.Close() })
		}
		fleettest.Exec(t, db, stmts...)
	}
	f.count = func(t *testing.T, srv engine.Server, database string) int {
		var n int
		if err := root(srv).QueryRow("SELECT COUNT(*) FROM " + ident.QuoteMySQL(database) + ".items").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	f.left = func(t *testing.T, name, _ string) string {
		c, err := f.driver.Open(context.Background(), f.dst, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer closeConn(c)
		rec, err := mysql.ServerOf(c).StreamRecordOf(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Exists {
			return "the stream's position record at the destination"
		}
		return ""
	}
	return f
}

func pgStreamFleet(t *testing.T) *streamFleet {
	p := map[string]*fleettest.Postgres{"source": fleettest.SharedPostgresAs(t, "source"), "destination": fleettest.SharedPostgresAs(t, "destination")}
	server := func(host string) engine.Server {
		fleettest.PGExec(t, p[host].Root(t, "postgres"), `DO $$ BEGIN CREATE ROLE `+ident.QuotePostgres(streamAdmin)+` SUPERUSER LOGIN PASSWORD `+ident.QuotePostgresLiteral(streamAdminPass)+`;
			EXCEPTION WHEN duplicate_object THEN NULL; END $$`)
		p[host].EnsurePeer(t, streamPeer, streamPeerPass)
		return engine.Server{Host: host, Address: p[host].Addr(), User: streamAdmin, Password: streamAdminPass}
	}
	f := &streamFleet{engine: statemachine.EnginePostgres, src: server("source"), dst: server("destination"), peer: engine.Server{User: streamPeer, Password: streamPeerPass},
		driver: postgres.Driver{Options: postgres.Options{SessionWait: 5 * time.Second, TempDir: t.TempDir(), Pools: new(postgres.Pools)}}}
	f.newStreams = func(h *host, _ statemachine.Store) streams { return &pgStreams{h: h} }
	f.exec = func(t *testing.T, srv engine.Server, database string, stmts ...string) {
		if database == "" {
			database = "postgres"
		}
		c := p[srv.Host].Root(t, database)
		for _, s := range stmts {
			if _, err := c.Exec(context.Background(), s); err != nil {
				t.Fatalf("%s at %s: %v", s, srv.Host, err)
			}
		}
	}
	f.count = func(t *testing.T, srv engine.Server, database string) int {
		var n int
		if err := p[srv.Host].Root(t, database).QueryRow(context.Background(), "SELECT count(*) FROM items").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	f.left = func(t *testing.T, name, database string) string {
		var what string
		var n int
		if err := p["source"].Root(t, "postgres").QueryRow(context.Background(), "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", name).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			what += "the slot at the source; "
		}
		if err := p["source"].Root(t, database).QueryRow(context.Background(), "SELECT count(*) FROM pg_publication WHERE pubname = $1", name).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			what += "the publication at the source; "
		}
		if err := p["destination"].Root(t, "postgres").QueryRow(context.Background(), "SELECT count(*) FROM pg_subscription WHERE subname = $1", name).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			what += "the subscription at the destination"
		}
		return what
	}
	return f
}
