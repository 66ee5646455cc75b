package agent_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/agent"
)

// TestJitterSpreadsPolls: 200 agents started at the same instant, polling
// every 60 s with the runtime's jitter, over 10 minutes: no second holds more
// than 1% of the polls, and almost every second has some. Computed from the
// delays the runtime uses, not by sleeping.
func TestJitterSpreadsPolls(t *testing.T) {
	const agents, window = 200, 10 * time.Minute
	interval := time.Minute
	perSecond := make([]int, int(window/time.Second))
	total := 0
	for i := range agents {
		r := rand.New(rand.NewPCG(uint64(i), 42))
		at := agent.FirstPoll(interval, r)
		for at < window {
			perSecond[int(at/time.Second)]++
			total++
			d := agent.Jittered(interval, r)
			if d < interval/2 || d > 3*interval/2 {
				t.Fatalf("jittered interval %s outside ±50%% of %s", d, interval)
			}
			at += d
		}
	}
	maxN, empty := 0, 0
	for _, n := range perSecond {
		maxN = max(maxN, n)
		if n == 0 {
			empty++
		}
	}
	// ~2,000 polls over 600 s: 3.3 a second on average.
	if total < 1800 {
		t.Fatalf("%d polls in the window, want about 2,000", total)
	}
	if maxN > total/100 {
		t.Errorf("one second holds %d of %d polls (over 1%%): agents poll in step", maxN, total)
	}
	if empty > len(perSecond)/10 {
		t.Errorf("%d of %d seconds have no poll at all: polls bunch up", empty, len(perSecond))
	}
	t.Logf("%d polls, busiest second %d (%.2f%%), %d empty seconds", total, maxN, 100*float64(maxN)/float64(total), empty)

	// Without jitter every agent started together would poll in the same
	// second: the check above would catch that.
	if maxWithoutJitter := agents; maxWithoutJitter <= total/100 {
		t.Fatal("the assertion cannot tell jitter from none")
	}
}

func TestJitterBounds(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		if d := agent.Jittered(10*time.Second, r); d < 5*time.Second || d > 15*time.Second {
			t.Fatalf("jittered %s outside 5s..15s", d)
		}
		if f := agent.FirstPoll(10*time.Second, r); f < 0 || f > 5*time.Second {
			t.Fatalf("first poll %s outside 0..5s", f)
		}
	}
}
