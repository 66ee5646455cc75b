package mysql

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

// Position is where a dump's snapshot lies: taken after writes were
// blocked, so the dump and any later read of the source describe it.
type Position struct {
	// At is the source server's clock (UTC).
	At time.Time
	// BinlogFile and BinlogPosition locate it in the binary log, GTID in
	// the GTID history (empty where the server keeps none or the account
	// may not read them).
	BinlogFile     string
	BinlogPosition int64
	GTID           string
}

// Position reads the server's clock and binary log position. Writes to the
// database are blocked, so any moment after blocking is its consistency
// point: no global lock (FLUSH TABLES WITH READ LOCK) is needed, which
// would stall every other database of the server.
func (s *Server) Position(ctx context.Context) (Position, error) {
	var p Position
	if err := s.db.QueryRowContext(ctx, "SELECT UTC_TIMESTAMP(6)").Scan(&p.At); err != nil {
		return p, fmt.Errorf("read the clock of %s: %w", s, s.connectError(err))
	}
	p.At = p.At.UTC()
	status := "SHOW MASTER STATUS"
	if s.family == MySQL && s.atLeast(8, 2, 0) {
		status = "SHOW BINARY LOG STATUS"
	}
	if err := s.binlogPosition(ctx, status, &p); err != nil {
		s.log.Debug("binary log position not read", "err", err)
	}
	gtidVar := "@@gtid_executed"
	if s.family == MariaDB {
		gtidVar = "@@gtid_binlog_pos"
	}
	var gtid sql.NullString
	if err := s.db.QueryRowContext(ctx, "SELECT "+gtidVar).Scan(&gtid); err == nil {
		p.GTID = strings.ReplaceAll(gtid.String, "\n", "")
	}
	return p, nil
}

// binlogPosition reads the binary log file and position, where the server
// keeps a binary log (no row: it has none).
func (s *Server) binlogPosition(ctx context.Context, status string, p *Position) error {
	rows, err := s.db.QueryContext(ctx, status)
	if err != nil {
		return err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil || len(cols) < 2 || !rows.Next() {
		return err
	}
	vals := make([]any, len(cols))
	for i := range vals {
		vals[i] = new(sql.RawBytes)
	}
	if err := rows.Scan(vals...); err != nil {
		return err
	}
	p.BinlogFile = string(*vals[0].(*sql.RawBytes))
	_, _ = fmt.Sscan(string(*vals[1].(*sql.RawBytes)), &p.BinlogPosition)
	return rows.Err()
}

// DumpStats describes a finished dump.
type DumpStats struct {
	Bytes       int64
	Tool        string
	ToolVersion string
}

// toolTrailer ends every complete output of mariadb-dump and mysqldump
// (comments are on by default); dumpTrailer ends every complete dump of
// ours, after the events section this package writes itself.
var (
	toolTrailer = []byte("-- Dump completed")
	dumpTrailer = []byte("-- fleetmigrate: dump completed\n")
)

// eventDelimiter ends statements in the events section (event bodies may
// hold semicolons).
const eventDelimiter = ";;fleetmigrate"

// Dump writes a consistent SQL dump of db to w with the server family's
// dump tool: one transaction's snapshot (--single-transaction), routines,
// triggers, binary columns in hex; no CREATE DATABASE (the import creates
// it with the recorded character set). Events follow in a section of our
// own (mariadb-dump --events fails on database names holding a quote or a
// backslash, and when the event scheduler is disabled), then our trailer.
// counted, when not nil, is kept up to date with the bytes written.
//
// A dump counts only when the tool exits 0, and its output ends with the
// tool's completion trailer: a tool that dies midway, or is killed, never
// yields a dump that looks whole.
func (s *Server) Dump(ctx context.Context, db string, w io.Writer, counted *atomic.Int64) (DumpStats, error) {
	tool, version, err := s.tool(ctx, dumpTool)
	if err != nil {
		return DumpStats{}, err
	}
	args := []string{
		"--single-transaction", "--routines", "--triggers", "--skip-events", "--hex-blob",
		"--default-character-set=utf8mb4", "--max-allowed-packet=1G", "--no-tablespaces",
	}
	if toolFamily(version) == MySQL {
		// GTID_PURGED in a dump of one database would fail the import
		args = append(args, "--set-gtid-purged=OFF")
	}
	args = append(args, "--", db)
	tail := &tailBuffer{Max: 256}
	cw := engine.CountWriter(w, counted)
	err = s.run(ctx, tool, args, io.MultiWriter(cw, tail), nil)
	stats := DumpStats{Bytes: cw.N.Load(), Tool: tool, ToolVersion: version}
	if err != nil {
		return stats, fmt.Errorf("dump %q from %s: %w", db, s, err)
	}
	if !bytes.Contains(tail.Bytes(), toolTrailer) {
		return stats, fmt.Errorf("dump %q from %s: %s exited 0 but its output (%d bytes) lacks the completion trailer %q: treating it as truncated",
			db, s, tool, stats.Bytes, toolTrailer)
	}
	if err := s.dumpEvents(ctx, db, cw); err != nil {
		return stats, err
	}
	if _, err := cw.Write(dumpTrailer); err != nil {
		return stats, fmt.Errorf("dump %q from %s: %w", db, s, err)
	}
	stats.Bytes = cw.N.Load()
	return stats, nil
}

// dumpEvents writes the database's events as SHOW CREATE EVENT gives them
// (with their definer, state and schedule), each under the session
// settings it was created with, as the dump tools do.
func (s *Server) dumpEvents(ctx context.Context, db string, w io.Writer) error {
	var names []string
	err := s.queryRows(ctx, "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE "+schemaIs("EVENT_SCHEMA")+" ORDER BY EVENT_NAME",
		[]any{db, db}, func(rows *sql.Rows) error {
			var n string
			err := rows.Scan(&n)
			names = append(names, n)
			return err
		})
	if err != nil {
		return fmt.Errorf("list the events of %q on %s: %w", db, s, err)
	}
	c, err := s.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	// The definitions as stored, in the character set they were written
	// in (which the section then declares), as the dump tools do.
	if _, err := c.ExecContext(ctx, "SET SESSION character_set_results = binary"); err != nil {
		return fmt.Errorf("read the events of %q on %s: %w", db, s, err)
	}
	var b bytes.Buffer
	b.WriteString("\n-- fleetmigrate: events\n")
	if len(names) > 0 {
		b.WriteString("DELIMITER " + eventDelimiter + "\n")
		b.WriteString("SET @fleetmigrate_sql_mode = @@sql_mode, @fleetmigrate_time_zone = @@time_zone, " +
			"@fleetmigrate_cs = @@character_set_client, @fleetmigrate_coll = @@collation_connection" + eventDelimiter + "\n")
	}
	for _, n := range names {
		var event, sqlMode, tz, create, cs, coll, dbColl []byte
		err := c.QueryRowContext(ctx, "SHOW CREATE EVENT "+ident.QuoteMySQL(db)+"."+ident.QuoteMySQL(n)).
			Scan(&event, &sqlMode, &tz, &create, &cs, &coll, &dbColl)
		if err != nil {
			return fmt.Errorf("read event %s of %q on %s: %w", n, db, s, err)
		}
		if bytes.Contains(create, []byte(eventDelimiter)) {
			return engine.Permanentf("event %s of %q contains the dump's delimiter %q", n, db, eventDelimiter)
		}
		fmt.Fprintf(&b, "SET sql_mode = %s, time_zone = %s, character_set_client = %s, collation_connection = %s%s\n",
			sqlLiteral(string(sqlMode)), sqlLiteral(string(tz)), sqlLiteral(string(cs)), sqlLiteral(string(coll)), eventDelimiter)
		b.Write(create)
		b.WriteString(eventDelimiter + "\n")
	}
	if len(names) > 0 {
		b.WriteString("SET sql_mode = @fleetmigrate_sql_mode, time_zone = @fleetmigrate_time_zone, " +
			"character_set_client = @fleetmigrate_cs, collation_connection = @fleetmigrate_coll" + eventDelimiter + "\n")
		b.WriteString("DELIMITER ;\n")
	}
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("dump the events of %q: %w", db, err)
	}
	return nil
}

// sqlLiteral quotes a string constant for any sql_mode (no backslash
// escapes: NO_BACKSLASH_ESCAPES may be on).
func sqlLiteral(s string) string {
	if strings.ContainsAny(s, "\\\x00\n\r") {
		return "X'" + fmt.Sprintf("%X", s) + "'"
	}
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// ChecksumAlgorithm names how Checksums computes table checksums, in
// manifests.
const ChecksumAlgorithm = "mysql-rowcrc-v1: per table COUNT(*) and SUM(CRC32(CONCAT_WS(',', IFNULL(CRC32(col), 'N'), ...))) " +
	"over every column in ordinal order, session time_zone +00:00"

// Checksums computes each table's row count and checksum on the server (no
// row leaves it): the sum over rows of a CRC32 of the row, itself made of
// the CRC32 of each column's value (or N for NULL). Column-wise CRCs keep
// long values from exceeding max_allowed_packet in a concatenation, and
// the sum (not XOR) catches duplicated or lost identical rows. The answer
// does not depend on row order, storage engine, row format or server
// version, only on the values as the server renders them, which a dump
// carries as they are. done is called after each table, when not nil.
func (s *Server) Checksums(ctx context.Context, db string, tables []string, done func(i, n int)) ([]engine.TableSum, error) {
	cols := map[string][]string{}
	err := s.queryRows(ctx, "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS WHERE "+schemaIs("TABLE_SCHEMA")+
		" ORDER BY TABLE_NAME, ORDINAL_POSITION", []any{db, db}, func(rows *sql.Rows) error {
		var t, c string
		if err := rows.Scan(&t, &c); err != nil {
			return err
		}
		cols[t] = append(cols[t], c)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the columns of %q on %s: %w", db, s, s.connectError(err))
	}
	tables = append([]string(nil), tables...)
	sort.Strings(tables)
	sums := make([]engine.TableSum, 0, len(tables))
	for i, t := range tables {
		cs, ok := cols[t]
		if !ok {
			return nil, engine.Permanentf("table %s of %q has no columns on %s (missing?)", t, db, s)
		}
		parts := make([]string, len(cs))
		for j, c := range cs {
			parts[j] = "IFNULL(CRC32(" + ident.QuoteMySQL(c) + "), 'N')"
		}
		q := "SELECT COUNT(*), CAST(COALESCE(SUM(CRC32(CONCAT_WS(',', " + strings.Join(parts, ", ") + "))), 0) AS CHAR) FROM " +
			ident.QuoteMySQL(db) + "." + ident.QuoteMySQL(t)
		var sum engine.TableSum
		sum.Name = t
		if err := s.db.QueryRowContext(ctx, q).Scan(&sum.Rows, &sum.Checksum); err != nil {
			if errNo(err) == 1146 { // no such table
				return nil, engine.Permanentf("table %s of %q is missing on %s", t, db, s)
			}
			return nil, fmt.Errorf("checksum table %s of %q on %s: %w", t, db, s, err)
		}
		sums = append(sums, sum)
		if done != nil {
			done(i+1, len(tables))
		}
	}
	return sums, nil
}

// Load runs the family's client on the destination with the dump from r
// as its input, into database db (which must exist). The client stops at
// the first failing statement. If reading r fails (a corrupt or truncated
// object), the client is killed before it sees the end of its input.
// counted, when not nil, is kept up to date with the bytes read.
func (s *Server) Load(ctx context.Context, db string, r io.Reader, counted *atomic.Int64) error {
	tool, _, err := s.tool(ctx, clientTool)
	if err != nil {
		return err
	}
	tail := &tailBuffer{Max: 256}
	cr := engine.CountReader(io.TeeReader(r, tail), counted)
	args := []string{"--batch", "--binary-mode", "--default-character-set=utf8mb4", "--max-allowed-packet=1G", "--database=" + db}
	if err := s.run(ctx, tool, args, io.Discard, &trailerCheck{r: cr, tail: tail}); err != nil {
		return fmt.Errorf("import into %q on %s: %w", db, s, err)
	}
	return nil
}

// ErrNoTrailer: a dump being imported ended without its completion
// trailer.
var ErrNoTrailer = errors.New("the dump ends without its completion trailer (truncated)")

// trailerCheck fails the read that ends the stream if the dump lacks its
// trailer, so that the client is killed before the end of its input.
type trailerCheck struct {
	r    io.Reader
	tail *tailBuffer
}

func (t *trailerCheck) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if errors.Is(err, io.EOF) && !bytes.Contains(t.tail.Bytes(), dumpTrailer) {
		return n, engine.Permanentf("%w", ErrNoTrailer)
	}
	return n, err
}
