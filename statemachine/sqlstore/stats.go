package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// StepStats counts step completions and failures within the last window,
// from the audit trail (index on migration_event.created_at).
func (s *Store) StepStats(ctx context.Context, window time.Duration) (statemachine.StepStats, error) {
	var st statemachine.StepStats
	working := workingStatuses()
	args := append([]any{s.nowArg(), -window.Microseconds()}, working...)
	rows, err := s.db.QueryContext(ctx, s.d.q("SELECT from_status, to_status, COUNT(*) FROM migration_event WHERE created_at >= "+
		s.d.plusMicros(s.d.now())+" AND from_status IN ("+placeholders(len(working))+") GROUP BY from_status, to_status"), args...)
	if err != nil {
		return st, fmt.Errorf("count recent steps: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var from, to string
		var n int
		if err := rows.Scan(&from, &to, &n); err != nil {
			return st, err
		}
		step, ok := statemachine.StepOf(statemachine.Status(from))
		switch {
		case !ok:
		case statemachine.Status(to) == step.Failed:
			st.Failures += n
		case statemachine.Status(to) == step.Next || statemachine.Status(to) == step.NextWithoutDNS:
			st.Completions += n
		}
	}
	if err := rows.Err(); err != nil {
		return st, err
	}
	if st.Failures == 0 {
		return st, nil
	}
	failed := failedStatuses()
	args = append([]any{s.nowArg(), -window.Microseconds()}, working...)
	args = append(args, failed...)
	err = s.db.QueryRowContext(ctx, s.d.q("SELECT detail, COUNT(*) FROM migration_event WHERE created_at >= "+s.d.plusMicros(s.d.now())+
		" AND from_status IN ("+placeholders(len(working))+") AND to_status IN ("+placeholders(len(failed))+")"+
		" GROUP BY detail ORDER BY COUNT(*) DESC LIMIT 1"), args...).Scan(&st.TopError, &st.TopErrorCount)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return st, fmt.Errorf("find the most common recent failure: %w", err)
	}
	return st, nil
}

// FailedByError groups the failed rows by last_error.
func (s *Store) FailedByError(ctx context.Context, limit int) ([]statemachine.ErrorGroup, error) {
	failed := failedStatuses()
	rows, err := s.db.QueryContext(ctx, s.d.q(fmt.Sprintf("SELECT COALESCE(last_error, ''), COUNT(*) FROM migration WHERE status IN (%s) "+
		"GROUP BY last_error ORDER BY COUNT(*) DESC, COALESCE(last_error, '') LIMIT %d", placeholders(len(failed)), max(limit, 1))), failed...)
	if err != nil {
		return nil, fmt.Errorf("group failed rows by error: %w", err)
	}
	defer rows.Close()
	var out []statemachine.ErrorGroup
	for rows.Next() {
		var g statemachine.ErrorGroup
		if err := rows.Scan(&g.Error, &g.Count); err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, rows.Err()
}

// DoneWithin counts rows that reached Done within the last window.
func (s *Store) DoneWithin(ctx context.Context, window time.Duration) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, s.d.q("SELECT COUNT(*) FROM migration_event WHERE created_at >= "+s.d.plusMicros(s.d.now())+
		" AND to_status = ? AND from_status <> ?"), s.nowArg(), -window.Microseconds(), string(statemachine.Done), string(statemachine.Done)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count rows done recently: %w", err)
	}
	return n, nil
}

// NotConverging lists the syncing rows whose latest event is the sync
// step's note that their stream is not converging.
func (s *Store) NotConverging(ctx context.Context, limit int) ([]statemachine.RowNote, error) {
	upper := statemachine.NotConvergingNote
	lower := strings.ToLower(upper)
	rows, err := s.db.QueryContext(ctx, s.d.q(fmt.Sprintf("SELECT m.id, m.database_name, e.detail, e.created_at FROM migration m JOIN migration_event e ON e.migration_id = m.id "+
		"WHERE m.status = ? AND e.id = (SELECT MAX(l.id) FROM migration_event l WHERE l.migration_id = m.id) AND (e.detail LIKE ? OR e.detail LIKE ?) ORDER BY m.id LIMIT %d", max(limit, 1))),
		string(statemachine.Syncing), upper+"%", lower+"%")
	if err != nil {
		return nil, fmt.Errorf("list the syncing rows that do not converge: %w", err)
	}
	defer rows.Close()
	var out []statemachine.RowNote
	for rows.Next() {
		var n statemachine.RowNote
		if err := rows.Scan(&n.ID, &n.Database, &n.Detail, &n.At); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

func workingStatuses() []any {
	var out []any
	for _, st := range statemachine.Steps {
		out = append(out, string(st.Working))
	}
	return out
}

func failedStatuses() []any {
	var out []any
	for _, st := range statemachine.Steps {
		out = append(out, string(st.Failed))
	}
	return out
}
