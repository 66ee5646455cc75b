package postgres_test

import (
	"context"
	"slices"
	"testing"

	"github.com/fleetmigrate/fleetmigrate/engine/postgres"
)

// TestVerificationByRows: the rows of two copies of a table are compared
// key by key; then, written at both servers as a stream would (with one
// change lost at the destination), only the rows written since the
// snapshots are found and compared — the lost change is seen — and a
// table with more changed rows than the limit says so. A composite key
// and a text key work the same; a table without a key is refused.
func TestVerificationByRows(t *testing.T) {
	src, dst := fleet(t)
	t.Parallel()
	db := unique("rows ü ")
	dropAfter(t, db, nil, src, dst)
	for _, s := range []*side{src, dst} {
		pgExec(t, s.pg.Root(t, "postgres"), "CREATE DATABASE "+qi(db))
		pgExec(t, s.pg.Root(t, db),
			`CREATE TABLE "hot ü" (id bigint PRIMARY KEY, v int NOT NULL, note text)`,
			`INSERT INTO "hot ü" SELECT g, 0, 'n' || g FROM generate_series(1, 20000) g`,
			`CREATE TABLE pair (a text, b int, v int, PRIMARY KEY (b, a))`,
			`INSERT INTO pair SELECT 'k' || (g % 7), g, 0 FROM generate_series(1, 500) g`,
			`CREATE TABLE nokey (v int)`)
	}
	const hot = `"public"."hot ü"`
	noWait := func(context.Context) error { return nil }
	base, ok, err := postgres.CompareRows(ctx(t), src.srv, dst.srv, db, hot, noWait, 100)
	if err != nil || !ok || base.Rows != 20000 || len(base.Pending) != 0 || base.SrcSnapshot == "" || base.DstSnapshot == "" {
		t.Fatalf("compare equal copies: %+v, %v, %v", base, ok, err)
	}
	// Written at both: updates, inserts and a delete; the destination
	// misses the update of row 77.
	writes := []string{`UPDATE "hot ü" SET v = 1 WHERE id IN (5, 77, 19999)`, `INSERT INTO "hot ü" VALUES (20001, 2, 'new'), (20002, 2, NULL)`, `DELETE FROM "hot ü" WHERE id = 10`}
	pgExec(t, src.pg.Root(t, db), writes...)
	pgExec(t, dst.pg.Root(t, db), `UPDATE "hot ü" SET v = 1 WHERE id IN (5, 19999)`, writes[1], writes[2])
	n, keys, ok, err := src.srv.ChangedRows(ctx(t), db, hot, base.SrcSnapshot, 100)
	slices.Sort(keys)
	if err != nil || !ok || n != 20001 || !slices.Equal(keys, []string{"19999", "20001", "20002", "5", "77"}) {
		t.Fatalf("changed at the source: %d rows, %v, %v, %v", n, keys, ok, err)
	}
	dn, dkeys, ok, err := dst.srv.ChangedRows(ctx(t), db, hot, base.DstSnapshot, 100)
	slices.Sort(dkeys)
	if err != nil || !ok || dn != 20001 || !slices.Equal(dkeys, []string{"19999", "20001", "20002", "5"}) {
		t.Fatalf("changed at the destination: %d rows, %v, %v, %v", dn, dkeys, ok, err)
	}
	sh, err := src.srv.RowHashesOf(ctx(t), db, hot, append(keys, "10"))
	if err != nil || len(sh) != 5 {
		t.Fatalf("source rows: %v, %v", sh, err)
	}
	dh, err := dst.srv.RowHashesOf(ctx(t), db, hot, append(keys, "10"))
	if err != nil || len(dh) != 5 {
		t.Fatalf("destination rows: %v, %v", dh, err)
	}
	for _, k := range keys {
		if (sh[k] == dh[k]) != (k != "77") {
			t.Errorf("row %s: source hash %d, destination %d", k, sh[k], dh[k])
		}
	}
	if _, _, ok, err := src.srv.ChangedRows(ctx(t), db, hot, base.SrcSnapshot, 4); ok || err != nil {
		t.Errorf("5 changed rows over a limit of 4: ok %v, %v", ok, err)
	}
	// Compared now, the lost update is pending (as a row written between
	// two snapshots would be); over the limit, the table is refused.
	base, ok, err = postgres.CompareRows(ctx(t), src.srv, dst.srv, db, hot, noWait, 100)
	if err != nil || !ok || !slices.Equal(base.Pending, []string{"77"}) {
		t.Errorf("compare with one row different: %+v, %v, %v", base, ok, err)
	}
	pgExec(t, src.pg.Root(t, db), `UPDATE "hot ü" SET v = 3 WHERE id <= 200`)
	if _, ok, err := postgres.CompareRows(ctx(t), src.srv, dst.srv, db, hot, noWait, 100); ok || err != nil {
		t.Errorf("200 rows different over a limit of 100: ok %v, %v", ok, err)
	}
	// A composite key with text.
	pb, ok, err := postgres.CompareRows(ctx(t), src.srv, dst.srv, db, `"public"."pair"`, noWait, 10)
	if err != nil || !ok || pb.Rows != 500 || len(pb.Pending) != 0 {
		t.Fatalf("composite key: %+v, %v, %v", pb, ok, err)
	}
	pgExec(t, src.pg.Root(t, db), `UPDATE pair SET v = 9 WHERE b = 42`)
	_, pk, ok, err := src.srv.ChangedRows(ctx(t), db, `"public"."pair"`, pb.SrcSnapshot, 10)
	if err != nil || !ok || !slices.Equal(pk, []string{"(42,k0)"}) {
		t.Fatalf("composite key changed: %v, %v, %v", pk, ok, err)
	}
	if h, err := src.srv.RowHashesOf(ctx(t), db, `"public"."pair"`, pk); err != nil || len(h) != 1 {
		t.Errorf("composite key rows: %v, %v", h, err)
	}
	if _, _, err := postgres.CompareRows(ctx(t), src.srv, dst.srv, db, `"public"."nokey"`, noWait, 10); err == nil {
		t.Error("a table without a key was compared by rows")
	}
}
