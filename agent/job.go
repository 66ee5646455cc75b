package agent

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"runtime/debug"
	"time"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// start runs the step for a claimed row in its own goroutine.
func (a *Agent) start(jobsCtx context.Context, role statemachine.Role, m statemachine.Migration, freed chan<- struct{}) {
	a.mu.Lock()
	a.running[role]++
	a.current[m.ID] = fmt.Sprintf("row %d (%q, %s step, %s)", m.ID, m.DatabaseName, role, m.Status)
	a.mu.Unlock()
	if a.metrics != nil {
		a.metrics.JobsRunning.WithLabelValues(string(role)).Inc()
	}
	a.jobs.Add(1)
	go func() {
		defer func() {
			a.mu.Lock()
			a.running[role]--
			delete(a.current, m.ID)
			a.mu.Unlock()
			if a.metrics != nil {
				a.metrics.JobsRunning.WithLabelValues(string(role)).Dec()
			}
			a.jobs.Done()
			select {
			case freed <- struct{}{}:
			default:
			}
		}()
		a.work(jobsCtx, role, &m)
	}()
}

// work runs the handler on a claimed row under its lease until the row is
// advanced, failed, released or lost, retrying transient failures.
func (a *Agent) work(jobsCtx context.Context, role statemachine.Role, m *statemachine.Migration) {
	start := time.Now()
	log := a.rowLog(role, *m)
	h, ok := a.handler(role, m.Engine)
	if !ok { // claims are filtered by engine; this is a safety net
		a.finish(role, start, resultReleased, a.persist(context.WithoutCancel(jobsCtx), log, "release", func(ctx context.Context) error {
			return a.store.Release(ctx, m, statemachine.Fields{}, fmt.Sprintf("agent on %s has no %s handler for %s rows", a.cfg.Host, role, m.Engine))
		}))
		return
	}
	ctx, cancel := context.WithCancelCause(jobsCtx)
	defer cancel(nil)
	// Final writes and renewals must happen even after the step's context is
	// cancelled (shutdown): they run on a context that is never cancelled.
	bg := context.WithoutCancel(jobsCtx)
	stopKeeper := a.keepLease(bg, *m, cancel)
	defer stopKeeper()

	log.Info("step started")
	job := &Job{Row: *m, Log: log, agent: a, role: role, row: m}
	for {
		fields, err := a.runHandler(ctx, h, job)
		cause := context.Cause(ctx)
		switch {
		case errors.Is(cause, errLeaseLost):
			log.Warn("lease lost: the row is no longer this agent's; its step stopped", "err", err)
			a.finish(role, start, resultLeaseLost, nil)
			return
		case err == nil:
			log.Info("step done", "took", time.Since(start).Round(time.Millisecond).String())
			stopKeeper()
			perr := a.persist(bg, log, "advance", func(ctx context.Context) error {
				return a.store.Advance(ctx, m, fields, fmt.Sprintf("%s done in %s", role, time.Since(start).Round(time.Millisecond)))
			})
			a.finish(role, start, resultDone, perr)
			if perr == nil {
				runAfter(bg, log, job)
			}
			return
		case cause != nil: // shutting down: the handler has undone its work
			reason := fmt.Sprintf("%s: %s step cancelled after %s and undone; another run will redo it", cause, role, time.Since(start).Round(time.Second))
			log.Warn("step cancelled by the agent's shutdown; giving the row back", "err", err)
			stopKeeper()
			a.finish(role, start, resultReleased, a.persist(bg, log, "release", func(ctx context.Context) error {
				return a.store.Release(ctx, m, statemachine.Fields{}, reason)
			}))
			return
		case IsPermanent(err):
			log.Error("step failed", "err", err)
			stopKeeper()
			a.finish(role, start, resultFailed, a.persist(bg, log, "fail", func(ctx context.Context) error {
				return a.store.Fail(ctx, m, statemachine.Fields{}, err.Error())
			}))
			return
		case m.Attempt >= a.cfg.MaxAttempts:
			log.Error("step failed; attempts used up", "err", err, "max_attempts", a.cfg.MaxAttempts)
			reason := fmt.Sprintf("gave up after %d attempts: %v", m.Attempt, err)
			if ab, ok := h.(Abandoner); ok {
				if aerr := ab.Abandon(bg, job); aerr != nil {
					log.Error("cleaning up after the last attempt failed; a retry or a rollback does it", "err", aerr)
					reason += fmt.Sprintf("; NOT cleaned up (a retry or a rollback does it): %v", aerr)
				}
			}
			stopKeeper()
			a.finish(role, start, resultFailed, a.persist(bg, log, "fail", func(ctx context.Context) error {
				return a.store.Fail(ctx, m, statemachine.Fields{}, reason)
			}))
			return
		}
		// A transient failure: count the attempt, back off, run again under
		// the same claim.
		wait := a.backoff(m.Attempt)
		if perr := a.persist(bg, log, "note retry", func(ctx context.Context) error { return a.store.NoteRetry(ctx, m, err.Error()) }); perr != nil {
			a.finish(role, start, resultLeaseLost, perr)
			return
		}
		log = a.rowLog(role, *m)
		job.Log, job.Row = log, *m
		log.Warn("step failed; retrying", "err", err, "retry_in", wait.Round(time.Millisecond).String())
		select {
		case <-ctx.Done(): // handled at the top of the next round
		case <-time.After(wait):
		}
		if ctx.Err() != nil {
			continue
		}
	}
}

// afterTimeout bounds the work a step left for after its advance.
const afterTimeout = time.Minute

// runAfter runs what the job's step left for after its row advanced
// (Job.AfterAdvance), each bounded by afterTimeout; failures are logged.
func runAfter(ctx context.Context, log interface {
	Info(string, ...any)
	Warn(string, ...any)
}, job *Job) {
	job.mu.Lock()
	after := job.after
	job.after = nil
	job.mu.Unlock()
	for _, w := range after {
		actx, cancel := context.WithTimeout(ctx, afterTimeout)
		t0 := time.Now()
		err := w.fn(actx)
		cancel()
		if err != nil {
			log.Warn("after the step: "+w.what+" failed; a later step, a rollback or gc does it", "err", err)
			continue
		}
		log.Info("after the step: "+w.what, "took", time.Since(t0).Round(time.Millisecond).String())
	}
}

// runHandler runs the handler, turning a panic into a transient error.
func (a *Agent) runHandler(ctx context.Context, h Handler, job *Job) (f statemachine.Fields, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panicked: %v", r)
			job.Log.Error("handler panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
	}()
	if ctx.Err() != nil {
		return f, context.Cause(ctx)
	}
	return h.Run(ctx, job)
}

// keepLease renews the claim every third of the lease until stopped. When
// the claim is lost, or cannot be renewed before it expires, it cancels the
// step with errLeaseLost. The returned stop function is idempotent.
func (a *Agent) keepLease(bg context.Context, claim statemachine.Migration, cancel context.CancelCauseFunc) (stop func()) {
	done := make(chan struct{})
	quit := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(a.cfg.Lease / 3)
		defer t.Stop()
		renewed := time.Now()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
			}
			ctx, c := context.WithTimeout(bg, a.cfg.Lease/3)
			_, err := a.store.Renew(ctx, &claim, a.cfg.Lease)
			c()
			switch {
			case err == nil:
				renewed = time.Now()
			case errors.Is(err, statemachine.ErrLeaseLost):
				cancel(errLeaseLost)
				return
			case time.Since(renewed) >= a.cfg.Lease:
				a.log.Error("could not renew a lease before it expired; stopping the step", "row", claim.ID, "err", err)
				cancel(errLeaseLost)
				return
			default:
				a.stateError("renew lease", err)
			}
		}
	}()
	var stopped bool
	return func() {
		if !stopped {
			stopped = true
			close(quit)
			<-done
		}
	}
}

// persist runs a final write for a step, retrying while the state database
// fails, for up to three leases (after that the lease has expired anyway
// and the row will be taken back and redone). A lost claim is final.
func (a *Agent) persist(bg context.Context, log interface{ Error(string, ...any) }, what string, fn func(context.Context) error) error {
	deadline := time.Now().Add(3 * a.cfg.Lease)
	wait := 200 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(bg, max(a.cfg.Lease, time.Second))
		err := fn(ctx)
		cancel()
		if err == nil {
			a.stateOK(what)
			return nil
		}
		if errors.Is(err, statemachine.ErrLeaseLost) || errors.Is(err, statemachine.ErrInvalidTransition) || time.Now().After(deadline) {
			log.Error("could not record the end of the step", "write", what, "err", err)
			return err
		}
		a.stateError(what, err)
		time.Sleep(wait)
		wait = min(2*wait, 10*time.Second)
	}
}

// finish records the step's duration and result.
func (a *Agent) finish(role statemachine.Role, start time.Time, result string, err error) {
	if err != nil && result != resultLeaseLost {
		result = resultLeaseLost // the end could not be recorded: the row will be taken back
	}
	if a.metrics != nil {
		a.metrics.StepSeconds.WithLabelValues(string(role), result).Observe(time.Since(start).Seconds())
	}
}

// backoff is the wait before retry number attempt: exponential from
// RetryBase up to RetryMax, with jitter over its upper half.
func (a *Agent) backoff(attempt int) time.Duration {
	d := a.cfg.RetryBase << min(max(attempt-1, 0), 20)
	d = min(d, a.cfg.RetryMax)
	return d/2 + time.Duration(mrand.Int64N(int64(d/2)+1))
}

// JobFor returns a Job acting for row m in step role outside the claim
// loop: what a handler's test drives it with. It writes through the
// agent's store as a claim would (Record, PutRecord, Progress), without a
// lease keeper.
func (a *Agent) JobFor(role statemachine.Role, m statemachine.Migration) *Job {
	return &Job{Row: m, Log: a.rowLog(role, m), agent: a, role: role, row: &m}
}
