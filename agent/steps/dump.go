package steps

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/fleetmigrate/fleetmigrate/agent"
	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/storage"
)

// The dump path's steps, whatever the engine: dump (at the destination:
// block at the source, dump into the store and import beside it, verify),
// import (from the store), close (at the source, after the switch) and
// rollback. Each is written once, over the engine's driver.

// dumpStep is the dump step, run at the destination: check both sides,
// block writes at the source, dump from there into the store and import
// the same bytes here as they come (pull.go), verify. Any failure restores
// writes and drops what the import created before the row fails or is
// retried.
type dumpStep struct{ h *host }

func (d *dumpStep) Run(ctx context.Context, job *agent.Job) (f statemachine.Fields, err error) {
	h, row := d.h, &job.Row
	srv, err := h.peerServer(ctx, job, row.Source)
	if err != nil {
		return statemachine.Fields{}, err
	}
	ctx, stop := watchSource(ctx, job, srv.String(), h.HangTimeout, func(ctx context.Context) error { return h.d.Probe(ctx, srv) })
	defer func() { err = stop(err) }()
	src, err := h.peer(ctx, job, row.Source)
	if err != nil {
		return statemachine.Fields{}, err
	}
	defer closeConn(src)
	dst, err := h.local(ctx, job.Log)
	if err != nil {
		return statemachine.Fields{}, err
	}
	defer closeConn(dst)
	// A block left in force by an earlier attempt is undone first: this
	// attempt plans its own from the source as it is.
	if err := h.unblockRecorded(ctx, job, src); err != nil {
		return statemachine.Fields{}, err
	}
	if err := h.dropImport(ctx, job, dst, "an earlier attempt"); err != nil {
		return statemachine.Fields{}, err
	}
	s, err := src.Inspect(ctx, row.DatabaseName)
	if err != nil {
		return statemachine.Fields{}, permanent(err)
	}
	notes, err := dst.CheckDestination(ctx, src, s)
	if err != nil {
		return statemachine.Fields{}, permanent(err)
	}
	checked := fmt.Sprintf("destination %s %s ready%s", row.Destination, dst.Version(), notesSuffix(notes))
	// The source's own agent blocks it (peer.go): this agent only reads
	// the source. It plans the block first (outside the write-blocked
	// window); the record names the asks before the block is asked for,
	// so that whoever comes next can have it undone.
	rec := blockRecord{Blocked: true, Ref: newRef("dump", row.Fence)}
	plan, err := h.askPlanBlock(ctx, job, rec.Ref)
	if err != nil {
		return statemachine.Fields{}, permanent(err)
	}
	if err := job.PutRecord(ctx, recordBlock, rec); err != nil {
		return statemachine.Fields{}, err
	}
	info := s.Info()
	detail := fmt.Sprintf("blocking writes to %q at %s (%s, %d tables, %s; %s): asked its agent; %s", info.Database, row.Source, src.Version(), info.Tables, mb(info.SizeBytes), plan.Describe(), checked)
	if err := job.Record(ctx, statemachine.Fields{SizeBytes: info.SizeBytes, Marks: []statemachine.Mark{statemachine.MarkBlocked}}, detail); err != nil {
		return statemachine.Fields{}, err
	}
	importer := dst
	if h.StoreFirst {
		importer = nil
	}
	block := func(ctx context.Context) (string, int, error) {
		_, ended, err := h.askBlock(ctx, job, rec.Ref)
		if err != nil {
			return "", 0, err
		}
		return "writes blocked by the source's agent", ended, nil
	}
	f, err = h.blockAndDump(ctx, job, src, s, block, importer)
	if err != nil {
		// Writes come back first (the customer's downtime ends whatever
		// happens at the destination), then the import goes.
		uctx, cancel := undoContext(ctx)
		defer cancel()
		if uerr := h.unblock(uctx, job, src, rec); uerr != nil {
			job.Log.Error("writes NOT restored after the dump failed: the next attempt, a rollback or recovery restores them", "err", uerr)
			err = errors.Join(err, uerr)
		}
		if derr := h.dropImport(uctx, job, dst, "this attempt"); derr != nil {
			job.Log.Error("the import beside the failed dump was NOT dropped: the next attempt, a rollback or recovery drops it", "err", derr)
			err = errors.Join(err, derr)
		}
		return statemachine.Fields{}, permanent(err)
	}
	return f, nil
}

// blockLocally is blockAndDump's block of a source this agent runs on.
func blockLocally(src engine.Conn, access engine.Block) func(context.Context) (string, int, error) {
	return func(ctx context.Context) (string, int, error) {
		ended, err := src.Block(ctx, access)
		return "writes blocked", ended, err
	}
}

// blockAndDump blocks writes (block: at the source, or by asking its
// agent; it says what it did and how many sessions it ended) and dumps
// into the store and, when dst is not nil, into an import at dst beside
// it, then verifies that import
// (Fields.Divert: on to the DNS step). An import that fails beside a
// stored dump is dropped and the row goes to the import step, which takes
// the dump from the store.
func (h *host) blockAndDump(ctx context.Context, job *agent.Job, src engine.Conn, s engine.Source, block func(context.Context) (string, int, error), dst engine.Conn) (statemachine.Fields, error) {
	words, info := h.d.Words(), s.Info()
	what, ended, err := block(ctx)
	if err != nil {
		return statemachine.Fields{}, err
	}
	job.Note(ctx, "%s; %d sessions ended", what, ended)
	point, err := src.ConsistencyPoint(ctx, s)
	if err != nil {
		return statemachine.Fields{}, err
	}
	defer point.Close(ctx)
	ref := storage.DumpRef{Engine: string(h.engine), Source: job.Row.Source, Database: info.Database, ConsistencyPoint: point.At()}
	key := ref.DumpKey(words.DumpExt)
	rep := report(ctx, job, h.every(), func(b, done, total int64) string {
		return fmt.Sprintf("dumping: %s written, checksums of %d/%d tables", mb(b), done, total)
	})
	var side engine.ImportWriter
	var imported importProgress
	if dst != nil {
		side, imported.notes, err = dst.ImportBeside(ctx, src, s, point, job.Row.Source, recordImportOf(ctx, job), &engine.Progress{Bytes: &imported.bytes})
		if err != nil {
			rep.Stop()
			return statemachine.Fields{}, err
		}
	}
	var sec engine.Secrets
	res, man, importErr, err := dumpBeside(ctx, h.Store, key, h.Level, side, func(w io.Writer) (*engine.Manifest, error) {
		var man *engine.Manifest
		var err error
		man, sec, err = src.Dump(ctx, s, point, job.Row.Source, w, &engine.Progress{Bytes: &rep.bytes, Tables: rep.tables})
		return man, err
	})
	rep.Stop()
	if err != nil {
		return statemachine.Fields{}, fmt.Errorf("dump %q: %w", info.Database, err) // the store's errors name it
	}
	job.CountBytes("out", res.Size)
	man.DumpSHA256, man.DumpBytes = res.SHA256, res.Size
	if err := putJSON(ctx, h.Store, ref.SecretsKey(), sec, true); err != nil {
		return statemachine.Fields{}, err
	}
	if err := putJSON(ctx, h.Store, ref.ManifestKey(), man, false); err != nil {
		return statemachine.Fields{}, err
	}
	at := point.Describe()
	if at != "" {
		at = " " + at
	}
	job.Note(ctx, "dumped %q%s: %s of %s, %s stored, %d tables checksummed%s, %d %s",
		info.Database, at, mb(rep.bytes.Load()), words.Dump, mb(res.Size), len(man.Tables), sequencesNote(words, man), len(man.Users), words.Accounts)
	f := statemachine.Fields{
		SizeBytes:        info.SizeBytes,
		DumpURL:          h.Store.URL(key),
		DumpSHA256:       res.SHA256,
		DumpBytes:        res.Size,
		ConsistencyPoint: point.At(),
	}
	if dst == nil {
		return f, nil
	}
	if n, ok := side.(interface{ Notes() []string }); ok {
		imported.notes = append(imported.notes, n.Notes()...)
	}
	if importErr == nil {
		job.Note(ctx, "imported %q beside the dump: %s of %s%s; verifying %d tables", man.Database, mb(imported.bytes.Load()), words.Dump, notesSuffix(imported.notes), len(man.Tables))
	}
	return importedBeside(ctx, job, h.every(), f, importErr, func(tables func(int, int)) error { return dst.Verify(ctx, man, tables) },
		verifiedNote(words, man),
		func(ctx context.Context) error { return h.dropImport(ctx, job, dst, "the import beside the dump") })
}

// sequencesNote is ", 2 sequences" for an engine whose dumps carry them.
func sequencesNote(words engine.Words, man *engine.Manifest) string {
	if !words.Sequences {
		return ""
	}
	return fmt.Sprintf(", %d sequences", len(man.Sequences))
}

// verifiedNote is the note of an import verified against man.
func verifiedNote(words engine.Words, man *engine.Manifest) string {
	return fmt.Sprintf("verified %q: %d tables, row counts and checksums (%s) match the source's%s, %d objects, %d %s",
		man.Database, len(man.Tables), man.ChecksumAlgorithm, sequencesNote(words, man), len(man.Objects), len(man.Users), words.Accounts)
}

// Recover undoes what the dead run left: the block at the source (writes
// restored) and the import beside the dump (dropped), each whether or not
// the other's server answers.
func (d *dumpStep) Recover(ctx context.Context, job *agent.Job) error {
	h := d.h
	return errors.Join(h.restoreWrites(ctx, job, h.atSource(job)), h.dropImportAt(ctx, job, h.atDestination(job), "an interrupted attempt"))
}

// Abandon undoes what the last attempt could not when the row fails after
// its attempts were used up (a destination down through them all): writes
// restored at the source first, then the import beside the dump dropped,
// each waiting for its server within the undo window.
func (d *dumpStep) Abandon(ctx context.Context, job *agent.Job) error {
	h := d.h
	return errors.Join(
		undoPatiently(ctx, job, "restore writes at the source", func(ctx context.Context) error {
			return h.restoreWrites(ctx, job, h.atSource(job))
		}),
		undoPatiently(ctx, job, "drop the import beside the dump", func(ctx context.Context) error {
			return h.dropImportAt(ctx, job, h.atDestination(job), "the last attempt")
		}))
}

// importStep is the import step at the destination: drop what an earlier
// attempt left, import (recording what it creates first), verify against
// the manifest; on any failure drop what this attempt created.
type importStep struct{ h *host }

func (i *importStep) Run(ctx context.Context, job *agent.Job) (statemachine.Fields, error) {
	h, row := i.h, &job.Row
	objs, man, err := readManifest(ctx, h.Store, row)
	if err != nil {
		return statemachine.Fields{}, permanent(err)
	}
	var sec engine.Secrets
	if err := getJSON(ctx, h.Store, objs.Secrets, &sec); err != nil {
		return statemachine.Fields{}, permanent(err)
	}
	dst, err := h.local(ctx, job.Log)
	if err != nil {
		return statemachine.Fields{}, err
	}
	defer closeConn(dst)
	if err := h.dropImport(ctx, job, dst, "an earlier attempt"); err != nil {
		return statemachine.Fields{}, err
	}
	if err := i.load(ctx, job, dst, objs, man, sec); err != nil {
		uctx, cancel := undoContext(ctx)
		defer cancel()
		if derr := h.dropImport(uctx, job, dst, "this attempt"); derr != nil {
			job.Log.Error("the failed import was NOT dropped: the next attempt, a rollback or recovery drops it", "err", derr)
			err = errors.Join(err, derr)
		}
		return statemachine.Fields{}, permanent(err)
	}
	return statemachine.Fields{}, nil
}

func (i *importStep) load(ctx context.Context, job *agent.Job, dst engine.Conn, objs dumpObjects, man *engine.Manifest, sec engine.Secrets) error {
	h, words := i.h, i.h.d.Words()
	r, err := storage.OpenDump(ctx, h.Store, objs.Dump, job.Row.DumpSHA256)
	if err != nil {
		return fmt.Errorf("open the dump: %w", err)
	}
	defer r.Close()
	rep := report(ctx, job, h.every(), func(b, done, total int64) string {
		if total > 0 {
			return fmt.Sprintf("verifying: %d/%d tables", done, total)
		}
		return fmt.Sprintf("importing: %s of %s loaded", mb(b), words.Dump)
	})
	defer rep.Stop()
	notes, err := dst.Import(ctx, man, sec, r, recordImportOf(ctx, job), &engine.Progress{Bytes: &rep.bytes})
	if err != nil {
		return corruptOr(ctx, h.Store, objs, job.Row.DumpSHA256, man.Database, err)
	}
	job.CountBytes("in", job.Row.DumpBytes)
	job.Note(ctx, "imported %q: %s of %s%s; verifying %d tables", man.Database, mb(rep.bytes.Load()), words.Dump, notesSuffix(notes), len(man.Tables))
	if err := dst.Verify(ctx, man, rep.tables); err != nil {
		return err
	}
	job.Note(ctx, "%s", verifiedNote(words, man))
	return nil
}

// Recover drops the partial import of the dead run.
func (i *importStep) Recover(ctx context.Context, job *agent.Job) error {
	return i.h.dropImportAt(ctx, job, i.h.atDestination(job), "an interrupted attempt")
}

// Abandon drops what the last attempt could not when the row fails after
// its attempts were used up, waiting for the server within the undo window.
func (i *importStep) Abandon(ctx context.Context, job *agent.Job) error {
	return undoPatiently(ctx, job, "drop the failed import", func(ctx context.Context) error {
		return i.h.dropImportAt(ctx, job, i.h.atDestination(job), "the last attempt")
	})
}

// closeStep is the close step at the source, after DNS moved: re-check the
// source against the manifest, then take the customers' access to the old
// copy away and end their sessions. The data stays.
type closeStep struct{ h *host }

func (c *closeStep) Run(ctx context.Context, job *agent.Job) (statemachine.Fields, error) {
	h, row := c.h, &job.Row
	src, err := h.local(ctx, job.Log)
	if err != nil {
		return statemachine.Fields{}, err
	}
	defer closeConn(src)
	var dumped statemachine.Fields
	if row.Mode == statemachine.ModeOnline && row.DumpURL == "" {
		if dumped, err = c.online(ctx, job, src); err != nil {
			return statemachine.Fields{}, err
		}
		row.DumpURL, row.DumpSHA256, row.DumpBytes, row.ConsistencyPoint = dumped.DumpURL, dumped.DumpSHA256, dumped.DumpBytes, dumped.ConsistencyPoint
	}
	_, man, err := readManifest(ctx, h.Store, row)
	if err != nil {
		return statemachine.Fields{}, permanent(err)
	}
	if dumped.DumpURL == "" { // a dump just taken under the block needs no re-check
		// The source must still be what was dumped: the same check as the
		// import's verification, against the same manifest, of the tables
		// written since the dump.
		rep := report(ctx, job, h.every(), func(_, done, total int64) string {
			return fmt.Sprintf("re-checking the source: %d/%d tables", done, total)
		})
		err := recheck(ctx, job, man, h.FullRecheck, src.Verify, src.VerifySince, rep.tables)
		rep.Stop()
		if err != nil {
			return statemachine.Fields{}, err
		}
	}
	access, err := src.PlanClose(ctx, row.DatabaseName, man)
	if err != nil {
		return statemachine.Fields{}, permanent(err)
	}
	if err := job.PutRecord(ctx, recordClose, access); err != nil {
		return statemachine.Fields{}, err
	}
	ended, err := src.CloseAccess(ctx, access)
	if err != nil {
		return statemachine.Fields{}, permanent(err)
	}
	// The block is final now: nothing may restore it (a recovery or a
	// retry that undid it would let the customer write to the old copy).
	// Its plan stays recorded: a close retried after this point dumps the
	// source as it was before the block (cutoverBlock).
	if rec, ok, err := h.blockRecord(ctx, job); err != nil {
		return statemachine.Fields{}, err
	} else if ok && rec.Blocked {
		rec.Blocked = false
		if err := job.PutRecord(ctx, recordBlock, rec); err != nil {
			return statemachine.Fields{}, err
		}
	}
	job.Note(ctx, "source closed: %s, %d sessions ended; the data stays until the retention ends", access.DescribeClose(row.DatabaseName), ended)
	return dumped, nil
}

// online removes what is left of an online row's stream and takes the
// customer's consistency-point dump of the frozen source into the store,
// as the dump step of dump mode does (dump_url and download links then
// work the same), and compares it with what the destination was verified
// to have at the cutover; then it looks for writes after the cutover in
// the tables the cutover verified by rows.
func (c *closeStep) online(ctx context.Context, job *agent.Job, src engine.Conn) (statemachine.Fields, error) {
	h := c.h
	if err := h.teardownFromSource(ctx, job, src); err != nil {
		return statemachine.Fields{}, err
	}
	access, err := h.cutoverBlock(ctx, job)
	if err != nil {
		return statemachine.Fields{}, err
	}
	// Blocked, the database's accounts are the block's: the dump
	// describes it as it was before.
	s, err := src.InspectBlocked(ctx, job.Row.DatabaseName, access)
	if err != nil {
		return statemachine.Fields{}, permanent(err)
	}
	f, err := h.blockAndDump(ctx, job, src, s, blockLocally(src, access), nil)
	if err != nil {
		return f, err
	}
	verified, skip, err := h.streams.verifiedAtCut(ctx, job)
	if err != nil {
		return f, err
	}
	if err := verifiedAgainstDump(ctx, job, h.Store, f, verified, skip...); err != nil {
		return f, err
	}
	return f, h.streams.writtenSinceCut(ctx, job, src)
}

// Recover has nothing to undo: closing is final and runs again whole.
func (c *closeStep) Recover(context.Context, *agent.Job) error { return nil }

// rollbackStep is the rollback step at the source: restore writes, remove
// the stream and drop the destination's copy (only what the import
// created).
type rollbackStep struct{ h *host }

func (r *rollbackStep) Run(ctx context.Context, job *agent.Job) (statemachine.Fields, error) {
	h, row := r.h, &job.Row
	if err := switchedRefusal(row); err != nil {
		return statemachine.Fields{}, err
	}
	// Writes come back first: that ends the customer's downtime whatever
	// happens at the destination.
	src, err := h.local(ctx, job.Log)
	if err != nil {
		return statemachine.Fields{}, err
	}
	defer closeConn(src)
	if err := h.unblockRecorded(ctx, job, src); err != nil {
		return statemachine.Fields{}, err
	}
	imp, err := h.importRecord(ctx, job)
	if err != nil {
		return statemachine.Fields{}, err
	}
	streaming, err := h.streams.recorded(ctx, job)
	if err != nil {
		return statemachine.Fields{}, err
	}
	if imp == nil && !streaming {
		return statemachine.Fields{}, nil
	}
	// The destination's agent removes what is at its server, asked. The
	// stream first: it would write into the copy being dropped (a
	// PostgreSQL database with a subscription cannot be dropped).
	if err := h.teardownFromSource(ctx, job, src); err != nil {
		return statemachine.Fields{}, err
	}
	return statemachine.Fields{}, h.askDropCopy(ctx, job, "this migration")
}

// Recover has nothing to undo: rolling back runs again whole.
func (r *rollbackStep) Recover(context.Context, *agent.Job) error { return nil }
