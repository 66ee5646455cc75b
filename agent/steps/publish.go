package steps

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/fleetmigrate/fleetmigrate/agent"
	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/postgres"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// PostgreSQL's peer asks (peer.go): creating a publication needs the
// tables' ownership, so the source's agent creates the row's publication
// when the destination's sync step asks it; the destination's read-only
// peer role (pg_read_all_data, REPLICATION) then subscribes to it.

// askPublish: create the row's publication at the source (its name is the
// row's stream's, engine.StreamName, never the asker's choice).
const askPublish = "publish"

// publishAnswer is the source's answer to a publish: what the stream
// starts from (the schema's fingerprint and the published tables), or,
// with the error, whether retrying cannot help.
type publishAnswer struct {
	Fingerprint string   `json:"fingerprint,omitempty"`
	Tables      []string `json:"tables,omitempty"`
	Permanent   bool     `json:"permanent,omitempty"`
}

// registerAnswers makes this host's agent answer PostgreSQL's own asks.
func (p *pgStreams) registerAnswers(a *agent.Agent) {
	a.Answer(askPublish, p.h.engine, p.answerPublish)
}

// askPublish has the source's agent publish the row's database for st
// (named already) and records what the stream starts from in st.
func (p *pgStreams) askPublish(ctx context.Context, job *agent.Job, st *postgres.Stream) error {
	ask, err := job.AskPeer(ctx, statemachine.SideSource, askPublish, "")
	if err != nil {
		return fmt.Errorf("publish %q at the source: %w", st.Database, err)
	}
	var ans publishAnswer
	if len(ask.Answer) > 0 {
		if err := json.Unmarshal(ask.Answer, &ans); err != nil {
			return fmt.Errorf("the source's answer to ask %d: %w", ask.ID, err)
		}
	}
	if err := agent.AskError(ask); err != nil {
		if ans.Permanent {
			return agent.Permanent(err)
		}
		return err
	}
	if ans.Fingerprint == "" {
		return fmt.Errorf("host %s's agent answered ask %d (publish) without the schema it published", ask.Host, ask.ID)
	}
	st.Fingerprint, st.Tables = ans.Fingerprint, ans.Tables
	return nil
}

// answerPublish creates the row's publication at this (source) server for
// the destination's sync step, while that step holds the row at the fence
// it asked with. A publication of the same name left by an earlier attempt
// is replaced.
func (p *pgStreams) answerPublish(ctx context.Context, req *agent.AskRequest) (any, error) {
	row := req.Row
	if row.Status != statemachine.Syncing || row.Fence != req.Ask.Fence {
		return nil, fmt.Errorf("nothing published: row %d is %s (fence %d), and the sync that asked held it at fence %d: it has ended", row.ID, row.Status, row.Fence, req.Ask.Fence)
	}
	c, done, err := p.h.answerConn(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	st := postgres.Stream{Name: engine.StreamName(row.ID, row.DatabaseName), Database: row.DatabaseName}
	if err := postgres.ServerOf(c).CreatePublication(ctx, &st); err != nil {
		return publishAnswer{Permanent: errors.Is(err, engine.ErrPermanent)}, err
	}
	req.Log.Info("published for the destination's sync", "publication", st.Name, "tables", len(st.Tables))
	return publishAnswer{Fingerprint: st.Fingerprint, Tables: st.Tables}, nil
}
