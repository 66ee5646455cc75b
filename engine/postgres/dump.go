package postgres

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math/big"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/fleetmigrate/fleetmigrate/engine"
)

// The checksum algorithms: a manifest names the one its TableSums were
// computed with, and its verification computes the same.
//
// ChecksumRowMD5: per table, count(*) and the exact sum, as signed 64-bit
// integers, of the first 16 hex digits of md5(ROW(t.*)::text) of every row
// (FROM ONLY: partitions on their own). Row order does not matter and
// memory stays bounded on both sides; a changed, missing, extra or
// duplicated row changes the sum. Large objects are one entry: their count
// and the same sum over their pages (oid, page number, bytes).
//
// ChecksumRowHash64: the same with hashtextextended(ROW(t.*)::text, 0),
// PostgreSQL's own 64-bit hash of text (the one hash partitioning uses),
// instead of md5: about half the CPU per row (measured: 0.92 against
// 2.03 s for 2 million rows). Its values depend on the server's byte
// order, so a dump uses it only when both servers hash a probe string to
// the same value (ChooseChecksum); large objects are summed as in
// ChecksumRowMD5.
const (
	ChecksumRowMD5    = "pg-rowmd5-sum-v1"
	ChecksumRowHash64 = "pg-rowhash64-sum-v2"
)

// hashProbe and hashProbeWant: hashtextextended(hashProbe, 0) on a
// little-endian server (x86-64, arm64), where every server a fleet is
// likely to have hashes alike.
const (
	hashProbe     = "fleetmigrate checksum probe, ASCII only" // the same bytes in every server encoding
	hashProbeWant = int64(-7639261979010957029)
)

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
		return nil, s.sessionError(database, err)
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
		if src.SizeBytes > 0 && src.SizeBytes < s.opt.ChecksumSplit {
			// One session is enough: the snapshot's own, idle meanwhile.
			sums, err = checksumsIn(gctx, snap.tx, withLargeObjects(src.Tables), src.checksumOrDefault(), p.TableFunc())
		} else {
			sums, err = s.checksums(gctx, src.Database, snap.ID, src.Tables, true, src.SizeBytes, src.checksumOrDefault(), p.TableFunc())
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
// known before the dump runs: enough for ImportBeside to prepare the
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

// checksumSQL computes a table's TableSum with algo (a ChecksumRow*
// name); table is quoted. blocks, when not nil, limits it to the rows in
// that range of the table's blocks (a TID range scan, PostgreSQL 14 and
// later): sums over ranges that cover the table add up to the table's.
func checksumSQL(table, algo string, blocks *blockRange) string {
	row := `('x' || substr(md5(ROW(fm_row.*)::text), 1, 16))::bit(64)::bigint`
	if algo == ChecksumRowHash64 {
		row = `hashtextextended(ROW(fm_row.*)::text, 0)`
	}
	q := `SELECT count(*), coalesce(sum(` + row + `), 0)::text FROM ONLY ` + table + ` AS fm_row`
	if blocks != nil {
		var cond []string
		if blocks.from > 0 {
			cond = append(cond, fmt.Sprintf(`fm_row.ctid >= '(%d,0)'::tid`, blocks.from))
		}
		if blocks.to >= 0 {
			cond = append(cond, fmt.Sprintf(`fm_row.ctid < '(%d,0)'::tid`, blocks.to))
		}
		if len(cond) > 0 {
			q += ` WHERE ` + strings.Join(cond, ` AND `)
		}
	}
	return q
}

// blockRange is blocks [from, to) of a table; to < 0: to its end, blocks
// added while it is read included.
type blockRange struct{ from, to int64 }

// checksumAlgorithm checks that this server can compute algo (a manifest's;
// "" is a manifest's from before algorithms had names).
func (s *Server) checksumAlgorithm(ctx context.Context, algo string) (string, error) {
	switch algo {
	case "", ChecksumRowMD5:
		return ChecksumRowMD5, nil
	case ChecksumRowHash64:
		ok, err := s.hashesLikeOthers(ctx)
		if err != nil {
			return "", err
		}
		if !ok {
			return "", engine.Permanentf("%s cannot verify checksums of algorithm %s: its hashtextextended differs from the one the dump was checksummed with (another byte order, or a server without it: the server changed since the dump step probed it and chose this algorithm over %s); this dump cannot be verified here: roll the row back (migrate rollback --id N --execute)", s, algo, ChecksumRowMD5)
		}
		return algo, nil
	}
	return "", engine.Permanentf("unknown checksum algorithm %q (this agent knows %s and %s): a newer agent wrote this dump: upgrade this host's agent to the version of the agents that dumped it, then migrate retry --id N", algo, ChecksumRowMD5, ChecksumRowHash64)
}

// hashesLikeOthers says whether the server's hashtextextended gives the
// value a little-endian server gives for the probe string (a server
// before PostgreSQL 11, which has none, does not).
func (s *Server) hashesLikeOthers(ctx context.Context) (bool, error) {
	var got int64
	if err := s.pool.QueryRow(ctx, `SELECT hashtextextended($1, 0)`, hashProbe).Scan(&got); err != nil {
		if sqlState(err) == "42883" { // undefined_function
			return false, nil
		}
		return false, fmt.Errorf("probe the hash function of %s: %w", s, err)
	}
	return got == hashProbeWant, nil
}

// ChooseChecksum sets the algorithm src's dump (at this, the source's,
// server) computes its checksums with: ChecksumRowHash64 when this server
// and the destination's hash alike, else ChecksumRowMD5 — which a database
// below ChecksumSplit keeps without asking (its checksums cost less than
// the two probes). It returns the choice.
func (s *Server) ChooseChecksum(ctx context.Context, src *Source, destination *Server) (string, error) {
	src.checksum = ChecksumRowMD5
	if src.SizeBytes < s.opt.ChecksumSplit {
		return src.checksum, nil
	}
	for _, srv := range []*Server{s, destination} {
		ok, err := srv.hashesLikeOthers(ctx)
		if err != nil || !ok {
			return src.checksum, err
		}
	}
	src.checksum = ChecksumRowHash64
	return src.checksum, nil
}

// checksumOrDefault is the algorithm src's checksums are computed with.
func (src *Source) checksumOrDefault() string {
	if src.checksum == "" {
		return ChecksumRowMD5
	}
	return src.checksum
}

const largeObjectsSQL = `SELECT (SELECT count(*) FROM pg_largeobject_metadata),
	coalesce(sum(('x' || substr(md5(convert_to(loid::text || ':' || pageno::text || ':', 'UTF8') || data), 1, 16))::bit(64)::bigint), 0)::text
	FROM pg_largeobject`

// checksums computes the TableSums of tables (and of the large objects)
// with algo, over up to Jobs sessions (one for a database of size below
// ChecksumSplit: every session is a backend started in that database, a
// fork and its catalogue loaded, which costs a tiny database more than its
// tables do; 0: size unknown), each in a repeatable-read transaction
// that imports snapshot when one is given. With more than one session a
// large table is read in block ranges by several sessions at once (on
// PostgreSQL 14 and later), so one big table does not take one core
// alone. progress, if not nil, is told after each table.
func (s *Server) checksums(ctx context.Context, database, snapshot string, tables []string, withLOs bool, size int64, algo string, progress func(done, total int)) ([]engine.TableSum, error) {
	names := tables
	if withLOs {
		names = withLargeObjects(tables)
	}
	// A small database's tables are too small for several sessions or for
	// JIT to pay off.
	small := size > 0 && size < s.opt.ChecksumSplit
	workers := min(s.opt.Jobs, max(len(names), 1))
	if small {
		workers = 1
	}
	p, err := s.dbPool(ctx, database)
	if err != nil {
		return nil, err
	}
	parts := make([]sumPart, len(names))
	for i, n := range names {
		parts[i] = sumPart{table: i, name: n}
	}
	if workers > 1 && s.Major() >= 14 {
		if parts, err = s.splitTables(ctx, p, database, names, workers); err != nil {
			return nil, err
		}
	}
	results := make([]engine.TableSum, len(parts))
	next := make(chan int)
	left := make([]atomic.Int32, len(names))
	for _, pt := range parts {
		left[pt.table].Add(1)
	}
	var done atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(next)
		for i := range parts {
			select {
			case next <- i:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	for range min(workers, len(parts)) {
		g.Go(func() error {
			pc, err := p.Acquire(gctx)
			if err != nil {
				return s.sessionError(database, err)
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
			if !small {
				if err := s.checksumSettings(gctx, tx); err != nil {
					return fmt.Errorf("checksums of %q: %w", database, err)
				}
			}
			for i := range next {
				var err error
				if results[i], err = checksumPart(gctx, tx, parts[i], algo); err != nil {
					return err
				}
				if left[parts[i].table].Add(-1) == 0 && progress != nil {
					progress(int(done.Add(1)), len(names))
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return addParts(names, parts, results)
}

// sumPart is the checksum of a table (names[table]) or of a block range
// of it.
type sumPart struct {
	table  int
	name   string
	blocks *blockRange
}

// splitTables divides names into parts for workers sessions: a table of
// more than ChecksumSplit bytes into up to workers block ranges of about the same
// size, the rest whole; the largest parts first, so the big tables' ranges
// run side by side.
func (s *Server) splitTables(ctx context.Context, p *pgxpool.Pool, database string, names []string, workers int) ([]sumPart, error) {
	var tables []string
	for _, n := range names {
		if n != largeObjects {
			tables = append(tables, n)
		}
	}
	sizes := map[string]int64{}
	var blockSize int64
	rows, err := p.Query(ctx, `SELECT t, pg_relation_size(t::regclass), current_setting('block_size')::bigint FROM unnest($1::text[]) t`, tables)
	if err != nil {
		return nil, s.sessionError(database, err)
	}
	var name string
	var size int64
	if _, err := pgx.ForEachRow(rows, []any{&name, &size, &blockSize}, func() error {
		sizes[name] = size
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read the tables' sizes: %w", err)
	}
	type sized struct {
		part  sumPart
		bytes int64
	}
	var out []sized
	for i, n := range names {
		size := sizes[n]
		k := int64(min(workers, int(size/s.opt.ChecksumSplit)))
		if k < 2 || blockSize <= 0 {
			out = append(out, sized{sumPart{table: i, name: n}, size})
			continue
		}
		blocks := size / blockSize
		for j := range k {
			r := &blockRange{from: j * blocks / k, to: (j + 1) * blocks / k}
			if j == k-1 {
				r.to = -1
			}
			out = append(out, sized{sumPart{table: i, name: n, blocks: r}, size / k})
		}
	}
	slices.SortStableFunc(out, func(a, b sized) int { return cmp.Compare(b.bytes, a.bytes) })
	parts := make([]sumPart, len(out))
	for i, o := range out {
		parts[i] = o.part
	}
	return parts, nil
}

// addParts adds the parts' sums up to one TableSum per name.
func addParts(names []string, parts []sumPart, results []engine.TableSum) ([]engine.TableSum, error) {
	sums := make([]engine.TableSum, len(names))
	totals := make([]*big.Int, len(names))
	for i, pt := range parts {
		r := results[i]
		v, ok := new(big.Int).SetString(r.Checksum, 10)
		if !ok {
			return nil, fmt.Errorf("checksum of %s: %q is not a number", pt.name, r.Checksum)
		}
		if totals[pt.table] == nil {
			totals[pt.table] = new(big.Int)
		}
		totals[pt.table].Add(totals[pt.table], v)
		sums[pt.table].Name = names[pt.table]
		sums[pt.table].Rows += r.Rows
	}
	for i := range sums {
		if totals[i] != nil {
			sums[i].Checksum = totals[i].String()
		}
	}
	return sums, nil
}

// withLargeObjects is tables and the large objects' entry.
func withLargeObjects(tables []string) []string {
	return append(append([]string(nil), tables...), largeObjects)
}

// checksumSettings turns JIT compilation off for tx's checksum queries:
// their time is in record_out and the hash functions, which JIT does not
// speed up, while compiling costs every query above jit_above_cost
// (measured on PostgreSQL 15, 2 million rows: 1.29 s of CPU without JIT,
// 1.52 s with it; once inlining starts, for bigger tables, 0.8 s of
// compilation in a parallel query's three processes). Servers before 11
// have no JIT.
func (s *Server) checksumSettings(ctx context.Context, tx pgx.Tx) error {
	if s.num < 110000 {
		return nil
	}
	if _, err := tx.Exec(ctx, `SELECT set_config('jit', 'off', true)`); err != nil {
		return fmt.Errorf("turn JIT off for the checksums: %w", err)
	}
	return nil
}

// checksumPart computes the sum of a table (or the large objects) or of a
// block range of it in tx with algo.
func checksumPart(ctx context.Context, tx pgx.Tx, pt sumPart, algo string) (engine.TableSum, error) {
	q := largeObjectsSQL
	if pt.name != largeObjects {
		q = checksumSQL(pt.name, algo, pt.blocks)
	}
	t := engine.TableSum{Name: pt.name}
	if err := tx.QueryRow(ctx, q).Scan(&t.Rows, &t.Checksum); err != nil {
		return t, fmt.Errorf("checksum of %s: %w", pt.name, err)
	}
	return t, nil
}

// checksumsIn computes the TableSums of names one after another in tx (a
// small database's, in the dump's snapshot) with algo. progress, if not
// nil, is told after each.
func checksumsIn(ctx context.Context, tx pgx.Tx, names []string, algo string, progress func(done, total int)) ([]engine.TableSum, error) {
	sums := make([]engine.TableSum, len(names))
	for i, name := range names {
		var err error
		if sums[i], err = checksumPart(ctx, tx, sumPart{name: name}, algo); err != nil {
			return nil, err
		}
		if progress != nil {
			progress(i+1, len(names))
		}
	}
	return sums, nil
}
