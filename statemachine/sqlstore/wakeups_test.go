package sqlstore_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// TestWakeups: on PostgreSQL a row entering a queued status wakes the
// subscribers of the host that claims it (and nobody else), a row leaving
// flight wakes the scheduler, and the listener comes back after its
// connection is killed. On MariaDB the channels never receive.
func TestWakeups(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := fleettest.SharedPostgres(t)
	s := openUpgraded(t, "postgres", srv.DSN(srv.NewDatabase(t)), nil)

	dumpSrc, stop1 := s.Wake(statemachine.RoleDump, "dst-1")
	defer stop1()
	dumpOther, stop2 := s.Wake(statemachine.RoleDump, "dst-2")
	defer stop2()
	importDst, stop3 := s.Wake(statemachine.RoleImport, "dst-1")
	defer stop3()
	closeSrc, stop4 := s.Wake(statemachine.RoleClose, "src-1")
	defer stop4()
	dnsAny, stop5 := s.Wake(statemachine.RoleDNS, "dns-host")
	defer stop5()
	sched, stop6 := s.WakeScheduler()
	defer stop6()
	all := []<-chan struct{}{dumpSrc, dumpOther, importDst, closeSrc, dnsAny, sched}

	// Each subscriber is woken once its channel is listened on (rows may
	// have been queued before); after that, notifications are not missed.
	for _, ch := range all {
		expectWake(t, ch, "initial wake-up")
	}
	if _, err := s.Plan(ctx, []statemachine.Planned{{Engine: statemachine.EngineMySQL, DatabaseName: "d1", Source: "src-1", Destination: "dst-1", DNSName: "d1.example.test"}}, "test", false); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Promote(ctx, 1, "test"); err != nil {
		t.Fatal(err)
	}
	expectWake(t, dumpSrc, "To dump on dst-1")
	step := func(role statemachine.Role, host string, wakes <-chan struct{}, what string) {
		t.Helper()
		ms, err := s.Claim(ctx, statemachine.ClaimRequest{Role: role, Host: host, Owner: host + "/pid 1", Limit: 1, Lease: time.Minute})
		if err != nil || len(ms) != 1 {
			t.Fatalf("claim %s: %v %v", role, ms, err)
		}
		f := statemachine.Fields{}
		if role == statemachine.RoleDump {
			f = statemachine.Fields{DumpURL: "file:///x", DumpSHA256: strings.Repeat("ab", 32), DumpBytes: 1}
		}
		if err := s.Advance(ctx, &ms[0], f, "done"); err != nil {
			t.Fatal(err)
		}
		if wakes != nil {
			expectWake(t, wakes, what)
		}
	}
	step(statemachine.RoleDump, "dst-1", importDst, "To import on dst-1")
	step(statemachine.RoleImport, "dst-1", dnsAny, "DNS to update")
	step(statemachine.RoleDNS, "dns-host", closeSrc, "To close source on src-1")

	// Kill the listening connection: the listener reconnects and wakes
	// everyone (notifications may have been lost meanwhile).
	if _, err := s.DB().ExecContext(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"); err != nil {
		t.Fatal(err)
	}
	expectWakeWithin(t, dumpOther, "wake-up after the listener reconnected", 10*time.Second)

	step(statemachine.RoleClose, "src-1", sched, "scheduler: a row reached Done")
	// src-2 was never concerned by these rows (the reconnect wake-up was
	// drained above).
	select {
	case <-dumpOther:
		t.Fatal("src-2's dump agent was woken by rows of src-1")
	case <-time.After(300 * time.Millisecond):
	}
}

func expectWake(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	expectWakeWithin(t, ch, what, 5*time.Second)
}

func expectWakeWithin(t *testing.T, ch <-chan struct{}, what string, d time.Duration) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("no wake-up for %s within %s", what, d)
	}
}

func TestWakeupsMariaDBNever(t *testing.T) {
	t.Parallel()
	srv := fleettest.SharedMariaDB(t)
	s := openUpgraded(t, "mysql", srv.DSN(srv.NewDatabase(t)), nil)
	ch, stop := s.Wake(statemachine.RoleDump, "src-1")
	defer stop()
	if ch != nil {
		t.Fatal("MariaDB store returned a wake-up channel; it has no notifications")
	}
}
