package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
)

// Verification by rows (docs/online.md, "A table written all the time"):
// a table the customer writes all the time changes between any two reads,
// so it is never "unchanged since verified" and the cutover would read it
// whole at both servers while writes are blocked — longer the larger it
// is. Instead, while streaming, its rows are compared key by key at both
// servers (CompareRows) and the two snapshots they were read in are kept;
// under the block only the rows that either server wrote after its
// snapshot (ChangedRows: xmin not visible to it), and those that differed,
// are compared again (RowHashesOf), with both row counts.
//
// What it guarantees: a row no transaction wrote after the snapshots was
// compared equal then and is equal now; every row written since at either
// server (inserted or updated: a new xmin) is compared now; a row deleted
// at one server and not at the other changes its row count. What it does
// not: a delete at one server offset by a row lost at the other (two
// faults at once), and hash collisions (64-bit).

// RowBase is what the comparison while streaming leaves for one table.
type RowBase struct {
	// SrcSnapshot and DstSnapshot are the snapshots (pg_current_snapshot
	// text) the rows were read in at the source and the destination.
	SrcSnapshot string `json:"src_snapshot"`
	DstSnapshot string `json:"dst_snapshot"`
	// Pending are the keys (as text) whose rows differed then (written
	// between the two snapshots): compared again under the block.
	Pending []string `json:"pending,omitempty"`
	// Rows is the source's row count then.
	Rows int64 `json:"rows"`
}

// tableKey is how rows of a table are named: its primary key as text, and
// for a one-column key its column and type (looked up by index).
type tableKey struct {
	text    string // expression: the key as text
	col     string // quoted column of a one-column key, "" otherwise
	colType string
}

// keyOf reads table's primary key (table quoted, as in Stream.Tables);
// ok false: it has none.
func keyOf(ctx context.Context, c *pgx.Conn, table string) (k tableKey, ok bool, err error) {
	rows, err := c.Query(ctx, `SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
		FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
		WHERE i.indrelid = $1::regclass AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)`, table)
	if err != nil {
		return k, false, fmt.Errorf("read the primary key of %s: %w", table, err)
	}
	var cols, types []string
	var col, typ string
	if _, err := pgx.ForEachRow(rows, []any{&col, &typ}, func() error {
		cols, types = append(cols, qi(col)), append(types, typ)
		return nil
	}); err != nil {
		return k, false, fmt.Errorf("read the primary key of %s: %w", table, err)
	}
	switch len(cols) {
	case 0:
		return k, false, nil
	case 1:
		return tableKey{text: "fm_row." + cols[0] + "::text", col: cols[0], colType: types[0]}, true, nil
	}
	for i := range cols {
		cols[i] = "fm_row." + cols[i]
	}
	return tableKey{text: "ROW(" + strings.Join(cols, ", ") + ")::text"}, true, nil
}

// rowHash is a row's 64-bit hash, computed the same way at both servers.
const rowHash = `hashtextextended(ROW(fm_row.*)::text, 0)`

// KeyedRow is a row's key (text) and hash.
type KeyedRow struct {
	Key  string
	Hash int64
}

// ErrNoKey: the table has no primary key (it is verified whole).
var ErrNoKey = errors.New("the table has no primary key")

// errTooMany stops a comparison that found more differing rows than it
// keeps.
var errTooMany = errors.New("too many rows differ")

// CompareRows compares table's rows at src and dst key by key while the
// stream runs: src's snapshot first, then wait (until the destination has
// applied the source's log past it), then dst's snapshot. The rows that
// differ (written between the two snapshots, or wrong) are the base's
// Pending. ok false: more than maxPending differed (the table is verified
// whole instead).
func CompareRows(ctx context.Context, src, dst *Server, database, table string, wait func(context.Context) error, maxPending int) (base RowBase, ok bool, err error) {
	srcRows, dstRows := make(chan KeyedRow, 4096), make(chan KeyedRow, 4096)
	srcSnap := make(chan string, 1)
	g, gctx := errgroup.WithContext(ctx)
	send := func(ch chan<- KeyedRow) func(KeyedRow) error {
		return func(r KeyedRow) error {
			select {
			case ch <- r:
				return nil
			case <-gctx.Done():
				return gctx.Err()
			}
		}
	}
	g.Go(func() error {
		defer close(srcRows)
		return src.ReadRows(gctx, database, table, func(s string) error { srcSnap <- s; return nil }, send(srcRows))
	})
	g.Go(func() error {
		defer close(dstRows)
		select {
		case base.SrcSnapshot = <-srcSnap:
		case <-gctx.Done():
			return gctx.Err()
		}
		if err := wait(gctx); err != nil {
			return err
		}
		return dst.ReadRows(gctx, database, table, func(s string) error { base.DstSnapshot = s; return nil }, send(dstRows))
	})
	g.Go(func() error {
		a, aok := <-srcRows
		b, bok := <-dstRows
		for aok || bok {
			switch {
			case aok && bok && a.Key == b.Key:
				if a.Hash != b.Hash {
					base.Pending = append(base.Pending, a.Key)
				}
				base.Rows++
				a, aok = <-srcRows
				b, bok = <-dstRows
			case bok && (!aok || b.Key < a.Key):
				base.Pending = append(base.Pending, b.Key)
				b, bok = <-dstRows
			default:
				base.Pending = append(base.Pending, a.Key)
				base.Rows++
				a, aok = <-srcRows
			}
			if len(base.Pending) > maxPending {
				return errTooMany
			}
		}
		return nil
	})
	switch err := g.Wait(); {
	case errors.Is(err, errTooMany):
		return RowBase{}, false, nil
	case err != nil:
		return RowBase{}, false, err
	}
	return base, true, nil
}

// ReadRows reads table's rows' keys and hashes in key order (bytewise, the
// same at every server), in a repeatable-read snapshot of its own: it calls
// taken with that snapshot first, then out with each row. An error from
// out stops it.
func (s *Server) ReadRows(ctx context.Context, database, table string, taken func(snapshot string) error, out func(KeyedRow) error) error {
	err := s.inDatabaseKept(ctx, database, func(c *pgx.Conn) error {
		k, ok, err := keyOf(ctx, c, table)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNoKey
		}
		return pgx.BeginTxFunc(ctx, c, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			var snap string
			if err := tx.QueryRow(ctx, `SELECT pg_current_snapshot()::text`).Scan(&snap); err != nil {
				return err
			}
			if err := taken(snap); err != nil {
				return err
			}
			rows, err := tx.Query(ctx, `SELECT `+k.text+`, `+rowHash+` FROM ONLY `+table+` AS fm_row ORDER BY `+k.text+` COLLATE "C"`)
			if err != nil {
				return err
			}
			var r KeyedRow
			_, err = pgx.ForEachRow(rows, []any{&r.Key, &r.Hash}, func() error { return out(r) })
			return err
		})
	})
	if err != nil {
		return fmt.Errorf("read the rows of %s in %q at %s: %w", table, database, s, err)
	}
	return nil
}

// ChangedRows counts table's rows and lists the keys of those written
// (inserted or updated) by transactions that snapshot does not see: at
// most limit (more: ok false).
func (s *Server) ChangedRows(ctx context.Context, database, table, snapshot string, limit int) (count int64, keys []string, ok bool, err error) {
	xmax, xip, err := parseSnapshot(snapshot)
	if err != nil {
		return 0, nil, false, err
	}
	err = s.inDatabaseKept(ctx, database, func(c *pgx.Conn) error {
		k, found, err := keyOf(ctx, c, table)
		if err != nil {
			return err
		}
		if !found {
			return ErrNoKey
		}
		// xmin is a 32-bit transaction id: "at or after xmax" is judged by
		// age, which wraps as they do; the ids running then (xip) were not
		// seen either.
		return c.QueryRow(ctx, `SELECT count(*), coalesce((array_agg(`+k.text+`) FILTER (WHERE age(fm_row.xmin) <= age($1::xid) OR fm_row.xmin::text = ANY($2)))[1:$3], '{}')
			FROM ONLY `+table+` AS fm_row`, xmax, xip, limit+1).Scan(&count, &keys)
	})
	if err != nil {
		return 0, nil, false, fmt.Errorf("find the rows of %s in %q at %s written since %s: %w", table, database, s, snapshot, err)
	}
	if len(keys) > limit {
		return count, nil, false, nil
	}
	return count, keys, true, nil
}

// RowHashesOf returns the hashes of table's rows whose keys (text) are
// keys, at this server now (a key without a row is absent).
func (s *Server) RowHashesOf(ctx context.Context, database, table string, keys []string) (map[string]int64, error) {
	out := make(map[string]int64, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	err := s.inDatabaseKept(ctx, database, func(c *pgx.Conn) error {
		k, found, err := keyOf(ctx, c, table)
		if err != nil {
			return err
		}
		if !found {
			return ErrNoKey
		}
		where := k.text + ` = ANY($1::text[])`
		if k.col != "" {
			// By the key's index: the texts cast to its type.
			where = `fm_row.` + k.col + ` = ANY($1::text[]::` + k.colType + `[])`
		}
		rows, err := c.Query(ctx, `SELECT `+k.text+`, `+rowHash+` FROM ONLY `+table+` AS fm_row WHERE `+where, keys)
		if err != nil {
			return err
		}
		var r KeyedRow
		_, err = pgx.ForEachRow(rows, []any{&r.Key, &r.Hash}, func() error {
			out[r.Key] = r.Hash
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read %d rows of %s in %q at %s: %w", len(keys), table, database, s, err)
	}
	return out, nil
}

// parseSnapshot reads a pg_snapshot's text (xmin:xmax:xip,...) into the
// 32-bit xmax and running ids a row's xmin is compared with.
func parseSnapshot(snap string) (xmax string, xip []string, err error) {
	parts := strings.Split(snap, ":")
	if len(parts) != 3 {
		return "", nil, fmt.Errorf("%q is not a snapshot (xmin:xmax:xip)", snap)
	}
	x, err := strconv.ParseUint(parts[1], 10, 64)
	if err != nil {
		return "", nil, fmt.Errorf("%q is not a snapshot: %w", snap, err)
	}
	xip = []string{}
	for _, p := range strings.Split(parts[2], ",") {
		if p == "" {
			continue
		}
		v, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return "", nil, fmt.Errorf("%q is not a snapshot: %w", snap, err)
		}
		xip = append(xip, strconv.FormatUint(v&0xffffffff, 10))
	}
	return strconv.FormatUint(x&0xffffffff, 10), xip, nil
}

// CurrentSnapshot returns the snapshot (pg_current_snapshot text) of a
// new transaction in database now: the rows written after it are those
// ChangedRows finds with it.
func (s *Server) CurrentSnapshot(ctx context.Context, database string) (string, error) {
	var snap string
	err := s.inDatabaseKept(ctx, database, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT pg_current_snapshot()::text`).Scan(&snap)
	})
	if err != nil {
		return "", fmt.Errorf("read a snapshot of %q at %s: %w", database, s, err)
	}
	return snap, nil
}
