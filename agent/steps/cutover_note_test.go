package steps_test

import (
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/agent/steps"
)

func TestCutoverNoteRoundTrip(t *testing.T) {
	for _, n := range []steps.CutoverNote{
		{Total: 1378 * time.Millisecond, Block: 12 * time.Millisecond, Ended: 2, Position: "mariadb-bin.000001:111904713", Checks: 8 * time.Millisecond,
			CatchUp: 338 * time.Millisecond, Stop: 4 * time.Millisecond, Verify: 644 * time.Millisecond,
			Summary: "triggers and 0 events created, 0 tables verified now (row counts and checksums at both servers at once), 2 unchanged since verified while streaming, 1 objects, 1 accounts"},
		{Total: 2 * time.Second, Position: "0/2212A60", Summary: "4 objects, 2 roles; sequences set", Removal: 3 * time.Millisecond},
		{Total: 300 * time.Millisecond, Position: "0/2212A60", Summary: "1 sequences set", Deferred: true},
	} {
		got, ok := steps.ParseCutoverNote(n.String())
		if !ok || got != n {
			t.Errorf("ParseCutoverNote(%q) = %+v, %v; want %+v", n.String(), got, ok, n)
		}
	}
	for _, bad := range []string{"", "caught up: lag 0 B; ready to cut over",
		"cut over in 1s under the block: 0 sessions ended and position x applied at the destination in 1s; stream stopped in 1s; y, in 1s; stream removed meanwhile in 1s"} {
		if _, ok := steps.ParseCutoverNote(bad); ok {
			t.Errorf("ParseCutoverNote(%q) accepted", bad)
		}
	}
}
