package demo

import (
	"slices"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/agent/steps"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// TestCutoverPhases: an online row's phases come from its cutover's note
// and the hand-off to DNS; a row without them has none.
func TestCutoverPhases(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 15, 0, 0, 0, time.UTC)
	note := steps.CutoverNote{Total: 980 * time.Millisecond, Block: 80 * time.Millisecond, Ended: 1, Position: "mariadb-bin.000001:4",
		Checks: 160 * time.Millisecond, CatchUp: 10 * time.Millisecond, Stop: 6 * time.Millisecond, Verify: 670 * time.Millisecond, Summary: "1 objects, 1 accounts"}
	m := statemachine.Migration{Mode: statemachine.ModeOnline, SwitchedAt: t0.Add(2 * time.Second)}
	evs := []statemachine.Event{
		{From: statemachine.ToCutOver, To: statemachine.CuttingOver, At: t0},
		{From: statemachine.CuttingOver, To: statemachine.CuttingOver, At: t0.Add(time.Second), Detail: "catch-up timed out after 5s"},
		{From: statemachine.CuttingOver, To: statemachine.CuttingOver, At: t0.Add(time.Second), Detail: note.String()},
		{From: statemachine.CuttingOver, To: statemachine.DNSToUpdate, At: t0.Add(1900 * time.Millisecond)},
	}
	got, ok := cutoverPhases(m, evs)
	want := []time.Duration{note.Total, note.Block, note.Checks, note.CatchUp, note.Stop, note.Verify, 100 * time.Millisecond}
	if !ok || !slices.Equal(got, want) || len(got) != len(cutoverPhaseNames) {
		t.Fatalf("cutoverPhases = %v, %v; want %v", got, ok, want)
	}
	if _, ok := cutoverPhases(m, evs[:2]); ok {
		t.Error("phases without a cutover note")
	}
	m.Mode = statemachine.ModeDump
	if _, ok := cutoverPhases(m, evs); ok {
		t.Error("phases of a dump-mode row")
	}
}
