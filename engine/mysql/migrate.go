package mysql

import (
	"context"
	"errors"
	"fmt"
	"io"

	"golang.org/x/sync/errgroup"

	"github.com/fleetmigrate/fleetmigrate/engine"
)

// Progress receives how a dump, import or verification advances.
type Progress = engine.Progress

// Snapshot dumps src's database, whose writes are blocked, to w and
// describes the dump: its position pos (read by Position once writes were
// blocked), the tables' checksums (computed on the server while the dump
// streams) and the accounts that come with it, their password hashes apart
// (Secrets). source names the source host in the manifest.
func (s *Server) Snapshot(ctx context.Context, src *Source, source string, pos Position, w io.Writer, p *Progress) (*engine.Manifest, engine.Secrets, DumpStats, error) {
	var sums []engine.TableSum
	var stats DumpStats
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		var err error
		sums, err = s.Checksums(gctx, src.Database, src.Tables, p.TableFunc())
		return err
	})
	g.Go(func() error {
		var err error
		stats, err = s.Dump(gctx, src.Database, s.parallel(src.SizeBytes), w, p.ByteCounter())
		return err
	})
	if err := g.Wait(); err != nil {
		return nil, engine.Secrets{}, stats, err
	}
	m := src.Manifest(source, pos, sums)
	m.DumpTool = stats.ToolVersion
	m.DumpParts = stats.Parts
	return &m, src.Secrets(), stats, nil
}

// Import creates the database of manifest m at this destination, with its
// accounts, loads the dump from r into it and applies the grants and
// events. Before it creates anything it calls record with what it is about
// to create (and again if that changes), so that DropImport can undo
// exactly that after a failure or a crash; a record error stops it. It
// does not verify (Verify does). It returns notes on what was not checked.
func (s *Server) Import(ctx context.Context, m *engine.Manifest, sec engine.Secrets, r io.Reader, record func(ImportRecord) error, p *Progress) ([]string, error) {
	rec, notes, err := s.prepareImport(ctx, m, sec, record)
	if err != nil {
		return nil, err
	}
	if err := s.LoadDump(ctx, m, r, p.ByteCounter()); err != nil {
		return nil, s.diskFull(err)
	}
	if err := s.Grant(ctx, rec.Granted); err != nil {
		return nil, err
	}
	if err := s.EnableEvents(ctx, m.Database, m.Events); err != nil {
		return nil, err
	}
	return notes, nil
}

// prepareImport checks this destination for m and creates its database
// and accounts, recording what it creates first (record); it returns the
// record (with the grants to give once the rows are in) and notes on
// what was not checked.
func (s *Server) prepareImport(ctx context.Context, m *engine.Manifest, sec engine.Secrets, record func(ImportRecord) error) (ImportRecord, []string, error) {
	d, err := s.CheckDestination(ctx, IncomingFromManifest(m, sec))
	if err != nil {
		return ImportRecord{}, nil, err
	}
	rec := ImportRecord{Database: m.Database, CreatedDatabase: !d.ExistsEmpty, CreatedUsers: d.Create}
	if d.ExistsEmpty {
		rec.Charset, rec.Collation = d.Charset, d.Collation
	}
	for _, u := range m.Users {
		rec.Granted = append(rec.Granted, u.Grants...)
	}
	if err := record(rec); err != nil {
		return rec, nil, fmt.Errorf("record what the import creates: %w", err)
	}
	// forget takes out of the record what another party created meanwhile.
	forget := func(cause error, db bool, user engine.User) error {
		if db {
			rec.Database = ""
		} else {
			for i, u := range rec.CreatedUsers {
				if u.Name == user.Name && u.Host == user.Host {
					rec.CreatedUsers = append(rec.CreatedUsers[:i:i], rec.CreatedUsers[i+1:]...)
					break
				}
			}
		}
		if err := record(rec); err != nil {
			return errors.Join(cause, err)
		}
		return cause
	}
	if !d.ExistsEmpty {
		if err := s.CreateDatabase(ctx, m.Database, m.Charset, m.Collation); err != nil {
			if errors.Is(err, engine.ErrPermanent) {
				return rec, nil, forget(err, true, engine.User{})
			}
			return rec, nil, err
		}
	}
	for _, u := range d.Create {
		us, _ := sec.Secret(u.Name, u.Host)
		if err := s.CreateUser(ctx, us); err != nil {
			if errors.Is(err, engine.ErrPermanent) {
				return rec, nil, forget(err, false, u)
			}
			return rec, nil, err
		}
	}
	return rec, d.Notes, nil
}
