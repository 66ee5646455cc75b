package storetest

import (
	"errors"
	"testing"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// testOnlinePath: promotion sends online and auto rows (of both engines)
// to the sync step and everything else to the dump; the sync step diverts
// an auto row to the dump path recording its mode; an online row passes DNS without a dump and records it at the
// close; a step without a way back refuses Divert; an operator's rollback
// of a syncing row fences its agent out.
func testOnlinePath(t *testing.T, h Harness) {
	s := h.Open(t, nil)
	mk := func(name string, eng statemachine.Engine, mode statemachine.Mode) statemachine.Planned {
		return statemachine.Planned{Engine: eng, DatabaseName: name, Source: "src", Destination: "dst", DNSName: name + ".db.test", Mode: mode}
	}
	mustPlan(t, s, []statemachine.Planned{
		mk("online", statemachine.EnginePostgres, statemachine.ModeOnline),
		mk("auto", statemachine.EnginePostgres, statemachine.ModeAuto),
		mk("automy", statemachine.EngineMySQL, statemachine.ModeAuto),
		mk("dump", statemachine.EnginePostgres, ""),
		mk("stopped", statemachine.EnginePostgres, statemachine.ModeOnline),
	})
	if _, err := s.Promote(ctx(t), 10, "scheduler"); err != nil {
		t.Fatal(err)
	}
	rows, err := s.List(ctx(t), statemachine.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][2]string{"online": {"To sync", "online"}, "auto": {"To sync", "auto"}, "automy": {"To sync", "auto"}, "dump": {"To dump", "dump"}, "stopped": {"To sync", "online"}}
	byName := map[string]statemachine.Migration{}
	for _, m := range rows {
		byName[m.DatabaseName] = m
		if w := want[m.DatabaseName]; string(m.Status) != w[0] || string(m.Mode) != w[1] {
			t.Errorf("%s promoted to %q mode %q, want %v", m.DatabaseName, m.Status, m.Mode, w)
		}
	}
	// The sync agent claims the four online and auto rows in plan order.
	synced := claim(t, s, statemachine.RoleSync, "dst", "dst/agent", 4)
	if len(synced) != 4 {
		t.Fatalf("claimed %d rows to sync, want 4", len(synced))
	}
	online, auto, automy, stopped := synced[0], synced[1], synced[2], synced[3]
	// A stream reported as not converging is listed while that is its
	// row's latest word on it.
	for _, p := range []struct {
		m    *statemachine.Migration
		note string
	}{{&online, statemachine.NotConvergingNote + ": lag grew from 2 MB to 42 MB in 40s"}, {&stopped, "syncing: streaming; lag 1 MB"},
		{&auto, "syncing: not converging for 5s: streaming; lag 50 MB"}, {&auto, "syncing: converging again: lag 1 MB"}} {
		if err := s.Progress(ctx(t), p.m, p.note); err != nil {
			t.Fatal(err)
		}
	}
	if nc, err := s.NotConverging(ctx(t), 10); err != nil || len(nc) != 1 || nc[0].ID != online.ID || nc[0].Database != "online" || nc[0].At.IsZero() {
		t.Errorf("not converging: %+v, %v; want row %d only", nc, err, online.ID)
	}
	for _, r := range []*statemachine.Migration{&auto, &automy} {
		if err := s.Advance(ctx(t), r, statemachine.Fields{Divert: true, Mode: statemachine.ModeDump}, "too small"); err != nil {
			t.Fatal(err)
		}
		if m, _ := s.Get(ctx(t), r.ID); m.Status != statemachine.ToDump || m.Mode != statemachine.ModeDump {
			t.Errorf("auto row %s diverted to %q mode %q", m.DatabaseName, m.Status, m.Mode)
		}
	}
	if err := s.Advance(ctx(t), &online, statemachine.Fields{Mode: statemachine.ModeOnline}, "caught up"); err != nil {
		t.Fatal(err)
	}
	// A rollback while syncing clears the claim: the agent is fenced out.
	if m, err := s.Operate(ctx(t), stopped.ID, statemachine.ActionRollback, "operator", "stop"); err != nil || m.Status != statemachine.ToRollBack || m.Owner != "" {
		t.Fatalf("rollback while syncing: %+v, %v", m, err)
	}
	if err := s.Advance(ctx(t), &stopped, statemachine.Fields{}, "late"); !errors.Is(err, statemachine.ErrLeaseLost) {
		t.Errorf("the fenced-out sync step advanced its row: %v", err)
	}
	cut := claimOne(t, s, statemachine.RoleCutover, "dst")
	if cut.ID != online.ID {
		t.Fatalf("cutover claimed row %d, want %d", cut.ID, online.ID)
	}
	// Past the cutover and DNS with no dump recorded yet.
	if err := s.Advance(ctx(t), &cut, statemachine.Fields{Marks: []statemachine.Mark{statemachine.MarkBlocked}}, "cut over"); err != nil {
		t.Fatalf("an online row cannot reach DNS without a dump: %v", err)
	}
	d := claimOne(t, s, statemachine.RoleDNS, "")
	if err := s.Advance(ctx(t), &d, statemachine.Fields{Marks: []statemachine.Mark{statemachine.MarkSwitched}}, "switched"); err != nil {
		t.Fatal(err)
	}
	c := claimOne(t, s, statemachine.RoleClose, "src")
	// The dump step's other way on (imported while dumping: straight to
	// DNS to update) still needs the dump recorded.
	dumpRow := claimOne(t, s, statemachine.RoleDump, "dst")
	if err := s.Advance(ctx(t), &dumpRow, statemachine.Fields{Divert: true}, "?"); err == nil {
		t.Errorf("a dump reached DNS to update without its dump recorded")
	}
	// Done needs the dump, which the close records (the refused move
	// leaves the claim as it was).
	if err := s.Advance(ctx(t), &c, statemachine.Fields{}, "closed"); err == nil {
		t.Error("an online row reached Done without a dump")
	}
	if err := s.Advance(ctx(t), &c, dumpFields(c.ID), "closed"); err != nil {
		t.Fatalf("close with the consistency-point dump: %v", err)
	}
	if m, _ := s.Get(ctx(t), online.ID); m.Status != statemachine.Done || m.DumpSHA256 == "" || m.Mode != statemachine.ModeOnline {
		t.Errorf("online row at the end: %+v", m)
	}
}
