package steps

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/fleetmigrate/fleetmigrate/agent"
	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/postgres"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// recordStream is the stream record of an online row: the publication, slot
// and subscription it created (written before they are created) and what
// the cutover needs (the schema's fingerprint, its attempts). An empty
// record: nothing of the stream is left.
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
	// Cutover failed (default 3).
	CutoverAttempts int
	// LagEvery is how often a syncing row's lag is written (default 5 s).
	LagEvery time.Duration
	// StallTimeout: a stream that makes no progress this long while it is
	// not ready (its initial copy, or its apply while behind) is made again
	// from the start (maxSyncRestarts times, then the row fails). Default
	// 5 min; negative: never.
	StallTimeout time.Duration
}

func (o Online) withDefaults() Online {
	if o.MaxLagBytes <= 0 {
		o.MaxLagBytes = 1 << 20
	}
	if o.CutoverTimeout <= 0 {
		o.CutoverTimeout = 5 * time.Second
	}
	if o.CutoverAttempts <= 0 {
		o.CutoverAttempts = 3
	}
	if o.LagEvery <= 0 {
		o.LagEvery = 5 * time.Second
	}
	if o.StallTimeout == 0 {
		o.StallTimeout = 5 * time.Minute
	}
	return o
}

// pgSync is the sync step at the destination: check both sides, prepare
// the destination (database, roles with their verifiers, schema), publish
// at the source and subscribe here, then follow the stream until the
// initial copy is done and the lag is small. The stream runs in the
// servers: the step can stop and resume (agent restart) without harm.
type pgSync struct{ c *Postgres }

func (h *pgSync) Run(ctx context.Context, job *agent.Job) (statemachine.Fields, error) {
	row := &job.Row
	dst, err := h.c.local(ctx, job.Log)
	if err != nil {
		return statemachine.Fields{}, err
	}
	defer func() { _ = dst.Close() }()
	src, err := h.c.peer(ctx, job, row.Source)
	if err != nil {
		return statemachine.Fields{}, fmt.Errorf("reach the source to sync from it: %w", err)
	}
	defer func() { _ = src.Close() }()

	var st postgres.Stream
	if _, err := job.GetRecord(ctx, recordStream, &st); err != nil {
		return statemachine.Fields{}, err
	}
	resume := false
	if st.Name != "" {
		sub, err := dst.SubscriptionOf(ctx, st.Database, st.Name)
		if err != nil {
			return statemachine.Fields{}, err
		}
		resume = sub.Exists && sub.Enabled
	}
	for restarts := 0; ; restarts++ {
		if !resume {
			f, started, err := h.start(ctx, job, src, dst, &st)
			if err != nil || !started {
				return f, h.failed(ctx, job, src, dst, err)
			}
		}
		f, err := h.follow(ctx, job, src, dst, &st)
		var gone *streamGoneError
		if errors.As(err, &gone) && restarts < maxSyncRestarts {
			// Nothing is blocked while syncing: a stream lost to a server's
			// crash or a slot invalidated is simply made again.
			job.Note(ctx, "%s: syncing again from the start (%d of %d)", gone.what, restarts+1, maxSyncRestarts)
			resume = false
			continue
		}
		return f, h.failed(ctx, job, src, dst, err)
	}
}

// maxSyncRestarts bounds how often one sync attempt makes a lost stream
// again before it fails.
const maxSyncRestarts = 2

// progressOf is what a stream that is not ready yet has done: while tables
// copy, their states and the rows the running copies wrote; after, the
// position the destination confirmed. A stream whose progress stays the
// same for Online.StallTimeout is stuck (a copy that fails again and
// again, an apply blocked at the destination).
func progressOf(sub postgres.Subscription, slot postgres.Slot) string {
	if sub.Tables > sub.Ready {
		return fmt.Sprintf("copy %s %d", sub.States, sub.Copied)
	}
	return "apply " + slot.Confirmed
}

// streamGoneError: the row's subscription or slot vanished while it
// synced (a crashed server lost it, an operator dropped it, the source
// invalidated the slot).
type streamGoneError struct{ what string }

func (e *streamGoneError) Error() string {
	return e.what + ": a retry syncs again from the start"
}

// failed removes what the sync created when it fails for good: a stream
// must not outlive its row's failure (its slot would keep WAL at the
// source). Transient failures and cancellations keep it: the next attempt
// resumes it.
func (h *pgSync) failed(ctx context.Context, job *agent.Job, src, dst *postgres.Server, err error) error {
	if err == nil || ctx.Err() != nil || !(agent.IsPermanent(err) || errors.Is(err, engine.ErrPermanent)) {
		return err
	}
	uctx, cancel := undoContext(ctx)
	defer cancel()
	if terr := h.c.teardown(uctx, job, src, dst); terr != nil {
		job.Log.Error("the stream was NOT removed after the sync failed: a rollback or `migrate gc` removes it", "err", terr)
		return errors.Join(permanent(err), terr)
	}
	if derr := dropPostgresImport(uctx, job, dst, "the failed sync"); derr != nil {
		return errors.Join(permanent(err), derr)
	}
	return permanent(err)
}

// start checks and prepares everything, then creates the stream. It
// returns started false (and the fields that divert the row to the dump
// path) when a row in mode auto should dump.
func (h *pgSync) start(ctx context.Context, job *agent.Job, src, dst *postgres.Server, st *postgres.Stream) (statemachine.Fields, bool, error) {
	row := &job.Row
	s, err := src.Inspect(ctx, row.DatabaseName)
	if err != nil {
		return statemachine.Fields{}, false, permanent(err)
	}
	problems, notes, err := h.c.onlineProblems(ctx, src, dst, s)
	if err != nil {
		return statemachine.Fields{}, false, err
	}
	opt := h.c.Online.withDefaults()
	if row.Mode == statemachine.ModeAuto {
		reason := ""
		switch {
		case len(problems) > 0:
			reason = strings.Join(problems, "; ")
		case s.SizeBytes < opt.AutoMinBytes:
			reason = fmt.Sprintf("%q is %s, below the online threshold of %s (online.auto-min-mib)", s.Database, mb(s.SizeBytes), mb(opt.AutoMinBytes))
		}
		if reason != "" {
			job.Note(ctx, "auto: dump mode for %q: %s", s.Database, reason)
			return statemachine.Fields{Divert: true, Mode: statemachine.ModeDump, SizeBytes: s.SizeBytes}, false, nil
		}
	} else if len(problems) > 0 {
		return statemachine.Fields{}, false, agent.Permanentf("%q cannot be moved online, nothing was changed: %s (plan it as dump or auto)", s.Database, strings.Join(problems, "; "))
	}
	// What an earlier attempt left (recorded, so ours) goes first: the
	// destination's check must not find our own half-made copy.
	if err := h.c.teardown(ctx, job, src, dst); err != nil {
		return statemachine.Fields{}, false, err
	}
	if err := dropPostgresImport(ctx, job, dst, "an earlier attempt"); err != nil {
		return statemachine.Fields{}, false, err
	}
	if _, err := dst.CheckDestination(ctx, postgres.IncomingFromSource(s, src.Major())); err != nil {
		return statemachine.Fields{}, false, permanent(err)
	}
	*st = postgres.Stream{Name: engine.StreamName(row.ID, s.Database), Database: s.Database}
	if err := job.PutRecord(ctx, recordStream, st); err != nil {
		return statemachine.Fields{}, false, err
	}
	if err := src.CreatePublication(ctx, st); err != nil {
		return statemachine.Fields{}, false, permanent(err)
	}
	if err := job.PutRecord(ctx, recordStream, st); err != nil {
		return statemachine.Fields{}, false, err
	}
	var schema bytes.Buffer
	man, sec, err := src.DumpSchema(ctx, s, row.Source, &schema)
	if err != nil {
		return statemachine.Fields{}, false, err
	}
	importNotes, err := dst.Import(ctx, man, sec, &schema, func(rec postgres.ImportRecord) error {
		return job.PutRecord(ctx, recordImport, rec)
	}, &engine.Progress{})
	if err != nil {
		return statemachine.Fields{}, false, fmt.Errorf("prepare %q at the destination: %w", s.Database, err)
	}
	// The schema carries our own publication (created just before it was
	// dumped): it is not the customer's.
	if err := dst.DropPublication(ctx, s.Database, st.Name); err != nil {
		return statemachine.Fields{}, false, err
	}
	if err := dst.Subscribe(ctx, src, st); err != nil {
		return statemachine.Fields{}, false, err
	}
	f := statemachine.Fields{Mode: statemachine.ModeOnline, SizeBytes: s.SizeBytes}
	if err := job.Record(ctx, f, fmt.Sprintf("online: %q (%s, %d tables) prepared at the destination (%d roles, schema%s) and streaming from %s: publication, slot and subscription %s%s",
		s.Database, mb(s.SizeBytes), len(st.Tables), len(man.Users), notesSuffix(importNotes), row.Source, st.Name, notesSuffix(notes))); err != nil {
		return statemachine.Fields{}, false, err
	}
	return f, true, nil
}

// onlineProblems runs online mode's preflight on both servers and the
// database: what is missing (nothing changes then) and advice.
func (c *Postgres) onlineProblems(ctx context.Context, src, dst *postgres.Server, s *postgres.Source) (problems, notes []string, err error) {
	sr, err := src.SourceReadiness(ctx)
	if err != nil {
		return nil, nil, err
	}
	dr, err := dst.DestinationReadiness(ctx)
	if err != nil {
		return nil, nil, err
	}
	blockers, err := src.OnlineBlockers(ctx, s)
	if err != nil {
		return nil, nil, err
	}
	problems = append(append(append(problems, sr.Problems...), dr.Problems...), blockers...)
	return problems, append(sr.Notes, dr.Notes...), nil
}

// follow watches the stream until the initial copy is done and the lag is
// at most MaxLagBytes, writing the lag on the row every LagEvery. A schema
// change at the source fails the row (the stream would break or diverge).
func (h *pgSync) follow(ctx context.Context, job *agent.Job, src, dst *postgres.Server, st *postgres.Stream) (statemachine.Fields, error) {
	opt := h.c.Online.withDefaults()
	// After a cutover timed out, give the stream time before the next one.
	var notBefore time.Time
	if st.CutoverAttempts > 0 {
		notBefore = time.Now().Add(time.Duration(st.CutoverAttempts) * 2 * opt.CutoverTimeout)
	}
	tick := time.NewTicker(min(opt.LagEvery, time.Second))
	defer tick.Stop()
	var lastNote, failingSince time.Time
	// What the stream has done so far, and since when it did nothing more
	// (see progressOf).
	progress, progressAt := "", time.Now()
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
		sub, err := dst.SubscriptionOf(ctx, st.Database, st.Name)
		var slot postgres.Slot
		var slotFound bool
		if err == nil {
			slot, slotFound, err = src.SlotOf(ctx, st.Name)
		}
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
		if !sub.Exists {
			return statemachine.Fields{}, agent.Permanent(&streamGoneError{fmt.Sprintf("subscription %s is gone at %s (lost in a crash, or dropped by hand)", st.Name, job.Row.Destination)})
		}
		if !slotFound {
			return statemachine.Fields{}, agent.Permanent(&streamGoneError{fmt.Sprintf("replication slot %s is gone at %s (dropped by hand, or invalidated when WAL it needed was removed under max_slot_wal_keep_size)", st.Name, job.Row.Source)})
		}
		change, err := src.SchemaChange(ctx, st)
		if err != nil {
			return statemachine.Fields{}, err
		}
		if change != "" {
			return statemachine.Fields{}, agent.Permanentf("%s: the stream was removed; retry to sync again from the start, or roll back and plan the database as dump", change)
		}
		copying := sub.Tables - sub.Ready
		state := "streaming"
		if copying > 0 {
			state = fmt.Sprintf("initial copy: %d of %d tables done (%s), %d rows into the tables copying now", sub.Ready, sub.Tables, sub.States, sub.Copied)
		}
		if sub.Worker == 0 {
			state += ", apply worker not running"
		}
		if time.Since(lastNote) >= opt.LagEvery {
			lastNote = time.Now()
			job.Note(ctx, "syncing: %s; lag %s, WAL retained %s, %d apply errors", state, mb(slot.LagBytes), mb(slot.Retained), sub.Errors)
		}
		ready := copying == 0 && sub.Worker != 0 && slot.LagBytes <= opt.MaxLagBytes
		if p := progressOf(sub, slot); ready || p != progress {
			progress, progressAt = p, time.Now()
		} else if opt.StallTimeout > 0 && time.Since(progressAt) > opt.StallTimeout {
			return statemachine.Fields{}, agent.Permanent(&streamGoneError{fmt.Sprintf(
				"the stream made no progress for %s (%s; lag %s, %d apply and copy errors: the destination server's log says why)",
				opt.StallTimeout, state, mb(slot.LagBytes), sub.Errors)})
		}
		if ready && time.Now().After(notBefore) {
			if st.Verified == nil {
				if err := h.baseline(ctx, job, src, dst, st); err != nil {
					return statemachine.Fields{}, err
				}
			}
			job.Note(ctx, "caught up: all %d tables streaming, lag %s; ready to cut over", sub.Tables, mb(slot.LagBytes))
			return statemachine.Fields{Mode: statemachine.ModeOnline}, nil
		}
		select {
		case <-ctx.Done():
			return statemachine.Fields{}, context.Cause(ctx)
		case <-tick.C:
		}
	}
}

// baseline verifies the tables while the stream runs, so that the cutover
// re-reads only the tables that change from then on: the source's change
// counters, its checksums, then (once the destination has applied past
// them) the destination's checksums, then the counters again. A table
// equal at both with counters that did not move is recorded as verified
// with the first counters: any later change moves them (the block ends
// the sessions, which flushes their counts), and the cutover checks it
// again under the block. A table that changed meanwhile is not recorded
// and is checked under the block.
func (h *pgSync) baseline(ctx context.Context, job *agent.Job, src, dst *postgres.Server, st *postgres.Stream) error {
	opt := h.c.Online.withDefaults()
	start := time.Now()
	before, err := src.TableCounters(ctx, st.Database)
	if err != nil {
		return err
	}
	srcSums, err := src.Checksums(ctx, st.Database, st.Tables, nil)
	if err != nil {
		return err
	}
	pos, err := src.Position(ctx, st.Database)
	if err != nil {
		return err
	}
	lag, err := waitApplied(ctx, src, dst, st, pos, max(30*time.Second, 10*opt.CutoverTimeout))
	if err != nil {
		return err
	}
	if lag >= 0 {
		job.Note(ctx, "verification while streaming skipped: the destination was still %s behind after %s; the cutover verifies every table", mb(lag), time.Since(start).Round(time.Second))
		st.Verified = map[string]postgres.Verified{}
		return job.PutRecord(ctx, recordStream, st)
	}
	dstSums, err := dst.Checksums(ctx, st.Database, st.Tables, nil)
	if err != nil {
		return err
	}
	after, err := src.TableCounters(ctx, st.Database)
	if err != nil {
		return err
	}
	st.Verified = map[string]postgres.Verified{}
	var bytesRows int64
	for i, t := range st.Tables {
		if srcSums[i] == dstSums[i] && before[t] != "" && before[t] == after[t] {
			st.Verified[t] = postgres.Verified{Rows: srcSums[i].Rows, Checksum: srcSums[i].Checksum, Counters: before[t]}
			bytesRows += srcSums[i].Rows
		}
	}
	if err := job.PutRecord(ctx, recordStream, st); err != nil {
		return err
	}
	job.Note(ctx, "verified while streaming: %d of %d tables (%d rows) equal at both servers in %s; the cutover checks again only tables that change from now on",
		len(st.Verified), len(st.Tables), bytesRows, time.Since(start).Round(time.Millisecond))
	return nil
}

// Abandon removes the stream and the destination's copy when the row fails
// after its attempts were used up by transient failures: a failed row must
// not keep a slot holding WAL at its source. What cannot be reached now
// stays recorded, for a rollback, a retry or gc.
func (h *pgSync) Abandon(ctx context.Context, job *agent.Job) error {
	uctx, cancel := undoContext(ctx)
	defer cancel()
	dst, err := h.c.local(uctx, job.Log)
	if err != nil {
		dst = nil
	}
	src, perr := h.c.peer(uctx, job, job.Row.Source)
	if perr != nil {
		src = nil
	}
	defer func() {
		if dst != nil {
			_ = dst.Close()
		}
		if src != nil {
			_ = src.Close()
		}
	}()
	if terr := h.c.teardown(uctx, job, src, dst); terr != nil {
		return terr
	}
	if dst == nil {
		return err
	}
	return dropPostgresImport(uctx, job, dst, "the abandoned sync")
}

// followPatience is how long the sync step keeps trying to read a stream's
// state before the failure counts as an attempt.
const followPatience = 2 * time.Minute

// sleepTick waits for the next tick; false when ctx ended.
func sleepTick(ctx context.Context, t *time.Ticker) bool {
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Recover has nothing to undo: the stream runs in the servers and the next
// attempt resumes it.
func (h *pgSync) Recover(context.Context, *agent.Job) error { return nil }

// teardown removes the row's recorded stream: the subscription at the
// destination, then the slot and the publication at the source; then the
// record says nothing is left. Either server may be nil (unreachable): the
// record then stays for whoever comes next.
func (c *Postgres) teardown(ctx context.Context, job *agent.Job, src, dst *postgres.Server) error {
	var st postgres.Stream
	ok, err := job.GetRecord(ctx, recordStream, &st)
	if err != nil || !ok || st.Name == "" {
		return err
	}
	if err := removeStream(ctx, job, src, dst, &st); err != nil {
		return err
	}
	// What was verified stays: the close compares its dump with it.
	if err := job.PutRecord(ctx, recordStream, postgres.Stream{Verified: st.Verified}); err != nil {
		return err
	}
	job.Note(ctx, "stream removed: subscription %s at %s, slot and publication at %s", st.Name, job.Row.Destination, job.Row.Source)
	return nil
}

// removeStream drops st's subscription at the destination, then its slot
// and publication at the source (each idempotent); the caller updates the
// record.
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

// pgCutover is the cutover step at the source: block writes as the dump
// step does, record the position, wait (at most CutoverTimeout) until the
// destination has applied it, stop the stream, set the sequences, verify
// both sides, remove the stream. A catch-up that times out restores
// writes and sends the row back to syncing; any other failure restores
// writes and removes the stream and the destination's copy (a retry
// syncs again).
type pgCutover struct{ c *Postgres }

func (h *pgCutover) Run(ctx context.Context, job *agent.Job) (statemachine.Fields, error) {
	row := &job.Row
	var st postgres.Stream
	if _, err := job.GetRecord(ctx, recordStream, &st); err != nil {
		return statemachine.Fields{}, err
	}
	src, err := h.c.local(ctx, job.Log)
	if err != nil {
		return statemachine.Fields{}, err
	}
	defer func() { _ = src.Close() }()
	if err := unblockRecorded(ctx, job, src.Unblock); err != nil {
		return statemachine.Fields{}, err
	}
	dst, err := h.c.peer(ctx, job, row.Destination)
	if err != nil {
		return statemachine.Fields{}, fmt.Errorf("reach the destination to cut over: %w", err)
	}
	defer func() { _ = dst.Close() }()
	if st.Name == "" {
		job.Note(ctx, "no stream recorded (removed after an earlier failure): back to syncing from the start")
		return statemachine.Fields{Divert: true}, nil
	}
	sub, err := dst.SubscriptionOf(ctx, st.Database, st.Name)
	if err != nil {
		return statemachine.Fields{}, err
	}
	if !sub.Exists {
		job.Note(ctx, "subscription %s is gone at %s: back to syncing from the start", st.Name, row.Destination)
		return statemachine.Fields{Divert: true}, nil
	}
	if !sub.Enabled { // an interrupted cutover stopped it
		if err := dst.EnableSubscription(ctx, st.Database, st.Name); err != nil {
			return statemachine.Fields{}, err
		}
		job.Note(ctx, "back to syncing: the stream was stopped by an interrupted cutover and is running again")
		return statemachine.Fields{Divert: true}, nil
	}
	s, err := src.Inspect(ctx, row.DatabaseName)
	if err != nil {
		return statemachine.Fields{}, h.failed(ctx, job, src, dst, permanent(err))
	}
	access, err := src.PlanBlock(ctx, s)
	if err != nil {
		return statemachine.Fields{}, permanent(err)
	}
	rec := blockRecord[postgres.Access]{Blocked: true, Access: access}
	if err := job.PutRecord(ctx, recordBlock, rec); err != nil {
		return statemachine.Fields{}, err
	}
	if err := job.Record(ctx, statemachine.Fields{Marks: []statemachine.Mark{statemachine.MarkBlocked}},
		fmt.Sprintf("cutover: blocking writes to %q (%s lose CONNECT, owner %q replaced by %q%s)", s.Database, describeRevoked(access.Revoked()), access.Owner, access.Admin, warningsSuffix(access.Warnings))); err != nil {
		return statemachine.Fields{}, err
	}
	f, timedOut, err := h.blocked(ctx, job, src, dst, s, access, &st)
	if err == nil && timedOut == "" {
		return f, nil
	}
	uctx, cancel := undoContext(ctx)
	defer cancel()
	if uerr := unblock(uctx, job, src.Unblock, rec); uerr != nil {
		job.Log.Error("writes NOT restored after the cutover stopped: the next attempt, a rollback or recovery restores them", "err", uerr)
		return statemachine.Fields{}, errors.Join(err, uerr)
	}
	if timedOut != "" {
		if err == nil {
			job.Note(ctx, "%s", timedOut)
		}
		return f, err
	}
	return statemachine.Fields{}, h.failed(ctx, job, src, dst, err)
}

// failed removes the stream and the destination's copy after a cutover
// failed for good (writes are restored by then).
func (h *pgCutover) failed(ctx context.Context, job *agent.Job, src, dst *postgres.Server, err error) error {
	if err == nil || ctx.Err() != nil || !(agent.IsPermanent(err) || errors.Is(err, engine.ErrPermanent)) {
		return err
	}
	uctx, cancel := undoContext(ctx)
	defer cancel()
	if terr := h.c.teardown(uctx, job, src, dst); terr != nil {
		return errors.Join(permanent(err), terr)
	}
	if derr := dropPostgresImport(uctx, job, dst, "the failed cutover"); derr != nil {
		return errors.Join(permanent(err), derr)
	}
	return permanent(err)
}

// blocked is the cutover under the block. timedOut, when not empty, says
// the destination did not catch up in time (writes must be restored, then
// the note written; f sends the row back to syncing, or err fails it when
// the attempts are used up).
func (h *pgCutover) blocked(ctx context.Context, job *agent.Job, src, dst *postgres.Server, s *postgres.Source, access *postgres.Access, st *postgres.Stream) (f statemachine.Fields, timedOut string, err error) {
	opt := h.c.Online.withDefaults()
	start := time.Now()
	ended, err := src.Block(ctx, access)
	if err != nil {
		return f, "", err
	}
	change, err := src.SchemaChange(ctx, st)
	if err != nil {
		return f, "", err
	}
	if change != "" {
		return f, "", agent.Permanentf("cutover refused: %s. Writes were restored and the stream removed; retry to sync again from the start, or roll back and plan the database as dump", change)
	}
	pos, err := src.Position(ctx, s.Database)
	if err != nil {
		return f, "", err
	}
	lag, err := waitApplied(ctx, src, dst, st, pos, opt.CutoverTimeout)
	if err != nil {
		return f, "", err
	}
	if lag >= 0 {
		st.CutoverAttempts++
		st.LastLagBytes = lag
		if perr := job.PutRecord(ctx, recordStream, st); perr != nil {
			return f, "catch-up timed out", perr
		}
		if st.CutoverAttempts >= opt.CutoverAttempts {
			return f, "catch-up timed out", agent.Permanentf("cutover failed: the destination did not catch up within %s in %d attempts (last lag %s behind %s); writes were restored at the source. "+
				"Look at the destination's load and the stream (docs/online.md), then retry, or roll back", opt.CutoverTimeout, st.CutoverAttempts, mb(lag), pos)
		}
		note := fmt.Sprintf("catch-up timed out after %s (still %s behind position %s): writes restored, back to syncing (cutover attempt %d of %d)",
			opt.CutoverTimeout, mb(lag), pos, st.CutoverAttempts, opt.CutoverAttempts)
		return statemachine.Fields{Divert: true}, note, nil
	}
	caught := time.Since(start)
	phase := time.Now()
	if err := dst.StopSubscription(ctx, st.Database, st.Name); err != nil {
		return f, "", err
	}
	stopped := time.Since(phase)
	// Nothing more reaches the destination: the stream is removed while
	// the sequences are set and the tables verified (the record keeps its
	// name until both are done, so an interruption removes it again).
	removed := make(chan error, 1)
	var removal time.Duration
	go func() {
		t0 := time.Now()
		err := removeStream(ctx, job, src, dst, st)
		removal = time.Since(t0)
		removed <- err
	}()
	phase = time.Now()
	nseqs, recheck, man, err := verifyCutover(ctx, src, dst, s, job.Row.Source, st)
	verifying := time.Since(phase)
	if rerr := <-removed; err == nil {
		err = rerr
	}
	if err != nil {
		return f, "", err
	}
	// What was verified stays: the close compares its dump with it.
	if err := job.PutRecord(ctx, recordStream, postgres.Stream{Verified: st.Verified}); err != nil {
		return f, "", err
	}
	job.Note(ctx, "cut over in %s under the block: %d sessions ended and position %s applied at the destination in %s; stream stopped in %s; "+
		"%d sequences set, %d tables verified now (row counts and checksums at both servers at once), %d unchanged since verified while streaming, %d objects, %d roles, in %s; "+
		"stream removed meanwhile in %s (subscription %s at %s, slot and publication at %s)",
		time.Since(start).Round(time.Millisecond), ended, pos, caught.Round(time.Millisecond), stopped.Round(time.Millisecond),
		nseqs, len(man.Tables), len(s.Tables)-len(recheck), len(man.Objects), len(man.Users), verifying.Round(time.Millisecond),
		removal.Round(time.Millisecond), st.Name, job.Row.Destination, job.Row.Source)
	return statemachine.Fields{}, "", nil
}

// verifyCutover sets the destination's sequences from the source's (logical
// replication does not carry them), then checks under the block the
// tables whose change counters moved since they were verified while
// streaming (or that were not), at both servers at once, with the
// objects, sequences and roles; it records them in st.Verified.
func verifyCutover(ctx context.Context, src, dst *postgres.Server, s *postgres.Source, source string, st *postgres.Stream) (nseqs int, recheck []string, man *engine.Manifest, err error) {
	seqs, err := src.SequenceValues(ctx, s.Database)
	if err != nil {
		return 0, nil, nil, err
	}
	if err := dst.SetSequences(ctx, s.Database, seqs); err != nil {
		return 0, nil, nil, err
	}
	// Tables verified while streaming whose counters have not moved since
	// are as verified; every other one is read at both servers now.
	counters, err := src.TableCounters(ctx, s.Database)
	if err != nil {
		return 0, nil, nil, err
	}
	recheck = []string{}
	for _, t := range s.Tables {
		if v, ok := st.Verified[t]; !ok || counters[t] != v.Counters {
			recheck = append(recheck, t)
		}
	}
	var dstSums []engine.TableSum
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		var err error
		man, err = src.VerifyManifest(gctx, s, source, recheck, nil)
		return err
	})
	g.Go(func() error {
		var err error
		dstSums, err = dst.Checksums(gctx, s.Database, recheck, nil)
		return err
	})
	if err := g.Wait(); err != nil {
		return 0, nil, nil, err
	}
	if err := dst.VerifySums(ctx, man, dstSums); err != nil {
		return 0, nil, nil, err
	}
	if st.Verified == nil {
		st.Verified = map[string]postgres.Verified{}
	}
	for _, t := range man.Tables {
		st.Verified[t.Name] = postgres.Verified{Rows: t.Rows, Checksum: t.Checksum, Counters: counters[t.Name]}
	}
	return len(seqs), recheck, man, nil
}

// waitApplied waits until the destination has applied the source's WAL up
// to pos: the slot's confirmed position, or the apply worker's received
// one (it applies in order, so receiving past pos means everything before
// it was applied). It returns -1 when it has, or the bytes still missing
// when timeout passed.
func waitApplied(ctx context.Context, src, dst *postgres.Server, st *postgres.Stream, pos string, timeout time.Duration) (int64, error) {
	name := st.Name
	want, err := parseLSN(pos)
	if err != nil {
		return 0, err
	}
	deadline := time.Now().Add(timeout)
	var behind int64
	for {
		slot, ok, err := src.SlotOf(ctx, name)
		if err != nil {
			return 0, err
		}
		if !ok {
			return 0, agent.Permanentf("replication slot %s is gone at the source during the cutover", name)
		}
		if c, err := parseLSN(slot.Confirmed); err == nil {
			if c >= want {
				return -1, nil
			}
			behind = int64(want - c)
		}
		sub, err := dst.SubscriptionOf(ctx, st.Database, name)
		if err != nil {
			return 0, err
		}
		if r, err := parseLSN(sub.Received); err == nil && r >= want {
			return -1, nil
		}
		if time.Now().After(deadline) {
			return behind, nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// parseLSN reads a PostgreSQL LSN ("16/B374D848").
func parseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("not an LSN: %q", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("not an LSN: %q", s)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("not an LSN: %q", s)
	}
	return h<<32 | l, nil
}

// Recover restores writes if the dead run left them blocked, as the dump
// step's recovery does; the stream stays (the next attempt finds it,
// re-enabling it if it was stopped).
func (h *pgCutover) Recover(ctx context.Context, job *agent.Job) error {
	return (&pgDump{h.c}).Recover(ctx, job)
}
