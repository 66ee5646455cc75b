package agent

import (
	"context"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// pollLoop claims work for one role until ctx ends. It polls at jittered
// intervals while idle; when a poll finds work it polls again at once until
// the role's slots are full, and again whenever a slot frees while there was
// work. Steps run with jobsCtx, which outlives ctx during a graceful stop.
func (a *Agent) pollLoop(ctx, jobsCtx context.Context, role statemachine.Role) {
	rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), uint64(len(role))))
	slots := a.cfg.MaxJobs[role]
	freed := make(chan struct{}, slots)
	first := FirstPoll(a.cfg.PollInterval, rng)
	if len(a.gone) > 0 {
		first = 0 // the dead predecessor's rows are taken back at once
	}
	timer := time.NewTimer(first)
	defer timer.Stop()
	// A store that can announce claimable rows (PostgreSQL LISTEN/NOTIFY)
	// wakes the loop at once; the jittered poll stays as the fallback.
	var wake <-chan struct{}
	if w, ok := a.store.(statemachine.Waker); ok {
		ch, unsubscribe := w.Wake(role, a.cfg.Host)
		defer unsubscribe()
		wake = ch
	}
	hadWork := false
	var backoff time.Duration
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-freed:
			if !hadWork {
				continue
			}
		case <-wake:
			if backoff > 0 {
				continue // the state database is failing: keep backing off
			}
			if a.runningOf(role) >= slots {
				hadWork = true // poll when a slot frees
				continue
			}
			if a.metrics != nil {
				a.metrics.Wakeups.WithLabelValues(string(role)).Inc()
			}
		}
		claimed, err := a.poll(ctx, role, slots)
		if ctx.Err() != nil {
			// stopping: claimed rows still get their steps run
			for _, m := range claimed {
				a.start(jobsCtx, role, m, freed)
			}
			return
		}
		if err != nil {
			a.stateError("poll "+string(role), err)
			backoff = min(max(2*backoff, 500*time.Millisecond), a.cfg.PollInterval)
			hadWork = false
			resetTimer(timer, backoff)
			continue
		}
		backoff = 0
		a.stateOK("poll " + string(role))
		for _, m := range claimed {
			a.start(jobsCtx, role, m, freed)
		}
		// A poll with every slot taken (a freed signal already used by an
		// earlier poll, or the timer) claims nothing but learns nothing
		// either: keep knowing there was work, or the next freed slot
		// would not poll and a queued row would wait a whole interval.
		hadWork = len(claimed) > 0 || (hadWork && a.runningOf(role) >= slots)
		switch {
		case hadWork && a.runningOf(role) < slots:
			resetTimer(timer, 0) // there may be more: poll again at once
		case hadWork:
			resetTimer(timer, Jittered(a.cfg.PollInterval, rng)) // a freed slot polls sooner
		default:
			a.warnUnhandled(ctx, role)
			resetTimer(timer, Jittered(a.cfg.PollInterval, rng))
		}
	}
}

// poll recovers this host's rows left by a dead process (until a poll finds
// none: no process but this one claims for the host afterwards), then claims
// up to the role's free slots.
func (a *Agent) poll(ctx context.Context, role statemachine.Role, slots int) ([]statemachine.Migration, error) {
	if a.metrics != nil {
		a.metrics.Polls.WithLabelValues(string(role)).Inc()
	}
	if err := a.recoverExpired(ctx, role); err != nil {
		return nil, err
	}
	free := slots - a.runningOf(role)
	if free <= 0 || len(a.handlers[role]) == 0 {
		return nil, nil
	}
	ms, err := a.store.Claim(ctx, statemachine.ClaimRequest{
		Role: role, Host: a.cfg.Host, Engines: a.engines(role), Owner: a.owner, Limit: free, Lease: a.cfg.Lease,
	})
	if err == nil && a.metrics != nil {
		a.metrics.Claims.WithLabelValues(string(role)).Add(float64(len(ms)))
	}
	return ms, err
}

// recoverExpired finds rows this host held in role's working status under
// an earlier, dead agent process — whose lease has expired, or whose owner
// is the predecessor this process knows is gone (Agent.gone) —: it runs the
// handler's Recover on each (for example to restore writes), and its
// Abandon when the row will fail (its attempts used up), then takes them
// back (the step is retried, or failed past the attempt limit).
func (a *Agent) recoverExpired(ctx context.Context, role statemachine.Role) error {
	a.mu.Lock()
	done := a.recovered[role]
	a.mu.Unlock()
	if done {
		return nil
	}
	step, _ := statemachine.StepFor(role)
	rows, err := a.store.List(ctx, a.hostFilter(step, step.Working, 0))
	if err != nil {
		return err
	}
	var stale []statemachine.Migration
	for _, m := range rows {
		if m.Owner != a.owner && strings.HasPrefix(m.Owner, a.cfg.Host+"/") {
			stale = append(stale, m)
		}
	}
	if len(stale) == 0 {
		// Rows of earlier processes only exist at start: once none is
		// left, stop looking (a query per poll saved).
		a.mu.Lock()
		a.recovered[role] = true
		a.mu.Unlock()
		return nil
	}
	now, err := a.store.Now(ctx)
	if err != nil {
		return err
	}
	expired := 0
	for _, m := range stale {
		if m.LeaseUntil.After(now) && !slices.Contains(a.gone, m.Owner) {
			continue // its lease still runs: a later poll takes it back
		}
		expired++
		log := a.rowLog(role, m)
		h, ok := a.handler(role, m.Engine)
		if !ok {
			log.Warn("row left by a dead agent process has no handler here; taking it back without recovery", "owner", m.Owner)
			continue
		}
		log.Warn("recovering a step interrupted by the death of an earlier agent process", "owner", m.Owner,
			"lease_expired", m.LeaseUntil.Format(time.RFC3339))
		job := &Job{Row: m, Log: log, agent: a, role: role, row: &m}
		if err := h.Recover(ctx, job); err != nil {
			log.Error("recovery failed; the row is taken back anyway and its next run must cope", "err", err)
		}
		if ab, ok := h.(Abandoner); ok && m.Attempt >= a.cfg.MaxAttempts {
			// Its attempts are used up: the row fails now, and what the
			// attempts left (a stream, an import) must not outlive it.
			if err := ab.Abandon(ctx, job); err != nil {
				log.Error("cleaning up after the last attempt failed; a retry or a rollback does it", "err", err)
			}
		}
	}
	if expired == 0 {
		return nil
	}
	res, err := a.store.RescueHost(ctx, role, a.cfg.Host, a.gone, a.cfg.MaxAttempts)
	for _, r := range res {
		a.log.Warn("took back a row left by a dead agent process", "row", r.ID, "from", r.From, "to", r.To, "owner", r.Owner, "step", role)
	}
	return err
}

// warnUnhandled warns once per role and engine about rows queued for this
// host that no handler here can take: they are left alone.
func (a *Agent) warnUnhandled(ctx context.Context, role statemachine.Role) {
	engines := a.engines(role)
	if engines == nil && len(a.handlers[role]) > 0 {
		return // a handler for every engine
	}
	step, _ := statemachine.StepFor(role)
	rows, err := a.store.List(ctx, a.hostFilter(step, step.Queued, 200))
	if err != nil {
		return
	}
	for _, m := range rows {
		if _, ok := a.handler(role, m.Engine); ok {
			continue
		}
		key := string(role) + "/" + string(m.Engine)
		a.mu.Lock()
		seen := a.warned[key]
		a.warned[key] = true
		a.mu.Unlock()
		if !seen {
			a.rowLog(role, m).Warn("rows queued for this host have an engine this agent has no handler for; leaving them alone",
				"handled_engines", fmt.Sprint(engines))
		}
	}
}

// hostFilter selects a step's rows in status for this host (all hosts for
// steps any agent may take, like dns).
func (a *Agent) hostFilter(step statemachine.Step, status statemachine.Status, limit int) statemachine.Filter {
	f := statemachine.Filter{Statuses: []statemachine.Status{status}, Limit: limit}
	switch step.Side {
	case statemachine.SideSource:
		f.Source = a.cfg.Host
	case statemachine.SideDestination:
		f.Destination = a.cfg.Host
	}
	return f
}

func (a *Agent) runningOf(role statemachine.Role) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.running[role]
}

// rowLog is the logger for lines about one row.
func (a *Agent) rowLog(role statemachine.Role, m statemachine.Migration) *slog.Logger {
	return a.log.With("row", m.ID, "database", m.DatabaseName, "engine", m.Engine, "step", role, "attempt", m.Attempt,
		"source", m.Source, "destination", m.Destination)
}

func resetTimer(t *time.Timer, d time.Duration) {
	t.Stop()
	select {
	case <-t.C:
	default:
	}
	t.Reset(d)
}
