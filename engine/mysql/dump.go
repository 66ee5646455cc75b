package mysql

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math/big"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

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
	// Parts are the dump's sections (engine.Manifest.DumpParts).
	Parts []engine.DumpPart
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

// Names of a dump's parts.
const (
	partSchema = "schema"
	partData   = "data"
	partPost   = "post"
	// partWhole is a dump in one run (not listed in the manifest).
	partWhole = "whole"
)

// dumpPart is one run of the dump tool: the arguments that select what it
// writes.
type dumpPart struct {
	name string
	args []string
}

// dumpParts split a dump into what must come before the rows (tables,
// sequences, routines, views: mariadb-dump writes views after routines, so
// a view may call a function), the rows alone, and what must come after
// them (triggers, which would otherwise fire while rows load). The data
// part holds only INSERT statements and session settings, no DDL, no
// LOCK TABLES: an import may run its statements over several sessions
// (loadData). The three are one script when run in order.
var dumpParts = []dumpPart{
	{partSchema, []string{"--no-data", "--skip-triggers", "--routines"}},
	{partData, []string{"--no-create-info", "--skip-triggers", "--skip-add-locks", "--skip-disable-keys"}},
	{partPost, []string{"--no-data", "--no-create-info", "--triggers"}},
}

// Dump writes a consistent SQL dump of db to w with the server family's
// dump tool (--single-transaction). With parts, it is taken in three parts
// (dumpParts), each one run of the tool over its own snapshot: writes to
// the database are blocked, so all three see the same data; without, in
// one run. Binary columns are in hex; there is no
// CREATE DATABASE (the import creates it with the recorded character set).
// Events follow in a section of our own (mariadb-dump --events fails on
// database names holding a quote or a backslash, and when the event
// scheduler is disabled), then our trailer. counted, when not nil, is kept
// up to date with the bytes written.
//
// A dump counts only when every run of the tool exits 0 and its output
// ends with the tool's completion trailer: a tool that dies midway, or is
// killed, never yields a dump that looks whole.
func (s *Server) Dump(ctx context.Context, db string, parts bool, w io.Writer, counted *atomic.Int64) (DumpStats, error) {
	tool, version, err := s.tool(ctx, dumpTool)
	if err != nil {
		return DumpStats{}, err
	}
	common := s.dumpArgs(version)
	cw := engine.CountWriter(w, counted)
	stats := DumpStats{Tool: tool, ToolVersion: version}
	runs := dumpParts
	if !parts {
		runs = []dumpPart{{partWhole, []string{"--routines", "--triggers"}}}
	}
	for _, part := range runs {
		before := cw.N.Load()
		if pw, ok := w.(engine.PartWriter); ok {
			if err := pw.StartPart(part.name); err != nil {
				return stats, fmt.Errorf("dump %q from %s (%s part): %w", db, s, part.name, err)
			}
		}
		name := part.name
		if !parts {
			name = ""
		}
		err := s.dumpPart(ctx, tool, append(append([]string(nil), common...), part.args...), db, name, cw)
		stats.Bytes = cw.N.Load()
		if err != nil {
			return stats, err
		}
		if part.name == partPost || part.name == partWhole {
			if err := s.dumpEvents(ctx, db, cw); err != nil {
				return stats, err
			}
			if _, err := cw.Write(dumpTrailer); err != nil {
				return stats, fmt.Errorf("dump %q from %s: %w", db, s, err)
			}
		}
		stats.Bytes = cw.N.Load()
		if parts {
			stats.Parts = append(stats.Parts, engine.DumpPart{Name: part.name, Bytes: stats.Bytes - before})
		}
	}
	return stats, nil
}

// dumpArgs are the dump tool's options common to every run (version: the
// tool's).
func (s *Server) dumpArgs(version string) []string {
	common := []string{
		"--single-transaction", "--skip-events", "--hex-blob",
		"--default-character-set=utf8mb4", "--max-allowed-packet=1G", "--no-tablespaces",
	}
	if toolFamily(version) == MySQL {
		// GTID_PURGED in a dump of one database would fail the import
		common = append(common, "--set-gtid-purged=OFF")
	}
	return common
}

// dumpPart runs the dump tool once with args over db, writing to w; part
// names the part in errors ("" for a whole dump). The run counts only if
// the tool exits 0 and its output ends with its completion trailer.
func (s *Server) dumpPart(ctx context.Context, tool string, args []string, db, part string, w io.Writer) error {
	tail := &tailBuffer{Max: 256}
	cw := engine.CountWriter(w, nil)
	err := s.run(ctx, tool, append(append([]string(nil), args...), "--", db), io.MultiWriter(cw, tail), nil)
	what := fmt.Sprintf("dump %q from %s", db, s)
	if part != "" {
		what += " (" + part + " part)"
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !bytes.Contains(tail.Bytes(), toolTrailer) {
		return fmt.Errorf("%s: %s exited 0 but its output (%d bytes) lacks the completion trailer %q: treating it as truncated", what, tool, cw.N.Load(), toolTrailer)
	}
	return nil
}

// dumpEvents writes the database's events as SHOW CREATE EVENT gives them
// (with their definer, state and schedule), each under the session
// settings it was created with, as the dump tools do.
func (s *Server) dumpEvents(ctx context.Context, db string, w io.Writer) error {
	names, err := s.eventNames(ctx, db)
	if err != nil {
		return err
	}
	return s.writeEvents(ctx, db, names, w)
}

// eventNames lists db's events, by name.
func (s *Server) eventNames(ctx context.Context, db string) ([]string, error) {
	var names []string
	err := s.queryRows(ctx, "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE "+schemaIs("EVENT_SCHEMA")+" ORDER BY EVENT_NAME",
		[]any{db, db}, func(rows *sql.Rows) error {
			var n string
			err := rows.Scan(&n)
			names = append(names, n)
			return err
		})
	if err != nil {
		return nil, fmt.Errorf("list the events of %q on %s: %w", db, s, err)
	}
	return names, nil
}

// writeEvents writes the definitions of db's events names (dumpEvents).
func (s *Server) writeEvents(ctx context.Context, db string, names []string, w io.Writer) error {
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
	return s.checksums(ctx, db, tables, 1, done)
}

// checksums is Checksums over up to jobs sessions at once: a table per
// session, and a large table with a one-column integer key in jobs ranges
// of that key, whose counts and sums add up to the table's.
func (s *Server) checksums(ctx context.Context, db string, tables []string, jobs int, done func(i, n int)) ([]engine.TableSum, error) {
	if len(tables) == 0 {
		// Nothing to read: not even the catalogue (an online cutover with
		// no table changed since it was verified asks for none).
		return []engine.TableSum{}, nil
	}
	cols, pri, err := s.tableColumnsKeys(ctx, db)
	if err != nil {
		return nil, err
	}
	tables = append([]string(nil), tables...)
	sort.Strings(tables)
	for _, t := range tables {
		if _, ok := cols[t]; !ok {
			return nil, engine.Permanentf("table %s of %q has no columns on %s (missing?)", t, db, s)
		}
	}
	large := map[string]bool{}
	if jobs > 1 {
		if large, err = s.largeTables(ctx, db); err != nil {
			return nil, err
		}
	}
	// One pool of jobs sessions for every table and range.
	type task struct {
		table int
		where string
	}
	var tasks []task
	parts := make([][]engine.TableSum, len(tables))
	for i, t := range tables {
		wheres := []string{""}
		if k := pri[t]; large[t] && len(k) == 1 && k[0] != "" {
			ranges, err := s.keyRanges(ctx, db, t, k[0], jobs)
			if err != nil {
				return nil, err
			}
			if len(ranges) > 0 {
				wheres = ranges
			}
		}
		for _, w := range wheres {
			tasks = append(tasks, task{i, w})
		}
		parts[i] = make([]engine.TableSum, 0, len(wheres)) // full: the table is done
	}
	var mu sync.Mutex
	finished := 0
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, jobs))
	for _, tk := range tasks {
		g.Go(func() error {
			sum, err := s.tableChecksum(gctx, db, tables[tk.table], cols[tables[tk.table]], tk.where)
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			parts[tk.table] = append(parts[tk.table], sum)
			if len(parts[tk.table]) == cap(parts[tk.table]) {
				finished++
				if done != nil {
					done(finished, len(tables))
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	sums := make([]engine.TableSum, len(tables))
	for i, ps := range parts {
		if sums[i], err = addSums(ps); err != nil {
			return nil, fmt.Errorf("checksum table %s of %q on %s: %w", tables[i], db, s, err)
		}
	}
	return sums, nil
}

// tableColumns reads the columns of db's tables, in order, by table.
func (s *Server) tableColumns(ctx context.Context, db string) (map[string][]string, error) {
	cols, _, err := s.tableColumnsKeys(ctx, db)
	return cols, err
}

// tableColumnsKeys reads the columns of db's tables, in order, by table,
// and their primary key columns ("" for a non-integer one).
func (s *Server) tableColumnsKeys(ctx context.Context, db string) (cols, pri map[string][]string, err error) {
	cols, pri = map[string][]string{}, map[string][]string{}
	err = s.queryRows(ctx, "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_KEY, DATA_TYPE FROM information_schema.COLUMNS WHERE "+schemaIs("TABLE_SCHEMA")+
		" ORDER BY TABLE_NAME, ORDINAL_POSITION", []any{db, db}, func(rows *sql.Rows) error {
		var t, c, key, typ string
		if err := rows.Scan(&t, &c, &key, &typ); err != nil {
			return err
		}
		cols[t] = append(cols[t], c)
		if key == "PRI" {
			if !integerType(typ) {
				c = ""
			}
			pri[t] = append(pri[t], c)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read the columns of %q on %s: %w", db, s, s.connectError(err))
	}
	return cols, pri, nil
}

// addSums adds up the counts and checksums of a table's ranges (one range:
// as the server gave it).
func addSums(ps []engine.TableSum) (engine.TableSum, error) {
	if len(ps) == 1 {
		return ps[0], nil
	}
	sum := engine.TableSum{Name: ps[0].Name}
	total := new(big.Int)
	for _, p := range ps {
		v, ok := new(big.Int).SetString(p.Checksum, 10)
		if !ok {
			return sum, fmt.Errorf("the server returned the checksum %q, not a number", p.Checksum)
		}
		total.Add(total, v)
		sum.Rows += p.Rows
	}
	sum.Checksum = total.String()
	return sum, nil
}

// chunkRows is the estimated row count from which a table with a
// one-column integer key is checksummed in ranges at once (the tests set
// it to 0: every such table in ranges).
var chunkRows = 200_000

func integerType(t string) bool {
	switch strings.ToLower(t) {
	case "tinyint", "smallint", "mediumint", "int", "integer", "bigint":
		return true
	}
	return false
}

// largeTables names the base tables the server estimates at chunkRows rows
// or more.
func (s *Server) largeTables(ctx context.Context, db string) (map[string]bool, error) {
	large := map[string]bool{}
	err := s.queryRows(ctx, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE "+schemaIs("TABLE_SCHEMA")+
		" AND TABLE_TYPE = 'BASE TABLE' AND TABLE_ROWS >= ?", []any{db, db, chunkRows}, func(rows *sql.Rows) error {
		var t string
		err := rows.Scan(&t)
		large[t] = true
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read the table sizes of %q on %s: %w", db, s, err)
	}
	return large, nil
}

// keyRanges splits the values of table t's integer key into up to n
// ranges, as WHERE conditions that together cover every row; none for an
// empty table.
func (s *Server) keyRanges(ctx context.Context, db, t, key string, n int) ([]string, error) {
	qk := ident.QuoteMySQL(key)
	var lo, hi sql.NullString
	if err := s.db.QueryRowContext(ctx, "SELECT CAST(MIN("+qk+") AS CHAR), CAST(MAX("+qk+") AS CHAR) FROM "+
		ident.QuoteMySQL(db)+"."+ident.QuoteMySQL(t)).Scan(&lo, &hi); err != nil {
		return nil, fmt.Errorf("read the key range of table %s of %q on %s: %w", t, db, s, err)
	}
	minK, ok1 := new(big.Int).SetString(lo.String, 10)
	maxK, ok2 := new(big.Int).SetString(hi.String, 10)
	if !lo.Valid || !ok1 || !ok2 {
		return nil, nil
	}
	one := big.NewInt(1)
	width := new(big.Int).Sub(maxK, minK)
	width.Div(width, big.NewInt(int64(n))).Add(width, one)
	var ranges []string
	for from := minK; from.Cmp(maxK) <= 0; {
		to := new(big.Int).Add(from, width)
		to.Sub(to, one)
		if len(ranges) == n-1 || to.Cmp(maxK) > 0 {
			to.Set(maxK)
		}
		ranges = append(ranges, qk+" BETWEEN "+from.String()+" AND "+to.String())
		from = new(big.Int).Add(to, one)
	}
	return ranges, nil
}

// tableChecksum computes one table's row count and checksum, of the rows
// where says (all if empty).
func (s *Server) tableChecksum(ctx context.Context, db, t string, cols []string, where string) (engine.TableSum, error) {
	return s.tableChecksumOn(ctx, s.db, db, t, cols, where)
}

// rowQuerier is a pool or one session (a snapshot's).
type rowQuerier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// tableChecksumOn is tableChecksum on q.
func (s *Server) tableChecksumOn(ctx context.Context, q rowQuerier, db, t string, cols []string, where string) (engine.TableSum, error) {
	query := "SELECT COUNT(*), CAST(COALESCE(SUM(" + rowHashExpr(cols) + "), 0) AS CHAR) FROM " +
		ident.QuoteMySQL(db) + "." + ident.QuoteMySQL(t)
	if where != "" {
		query += " WHERE " + where
	}
	sum := engine.TableSum{Name: t}
	if len(cols) == 0 {
		return sum, engine.Permanentf("table %s of %q has no columns on %s (missing?)", t, db, s)
	}
	if err := q.QueryRowContext(ctx, query).Scan(&sum.Rows, &sum.Checksum); err != nil {
		if errNo(err) == 1146 { // no such table
			return sum, engine.Permanentf("table %s of %q is missing on %s", t, db, s)
		}
		return sum, fmt.Errorf("checksum table %s of %q on %s: %w", t, db, s, err)
	}
	return sum, nil
}

// Load runs the family's client on the destination with the dump from r
// as its input, into database db (which must exist). The client stops at
// the first failing statement. If reading r fails (a corrupt or truncated
// object), the client is killed before it sees the end of its input.
// counted, when not nil, is kept up to date with the bytes read.
func (s *Server) Load(ctx context.Context, db string, r io.Reader, counted *atomic.Int64) error {
	if err := s.loadScript(ctx, db, engine.CountReader(r, counted), dumpTrailer); err != nil {
		return fmt.Errorf("import into %q on %s: %w", db, s, err)
	}
	return nil
}

// loadScript runs the client with r as its input, which must end with
// trailer (else the client is killed before it sees the end).
func (s *Server) loadScript(ctx context.Context, db string, r io.Reader, trailer []byte) error {
	tool, _, err := s.tool(ctx, clientTool)
	if err != nil {
		return err
	}
	tail := &tailBuffer{Max: 256}
	args := []string{"--batch", "--binary-mode", "--default-character-set=utf8mb4", "--max-allowed-packet=1G", "--database=" + db}
	return clientError(s.run(ctx, tool, args, io.Discard, &trailerCheck{r: io.TeeReader(r, tail), tail: tail, want: trailer}))
}

// clientErrorLine is how the client reports a statement the server
// refused: "ERROR 1114 (HY000) at line 52: The table 'orders' is full".
var clientErrorLine = regexp.MustCompile(`(?m)^ERROR (\d+) \([0-9A-Z]{5}\)( at line \d+)?: .*$`)

// quotedValue is a value the server quotes in an error about a row
// ("Duplicate entry 'alice@example.com' for key 'email'", "Incorrect
// integer value: 'x' for column"): the customer's data.
var quotedValue = regexp.MustCompile(`(Duplicate entry |[Vv]alue: |value )'(?:[^'\\\n]|\\.|'')*'`)

// clientError keeps, of what a failed client said, its ERROR lines (with
// the values they quote replaced by '…'): the
// client also echoes the refused statement, which is the customer's data
// (it must not reach rows, events and logs) and can be megabytes long.
func clientError(err error) error {
	var te *engine.ToolError
	if !errors.As(err, &te) {
		return err
	}
	if lines := clientErrorLine.FindAllString(te.Stderr, 3); len(lines) > 0 {
		te.Stderr = quotedValue.ReplaceAllString(strings.Join(lines, "; "), "$1'…'")
	} else if len(te.Stderr) > 1000 {
		te.Stderr = "…" + te.Stderr[len(te.Stderr)-1000:]
	}
	return err
}

// Server errors that mean the disk is full: ER_RECORD_FILE_FULL ("The
// table ... is full": InnoDB could not extend a tablespace) and
// ER_DISK_FULL; errno 28 is ENOSPC in "Error writing file" and friends.
var diskFullErrors = regexp.MustCompile(`^ERROR (1114|1021) |[Ee]rr(no|code): 28\b|No space left on device`)

// diskFull turns a load that failed because the server's disk is full
// into a permanent error saying so: retrying at once would fill it again.
func (s *Server) diskFull(err error) error {
	full := false
	if n := errNo(err); n == 1114 || n == 1021 {
		full = true
	}
	var te *engine.ToolError
	if errors.As(err, &te) {
		for _, line := range strings.Split(te.Stderr, "; ") {
			full = full || diskFullErrors.MatchString(line)
		}
	}
	if !full {
		return err
	}
	return engine.Permanentf("%s is out of disk space (free space there, or choose another destination, then migrate retry): %w", s, err)
}

// ErrNoTrailer: a dump being imported ended without its completion
// trailer.
var ErrNoTrailer = errors.New("the dump ends without its completion trailer (truncated)")

// trailerCheck fails the read that ends the stream if the dump lacks its
// trailer, so that the client is killed before the end of its input.
type trailerCheck struct {
	r    io.Reader
	tail *tailBuffer
	want []byte
}

func (t *trailerCheck) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if errors.Is(err, io.EOF) && !bytes.Contains(t.tail.Bytes(), t.want) {
		return n, engine.Permanentf("%w", ErrNoTrailer)
	}
	return n, err
}
