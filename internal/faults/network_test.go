//go:build faults

package faults_test

import (
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/demo"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// Case 9c: network faults between the import agent and its database server,
// through a TCP proxy (no root): the link slowed to a trickle, then every
// connection cut, then held silent (connections open, no bytes) past the
// agents' hang timeout. Slow is not a failure; a cut is retried; a silent
// link is abandoned by the watchdog and retried; the database arrives.
func TestNetworkFaults(t *testing.T) {
	t.Parallel()
	r := record(t, "9c", "network between the import agent and its server: slowed, cut, held silent (TCP proxy)")
	const hangTimeout = 5 * time.Second
	d, ctx := fleet(t, 8, 40<<20, func(o *demo.Options) {
		o.HangTimeout = hangTimeout
		o.Proxied = []string{"mysql-dst-1"}
	})
	big := largest(d, demo.MySQL)
	if big.Destination != "mysql-dst-1" {
		t.Fatalf("the largest database goes to %s, not the proxied mysql-dst-1", big.Destination)
	}
	p := d.Proxy(big.Destination)
	// Slow: 4 MiB/s per connection from the start, so that the import is
	// long enough to cut and to silence.
	const rate = 2 << 20
	p.Slow(rate)
	if err := d.StartMigration(ctx); err != nil {
		t.Fatal(err)
	}
	// under way: Importing, and its SQL flowing through the proxy (the
	// rows only show at the destination as each table's load commits)
	flowing := func() {
		t.Helper()
		var base int64
		waitFor(ctx, t, d, "the large database's import to flow through the proxy", 3*time.Minute, func() bool {
			if st := row(ctx, t, d, big).Status; st != statemachine.Dumping && st != statemachine.Importing {
				base = p.Forwarded()
				return false
			}
			return p.Forwarded()-base > 2<<20
		})
	}
	flowing()
	first := row(ctx, t, d, big).Attempt
	before := p.Forwarded()
	time.Sleep(5 * time.Second)
	slowed := p.Forwarded() - before
	if m := row(ctx, t, d, big); (m.Status != statemachine.Dumping && m.Status != statemachine.Importing) || m.Attempt != first {
		t.Errorf("5 s into a slowed import the row is %s, attempt %d; slow is not a failure (want it still importing, attempt %d)", m.Status, m.Attempt, first)
	}
	if slowed == 0 {
		t.Errorf("nothing went through the proxy in 5 s of a slowed import")
	}
	r.inject("the link slowed to %d MiB/s per connection from the start (%d MiB through it in 5 s mid-import, all connections)", rate>>20, slowed>>20)

	// Cut: every open connection reset.
	cut := p.Cut()
	r.inject("every connection through it reset mid-import (%d)", cut)
	// The next attempt: of the same step, or the import step taking the
	// dump from the store after the import beside the dump failed.
	firstStatus := row(ctx, t, d, big).Status
	waitFor(ctx, t, d, "the import's next attempt", 2*time.Minute, func() bool {
		m := row(ctx, t, d, big)
		return m.Attempt > first || m.Status != firstStatus
	})
	flowing()

	// Silent: bytes held both ways, connections open, past the hang timeout.
	p.Pause()
	fired := waitWatchdog(ctx, t, d, big.Destination, time.Now(), hangTimeout)
	p.Slow(0)
	p.Resume()
	r.inject("then every byte held (connections open, silent) until the watchdog fired (hang timeout %s)", hangTimeout)

	tr := retriedAfterHang(ctx, t, d, r, big)
	r.saw("slow: no failure, no retry; the silent link abandoned %s after it went quiet; row: %s", fired.Round(time.Second), tr)
}
