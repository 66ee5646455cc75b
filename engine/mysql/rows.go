package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

// Verification by keys (docs/online.md, "A table written all the time"):
// a table the customer writes all the time has row events between any two
// reads, so it is never "unchanged since verified" and the cutover would
// checksum it whole at both servers while writes are blocked — longer the
// larger it is. Instead the rows it wrote are named by their keys, read
// from the source's binary log (ChangedKeys: the log is the record of
// every write), and only those rows are compared (RowHashes).
//
// While streaming, the source's checksum in a snapshot at P1 and the
// destination's with its stream paused at P2 differ only by the rows
// written between P1 and P2: each side's checksum less those rows' hashes
// (a checksum is the sum of its rows' hashes) must agree, and those rows
// are left pending. Under the block only the pending rows and those the
// log shows written since P2 are compared, key by key at both servers.
//
// What it guarantees: every row the source wrote after P1 is compared at
// the cutover, and every other row was equal at both servers at P2 (the
// sums less the written rows agreed) and nothing but the stream writes to
// the destination's copy. What it does not: a row changed at the
// destination by something other than the stream after P2 (nothing may
// write there before the cutover: the customer's name still leads to the
// source), and CRC-32 collisions (per row, and of the sums).
//
// Keys are integer primary keys (the ids nearly every table has): their
// text is the same in the log and at both servers. A table with another
// key, or none, is checksummed whole as before.

// KeyedTable says how a table's rows are named: its integer primary key's
// columns, in key order.
type KeyedTable struct {
	Table string
	Key   []string
	// meta: the table's columns as Keyed read them (the log's rows are
	// decoded and the rows hashed with them: no catalogue read under the
	// block).
	meta *tableMeta
}

// Keyed returns which of db's tables have an integer primary key (those
// verification by keys can name rows of), by table.
func (s *Server) Keyed(ctx context.Context, db string) (map[string]KeyedTable, error) {
	metas, err := s.tableMetas(ctx, db, "")
	if err != nil {
		return nil, err
	}
	out := map[string]KeyedTable{}
	for t, m := range metas {
		if len(m.key) == 0 {
			continue
		}
		k := KeyedTable{Table: t, meta: m}
		for _, i := range m.key {
			if m.intBits[i] == 0 {
				k.Key = nil
				break
			}
			k.Key = append(k.Key, m.cols[i])
		}
		if k.Key != nil {
			out[t] = k
		}
	}
	return out, nil
}

// ChangedKeys is what the source's log says was written to some tables
// between two positions.
type ChangedKeys struct {
	// Keys are the keys (text: the key's columns' values, comma-separated)
	// of the rows each table's row events wrote: an insert's row, an
	// update's row before and after, a deleted row.
	Keys map[string]map[string]bool
	// Over are the tables that had more than the limit, or were written by
	// a statement that names no rows (TRUNCATE): not listed.
	Over map[string]bool
}

// List returns table's keys, sorted.
func (c *ChangedKeys) List(table string) []string {
	out := make([]string, 0, len(c.Keys[table]))
	for k := range c.Keys[table] {
		out = append(out, k)
	}
	sortKeys(out)
	return out
}

// ChangedKeysBetween reads this (source) server's binary log from from to
// to as a replica does, with the replica id serverID (unique among its
// replicas at the time), and returns the keys of the rows that tables
// (integer-keyed tables of db) were written at; a table with more than
// limit is only marked Over.
func (s *Server) ChangedKeysBetween(ctx context.Context, db string, tables map[string]KeyedTable, from, to BinlogPos, serverID uint32, limit int) (*ChangedKeys, error) {
	out := &ChangedKeys{Keys: map[string]map[string]bool{}, Over: map[string]bool{}}
	if len(tables) == 0 || from.Compare(to) >= 0 {
		return out, nil
	}
	fail := func(err error) (*ChangedKeys, error) {
		return nil, fmt.Errorf("read the rows written in %q at %s from %s to %s: %w", db, s, from, to, err)
	}
	host, port, err := net.SplitHostPort(s.srv.Address)
	if err != nil {
		return fail(fmt.Errorf("the address %q is not host:port", s.srv.Address))
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return fail(fmt.Errorf("the address %q has no port", s.srv.Address))
	}
	metas := map[string]*tableMeta{}
	for t, k := range tables {
		m := k.meta
		if m == nil {
			var err error
			if m, err = s.tableMetaOf(ctx, db, t); err != nil {
				return nil, err
			}
		}
		metas[t] = m
	}
	syncer, stream, err := s.tls.startBinlog(s.srv, replication.BinlogSyncerConfig{
		ServerID: serverID, Flavor: gomysql.MariaDBFlavor, Host: host, Port: uint16(p),
		User: s.srv.User, Password: s.srv.Password,
		UseDecimal: true, TimestampStringLocation: time.UTC,
		ReadTimeout: 10 * time.Second, Logger: slog.New(slog.DiscardHandler),
		RowsEventDecodeFunc: func(e *replication.RowsEvent, data []byte) error {
			pos, err := e.DecodeHeader(data)
			if err != nil || e.Table == nil || string(e.Table.Schema) != db || metas[string(e.Table.Table)] == nil {
				return err
			}
			return e.DecodeData(pos, data)
		},
	}, gomysql.Position{Name: from.File, Pos: uint32(from.Pos)})
	if err != nil {
		return fail(err)
	}
	defer syncer.Close()
	// The log up to to is written already: it is read at once.
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	at := from
	for {
		ev, err := stream.GetEvent(ctx)
		if err != nil {
			var me *gomysql.MyError
			if errors.As(err, &me) && me.Code == 1236 {
				return fail(fmt.Errorf("%w: %s", ErrLogPurged, redactServerMessage(me.Message)))
			}
			return fail(err)
		}
		h := ev.Header
		switch e := ev.Event.(type) {
		case *replication.RotateEvent:
			if h.Timestamp != 0 || h.LogPos != 0 || string(e.NextLogName) != at.File {
				at = BinlogPos{File: string(e.NextLogName), Pos: int64(e.Position)}
			}
		case *replication.QueryEvent:
			// A statement that may have written to db names no rows
			// (TRUNCATE): no table can be verified by keys across it.
			q := strings.TrimSpace(string(e.Query))
			if len(e.Schema) > 0 {
				q = "use " + ident.QuoteMySQL(string(e.Schema)) + "; " + q
			}
			if !strings.EqualFold(string(e.Query), "BEGIN") && !strings.EqualFold(string(e.Query), "COMMIT") && schemaStatement(q, db) {
				for t := range tables {
					out.Over[t] = true
					delete(out.Keys, t)
				}
			}
		case *replication.RowsEvent:
			t := string(e.Table.Table)
			m := metas[t]
			if string(e.Table.Schema) != db || m == nil || out.Over[t] {
				break
			}
			if int(e.ColumnCount) != len(m.cols) {
				return fail(fmt.Errorf("table %s has %d columns in the log at %s:%d but %d now: its schema changed", ident.QuoteMySQL(t), e.ColumnCount, at.File, h.LogPos, len(m.cols)))
			}
			keys := out.Keys[t]
			if keys == nil {
				keys = map[string]bool{}
				out.Keys[t] = keys
			}
			for _, row := range e.Rows {
				keys[m.keyText(row)] = true
			}
			if len(keys) > limit {
				out.Over[t] = true
				delete(out.Keys, t)
			}
		}
		if h.LogPos != 0 {
			at.Pos = int64(h.LogPos)
		}
		if at.Compare(to) >= 0 {
			return out, nil
		}
	}
}

// keyText is a row image's key as text: its key columns' values, as the
// server writes them, comma-separated.
func (m *tableMeta) keyText(row []any) string {
	var b strings.Builder
	for j, i := range m.key {
		if j > 0 {
			b.WriteByte(',')
		}
		if i < len(row) {
			fmt.Fprint(&b, m.value(i, row[i]))
		}
	}
	return b.String()
}

// rowsQuerier runs a query: a server's pool, or a snapshot's session.
type rowsQuerier interface {
	rowQuerier
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// keyBatch is how many keys one query looks up.
const keyBatch = 500

// RowHashes returns the hashes (each row's term of the table's checksum)
// of table's rows whose keys are keys, at this server now, by key; a key
// without a row is absent.
func (s *Server) RowHashes(ctx context.Context, db string, t KeyedTable, keys []string) (map[string]int64, error) {
	return s.rowHashesOn(ctx, s.db, db, t, keys)
}

func (s *Server) rowHashesOn(ctx context.Context, q rowsQuerier, db string, t KeyedTable, keys []string) (map[string]int64, error) {
	out := make(map[string]int64, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	var cols []string
	if t.meta != nil {
		cols = t.meta.cols
	} else {
		all, err := s.tableColumns(ctx, db)
		if err != nil {
			return nil, err
		}
		cols = all[t.Table]
	}
	key := make([]string, len(t.Key))
	for i, c := range t.Key {
		key[i] = ident.QuoteMySQL(c)
	}
	from := ident.QuoteMySQL(db) + "." + ident.QuoteMySQL(t.Table)
	sel := "SELECT CONCAT_WS(',', " + strings.Join(key, ", ") + "), " + rowHashExpr(cols) + " FROM " + from + " WHERE "
	for start := 0; start < len(keys); start += keyBatch {
		batch := keys[start:min(start+keyBatch, len(keys))]
		var where strings.Builder
		var args []any
		if len(key) == 1 {
			where.WriteString(key[0] + " IN (")
			for i, k := range batch {
				if i > 0 {
					where.WriteString(", ")
				}
				where.WriteString("?")
				args = append(args, k)
			}
			where.WriteString(")")
		} else {
			for i, k := range batch {
				vals := strings.Split(k, ",")
				if len(vals) != len(key) {
					return nil, fmt.Errorf("key %q of %s has %d values, the table's key %d columns", k, t.Table, len(vals), len(key))
				}
				if i > 0 {
					where.WriteString(" OR ")
				}
				where.WriteString("(")
				for j, c := range key {
					if j > 0 {
						where.WriteString(" AND ")
					}
					where.WriteString(c + " = ?")
					args = append(args, vals[j])
				}
				where.WriteString(")")
			}
		}
		if err := readHashes(ctx, q, sel+where.String(), args, out); err != nil {
			return nil, fmt.Errorf("read %d rows of %s of %q at %s: %w", len(batch), t.Table, db, s, err)
		}
	}
	return out, nil
}

// readHashes reads (key, hash) rows of query into out.
func readHashes(ctx context.Context, q rowsQuerier, query string, args []any, out map[string]int64) error {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var k string
		var h int64
		if err := rows.Scan(&k, &h); err != nil {
			return err
		}
		out[k] = h
	}
	return rows.Err()
}

// rowHashExpr is a row's term of a table's checksum (tableChecksumOn sums
// it): the same at every server.
func rowHashExpr(cols []string) string {
	parts := make([]string, len(cols))
	for j, c := range cols {
		parts[j] = "IFNULL(CRC32(" + ident.QuoteMySQL(c) + "), 'N')"
	}
	return "CRC32(CONCAT_WS(',', " + strings.Join(parts, ", ") + "))"
}

// sortKeys sorts keys numerically column by column (as text when a value
// is not a number).
func sortKeys(keys []string) {
	less := func(a, b string) int {
		as, bs := strings.Split(a, ","), strings.Split(b, ",")
		for i := 0; i < len(as) && i < len(bs); i++ {
			x, xerr := strconv.ParseFloat(as[i], 64)
			y, yerr := strconv.ParseFloat(bs[i], 64)
			switch {
			case xerr == nil && yerr == nil && x != y:
				if x < y {
					return -1
				}
				return 1
			case as[i] != bs[i]:
				return strings.Compare(as[i], bs[i])
			}
		}
		return len(as) - len(bs)
	}
	slices.SortFunc(keys, less)
}

// ---- snapshots ----

// Snapshot is a consistent snapshot of a server (a read-only transaction
// on a session of its own) and the binary log position it lies at: what
// it reads is the server's data exactly at Pos.
type Snapshot struct {
	s   *Server
	c   *sql.Conn
	Pos BinlogPos
}

// OpenSnapshot starts a snapshot; Close ends it.
func (s *Server) OpenSnapshot(ctx context.Context) (*Snapshot, error) {
	c, err := s.conn(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := c.ExecContext(ctx, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"); err != nil {
		c.Close()
		return nil, fmt.Errorf("start a snapshot of %s: %w", s, err)
	}
	sn := &Snapshot{s: s, c: c}
	err = func() error {
		rows, err := c.QueryContext(ctx, "SHOW STATUS LIKE 'binlog_snapshot_%'")
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var k, v string
			if err := rows.Scan(&k, &v); err != nil {
				return err
			}
			switch k {
			case "Binlog_snapshot_file":
				sn.Pos.File = v
			case "Binlog_snapshot_position":
				sn.Pos.Pos, _ = strconv.ParseInt(v, 10, 64)
			}
		}
		return rows.Err()
	}()
	if err != nil {
		sn.Close(ctx)
		return nil, fmt.Errorf("read the binary log position of a snapshot of %s: %w", s, err)
	}
	if sn.Pos.IsZero() {
		sn.Close(ctx)
		return nil, engine.Permanentf("%s gives no binary log position for a snapshot (is log_bin on?)", s)
	}
	return sn, nil
}

// Close ends the snapshot (even once ctx is done).
func (sn *Snapshot) Close(ctx context.Context) {
	_, _ = sn.c.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
	_ = sn.c.Close()
}

// Checksums checksums db's tables in the snapshot, in the order given.
func (sn *Snapshot) Checksums(ctx context.Context, db string, tables []string) ([]engine.TableSum, error) {
	cols, err := sn.s.tableColumns(ctx, db)
	if err != nil {
		return nil, err
	}
	sums := make([]engine.TableSum, len(tables))
	for i, t := range tables {
		if sums[i], err = sn.s.tableChecksumOn(ctx, sn.c, db, t, cols[t], ""); err != nil {
			return nil, err
		}
	}
	return sums, nil
}

// RowHashes is Server.RowHashes in the snapshot.
func (sn *Snapshot) RowHashes(ctx context.Context, db string, t KeyedTable, keys []string) (map[string]int64, error) {
	return sn.s.rowHashesOn(ctx, sn.c, db, t, keys)
}
