package mysql_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

// Verification strength (issue 11, item 11): 1,000 single-row corruptions
// planted at the destination after a verified import — a changed value, a
// deleted row, an extra row, a changed BLOB byte — are each caught by
// Verify, and the exact repair verifies again; 100 dumps cut at random
// offsets each fail their import. Nothing corrupt gets past the import
// step, so no such row could reach DNS to update.
func TestVerificationStrength(t *testing.T) {
	src, dst := fleet(t)
	t.Parallel()
	db := name("strength_")
	q := ident.QuoteMySQL(db)
	v := q + ".v"
	exec(t, src.root, "CREATE DATABASE "+q,
		"CREATE TABLE "+v+" (id INT PRIMARY KEY, n INT, s VARCHAR(50), b BLOB)",
		"INSERT INTO "+v+" SELECT seq, seq * 3, CONCAT('row ', seq, ' ü'), UNHEX(SHA2(seq, 256)) FROM "+q+".seq_1_to_200")
	mg := migrate(t, src, dst, db)
	t.Cleanup(func() { _, _ = src.srv.Unblock(context.Background(), mg.access) })
	rng := rand.New(rand.NewPCG(11, 11))

	caught := map[string]int{}
	for i := range 1000 {
		id := 1 + rng.IntN(200)
		var kind string
		var plant, repair []string
		switch i % 4 {
		case 0:
			kind = "changed value"
			plant = []string{fmt.Sprintf("UPDATE %s SET n = n + 1 WHERE id = %d", v, id)}
			repair = []string{fmt.Sprintf("UPDATE %s SET n = n - 1 WHERE id = %d", v, id)}
		case 1:
			kind = "deleted row"
			plant = []string{fmt.Sprintf("DELETE FROM %s WHERE id = %d", v, id)}
			repair = []string{fmt.Sprintf("INSERT INTO %s VALUES (%d, %d, CONCAT('row ', %d, ' ü'), UNHEX(SHA2(%d, 256)))", v, id, id*3, id, id)}
		case 2:
			kind = "extra row"
			plant = []string{fmt.Sprintf("INSERT INTO %s VALUES (%d, 0, 'extra', NULL)", v, 1000+i)}
			repair = []string{fmt.Sprintf("DELETE FROM %s WHERE id = %d", v, 1000+i)}
		case 3:
			kind = "changed BLOB byte"
			k := 1 + rng.IntN(32)
			flip := fmt.Sprintf("UPDATE %s SET b = CONCAT(LEFT(b, %d), CHAR(ASCII(SUBSTRING(b, %d, 1)) ^ %d), SUBSTRING(b, %d)) WHERE id = %d",
				v, k-1, k, 1<<rng.IntN(8), k+1, id)
			plant, repair = []string{flip}, []string{flip}
		}
		exec(t, dst.root, plant...)
		if err := dst.srv.Verify(ctx(t), mg.manifest, nil); err == nil {
			t.Fatalf("corruption %d (%s of row %d) passed verification", i, kind, id)
		}
		caught[kind]++
		exec(t, dst.root, repair...)
		if i%100 == 99 {
			if err := dst.srv.Verify(ctx(t), mg.manifest, nil); err != nil {
				t.Fatalf("after repairing corruption %d (%s): %v", i, kind, err)
			}
		}
	}
	t.Logf("caught %v", caught)

	// Truncated dumps: the import of each fails and leaves, once dropped,
	// nothing behind; the whole dump still imports.
	exec(t, dst.root, "DROP DATABASE "+q)
	whole := mg.dump
	for i := range 100 {
		cut := 1 + rng.IntN(len(whole)-1)
		mg.dump = whole[:cut]
		rec, err := importInto(t, dst, mg)
		if err == nil {
			err = dst.srv.Verify(ctx(t), mg.manifest, nil)
		}
		if err == nil {
			t.Fatalf("dump %d cut at %d of %d bytes imported and verified", i, cut, len(whole))
		}
		if err := dst.srv.DropImport(ctx(t), *rec); err != nil {
			t.Fatalf("drop the import of cut %d: %v", i, err)
		}
	}
	if n := count(t, dst.root, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = "+sqlString(db)); n != 0 {
		t.Fatal("a truncated import left its database")
	}
	mg.dump = whole
	if !bytes.HasSuffix(whole, []byte("-- fleetmigrate: dump completed\n")) {
		t.Fatal("the dump lacks its trailer")
	}
	if _, err := importInto(t, dst, mg); err != nil {
		t.Fatalf("the whole dump after 100 cut ones: %v", err)
	}
	if err := dst.srv.Verify(ctx(t), mg.manifest, nil); err != nil {
		t.Fatal(err)
	}
}
