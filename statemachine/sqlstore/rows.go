package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// migrationColumns is the column list every row read selects, in scan order.
const migrationColumns = "id, engine, database_name, source, destination, dns_name, status, mode, attempt, " +
	"owner, lease_until, fence, dump_url, dump_sha256, dump_bytes, consistency_point, size_bytes, " +
	"blocked_at, unblocked_at, switched_at, last_error, created_at, updated_at"

type scanner interface{ Scan(dest ...any) error }

func scanMigration(sc scanner) (statemachine.Migration, error) {
	var (
		m                                       statemachine.Migration
		engine, status, mode                    string
		owner, dumpURL, dumpSHA, lastErr        sql.NullString
		lease, cp, blocked, unblocked, switched sql.NullTime
		dumpBytes, size                         sql.NullInt64
	)
	err := sc.Scan(&m.ID, &engine, &m.DatabaseName, &m.Source, &m.Destination, &m.DNSName, &status, &mode, &m.Attempt,
		&owner, &lease, &m.Fence, &dumpURL, &dumpSHA, &dumpBytes, &cp, &size,
		&blocked, &unblocked, &switched, &lastErr, &m.CreatedAt, &m.UpdatedAt)
	if err != nil {
		return m, err
	}
	m.Engine, m.Status, m.Mode = statemachine.Engine(engine), statemachine.Status(status), statemachine.Mode(mode)
	m.Owner, m.DumpURL, m.DumpSHA256, m.LastError = owner.String, dumpURL.String, dumpSHA.String, lastErr.String
	m.LeaseUntil, m.ConsistencyPoint = utc(lease), utc(cp)
	m.BlockedAt, m.UnblockedAt, m.SwitchedAt = utc(blocked), utc(unblocked), utc(switched)
	m.DumpBytes, m.SizeBytes = dumpBytes.Int64, size.Int64
	m.CreatedAt, m.UpdatedAt = m.CreatedAt.UTC(), m.UpdatedAt.UTC()
	return m, nil
}

func utc(t sql.NullTime) time.Time {
	if !t.Valid {
		return time.Time{}
	}
	return t.Time.UTC()
}

// querier and rowQuerier are what *sql.DB and *sql.Tx have in common.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

type rowQuerier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (s *Store) queryMigrations(ctx context.Context, q querier, where string, args ...any) ([]statemachine.Migration, error) {
	return s.queryMigrationsRaw(ctx, q, "SELECT "+migrationColumns+" FROM migration "+where, args...)
}

// queryMigrationsRaw runs query, which selects migrationColumns.
func (s *Store) queryMigrationsRaw(ctx context.Context, q querier, query string, args ...any) ([]statemachine.Migration, error) {
	rows, err := q.QueryContext(ctx, s.d.q(query), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []statemachine.Migration
	for rows.Next() {
		m, err := scanMigration(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// Get returns one row.
func (s *Store) Get(ctx context.Context, id int64) (statemachine.Migration, error) {
	ms, err := s.queryMigrations(ctx, s.db, "WHERE id = ?", id)
	if err != nil {
		return statemachine.Migration{}, fmt.Errorf("read row %d: %w", id, err)
	}
	if len(ms) == 0 {
		return statemachine.Migration{}, fmt.Errorf("row %d: %w", id, statemachine.ErrNotFound)
	}
	return ms[0], nil
}

// List returns rows matching f in id order.
func (s *Store) List(ctx context.Context, f statemachine.Filter) ([]statemachine.Migration, error) {
	var conds []string
	var args []any
	if len(f.Statuses) > 0 {
		conds = append(conds, "status IN ("+placeholders(len(f.Statuses))+")")
		for _, st := range f.Statuses {
			args = append(args, string(st))
		}
	}
	for _, c := range []struct{ col, val string }{
		{"source", f.Source}, {"destination", f.Destination}, {"database_name", f.DatabaseName},
	} {
		if c.val != "" {
			conds = append(conds, c.col+" = ?")
			args = append(args, c.val)
		}
	}
	if f.AfterID > 0 {
		conds = append(conds, "id > ?")
		args = append(args, f.AfterID)
	}
	where := ""
	if len(conds) > 0 {
		where = "WHERE " + strings.Join(conds, " AND ")
	}
	where += " ORDER BY id"
	if f.Limit > 0 {
		where += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	ms, err := s.queryMigrations(ctx, s.db, where, args...)
	if err != nil {
		return nil, fmt.Errorf("list rows: %w", err)
	}
	return ms, nil
}

// Counts returns the number of rows per status.
func (s *Store) Counts(ctx context.Context) (map[statemachine.Status]int, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT status, COUNT(*) FROM migration GROUP BY status")
	if err != nil {
		return nil, fmt.Errorf("count rows by status: %w", err)
	}
	defer rows.Close()
	out := map[statemachine.Status]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, err
		}
		out[statemachine.Status(st)] = n
	}
	return out, rows.Err()
}

// Events returns a row's audit trail, oldest first.
func (s *Store) Events(ctx context.Context, id int64) ([]statemachine.Event, error) {
	rows, err := s.db.QueryContext(ctx, s.d.q(
		"SELECT id, migration_id, from_status, to_status, actor, detail, created_at FROM migration_event WHERE migration_id = ? ORDER BY id"), id)
	if err != nil {
		return nil, fmt.Errorf("read events of row %d: %w", id, err)
	}
	defer rows.Close()
	var out []statemachine.Event
	for rows.Next() {
		var e statemachine.Event
		var from, to string
		if err := rows.Scan(&e.ID, &e.MigrationID, &from, &to, &e.Actor, &e.Detail, &e.At); err != nil {
			return nil, err
		}
		e.From, e.To, e.At = statemachine.Status(from), statemachine.Status(to), e.At.UTC()
		out = append(out, e)
	}
	return out, rows.Err()
}

// recordEvents adds one event per row in ids, with the row's current status
// as the destination and its updated_at as the time: the event describes the
// transition just made in the same transaction.
func (s *Store) recordEvents(ctx context.Context, tx *sql.Tx, ids []int64, from statemachine.Status, actor, detail string) error {
	if len(ids) == 0 {
		return nil
	}
	args := []any{string(from), actor, detail}
	for _, id := range ids {
		args = append(args, id)
	}
	_, err := tx.ExecContext(ctx, s.d.q(
		"INSERT INTO migration_event (migration_id, from_status, to_status, actor, detail, created_at) "+
			"SELECT id, ?, status, ?, ?, updated_at FROM migration WHERE id IN ("+placeholders(len(ids))+")"), args...)
	if err != nil {
		return fmt.Errorf("record events: %w", err)
	}
	return nil
}
