package agent

import (
	"testing"
	"time"
)

func TestBackoffGrowsAndIsBounded(t *testing.T) {
	a := &Agent{cfg: Config{RetryBase: time.Second, RetryMax: 10 * time.Second}}
	for attempt, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second, 60: 10 * time.Second} {
		for range 100 {
			d := a.backoff(attempt)
			if d < want/2 || d > want {
				t.Fatalf("attempt %d: backoff %s, want %s..%s", attempt, d, want/2, want)
			}
		}
	}
}
