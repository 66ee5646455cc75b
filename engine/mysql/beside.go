package mysql

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/fleetmigrate/fleetmigrate/engine"
)

// BesideImport is the import of a dump that is read while the dump tool
// writes it (the dump step's pull: the destination takes the source's
// dump and stores it and imports it at once). It is the destination's
// side of Dump: an engine.PartWriter that loads each part as it comes —
// the schema part whole, the rows over Options.Jobs sessions, the
// triggers and events after them — each part loaded before the next one
// starts. Finish completes it with the dump's manifest, or abandons it
// when the dump failed. Nothing is committed that DropImport cannot undo:
// the record is written before anything is created.
type BesideImport struct {
	s       *Server
	ctx     context.Context
	db      string
	counted *atomic.Int64
	rec     ImportRecord

	pw   *io.PipeWriter
	done chan error
	err  error // the load's failure; every later Write returns it
}

// StartImportBeside checks this destination for src's database, creates
// the database and its accounts (recording them first, as Import does)
// and returns the import that takes the dump's bytes. notes say what was
// not checked.
func (s *Server) StartImportBeside(ctx context.Context, src *Source, source string, record func(ImportRecord) error, counted *atomic.Int64) (*BesideImport, []string, error) {
	m := src.Manifest(source, Position{}, nil)
	rec, notes, err := s.prepareImport(ctx, &m, src.Secrets(), record)
	if err != nil {
		return nil, nil, err
	}
	return &BesideImport{s: s, ctx: ctx, db: src.Database, counted: counted, rec: rec}, notes, nil
}

// StartPart ends the part being loaded (waiting for its load) and starts
// loading the next.
func (si *BesideImport) StartPart(name string) error {
	if si.err != nil {
		return si.err
	}
	if si.pw != nil && si.s.opt.Jobs < 2 {
		return nil // one session takes the parts in order as one script
	}
	if err := si.endPart(nil); err != nil {
		return err
	}
	pr, pw := io.Pipe()
	si.pw, si.done = pw, make(chan error, 1)
	go func() {
		err := si.loadPart(name, engine.CountReader(pr, si.counted))
		pr.CloseWithError(errImportStopped)
		si.done <- err
	}()
	return nil
}

var errImportStopped = errors.New("the import stopped reading")

func (si *BesideImport) loadPart(name string, r io.Reader) error {
	var err error
	switch {
	case si.s.opt.Jobs < 2 || name == partWhole:
		err = si.s.loadScript(si.ctx, si.db, r, dumpTrailer)
	case name == partData:
		err = si.s.loadData(si.ctx, si.db, r)
	case name == partPost:
		err = si.s.loadScript(si.ctx, si.db, r, dumpTrailer)
	default:
		err = si.s.loadScript(si.ctx, si.db, r, toolTrailer)
	}
	if err != nil {
		return fmt.Errorf("import into %q on %s (%s part, streamed): %w", si.db, si.s, name, si.s.diskFull(err))
	}
	return nil
}

// endPart closes the current part's stream (with cause, if the dump
// failed) and waits for its load.
func (si *BesideImport) endPart(cause error) error {
	if si.pw == nil {
		return si.err
	}
	if cause != nil {
		si.pw.CloseWithError(cause)
	} else {
		_ = si.pw.Close()
	}
	err := <-si.done
	si.pw = nil
	if err != nil && si.err == nil {
		si.err = err
	}
	return si.err
}

// Write hands the dump's bytes to the part being loaded.
func (si *BesideImport) Write(b []byte) (int, error) {
	if si.err != nil {
		return 0, si.err
	}
	if si.pw == nil {
		if err := si.StartPart(partWhole); err != nil {
			return 0, err
		}
	}
	n, err := si.pw.Write(b)
	if err != nil {
		if err := si.endPart(nil); err != nil {
			return n, err
		}
		si.err = engine.Permanentf("import into %q on %s: the load ended before the dump did", si.db, si.s)
		return n, si.err
	}
	return n, nil
}

// Finish ends the import. dumpErr is the dump's failure: the load is
// abandoned (the caller drops what the record says). Otherwise the last
// part's load completes and the grants and events of m, the dump's
// manifest, are applied. It does not verify (Verify does).
func (si *BesideImport) Finish(m *engine.Manifest, dumpErr error) error {
	if dumpErr != nil {
		_ = si.endPart(dumpErr)
		return dumpErr
	}
	if err := si.endPart(nil); err != nil {
		return err
	}
	if err := si.s.Grant(si.ctx, si.rec.Granted); err != nil {
		return err
	}
	return si.s.EnableEvents(si.ctx, m.Database, m.Events)
}
