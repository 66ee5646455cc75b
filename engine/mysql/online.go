package mysql

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

// Online mode moves a MariaDB database by copying it from one consistent
// snapshot (the dump tool's, with its binary log position: no global lock)
// while the source keeps taking writes, then applying that database's row
// events from that position with a stream of our own (stream.go). Triggers
// and events are created at the destination at the cutover: before, they
// would run a second time on what the stream applies.

// BinlogPos is a position in a server's binary log.
type BinlogPos struct {
	File string `json:"file"`
	Pos  int64  `json:"pos"`
}

// ParseBinlogPos reads a position as String writes it ("file:pos").
func ParseBinlogPos(s string) (BinlogPos, error) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 {
		return BinlogPos{}, fmt.Errorf("not a binary log position: %q", s)
	}
	n, err := strconv.ParseInt(s[i+1:], 10, 64)
	if err != nil || n < 0 {
		return BinlogPos{}, fmt.Errorf("not a binary log position: %q", s)
	}
	return BinlogPos{File: s[:i], Pos: n}, nil
}

// IsZero reports an unset position.
func (p BinlogPos) IsZero() bool { return p.File == "" }

func (p BinlogPos) String() string { return fmt.Sprintf("%s:%d", p.File, p.Pos) }

// seq is the number a binary log file's name ends with (mariadb-bin.000042).
func (p BinlogPos) seq() int64 {
	i := strings.LastIndexByte(p.File, '.')
	n, _ := strconv.ParseInt(p.File[i+1:], 10, 64)
	return n
}

// Compare orders positions of one server's binary log: -1, 0 or 1.
func (p BinlogPos) Compare(q BinlogPos) int {
	if a, b := p.seq(), q.seq(); a != b {
		if a < b {
			return -1
		}
		return 1
	}
	switch {
	case p.Pos < q.Pos:
		return -1
	case p.Pos > q.Pos:
		return 1
	}
	return 0
}

// Stream is what a row's stream is, recorded by the steps before anything
// of it is created.
type Stream struct {
	// Name is the stream's, its position record's at the destination.
	Name     string `json:"name"`
	Database string `json:"database"`
	// Tables are the database's base tables when the copy was taken.
	Tables []string `json:"tables,omitempty"`
	// Fingerprint is SchemaFingerprint of the source database before the
	// copy: a cutover refuses a source whose schema changed since (the
	// stream does not carry DDL reliably).
	Fingerprint string `json:"fingerprint,omitempty"`
	// Start is the source's position the copy was read at: the stream
	// applies what follows it.
	Start BinlogPos `json:"start"`
	// CutoverAttempts counts cutovers that timed out and gave writes back.
	CutoverAttempts int `json:"cutover_attempts,omitempty"`
	// LastLagBytes is the lag the last timed-out cutover saw.
	LastLagBytes int64 `json:"last_lag_bytes,omitempty"`
	// Verified are the tables verified equal at both servers at the
	// source's position VerifiedAt while the stream ran; the cutover
	// verifies again only those with row events after it (ChangedTables),
	// and the close compares its dump's checksums with them.
	Verified   map[string]engine.TableSum `json:"verified,omitempty"`
	VerifiedAt BinlogPos                  `json:"verified_at"`
	// Pending are, for the tables verified by keys while streaming (their
	// Verified entry has no checksum), the keys of the rows written
	// between the verification's two reads: the cutover compares them,
	// with those written after VerifiedAt, key by key (rows.go).
	Pending map[string][]string `json:"pending,omitempty"`
	// CutKeys are the tables the cutover verified by keys (it took no
	// checksum of them): the close finds a late write to them in the
	// source's log after VerifiedAt instead of in its dump's checksums.
	CutKeys []string `json:"cut_keys,omitempty"`
}

// ---- readiness ----

// SourceReadiness checks that this server can be the source of a stream:
// a binary log in ROW format with full row images, a server id, the
// administrator's replication privileges, and how long it keeps its
// binary logs.
func (s *Server) SourceReadiness(ctx context.Context) (*engine.Readiness, error) {
	r := &engine.Readiness{}
	if s.family != MariaDB {
		r.Problem("%s is %s: online mode for MySQL/MariaDB moves MariaDB sources today (MySQL 8: docs/online.md, what differs); plan it as dump or auto", s, s.version)
		return r, nil
	}
	var logBin, serverID int64
	var format, image string
	var expireDays float64
	var expireSeconds sql.NullInt64
	err := s.db.QueryRowContext(ctx, "SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@server_id, @@expire_logs_days").
		Scan(&logBin, &format, &image, &serverID, &expireDays)
	if err != nil {
		return nil, fmt.Errorf("read the binary log settings of %s: %w", s, s.connectError(err))
	}
	if s.atLeast(10, 6, 1) {
		_ = s.db.QueryRowContext(ctx, "SELECT @@binlog_expire_logs_seconds").Scan(&expireSeconds)
	}
	if logBin == 0 {
		r.Problem("%s keeps no binary log (log_bin is off): online mode reads it; set log_bin (and binlog_format = ROW, binlog_row_image = FULL), then restart the server (a restart is the operator's call)", s)
	}
	if !strings.EqualFold(format, "ROW") {
		r.Problem("binlog_format is %s at %s; online mode needs ROW: SET GLOBAL binlog_format = 'ROW' and in the server's configuration (sessions already open keep the old format until they reconnect)", format, s)
	}
	if !strings.EqualFold(image, "FULL") {
		r.Problem("binlog_row_image is %s at %s; online mode needs FULL: SET GLOBAL binlog_row_image = 'FULL' and in the server's configuration", image, s)
	}
	if serverID == 0 {
		r.Problem("server_id is 0 at %s: a server that is replicated from needs one (set server_id in its configuration)", s)
	}
	if err := s.checkPrivileges(ctx, []string{"REPLICATION SLAVE", "BINLOG MONITOR|REPLICATION CLIENT|SUPER"}); err != nil {
		r.Problem("%v at %s (the destination's agent reads the binary log with it, as a replica does)", err, s)
	}
	keep := time.Duration(expireDays * float64(24*time.Hour))
	if expireSeconds.Valid && expireSeconds.Int64 > 0 {
		keep = time.Duration(expireSeconds.Int64) * time.Second
	}
	switch {
	case keep == 0:
		r.Note("binary logs at %s are kept until purged by hand (expire_logs_days = 0): purging one a stream still reads fails its row (it then syncs again)", s)
	case keep < 24*time.Hour:
		r.Note("binary logs at %s are kept only %s: a stream that stops reading for longer (its destination down) loses its position and syncs again from the start", s, keep)
	}
	return r, nil
}

// DestinationReadiness checks that this server can take a stream from src
// (nil: from any other server): MariaDB, as its source (the copy is the
// family's dump; the stream's position records are a database of ours,
// StreamsDatabase).
func (s *Server) DestinationReadiness(ctx context.Context, src *Server) (*engine.Readiness, error) {
	r := &engine.Readiness{}
	if s.family != MariaDB {
		r.Problem("%s is %s: online mode for MySQL/MariaDB needs MariaDB at the destination", s, s.version)
	}
	if src != nil && src.family != s.family {
		r.Problem("%s is %s and %s is %s: online mode moves between servers of one family", src, src.version, s, s.version)
	}
	return r, nil
}

// checkPrivileges checks that the administrator has each of want (each an
// alternation "A|B": any of them will do) on *.*.
func (s *Server) checkPrivileges(ctx context.Context, want []string) error {
	var lines []string
	err := s.queryRows(ctx, "SHOW GRANTS FOR CURRENT_USER()", nil, func(rows *sql.Rows) error {
		var l string
		err := rows.Scan(&l)
		lines = append(lines, l)
		return err
	})
	if err != nil {
		return fmt.Errorf("read the administrator's grants: %w", err)
	}
	var global []string
	for _, l := range lines {
		if g, err := parseGrant(l); err == nil && g.global() && g.Kind == "" {
			for _, p := range strings.Split(g.Privs, ",") {
				global = append(global, strings.TrimSpace(p))
			}
		}
	}
	has := func(p string) bool {
		return slices.ContainsFunc(global, func(g string) bool {
			return strings.EqualFold(g, p) || strings.EqualFold(g, "ALL PRIVILEGES") || strings.EqualFold(g, "ALL")
		})
	}
	var missing []string
	for _, w := range want {
		if !slices.ContainsFunc(strings.Split(w, "|"), has) {
			missing = append(missing, strings.ReplaceAll(w, "|", " or "))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the administrator account %q lacks %s ON *.*", s.srv.User, strings.Join(missing, ", "))
	}
	return nil
}

// OnlineBlockers names what of src's database a stream cannot carry
// (nothing changes; mode auto dumps it) and what it carries at a cost
// (notes).
func (s *Server) OnlineBlockers(ctx context.Context, src *Source) (problems, notes []string, err error) {
	var other, keyless []string
	err = s.queryRows(ctx, `SELECT t.TABLE_NAME, COALESCE(t.ENGINE, ''),
		EXISTS (SELECT 1 FROM information_schema.TABLE_CONSTRAINTS c WHERE c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME AND c.CONSTRAINT_TYPE = 'PRIMARY KEY')
		FROM information_schema.TABLES t WHERE `+schemaIs("t.TABLE_SCHEMA")+` AND t.TABLE_TYPE = 'BASE TABLE' ORDER BY 1`,
		[]any{src.Database, src.Database}, func(rows *sql.Rows) error {
			var name, eng string
			var keyed bool
			if err := rows.Scan(&name, &eng, &keyed); err != nil {
				return err
			}
			if !strings.EqualFold(eng, "InnoDB") {
				other = append(other, fmt.Sprintf("%s (%s)", ident.QuoteMySQL(name), eng))
			}
			if !keyed {
				keyless = append(keyless, ident.QuoteMySQL(name))
			}
			return nil
		})
	if err != nil {
		return nil, nil, fmt.Errorf("read the tables of %q on %s: %w", src.Database, s, err)
	}
	if len(other) > 0 {
		problems = append(problems, fmt.Sprintf("tables that are not InnoDB cannot be copied from a consistent snapshot while writes go on: %s", summarize(other, 10)))
	}
	if len(keyless) > 0 {
		notes = append(notes, fmt.Sprintf("tables without a primary key (each streamed change to them scans the table at the destination): %s", summarize(keyless, 10)))
	}
	return problems, notes, nil
}

// ---- schema ----

// SchemaFingerprint hashes database's schema now (its tables and their
// engines, columns and indexes, the definitions of its views, triggers and
// routines: DDL during the sync changes it) and lists its base tables.
func (s *Server) SchemaFingerprint(ctx context.Context, db string) (string, []string, error) {
	queries := []string{
		"SELECT TABLE_NAME, TABLE_TYPE, COALESCE(ENGINE, '') FROM information_schema.TABLES WHERE " + schemaIs("TABLE_SCHEMA") + " ORDER BY 1",
		"SELECT TABLE_NAME, COLUMN_NAME, ORDINAL_POSITION, COLUMN_TYPE, IS_NULLABLE, COALESCE(COLUMN_DEFAULT, 'NULL'), EXTRA, COALESCE(COLLATION_NAME, '') " +
			"FROM information_schema.COLUMNS WHERE " + schemaIs("TABLE_SCHEMA") + " ORDER BY 1, 3",
		"SELECT TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX, COLUMN_NAME, NON_UNIQUE FROM information_schema.STATISTICS WHERE " + schemaIs("TABLE_SCHEMA") + " ORDER BY 1, 2, 3",
		"SELECT TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS WHERE " + schemaIs("TABLE_SCHEMA") + " ORDER BY 1",
		"SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_STATEMENT FROM information_schema.TRIGGERS WHERE " + schemaIs("TRIGGER_SCHEMA") + " ORDER BY 1",
		"SELECT ROUTINE_TYPE, ROUTINE_NAME, COALESCE(ROUTINE_DEFINITION, '') FROM information_schema.ROUTINES WHERE " + schemaIs("ROUTINE_SCHEMA") + " ORDER BY 1, 2",
	}
	h := sha256.New()
	var tables []string
	for qi, q := range queries {
		err := s.queryRows(ctx, q, []any{db, db}, func(rows *sql.Rows) error {
			cols, err := rows.Columns()
			if err != nil {
				return err
			}
			vals := make([]sql.RawBytes, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				return err
			}
			for _, v := range vals {
				_, _ = h.Write(v)
				_, _ = h.Write([]byte{0x1f})
			}
			_, _ = h.Write([]byte{0x1e})
			if qi == 0 && string(vals[1]) == "BASE TABLE" {
				tables = append(tables, string(vals[0]))
			}
			return nil
		})
		if err != nil {
			return "", nil, fmt.Errorf("read the schema of %q on %s: %w", db, s, s.connectError(err))
		}
	}
	sort.Strings(tables)
	return hex.EncodeToString(h.Sum(nil)), tables, nil
}

// SchemaChange describes how database's schema differs from when st's
// copy was taken ("" when it does not).
func (s *Server) SchemaChange(ctx context.Context, st *Stream) (string, error) {
	fp, tables, err := s.SchemaFingerprint(ctx, st.Database)
	if err != nil {
		return "", err
	}
	if fp == st.Fingerprint {
		return "", nil
	}
	var parts []string
	if added := without(tables, st.Tables); len(added) > 0 {
		parts = append(parts, "tables created: "+summarize(quoteAll(added), 10))
	}
	if dropped := without(st.Tables, tables); len(dropped) > 0 {
		parts = append(parts, "tables dropped: "+summarize(quoteAll(dropped), 10))
	}
	if len(parts) == 0 {
		parts = append(parts, "columns, indexes, engines, views, triggers or routines changed")
	}
	return fmt.Sprintf("the schema of %q at %s changed during the sync (%s); the stream does not carry DDL", st.Database, s, strings.Join(parts, "; ")), nil
}

// without returns the elements of a that b lacks.
func without(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

func quoteAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = ident.QuoteMySQL(n)
	}
	return out
}

// ---- copy ----

// changeMasterLine is how the dump tool writes the position of its
// snapshot (--master-data=2): a comment near the top of its output.
var changeMasterLine = regexp.MustCompile(`(?m)^-- CHANGE (?:MASTER|REPLICATION SOURCE) TO (?:MASTER|SOURCE)_LOG_FILE='([^']+)', (?:MASTER|SOURCE)_LOG_POS=(\d+);`)

// CopyFrom copies src's database from the server from into this
// (destination) server while the source keeps taking writes, piping the
// dump tool's output into the import as it comes: the accounts (with
// their password hashes) and the database are created as Import creates
// them (record first), then the schema (tables, views, routines), the
// rows — read in one consistent snapshot whose binary log position it
// returns (no global lock: MariaDB gives a snapshot's position) — then the
// grants. Triggers and events are not copied: they would run a second time
// on the rows the stream applies; the cutover creates them (CopyTriggers,
// CopyEvents). It returns the position and notes on what was not checked.
func (s *Server) CopyFrom(ctx context.Context, from *Server, src *Source, source string, record func(ImportRecord) error, p *Progress) (BinlogPos, []string, error) {
	m := src.Manifest(source, Position{}, nil)
	m.Events = nil
	rec, notes, err := s.prepareImport(ctx, &m, src.Secrets(), record)
	if err != nil {
		return BinlogPos{}, nil, err
	}
	tool, version, err := from.tool(ctx, dumpTool)
	if err != nil {
		return BinlogPos{}, nil, err
	}
	common := from.dumpArgs(version)
	var pos BinlogPos
	for _, part := range dumpParts[:2] { // schema and rows; triggers at the cutover (CopyTriggers)
		args := append(append([]string(nil), common...), part.args...)
		if part.name == partData {
			args = append(args, "--master-data=2")
		}
		head := &headBuffer{Max: 64 << 10}
		err := s.pipePart(ctx, func(w io.Writer) error {
			return from.dumpPart(ctx, tool, args, src.Database, part.name, io.MultiWriter(w, head))
		}, func(r io.Reader) error {
			r = engine.CountReader(r, p.ByteCounter())
			if part.name == partData {
				return s.loadData(ctx, src.Database, r)
			}
			return s.loadScript(ctx, src.Database, r, toolTrailer)
		})
		if err != nil {
			return BinlogPos{}, nil, fmt.Errorf("copy %q from %s (%s part): %w", src.Database, from, part.name, s.diskFull(err))
		}
		if part.name == partData {
			mm := changeMasterLine.FindSubmatch(head.Bytes())
			if mm == nil {
				return BinlogPos{}, nil, engine.Permanentf("copy %q from %s: the dump tool wrote no binary log position (is log_bin on at the source?)", src.Database, from)
			}
			pos.File = string(mm[1])
			pos.Pos, _ = strconv.ParseInt(string(mm[2]), 10, 64)
		}
	}
	if err := s.Grant(ctx, rec.Granted); err != nil {
		return BinlogPos{}, nil, err
	}
	return pos, notes, nil
}

// pipePart runs dump, writing into a pipe, and load, reading from it, at
// once; the first failure stops both and is returned (a load that fails
// makes the dump's writes fail: that is not the cause).
func (s *Server) pipePart(ctx context.Context, dump func(io.Writer) error, load func(io.Reader) error) error {
	pr, pw := io.Pipe()
	dumped := make(chan error, 1)
	go func() {
		err := dump(pw)
		pw.CloseWithError(err)
		dumped <- err
	}()
	lerr := load(pr)
	pr.CloseWithError(errors.New("the import stopped reading"))
	derr := <-dumped
	switch {
	case derr != nil && (lerr == nil || !errors.Is(derr, io.ErrClosedPipe) && !strings.Contains(derr.Error(), "import stopped")):
		return derr
	case lerr != nil:
		return lerr
	}
	return nil
}

// headBuffer keeps the first Max bytes written to it.
type headBuffer struct {
	Max int
	buf bytes.Buffer
}

func (h *headBuffer) Write(p []byte) (int, error) {
	if room := h.Max - h.buf.Len(); room > 0 {
		h.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// Bytes returns what was kept.
func (h *headBuffer) Bytes() []byte { return h.buf.Bytes() }

// ---- the source's binary log ----

// BinlogNow is the source's current binary log position.
func (s *Server) BinlogNow(ctx context.Context) (BinlogPos, error) {
	var p Position
	status := "SHOW MASTER STATUS"
	if s.family == MySQL && s.atLeast(8, 2, 0) {
		status = "SHOW BINARY LOG STATUS"
	}
	if err := s.binlogPosition(ctx, status, &p); err != nil {
		return BinlogPos{}, fmt.Errorf("read the binary log position of %s: %w", s, s.connectError(err))
	}
	if p.BinlogFile == "" {
		return BinlogPos{}, engine.Permanentf("%s keeps no binary log (log_bin is off)", s)
	}
	return BinlogPos{p.BinlogFile, p.BinlogPosition}, nil
}

// BinlogFiles lists the source's binary log files with their sizes, oldest
// first.
func (s *Server) BinlogFiles(ctx context.Context) ([]BinlogPos, error) {
	var out []BinlogPos
	err := s.queryRows(ctx, "SHOW BINARY LOGS", nil, func(rows *sql.Rows) error {
		row, err := rowByName(rows)
		if err != nil {
			return err
		}
		n, _ := strconv.ParseInt(row["file_size"].String, 10, 64)
		out = append(out, BinlogPos{row["log_name"].String, n})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list the binary logs of %s: %w", s, s.connectError(err))
	}
	return out, nil
}

// LagBytes is how many bytes of the binary log lie between from and to,
// given the files' sizes (files).
func LagBytes(from, to BinlogPos, files []BinlogPos) int64 {
	if from.IsZero() || from.Compare(to) >= 0 {
		return 0
	}
	if from.File == to.File {
		return to.Pos - from.Pos
	}
	var n int64
	for _, f := range files {
		switch {
		case f.File == from.File:
			n += max(0, f.Pos-from.Pos)
		case f.File == to.File:
			n += to.Pos
		case (BinlogPos{File: f.File}).seq() > from.seq() && (BinlogPos{File: f.File}).seq() < to.seq():
			n += f.Pos
		}
	}
	return n
}

// Purged reports whether the binary log file of pos is gone from the
// source (purged, or expired), given its files.
func Purged(pos BinlogPos, files []BinlogPos) bool {
	if pos.IsZero() || len(files) == 0 {
		return false
	}
	return !slices.ContainsFunc(files, func(f BinlogPos) bool { return f.File == pos.File })
}

// ErrLogPurged: a binary log file needed is no longer at the source.
var ErrLogPurged = errors.New("the binary log was purged")

// tableMapInfo is SHOW BINLOG EVENTS' Info of a Table_map event:
// "table_id: 42 (db.table)".
var tableMapInfo = regexp.MustCompile(`^table_id: \d+ \((.*)\)$`)

// ChangedTables reads the source's binary log from from to to and returns
// which of db's tables have row events there (a table map naming them);
// a statement logged as such that may have written to db (TRUNCATE: the
// stream applies rows only) counts as writing every table.
// A name the event makes ambiguous (dots in names) counts as changed: a
// table counted wrongly is only verified once more.
func (s *Server) ChangedTables(ctx context.Context, db string, tables []string, from, to BinlogPos) (map[string]bool, error) {
	changed, _, err := s.scanBinlog(ctx, db, tables, from, to, nil)
	return changed, err
}

// anyTable is the table WritesBetween's scan counts a row event of any of
// the database's tables under.
const anyTable = "\x00any"

// WritesBetween reports whether the source's binary log from from to to
// holds a write to db: a row event of any of its tables (a table map
// naming it: a name with dots can count wrongly, only ever as a write) or
// a statement that may have written to it (schemaStatement). None: a
// stream of db whose position is from has applied everything of db up to
// to, however far behind its position record is.
func (s *Server) WritesBetween(ctx context.Context, db string, from, to BinlogPos) (bool, error) {
	if from.Compare(to) >= 0 {
		return false, nil
	}
	changed, stmt, err := s.scanBinlog(ctx, db, nil, from, to, schemaStatement)
	return len(changed) > 0 || stmt != "", err
}

// StatementSince returns the first statement of the binary log from from
// to to that mentions db anywhere (DDL on its tables, run from it or
// naming it, CREATE/ALTER/DROP DATABASE, a GRANT on it), shortened: ""
// when there is none, and then the schema of db did not change in that
// stretch — the cutover checks that under the block instead of reading the
// catalogue again. A statement that mentions db without changing it is a
// false alarm only (the caller reads the catalogue).
func (s *Server) StatementSince(ctx context.Context, db string, from, to BinlogPos) (string, error) {
	_, statement, err := s.scanBinlog(ctx, db, nil, from, to, schemaStatement)
	return statement, err
}

// schemaStatement: a logged statement that mentions db and may change its
// schema (what the fingerprint covers, and its events) — not the
// privileges (the block's own REVOKE and GRANT statements are logged),
// accounts, table maintenance (ANALYZE, OPTIMIZE, CHECK), nor ALTER EVENT
// (the block's own, disabling events).
func schemaStatement(q, db string) bool {
	if !mentionsDatabase(q, db) {
		return false
	}
	s := strings.ToUpper(strings.TrimSpace(q))
	if strings.HasPrefix(s, "USE ") {
		// "use `db`; statement": the statement follows the first "; "
		// after the quoted name.
		if i := strings.Index(s, "`; "); i >= 0 {
			s = strings.TrimSpace(s[i+3:])
		}
	}
	for _, p := range []string{"GRANT ", "REVOKE ", "SET PASSWORD", "ALTER USER ", "CREATE USER ", "DROP USER ", "RENAME USER ", "FLUSH ", "ANALYZE ", "OPTIMIZE ", "CHECK "} {
		if strings.HasPrefix(s, p) {
			return false
		}
	}
	// ALTER [DEFINER=...] EVENT: the block disables the database's events
	// and an unblock enables them. (CREATE and DROP EVENT count: the
	// cutover read the event list before the block.)
	return !alterEvent.MatchString(s)
}

// alterEvent is ALTER [DEFINER = account] EVENT, as SHOW BINLOG EVENTS
// shows it (DEFINER=`u`@`h`) and as the log holds it (DEFINER = `u`@`h`),
// the account's parts quoted (quotes doubled inside) or not; upper case.
var alterEvent = regexp.MustCompile("^ALTER\\s+(DEFINER\\s*=\\s*(`(?:[^`]|``)*`|'(?:[^']|'')*'|[^\\s@]+)(\\s*@\\s*(`(?:[^`]|``)*`|'(?:[^']|'')*'|\\S+))?\\s+)?EVENT\\s")

// scanBinlog is ChangedTables; with match, it also returns the first
// statement logged as such (not as rows: DDL, TRUNCATE, or DML under
// statement-based logging) that match says is about db, shortened, and
// stops there.
func (s *Server) scanBinlog(ctx context.Context, db string, tables []string, from, to BinlogPos, match func(q, db string) bool) (map[string]bool, string, error) {
	changed := map[string]bool{}
	want := map[string]string{}
	for _, t := range tables {
		want[db+"."+t] = t
	}
	files, err := s.BinlogFiles(ctx)
	if err != nil {
		return nil, "", err
	}
	if Purged(from, files) {
		return nil, "", fmt.Errorf("%w: %s of %s, so the tables changed since %s cannot be known", ErrLogPurged, from.File, s, from)
	}
	const page = 10000
	var statement string
	for _, f := range files {
		if (BinlogPos{File: f.File}).seq() < from.seq() || (BinlogPos{File: f.File}).seq() > to.seq() {
			continue
		}
		at := int64(4)
		if f.File == from.File {
			at = from.Pos
		}
		for (f.File != to.File || at < to.Pos) && statement == "" {
			n := 0
			last := at
			err := s.queryRows(ctx, fmt.Sprintf("SHOW BINLOG EVENTS IN %s FROM %d LIMIT %d", sqlLiteral(f.File), at, page), nil, func(rows *sql.Rows) error {
				var logName, evType, info string
				var pos, serverID, end int64
				if err := rows.Scan(&logName, &pos, &evType, &serverID, &end, &info); err != nil {
					return err
				}
				n++
				last = end
				if (f.File == to.File && pos >= to.Pos) || statement != "" {
					return nil
				}
				switch evType {
				case "Table_map":
					if m := tableMapInfo.FindStringSubmatch(info); m != nil {
						if t, ok := want[m[1]]; ok {
							changed[t] = true
						} else if tables == nil && strings.HasPrefix(m[1], db+".") {
							changed[anyTable] = true
						}
					}
				case "Query", "Execute_load_query": // LOAD DATA, statement-based
					// BEGIN and COMMIT frame row events; any other statement
					// that names the database (in its "use" or its text)
					// may have written to it.
					q := strings.TrimSpace(info)
					if q == "BEGIN" || q == "COMMIT" {
						break
					}
					if match != nil && match(q, db) {
						statement = fmt.Sprintf("%s at %s:%d", shorten(q, 200), f.File, pos)
					}
					// A statement the stream does not apply (TRUNCATE, DDL)
					// that may have changed the database's rows: every table
					// counts as written (and none can be verified by keys:
					// the log names no rows).
					if schemaStatement(q, db) {
						for _, t := range tables {
							changed[t] = true
						}
					}
				}
				return nil
			})
			if err != nil {
				return nil, "", fmt.Errorf("read the binary log %s of %s from %d: %w", f.File, s, at, err)
			}
			if n < page || last <= at {
				break
			}
			at = last
		}
	}
	return changed, statement, nil
}

// namesDatabase reports whether a logged statement (SHOW BINLOG EVENTS'
// Info of a Query event) may have written to db: it ran with db as its
// default database ("use `db`; ..."), or names a table of it, quoted
// ("`db`.") or not ("db." after a character that cannot be part of a
// name). A name that only contains db ("`user with space`" for "with
// space") does not count; a statement naming the database without writing
// to it (a GRANT on it) does, and so does another database whose name
// differs only in case: a re-read, never a missed write.
func namesDatabase(q, db string) bool {
	// Case-insensitively: with lower_case_table_names `Shop` is shop.
	q, db = strings.ToLower(q), strings.ToLower(db)
	quoted := "`" + strings.ReplaceAll(db, "`", "``") + "`"
	if strings.HasPrefix(q, "use "+quoted+";") || strings.Contains(q, quoted+".") {
		return true
	}
	for i := 0; i < len(q); {
		j := strings.Index(q[i:], db+".")
		if j < 0 {
			return false
		}
		k := i + j
		if k == 0 || !identByte(q[k-1]) {
			return true
		}
		i = k + 1
	}
	return false
}

// mentionsDatabase reports whether a logged statement mentions db at all:
// namesDatabase, or db quoted anywhere, or db as a whole unquoted word
// (DROP DATABASE shop, ALTER DATABASE shop ...). Case-insensitive, like
// namesDatabase; a word inside a string counts too (a false alarm only).
func mentionsDatabase(q, db string) bool {
	if namesDatabase(q, db) {
		return true
	}
	q, db = strings.ToLower(q), strings.ToLower(db)
	if strings.Contains(q, "`"+strings.ReplaceAll(db, "`", "``")+"`") {
		return true
	}
	for i := 0; i < len(q); {
		j := strings.Index(q[i:], db)
		if j < 0 {
			return false
		}
		k := i + j
		end := k + len(db)
		if (k == 0 || !identByte(q[k-1])) && (end == len(q) || !identByte(q[end])) {
			return true
		}
		i = k + 1
	}
	return false
}

// identByte is a byte that can be part of an unquoted name (or of a
// multi-byte character, which can too).
func identByte(b byte) bool {
	return b == '_' || b == '$' || b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= 0x80
}

// ---- verification while streaming ----

// SnapshotChecksums checksums db's tables in one consistent snapshot and
// returns the binary log position it lies at: the sums are the tables'
// exactly at that position.
func (s *Server) SnapshotChecksums(ctx context.Context, db string, tables []string) (BinlogPos, []engine.TableSum, error) {
	sn, err := s.OpenSnapshot(ctx)
	if err != nil {
		return BinlogPos{}, nil, err
	}
	defer sn.Close(ctx)
	sums, err := sn.Checksums(ctx, db, tables)
	return sn.Pos, sums, err
}

// ChecksumsAll is Checksums over Options.Jobs sessions at once.
func (s *Server) ChecksumsAll(ctx context.Context, db string, tables []string) ([]engine.TableSum, error) {
	return s.checksums(ctx, db, tables, s.opt.Jobs, nil)
}

// ---- triggers and events ----

// CopyTriggers creates db's triggers at this (destination) server as the
// server from has them, with the dump tool.
func (s *Server) CopyTriggers(ctx context.Context, from *Server, db string) error {
	n, err := from.TriggerCount(ctx, db)
	if err != nil {
		return err
	}
	return s.CopyTriggersCounted(ctx, from, db, n)
}

// TriggerCount counts db's triggers.
func (s *Server) TriggerCount(ctx context.Context, db string) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE "+schemaIs("TRIGGER_SCHEMA"), db, db).Scan(&n); err != nil {
		return 0, fmt.Errorf("count the triggers of %q at %s: %w", db, s, err)
	}
	return n, nil
}

// CopyTriggersCounted is CopyTriggers with the source's trigger count read
// already (the cutover reads it before the block).
func (s *Server) CopyTriggersCounted(ctx context.Context, from *Server, db string, n int) error {
	// Most databases have none: then neither tool runs (two processes
	// under an online cutover's block).
	if n == 0 {
		return nil
	}
	tool, version, err := from.tool(ctx, dumpTool)
	if err != nil {
		return err
	}
	post := dumpParts[2]
	args := append(from.dumpArgs(version), post.args...)
	err = s.pipePart(ctx, func(w io.Writer) error {
		return from.dumpPart(ctx, tool, args, db, post.name, w)
	}, func(r io.Reader) error {
		return s.loadScript(ctx, db, r, toolTrailer)
	})
	if err != nil {
		return fmt.Errorf("create the triggers of %q at %s: %w", db, s, err)
	}
	return nil
}

// CopyEvents creates db's events at this (destination) server as they are
// at the server from (under the block: disabled there), then enables
// those of enabled that were enabled before the block.
func (s *Server) CopyEvents(ctx context.Context, from *Server, db string, enabled []Event) error {
	names, err := from.eventNames(ctx, db)
	if err != nil {
		return err
	}
	return s.CopyEventsNamed(ctx, from, db, names, enabled)
}

// EventNames lists db's events.
func (s *Server) EventNames(ctx context.Context, db string) ([]string, error) {
	return s.eventNames(ctx, db)
}

// CopyEventsNamed is CopyEvents with the source's event names read already
// (the cutover reads them before the block).
func (s *Server) CopyEventsNamed(ctx context.Context, from *Server, db string, names []string, enabled []Event) error {
	if len(names) == 0 {
		return nil // the client is not run for nothing
	}
	var b bytes.Buffer
	if err := from.writeEvents(ctx, db, names, &b); err != nil {
		return err
	}
	b.Write(dumpTrailer)
	if err := s.loadScript(ctx, db, &b, dumpTrailer); err != nil {
		return fmt.Errorf("create the events of %q at %s: %w", db, s, err)
	}
	return s.EnableEvents(ctx, db, enabled)
}

// DropEvents drops db's events at this server (a copy's, before the
// cutover creates them).
func (s *Server) DropEvents(ctx context.Context, db string) error {
	var names []string
	err := s.queryRows(ctx, "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE "+schemaIs("EVENT_SCHEMA"), []any{db, db}, func(rows *sql.Rows) error {
		var n string
		err := rows.Scan(&n)
		names = append(names, n)
		return err
	})
	if err != nil {
		return fmt.Errorf("list the events of %q at %s: %w", db, s, err)
	}
	for _, n := range names {
		if _, err := s.db.ExecContext(ctx, "DROP EVENT IF EXISTS "+ident.QuoteMySQL(db)+"."+ident.QuoteMySQL(n)); err != nil {
			return fmt.Errorf("drop event %s of %q at %s: %w", n, db, s, err)
		}
	}
	return nil
}

// ---- accounts ----

// SyncAccounts makes the accounts of src at this (destination) server log
// in as they do at the source now: an account whose definition (password
// hash, plugin) changed since the copy is altered to the source's. It
// returns the accounts it altered.
func (s *Server) SyncAccounts(ctx context.Context, src *Source) ([]string, error) {
	var altered []string
	for _, a := range src.Accounts {
		if a.CreateUser == "" {
			continue
		}
		var name, here string
		err := s.db.QueryRowContext(ctx, "SHOW CREATE USER "+sqlLiteral(a.User)+"@"+sqlLiteral(a.Host)).Scan(&here)
		if errNo(err) == errCannotUser {
			continue // not an account the copy made (a definer only)
		}
		if err != nil {
			return altered, fmt.Errorf("read account %s at %s: %w", a.Name(), s, err)
		}
		name = a.Name()
		if here == a.CreateUser {
			continue
		}
		alter, ok := strings.CutPrefix(a.CreateUser, "CREATE USER ")
		if !ok {
			return altered, fmt.Errorf("account %s at the source: unexpected definition", name)
		}
		if _, err := s.db.ExecContext(ctx, "ALTER USER "+alter); err != nil {
			return altered, fmt.Errorf("update account %s at %s: %s", name, s, redactGrant(err.Error()))
		}
		altered = append(altered, name)
	}
	return altered, nil
}
