package postgres_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
)

// Verification strength (issue 11, item 11), PostgreSQL: 1,000 single-row
// corruptions planted at the destination after a verified import — a
// changed value, a deleted row, an extra row, a changed bytea byte — are
// each caught by Verify, and the exact repair verifies again; 100 dumps
// cut at random offsets each fail their import or its verification, and
// DropImport leaves neither database nor roles. Nothing corrupt gets past
// the import step, so no such row could reach DNS to update.
func TestVerificationStrength(t *testing.T) {
	t.Parallel()
	src, dst := fleet(t)
	db, owner := unique("strength_ ü"), unique("so_")
	dropAfter(t, db, []string{owner}, src, dst)
	pgExec(t, src.pg.Root(t, "postgres"),
		"CREATE ROLE "+qi(owner)+" LOGIN PASSWORD "+ql("pw "+owner),
		"CREATE DATABASE "+qi(db)+" OWNER "+qi(owner))
	pgExec(t, src.pg.Root(t, db),
		"SET ROLE "+qi(owner),
		"CREATE TABLE v (id int PRIMARY KEY, n int, s text, b bytea)",
		"INSERT INTO v SELECT g, g * 3, 'row ' || g || ' ü', sha256(g::text::bytea) FROM generate_series(1, 200) g",
		"CREATE TABLE nopk (line text, n int)",
		"INSERT INTO nopk SELECT 'line ' || (g % 10), g % 3 FROM generate_series(1, 100) g")
	dump, m, sec, access := dumpDB(t, src, db)
	t.Cleanup(func() { _, _ = src.srv.Unblock(context.Background(), access) })
	rec, err := importDB(t, dst, dump, m, sec)
	if err != nil {
		t.Fatalf("the whole dump: %v", err)
	}
	c := dst.pg.Root(t, db)
	rng := rand.New(rand.NewPCG(11, 12))

	caught := map[string]int{}
	for i := range 1000 {
		id := 1 + rng.IntN(200)
		var kind string
		var plant, repair []string
		switch i % 4 {
		case 0:
			kind = "changed value"
			plant = []string{fmt.Sprintf("UPDATE v SET n = n + 1 WHERE id = %d", id)}
			repair = []string{fmt.Sprintf("UPDATE v SET n = n - 1 WHERE id = %d", id)}
		case 1:
			kind = "deleted row"
			plant = []string{fmt.Sprintf("DELETE FROM v WHERE id = %d", id)}
			repair = []string{fmt.Sprintf("INSERT INTO v VALUES (%d, %d, 'row %d ü', sha256('%d'::bytea))", id, id*3, id, id)}
		case 2:
			kind = "extra row"
			if rng.IntN(2) == 0 {
				plant = []string{fmt.Sprintf("INSERT INTO v VALUES (%d, 0, 'extra', NULL)", 1000+i)}
				repair = []string{fmt.Sprintf("DELETE FROM v WHERE id = %d", 1000+i)}
			} else { // a duplicate in a table without a key: same values, one more row
				plant = []string{"INSERT INTO nopk VALUES ('line 4', 1)"}
				repair = []string{"DELETE FROM nopk WHERE ctid = (SELECT max(ctid) FROM nopk WHERE line = 'line 4' AND n = 1)"}
			}
		case 3:
			kind = "changed bytea byte"
			k := rng.IntN(32)
			flip := fmt.Sprintf("UPDATE v SET b = set_byte(b, %d, get_byte(b, %d) # %d) WHERE id = %d", k, k, 1<<rng.IntN(8), id)
			plant, repair = []string{flip}, []string{flip}
		}
		pgExec(t, c, plant...)
		if err := dst.srv.Verify(ctx(t), m, nil); err == nil {
			t.Fatalf("corruption %d (%s of row %d) passed verification", i, kind, id)
		}
		caught[kind]++
		pgExec(t, c, repair...)
		if i%100 == 99 {
			if err := dst.srv.Verify(ctx(t), m, nil); err != nil {
				t.Fatalf("after repairing corruption %d (%s): %v", i, kind, err)
			}
		}
	}
	t.Logf("caught %v", caught)
	_ = c.Close(ctx(t))

	// Truncated dumps: each fails its import or its verification, and
	// DropImport leaves nothing; the whole dump still imports.
	gone := func(what string) {
		t.Helper()
		var n int
		if err := dst.pg.Root(t, "postgres").QueryRow(ctx(t), "SELECT (SELECT count(*) FROM pg_database WHERE datname = $1) + (SELECT count(*) FROM pg_roles WHERE rolname = $2)",
			db, owner).Scan(&n); err != nil || n != 0 {
			t.Fatalf("%s: %d of the database and its role left (%v)", what, n, err)
		}
	}
	if _, err := dst.srv.DropImport(ctx(t), rec); err != nil {
		t.Fatal(err)
	}
	gone("after dropping the verified import")
	for i := range 100 {
		cut := 1 + rng.IntN(len(dump)-1)
		rec, err := importDB(t, dst, dump[:cut], m, sec)
		if err == nil {
			t.Fatalf("dump %d cut at %d of %d bytes imported and verified", i, cut, len(dump))
		}
		if _, err := dst.srv.DropImport(ctx(t), rec); err != nil {
			t.Fatalf("drop the import of cut %d: %v", i, err)
		}
		gone(fmt.Sprintf("cut %d at %d of %d bytes", i, cut, len(dump)))
	}
	if _, err := importDB(t, dst, dump, m, sec); err != nil {
		t.Fatalf("the whole dump after 100 cut ones: %v", err)
	}
}
