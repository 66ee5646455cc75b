package steps

import (
	"context"
	"errors"
	"hash/crc32"
	"log/slog"
	"sync"
	"time"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/mysql"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// mysqlStreamers runs, in the agent of a destination host, a streamer for
// every stream recorded at its MariaDB server (mysql.StreamRecord): the
// sync step records a stream and starts it; this service starts again any
// whose streamer is not running (the agent restarted, the streamer
// stopped on a source that went away) and stops those whose record is
// gone (the cutover or a teardown removed it). A stream outlives the sync
// step: it applies until the cutover has what it needs.
type mysqlStreamers struct {
	h *host
	// state and host tell which records are this agent's to run: those
	// of rows of its state database whose destination it is and that
	// stream (another fleet may share the server).
	state statemachine.Store
	host  string
	log   *slog.Logger

	mu      sync.Mutex
	running map[string]*mysqlStreamer
}

// mysqlStreamer is one running streamer.
type mysqlStreamer struct {
	s      *mysql.Streamer
	cancel context.CancelCauseFunc // with why it is stopped
	done   chan struct{}
	err    error // once done
}

// Why this service stops a streamer: an expected end, logged as such.
var (
	errRecordGone    = errors.New("its record is gone (the cutover or a teardown removed it)")
	errStreamRemoved = errors.New("its stream was removed by a step of this agent")
	errAgentStopping = errors.New("the agent is stopping (the stream resumes from its record at the next start)")
)

// rescanEvery is how often the service compares the records with what
// runs.
const rescanEvery = 2 * time.Second

// streamServerID is the replica id a stream reads the source with: unique
// per stream name among the source's replicas (top bit set, away from the
// small ids servers are usually given).
func streamServerID(name string) uint32 { return 1<<31 | crc32.ChecksumIEEE([]byte(name))&(1<<31-1) }

// run is the service: start what is recorded, stop what is not, until ctx
// ends (then every streamer stops; they resume from their records).
func (r *mysqlStreamers) run(ctx context.Context, log *slog.Logger) {
	r.mu.Lock()
	r.log = log
	r.mu.Unlock()
	t := time.NewTicker(rescanEvery)
	defer t.Stop()
	// One connection to the local server for the service's life, opened
	// again after a failure.
	var dst *mysql.Server
	defer func() {
		if dst != nil {
			_ = dst.Close()
		}
	}()
	for {
		err := ctx.Err()
		if dst == nil && err == nil {
			var c engine.Conn
			if c, err = r.h.local(ctx, nil); err == nil {
				dst = mysql.ServerOf(c)
			}
		}
		if err == nil {
			err = r.rescan(ctx, dst)
		}
		if err != nil && ctx.Err() == nil {
			log.Warn("cannot read the stream records of this host's mysql server; trying again", "err", err)
			if dst != nil {
				_ = dst.Close()
				dst = nil
			}
		}
		select {
		case <-ctx.Done():
			r.stopAll()
			return
		case <-t.C:
		}
	}
}

// rescan starts a streamer for each record without one (and without an
// error: a broken stream waits for its row to fail or retry), and stops
// those whose record is gone.
func (r *mysqlStreamers) rescan(ctx context.Context, dst *mysql.Server) error {
	recs, err := dst.StreamRecords(ctx, engine.StreamPrefix)
	if err != nil {
		return err
	}
	recorded := map[string]bool{}
	for _, rec := range recs {
		recorded[rec.Name] = true
		if rec.Error == "" && r.ours(ctx, rec.Name) {
			r.ensure(ctx, rec.Name)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, s := range r.running {
		if !recorded[name] {
			s.cancel(errRecordGone)
		}
	}
	return nil
}

// ours reports whether the stream name is a streaming row of this agent's
// state database whose destination is this host (gc removes what is no
// one's).
func (r *mysqlStreamers) ours(ctx context.Context, name string) bool {
	id, ok := engine.StreamRow(name)
	if !ok || r.state == nil {
		return false
	}
	m, err := r.state.Get(ctx, id)
	return err == nil && engine.StreamName(m.ID, m.DatabaseName) == name && m.Destination == r.host && m.Status.Streams()
}

// ensure starts the streamer of stream name unless it runs. The stream
// outlives ctx (the step or scan that asks for it): it stops when its
// record goes, or with the agent.
func (r *mysqlStreamers) ensure(ctx context.Context, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running == nil {
		r.running = map[string]*mysqlStreamer{}
	}
	if s := r.running[name]; s != nil {
		select {
		case <-s.done:
		default:
			return // running
		}
	}
	log := r.log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("stream", name)
	ctx = context.WithoutCancel(ctx)
	octx, ocancel := context.WithTimeout(ctx, 10*time.Second)
	c, err := r.h.local(octx, log)
	ocancel()
	if err != nil {
		log.Warn("cannot start the stream: the local server is unreachable; trying again", "err", err)
		return
	}
	ctx, cancel := context.WithCancelCause(ctx)
	dst := mysql.ServerOf(c)
	s := &mysqlStreamer{s: dst.NewStreamer(name, r.h.peerLogin(), streamServerID(name), log), cancel: cancel, done: make(chan struct{})}
	r.running[name] = s
	go func() {
		defer close(s.done)
		defer cancel(nil)
		defer func() { _ = dst.Close() }()
		log.Info("stream started")
		s.err = s.s.Run(ctx)
		switch {
		case ctx.Err() != nil:
			// Stopped on purpose: not something to look at.
			log.Info("stream stopped", "why", context.Cause(ctx).Error())
		case s.err == nil || errors.Is(s.err, mysql.ErrFenced):
			log.Info("stream stopped", "why", "its record was removed")
		default:
			// Not for an SRE to act on here: a source that went away is
			// read again at the next scan; a stream that cannot go on says
			// so in its record, and its row's step fails the row (that is
			// the ERROR line to look at).
			log.Warn("stream stopped; started again at the next scan unless its record says it is broken", "err", s.err)
		}
	}()
}

// streamer returns the running streamer of name (nil: none runs here).
func (r *mysqlStreamers) streamer(name string) *mysql.Streamer {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.running[name]
	if s == nil {
		return nil
	}
	select {
	case <-s.done:
		return nil
	default:
		return s.s
	}
}

// stop stops the streamer of name, if one runs, and waits for it.
func (r *mysqlStreamers) stop(name string) {
	r.mu.Lock()
	s := r.running[name]
	delete(r.running, name)
	r.mu.Unlock()
	if s != nil {
		s.cancel(errStreamRemoved)
		<-s.done
	}
}

func (r *mysqlStreamers) stopAll() {
	r.mu.Lock()
	all := r.running
	r.running = nil
	r.mu.Unlock()
	for _, s := range all {
		s.cancel(errAgentStopping)
	}
	for _, s := range all {
		<-s.done
	}
}
