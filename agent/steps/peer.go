package steps

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/fleetmigrate/fleetmigrate/agent"
	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// What a step asks the agent of its row's other side to do at that side's
// server (agent.Job.AskPeer), and how that agent does it (the handlers
// below, registered on every agent of a database host). The asker says
// what, the asked agent decides how, from its own server: a block is
// planned by the source's agent, and undone from the plan that agent saved
// in its own answer, so that a destination's agent can neither choose what
// a source's block changes nor what its undo grants.

// Peer ask actions.
const (
	// askPlanBlock: plan a block of the row's database (before the
	// write-blocked window: inspecting and planning take the source's
	// agent a while under load); askBlock applies that plan.
	askPlanBlock = "plan-block"
	askBlock     = "block"
	askUnblock   = "unblock"
	// askStreamRemove: remove the row's stream's part at the asked
	// side's server (the stream's name comes from the row, never from
	// the asker).
	askStreamRemove = "stream-remove"
	// askDropCopy: drop at the destination what the row's import record
	// says an import created, if the destination's own agent wrote it.
	askDropCopy = "drop-copy"
)

// blockAnswer is the source agent's answer to a block: its plan (saved
// before it is applied), whether it was applied and how many sessions it
// ended.
type blockAnswer struct {
	Access  json.RawMessage `json:"access,omitempty"`
	Applied bool            `json:"applied,omitempty"`
	Ended   int             `json:"ended,omitempty"`
	// Permanent: retrying cannot help (the database is gone...).
	Permanent bool `json:"permanent,omitempty"`
}

// unblockAnswer is the answer to an unblock.
type unblockAnswer struct {
	Undone   int      `json:"undone"`
	Warnings []string `json:"warnings,omitempty"`
}

// registerAnswers makes this host's agent answer its peers' asks for rows
// of the engine.
func (h *host) registerAnswers(a *agent.Agent) {
	a.Answer(askPlanBlock, h.engine, h.answerPlanBlock)
	a.Answer(askBlock, h.engine, h.answerBlock)
	a.Answer(askUnblock, h.engine, h.answerUnblock)
	a.Answer(askStreamRemove, h.engine, h.answerStreamRemove)
	a.Answer(askDropCopy, h.engine, h.answerDropCopy)
	if e, ok := h.streams.(interface{ registerAnswers(*agent.Agent) }); ok {
		e.registerAnswers(a) // the engine's own asks (publish.go)
	}
}

// newRef is a fresh ref for the asks of one run of a step.
func newRef(step string, fence int64) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%d-%s", step, fence, hex.EncodeToString(b))
}

// askPlanBlock asks the source's agent to plan the block of the row's
// database (ref: the block's) and returns the plan, which the block asked
// next under the same ref applies: planning stays out of the write-blocked
// window.
func (h *host) askPlanBlock(ctx context.Context, job *agent.Job, ref string) (engine.Block, error) {
	ask, err := job.AskPeer(ctx, statemachine.SideSource, askPlanBlock, ref)
	if err != nil {
		return nil, err
	}
	access, _, err := h.decodeBlockAnswer(ask, false)
	return access, err
}

// decodeBlockAnswer is the plan in a plan-block or block answer (applied:
// the block must have been applied), and the answer.
func (h *host) decodeBlockAnswer(ask statemachine.Ask, applied bool) (engine.Block, blockAnswer, error) {
	var ans blockAnswer
	if len(ask.Answer) > 0 {
		if err := json.Unmarshal(ask.Answer, &ans); err != nil {
			return nil, ans, fmt.Errorf("the source's answer to ask %d: %w", ask.ID, err)
		}
	}
	if err := agent.AskError(ask); err != nil {
		if ans.Permanent {
			return nil, ans, agent.Permanent(err)
		}
		return nil, ans, err
	}
	if len(ans.Access) == 0 || applied && !ans.Applied {
		return nil, ans, fmt.Errorf("host %s's agent answered ask %d (%s) without a block %s", ask.Host, ask.ID, ask.Action, map[bool]string{true: "applied", false: "planned"}[applied])
	}
	access, err := h.d.DecodeBlock(ans.Access)
	if err != nil {
		return nil, ans, fmt.Errorf("the source's block of ask %d: %w", ask.ID, err)
	}
	return access, ans, nil
}

// askBlock asks the source's agent to block writes to the row's database
// and returns the plan it applied and the sessions it ended.
func (h *host) askBlock(ctx context.Context, job *agent.Job, ref string) (engine.Block, int, error) {
	ask, err := job.AskPeer(ctx, statemachine.SideSource, askBlock, ref)
	if err != nil {
		return nil, 0, err
	}
	access, ans, err := h.decodeBlockAnswer(ask, true)
	if err != nil {
		return nil, 0, err
	}
	return access, ans.Ended, nil
}

// askUnblock asks the source's agent to undo the blocks of ref.
func (h *host) askUnblock(ctx context.Context, job *agent.Job, ref string) ([]string, error) {
	ask, err := job.AskPeer(ctx, statemachine.SideSource, askUnblock, ref)
	if err != nil {
		return nil, err
	}
	if err := agent.AskError(ask); err != nil {
		return nil, err
	}
	var ans unblockAnswer
	if err := json.Unmarshal(ask.Answer, &ans); err != nil {
		return nil, fmt.Errorf("the source's answer to ask %d: %w", ask.ID, err)
	}
	return ans.Warnings, nil
}

// askedBlock is the plan of the last block of ref that the source's
// agent planned (nil: none was).
func (h *host) askedBlock(ctx context.Context, job *agent.Job, ref string) (engine.Block, error) {
	asks, err := job.PeerAsks(ctx, ref)
	if err != nil {
		return nil, err
	}
	plans, err := h.blockPlans(asks, job.Row.Source)
	if err != nil || len(plans) == 0 {
		return nil, err
	}
	return plans[len(plans)-1], nil
}

// blockPlans are the plans the source's agent saved in asks' block
// answers, oldest first: only answers of host's own (the asked host) count.
func (h *host) blockPlans(asks []statemachine.Ask, host string) ([]engine.Block, error) {
	var out []engine.Block
	for _, a := range asks {
		if a.Action != askBlock || a.Side != statemachine.SideSource || a.Host != host || len(a.Answer) == 0 {
			continue
		}
		var ans blockAnswer
		if err := json.Unmarshal(a.Answer, &ans); err != nil {
			return nil, fmt.Errorf("the answer to block ask %d: %w", a.ID, err)
		}
		if len(ans.Access) == 0 {
			continue
		}
		b, err := h.d.DecodeBlock(ans.Access)
		if err != nil {
			return nil, fmt.Errorf("the plan of block ask %d: %w", a.ID, err)
		}
		out = append(out, b)
	}
	return out, nil
}

// What the source's agent did with the block asks of a ref.
const (
	blockNeverTaken  = iota // every block ask answered, none with a plan: nothing was blocked
	blockNotTakenYet        // no plan yet, and a block ask is still open
	blockTaken              // a plan was saved: it may be in force
)

// blockTaken says what the source's agent did with the block asks of ref.
func (h *host) blockTaken(ctx context.Context, job *agent.Job, ref string) (int, error) {
	asks, err := job.PeerAsks(ctx, ref)
	if err != nil {
		return 0, err
	}
	plans, err := h.blockPlans(asks, job.Row.Source)
	if err != nil {
		return 0, err
	}
	if len(plans) > 0 {
		return blockTaken, nil
	}
	for _, a := range asks {
		if a.Action == askBlock && !a.Answered() {
			return blockNotTakenYet, nil
		}
	}
	return blockNeverTaken, nil
}

// answerBlock blocks writes to the row's database at this (source) server
// for the destination's dump or cutover step: only while that step holds
// the row under the fence it asked with. The plan is this agent's own, saved in
// the answer before it is applied (a run after a crash applies the same
// one: planning again from a blocked database would lose what it took).
func (h *host) answerBlock(ctx context.Context, req *agent.AskRequest) (any, error) {
	row := req.Row
	if err := blockable(req); err != nil {
		return nil, err
	}
	src, done, err := h.answerConn(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	var ans blockAnswer
	if _, err := req.Saved(&ans); err != nil {
		return nil, err
	}
	if len(ans.Access) == 0 {
		// The plan this agent made when asked before (plan-block, same
		// ref), else one made now.
		if ans.Access, err = h.plannedFor(ctx, req); err != nil {
			return nil, err
		}
		if len(ans.Access) == 0 {
			plan, err := h.answerPlanBlock(ctx, req)
			if err != nil {
				return plan, err
			}
			ans.Access = plan.(blockAnswer).Access
		}
		if err := req.Save(ctx, ans); err != nil {
			return nil, err
		}
	}
	access, err := h.d.DecodeBlock(ans.Access)
	if err != nil {
		return nil, err
	}
	ended, err := src.Block(ctx, access)
	if err != nil {
		h.dropAnswerConn(src)
		// The plan stays in the answer: the asker's undo restores from it.
		return ans, fmt.Errorf("block writes to %q: %w", row.DatabaseName, err)
	}
	req.Log.Info("writes blocked for the destination's step", "plan", access.Describe(), "sessions_ended", ended)
	ans.Applied, ans.Ended = true, ended
	return ans, nil
}

// blockable refuses a block (or its plan) unless the step that asked
// still holds the row at the fence it asked with.
func blockable(req *agent.AskRequest) error {
	row := req.Row
	if row.Status != statemachine.Dumping && row.Status != statemachine.CuttingOver || row.Fence != req.Ask.Fence {
		return fmt.Errorf("nothing blocked: row %d is %s (fence %d), and the step that asked held it at fence %d: it has ended", row.ID, row.Status, row.Fence, req.Ask.Fence)
	}
	return nil
}

// answerPlanBlock plans the block of the row's database at this (source)
// server from the database as it is here, and answers the plan; nothing
// is changed.
func (h *host) answerPlanBlock(ctx context.Context, req *agent.AskRequest) (any, error) {
	if err := blockable(req); err != nil {
		return nil, err
	}
	src, done, err := h.answerConn(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	s, err := src.Inspect(ctx, req.Row.DatabaseName)
	if err != nil {
		h.dropAnswerConn(src)
		return blockAnswer{Permanent: errors.Is(err, engine.ErrPermanent)}, err
	}
	access, err := src.PlanBlock(ctx, s)
	if err != nil {
		return blockAnswer{Permanent: errors.Is(err, engine.ErrPermanent)}, err
	}
	raw, err := json.Marshal(access)
	if err != nil {
		return nil, fmt.Errorf("encode the block's plan: %w", err)
	}
	return blockAnswer{Access: raw}, nil
}

// plannedFor is the plan this host's agent answered to a plan-block of
// req's ref (nil: none).
func (h *host) plannedFor(ctx context.Context, req *agent.AskRequest) (json.RawMessage, error) {
	related, err := req.Related(ctx)
	if err != nil {
		return nil, err
	}
	var plan json.RawMessage
	for _, a := range related {
		if a.Action != askPlanBlock || a.Host != h.Host || a.Error != "" || !a.Answered() || a.ID > req.Ask.ID {
			continue
		}
		var ans blockAnswer
		if err := json.Unmarshal(a.Answer, &ans); err == nil && len(ans.Access) > 0 {
			plan = ans.Access
		}
	}
	return plan, nil
}

// ownRecord refuses a record of req's row (kind) that author — the host
// whose agent last wrote it, "" for an operator — is not this host: an
// asked agent acts on what its own host's agent recorded, never on what
// the asker wrote; todo says what is left to do then.
func (h *host) ownRecord(req *agent.AskRequest, kind, author, todo string) error {
	if author == "" || author == h.Host {
		return nil
	}
	return fmt.Errorf("the %s record of row %d was last written by host %s's agent, not this host's: %s", kind, req.Row.ID, author, todo)
}

// answerConn is the connection to this host's server an answer uses, and
// what to call when done with it. MariaDB's is shared by the answers (a
// pool: opening one per ask cost a TLS handshake inside the write-blocked
// window), and closed by dropAnswerConn after a failure for the next ask to
// open another. PostgreSQL's is the ask's own: its pools reach into the
// customer's database, and a session kept there would count as the
// customer's at the close (and hold a DROP DATABASE).
func (h *host) answerConn(ctx context.Context) (engine.Conn, func(), error) {
	if h.engine != statemachine.EngineMySQL {
		c, err := h.local(ctx, nil)
		if err != nil {
			return nil, nil, err
		}
		return c, func() { closeConn(c) }, nil
	}
	h.answerMu.Lock()
	defer h.answerMu.Unlock()
	if h.answering != nil {
		return h.answering, func() {}, nil
	}
	c, err := h.local(ctx, nil)
	if err != nil {
		return nil, nil, err
	}
	h.answering = c
	return c, func() {}, nil
}

func (h *host) dropAnswerConn(c engine.Conn) {
	h.answerMu.Lock()
	defer h.answerMu.Unlock()
	if h.answering == c {
		h.answering = nil
		closeConn(c)
	}
}

// answerUnblock restores writes at this (source) server from the plans
// of the blocks asked under the same ref, as this agent saved them.
// Restoring is always allowed: it gives back only what a block took.
func (h *host) answerUnblock(ctx context.Context, req *agent.AskRequest) (any, error) {
	if req.Ask.Ref == "" {
		return h.answerUnblockRecorded(ctx, req)
	}
	related, err := req.Related(ctx)
	if err != nil {
		return nil, err
	}
	var earlier []statemachine.Ask
	for _, a := range related {
		if a.ID < req.Ask.ID {
			earlier = append(earlier, a)
		}
	}
	plans, err := h.blockPlans(earlier, h.Host)
	if err != nil {
		return nil, err
	}
	ans := unblockAnswer{}
	if len(plans) == 0 {
		return ans, nil
	}
	src, done, err := h.answerConn(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	for _, b := range plans {
		w, err := src.Unblock(ctx, b)
		if err != nil {
			return nil, fmt.Errorf("restore writes to %q: %w", req.Row.DatabaseName, err)
		}
		ans.Undone++
		ans.Warnings = append(ans.Warnings, w...)
	}
	req.Log.Info("writes restored for the destination's step", "blocks", ans.Undone)
	return ans, nil
}

// teardownFromSource removes the row's recorded stream from its source
// (the close and the rollback): the destination's agent removes its part,
// asked, then this host its own, then the record says nothing is left.
func (h *host) teardownFromSource(ctx context.Context, job *agent.Job, src engine.Conn) error {
	if recorded, err := h.streams.recorded(ctx, job); err != nil || !recorded {
		return err
	}
	ask, err := job.AskPeer(ctx, statemachine.SideDestination, askStreamRemove, "")
	if err != nil {
		return fmt.Errorf("remove the stream at the destination: %w", err)
	}
	if err := agent.AskError(ask); err != nil {
		return fmt.Errorf("remove the stream at the destination: %w", err)
	}
	if err := h.streams.removeAt(ctx, statemachine.SideSource, src, engine.StreamName(job.Row.ID, job.Row.DatabaseName), job.Row.DatabaseName); err != nil {
		return err
	}
	return h.streams.forget(ctx, job)
}

// askDropCopy has the destination's agent drop the row's copy (what its
// import record names), then clears the record.
func (h *host) askDropCopy(ctx context.Context, job *agent.Job, whose string) error {
	rec, err := h.importRecord(ctx, job)
	if err != nil || rec == nil {
		return err
	}
	ask, err := job.AskPeer(ctx, statemachine.SideDestination, askDropCopy, "")
	if err != nil {
		return fmt.Errorf("drop the copy at the destination: %w", err)
	}
	if err := agent.AskError(ask); err != nil {
		return fmt.Errorf("drop the copy at the destination: %w", err)
	}
	var notes []string
	if len(ask.Answer) > 0 {
		if err := json.Unmarshal(ask.Answer, &notes); err != nil {
			return fmt.Errorf("the destination's answer to ask %d: %w", ask.ID, err)
		}
	}
	return h.forgetImport(ctx, job, rec, whose, notes)
}

// answerStreamRemove removes the part of the row's stream this server
// holds. The name is the row's (engine.StreamName), so an asker can have
// only its own row's stream removed.
func (h *host) answerStreamRemove(ctx context.Context, req *agent.AskRequest) (any, error) {
	c, done, err := h.answerConn(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	name := engine.StreamName(req.Row.ID, req.Row.DatabaseName)
	// Idempotent, and tried again: this agent's own removal of the stopped
	// stream after a cutover may be dropping it at the same moment
	// (PostgreSQL: "tuple concurrently deleted").
	for try := 1; ; try++ {
		err := h.streams.removeAt(ctx, req.Ask.Side, c, name, req.Row.DatabaseName)
		if err == nil {
			break
		}
		if try == 3 || ctx.Err() != nil {
			return nil, err
		}
		req.Log.Debug("removing the stream failed; trying again", "err", err)
		time.Sleep(time.Duration(try) * 200 * time.Millisecond)
	}
	req.Log.Info("stream removed for the source's step", "stream", name)
	return map[string]string{"removed": name}, nil
}

// answerDropCopy drops at this (destination) server what the row's import
// record says an import created — only a record this host's own agent (or
// an operator) wrote: what an asker wrote into it is never dropped here.
func (h *host) answerDropCopy(ctx context.Context, req *agent.AskRequest) (any, error) {
	var raw json.RawMessage
	ok, author, err := req.Record(ctx, recordImport, &raw)
	if err != nil || !ok {
		return []string{}, err
	}
	rec, err := h.d.DecodeImport(raw)
	if err != nil {
		return nil, fmt.Errorf("the import record of row %d: %w", req.Row.ID, err)
	}
	if rec == nil || rec.Empty() {
		return []string{}, nil
	}
	if err := h.ownRecord(req, recordImport, author, "what it names is not dropped here; check it and drop it by hand"); err != nil {
		return nil, err
	}
	c, done, err := h.answerConn(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	notes, err := c.DropImport(ctx, rec)
	if err != nil {
		return nil, err
	}
	req.Log.Info("copy dropped for the source's step", "dropped", rec.Describe())
	if notes == nil {
		notes = []string{}
	}
	return notes, nil
}

// answerUnblockRecorded restores writes from a block record that names no
// asks: one written before peer asks (an agent of an earlier version).
// Such a record says what to grant back, so it is trusted only if no agent
// login has written it since the upgrade (they are recorded) or this
// host's own did.
func (h *host) answerUnblockRecorded(ctx context.Context, req *agent.AskRequest) (any, error) {
	var raw struct {
		Blocked bool            `json:"blocked"`
		Access  json.RawMessage `json:"access"`
		Ref     string          `json:"ref"`
	}
	ok, author, err := req.Record(ctx, recordBlock, &raw)
	if err != nil {
		return nil, err
	}
	if !ok || !raw.Blocked || raw.Ref != "" || len(raw.Access) == 0 {
		return unblockAnswer{}, nil
	}
	if err := h.ownRecord(req, recordBlock, author, "what it would grant back is not trusted here; roll the row back (its source's agent restores writes) or restore them by hand"); err != nil {
		return nil, err
	}
	access, err := h.d.DecodeBlock(raw.Access)
	if err != nil {
		return nil, fmt.Errorf("the block record of row %d: %w", req.Row.ID, err)
	}
	src, done, err := h.answerConn(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	w, err := src.Unblock(ctx, access)
	if err != nil {
		return nil, fmt.Errorf("restore writes to %q: %w", req.Row.DatabaseName, err)
	}
	req.Log.Info("writes restored from a block record of an earlier version", "plan", access.Describe())
	return unblockAnswer{Undone: 1, Warnings: w}, nil
}
