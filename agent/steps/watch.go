package steps

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/fleetmigrate/fleetmigrate/agent"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// A server that hangs — connections open, nothing answers (a frozen VM,
// a stuck storage controller) — would hold a step forever: its queries
// wait on the network without end, and the agent, alive, keeps renewing the
// row's lease. The watchdog asks the step's server for an answer on a
// connection of its own every few seconds; when it has had none for the
// hang timeout it cancels the step, which undoes what it did and fails as
// a transient error (retried, then the failed status), saying why.
//
// A slow server that answers is never cancelled: a long index build or a
// busy disk is progress the watchdog cannot see, and need not.

// watched runs a handler under the watchdog of the host's server.
type watched struct {
	agent.Handler
	server string
	after  time.Duration
	probe  func(context.Context) error
}

// watch wraps h (nothing when after is 0: the watchdog is off).
func watch(h agent.Handler, server string, after time.Duration, probe func(context.Context) error) agent.Handler {
	if after <= 0 {
		return h
	}
	return &watched{Handler: h, server: server, after: after, probe: probe}
}

func (w *watched) Run(ctx context.Context, job *agent.Job) (statemachine.Fields, error) {
	ctx, hung := watchServer(ctx, job, w.server, w.after, w.probe)
	f, err := w.Handler.Run(ctx, job)
	if cause := hung(); cause != nil && err != nil {
		// whatever the step said, the hang is why: transient, retried
		return statemachine.Fields{}, fmt.Errorf("%w; the step stopped with: %s", cause, err.Error()) // its error is a consequence: not classified
	}
	return f, err
}

// probeEvery is how often the watchdog asks: a fifth of the timeout,
// between 1 and 30 seconds; each probe may take as long.
func probeEvery(after time.Duration) time.Duration {
	return min(max(after/5, time.Second), 30*time.Second)
}

// watchServer returns a context that is cancelled once the server has not
// answered probe for after, and hung, which stops the watchdog and returns
// why it cancelled (nil if it did not).
func watchServer(ctx context.Context, job *agent.Job, server string, after time.Duration, probe func(context.Context) error) (context.Context, func() error) {
	ctx, cancel := context.WithCancelCause(ctx)
	var fired atomic.Pointer[error]
	quit, stopped := make(chan struct{}), make(chan struct{})
	every := probeEvery(after)
	go func() {
		defer close(stopped)
		t := time.NewTicker(every)
		defer t.Stop()
		answered := time.Now()
		for {
			select {
			case <-quit:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			pctx, pcancel := context.WithTimeout(ctx, every)
			err := probe(pctx)
			pcancel()
			if err == nil {
				answered = time.Now()
				continue
			}
			if silent := time.Since(answered); silent >= after {
				e := fmt.Errorf("the %s server has not answered for %s (hang timeout %s; last probe: %w): this attempt was abandoned", server, silent.Round(time.Second), after, err)
				fired.Store(&e)
				job.Log.Error("server hangs: cancelling the step", "server", server, "silent", silent.Round(time.Second).String(), "err", err)
				cancel(e)
				return
			}
		}
	}()
	return ctx, func() error {
		close(quit)
		<-stopped
		cancel(nil)
		if p := fired.Load(); p != nil {
			return *p
		}
		return nil
	}
}

// Abandon forwards to the wrapped handler's (agent.Abandoner).
func (w *watched) Abandon(ctx context.Context, job *agent.Job) error {
	if ab, ok := w.Handler.(agent.Abandoner); ok {
		return ab.Abandon(ctx, job)
	}
	return nil
}
