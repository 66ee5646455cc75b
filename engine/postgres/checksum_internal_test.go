package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

// TestChecksumsInBlockRanges: a table larger than ChecksumSplit is read in
// block ranges by several sessions, the ranges cover it without gap or
// overlap, and their sums add up to the whole table's, for both
// algorithms; a row changed in the last range changes the sum.
func TestChecksumsInBlockRanges(t *testing.T) {
	fleettest.Integration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pg := fleettest.SharedPostgresAs(t, "source")
	db := fmt.Sprintf("split sums %d", time.Now().UnixNano()%1e6)
	root := pg.Root(t, "postgres")
	fleettest.PGExec(t, root, "CREATE DATABASE "+ident.QuotePostgres(db))
	t.Cleanup(func() {
		c, err := pg.Dial(context.Background(), "postgres", "postgres", pg.Password)
		if err == nil {
			_, _ = c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+ident.QuotePostgres(db)+" WITH (FORCE)")
			_ = c.Close(context.Background())
		}
	})
	c := pg.Root(t, db)
	fleettest.PGExec(t, c,
		`CREATE TABLE "Big ü" (id int PRIMARY KEY, note text, at timestamptz)`,
		`INSERT INTO "Big ü" SELECT g, repeat(md5(g::text), 3), timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second' FROM generate_series(1, 20000) g`,
		`CREATE TABLE small (n int)`,
		`INSERT INTO small VALUES (1), (1), (NULL)`,
		`CREATE TABLE empty (n int)`,
	)
	srv, err := Open(ctx, engine.Server{Host: "source", Address: pg.Addr(), User: "postgres", Password: pg.Password}, Options{Jobs: 3, ChecksumSplit: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	if ok, err := srv.hashesLikeOthers(ctx); err != nil || !ok {
		t.Fatalf("this server's hashtextextended of the probe differs from a little-endian server's (%v, %v)", ok, err)
	}
	big, tables := `"Big ü"`, []string{`"Big ü"`, `public.small`, `public.empty`}
	pool, err := srv.dbPool(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := srv.splitTables(ctx, pool, db, withLargeObjects(tables), 3)
	if err != nil {
		t.Fatal(err)
	}
	var ranges []blockRange
	for _, p := range parts {
		switch {
		case p.name == big && p.blocks != nil:
			ranges = append(ranges, *p.blocks)
		case p.blocks != nil:
			t.Errorf("%s split though it is small: %+v", p.name, *p.blocks)
		}
	}
	if len(ranges) != 3 || len(parts) != 3+3 {
		t.Fatalf("parts %+v: want the big table in 3 ranges and the other two tables and the large objects whole", parts)
	}
	if ranges[0].from != 0 || ranges[2].to != -1 || ranges[0].to != ranges[1].from || ranges[1].to != ranges[2].from || ranges[1].from <= 0 || ranges[2].from <= ranges[1].from {
		t.Errorf("ranges %+v do not cover the table once, in order", ranges)
	}
	whole := func(algo string) []engine.TableSum {
		tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(ctx) }()
		sums, err := checksumsIn(ctx, tx, withLargeObjects(tables), algo, nil)
		if err != nil {
			t.Fatal(err)
		}
		return sums
	}
	before := map[string][]engine.TableSum{}
	for _, algo := range []string{ChecksumRowMD5, ChecksumRowHash64} {
		var done []int
		var mu sync.Mutex // progress is called from the checksum sessions' goroutines
		split, err := srv.checksums(ctx, db, "", tables, true, 100<<20, algo, func(d, total int) { mu.Lock(); done = append(done, d); mu.Unlock() })
		if err != nil {
			t.Fatal(err)
		}
		want := whole(algo)
		if d := engine.Diff(want, split); len(d) > 0 || len(split) != 4 || split[0].Rows != 20000 {
			t.Errorf("%s: sums in ranges %v, read whole %v: %v", algo, split, want, d)
		}
		if len(done) != 4 || done[3] != 4 {
			t.Errorf("%s: progress told %v, want once per table up to 4", algo, done)
		}
		before[algo] = split
	}
	if before[ChecksumRowMD5][0].Checksum == before[ChecksumRowHash64][0].Checksum {
		t.Error("both algorithms gave the same sum")
	}
	fleettest.PGExec(t, c, `UPDATE "Big ü" SET note = note || '.' WHERE id = 19999`)
	for _, algo := range []string{ChecksumRowMD5, ChecksumRowHash64} {
		after, err := srv.checksums(ctx, db, "", tables, true, 100<<20, algo, nil)
		if err != nil {
			t.Fatal(err)
		}
		if d := engine.Diff(before[algo], after); len(d) != 1 {
			t.Errorf("%s: a row changed in the last range: differences %v, want one naming %s", algo, d, big)
		}
	}
	// The checksum sessions run without JIT, in their transaction only.
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var inTx, after string
	if err := srv.checksumSettings(ctx, tx); err != nil {
		t.Fatal(err)
	}
	if err := tx.QueryRow(ctx, `SELECT current_setting('jit')`).Scan(&inTx); err != nil {
		t.Fatal(err)
	}
	_ = tx.Rollback(ctx)
	if err := conn.QueryRow(ctx, `SELECT current_setting('jit')`).Scan(&after); err != nil {
		t.Fatal(err)
	}
	conn.Release()
	if inTx != "off" || after != "on" {
		t.Errorf("jit in the checksums' transaction %q, after it %q: want off, then the server's on", inTx, after)
	}
	if _, err := srv.checksumAlgorithm(ctx, "pg-sha3-sum-v9"); err == nil || !errors.Is(err, engine.ErrPermanent) {
		t.Errorf("an unknown algorithm: %v, want a permanent error", err)
	}
	for _, algo := range []string{"", ChecksumRowMD5, ChecksumRowHash64} {
		if got, err := srv.checksumAlgorithm(ctx, algo); err != nil || got == "" {
			t.Errorf("algorithm %q: %q, %v", algo, got, err)
		}
	}
}
