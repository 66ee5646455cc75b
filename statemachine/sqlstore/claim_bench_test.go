package sqlstore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/statetest"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// BenchmarkClaimAdvance is the agents' hot path: claim one To dump row and
// advance it (two compare-and-set updates, two events), 100 rows per
// iteration, one after the other, on a table of 10,000 rows bound for that host. It measures
// what the per-agent login guards (migration 00011) cost: without them
// (their triggers dropped), with them for an operator's login (one
// agent_login lookup per row written), and for the host's own agent login
// (that lookup and the agent_transition check). Report: µs/row.
func BenchmarkClaimAdvance(b *testing.B) {
	const perIter, tableRows = 100, 10_000
	for _, e := range []struct {
		name, driver string
		dsn          func(b *testing.B) string
		drop         []string
	}{
		{"PostgreSQL", "postgres", func(b *testing.B) string { s := fleettest.SharedPostgres(b); return s.DSN(s.NewDatabase(b)) },
			[]string{"DROP TRIGGER migration_guard_agent ON migration", "DROP TRIGGER migration_event_guard_agent ON migration_event"}},
		{"MariaDB", "mysql", func(b *testing.B) string { s := fleettest.SharedMariaDB(b); return s.DSN(s.NewDatabase(b)) },
			[]string{"DROP TRIGGER migration_guard_agent", "DROP TRIGGER migration_event_guard_agent"}},
	} {
		for _, variant := range []string{"without-login-guards", "operator-login", "agent-login"} {
			b.Run(e.name+"/"+variant, func(b *testing.B) {
				ctx := context.Background()
				dsn := e.dsn(b)
				op := openUpgraded(b, e.driver, dsn, nil)
				if variant == "without-login-guards" {
					for _, st := range e.drop {
						if _, err := op.DB().ExecContext(ctx, st); err != nil {
							b.Fatal(err)
						}
					}
				}
				rows := make([]statemachine.Planned, tableRows)
				for i := range rows {
					rows[i] = statemachine.Planned{Engine: statemachine.EngineMySQL, DatabaseName: fmt.Sprintf("db_%05d", i),
						Source: fmt.Sprintf("src-%02d", i%50), Destination: "dst-00"}
				}
				if _, err := op.Plan(ctx, rows, "bench", false); err != nil {
					b.Fatal(err)
				}
				var s statemachine.Store = op
				if variant == "agent-login" {
					s = statetest.DB{Driver: e.driver, DSN: dsn}.AsAgent(b, "dst-00", false).Open(b)
				}
				done := 0
				b.ResetTimer()
				for range b.N {
					b.StopTimer()
					if _, err := op.Promote(ctx, perIter, "bench"); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
					for range perIter {
						ms, err := s.Claim(ctx, statemachine.ClaimRequest{Role: statemachine.RoleDump, Host: "dst-00", Owner: "dst-00/bench", Limit: 1, Lease: time.Minute})
						if err != nil {
							b.Fatal(err)
						}
						if len(ms) == 0 {
							break // the promoted rows of other destinations
						}
						m := ms[0]
						if err := s.Advance(ctx, &m, dumpFieldsFor(m.ID), "dumped"); err != nil {
							b.Fatal(err)
						}
						done++
					}
				}
				if done > 0 {
					b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(done), "µs/row")
				}
			})
		}
	}
}

func dumpFieldsFor(id int64) statemachine.Fields {
	return statemachine.Fields{DumpURL: fmt.Sprintf("s3://dumps/%d", id), DumpSHA256: fmt.Sprintf("%064x", id), DumpBytes: 1}
}
