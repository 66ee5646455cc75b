package steps

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/fleetmigrate/fleetmigrate/agent"
	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/storage"
)

// The dump step runs at the destination (docs/storage.md, "The streaming
// hand-off"): its agent claims a row only when it has a slot for it, blocks
// writes at the source, runs the dump tool against the source server and
// writes what the tool writes to the store (compressed, with its SHA-256)
// and, beside it, into the import at its own server. The store is written
// first and is never held back by the import: an import that fails stops
// taking bytes, the dump goes on into the store, and the row goes to the
// import step, which starts again from the stored dump. A dump that fails
// abandons the import (it reads the failure, not an end) and stores
// nothing; the step then drops what the import created and restores
// writes.

// tee writes a dump to the store and to the import beside it. After the
// import fails it writes to the store alone (failed says why).
type tee struct {
	store  io.Writer
	side   engine.ImportWriter
	failed error
}

func (t *tee) Write(b []byte) (int, error) {
	n, err := t.store.Write(b)
	if err != nil || t.failed != nil {
		return n, err
	}
	if _, err := t.side.Write(b); err != nil {
		t.failed = err
	}
	return n, nil
}

// StartPart tells the import where a part of the dump begins.
func (t *tee) StartPart(name string) error {
	if t.failed != nil {
		return nil
	}
	if pw, ok := t.side.(engine.PartWriter); ok {
		if err := pw.StartPart(name); err != nil {
			t.failed = err
		}
	}
	return nil
}

// dumpBeside stores the dump that dump writes at key and, when side is not
// nil, imports it at once. err is the dump's or the store's failure
// (nothing stored, the import abandoned); importErr, with err nil, is the
// import's failure beside a dump that is stored whole.
func dumpBeside(ctx context.Context, st storage.Store, key string, level zstd.EncoderLevel, side engine.ImportWriter,
	dump func(w io.Writer) (*engine.Manifest, error)) (res storage.PutResult, man *engine.Manifest, importErr, err error) {
	t := &tee{side: side}
	res, err = storage.PutCompressed(ctx, st, key, level, storage.PutOptions{ContentType: "application/zstd"}, func(w io.Writer) error {
		out := w
		if side != nil {
			t.store, out = w, t
		}
		var err error
		man, err = dump(out)
		return err
	})
	if side == nil {
		return res, man, nil, err
	}
	if err != nil {
		_ = side.Finish(nil, err)
		return res, nil, nil, err
	}
	return res, man, side.Finish(man, nil), nil
}

// watchSource puts the step under a second watchdog, of the source's
// server, which the dump step reaches over the network (the step's own
// watchdog probes its host's server). stop returns err, or why the
// watchdog cancelled the step.
func watchSource(ctx context.Context, job *agent.Job, server string, after time.Duration, probe func(context.Context) error) (context.Context, func(error) error) {
	if after <= 0 {
		return ctx, func(err error) error { return err }
	}
	ctx, hung := watchServer(ctx, job, server, after, probe)
	return ctx, func(err error) error {
		if cause := hung(); cause != nil && err != nil {
			return fmt.Errorf("%w; the step stopped with: %s", cause, err.Error())
		}
		return err
	}
}

// importProgress is what the import beside a dump reports.
type importProgress struct {
	bytes atomic.Int64
	notes []string
}

// importedBeside ends a dump step whose dump is stored whole (f). The
// import beside it, unless it failed (importErr), is verified (verify;
// verified is the note then) and the row goes on to the DNS step
// (Divert); otherwise what it created is dropped (drop) and the row goes
// to the import step, which takes the dump from the store.
func importedBeside(ctx context.Context, job *agent.Job, every time.Duration, f statemachine.Fields, importErr error,
	verify func(tables func(done, total int)) error, verified string, drop func(context.Context) error) (statemachine.Fields, error) {
	if importErr == nil {
		rep := report(ctx, job, every, func(_, done, total int64) string { return fmt.Sprintf("verifying: %d/%d tables", done, total) })
		importErr = verify(rep.tables)
		rep.Stop()
	}
	if importErr != nil {
		return f, importBesideFailed(ctx, job, importErr, drop)
	}
	job.CountBytes("in", f.DumpBytes)
	job.Note(ctx, "%s", verified)
	f.Divert = true
	return f, nil
}

// importBesideFailed handles an import that failed beside a dump that is
// stored whole: what it created is dropped (drop), and the row goes on to
// the import step (the step returns no error, without Divert), which
// takes the dump from the store. A drop that fails fails the step
// instead: the next attempt, a rollback or recovery drops it.
func importBesideFailed(ctx context.Context, job *agent.Job, importErr error, drop func(context.Context) error) error {
	importErr = besideCause(ctx, importErr)
	job.Log.Warn("the import beside the dump failed; the import step takes it from the store", "err", importErr)
	uctx, cancel := undoContext(ctx)
	defer cancel()
	if err := drop(uctx); err != nil {
		return fmt.Errorf("the import beside the dump failed (%w) and was NOT dropped: %w", importErr, err)
	}
	// The step's context may be cancelled (the watchdog of this host's
	// server fired during the verification): the note is written anyway.
	job.Note(uctx, "the import beside the dump failed: %v; the dump is stored whole: the import step takes it from the store", importErr)
	return nil
}

// besideCause says why the import beside a dump failed: when the step's
// context was cancelled with a cause (the watchdog: "the … server has not
// answered for …"), the import's own error is only its consequence
// ("context canceled"), so the cause leads.
func besideCause(ctx context.Context, importErr error) error {
	cause := context.Cause(ctx)
	// identity, not errors.Is: a context cancelled without a cause gives
	// ctx.Err() itself, and a watchdog's cause may wrap a probe's deadline
	if cause == nil || cause == ctx.Err() || errors.Is(importErr, cause) { //nolint:errorlint // see above
		return importErr
	}
	return fmt.Errorf("%w; the import stopped with: %s", cause, importErr.Error())
}
