package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// Handler performs one step (a role) for rows of one engine. The engine,
// storage and DNS packages supply the handlers; the runtime claims rows,
// holds their leases, retries, and moves them on.
type Handler interface {
	// Run does the step for job.Row and returns the fields to record when
	// the row advances. It must be idempotent: after a crash, a lost lease
	// or a retry the step runs again from the start on the same row.
	//
	// Return nil to advance the row, Permanent(err) to fail it now, or any
	// other error to have it retried with backoff up to the attempt limit.
	// ctx is cancelled when the lease is lost or the agent shuts down; the
	// handler must then undo its partial effects and return.
	Run(ctx context.Context, job *Job) (statemachine.Fields, error)
	// Recover undoes what an interrupted run may have left behind on this
	// host (for example, restore writes on a source that was blocked when the
	// agent died). The runtime calls it for rows this host held in the step
	// when an earlier agent process died, once their lease has expired and
	// before they are taken back. It must be idempotent. job acts for the
	// dead process's claim: Record, PutRecord and Progress work until the
	// row is taken back.
	Recover(ctx context.Context, job *Job) error
}

// Abandoner is a Handler that must clean up when its row fails for good
// after transient failures used up its attempts (a failure it returned as
// permanent it cleaned up itself): the runtime calls Abandon before it
// marks the row failed. An online sync removes its stream there, which
// would otherwise hold WAL at the source while the row waits for an
// operator.
type Abandoner interface {
	Abandon(ctx context.Context, job *Job) error
}

// PermanentError marks a failure that retrying cannot fix: the row goes to
// its failed status at once, with the message.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err as a permanent failure.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// Permanentf formats a permanent failure.
func Permanentf(format string, args ...any) error {
	return &PermanentError{Err: fmt.Errorf(format, args...)}
}

// IsPermanent reports whether err is a permanent failure.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}

// Job is one claimed row while a handler works on it.
type Job struct {
	// Row is the row as claimed (status, attempt, owner, fence...).
	Row statemachine.Migration
	// Log carries the row's id, database, step and attempt on every line.
	Log *slog.Logger

	agent *Agent
	role  statemachine.Role
	row   *statemachine.Migration // the claim the runtime holds

	mu           sync.Mutex
	lastProgress time.Time
	pending      string
	after        []afterAdvance
}

// afterAdvance is work a step leaves for once its row has moved on.
type afterAdvance struct {
	what string
	fn   func(context.Context) error
}

// AfterAdvance registers fn to run once the step succeeded and its row
// was advanced (the next step may be running already): work that must not
// delay the next step, such as removing what the step stopped using. It
// runs in the step's goroutine with its own bounded context, on servers
// it opens itself; it cannot write the row (the claim is gone), and its
// failure is only logged: whatever it leaves, the row's records still name
// for a later step, a rollback or gc. what names it in the log.
func (j *Job) AfterAdvance(what string, fn func(context.Context) error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.after = append(j.after, afterAdvance{what, fn})
}

// Record writes fields on the row now, without moving it: how a handler
// says "writes are blocked" before blocking them. It fails with
// statemachine.ErrLeaseLost if the claim is gone.
func (j *Job) Record(ctx context.Context, f statemachine.Fields, detail string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.agent.store.Record(ctx, j.row, f, detail)
}

// Progress adds a human note ("dumping 3/12 tables, 41 MB") to the row's
// events, at most one per progress interval; notes in between are folded
// into the next one written (the latest wins).
func (j *Job) Progress(ctx context.Context, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	j.mu.Lock()
	defer j.mu.Unlock()
	if time.Since(j.lastProgress) < j.agent.cfg.ProgressInterval {
		j.pending = msg
		return
	}
	j.pending = ""
	j.lastProgress = time.Now()
	if err := j.agent.store.Progress(ctx, j.row, msg); err != nil && !errors.Is(err, context.Canceled) {
		j.Log.Debug("progress note not written", "err", err)
	}
}

// Note adds a milestone note ("writes blocked: 2 accounts, 1 session
// ended") to the row's events now, whatever the progress interval; a
// pending progress note is dropped (the milestone supersedes it).
func (j *Job) Note(ctx context.Context, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	j.mu.Lock()
	defer j.mu.Unlock()
	j.pending = ""
	j.lastProgress = time.Now()
	if err := j.agent.store.Progress(ctx, j.row, msg); err != nil && !errors.Is(err, context.Canceled) {
		j.Log.Debug("note not written", "err", err)
	}
	j.Log.Info(msg)
}

// PutRecord stores v, as JSON, as the row's record of kind (see
// statemachine.Store.PutRecord): what the step is about to change outside
// the state database, so that it can be undone by whoever comes next.
func (j *Job) PutRecord(ctx context.Context, kind string, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("record %s: %w", kind, err)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.agent.store.PutRecord(ctx, j.row, kind, body)
}

// GetRecord reads the row's record of kind into v, written by this step
// or an earlier one; false if there is none.
func (j *Job) GetRecord(ctx context.Context, kind string, v any) (bool, error) {
	body, ok, err := j.agent.store.GetRecord(ctx, j.Row.ID, kind)
	if err != nil || !ok {
		return false, err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return false, fmt.Errorf("record %s of row %d: %w", kind, j.Row.ID, err)
	}
	return true, nil
}

// Endpoint returns the address at which host's agent says its engine
// server is reached (statemachine.Agent.Endpoints).
func (j *Job) Endpoint(ctx context.Context, host string, engine statemachine.Engine) (string, error) {
	if host == j.agent.cfg.Host {
		if addr := j.agent.cfg.Endpoints[engine]; addr != "" {
			return addr, nil
		}
	}
	a, ok, err := j.agent.store.AgentFor(ctx, host)
	if err != nil {
		return "", fmt.Errorf("look up the agent of host %s: %w", host, err)
	}
	if !ok {
		return "", fmt.Errorf("host %s has no agent registered: start migrate-agent there (it publishes how to reach its %s server)", host, engine)
	}
	addr := a.Endpoints[engine]
	if addr == "" {
		return "", fmt.Errorf("the agent of host %s (pid %d on %s) publishes no %s server: set %s.advertise-address in its configuration", host, a.PID, a.Machine, engine, engine)
	}
	return addr, nil
}

// AgentOf returns host's entry in the agent registry (ok false: none).
func (j *Job) AgentOf(ctx context.Context, host string) (statemachine.Agent, bool, error) {
	if host == j.agent.cfg.Host {
		return statemachine.Agent{Host: host, DNSTarget: j.agent.cfg.DNSTarget, Endpoints: j.agent.cfg.Endpoints}, true, nil
	}
	return j.agent.store.AgentFor(ctx, host)
}

// CountBytes adds n bytes moved in direction ("in", "out") to the metrics.
func (j *Job) CountBytes(direction string, n int64) {
	if j.agent.metrics != nil {
		j.agent.metrics.Bytes.WithLabelValues(string(j.role), direction).Add(float64(n))
	}
}
