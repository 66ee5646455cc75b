package scheduler_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/statetest"
	"github.com/fleetmigrate/fleetmigrate/scheduler"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/statemachine/storetest"
)

// BenchmarkTick measures one scheduler tick (renew the lease, rescue,
// promote fairly, update the metrics; the per-status row counts are
// refreshed every 30 s: in the first, untimed tick only) on a state table of
// the reference migration's shape: 780 sources, 300 destinations, 400 in
// flight, at 100,000 and 800,000 rows. Each iteration first frees 5 slots
// (untimed), so every timed tick gathers candidates and promotes 5 rows.
func BenchmarkTick(b *testing.B) {
	for _, e := range []struct {
		name, driver string
		dsn          func(b *testing.B) string
	}{
		{"PostgreSQL", "postgres", func(b *testing.B) string { s := fleettest.SharedPostgres(b); return s.DSN(s.NewDatabase(b)) }},
		{"MariaDB", "mysql", func(b *testing.B) string { s := fleettest.SharedMariaDB(b); return s.DSN(s.NewDatabase(b)) }},
	} {
		for _, rows := range []int{100_000, 800_000} {
			b.Run(fmt.Sprintf("%s/%dk", e.name, rows/1000), func(b *testing.B) {
				benchTick(b, e.driver, e.dsn(b), rows)
			})
		}
	}
}

func benchTick(b *testing.B, driver, dsn string, n int) {
	ctx := context.Background()
	s := statetest.Upgraded(b, driver, dsn).Open(b)
	// Seeded server-side (planning is measured by BenchmarkPlan100k): rows
	// i go from src-(i mod 780) to dst-((i div 780) mod 300).
	if _, err := s.DB().ExecContext(ctx, seed(driver, n)); err != nil {
		b.Fatal(err)
	}
	if _, err := s.DB().ExecContext(ctx, analyze(driver)); err != nil {
		b.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	sch, err := scheduler.New(s, scheduler.Config{MaxProcs: 400, Holder: "bench pid 1"}, quiet, scheduler.NewMetrics(reg))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.AcquireLeader(ctx, statemachine.LeaderClaim{Holder: "bench pid 1", TTL: time.Hour, MaxProcs: 400}); err != nil {
		b.Fatal(err)
	}
	if res, err := sch.Tick(ctx); err != nil || res.InFlight != 400 {
		b.Fatalf("first tick: %+v, %v", res, err)
	}
	var src int
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		// free 5 slots: 5 rows leave flight (claimed, failed, rolled back)
		for freed := 0; freed < 5; src++ {
			freed += storetest.RollBackOut(b, s, fmt.Sprintf("dst-%03d", src%300), 5-freed)
		}
		b.StartTimer()
		res, err := sch.Tick(ctx)
		if err != nil || res.Promoted != 5 || res.InFlight != 400 {
			b.Fatalf("tick: %+v, %v", res, err)
		}
	}
}

func seed(driver string, n int) string {
	if driver == "postgres" {
		return fmt.Sprintf(`INSERT INTO migration (engine, database_name, source, destination)
			SELECT 'mysql', 'cust_' || g, 'src-' || lpad((g %% 780)::text, 3, '0'), 'dst-' || lpad(((g / 780) %% 300)::text, 3, '0')
			FROM generate_series(0, %d) g`, n-1)
	}
	return fmt.Sprintf(`INSERT INTO migration (engine, database_name, source, destination)
		SELECT 'mysql', CONCAT('cust_', seq), CONCAT('src-', LPAD(seq %% 780, 3, '0')), CONCAT('dst-', LPAD((seq DIV 780) %% 300, 3, '0'))
		FROM seq_0_to_%d`, n-1)
}

func analyze(driver string) string {
	if driver == "postgres" {
		return "ANALYZE migration"
	}
	return "ANALYZE TABLE migration"
}
