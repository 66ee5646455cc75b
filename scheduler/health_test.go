package scheduler_test

import (
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/scheduler"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

func TestHealth(t *testing.T) {
	now := time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	rows := []statemachine.Migration{
		// claimed, lease still good, blocked 2 min ago
		{Status: statemachine.Importing, LeaseUntil: now.Add(time.Minute), BlockedAt: ago(2 * time.Minute)},
		// claimed, lease expired 10 s ago: stuck; blocked 7 min ago
		{Status: statemachine.Dumping, LeaseUntil: ago(10 * time.Second), BlockedAt: ago(7 * time.Minute)},
		// an import failed: the source is still blocked (counts), no lease
		{Status: statemachine.ImportFailed, BlockedAt: ago(3 * time.Minute)},
		// a dump failed and restored writes: not blocked
		{Status: statemachine.DumpFailed, BlockedAt: ago(time.Hour), UnblockedAt: ago(59 * time.Minute)},
		// switched: the customer writes at the destination
		{Status: statemachine.ClosingSource, LeaseUntil: now.Add(time.Minute), BlockedAt: ago(time.Hour), SwitchedAt: ago(50 * time.Minute)},
		// queued, lease of an earlier claim long gone: not working, not stuck
		{Status: statemachine.ToImport, LeaseUntil: ago(time.Hour), BlockedAt: ago(time.Minute)},
	}
	got := scheduler.Health(rows, now)
	want := scheduler.HealthCounts{LeaseExpired: 1, WriteBlocked: 4, WriteBlockedMax: 7 * time.Minute}
	if got != want {
		t.Errorf("Health = %+v, want %+v", got, want)
	}
	if got := scheduler.Health(nil, now); got != (scheduler.HealthCounts{}) {
		t.Errorf("no rows: %+v", got)
	}
}
