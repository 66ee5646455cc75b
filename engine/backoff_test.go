package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/engine"
)

// TestBackoff: the waits double up to the cap; an ended context ends the
// wait with its error.
func TestBackoff(t *testing.T) {
	b := engine.NewBackoff(time.Millisecond, 4*time.Millisecond)
	start := time.Now()
	for range 5 { // 1 + 2 + 4 + 4 + 4 ms
		if err := b.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d < 15*time.Millisecond {
		t.Errorf("five waits took %s, want at least 15ms", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := engine.NewBackoff(time.Hour, time.Hour).Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("wait with an ended context: %v", err)
	}
}
