package storetest

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

func testStopSwitch(t *testing.T, h Harness) {
	s := h.Store
	sw, err := s.StopSwitch(ctx(t))
	if err != nil || sw.Set {
		t.Fatalf("fresh switch: %+v, %v", sw, err)
	}
	sw, err = s.SetStop(ctx(t), "alice@ops-1", "error rate: 12 of 40 in flight failed")
	if err != nil || !sw.Set || sw.By != "alice@ops-1" || sw.Since.IsZero() {
		t.Fatalf("set: %+v, %v", sw, err)
	}
	// Setting it again keeps the first reason: an automatic trip is not
	// overwritten by a later, vaguer one.
	sw2, err := s.SetStop(ctx(t), "bob", "me too")
	if err != nil || sw2.Reason != sw.Reason || sw2.By != "alice@ops-1" {
		t.Fatalf("set again: %+v, %v", sw2, err)
	}
	var n int
	if err := h.DB.QueryRowContext(ctx(t), "SELECT COUNT(*) FROM control WHERE name = 'stop'").Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d stop rows in the table (%v)", n, err)
	}
	if err := s.ClearStop(ctx(t), "alice"); err != nil {
		t.Fatal(err)
	}
	if err := s.ClearStop(ctx(t), "alice"); err != nil {
		t.Fatalf("clearing a clear switch: %v", err)
	}
	if sw, err := s.StopSwitch(ctx(t)); err != nil || sw.Set {
		t.Fatalf("after clear: %+v, %v", sw, err)
	}
}

// acquire asks for the scheduler lease for a minute, as a scheduler
// without a process identity (an earlier version's) would.
func acquire(t *testing.T, s statemachine.Store, holder string, maxProcs int) (statemachine.Lease, error) {
	return s.AcquireLeader(ctx(t), statemachine.LeaderClaim{Holder: holder, TTL: time.Minute, MaxProcs: maxProcs})
}

func testLeaderLease(t *testing.T, h Harness) {
	clock := NewClock()
	s := h.Open(t, clock.Now)
	l, err := acquire(t, s, "ops-1 pid 100", 400)
	if err != nil || l.Holder != "ops-1 pid 100" || !l.ExpiresAt.Equal(clock.Now().Add(time.Minute)) || l.MaxProcs != 400 {
		t.Fatalf("acquire: %+v, %v", l, err)
	}
	since := l.Since
	// Someone else is refused and told who holds it.
	_, err = acquire(t, s, "ops-2 pid 200", 0)
	var held *statemachine.LeaseHeldError
	if !errors.As(err, &held) || held.Lease.Holder != "ops-1 pid 100" || !strings.Contains(err.Error(), "ops-1 pid 100") {
		t.Fatalf("second acquirer: %v", err)
	}
	// The holder renews (and re-acquiring is a renewal that keeps `since`).
	clock.Advance(40 * time.Second)
	if l, err = s.RenewLeader(ctx(t), "ops-1 pid 100", time.Minute); err != nil || !l.ExpiresAt.Equal(clock.Now().Add(time.Minute)) {
		t.Fatalf("renew: %+v, %v", l, err)
	}
	if l, err = acquire(t, s, "ops-1 pid 100", 0); err != nil || !l.Since.Equal(since) {
		t.Fatalf("re-acquire: %+v, %v (since %s)", l, err, since)
	}
	if _, err := s.RenewLeader(ctx(t), "ops-2 pid 200", time.Minute); !errors.Is(err, statemachine.ErrLeaseLost) {
		t.Fatalf("renew by a non-holder: %v", err)
	}
	// The holder dies; after expiry another takes over, and the old one's
	// renewal is refused.
	clock.Advance(61 * time.Second)
	if _, ok, err := s.Leader(ctx(t)); err != nil || ok {
		t.Fatalf("expired lease still reported: %v, %v", ok, err)
	}
	if l, err = acquire(t, s, "ops-2 pid 200", 0); err != nil || l.Holder != "ops-2 pid 200" || !l.Since.Equal(clock.Now()) {
		t.Fatalf("take over: %+v, %v", l, err)
	}
	if _, err := s.RenewLeader(ctx(t), "ops-1 pid 100", time.Minute); !errors.Is(err, statemachine.ErrLeaseLost) {
		t.Fatalf("renew after take-over: %v", err)
	}
	// Releasing someone else's lease does nothing; releasing one's own frees it.
	if err := s.ReleaseLeader(ctx(t), "ops-1 pid 100"); err != nil {
		t.Fatal(err)
	}
	if cur, ok, _ := s.Leader(ctx(t)); !ok || cur.Holder != "ops-2 pid 200" {
		t.Fatalf("lease after a stranger's release: %+v", cur)
	}
	if err := s.ReleaseLeader(ctx(t), "ops-2 pid 200"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Leader(ctx(t)); ok {
		t.Fatal("lease still held after release")
	}
	if _, err := acquire(t, s, "ops-3 pid 300", 0); err != nil {
		t.Fatalf("acquire after release: %v", err)
	}
}

// testLeaderTakeOver: a scheduler that knows its predecessor is dead (a
// crash on its machine) takes its unexpired lease at once, recording its
// own process; naming any other holder takes nothing.
func testLeaderTakeOver(t *testing.T, h Harness) {
	clock := NewClock()
	s := h.Open(t, clock.Now)
	dead := statemachine.LeaderClaim{Holder: "ops-1 pid 100 (aaaa)", Process: "ops-1 pid:[1] boot-1 100 5000", TTL: time.Minute, MaxProcs: 40}
	if l, err := s.AcquireLeader(ctx(t), dead); err != nil || l.Process != dead.Process {
		t.Fatalf("acquire: %+v, %v", l, err)
	}
	next := statemachine.LeaderClaim{Holder: "ops-1 pid 101 (bbbb)", Process: "ops-1 pid:[1] boot-1 101 6000", TTL: time.Minute, MaxProcs: 40}
	var held *statemachine.LeaseHeldError
	if _, err := s.AcquireLeader(ctx(t), next); !errors.As(err, &held) || held.Lease.Process != dead.Process {
		t.Fatalf("without naming the dead holder: %v (want the lease held, with its process %q)", err, dead.Process)
	}
	wrong := next
	wrong.TakeOver = "ops-1 pid 99 (cccc)"
	if _, err := s.AcquireLeader(ctx(t), wrong); !errors.As(err, &held) {
		t.Fatalf("naming a holder that does not hold it: %v", err)
	}
	clock.Advance(10 * time.Second)
	next.TakeOver = dead.Holder
	l, err := s.AcquireLeader(ctx(t), next)
	if err != nil || l.Holder != next.Holder || l.Process != next.Process || !l.Since.Equal(clock.Now()) || !l.ExpiresAt.Equal(clock.Now().Add(time.Minute)) {
		t.Fatalf("take over from the dead holder: %+v, %v", l, err)
	}
	if _, err := s.RenewLeader(ctx(t), dead.Holder, time.Minute); !errors.Is(err, statemachine.ErrLeaseLost) {
		t.Fatalf("the dead holder's renewal after the take-over: %v", err)
	}
	// Naming the dead holder again, once someone else holds it, takes
	// nothing from the new holder.
	third := statemachine.LeaderClaim{Holder: "ops-2 pid 7 (dddd)", TTL: time.Minute, TakeOver: dead.Holder}
	if _, err := s.AcquireLeader(ctx(t), third); !errors.As(err, &held) || held.Lease.Holder != next.Holder {
		t.Fatalf("a late take-over of a holder already replaced: %v", err)
	}
}

func testLeaderLeaseRace(t *testing.T, h Harness) {
	for round := range 5 {
		contenders := 2
		if round > 0 {
			contenders = 16
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		var winners []string
		start := make(chan struct{})
		for i := range contenders {
			s := h.Open(t, nil)
			holder := fmt.Sprintf("round-%d-holder-%d", round, i)
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, err := acquire(t, s, holder, 0)
				var held *statemachine.LeaseHeldError
				switch {
				case err == nil:
					mu.Lock()
					winners = append(winners, holder)
					mu.Unlock()
				case !errors.As(err, &held):
					t.Errorf("%s: %v", holder, err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("round %d: %d winners %v, want exactly 1", round, len(winners), winners)
		}
		var holder string
		if err := h.DB.QueryRowContext(ctx(t), "SELECT holder FROM control WHERE name = 'scheduler'").Scan(&holder); err != nil || holder != winners[0] {
			t.Fatalf("round %d: table says %q, winner %q (%v)", round, holder, winners[0], err)
		}
		if err := h.Store.ReleaseLeader(ctx(t), winners[0]); err != nil {
			t.Fatal(err)
		}
	}
}

func testAgents(t *testing.T, h Harness) {
	clock := NewClock()
	s := h.Open(t, clock.Now)
	a := statemachine.Agent{Host: "db-1", Roles: []statemachine.Role{statemachine.RoleImport, statemachine.RoleDump, statemachine.RoleClose},
		Version: "v0.1.0", DNSTarget: "127.42.0.5", PID: 42, Machine: "vm-1", Process: "vm-1 pid:[1] boot 42 7", Instance: "i-1",
		Endpoints: map[statemachine.Engine]string{statemachine.EngineMySQL: "127.42.0.5:3306"}}
	if err := s.RegisterAgent(ctx(t), a, time.Minute, ""); err != nil {
		t.Fatal(err)
	}
	// Registering again (a restart that kept its instance) is fine.
	if err := s.RegisterAgent(ctx(t), a, time.Minute, ""); err != nil {
		t.Fatalf("re-register: %v", err)
	}
	// Another process for the same host is refused and told who serves it.
	b := a
	b.PID, b.Machine, b.Instance = 77, "vm-2", "i-2"
	err := s.RegisterAgent(ctx(t), b, time.Minute, "")
	var held *statemachine.AgentHeldError
	if !errors.As(err, &held) || held.Agent.PID != 42 || held.Agent.Instance != "i-1" || !strings.Contains(err.Error(), "pid 42 on machine vm-1") {
		t.Fatalf("second agent for db-1: %v", err)
	}
	a.Jobs = 3
	a.Endpoints[statemachine.EnginePostgres] = "127.42.0.5:5432"
	if err := s.Heartbeat(ctx(t), a); err != nil {
		t.Fatal(err)
	}
	if err := s.Heartbeat(ctx(t), b); !errors.Is(err, statemachine.ErrLeaseLost) {
		t.Fatalf("heartbeat of a process that does not hold the host: %v", err)
	}
	got, ok, err := s.AgentFor(ctx(t), "db-1")
	if err != nil || !ok || got.Jobs != 3 || got.Instance != "i-1" || got.Process != a.Process || !maps.Equal(got.Endpoints, a.Endpoints) ||
		!slices.Equal(got.Roles, []statemachine.Role{statemachine.RoleClose, statemachine.RoleDump, statemachine.RoleImport}) {
		t.Fatalf("entry: %+v, %v, %v", got, ok, err)
	}
	// Taking over from an instance the caller knows is dead.
	if err := s.RegisterAgent(ctx(t), b, time.Minute, "i-1"); err != nil {
		t.Fatalf("take over from a dead instance: %v", err)
	}
	if err := s.Heartbeat(ctx(t), a); !errors.Is(err, statemachine.ErrLeaseLost) {
		t.Fatalf("heartbeat of the replaced instance: %v", err)
	}
	// A stale entry is taken over without being named.
	clock.Advance(2 * time.Minute)
	c := a
	c.Instance = "i-3"
	if err := s.RegisterAgent(ctx(t), c, time.Minute, ""); err != nil {
		t.Fatalf("take over a stale entry: %v", err)
	}
	dns := statemachine.Agent{Host: "dns-1", Roles: []statemachine.Role{statemachine.RoleDNS}, Instance: "i-9"}
	if err := s.RegisterAgent(ctx(t), dns, time.Minute, ""); err != nil {
		t.Fatal(err)
	}
	clock.Advance(3 * time.Minute)
	if err := s.Heartbeat(ctx(t), dns); err != nil {
		t.Fatal(err)
	}
	recent, err := s.Agents(ctx(t), 2*time.Minute)
	if err != nil || len(recent) != 1 || recent[0].Host != "dns-1" || !recent[0].LastSeen.Equal(clock.Now()) {
		t.Fatalf("agents seen in the last 2 minutes: %+v, %v", recent, err)
	}
	if all, err := s.Agents(ctx(t), 0); err != nil || len(all) != 2 {
		t.Fatalf("all agents: %+v, %v", all, err)
	}
	if err := s.Deregister(ctx(t), "db-1", "i-1"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.AgentFor(ctx(t), "db-1"); !ok {
		t.Error("a replaced instance deregistered its successor")
	}
	if err := s.Deregister(ctx(t), "db-1", "i-3"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.AgentFor(ctx(t), "db-1"); ok {
		t.Error("entry still there after deregistering")
	}
	if err := s.RegisterAgent(ctx(t), statemachine.Agent{Host: "x", Instance: "i"}, time.Minute, ""); err == nil {
		t.Error("agent without roles accepted")
	}
}
