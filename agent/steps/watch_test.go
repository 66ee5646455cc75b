package steps

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/agent"
)

// The watchdog's logic with a fake probe; the fault suite (case 9b) runs it
// against a frozen MariaDB.
func TestWatchdog(t *testing.T) {
	t.Parallel()
	job := &agent.Job{Log: slog.New(slog.DiscardHandler)}
	const after = 5 * time.Second

	t.Run("a server that stops answering is abandoned after the timeout", func(t *testing.T) {
		t.Parallel()
		var calls atomic.Int32
		start := time.Now()
		ctx, hung := watchServer(context.Background(), job, "db-1", after, func(ctx context.Context) error {
			if calls.Add(1) <= 2 {
				return nil // answered twice, then froze
			}
			<-ctx.Done()
			return ctx.Err()
		})
		select {
		case <-ctx.Done():
		case <-time.After(4 * after):
			t.Fatal("not cancelled")
		}
		took := time.Since(start)
		err := hung()
		if err == nil || !strings.Contains(err.Error(), "the db-1 server has not answered for") || !errors.Is(context.Cause(ctx), err) {
			t.Fatalf("cause %v, hung %v", context.Cause(ctx), err)
		}
		if took < after+2*time.Second {
			t.Fatalf("cancelled after %s: the server answered until 2 s in, the timeout is %s", took, after)
		}
	})
	t.Run("a server that answers, slowly or with errors, is never abandoned", func(t *testing.T) {
		t.Parallel()
		ctx, hung := watchServer(context.Background(), job, "db-2", after, func(context.Context) error {
			time.Sleep(300 * time.Millisecond)
			return nil
		})
		time.Sleep(2 * after)
		if ctx.Err() != nil || hung() != nil {
			t.Fatalf("cancelled: %v", context.Cause(ctx))
		}
	})
	t.Run("watch without a timeout is the handler itself", func(t *testing.T) {
		var h agent.Handler = &closeStep{}
		if watch(h, "x", 0, nil) != h {
			t.Fatal("wrapped with the watchdog off")
		}
	})
}

// The import beside a dump that the watchdog cut short says the hang, not
// only "context canceled" (fault case 9b drives it against a frozen
// MariaDB when the freeze lands in the verification).
func TestBesideCause(t *testing.T) {
	t.Parallel()
	importErr := errors.New("list what \"x\" holds on db-1: context canceled")
	hang := errors.New("the db-1 server has not answered for 6s (hang timeout 5s; last probe: i/o timeout): this attempt was abandoned")

	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(hang)
	got := besideCause(ctx, importErr)
	if !errors.Is(got, hang) || !strings.Contains(got.Error(), "has not answered") || !strings.Contains(got.Error(), "context canceled") {
		t.Errorf("watchdog: %v", got)
	}

	if got := besideCause(context.Background(), importErr); got.Error() != importErr.Error() {
		t.Errorf("not cancelled: %v", got)
	}
	plain, stop := context.WithCancel(context.Background())
	stop()
	if got := besideCause(plain, importErr); got.Error() != importErr.Error() {
		t.Errorf("cancelled without a cause (the agent stops): %v", got)
	}
	if got := besideCause(ctx, fmt.Errorf("verify: %w", hang)); got.Error() != "verify: "+hang.Error() {
		t.Errorf("an error that already holds the cause is kept: %v", got)
	}
}
