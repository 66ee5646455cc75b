package dns_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/dns"
	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
)

// BenchmarkRepoint measures signed, prerequisite-checked repoints per
// second against BIND (each is a lookup at the primary plus its share of
// an UPDATE), one iteration repointing 4,000 names from a number of
// goroutines, with and without batching.
func BenchmarkRepoint(b *testing.B) {
	const names = 4000
	recs := make([]string, names)
	for i := range recs {
		recs[i] = fmt.Sprintf("n%05d 300 IN A 127.77.0.1", i)
	}
	srv := fleettest.NewBIND(b, fleettest.BINDConfig{Records: recs})
	a, z := mustTarget(b, "127.77.0.1"), mustTarget(b, "127.77.0.2, fd77::2")
	for _, bc := range []struct {
		name     string
		batch    int
		inFlight int
	}{
		{"unbatched/1-in-flight", 1, 1},
		{"unbatched/4-in-flight", 1, 4},
		{"batched-50/64-in-flight", 50, 64},
		{"batched-200/400-in-flight", 200, 400},
	} {
		b.Run(bc.name, func(b *testing.B) {
			u, err := dns.New(dns.Config{Zones: []dns.Zone{{Name: srv.Zone, Primary: srv.Addr}},
				Key: dns.Key{Name: srv.KeyName, Secret: srv.KeySecret}, MaxBatch: bc.batch, Timeout: 10 * time.Second})
			if err != nil {
				b.Fatal(err)
			}
			defer u.Close()
			var total time.Duration
			for b.Loop() {
				// every name flips: a -> z on odd passes, back on even
				st := u.Stats()
				from, to := a, z
				if n, _ := u.Lookup(context.Background(), "n00000.db.example.test"); n.Target.Equal(z) {
					from, to = z, a
				}
				start := time.Now()
				var next atomic.Int64
				var failed atomic.Int64
				var wg sync.WaitGroup
				for range bc.inFlight {
					wg.Go(func() {
						for {
							i := next.Add(1) - 1
							if i >= names {
								return
							}
							if _, err := u.Repoint(context.Background(), fmt.Sprintf("n%05d.db.example.test", i), from, to); err != nil {
								failed.Add(1)
								b.Error(err)
							}
						}
					})
				}
				wg.Wait()
				total += time.Since(start)
				if failed.Load() > 0 {
					b.Fatalf("%d repoints failed", failed.Load())
				}
				after := u.Stats()
				b.ReportMetric(float64(after.Changes-st.Changes)/float64(after.Messages-st.Messages), "names/message")
			}
			b.ReportMetric(float64(names*b.N)/total.Seconds(), "updates/s")
		})
	}
}

func mustTarget(b *testing.B, s string) dns.Target {
	t, err := dns.ParseTarget(s)
	if err != nil {
		b.Fatal(err)
	}
	return t
}
