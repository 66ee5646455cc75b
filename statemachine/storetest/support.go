package storetest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// FakeDump is what a dump step records when a test advances a row past it.
func FakeDump() statemachine.Fields {
	return statemachine.Fields{DumpURL: "file:///fake/dump.sql.zst", DumpSHA256: strings.Repeat("ab", 32), DumpBytes: 1}
}

// RollBackOut takes up to n To dump rows of a destination host out of flight the
// way the fleet would: the dump agent claims and fails them, an operator
// rolls them back, the rollback agent finishes. It returns how many it took
// out. For tests and benchmarks of the scheduler, which need free slots.
func RollBackOut(tb testing.TB, s statemachine.Store, host string, n int) int {
	tb.Helper()
	ctx := context.Background()
	ms, err := s.Claim(ctx, statemachine.ClaimRequest{Role: statemachine.RoleDump, Host: host, Owner: "fake-agent", Limit: n, Lease: time.Hour})
	if err != nil {
		tb.Fatal(err)
	}
	for i := range ms {
		if err := s.Fail(ctx, &ms[i], statemachine.Fields{}, "fake failure"); err != nil {
			tb.Fatal(err)
		}
		if _, err := s.Operate(ctx, ms[i].ID, statemachine.ActionRollback, "fake-operator", ""); err != nil {
			tb.Fatal(err)
		}
		rb, err := s.Claim(ctx, statemachine.ClaimRequest{Role: statemachine.RoleRollback, Host: ms[i].Source, Owner: "fake-agent", Limit: 1, Lease: time.Hour})
		if err != nil || len(rb) != 1 {
			tb.Fatalf("claim the rollback of row %d: %v, %v", ms[i].ID, rb, err)
		}
		if err := s.Advance(ctx, &rb[0], statemachine.Fields{}, ""); err != nil {
			tb.Fatal(err)
		}
	}
	return len(ms)
}
