package steps_test

import (
	"context"
	"fmt"
	"io"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/postgres"
	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
	"github.com/fleetmigrate/fleetmigrate/storage"
	"github.com/fleetmigrate/fleetmigrate/storage/file"
)

// BenchmarkPostgresMove moves one PostgreSQL database of
// FLEETMIGRATE_BENCH_MB (default 1024) MB the way the steps do — pg_dump
// with checksums in the same snapshot into the directory store through
// zstd and SHA-256, then download, restore and verify, streamed and (the
// same dump) spooled with two pg_restore workers — and, in the same run,
// with `pg_dump | psql` and `pg_dump -Fd -j2` + `pg_restore -j2`. MB/s are
// of pg_database_size at the source.
func BenchmarkPostgresMove(b *testing.B) {
	fleettest.Integration(b)
	mb := 1024
	if v := os.Getenv("FLEETMIGRATE_BENCH_MB"); v != "" {
		mb, _ = strconv.Atoi(v)
	}
	src, dst := serverAs(b, "source"), serverAs(b, "destination")
	db := fmt.Sprintf("bench_%d", time.Now().UnixNano())
	others := []string{db + "_pipe", db + "_dir"}
	b.Cleanup(func() {
		for _, s := range []*server{src, dst} {
			c, err := s.pg.Dial(context.Background(), "postgres", "postgres", s.pg.Password)
			if err != nil {
				continue
			}
			for _, d := range append(others, db) {
				_, _ = c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+ident.QuotePostgres(d)+" WITH (FORCE)")
			}
			_ = c.Close(context.Background())
		}
	})
	fleettest.PGExec(b, src.pg.Root(b, "postgres"), "CREATE DATABASE "+ident.QuotePostgres(db))
	// About 1.1 kB per row of hex text (compresses about 2:1), an
	// integer table beside it, indexes on both.
	rows := mb * 1024 * 1024 / 1250
	fleettest.PGExec(b, src.pg.Root(b, db),
		"CREATE TABLE pages (id int PRIMARY KEY, title text, body text, updated timestamptz)",
		"CREATE TABLE counters (id bigserial PRIMARY KEY, hits bigint, ratio double precision)",
		fmt.Sprintf(`INSERT INTO pages SELECT g, 'page ' || g, encode(sha512(int8send(g::bigint * 8 + 0)), 'hex') || encode(sha512(int8send(g::bigint * 8 + 1)), 'hex') || encode(sha512(int8send(g::bigint * 8 + 2)), 'hex') || encode(sha512(int8send(g::bigint * 8 + 3)), 'hex') || encode(sha512(int8send(g::bigint * 8 + 4)), 'hex') || encode(sha512(int8send(g::bigint * 8 + 5)), 'hex') || encode(sha512(int8send(g::bigint * 8 + 6)), 'hex') || encode(sha512(int8send(g::bigint * 8 + 7)), 'hex'),
			'2026-01-01'::timestamptz + g * interval '1 second' FROM generate_series(1, %d) g`, rows),
		fmt.Sprintf("INSERT INTO counters (hits, ratio) SELECT g * 7, g / 3.0 FROM generate_series(1, %d) g", rows),
		"CREATE INDEX ON pages (updated)", "VACUUM ANALYZE")

	open := func(s *server, opt postgres.Options) *postgres.Server {
		srv, err := postgres.Open(ctx(b), engine.Server{Host: s.host, Address: s.pg.Addr(), User: adminUser, Password: adminPass}, opt)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = srv.Close() })
		return srv
	}
	tmp := b.TempDir()
	ss := open(src, postgres.Options{})
	stream := open(dst, postgres.Options{ParallelAbove: -1})
	parallel := open(dst, postgres.Options{ParallelAbove: 1, Jobs: 2, TempDir: tmp})
	st, err := file.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	source, err := ss.Inspect(ctx(b), db)
	if err != nil {
		b.Fatal(err)
	}
	size := float64(source.SizeBytes) / (1 << 20)
	rate := func(d time.Duration) float64 { return size / d.Seconds() }
	b.Logf("database: %.0f MB (pg_database_size), %d + %d rows", size, rows, rows)
	pass := filepath.Join(tmp, "pgpass")
	if err := os.WriteFile(pass, []byte("*:*:*:postgres:"+strings.NewReplacer(`\`, `\\`, `:`, `\:`).Replace(fleettest.PostgresPassword)+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	bin, err := fleettest.PostgresBinDir()
	if err != nil {
		b.Fatal(err)
	}
	shell := func(script string) time.Duration {
		b.Helper()
		t0 := time.Now()
		cmd := osexec.CommandContext(ctx(b), "bash", "-c", "set -eo pipefail; "+script)
		cmd.Env = append(os.Environ(), "PGPASSFILE="+pass, "PGUSER=postgres")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%s: %v: %s", script, err, out)
		}
		return time.Since(t0)
	}

	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Ours: snapshot, pg_dump beside the checksums, into the store.
		t0 := time.Now()
		snap, err := ss.Snapshot(ctx(b), db)
		if err != nil {
			b.Fatal(err)
		}
		ref := storage.DumpRef{Engine: "postgres", Source: "source", Database: db, ConsistencyPoint: snap.At}
		var man *engine.Manifest
		var sec engine.Secrets
		res, err := storage.PutCompressed(ctx(b), st, ref.DumpKey("pgdump"), zstd.SpeedFastest, storage.PutOptions{}, func(w io.Writer) error {
			var err error
			man, sec, _, err = ss.Dump(ctx(b), source, snap, "source", w, nil)
			return err
		})
		snap.Close(ctx(b))
		if err != nil {
			b.Fatal(err)
		}
		dump := time.Since(t0)

		load := func(dst *postgres.Server) (time.Duration, time.Duration) {
			t0 := time.Now()
			r, err := storage.OpenDump(ctx(b), st, ref.DumpKey("pgdump"), res.SHA256)
			if err != nil {
				b.Fatal(err)
			}
			var rec postgres.ImportRecord
			if _, err := dst.Import(ctx(b), man, sec, r, func(r postgres.ImportRecord) error { rec = r; return nil }, nil); err != nil {
				b.Fatal(err)
			}
			_ = r.Close()
			imp := time.Since(t0)
			t0 = time.Now()
			if err := dst.Verify(ctx(b), man, nil); err != nil {
				b.Fatal(err)
			}
			ver := time.Since(t0)
			if _, err := dst.DropImport(context.Background(), rec); err != nil {
				b.Fatal(err)
			}
			return imp, ver
		}
		streamLoad, verify := load(stream)
		parallelLoad, _ := load(parallel)

		conn := func(p *fleettest.Postgres, d string) string {
			return shellQuote(fmt.Sprintf("host=%s port=%d dbname=%s", p.Host, p.Port, d))
		}
		fleettest.PGExec(b, dst.pg.Root(b, "postgres"), "CREATE DATABASE "+ident.QuotePostgres(others[0]), "CREATE DATABASE "+ident.QuotePostgres(others[1]))
		pipe := shell(fmt.Sprintf("%s/pg_dump -d %s | %s/psql -q -v ON_ERROR_STOP=1 -d %s >/dev/null", bin, conn(src.pg, db), bin, conn(dst.pg, others[0])))
		dir := filepath.Join(tmp, "dir")
		dirDump := shell(fmt.Sprintf("%s/pg_dump -Fd -j2 -Z0 -f %s -d %s", bin, dir, conn(src.pg, db)))
		dirRestore := shell(fmt.Sprintf("%s/pg_restore -j2 -d %s %s", bin, conn(dst.pg, others[1]), dir))

		b.StopTimer()
		b.ReportMetric(rate(dump), "dump-MB/s")
		b.ReportMetric(rate(streamLoad), "import-stream-MB/s")
		b.ReportMetric(rate(parallelLoad), "import-j2-MB/s")
		b.ReportMetric(rate(verify), "verify-MB/s")
		b.ReportMetric(rate(dump+streamLoad+verify), "ours-stream-MB/s")
		b.ReportMetric(rate(dump+parallelLoad+verify), "ours-j2-MB/s")
		b.ReportMetric(rate(pipe), "pipe-MB/s")
		b.ReportMetric(rate(dirDump+dirRestore), "fd-j2-MB/s")
		b.Logf("%.0f MB: dump %s (%d MB stored, %.1f:1); import streamed %s, spooled with 2 workers %s; verify %s; ours in all %s streamed, %s with 2 workers; "+
			"pg_dump | psql %s; pg_dump -Fd -j2 %s + pg_restore -j2 %s = %s",
			size, dump.Round(time.Millisecond), res.Size>>20, float64(source.SizeBytes)/float64(res.Size),
			streamLoad.Round(time.Millisecond), parallelLoad.Round(time.Millisecond), verify.Round(time.Millisecond),
			(dump + streamLoad + verify).Round(time.Millisecond), (dump + parallelLoad + verify).Round(time.Millisecond),
			pipe.Round(time.Millisecond), dirDump.Round(time.Millisecond), dirRestore.Round(time.Millisecond), (dirDump + dirRestore).Round(time.Millisecond))
		for _, d := range others {
			fleettest.PGExec(b, dst.pg.Root(b, "postgres"), "DROP DATABASE "+ident.QuotePostgres(d)+" WITH (FORCE)")
		}
		_ = os.RemoveAll(dir)
		_ = os.RemoveAll(filepath.Join(st.Dir(), storage.DumpsPrefix))
		b.StartTimer()
	}
}
