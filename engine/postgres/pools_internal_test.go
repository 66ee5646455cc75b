package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
)

// TestSharedPools: Servers opened with one Pools use the same sessions (a
// step that opens its servers starts no new backend), closing a Server
// leaves them to the next, a restarted cluster's dead sessions are
// replaced, and a Server without Pools keeps its own.
func TestSharedPools(t *testing.T) {
	fleettest.Integration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg := fleettest.NewPostgres(t, fleettest.PostgresConfig{Password: "pools' pw"})
	srv := engine.Server{Host: "h", Address: pg.Addr(), User: "postgres", Password: pg.Password}
	pools := new(Pools)
	t.Cleanup(pools.Close)
	backend := func(s *Server) int {
		t.Helper()
		var pid int
		if err := s.pool.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
			t.Fatalf("query through the server opened with the shared pools: %v", err)
		}
		return pid
	}
	open := func(opt Options) *Server {
		t.Helper()
		s, err := Open(ctx, srv, opt)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	first := open(Options{Pools: pools})
	pid := backend(first)
	_ = first.Close()
	second := open(Options{Pools: pools})
	if second.pool != first.pool {
		t.Fatal("two Servers opened with the same Pools have pools of their own")
	}
	if got := backend(second); got != pid {
		t.Errorf("the second Server's session is backend %d, the first's was %d: want the kept session", got, pid)
	}
	other := open(Options{Pools: pools, SSLMode: "disable"})
	if other.pool == second.pool {
		t.Error("a Server with another connection string shares the pool")
	}
	_ = other.Close()
	own := open(Options{})
	if own.pool == second.pool {
		t.Error("a Server without Pools shares their pool")
	}
	_ = own.Close()
	if err := own.pool.Ping(ctx); err == nil {
		t.Error("a Server without Pools left its pool open after Close")
	}

	// A restart kills the kept sessions: the next Server replaces them.
	if err := pg.Down(); err != nil {
		t.Fatal(err)
	}
	if err := pg.Up(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // sessions idle over a second are checked before use
	third := open(Options{Pools: pools})
	if got := backend(third); got == pid {
		t.Errorf("after a restart the session is still backend %d", got)
	}
	_ = second.Close()
	_ = third.Close()

	pools.Close()
	if err := third.pool.Ping(ctx); err == nil {
		t.Error("Pools.Close left a pool open")
	}
	fourth := open(Options{Pools: pools})
	backend(fourth)
	_ = fourth.Close()
}
