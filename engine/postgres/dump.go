package postgres

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/fleetmigrate/fleetmigrate/engine"
)

// ChecksumAlgorithm names how TableSums are computed: per table, count(*)
// and the exact sum, as signed 64-bit integers, of the first 16 hex digits
// of md5(ROW(t.*)::text) of every row (FROM ONLY: partitions on their
// own). Row order does not matter and memory stays bounded on both sides;
// a changed, missing, extra or duplicated row changes the sum. Large
// objects are one entry: their count and the same sum over their pages
// (oid, page number, bytes).
const ChecksumAlgorithm = "pg-rowmd5-sum-v1"

// largeObjects is the TableSum name of the large objects.
const largeObjects = "large objects"

// Snapshot is an exported snapshot of the source database, held open by
// its session until Close: pg_dump and the checksums both read exactly it.
type Snapshot struct {
	// ID is pg_export_snapshot().
	ID string
	// At is the server's clock and LSN its WAL position at the snapshot.
	At  time.Time
	LSN string

	tx      pgx.Tx
	release func()
}

// Snapshot opens a repeatable-read transaction on database and exports
// its snapshot: the consistency point of the dump. Its session is one of
// those kept to database (the one Inspect used, when it is still there):
// a tiny database costs the server as many backends as it has sessions.
func (s *Server) Snapshot(ctx context.Context, database string) (*Snapshot, error) {
	p, err := s.dbPool(ctx, database)
	if err != nil {
		return nil, err
	}
	pc, err := p.Acquire(ctx)
	if err != nil {
		if sqlState(err) == "3D000" {
			return nil, engine.Permanentf("database %q does not exist on %s", database, s)
		}
		return nil, s.connectError(err)
	}
	sn := &Snapshot{release: pc.Release}
	sn.tx, err = pc.Conn().BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err == nil {
		err = sn.tx.QueryRow(ctx, `SELECT pg_export_snapshot(), clock_timestamp(),
			(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text`).Scan(&sn.ID, &sn.At, &sn.LSN)
	}
	if err != nil {
		if sn.tx != nil {
			_ = sn.tx.Rollback(context.WithoutCancel(ctx))
		}
		pc.Release()
		return nil, fmt.Errorf("export a snapshot of %q on %s: %w", database, s, err)
	}
	sn.At = sn.At.UTC()
	return sn, nil
}

// Close ends the snapshot's transaction and gives its session back.
func (sn *Snapshot) Close(ctx context.Context) {
	_ = sn.tx.Rollback(context.WithoutCancel(ctx))
	sn.release()
}

// DumpStats describe a finished dump.
type DumpStats struct {
	Bytes       int64
	ToolVersion string
	Duration    time.Duration
}

// Dump writes src's database as of snap to w with pg_dump (custom format,
// uncompressed: the store compresses; pg_restore can restore it in
// parallel and reports a cut-off archive) while it computes the tables'
// checksums in the same snapshot, and describes the dump. source names
// the source host in the manifest.
func (s *Server) Dump(ctx context.Context, src *Source, snap *Snapshot, source string, w io.Writer, p *engine.Progress) (*engine.Manifest, engine.Secrets, DumpStats, error) {
	var stats DumpStats
	tool, version, err := s.tool(ctx, "pg_dump", s.Major())
	if err != nil {
		return nil, engine.Secrets{}, stats, err
	}
	stats.ToolVersion = version
	seqs, err := readSequences(ctx, snap.tx)
	if err != nil {
		return nil, engine.Secrets{}, stats, err
	}
	// Writes are blocked and the snapshot taken: from here on, a mark that
	// moves is a write that is not in the dump.
	marks, err := readMarks(ctx, snap.tx)
	if err != nil {
		return nil, engine.Secrets{}, stats, err
	}
	var sums []engine.TableSum
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		var err error
		if src.SizeBytes > 0 && src.SizeBytes < smallDatabase {
			// One session is enough: the snapshot's own, idle meanwhile.
			sums, err = checksumsIn(gctx, snap.tx, withLargeObjects(src.Tables), p.TableFunc())
		} else {
			sums, err = s.checksums(gctx, src.Database, snap.ID, src.Tables, true, src.SizeBytes, p.TableFunc())
		}
		return err
	})
	g.Go(func() error {
		cw := engine.CountWriter(w, p.ByteCounter())
		start := cw.N.Load()
		args := []string{"--format=custom", "--compress=0", "--snapshot=" + snap.ID, "--no-password",
			"--lock-wait-timeout=300000", "--dbname=" + s.conninfo(src.Database)}
		err := s.run(gctx, tool, args, cw, nil)
		stats.Bytes = cw.N.Load() - start
		if err != nil {
			return fmt.Errorf("pg_dump of %q: %w", src.Database, err)
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return nil, engine.Secrets{}, stats, err
	}
	stats.Duration = time.Since(start)
	m := src.Manifest(source, snap, sums, seqs)
	m.ServerVersion, m.ServerFamily, m.DumpTool = s.version, "postgresql", version
	m.Marks = marks
	return &m, src.Secrets, stats, nil
}

// PullManifest is the manifest of src's dump as of snap as far as it is
// known before the dump runs: enough for ImportStreamed to prepare the
// destination and choose its pg_restore. Dump returns the whole one.
func (s *Server) PullManifest(ctx context.Context, src *Source, snap *Snapshot, source string) (*engine.Manifest, error) {
	_, version, err := s.tool(ctx, "pg_dump", s.Major())
	if err != nil {
		return nil, err
	}
	m := src.Manifest(source, snap, nil, nil)
	m.ServerVersion, m.ServerFamily, m.DumpTool = s.version, "postgresql", version
	return &m, nil
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// readSequences reads every sequence's last value.
func readSequences(ctx context.Context, q querier) ([]engine.Sequence, error) {
	rows, err := q.Query(ctx, `SELECT schemaname, sequencename, coalesce(last_value::text, '') FROM pg_sequences ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("read sequences: %w", err)
	}
	var out []engine.Sequence
	var nsp, name, last string
	if _, err := pgx.ForEachRow(rows, []any{&nsp, &name, &last}, func() error {
		out = append(out, engine.Sequence{Name: qi(nsp) + "." + qi(name), LastValue: last})
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read sequences: %w", err)
	}
	return out, nil
}

// checksumSQL computes a table's TableSum (ChecksumAlgorithm); table is
// quoted.
func checksumSQL(table string) string {
	return `SELECT count(*), coalesce(sum(('x' || substr(md5(ROW(fm_row.*)::text), 1, 16))::bit(64)::bigint), 0)::text FROM ONLY ` + table + ` AS fm_row`
}

const largeObjectsSQL = `SELECT (SELECT count(*) FROM pg_largeobject_metadata),
	coalesce(sum(('x' || substr(md5(convert_to(loid::text || ':' || pageno::text || ':', 'UTF8') || data), 1, 16))::bit(64)::bigint), 0)::text
	FROM pg_largeobject`

// smallDatabase is the size below which a database's checksums take one
// session: every session is a backend started in that database (a fork
// and its catalogue loaded), which costs a tiny database more than its
// tables do.
const smallDatabase = 64 << 20

// checksums computes the TableSums of tables (and of the large objects)
// with up to Jobs sessions (one for a database of size below
// smallDatabase; 0: size unknown), each in a repeatable-read transaction
// that imports snapshot when one is given. progress, if not nil, is told
// after each table.
func (s *Server) checksums(ctx context.Context, database, snapshot string, tables []string, withLOs bool, size int64, progress func(done, total int)) ([]engine.TableSum, error) {
	names := tables
	if withLOs {
		names = withLargeObjects(tables)
	}
	sums := make([]engine.TableSum, len(names))
	next := make(chan int)
	var done atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(next)
		for i := range names {
			select {
			case next <- i:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	workers := min(s.opt.Jobs, max(len(names), 1))
	if size > 0 && size < smallDatabase {
		workers = 1
	}
	for range workers {
		g.Go(func() error {
			p, err := s.dbPool(gctx, database)
			if err != nil {
				return err
			}
			pc, err := p.Acquire(gctx)
			if err != nil {
				if sqlState(err) == "3D000" {
					return engine.Permanentf("database %q does not exist on %s", database, s)
				}
				return s.connectError(err)
			}
			defer pc.Release()
			tx, err := pc.Conn().BeginTx(gctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
			if err != nil {
				return fmt.Errorf("checksums of %q: %w", database, err)
			}
			defer func() { _ = tx.Rollback(context.WithoutCancel(gctx)) }()
			if snapshot != "" {
				if _, err := tx.Exec(gctx, "SET TRANSACTION SNAPSHOT "+ql(snapshot)); err != nil {
					return fmt.Errorf("checksums of %q: import the dump's snapshot: %w", database, err)
				}
			}
			for i := range next {
				var err error
				if sums[i], err = checksumOf(gctx, tx, names[i]); err != nil {
					return err
				}
				if progress != nil {
					progress(int(done.Add(1)), len(names))
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return sums, nil
}

// withLargeObjects is tables and the large objects' entry.
func withLargeObjects(tables []string) []string {
	return append(append([]string(nil), tables...), largeObjects)
}

// checksumOf computes one TableSum (a table's, or the large objects') in
// tx.
func checksumOf(ctx context.Context, tx pgx.Tx, name string) (engine.TableSum, error) {
	q := largeObjectsSQL
	if name != largeObjects {
		q = checksumSQL(name)
	}
	t := engine.TableSum{Name: name}
	if err := tx.QueryRow(ctx, q).Scan(&t.Rows, &t.Checksum); err != nil {
		return t, fmt.Errorf("checksum of %s: %w", name, err)
	}
	return t, nil
}

// checksumsIn computes the TableSums of names one after another in tx (a
// small database's, in the dump's snapshot). progress, if not nil, is told
// after each.
func checksumsIn(ctx context.Context, tx pgx.Tx, names []string, progress func(done, total int)) ([]engine.TableSum, error) {
	sums := make([]engine.TableSum, len(names))
	for i, name := range names {
		var err error
		if sums[i], err = checksumOf(ctx, tx, name); err != nil {
			return nil, err
		}
		if progress != nil {
			progress(i+1, len(names))
		}
	}
	return sums, nil
}
