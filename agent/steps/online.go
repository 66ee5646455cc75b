package steps

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/fleetmigrate/fleetmigrate/agent"
	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/storage"
)

// The online path's two steps, whatever the engine (docs/online.md): the
// sync step at the destination makes a stream and follows it until it is
// caught up and verified; the cutover step at the source blocks writes,
// waits (bounded) until the destination has applied the source's position,
// stops the stream, verifies what changed and removes the stream. Each
// engine supplies its side of each step (online_postgres.go,
// online_mysql.go); the flow, its notes, its limits and its way back on
// failure are here, once.

// recordStream is the stream record of an online row: what the stream
// created (written before it is created) and what the cutover needs (the
// schema's fingerprint, its attempts, what was verified). A record whose
// name is empty: nothing of the stream is left.
const recordStream = "stream"

// Online configures online mode on an agent (docs/online.md).
type Online struct {
	// AutoMinBytes: a row in mode auto streams only if its database is at
	// least this large (smaller ones dump: their dump is quicker than
	// setting up a stream). Default 0: every database that can stream.
	AutoMinBytes int64
	// MaxLagBytes: the sync step hands the row to the cutover once the
	// initial copy is done and the stream is at most this far behind
	// (default 1 MiB).
	MaxLagBytes int64
	// CutoverTimeout bounds how long writes stay blocked waiting for the
	// destination to catch up (default 5 s); then they are restored and
	// the row goes back to syncing.
	CutoverTimeout time.Duration
	// CutoverAttempts is how many timed-out cutovers a row gets before
	// Cutover failed (default 8). After each the row syncs again and waits
	// before the next (10 s, 20 s, 40 s … at most 5 min;
	// the default's budget is about 16 minutes); a stream that does not
	// converge after a timed-out cutover fails sooner (ConvergeWindow).
	CutoverAttempts int
	// CutoverBackoff is the first of those waits (default 10 s).
	CutoverBackoff time.Duration
	// LagEvery is how often a syncing row's lag is written (default 5 s).
	LagEvery time.Duration
	// StallTimeout: a stream that makes no progress this long while it is
	// not ready (its initial copy, or its apply while behind) is made again
	// from the start (maxSyncRestarts times, then the row fails). Default
	// 5 min; negative: never.
	StallTimeout time.Duration
	// ConvergeWindow: a stream whose lag stayed above MaxLagBytes and grew
	// over this whole window is reported as not converging (default 40 s;
	// convergence.go).
	ConvergeWindow time.Duration
	// ConvergeTimeout: a stream not converging this long fails its row
	// (Sync failed), its stream and copy removed (default 30 min; negative:
	// never). After a timed-out cutover, one more window is enough.
	ConvergeTimeout time.Duration

	gauges *streamGauges // the engine's, set by Register
}

func (o Online) withDefaults() Online {
	if o.MaxLagBytes <= 0 {
		o.MaxLagBytes = 1 << 20
	}
	if o.CutoverTimeout <= 0 {
		o.CutoverTimeout = 5 * time.Second
	}
	if o.CutoverAttempts <= 0 {
		o.CutoverAttempts = 8
	}
	if o.CutoverBackoff <= 0 {
		o.CutoverBackoff = 10 * time.Second
	}
	if o.LagEvery <= 0 {
		o.LagEvery = 5 * time.Second
	}
	if o.StallTimeout == 0 {
		o.StallTimeout = 5 * time.Minute
	}
	if o.ConvergeWindow <= 0 {
		o.ConvergeWindow = 40 * time.Second
	}
	if o.ConvergeTimeout == 0 {
		o.ConvergeTimeout = 30 * time.Minute
	}
	return o
}

// backoff is how long a row syncs after its n-th timed-out cutover before
// the next: CutoverBackoff, doubling, at most 5 min (never less than twice
// the cutover timeout, so that a stream that missed has time to get ahead
// again).
func (o Online) backoff(n int) time.Duration {
	if n <= 0 {
		return 0
	}
	d := o.CutoverBackoff << min(n-1, 10)
	return max(min(d, 5*time.Minute), 2*o.CutoverTimeout)
}

// streams is an engine's change stream as the online steps use it (the
// engine's own record of it is the row's stream record).
type streams interface {
	// syncSide and cutoverSide are the engine's part of the sync step (at
	// the destination: dst local, src a peer) and of the cutover step (at
	// the source) for one row, its servers open.
	syncSide(ctx context.Context, job *agent.Job, src, dst engine.Conn) (syncSide, error)
	cutoverSide(ctx context.Context, job *agent.Job, src, dst engine.Conn) (cutoverSide, error)
	// recorded reports whether the row's stream record names a stream:
	// something of it may be left at the servers.
	recorded(ctx context.Context, job *agent.Job) (bool, error)
	// teardown removes the row's recorded stream at both servers and
	// records that nothing of it is left (what was verified stays).
	// Either server may be nil (unreachable): what it holds stays
	// recorded, and teardown says so in its error.
	teardown(ctx context.Context, job *agent.Job, src, dst engine.Conn) error
	// removeAt removes the part of the stream name (of database) that
	// side's server holds, c being that server; forget records that
	// nothing of the row's stream is left (what was verified stays) — the
	// two halves of a teardown when each server's agent removes its own
	// part (peer.go).
	removeAt(ctx context.Context, side statemachine.HostSide, c engine.Conn, name, database string) error
	forget(ctx context.Context, job *agent.Job) error
	// verifiedAtCut is what the cutover verified the destination to have
	// (tables with their checksums) and the tables of the dump that are
	// not compared with it (verified otherwise, by keys or rows).
	verifiedAtCut(ctx context.Context, job *agent.Job) (verified []engine.TableSum, skip []string, err error)
	// writtenSinceCut looks, at the close, for writes at the source after
	// the cutover in the tables the cutover verified by keys or rows: a
	// write found is the late-writes failure (lateWrites).
	writtenSinceCut(ctx context.Context, job *agent.Job, src engine.Conn) error
}

// ---- the sync step ----

// syncSide is one engine's part of the sync step for one row, its servers
// open (the destination local, the source a peer).
type syncSide interface {
	// resumable reports whether the recorded stream exists and runs: the
	// step then follows it again instead of starting over (an agent
	// restart does not stop a stream).
	resumable(ctx context.Context) (bool, error)
	// problems runs online mode's preflight on both servers and the
	// database s (nothing changes): what is missing for a stream, and
	// advice.
	problems(ctx context.Context, s engine.Source) (problems, notes []string, err error)
	// create copies s to the destination (checked, and cleared of what an
	// earlier attempt left) and creates the stream, recording each thing
	// before it is created; notes are the preflight's advice, for its
	// note.
	create(ctx context.Context, s engine.Source, notes []string) (statemachine.Fields, error)
	// state reads the stream.
	state(ctx context.Context) (streamState, error)
	// schemaChange describes DDL at the source since the stream started
	// ("" when there was none).
	schemaChange(ctx context.Context) (string, error)
	// verified reports whether baseline ran; baseline verifies the tables
	// while the stream runs, so that the cutover re-reads only those that
	// change afterwards.
	verified() bool
	baseline(ctx context.Context) error
	// cutoverAttempts is how many cutovers timed out so far.
	cutoverAttempts() int
}

// streamState is what the sync step reads of a stream.
type streamState struct {
	// gone says what of the stream vanished (lost in a crash, dropped by
	// hand, its position purged at the source): it is made again.
	gone string
	// broken says why the stream stopped for good (an error its applier
	// will not get past): the row fails, its stream and copy removed.
	broken string
	// copying describes the initial copy while it runs ("" when done).
	copying string
	// applying: the stream's applier runs.
	applying bool
	// lag is how far the destination is behind, in bytes of the source's
	// log; errors counts the stream's errors so far.
	lag, errors int64
	// extra is engine-specific detail for the lag note (", WAL retained
	// 57 MB").
	extra string
	// progress is what the stream has done so far: the same for
	// Online.StallTimeout while it is not ready means it is stuck.
	progress string
	// rows and txns are what the stream applied so far, rows and the
	// source's transactions (-1: the engine does not count them).
	rows, txns int64
}

// describe is the state's part of the lag note.
func (s streamState) describe() string {
	state := "streaming"
	if s.copying != "" {
		state = s.copying
	}
	if !s.applying {
		state += ", apply worker not running"
	}
	return state
}

// maxSyncRestarts bounds how often one sync attempt makes a lost stream
// again before it fails.
const maxSyncRestarts = 2

// streamGoneError: the row's stream vanished or stalled while it synced.
type streamGoneError struct{ what string }

func (e *streamGoneError) Error() string {
	return e.what + ": a retry syncs again from the start"
}

// followPatience is how long the sync step keeps trying to read a stream's
// state before the failure counts as an attempt.
const followPatience = 2 * time.Minute

// runSync is the sync step: start the stream (or resume following it),
// follow it until it is ready, make it again when it vanishes or stalls.
func (h *host) runSync(ctx context.Context, job *agent.Job, src, dst engine.Conn, side syncSide) (statemachine.Fields, error) {
	opt := h.Online
	syncFailed := func(ctx context.Context, job *agent.Job, err error) error {
		return h.onlineFailed(ctx, job, src, dst, "the failed sync", err)
	}
	resume, err := side.resumable(ctx)
	if err != nil {
		return statemachine.Fields{}, err
	}
	for restarts := 0; ; restarts++ {
		if !resume {
			f, started, err := h.startSync(ctx, job, src, dst, side)
			if err != nil || !started {
				return f, syncFailed(ctx, job, err)
			}
		}
		f, err := followStream(ctx, job, opt, side)
		var gone *streamGoneError
		if errors.As(err, &gone) && restarts < maxSyncRestarts {
			// Nothing is blocked while syncing: a stream lost to a server's
			// crash, or stuck, is simply made again.
			job.Note(ctx, "%s: syncing again from the start (%d of %d)", gone.what, restarts+1, maxSyncRestarts)
			resume = false
			continue
		}
		return f, syncFailed(ctx, job, err)
	}
}

// startSync checks both servers and the database, removes what an
// earlier attempt left (recorded, so ours), then has the engine copy the
// database and create its stream. started false: the row is diverted with
// f (auto → dump).
func (h *host) startSync(ctx context.Context, job *agent.Job, src, dst engine.Conn, side syncSide) (f statemachine.Fields, started bool, err error) {
	s, err := src.Inspect(ctx, job.Row.DatabaseName)
	if err != nil {
		return statemachine.Fields{}, false, permanent(err)
	}
	info := s.Info()
	problems, notes, err := side.problems(ctx, s)
	if err != nil {
		return statemachine.Fields{}, false, err
	}
	reason, err := autoDump(job, h.Online, info.Database, info.SizeBytes, problems)
	if err != nil {
		return statemachine.Fields{}, false, err
	}
	if reason != "" {
		job.Note(ctx, "auto: dump mode for %q: %s", info.Database, reason)
		return statemachine.Fields{Divert: true, Mode: statemachine.ModeDump, SizeBytes: info.SizeBytes}, false, nil
	}
	// What an earlier attempt left (recorded, so ours) goes first: the
	// destination's check must not find our own half-made copy.
	if err := h.streams.teardown(ctx, job, src, dst); err != nil {
		return statemachine.Fields{}, false, err
	}
	if err := h.dropImport(ctx, job, dst, "an earlier attempt"); err != nil {
		return statemachine.Fields{}, false, err
	}
	if _, err := dst.CheckDestination(ctx, src, s); err != nil {
		return statemachine.Fields{}, false, permanent(err)
	}
	f, err = side.create(ctx, s, notes)
	return f, err == nil, err
}

// onlineFailed removes what the online steps created when one fails for
// good: the stream (it must not outlive its row's failure: a PostgreSQL
// slot would keep WAL at the source), then the destination's copy.
// Transient failures and cancellations keep them: the next attempt
// resumes the stream. At the cutover, writes are restored by then.
func (h *host) onlineFailed(ctx context.Context, job *agent.Job, src, dst engine.Conn, whose string, err error) error {
	if err == nil || ctx.Err() != nil || !agent.IsPermanent(err) && !errors.Is(err, engine.ErrPermanent) {
		return err
	}
	uctx, cancel := undoContext(ctx)
	defer cancel()
	if terr := h.streams.teardown(uctx, job, src, dst); terr != nil {
		job.Log.Error("the stream was NOT removed after "+whose+": a rollback or `migrate gc` removes it", "err", terr)
		return errors.Join(permanent(err), terr)
	}
	if derr := h.dropImport(uctx, job, dst, whose); derr != nil {
		return errors.Join(permanent(err), derr)
	}
	return permanent(err)
}

// followStream watches the stream until its initial copy is done and its
// lag is at most MaxLagBytes, writing the lag on the row every LagEvery,
// then verifies while streaming (once) and hands the row on. A schema
// change at the source fails the row (the stream would break or diverge);
// a stream that vanished or made no progress for StallTimeout is returned
// as a streamGoneError.
func followStream(ctx context.Context, job *agent.Job, opt Online, side syncSide) (statemachine.Fields, error) {
	opt = opt.withDefaults()
	// After a cutover timed out, give the stream time before the next one.
	var notBefore time.Time
	missed := side.cutoverAttempts()
	if missed > 0 {
		notBefore = time.Now().Add(opt.backoff(missed))
	}
	tick := time.NewTicker(min(opt.LagEvery, time.Second))
	defer tick.Stop()
	var lastNote, failingSince time.Time
	progress, progressAt := "", time.Now()
	conv := &convergence{window: opt.ConvergeWindow, maxLag: opt.MaxLagBytes}
	// A stream not converging fails after ConvergeTimeout; after a missed
	// catch-up, one more window (time to see it in migrate status).
	limit := opt.ConvergeTimeout
	if missed > 0 && limit > 0 {
		limit = opt.ConvergeWindow
	}
	if g := opt.gauges; g != nil {
		g.syncing.Add(1)
		defer g.syncing.Add(-1)
		defer func() {
			if conv.reported() {
				g.notConverging.Add(-1)
			}
		}()
	}
	// A server that cannot be read for a moment (restarted, a network
	// blip) does not cost the row an attempt: the stream resumes in the
	// servers; only a failure that lasts is returned.
	transient := func(err error) bool {
		if agent.IsPermanent(err) || errors.Is(err, engine.ErrPermanent) || ctx.Err() != nil {
			return false
		}
		if failingSince.IsZero() {
			failingSince = time.Now()
			job.Note(ctx, "syncing: cannot read the stream's state (%v); retrying for up to %s", err, followPatience)
		}
		return time.Since(failingSince) < followPatience
	}
	for {
		st, err := side.state(ctx)
		if err != nil {
			if !transient(err) {
				return statemachine.Fields{}, err
			}
			if !sleepTick(ctx, tick) {
				return statemachine.Fields{}, context.Cause(ctx)
			}
			continue
		}
		failingSince = time.Time{}
		switch {
		case st.gone != "":
			return statemachine.Fields{}, agent.Permanent(&streamGoneError{st.gone})
		case st.broken != "":
			return statemachine.Fields{}, agent.Permanentf("%s; the stream and the destination's copy were removed: retry to sync again from the start, or roll back", st.broken)
		}
		change, err := side.schemaChange(ctx)
		if err != nil {
			return statemachine.Fields{}, err
		}
		if change != "" {
			return statemachine.Fields{}, agent.Permanentf("%s: the stream was removed; retry to sync again from the start, or roll back and plan the database as dump", change)
		}
		now := time.Now()
		if st.copying == "" && st.applying {
			nc, changed := conv.add(lagSample{at: now, lag: st.lag, rows: st.rows, txns: st.txns})
			if changed {
				if g := opt.gauges; g != nil {
					if nc {
						g.notConverging.Add(1)
					} else {
						g.notConverging.Add(-1)
					}
				}
				switch {
				case nc && limit > 0:
					job.Note(ctx, "syncing: NOT CONVERGING: %s: the destination applies less than the source writes (a busy destination, or a customer writing faster than one stream applies). "+
						"It syncs on; after %s of this the row fails (online.converge-timeout%s)", conv.verdict, limit, missedNote(missed))
				case nc:
					job.Note(ctx, "syncing: NOT CONVERGING: %s: the destination applies less than the source writes (a busy destination, or a customer writing faster than one stream applies). "+
						"It syncs on (online.converge-timeout is off)", conv.verdict)
				default:
					job.Note(ctx, "syncing: converging again: lag %s", mb(st.lag))
				}
				lastNote = now
			}
			if nc && limit > 0 && conv.notConvergingFor(now) >= limit {
				return statemachine.Fields{}, agent.Permanentf("the stream is not converging (%s; for %s%s): the stream and the destination's copy were removed. "+
					"Move it when the customer writes less (retry), or roll back and plan it as dump",
					conv.verdict, conv.notConvergingFor(now).Round(time.Second), missedNote(missed))
			}
		}
		if now.Sub(lastNote) >= opt.LagEvery {
			lastNote = now
			state := "syncing: "
			if conv.reported() {
				state = fmt.Sprintf("syncing: not converging for %s: ", conv.notConvergingFor(now).Round(time.Second))
			}
			job.Note(ctx, "%s%s; lag %s%s, %d apply errors", state, st.describe(), mb(st.lag), st.extra, st.errors)
		}
		ready := st.copying == "" && st.applying && st.lag <= opt.MaxLagBytes
		if ready || st.progress != progress {
			progress, progressAt = st.progress, now
		} else if opt.StallTimeout > 0 && now.Sub(progressAt) > opt.StallTimeout {
			return statemachine.Fields{}, agent.Permanent(&streamGoneError{fmt.Sprintf(
				"the stream made no progress for %s (%s; lag %s, %d apply and copy errors: the destination server's log says why)",
				opt.StallTimeout, st.describe(), mb(st.lag), st.errors)})
		}
		if ready && now.After(notBefore) {
			if !side.verified() {
				if err := side.baseline(ctx); err != nil {
					return statemachine.Fields{}, err
				}
			}
			job.Note(ctx, "caught up: lag %s; ready to cut over", mb(st.lag))
			return statemachine.Fields{Mode: statemachine.ModeOnline}, nil
		}
		if !sleepTick(ctx, tick) {
			return statemachine.Fields{}, context.Cause(ctx)
		}
	}
}

// missedNote says how many cutovers timed out before, for an error.
func missedNote(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(", after %d cutovers that timed out", n)
}

// sleepTick waits for the next tick; false when ctx ended.
func sleepTick(ctx context.Context, t *time.Ticker) bool {
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// autoDump decides whether a row in mode auto moves in dump mode instead
// (problems: what the servers or the database lack for a stream; size
// below the threshold): the reason, or "". A row in mode online with
// problems fails, nothing changed.
func autoDump(job *agent.Job, opt Online, database string, size int64, problems []string) (string, error) {
	reason := ""
	switch {
	case len(problems) > 0:
		reason = strings.Join(problems, "; ")
	case size < opt.withDefaults().AutoMinBytes:
		reason = fmt.Sprintf("%q is %s, below the online threshold of %s (online.auto-min-mib)", database, mb(size), mb(opt.AutoMinBytes))
	}
	if job.Row.Mode == statemachine.ModeAuto || reason == "" {
		return reason, nil
	}
	return "", agent.Permanentf("%q cannot be moved online, nothing was changed: %s (plan it as dump or auto)", database, reason)
}

// ---- the cutover step ----

// cutoverSide is one engine's part of the cutover step for one row, its
// servers open (the destination local, the source a peer, read only).
// Blocking and restoring writes are the source's agent's (peer.go).
type cutoverSide interface {
	// ready says why the stream cannot be cut over now ("": it can):
	// none recorded, gone, or stopped by an interrupted cutover (it is
	// started again). The row then goes back to syncing.
	ready(ctx context.Context) (string, error)
	// lag reads how far the destination is behind now, in bytes of the
	// source's log (before the block: settle waits on it).
	lag(ctx context.Context) (int64, error)
	// prepare checks what can be checked before the block (the schema,
	// the copy's objects) and returns the source inspected.
	prepare(ctx context.Context) (engine.Source, error)
	// schemaChange describes DDL at the source since the stream started.
	schemaChange(ctx context.Context) (string, error)
	// position records where the source's log is now, every write before
	// it included.
	position(ctx context.Context) (string, error)
	// waitApplied waits at most timeout until the destination has applied
	// the source's log up to pos: -1 when it has, else how many bytes it
	// still lacks.
	waitApplied(ctx context.Context, pos string, timeout time.Duration) (int64, error)
	// timedOut counts a catch-up that timed out in the stream record and
	// returns the attempts so far.
	timedOut(ctx context.Context, lag int64) (int, error)
	// stop stops the stream: nothing more is applied at the destination.
	stop(ctx context.Context) error
	// remove removes the stream at both servers (the record still names
	// it until finish); with removeLater true it is not called: the stopped
	// stream stays recorded for the close step to remove, after the switch
	// (removing it took a PostgreSQL cutover 0.1–0.4 s of its window).
	remove(ctx context.Context) error
	removeLater() bool
	// verify makes the destination what the frozen source is (sequences,
	// accounts, events: what the stream does not carry) and verifies the
	// tables that may have changed since they were verified while
	// streaming, recording what it verified; it describes what it did.
	verify(ctx context.Context, a engine.Block, pos string) (string, error)
	// finish records that nothing of the stream is left (what was
	// verified stays: the close compares its dump with it).
	finish(ctx context.Context) error
}

// runCutover is the cutover step: block writes as the dump step does,
// record the position, wait (at most CutoverTimeout) until the destination
// has applied it, stop the stream, verify, remove the stream. A catch-up
// that times out restores writes and sends the row back to syncing; any
// other failure restores writes and removes the stream and the
// destination's copy (a retry syncs again). A block an interrupted attempt
// left in force is undone before (cutoverStep.Run).
func (h *host) runCutover(ctx context.Context, job *agent.Job, src, dst engine.Conn, side cutoverSide) (statemachine.Fields, error) {
	failed := func(err error) error { return h.onlineFailed(ctx, job, src, dst, "the failed cutover", err) }
	why, err := side.ready(ctx)
	if err != nil {
		return statemachine.Fields{}, failed(err)
	}
	if why != "" {
		job.Note(ctx, "%s: back to syncing", why)
		return statemachine.Fields{Divert: true}, nil
	}
	// First close to the source (before plan: what plan reads of the log
	// is read again under the block from there on).
	settle(ctx, job, side.lag)
	if _, err := side.prepare(ctx); err != nil {
		return statemachine.Fields{}, failed(permanent(err))
	}
	// The source's own agent blocks it (peer.go), planning the block from
	// the database as its server has it, before the window.
	rec := blockRecord{Blocked: true, Ref: newRef("cutover", job.Row.Fence)}
	plan, err := h.askPlanBlock(ctx, job, rec.Ref)
	if err != nil {
		return statemachine.Fields{}, failed(permanent(err))
	}
	// The answer may have taken a while (the source's agent down, then
	// back): the stream is looked at again before anything is blocked.
	if why, err := side.ready(ctx); err != nil {
		return statemachine.Fields{}, failed(err)
	} else if why != "" {
		job.Note(ctx, "%s: back to syncing", why)
		return statemachine.Fields{Divert: true}, nil
	}
	if err := job.PutRecord(ctx, recordBlock, rec); err != nil {
		return statemachine.Fields{}, err
	}
	detail := fmt.Sprintf("cutover: blocking writes to %q (%s): asked the source's agent", job.Row.DatabaseName, plan.Describe())
	if err := job.Record(ctx, statemachine.Fields{Marks: []statemachine.Mark{statemachine.MarkBlocked}}, detail); err != nil {
		return statemachine.Fields{}, err
	}
	block := func(ctx context.Context) (engine.Block, int, error) { return h.askBlock(ctx, job, rec.Ref) }
	f, timedOut, err := cutoverBlocked(ctx, job, h.Online.withDefaults(), block, side)
	if err == nil && timedOut == "" {
		return f, nil
	}
	uctx, cancel := undoContext(ctx)
	defer cancel()
	if uerr := h.unblock(uctx, job, src, rec); uerr != nil {
		job.Log.Error("writes NOT restored after the cutover stopped: the next attempt, a rollback or recovery restores them", "err", uerr)
		return statemachine.Fields{}, errors.Join(err, uerr)
	}
	if timedOut != "" && err == nil {
		// Back to syncing: the stream stays.
		job.Note(ctx, "%s", timedOut)
		return f, nil
	}
	// Anything else that fails the row for good (the last catch-up that
	// timed out included) removes the stream and the copy.
	return statemachine.Fields{}, failed(err)
}

// settleLag and settleFor: before blocking writes, the cutover waits (at
// most settleFor) until the destination is at most settleLag behind, so
// that the catch-up under the block is short. The sync step hands a row on
// at max-lag-mib (1 MiB), and a MariaDB stream applying one database out
// of a busy source's whole binary log took up to 3.6 s at 40 in flight to
// catch up that much under the block.
const (
	settleLag = 64 << 10
	settleFor = 3 * time.Second
)

// settle waits, before the block, until lag says the destination is close
// behind, or settleFor passed (the cutover then goes on: its catch-up is
// bounded by the cutover timeout anyway). Errors reading the lag end the
// wait: the block's own reads will say what is wrong.
func settle(ctx context.Context, job *agent.Job, lag func(context.Context) (int64, error)) {
	deadline := time.Now().Add(settleFor)
	poll := engine.NewBackoff(10*time.Millisecond, 100*time.Millisecond)
	for {
		n, err := lag(ctx)
		if err != nil || n <= settleLag {
			return
		}
		if time.Now().After(deadline) {
			job.Log.Info("the destination is still behind after waiting before the block; blocking anyway", "lag_bytes", n, "waited", settleFor.String())
			return
		}
		if poll.Wait(ctx) != nil {
			return
		}
	}
}

// cutoverBlocked is the cutover under the block. timedOut, when not empty,
// says the destination did not catch up in time (writes must be restored,
// then the note written; f sends the row back to syncing, or err fails it
// when the attempts are used up).
func cutoverBlocked(ctx context.Context, job *agent.Job, opt Online, block func(context.Context) (engine.Block, int, error), side cutoverSide) (f statemachine.Fields, timedOut string, err error) {
	start := time.Now()
	var note CutoverNote
	access, ended, err := block(ctx)
	if err != nil {
		return f, "", err
	}
	job.Log.Debug("writes blocked by the source's agent", "plan", access.Describe(), "sessions_ended", ended)
	note.Block, note.Ended = time.Since(start), ended
	phase := time.Now()
	change, err := side.schemaChange(ctx)
	if err != nil {
		return f, "", err
	}
	if change != "" {
		return f, "", agent.Permanentf("cutover refused: %s. Writes were restored and the stream removed; retry to sync again from the start, or roll back and plan the database as dump", change)
	}
	pos, err := side.position(ctx)
	if err != nil {
		return f, "", err
	}
	note.Position, note.Checks = pos, time.Since(phase)
	phase = time.Now()
	lag, err := side.waitApplied(ctx, pos, opt.CutoverTimeout)
	if err != nil {
		return f, "", err
	}
	if lag >= 0 {
		attempts, perr := side.timedOut(ctx, lag)
		if perr != nil {
			return f, "catch-up timed out", perr
		}
		if attempts >= opt.CutoverAttempts {
			return f, "catch-up timed out", agent.Permanentf("cutover failed: the destination did not catch up within %s in %d attempts (online.cutover-attempts, the stream syncing between them; last lag %s behind %s); writes were restored at the source. "+
				"Look at the destination's load and the stream (docs/online.md), then retry, or roll back", opt.CutoverTimeout, attempts, mb(lag), pos)
		}
		note := fmt.Sprintf("catch-up timed out after %s (still %s behind position %s): writes restored, back to syncing for %s (cutover attempt %d of %d)",
			opt.CutoverTimeout, mb(lag), pos, opt.backoff(attempts).Round(time.Second), attempts, opt.CutoverAttempts)
		return statemachine.Fields{Divert: true}, note, nil
	}
	note.CatchUp = time.Since(phase)
	phase = time.Now()
	if err := side.stop(ctx); err != nil {
		return f, "", err
	}
	note.Stop = time.Since(phase)
	// Nothing more reaches the destination: the stream is removed while
	// the destination is completed and verified (the record keeps its name
	// until both are done, so an interruption removes it again).
	removed := make(chan error, 1)
	if note.Deferred = side.removeLater(); note.Deferred {
		removed <- nil
	} else {
		go func() {
			t0 := time.Now()
			err := side.remove(ctx)
			note.Removal = time.Since(t0)
			removed <- err
		}()
	}
	phase = time.Now()
	note.Summary, err = side.verify(ctx, access, pos)
	note.Verify = time.Since(phase)
	if rerr := <-removed; err == nil {
		err = rerr
	}
	if err != nil {
		return f, "", err
	}
	if err := side.finish(ctx); err != nil {
		return f, "", err
	}
	note.Total = time.Since(start)
	job.Note(ctx, "%s", note)
	return statemachine.Fields{}, "", nil
}

// verifiedAgainstDump compares the consistency-point dump the close just
// took (f) with what the cutover verified the destination to have
// (verified; none recorded: nothing to compare): a difference is a write
// that reached the source after the cutover (a superuser's: the block does
// not stop them). Tables of the dump named in skip are not compared.
func verifiedAgainstDump(ctx context.Context, job *agent.Job, store storage.Store, f statemachine.Fields, verified []engine.TableSum, skip ...string) error {
	if len(verified) == 0 {
		job.Note(ctx, "no record of what the cutover verified: the dump is not compared with it")
		return nil
	}
	job.Row.DumpURL, job.Row.DumpSHA256, job.Row.DumpBytes = f.DumpURL, f.DumpSHA256, f.DumpBytes
	_, man, err := readManifest(ctx, store, &job.Row)
	if err != nil {
		return permanent(err)
	}
	var got []engine.TableSum
	for _, t := range man.Tables {
		if !slices.Contains(skip, t.Name) {
			got = append(got, t)
		}
	}
	if diff := engine.Diff(verified, got); len(diff) > 0 {
		return lateWrites(&job.Row, engine.Permanentf("the source's consistency-point dump differs from what the destination was verified to have at the cutover: %s", strings.Join(diff, "; ")))
	}
	return nil
}

// cutoverBlock reads the block the cutover left in force, which the
// close's consistency-point dump relies on: without it the dump would not
// be one, and nothing is done. A block that an earlier attempt of the
// close replaced by the close itself (a close record) still holds.
func (h *host) cutoverBlock(ctx context.Context, job *agent.Job) (engine.Block, error) {
	rec, ok, err := h.blockRecord(ctx, job)
	if err != nil {
		return nil, err
	}
	closed := false
	if ok && !rec.Blocked {
		var raw json.RawMessage
		if closed, err = job.GetRecord(ctx, recordClose, &raw); err != nil {
			return nil, err
		}
	}
	if !ok || rec.Access == nil || !rec.Blocked && !closed {
		return nil, agent.Permanentf("row %d is online and past its cutover, but its block record does not say writes are blocked at the source "+
			"(a record edited by hand?): its consistency-point dump would not be one; nothing was changed. Block the source by hand and retry, or roll the row back with --discard-destination-writes", job.Row.ID)
	}
	return rec.Access, nil
}

// syncStep is the sync step at the destination: make the stream (or
// resume following it) and follow it until it is caught up and verified.
type syncStep struct{ h *host }

func (s *syncStep) Run(ctx context.Context, job *agent.Job) (statemachine.Fields, error) {
	h := s.h
	dst, err := h.local(ctx, job.Log)
	if err != nil {
		return statemachine.Fields{}, err
	}
	defer closeConn(dst)
	src, err := h.peer(ctx, job, job.Row.Source)
	if err != nil {
		return statemachine.Fields{}, fmt.Errorf("reach the source to sync from it: %w", err)
	}
	defer closeConn(src)
	side, err := h.streams.syncSide(ctx, job, src, dst)
	if err != nil {
		return statemachine.Fields{}, err
	}
	return h.runSync(ctx, job, src, dst, side)
}

// Recover has nothing to undo: the stream runs (in the servers, or in
// this agent's streams service) and the next attempt resumes following it.
func (s *syncStep) Recover(context.Context, *agent.Job) error { return nil }

// Abandon removes the stream and the destination's copy when the row fails
// after its attempts were used up by transient failures: a failed row must
// not keep a stream (a PostgreSQL slot holds WAL at its source). Either
// server may be unreachable: what needs it stays recorded, for a
// rollback, a retry or gc.
func (s *syncStep) Abandon(ctx context.Context, job *agent.Job) error {
	h := s.h
	uctx, cancel := undoContext(ctx)
	defer cancel()
	return h.removeOnline(uctx, job, "the abandoned sync")
}

// removeOnline removes the row's stream with whatever of its servers
// answers (teardown says what it could not remove), then the destination's
// copy.
func (h *host) removeOnline(ctx context.Context, job *agent.Job, whose string) error {
	if err := h.removeStream(ctx, job); err != nil {
		return err
	}
	return h.dropImportAt(ctx, job, h.atDestination(job), whose)
}

// removeStream removes the row's stream with whatever of its servers
// answers.
func (h *host) removeStream(ctx context.Context, job *agent.Job) error {
	if recorded, err := h.streams.recorded(ctx, job); err != nil || !recorded {
		return err
	}
	src, serr := h.atSource(job)(ctx)
	defer closeConn(src)
	dst, derr := h.atDestination(job)(ctx)
	defer closeConn(dst)
	if err := h.streams.teardown(ctx, job, src, dst); err != nil {
		// What the teardown could not reach, and why it could not.
		return errors.Join(err, serr, derr)
	}
	return nil
}

// cutoverStep is the cutover step at the destination: every change it
// makes is at this host's server but the block at the source, which the
// source's own agent makes when asked (peer.go).
type cutoverStep struct{ h *host }

func (c *cutoverStep) Run(ctx context.Context, job *agent.Job) (statemachine.Fields, error) {
	h := c.h
	// Writes come back first if an interrupted attempt left them blocked.
	if err := h.unblockRecorded(ctx, job, nil); err != nil {
		return statemachine.Fields{}, err
	}
	src, err := h.peer(ctx, job, job.Row.Source)
	if err != nil {
		return statemachine.Fields{}, fmt.Errorf("reach the source to cut over: %w", err)
	}
	defer closeConn(src)
	dst, err := h.local(ctx, job.Log)
	if err != nil {
		return statemachine.Fields{}, err
	}
	defer closeConn(dst)
	side, err := h.streams.cutoverSide(ctx, job, src, dst)
	if err != nil {
		return statemachine.Fields{}, err
	}
	return h.runCutover(ctx, job, src, dst, side)
}

// Recover has the source's agent restore writes if the dead run left them
// blocked; the stream and the copy stay (the next attempt finds the
// stream, starting it again if it was stopped).
func (c *cutoverStep) Recover(ctx context.Context, job *agent.Job) error {
	return c.h.restoreWrites(ctx, job, c.h.atSource(job))
}

// Abandon undoes what a cutover's attempts left when its row fails after
// transient failures used them up (or its agent died at the last one):
// writes restored at the source first, then the stream removed at both
// servers, then the destination's copy dropped — each waiting for its
// server within the undo window. What cannot be reached stays recorded,
// for a retry, a rollback or gc.
func (c *cutoverStep) Abandon(ctx context.Context, job *agent.Job) error {
	h := c.h
	werr := undoPatiently(ctx, job, "restore writes at the source", func(ctx context.Context) error { return c.Recover(ctx, job) })
	if err := undoPatiently(ctx, job, "remove the stream", func(ctx context.Context) error { return h.removeStream(ctx, job) }); err != nil {
		// The copy stays while a stream may still apply to it.
		return errors.Join(werr, err)
	}
	return errors.Join(werr, undoPatiently(ctx, job, "drop the destination's copy", func(ctx context.Context) error {
		return h.dropImportAt(ctx, job, h.atDestination(job), "the abandoned cutover")
	}))
}
