package steps

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/fleetmigrate/fleetmigrate/agent"
	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/storage"
)

// Config is what every engine's steps take from the agent's
// configuration (MySQL and Postgres add their engine's options).
type Config struct {
	// Host is this agent's host ID.
	Host string
	// Server is how this agent reaches its local server as administrator.
	// Peers (the source, from the destination) are reached at the address
	// their agent publishes, with PeerUser and PeerPassword when set (a
	// read-only account: every change at a peer's server is its own
	// agent's, asked — peer.go), else with the same account.
	Server                 engine.Server
	PeerUser, PeerPassword string
	// Store holds the dumps; Level is their zstd level.
	Store storage.Store
	Level zstd.EncoderLevel
	// ProgressEvery is how often a running dump or import reports (default
	// 5 s; the agent's progress interval limits what is written).
	ProgressEvery time.Duration
	// HangTimeout cancels a step whose server has not answered a probe for
	// this long (watch.go); 0: no watchdog.
	HangTimeout time.Duration
	// StoreFirst: the dump step only stores the dump (no import beside
	// it); the import step takes it from the store.
	StoreFirst bool
	// FullRecheck: the close step reads every table of the source again
	// instead of only those its change marks (or binary log) say were
	// written since the dump.
	FullRecheck bool
	// Online configures the sync and cutover steps of online rows.
	Online Online
}

// host is one engine's steps on one host, written once over the engine's
// driver (the engine contract, engine/driver.go) and its change stream
// (streams): what differs between engines is in those two.
type host struct {
	Config
	d       engine.Driver
	engine  statemachine.Engine
	streams streams

	answerMu  sync.Mutex
	answering engine.Conn // shared by the peer asks' answers (peer.go)
}

func newHost(cfg Config, d engine.Driver) *host {
	return &host{Config: cfg, d: d, engine: statemachine.Engine(d.Name())}
}

// register adds the engine's handlers and its stream gauges.
func (h *host) register(a *agent.Agent) {
	h.Online.gauges = newStreamGauges(string(h.engine))
	a.MustRegister(h.Online.gauges)
	a.Handle(statemachine.RoleSync, h.engine, h.watch(&syncStep{h}))
	a.Handle(statemachine.RoleCutover, h.engine, h.watch(&cutoverStep{h}))
	a.Handle(statemachine.RoleDump, h.engine, h.watch(&dumpStep{h}))
	a.Handle(statemachine.RoleImport, h.engine, h.watch(&importStep{h}))
	a.Handle(statemachine.RoleClose, h.engine, h.watch(&closeStep{h}))
	a.Handle(statemachine.RoleRollback, h.engine, h.watch(&rollbackStep{h}))
	h.registerAnswers(a)
}

// localServer is how this agent reaches its own server.
func (h *host) localServer() engine.Server {
	srv := h.Server
	srv.Host = h.Host
	return srv
}

// watch puts a handler under the hang watchdog of this host's server.
func (h *host) watch(handler agent.Handler) agent.Handler {
	srv := h.localServer()
	return watch(handler, srv.String(), h.HangTimeout, func(ctx context.Context) error { return h.d.Probe(ctx, srv) })
}

// local connects to this host's server (log nil: the driver's default).
func (h *host) local(ctx context.Context, log *slog.Logger) (engine.Conn, error) {
	c, err := h.d.Open(ctx, h.localServer(), log)
	if err != nil {
		return nil, permanent(err)
	}
	return c, nil
}

// peer connects to the server of another host, at the address its agent
// publishes.
func (h *host) peer(ctx context.Context, job *agent.Job, host string) (engine.Conn, error) {
	srv, err := h.peerServer(ctx, job, host)
	if err != nil {
		return nil, err
	}
	c, err := h.d.Open(ctx, srv, job.Log)
	if err != nil {
		return nil, permanent(fmt.Errorf("reach the %s server of %s: %w", h.engine, host, err))
	}
	return c, nil
}

// peerServer is how this agent reaches the server of another host.
func (h *host) peerServer(ctx context.Context, job *agent.Job, host string) (engine.Server, error) {
	addr, err := job.Endpoint(ctx, host, h.engine)
	if err != nil {
		return engine.Server{}, err
	}
	srv := h.peerLogin()
	srv.Host, srv.Address = host, addr
	return srv, nil
}

// peerLogin is the account this agent reaches other hosts' servers with.
func (h *host) peerLogin() engine.Server {
	if h.PeerUser != "" {
		return engine.Server{User: h.PeerUser, Password: h.PeerPassword, ReadOnly: true}
	}
	return engine.Server{User: h.Server.User, Password: h.Server.Password}
}

func (h *host) every() time.Duration {
	if h.ProgressEvery > 0 {
		return h.ProgressEvery
	}
	return 5 * time.Second
}

// closeConn closes c if it is open (nil: never opened).
func closeConn(c engine.Conn) {
	if c != nil {
		_ = c.Close()
	}
}

// ---- the block record ----

// blockRecord is the block record of a row: what blocking writes changed
// at the source (Access: the engine's plan, engine.Block) and whether that
// is in force. A block the source's agent made when the destination asked
// it (peer.go) is recorded by its ref: its plan is the one the source's
// agent saved in its answer, never one the asker wrote.
type blockRecord struct {
	// Blocked is true while the change is in force at the source.
	Blocked bool         `json:"blocked"`
	Access  engine.Block `json:"access,omitempty"`
	// Ref names the asks of a block made by the source's agent.
	Ref string `json:"ref,omitempty"`
}

// blockRecord reads the row's block record (ok false: none).
func (h *host) blockRecord(ctx context.Context, job *agent.Job) (rec blockRecord, ok bool, err error) {
	var raw struct {
		Blocked bool            `json:"blocked"`
		Access  json.RawMessage `json:"access"`
		Ref     string          `json:"ref"`
	}
	if ok, err = job.GetRecord(ctx, recordBlock, &raw); err != nil || !ok {
		return rec, false, err
	}
	rec = blockRecord{Blocked: raw.Blocked, Ref: raw.Ref}
	if raw.Ref != "" {
		rec.Access, err = h.askedBlock(ctx, job, raw.Ref)
		return rec, true, err
	}
	if rec.Access, err = h.d.DecodeBlock(raw.Access); err != nil {
		return rec, false, fmt.Errorf("the block record of row %d: %w", job.Row.ID, err)
	}
	return rec, true, nil
}

// unblock restores writes from the block record, if it is in force, and
// says so on the row: at src when this host is the row's source, else by
// asking the source's agent (src is not used then).
func (h *host) unblock(ctx context.Context, job *agent.Job, src engine.Conn, rec blockRecord) error {
	if !rec.Blocked {
		return nil
	}
	var warnings []string
	detail := "writes restored at the source"
	switch {
	case rec.Ref != "" && job.Row.Source != h.Host:
		taken, err := h.blockTaken(ctx, job, rec.Ref)
		if err != nil {
			return err
		}
		switch taken {
		case blockNeverTaken:
			// Nothing was blocked: the record is done with.
			detail = "writes were never blocked at the source: its agent took no block"
		case blockNotTakenYet:
			// The source's agent has not taken the block: it may still,
			// while this claim lasts, so the undo is queued behind it,
			// and the record keeps the block until an answer says.
			if _, err := job.AskPeerLater(ctx, statemachine.SideSource, askUnblock, rec.Ref); err != nil {
				return fmt.Errorf("restore writes to %q: %w", job.Row.DatabaseName, err)
			}
			job.Note(ctx, "the source's agent has not taken the block yet: asked it to undo it when it does (the block record keeps it until then)")
			return nil
		default:
			if warnings, err = h.askUnblock(ctx, job, rec.Ref); err != nil {
				return fmt.Errorf("restore writes to %q: %w", job.Row.DatabaseName, err)
			}
			detail += " by its agent"
		}
	case rec.Access == nil:
		return nil
	case job.Row.Source != h.Host:
		// A record of a block made before peer asks (by an agent of an
		// earlier version): the source's agent restores it from the
		// record, which it trusts only if no agent login wrote it since.
		var err error
		if warnings, err = h.askUnblock(ctx, job, ""); err != nil {
			return fmt.Errorf("restore writes to %q: %w", job.Row.DatabaseName, err)
		}
		detail += " by its agent"
	default:
		var err error
		if warnings, err = src.Unblock(ctx, rec.Access); err != nil {
			return fmt.Errorf("restore writes to %q: %w", job.Row.DatabaseName, err)
		}
	}
	rec.Blocked = false
	if rec.Ref != "" {
		rec.Access = nil // the plan stays in the source agent's answer
	}
	if err := job.PutRecord(ctx, recordBlock, rec); err != nil {
		return err
	}
	if len(warnings) > 0 {
		detail += "; " + strings.Join(warnings, "; ")
	}
	return job.Record(ctx, statemachine.Fields{Marks: []statemachine.Mark{statemachine.MarkUnblocked}}, detail)
}

// unblockRecorded undoes the block the row's record says is in force (at
// src, or by asking the source's agent).
func (h *host) unblockRecorded(ctx context.Context, job *agent.Job, src engine.Conn) error {
	rec, ok, err := h.blockRecord(ctx, job)
	if err != nil || !ok {
		return err
	}
	return h.unblock(ctx, job, src, rec)
}

// restoreWrites restores writes from the row's block record if it is in
// force: asking the source's agent for a block it made, or at the server
// open reaches (only when needed).
func (h *host) restoreWrites(ctx context.Context, job *agent.Job, open func(context.Context) (engine.Conn, error)) error {
	rec, ok, err := h.blockRecord(ctx, job)
	if err != nil || !ok || !rec.Blocked {
		return err
	}
	if rec.Ref != "" && job.Row.Source != h.Host {
		return h.unblock(ctx, job, nil, rec)
	}
	src, err := open(ctx)
	if err != nil {
		return err
	}
	defer closeConn(src)
	return h.unblock(ctx, job, src, rec)
}

// atSource opens the row's source: this host's server when it is the
// source, else a peer's.
func (h *host) atSource(job *agent.Job) func(context.Context) (engine.Conn, error) {
	return func(ctx context.Context) (engine.Conn, error) {
		if job.Row.Source == h.Host {
			return h.local(ctx, job.Log)
		}
		return h.peer(ctx, job, job.Row.Source)
	}
}

// atDestination opens the row's destination, as atSource.
func (h *host) atDestination(job *agent.Job) func(context.Context) (engine.Conn, error) {
	return func(ctx context.Context) (engine.Conn, error) {
		if job.Row.Destination == h.Host {
			return h.local(ctx, job.Log)
		}
		c, err := h.peer(ctx, job, job.Row.Destination)
		if err != nil {
			return nil, fmt.Errorf("reach the destination %s: %w", job.Row.Destination, err)
		}
		return c, nil
	}
}

// getRecord reads the row's record of kind as a T (its zero value when
// there is none).
func getRecord[T any](ctx context.Context, job *agent.Job, kind string) (T, error) {
	var v T
	_, err := job.GetRecord(ctx, kind, &v)
	return v, err
}

// ---- the import record ----

// importRecord reads the row's import record (nil: none, or empty).
func (h *host) importRecord(ctx context.Context, job *agent.Job) (engine.ImportRecord, error) {
	var raw json.RawMessage
	if ok, err := job.GetRecord(ctx, recordImport, &raw); err != nil || !ok {
		return nil, err
	}
	rec, err := h.d.DecodeImport(raw)
	if err != nil {
		return nil, fmt.Errorf("the import record of row %d: %w", job.Row.ID, err)
	}
	if rec == nil || rec.Empty() {
		return nil, nil
	}
	return rec, nil
}

// recordImport is the record callback an import is given: it stores what
// the import is about to create.
func recordImportOf(ctx context.Context, job *agent.Job) func(engine.ImportRecord) error {
	return func(rec engine.ImportRecord) error { return job.PutRecord(ctx, recordImport, rec) }
}

// dropImport drops at dst what the row's import record says an import
// created, then clears the record and says so on the row.
func (h *host) dropImport(ctx context.Context, job *agent.Job, dst engine.Conn, whose string) error {
	rec, err := h.importRecord(ctx, job)
	if err != nil || rec == nil {
		return err
	}
	notes, err := dst.DropImport(ctx, rec)
	if err != nil {
		return err
	}
	return h.forgetImport(ctx, job, rec, whose, notes)
}

// forgetImport clears the row's import record once what it named (rec)
// was dropped, and says so.
func (h *host) forgetImport(ctx context.Context, job *agent.Job, rec engine.ImportRecord, whose string, notes []string) error {
	empty, err := h.d.DecodeImport([]byte("{}"))
	if err != nil {
		return err
	}
	if err := job.PutRecord(ctx, recordImport, empty); err != nil {
		return err
	}
	job.Note(ctx, "dropped the import of %s at %s (%s)%s", whose, job.Row.Destination, rec.Describe(), notesSuffix(notes))
	return nil
}

// dropImportAt drops the recorded import at the server open reaches.
func (h *host) dropImportAt(ctx context.Context, job *agent.Job, open func(context.Context) (engine.Conn, error), whose string) error {
	if rec, err := h.importRecord(ctx, job); err != nil || rec == nil {
		return err
	}
	dst, err := open(ctx)
	if err != nil {
		return err
	}
	defer closeConn(dst)
	return h.dropImport(ctx, job, dst, whose)
}

func notesSuffix(notes []string) string {
	if len(notes) == 0 {
		return ""
	}
	return " (" + strings.Join(notes, "; ") + ")"
}
