package steps

import (
	"context"
	"errors"
	"fmt"

	"github.com/fleetmigrate/fleetmigrate/agent"
	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/postgres"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// Postgres runs the PostgreSQL steps of one host: the steps of every
// engine (dump.go, online.go) over engine/postgres's driver, and native
// logical replication as the change stream (online_postgres.go).
type Postgres struct {
	Config
	Options postgres.Options
}

// Register adds the sync, cutover, dump, import, close and rollback
// handlers for rows of engine postgres, and the stream slots' collector.
func (c *Postgres) Register(a *agent.Agent) {
	if c.Options.Pools == nil {
		c.Options.Pools = new(postgres.Pools)
	}
	if c.Options.Peer == "" {
		c.Options.Peer = c.PeerUser // its blocks keep the peers' reads
	}
	h := newHost(c.Config, postgres.Driver{Options: c.Options})
	h.streams = &pgStreams{h: h}
	a.MustRegister(c.Collector())
	h.register(a)
}

// pgStreams is PostgreSQL's change stream for the online steps: an
// explicit-table publication and a slot at the source, a subscription at
// the destination, all named after the row (online_postgres.go).
type pgStreams struct{ h *host }

func (p *pgStreams) record(ctx context.Context, job *agent.Job) (postgres.Stream, error) {
	return getRecord[postgres.Stream](ctx, job, recordStream)
}

func (p *pgStreams) recorded(ctx context.Context, job *agent.Job) (bool, error) {
	st, err := p.record(ctx, job)
	return st.Name != "", err
}

func (p *pgStreams) syncSide(ctx context.Context, job *agent.Job, src, dst engine.Conn) (syncSide, error) {
	st, err := p.record(ctx, job)
	return &pgSyncSide{p: p, h: p.h, job: job, srcConn: src, dstConn: dst, src: postgres.ServerOf(src), dst: postgres.ServerOf(dst), st: st}, err
}

func (p *pgStreams) cutoverSide(ctx context.Context, job *agent.Job, src, dst engine.Conn) (cutoverSide, error) {
	st, err := p.record(ctx, job)
	return &pgCutoverSide{p: p, job: job, src: postgres.ServerOf(src), dst: postgres.ServerOf(dst), st: st}, err
}

// teardown removes the row's recorded stream: the subscription at the
// destination, then the slot and the publication at the source; then the
// record says nothing is left. At the destination, the source's part is
// removed by the source's agent, asked (the publication needs the tables'
// owner; this agent reads the source with a read-only role); if that agent
// does not answer, the slot at least is dropped with the replication right
// the subscription used (a slot left holds WAL at the source). Either
// server may be nil (unreachable): what it holds stays recorded for
// whoever comes next.
func (p *pgStreams) teardown(ctx context.Context, job *agent.Job, srcConn, dstConn engine.Conn) error {
	st, err := p.record(ctx, job)
	if err != nil || st.Name == "" {
		return err
	}
	var src, dst *postgres.Server
	if srcConn != nil {
		src = postgres.ServerOf(srcConn)
	}
	if dstConn != nil {
		dst = postgres.ServerOf(dstConn)
	}
	if job.Row.Source == p.h.Host {
		if err := removeStream(ctx, job, src, dst, &st); err != nil {
			return err
		}
		return p.forget(ctx, job)
	}
	if dst == nil {
		return fmt.Errorf("remove the stream %s: subscription at %s not dropped: destination unreachable", st.Name, job.Row.Destination)
	}
	if err := dst.DropSubscription(ctx, st.Name); err != nil {
		return fmt.Errorf("remove the stream %s: %w", st.Name, err)
	}
	ask, err := job.AskPeer(ctx, statemachine.SideSource, askStreamRemove, "")
	if err == nil {
		err = agent.AskError(ask)
	}
	if err != nil {
		if src != nil {
			err = errors.Join(err, src.DropSlot(ctx, st.Name))
		}
		return fmt.Errorf("remove the stream %s: its publication at %s not dropped: %w", st.Name, job.Row.Source, err)
	}
	return p.forget(ctx, job)
}

// removeAt removes a stream's part at one server: the subscription at the
// destination; the slot and the publication (in database) at the source.
func (p *pgStreams) removeAt(ctx context.Context, side statemachine.HostSide, c engine.Conn, name, database string) error {
	srv := postgres.ServerOf(c)
	var err error
	if side == statemachine.SideDestination {
		err = srv.DropSubscription(ctx, name)
	} else {
		err = errors.Join(srv.DropSlot(ctx, name), srv.DropPublication(ctx, database, name))
	}
	if err != nil {
		return fmt.Errorf("remove the stream %s: %w", name, err)
	}
	return nil
}

// forget records that nothing of the row's stream is left and says so.
// What was verified stays: the close compares its dump with it.
func (p *pgStreams) forget(ctx context.Context, job *agent.Job) error {
	st, err := p.record(ctx, job)
	if err != nil || st.Name == "" {
		return err
	}
	if err := job.PutRecord(ctx, recordStream, postgres.Stream{Verified: st.Verified, CutRows: st.CutRows}); err != nil {
		return err
	}
	job.Note(ctx, "stream removed: subscription %s at %s, slot and publication at %s", st.Name, job.Row.Destination, job.Row.Source)
	return nil
}

// removeStream drops st's subscription at the destination, then its slot
// and publication at the source (each idempotent); the caller updates the
// record. At the source's own agent (the close, the rollback, teardown
// there).
func removeStream(ctx context.Context, job *agent.Job, src, dst *postgres.Server, st *postgres.Stream) error {
	var errs []error
	if dst != nil {
		errs = append(errs, dst.DropSubscription(ctx, st.Name))
	} else {
		errs = append(errs, fmt.Errorf("subscription %s at %s not dropped: destination unreachable", st.Name, job.Row.Destination))
	}
	if src != nil {
		errs = append(errs, src.DropSlot(ctx, st.Name), src.DropPublication(ctx, st.Database, st.Name))
	} else {
		errs = append(errs, fmt.Errorf("slot and publication %s at %s not dropped: source unreachable", st.Name, job.Row.Source))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove the stream %s: %w", st.Name, err)
	}
	return nil
}

// verifiedAtCut is what the cutover verified by checksums; the tables it
// verified by rows have none, and the large objects are not compared.
func (p *pgStreams) verifiedAtCut(ctx context.Context, job *agent.Job) ([]engine.TableSum, []string, error) {
	done, err := p.record(ctx, job)
	var verified []engine.TableSum
	for name, v := range done.Verified {
		verified = append(verified, engine.TableSum{Name: name, Rows: v.Rows, Checksum: v.Checksum})
	}
	skip := []string{"large objects"}
	for name := range done.CutRows {
		skip = append(skip, name)
	}
	return verified, skip, err
}

// writtenSinceCut finds a write to the source after the cutover in the
// tables the cutover verified by rows (their checksums were not taken
// then): a row written after the cutover's snapshot, or a row count that
// moved (a delete).
func (p *pgStreams) writtenSinceCut(ctx context.Context, job *agent.Job, c engine.Conn) error {
	done, err := p.record(ctx, job)
	if err != nil {
		return err
	}
	src := postgres.ServerOf(c)
	for table, cut := range done.CutRows {
		rows, _, none, err := src.ChangedRows(ctx, job.Row.DatabaseName, table, cut.Snapshot, 0)
		if err != nil {
			return err
		}
		switch {
		case !none:
			return lateWrites(&job.Row, engine.Permanentf("rows of %s were written at the source after the cutover verified it", table))
		case rows != cut.Rows:
			return lateWrites(&job.Row, engine.Permanentf("%s has %d rows at the source, %d when the cutover verified it", table, rows, cut.Rows))
		}
	}
	return nil
}
