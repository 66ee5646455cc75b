package steps

import (
	"strings"
	"testing"
	"time"
)

// TestConvergence pins the judge of a stream's lag: a lag that grows over
// a whole window above the hand-on lag is not converging; one that comes
// down, stays flat, or has not been watched a whole window is not judged
// so; recovery is seen.
func TestConvergence(t *testing.T) {
	const mib = 1 << 20
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	type step struct {
		sec        int
		lag        int64
		want, flip bool
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"growing over the window", []step{{0, 2 * mib, false, false}, {20, 10 * mib, false, false}, {39, 20 * mib, false, false}, {40, 21 * mib, true, true}, {41, 22 * mib, true, false}}},
		{"a short window is not judged", []step{{0, 2 * mib, false, false}, {10, 50 * mib, false, false}, {30, 90 * mib, false, false}}},
		{"flat lag above the hand-on lag converges slowly, not judged", []step{{0, 50 * mib, false, false}, {20, 51 * mib, false, false}, {40, 52 * mib, false, false}, {60, 53 * mib, false, false}}},
		{"a dip to the hand-on lag", []step{{0, 2 * mib, false, false}, {20, mib / 2, false, false}, {40, 30 * mib, false, false}, {50, 40 * mib, false, false}}},
		{"recovers", []step{{0, 2 * mib, false, false}, {40, 20 * mib, true, true}, {60, 30 * mib, true, false}, {70, 10 * mib, true, false}, {100, 5 * mib, false, true}}},
		{"slow growth with a rising floor", []step{{0, 2 * mib, false, false}, {10, 2*mib + 150<<10, false, false}, {20, 2*mib + 300<<10, false, false}, {30, 2*mib + 450<<10, false, false}, {40, 2*mib + 600<<10, true, true}}},
		{"oscillating around a steady lag", []step{{0, 5 * mib, false, false}, {10, 6 * mib, false, false}, {20, 5 * mib, false, false}, {30, 6 * mib, false, false}, {40, 6 * mib, false, false}}},
		{"recovers at once when caught up", []step{{0, 2 * mib, false, false}, {40, 20 * mib, true, true}, {41, mib / 2, false, true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &convergence{window: 40 * time.Second, maxLag: mib}
			for _, s := range tc.steps {
				at := t0.Add(time.Duration(s.sec) * time.Second)
				got, flip := c.add(lagSample{at: at, lag: s.lag, rows: int64(s.sec) * 100, txns: int64(s.sec) * 50})
				if got != s.want || flip != s.flip {
					t.Fatalf("at %ds lag %d: not converging %v (changed %v), want %v (%v)", s.sec, s.lag, got, flip, s.want, s.flip)
				}
				if got && c.notConvergingFor(at) < 0 {
					t.Fatalf("negative duration")
				}
			}
		})
	}
	c := &convergence{window: 40 * time.Second, maxLag: mib}
	c.add(lagSample{at: t0, lag: 2 * mib, rows: 0, txns: 0})
	c.add(lagSample{at: t0.Add(40 * time.Second), lag: 42 * mib, rows: 4000, txns: 2000})
	if !strings.Contains(c.verdict, "lag grew from 2 MB to 42 MB in 40s (+1 MB/s)") || !strings.Contains(c.verdict, "100 rows/s in 50 source transactions/s") {
		t.Errorf("verdict %q", c.verdict)
	}
	if d := c.notConvergingFor(t0.Add(70 * time.Second)); d != 30*time.Second {
		t.Errorf("not converging for %s, want 30s", d)
	}
}

// TestCutoverBackoff: doubling from the configured first wait, never less
// than twice the cutover timeout, at most five minutes.
func TestCutoverBackoff(t *testing.T) {
	o := Online{}.withDefaults()
	for n, want := range map[int]time.Duration{0: 0, 1: 10 * time.Second, 2: 20 * time.Second, 3: 40 * time.Second, 6: 5 * time.Minute, 40: 5 * time.Minute} {
		if got := o.backoff(n); got != want {
			t.Errorf("backoff(%d) = %s, want %s", n, got, want)
		}
	}
	o = Online{CutoverBackoff: time.Second, CutoverTimeout: 3 * time.Second}.withDefaults()
	if got := o.backoff(1); got != 6*time.Second {
		t.Errorf("backoff(1) with a 3s timeout = %s, want 6s", got)
	}
}
