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
	"github.com/fleetmigrate/fleetmigrate/engine/mysql"
	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
	"github.com/fleetmigrate/fleetmigrate/storage"
	"github.com/fleetmigrate/fleetmigrate/storage/file"
)

// BenchmarkMySQLMove moves one database of FLEETMIGRATE_BENCH_MB (default
// 1024) MB of data the way the steps do — dump with checksums into the
// directory store through zstd and SHA-256, then download, import and
// verify — and, in the same run, with `mariadb-dump | mariadb` for
// comparison. It reports MB/s of the database's data size (information_schema
// data + index length) for each phase, and the checksum pass alone.
func BenchmarkMySQLMove(b *testing.B) {
	fleettest.Integration(b)
	mb := 1024
	if v := os.Getenv("FLEETMIGRATE_BENCH_MB"); v != "" {
		mb, _ = strconv.Atoi(v)
	}
	src, dst := serverAs(b, "source"), serverAs(b, "destination")
	db := fmt.Sprintf("bench_%d", time.Now().UnixNano())
	q := ident.QuoteMySQL(db)
	b.Cleanup(func() {
		_, _ = src.root.Exec("DROP DATABASE IF EXISTS " + q)
		_, _ = dst.root.Exec("DROP DATABASE IF EXISTS " + q)
		_, _ = dst.root.Exec("DROP DATABASE IF EXISTS " + ident.QuoteMySQL(db+"_pipe"))
	})
	// About 1.1 kB per row of hex text (compresses about 2:1, like
	// typical application data), an integer table beside it.
	rows := mb * 1024 * 1024 / 1200
	exec(b, src.root, "CREATE DATABASE "+q,
		"CREATE TABLE "+q+".pages (id INT PRIMARY KEY, title VARCHAR(200), body TEXT, updated DATETIME, KEY (updated))",
		"CREATE TABLE "+q+".counters (id INT PRIMARY KEY, hits BIGINT, ratio DOUBLE)")
	for from := 0; from < rows; from += 100000 {
		to := min(from+100000, rows)
		exec(b, src.root, fmt.Sprintf("INSERT INTO %s.pages SELECT seq, CONCAT('page ', seq), CONCAT(SHA2(seq*8,512), SHA2(seq*8+1,512), SHA2(seq*8+2,512), SHA2(seq*8+3,512), SHA2(seq*8+4,512), SHA2(seq*8+5,512), SHA2(seq*8+6,512), SHA2(seq*8+7,512)), '2026-01-01' + INTERVAL seq SECOND FROM %s.seq_%d_to_%d", q, q, from+1, to))
	}
	exec(b, src.root, fmt.Sprintf("INSERT INTO %s.counters SELECT seq, seq*7, seq/3 FROM %s.seq_1_to_%d", q, q, rows))
	exec(b, src.root, "ANALYZE TABLE "+q+".pages, "+q+".counters")

	open := func(s *server) *mysql.Server {
		srv, err := mysql.Open(ctx(b), engine.Server{Host: s.host, Address: s.m.Addr(), User: adminUser, Password: adminPass}, mysql.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = srv.Close() })
		return srv
	}
	ss, ds := open(src), open(dst)
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
	b.Logf("database: %.0f MB (data + indexes), %d + %d rows", size, rows, rows)

	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Checksums alone.
		t0 := time.Now()
		if _, err := ss.Checksums(ctx(b), db, source.Tables, nil); err != nil {
			b.Fatal(err)
		}
		checksum := time.Since(t0)

		// Our dump: checksums beside mariadb-dump, through zstd and
		// SHA-256 into the store.
		t0 = time.Now()
		pos, err := ss.Position(ctx(b))
		if err != nil {
			b.Fatal(err)
		}
		ref := storage.DumpRef{Engine: "mysql", Source: "source", Database: db, ConsistencyPoint: pos.At}
		var man *engine.Manifest
		var sec engine.Secrets
		res, err := storage.PutCompressed(ctx(b), st, ref.DumpKey("sql"), zstd.SpeedFastest, storage.PutOptions{}, func(w io.Writer) error {
			var err error
			man, sec, _, err = ss.Snapshot(ctx(b), source, "source", pos, w, nil)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		dump := time.Since(t0)

		// Our import: download with SHA-256 check, load, verify.
		t0 = time.Now()
		r, err := storage.OpenDump(ctx(b), st, ref.DumpKey("sql"), res.SHA256)
		if err != nil {
			b.Fatal(err)
		}
		var rec mysql.ImportRecord
		if _, err := ds.Import(ctx(b), man, sec, r, func(r mysql.ImportRecord) error { rec = r; return nil }, nil); err != nil {
			b.Fatal(err)
		}
		_ = r.Close()
		load := time.Since(t0)
		t0 = time.Now()
		if err := ds.Verify(ctx(b), man, nil); err != nil {
			b.Fatal(err)
		}
		verify := time.Since(t0)

		// The plain pipeline, same servers, same data.
		t0 = time.Now()
		pipe := osexec.CommandContext(ctx(b), "bash", "-c", fmt.Sprintf(
			"set -o pipefail; mariadb-dump -uroot -h%s -P%d --single-transaction --routines --triggers --hex-blob %s | mariadb -uroot -h%s -P%d %s",
			src.m.Host, src.m.Port, shellQuote(db), dst.m.Host, dst.m.Port, shellQuote(db+"_pipe")))
		exec(b, dst.root, "CREATE DATABASE "+ident.QuoteMySQL(db+"_pipe"))
		if out, err := pipe.CombinedOutput(); err != nil {
			b.Fatalf("pipeline: %v: %s", err, out)
		}
		pipeline := time.Since(t0)

		b.StopTimer()
		b.ReportMetric(rate(checksum), "checksum-MB/s")
		b.ReportMetric(rate(dump), "dump-MB/s")
		b.ReportMetric(rate(load), "import-MB/s")
		b.ReportMetric(rate(verify), "verify-MB/s")
		b.ReportMetric(rate(dump+load+verify), "ours-total-MB/s")
		b.ReportMetric(rate(pipeline), "pipe-MB/s")
		b.Logf("%.0f MB: checksums %s; dump %s (%d MB stored, %.1f:1); import %s; verify %s; ours in all %s; mariadb-dump | mariadb %s",
			size, checksum.Round(time.Millisecond), dump.Round(time.Millisecond), res.Size>>20, float64(source.SizeBytes)/float64(res.Size),
			load.Round(time.Millisecond), verify.Round(time.Millisecond), (dump + load + verify).Round(time.Millisecond), pipeline.Round(time.Millisecond))
		if err := ds.DropImport(context.Background(), rec); err != nil {
			b.Fatal(err)
		}
		exec(b, dst.root, "DROP DATABASE "+ident.QuoteMySQL(db+"_pipe"))
		_ = os.RemoveAll(filepath.Join(st.Dir(), storage.DumpsPrefix))
		b.StartTimer()
	}
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
