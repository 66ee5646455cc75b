package sqlstore_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// BenchmarkPlan100k plans 100,000 rows (the size the foundation issue
// names) into an empty state table; each iteration gets a fresh database.
// Report: ns/op is the time for the whole plan, one transaction.
func BenchmarkPlan100k(b *testing.B) {
	rows := make([]statemachine.Planned, 100_000)
	for i := range rows {
		rows[i] = statemachine.Planned{
			Engine: statemachine.EngineMySQL, DatabaseName: fmt.Sprintf("cust_%06d_db", i),
			Source: fmt.Sprintf("src-%03d.dc1", i%780), Destination: fmt.Sprintf("dst-%03d.dc2", i%300),
			DNSName: fmt.Sprintf("cust-%06d.db.example.test", i),
		}
	}
	for _, e := range []struct {
		name, driver string
		dsn          func(b *testing.B) string
	}{
		{"PostgreSQL", "postgres", func(b *testing.B) string { s := fleettest.SharedPostgres(b); return s.DSN(s.NewDatabase(b)) }},
		{"MariaDB", "mysql", func(b *testing.B) string { s := fleettest.SharedMariaDB(b); return s.DSN(s.NewDatabase(b)) }},
	} {
		b.Run(e.name, func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				s := openUpgraded(b, e.driver, e.dsn(b), nil)
				b.StartTimer()
				if n, err := s.Plan(context.Background(), rows, "bench", false); err != nil || n != len(rows) {
					b.Fatalf("plan: %d, %v", n, err)
				}
			}
			b.ReportMetric(float64(len(rows))*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
