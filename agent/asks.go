package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// Peer asks (statemachine.Asks): a step that needs a change at the server
// of its row's other side asks that side's agent (Job.AskPeer) instead of
// making it there itself; every agent answers the asks of its host
// (Agent.Answer registers what it does for an action), each making the
// change on its own server. So an agent is the only writer of its own
// server, and peers only read it (issue 33, part 4).

// DefaultAskTimeout is how long a step waits for the answer to an ask.
const DefaultAskTimeout = 2 * time.Minute

// askWorkers bounds the rows whose asks an agent works on at once.
const askWorkers = 32

// AskHandler does what an ask asks at this host's server and returns what
// it did (encoded as JSON into the answer), or why it did not.
type AskHandler func(ctx context.Context, req *AskRequest) (answer any, err error)

// AskRequest is one ask as its handler sees it.
type AskRequest struct {
	Ask statemachine.Ask
	// Row is the ask's row as it is now.
	Row statemachine.Migration
	Log *slog.Logger

	asks  statemachine.Asks
	store statemachine.Store
}

// Save writes v into the ask's answer before the ask is answered: what the
// handler is about to change, so that a run after a crash finds it
// (Saved) and an undo asked later knows it.
func (r *AskRequest) Save(ctx context.Context, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode what ask %d is about to do: %w", r.Ask.ID, err)
	}
	if err := r.asks.SaveAnswer(ctx, r.Ask.ID, body); err != nil {
		return err
	}
	r.Ask.Answer = body
	return nil
}

// Saved decodes what an earlier run saved into v; false if nothing was.
func (r *AskRequest) Saved(v any) (bool, error) {
	if len(r.Ask.Answer) == 0 {
		return false, nil
	}
	if err := json.Unmarshal(r.Ask.Answer, v); err != nil {
		return false, fmt.Errorf("what ask %d saved: %w", r.Ask.ID, err)
	}
	return true, nil
}

// Record reads the row's step record of kind into v (false: none) and
// says who wrote it last: the host whose agent login did, "" for an
// operator.
func (r *AskRequest) Record(ctx context.Context, kind string, v any) (ok bool, author string, err error) {
	author, ok, err = r.asks.RecordAuthor(ctx, r.Row.ID, kind)
	if err != nil || !ok {
		return false, "", err
	}
	body, ok, err := r.store.GetRecord(ctx, r.Row.ID, kind)
	if err != nil || !ok {
		return false, "", err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return false, "", fmt.Errorf("record %s of row %d: %w", kind, r.Row.ID, err)
	}
	return true, author, nil
}

// Related lists the row's asks that share this one's ref, oldest first.
func (r *AskRequest) Related(ctx context.Context) ([]statemachine.Ask, error) {
	return r.asks.AsksOf(ctx, r.Row.ID, r.Ask.Ref)
}

// Answer registers what this agent does when a peer asks action for a row
// of engine (register before Run).
func (a *Agent) Answer(action string, engine statemachine.Engine, h AskHandler) {
	if a.answers == nil {
		a.answers = map[string]AskHandler{}
	}
	a.answers[action+"/"+string(engine)] = h
}

// AskPeer asks the agent of the row's side side to do action (ref: see
// statemachine.Ask) and waits for its answer, at most the agent's
// AskTimeout. The answer may say it was not done (Ask.Error).
func (j *Job) AskPeer(ctx context.Context, side statemachine.HostSide, action, ref string) (statemachine.Ask, error) {
	asks, ok := j.agent.store.(statemachine.Asks)
	if !ok {
		return statemachine.Ask{}, errors.New("the state store carries no peer asks")
	}
	host := j.Row.Source
	if side == statemachine.SideDestination {
		host = j.Row.Destination
	}
	answers, stop := asks.WakeAnswers(j.agent.cfg.Host)
	defer stop()
	j.mu.Lock()
	id, err := asks.Ask(ctx, j.row, side, action, ref)
	j.mu.Unlock()
	if err != nil {
		return statemachine.Ask{}, err
	}
	start := time.Now()
	deadline := time.NewTimer(j.agent.cfg.AskTimeout)
	defer deadline.Stop()
	// MariaDB has no notifications: poll the answer (a keyed read), more
	// often at first, when most answers come.
	wait := 20 * time.Millisecond
	for {
		ask, err := asks.GetAsk(ctx, id)
		if err != nil {
			return statemachine.Ask{}, err
		}
		if ask.Answered() {
			j.agent.observeAsk(action, map[bool]string{true: "done", false: "refused"}[ask.Error == ""], start)
			j.Log.Debug("peer answered", "ask", id, "action", action, "host", host, "took", time.Since(start).Round(time.Millisecond).String(), "error", ask.Error)
			return ask, nil
		}
		select {
		case <-ctx.Done():
			return statemachine.Ask{}, fmt.Errorf("waiting for host %s's agent to %s (ask %d): %w", host, action, id, context.Cause(ctx))
		case <-deadline.C:
			j.agent.observeAsk(action, "timeout", start)
			return statemachine.Ask{}, fmt.Errorf("host %s's agent has not answered ask %d (%s row %d) in %s: is migrate-agent running there, of this version (an earlier one answers no asks), with its %s section configured? migrate status lists the agents and the open asks. The ask stays open: that agent does it when it comes back, or refuses it if this step has ended by then",
				host, id, action, j.Row.ID, j.agent.cfg.AskTimeout, j.Row.Engine)
		case <-answers:
		case <-time.After(wait):
			wait = min(2*wait, 250*time.Millisecond)
		}
	}
}

// answerLoop answers the asks of this host until ctx ends: woken by the
// store (PostgreSQL) or every poll interval, it reads the open asks and
// works on each row's in turn, several rows at once.
func (a *Agent) answerLoop(ctx context.Context) {
	asks, ok := a.store.(statemachine.Asks)
	if !ok || len(a.answers) == 0 {
		return
	}
	log := a.log.With("service", "peer asks")
	wake, stop := asks.WakeAsks(a.cfg.Host)
	defer stop()
	var (
		mu      sync.Mutex
		busy    = map[int64]bool{} // rows being worked on
		workers sync.WaitGroup
		slots   = make(chan struct{}, askWorkers)
	)
	defer workers.Wait()
	// Open asks are looked for often while some came lately: an asker
	// waits on them, and a plan-block is followed by its block, inside
	// the write-blocked window; otherwise every idle period (at most 2 s:
	// on a state database without notifications the first ask of a step
	// waits that long).
	idle := min(a.cfg.PollInterval, 2*time.Second)
	var lastSeen time.Time
	rnd := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 0)) //nolint:gosec // jitter
	for {
		open, err := asks.OpenAsks(ctx, a.cfg.Host, 500)
		switch {
		case err != nil && ctx.Err() == nil:
			a.stateError("peer asks", err)
		case err == nil:
			a.stateOK("peer asks")
		}
		byRow := map[int64][]statemachine.Ask{}
		var order []int64
		for _, ask := range open {
			if byRow[ask.MigrationID] == nil {
				order = append(order, ask.MigrationID)
			}
			byRow[ask.MigrationID] = append(byRow[ask.MigrationID], ask)
		}
		for _, id := range order {
			mu.Lock()
			if busy[id] {
				mu.Unlock()
				continue
			}
			busy[id] = true
			mu.Unlock()
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			workers.Go(func() {
				defer func() {
					mu.Lock()
					delete(busy, id)
					mu.Unlock()
					<-slots
				}()
				for _, ask := range byRow[id] {
					if ctx.Err() != nil {
						return
					}
					a.answerOne(ctx, log, asks, ask)
				}
			})
		}
		if len(open) > 0 {
			lastSeen = time.Now()
		}
		next := idle
		if time.Since(lastSeen) < 10*time.Second {
			next = 50 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-time.After(Jittered(next, rnd)):
		}
	}
}

// AskPeerLater records an ask like AskPeer without waiting for its answer
// (the asked agent answers it when it comes, after the row's earlier asks).
func (j *Job) AskPeerLater(ctx context.Context, side statemachine.HostSide, action, ref string) (int64, error) {
	asks, ok := j.agent.store.(statemachine.Asks)
	if !ok {
		return 0, errors.New("the state store carries no peer asks")
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return asks.Ask(ctx, j.row, side, action, ref)
}

// AnswerOpen answers the open asks of this agent's host once, one after
// another, and returns how many it worked on (tools and tests; Run answers
// them as they come).
func (a *Agent) AnswerOpen(ctx context.Context) (int, error) {
	asks, ok := a.store.(statemachine.Asks)
	if !ok {
		return 0, errors.New("the state store carries no peer asks")
	}
	open, err := asks.OpenAsks(ctx, a.cfg.Host, 500)
	if err != nil {
		return 0, err
	}
	log := a.log.With("service", "peer asks")
	for _, ask := range open {
		a.answerOne(ctx, log, asks, ask)
	}
	return len(open), nil
}

// answerOne does one ask and answers it. An ask whose answer could not be
// written stays open: the next round does it again (handlers are
// idempotent, and find what an earlier run saved).
func (a *Agent) answerOne(ctx context.Context, log *slog.Logger, asks statemachine.Asks, ask statemachine.Ask) {
	log = log.With("ask", ask.ID, "row", ask.MigrationID, "action", ask.Action, "asker", ask.Asker)
	// A list of open asks read while a worker was answering one may still
	// hold it: answered now, it is not done twice.
	if now, err := asks.GetAsk(ctx, ask.ID); err != nil || now.Answered() {
		return
	} else {
		ask = now
	}
	row, err := a.store.Get(ctx, ask.MigrationID)
	if err != nil {
		log.Warn("could not read the ask's row; trying again", "err", err)
		return
	}
	log = log.With("database", row.DatabaseName, "engine", string(row.Engine))
	req := &AskRequest{Ask: ask, Row: row, Log: log, asks: asks, store: a.store}
	var answer any
	switch host := map[statemachine.HostSide]string{statemachine.SideSource: row.Source, statemachine.SideDestination: row.Destination}[ask.Side]; {
	case host != a.cfg.Host:
		err = fmt.Errorf("the row's %s is host %s now, not %s", ask.Side, host, a.cfg.Host)
	default:
		h, ok := a.answers[ask.Action+"/"+string(row.Engine)]
		if !ok {
			err = fmt.Errorf("host %s's agent (version %s) does not %s %s databases: upgrade it, or give it the roles that do", a.cfg.Host, a.cfg.Version, ask.Action, row.Engine)
			break
		}
		start := time.Now()
		answer, err = h(ctx, req)
		if ctx.Err() != nil {
			return // stopping: the next process does it
		}
		log = log.With("took", time.Since(start).Round(time.Millisecond).String())
	}
	body := req.Ask.Answer
	if answer != nil {
		b, merr := json.Marshal(answer)
		if merr != nil {
			err = errors.Join(err, fmt.Errorf("encode the answer: %w", merr))
		} else {
			body = b
		}
	}
	errText, outcome := "", "done"
	if err != nil {
		errText, outcome = err.Error(), "refused"
		log.Warn("peer ask not done", "err", err)
	} else {
		log.Info("peer ask done")
	}
	if a.metrics != nil {
		a.metrics.PeerAnswers.WithLabelValues(ask.Action, outcome).Inc()
	}
	if aerr := asks.AnswerAsk(ctx, ask.ID, body, errText); aerr != nil && !errors.Is(aerr, statemachine.ErrAnswered) {
		log.Warn("could not answer the ask; doing it again next round", "err", aerr)
	}
}

// PeerAsks lists the row's asks with ref, oldest first.
func (j *Job) PeerAsks(ctx context.Context, ref string) ([]statemachine.Ask, error) {
	asks, ok := j.agent.store.(statemachine.Asks)
	if !ok {
		return nil, errors.New("the state store carries no peer asks")
	}
	return asks.AsksOf(ctx, j.Row.ID, ref)
}

// observeAsk records how long a step waited for a peer's answer.
func (a *Agent) observeAsk(action, outcome string, start time.Time) {
	if a.metrics != nil {
		a.metrics.PeerAskSeconds.WithLabelValues(action, outcome).Observe(time.Since(start).Seconds())
	}
}

// AskError is the error an answer reports (Ask.Error): "" is none.
func AskError(ask statemachine.Ask) error {
	if ask.Error == "" {
		return nil
	}
	return fmt.Errorf("host %s's agent: %s", ask.Host, strings.TrimSpace(ask.Error))
}
