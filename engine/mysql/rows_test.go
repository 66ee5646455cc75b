package mysql_test

import (
	"math/big"
	"slices"
	"testing"

	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

// TestChangedKeysAndRowHashes: the keys the source's log names between two
// positions are those of the rows written there (an insert, an update's row
// before and after, also when the key moves, a delete, a composite key, an
// unsigned key above 2^63), and not those written before or after, nor
// another database's; tables without an integer key are not offered; each
// row's hash is its term of the table's checksum (their sum is the
// checksum), in a snapshot as at the server.
func TestChangedKeysAndRowHashes(t *testing.T) {
	src, _ := fleet(t)
	t.Parallel()
	db := name("keys `db` ü")
	q := ident.QuoteMySQL(db)
	exec(t, src.root, "CREATE DATABASE "+q,
		"CREATE TABLE "+q+".`it ems` (id INT PRIMARY KEY, v VARCHAR(20))",
		"CREATE TABLE "+q+".pairs (a INT, b BIGINT UNSIGNED, v TEXT, PRIMARY KEY (a, b))",
		"CREATE TABLE "+q+".named (code VARCHAR(10) PRIMARY KEY, v INT)",
		"CREATE TABLE "+q+".nokey (v INT)",
		"INSERT INTO "+q+".`it ems` VALUES (1, 'one'), (2, 'two'), (3, NULL), (4, 'four'), (5, 'five')",
		"INSERT INTO "+q+".pairs VALUES (1, 18446744073709551615, 'max'), (2, 7, 'seven')",
		"INSERT INTO "+q+".named VALUES ('a', 1)", "INSERT INTO "+q+".nokey VALUES (1)")
	t.Cleanup(func() { _, _ = src.root.Exec("DROP DATABASE IF EXISTS " + q) })
	other := name("keys_other")
	qo := ident.QuoteMySQL(other)
	exec(t, src.root, "CREATE DATABASE "+qo, "CREATE TABLE "+qo+".`it ems` (id INT PRIMARY KEY)")
	t.Cleanup(func() { _, _ = src.root.Exec("DROP DATABASE IF EXISTS " + qo) })

	keyed, err := src.srv.Keyed(ctx(t), db)
	if err != nil {
		t.Fatal(err)
	}
	if len(keyed) != 2 || !slices.Equal(keyed["pairs"].Key, []string{"a", "b"}) || !slices.Equal(keyed["it ems"].Key, []string{"id"}) {
		t.Fatalf("keyed tables: %+v", keyed)
	}
	from, err := src.srv.BinlogNow(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	exec(t, src.root,
		"INSERT INTO "+q+".`it ems` VALUES (6, 'six')",
		"UPDATE "+q+".`it ems` SET v = 'TWO' WHERE id = 2",
		"UPDATE "+q+".`it ems` SET id = 30 WHERE id = 3",
		"DELETE FROM "+q+".`it ems` WHERE id = 4",
		"UPDATE "+q+".pairs SET v = 'MAX' WHERE a = 1",
		"UPDATE "+q+".named SET v = 2",
		"INSERT INTO "+qo+".`it ems` VALUES (99)")
	to, err := src.srv.BinlogNow(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	exec(t, src.root, "UPDATE "+q+".`it ems` SET v = 'later' WHERE id = 5")

	got, err := src.srv.ChangedKeysBetween(ctx(t), db, keyed, from, to, 4141, 100)
	if err != nil {
		t.Fatal(err)
	}
	if l := got.List("it ems"); !slices.Equal(l, []string{"2", "3", "4", "6", "30"}) {
		t.Errorf("keys written in `it ems`: %v", l)
	}
	if l := got.List("pairs"); !slices.Equal(l, []string{"1,18446744073709551615"}) {
		t.Errorf("keys written in pairs: %v", l)
	}
	if len(got.Over) != 0 {
		t.Errorf("over the limit: %v", got.Over)
	}
	// Past the limit, a table is only marked.
	if over, err := src.srv.ChangedKeysBetween(ctx(t), db, keyed, from, to, 4141, 3); err != nil || !over.Over["it ems"] || over.Keys["it ems"] != nil || len(over.List("pairs")) != 1 {
		t.Errorf("with a limit of 3: %+v, %v", over, err)
	}
	// A statement that writes without naming rows (TRUNCATE, logged as
	// such): every table counts as written, none can be verified by keys.
	exec(t, src.root, "TRUNCATE "+q+".named")
	after, err := src.srv.BinlogNow(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if trunc, err := src.srv.ChangedKeysBetween(ctx(t), db, keyed, to, after, 4141, 100); err != nil || !trunc.Over["it ems"] || !trunc.Over["pairs"] || len(trunc.Keys) != 0 {
		t.Errorf("across a TRUNCATE: %+v, %v", trunc, err)
	}
	tables := []string{"it ems", "pairs", "named", "nokey"}
	if changed, err := src.srv.ChangedTables(ctx(t), db, tables, to, after); err != nil || len(changed) != 4 {
		t.Errorf("tables changed across a TRUNCATE: %v, %v", changed, err)
	}
	if changed, err := src.srv.ChangedTables(ctx(t), db, tables, from, to); err != nil || len(changed) != 3 || changed["nokey"] {
		t.Errorf("tables changed by rows: %v, %v", changed, err)
	}
	// Nothing between a position and itself.
	if none, err := src.srv.ChangedKeysBetween(ctx(t), db, keyed, to, to, 4141, 100); err != nil || len(none.Keys) != 0 {
		t.Errorf("between %s and itself: %+v, %v", to, none, err)
	}

	// The hashes of every row add up to the table's checksum, in a
	// snapshot and at the server; a key without a row is absent.
	snap, err := src.srv.OpenSnapshot(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close(ctx(t))
	exec(t, src.root, "UPDATE "+q+".`it ems` SET v = 'after the snapshot' WHERE id = 1")
	for _, c := range []struct {
		table string
		keys  []string
	}{{"it ems", []string{"1", "2", "4", "5", "6", "30"}}, {"pairs", []string{"1,18446744073709551615", "2,7"}}} {
		sums, err := snap.Checksums(ctx(t), db, []string{c.table})
		if err != nil {
			t.Fatal(err)
		}
		hashes, err := snap.RowHashes(ctx(t), db, keyed[c.table], c.keys)
		if err != nil {
			t.Fatal(err)
		}
		total := new(big.Int)
		for _, h := range hashes {
			total.Add(total, big.NewInt(h))
		}
		if total.String() != sums[0].Checksum || int64(len(hashes)) != sums[0].Rows {
			t.Errorf("%s: the rows' hashes (%d rows) add up to %s, the checksum is %s of %d rows", c.table, len(hashes), total, sums[0].Checksum, sums[0].Rows)
		}
		now, err := src.srv.RowHashes(ctx(t), db, keyed[c.table], c.keys)
		if err != nil {
			t.Fatal(err)
		}
		if c.table == "it ems" && (now["1"] == hashes["1"] || now["2"] != hashes["2"] || len(now) != len(hashes)) {
			t.Errorf("at the server (row 1 changed since the snapshot): %v, in the snapshot: %v", now, hashes)
		}
	}
}
