package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/fleetmigrate/fleetmigrate/engine"
)

// VerifySince verifies the source database m was dumped from against m,
// as Verify does, but, where the server's binary log holds everything
// written since the dump (from m's position), reads that log instead of
// every table: only the tables with row events there are checksummed
// again. Every table is read when the dump has no position (log_bin off),
// the log since it was purged or is filtered (binlog_do_db,
// binlog_ignore_db), when it is longer than the database is large (reading
// the tables is then the cheaper way), or when a statement logged as such
// (DDL, TRUNCATE, statement-based DML) names the database. A session that
// switched its own logging off (SET sql_log_bin = 0, which takes SUPER) is
// not seen (the agent's full-recheck setting makes the close step read
// every table). It returns the tables read and, when it read all of them,
// why.
func (s *Server) VerifySince(ctx context.Context, m *engine.Manifest, done func(i, n int)) (read int, why string, err error) {
	tables, why, err := s.writtenSince(ctx, m)
	if errNo(err) == 1227 { // the administrator may not read the log: read the tables
		why, err = fmt.Sprintf("the administrator may not read the binary log (%v; grant it BINLOG MONITOR or REPLICATION CLIENT)", err), nil
	}
	if err != nil {
		return 0, "", err
	}
	if why != "" {
		return len(m.Tables), why, s.verify(ctx, m, nil, done)
	}
	// Not nil: verify reads every table for a nil list.
	return len(tables), "", s.verify(ctx, m, append([]string{}, tables...), done)
}

// writtenSince lists m's tables written since m's dump according to the
// binary log, or says why the log cannot tell.
func (s *Server) writtenSince(ctx context.Context, m *engine.Manifest) ([]string, string, error) {
	if m.BinlogFile == "" {
		return nil, "the dump has no binary log position (log_bin was off)", nil
	}
	from := BinlogPos{m.BinlogFile, m.BinlogPosition}
	filtered, err := s.binlogFiltered(ctx)
	if err != nil {
		return nil, "", err
	}
	if filtered != "" {
		return nil, "the binary log is filtered (" + filtered + ")", nil
	}
	to, err := s.BinlogNow(ctx)
	if errors.Is(err, engine.ErrPermanent) { // log_bin off since the dump
		return nil, err.Error(), nil
	}
	if err != nil {
		return nil, "", err
	}
	if to.Compare(from) < 0 {
		return nil, fmt.Sprintf("the binary log is at %s, before the dump's %s (was it reset?)", to, from), nil
	}
	files, err := s.BinlogFiles(ctx)
	if err != nil {
		return nil, "", err
	}
	if Purged(from, files) {
		return nil, fmt.Sprintf("the binary log since the dump's %s was purged", from), nil
	}
	if n := LagBytes(from, to, files); n > max(m.SizeBytes, 1<<20) {
		return nil, fmt.Sprintf("%d MiB of binary log since the dump, more than the database", n>>20), nil
	}
	names := make([]string, 0, len(m.Tables))
	for _, t := range m.Tables {
		names = append(names, t.Name)
	}
	changed, statement, err := s.scanBinlog(ctx, m.Database, names, from, to, namesDatabase)
	if errors.Is(err, ErrLogPurged) {
		return nil, fmt.Sprintf("the binary log since the dump's %s was purged", from), nil
	}
	if err != nil {
		return nil, "", err
	}
	if statement != "" {
		return nil, "the binary log has a statement naming the database since the dump: " + statement, nil
	}
	var out []string
	for t := range changed {
		out = append(out, t)
	}
	slices.Sort(out)
	return out, "", nil
}

// binlogFiltered describes the server's binary log filters ("" if none).
func (s *Server) binlogFiltered(ctx context.Context) (string, error) {
	status := "SHOW MASTER STATUS"
	if s.family == MySQL && s.atLeast(8, 2, 0) {
		status = "SHOW BINARY LOG STATUS"
	}
	var out string
	err := s.queryRows(ctx, status, nil, func(rows *sql.Rows) error {
		row, err := rowByName(rows)
		if err != nil {
			return err
		}
		var f []string
		for _, c := range []string{"binlog_do_db", "binlog_ignore_db"} {
			if v := row[c].String; v != "" {
				f = append(f, c+" "+v)
			}
		}
		out = strings.Join(f, ", ")
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("read the binary log's filters at %s: %w", s, s.connectError(err))
	}
	return out, nil
}

// shorten cuts s to n bytes at most, marking the cut.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// rowByName scans the current row of a statement whose columns vary by
// server and version (SHOW ... STATUS, SHOW BINARY LOGS) into its values
// by lower-cased column name.
func rowByName(rows *sql.Rows) (map[string]sql.NullString, error) {
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return nil, err
	}
	out := make(map[string]sql.NullString, len(cols))
	for i, c := range cols {
		out[strings.ToLower(c)] = vals[i]
	}
	return out, nil
}
