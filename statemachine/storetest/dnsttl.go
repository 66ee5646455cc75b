package storetest

import (
	"errors"
	"testing"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// testTTLRecords: the original TTL survives re-runs of lower-ttl; a
// restored name starts a new record.
func testTTLRecords(t *testing.T, h Harness) {
	clock := NewClock()
	s := h.Open(t, clock.Now)
	rec, err := s.SaveTTL(ctx(t), "shop.db.example.test", 3600, 60, "alice@ops")
	if err != nil || rec.OriginalTTL != 3600 || rec.LoweredTTL != 60 || rec.LoweredBy != "alice@ops" || !rec.LoweredAt.Equal(clock.Now()) || !rec.RestoredAt.IsZero() {
		t.Fatalf("first save: %+v %v", rec, err)
	}
	// a re-run sees the lowered TTL as current: the original stays
	clock.Advance(3600e9)
	if rec, err = s.SaveTTL(ctx(t), "shop.db.example.test", 60, 60, "bob@ops"); err != nil || rec.OriginalTTL != 3600 || rec.LoweredBy != "alice@ops" {
		t.Fatalf("re-run: %+v %v", rec, err)
	}
	if err := s.MarkTTLRestored(ctx(t), "shop.db.example.test"); err != nil {
		t.Fatal(err)
	}
	got, err := s.TTLRecords(ctx(t), []string{"shop.db.example.test", "nope.db.example.test"})
	if err != nil || len(got) != 1 || got["shop.db.example.test"].RestoredAt.IsZero() {
		t.Fatalf("after restore: %+v %v", got, err)
	}
	// lowered again after the restore: a new record
	if rec, err = s.SaveTTL(ctx(t), "shop.db.example.test", 1800, 30, "carol@ops"); err != nil || rec.OriginalTTL != 1800 || rec.LoweredTTL != 30 || !rec.RestoredAt.IsZero() {
		t.Fatalf("new cycle: %+v %v", rec, err)
	}
	names := make([]string, 1200)
	for i := range names {
		names[i] = "n" + string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676)) + ".db.example.test"
	}
	for _, n := range names[:3] {
		if _, err := s.SaveTTL(ctx(t), n, 300, 60, "x"); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := s.TTLRecords(ctx(t), names); err != nil || len(got) != 3 {
		t.Fatalf("1200 names asked, 3 recorded: %d %v", len(got), err)
	}
}

// testUnswitch: only an unclaimed row in a rollback-able status.
func testUnswitch(t *testing.T, h Harness) {
	s := h.Open(t, nil)
	rows := mustPlan(t, s, planned(1, "src-1", "dst-1"))
	mustPromote(t, s, 1)
	m := claimOne(t, s, statemachine.RoleDump, "dst-1")
	if err := s.Advance(ctx(t), &m, dumpFields(m.ID), ""); err != nil {
		t.Fatal(err)
	}
	m = claimOne(t, s, statemachine.RoleImport, "dst-1")
	if err := s.Advance(ctx(t), &m, statemachine.Fields{}, ""); err != nil {
		t.Fatal(err)
	}
	ms := claim(t, s, statemachine.RoleDNS, "", "dns/1", 1)
	if err := s.Record(ctx(t), &ms[0], statemachine.Fields{Marks: []statemachine.Mark{statemachine.MarkSwitched}}, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Unswitch(ctx(t), rows[0].ID, "op", "pointed back"); !errors.Is(err, statemachine.ErrConflict) {
		t.Fatalf("unswitch of a claimed row: %v", err)
	}
	if err := s.Fail(ctx(t), &ms[0], statemachine.Fields{}, "secondary late"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(ctx(t), rows[0].ID); got.SwitchedAt.IsZero() || got.Status != statemachine.DNSFailed {
		t.Fatalf("before: %+v", got)
	}
	if err := s.Unswitch(ctx(t), rows[0].ID, "op", "DNS name pointed back at the source"); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Get(ctx(t), rows[0].ID)
	if !got.SwitchedAt.IsZero() || got.Status != statemachine.DNSFailed {
		t.Fatalf("after: %+v", got)
	}
	if n := countRows(t, h, "WHERE id = ? AND switched_at IS NULL", rows[0].ID); n != 1 {
		t.Errorf("switched_at not cleared in the table")
	}
	var actor, detail string
	if err := h.DB.QueryRowContext(ctx(t), h.Q("SELECT actor, detail FROM migration_event WHERE migration_id = ? ORDER BY id DESC LIMIT 1"), rows[0].ID).Scan(&actor, &detail); err != nil ||
		actor != "op" || detail != "DNS name pointed back at the source" {
		t.Errorf("last event %q %q %v", actor, detail, err)
	}
}
