package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// planBatch is how many rows one INSERT into the MySQL staging table carries.
const planBatch = 1000

// Plan inserts rows in Waiting, all or none, in one transaction: the rows go
// into a temporary staging table first, conflicts with the state table are
// found with joins, and only then are they copied into the state table.
func (s *Store) Plan(ctx context.Context, rows []statemachine.Planned, actor string, dryRun bool) (int, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	for i, r := range rows {
		if r.DatabaseName == "" || r.Source == "" || r.Destination == "" || r.Source == r.Destination ||
			(r.Engine != statemachine.EngineMySQL && r.Engine != statemachine.EnginePostgres) ||
			(r.Mode != "" && r.Mode != statemachine.ModeDump && r.Mode != statemachine.ModeOnline && r.Mode != statemachine.ModeAuto) {
			return 0, fmt.Errorf("plan: row %d is invalid (validate rows before planning them): %+v", i, r)
		}
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if err := s.stagePlan(ctx, tx, rows); err != nil {
			return fmt.Errorf("stage planned rows: %w", err)
		}
		conflicts, err := s.planConflicts(ctx, tx)
		if err != nil {
			return fmt.Errorf("check planned rows against the state table: %w", err)
		}
		if len(conflicts) > 0 {
			return &statemachine.PlanConflictsError{Conflicts: conflicts}
		}
		if dryRun {
			return errDryRun
		}
		if _, err := tx.ExecContext(ctx, s.d.q("INSERT INTO migration (engine, database_name, source, destination, dns_name, size_bytes, mode, status, created_at, updated_at) "+
			"SELECT engine, database_name, source, destination, dns_name, size_bytes, mode, 'Waiting', "+s.d.now()+", "+s.d.now()+
			" FROM plan_input ORDER BY line"), s.nowArg(), s.nowArg()); err != nil {
			if s.d.uniqueViolation(err) {
				return errors.New("another plan inserted some of these rows meanwhile; nothing was inserted: run plan again to see which")
			}
			return fmt.Errorf("insert planned rows: %w", s.wrapDBErr(err))
		}
		if _, err := tx.ExecContext(ctx, s.d.q("INSERT INTO migration_event (migration_id, from_status, to_status, actor, detail, created_at) "+
			"SELECT m.id, '', 'Waiting', ?, 'planned', m.created_at FROM plan_input p JOIN migration m "+
			"ON m.source = p.source AND m.engine = p.engine AND m.database_name = p.database_name"), actor); err != nil {
			return fmt.Errorf("record plan events: %w", err)
		}
		if !s.d.pg() {
			_, err = tx.ExecContext(ctx, "DROP TEMPORARY TABLE IF EXISTS plan_input")
		}
		return err
	})
	if errors.Is(err, errDryRun) {
		return len(rows), nil
	}
	if err != nil {
		var pc *statemachine.PlanConflictsError
		if errors.As(err, &pc) {
			return 0, pc
		}
		return 0, fmt.Errorf("plan %d rows: %w", len(rows), err)
	}
	return len(rows), nil
}

var errDryRun = errors.New("dry run")

// stagePlan fills the plan_input staging table. PostgreSQL drops it at the
// end of the transaction; MySQL keeps temporary tables per connection, so it
// is dropped before it is created (a failed plan may have left one behind on
// a pooled connection) and after use.
func (s *Store) stagePlan(ctx context.Context, tx *sql.Tx, rows []statemachine.Planned) error {
	if s.d.pg() {
		if _, err := tx.ExecContext(ctx, `CREATE TEMPORARY TABLE plan_input (
			line bigint NOT NULL, engine text NOT NULL, database_name text NOT NULL, source text NOT NULL,
			destination text NOT NULL, dns_name text NOT NULL, size_bytes bigint, mode text NOT NULL) ON COMMIT DROP`); err != nil {
			return err
		}
		n := len(rows)
		line, size := make([]int64, n), make([]*int64, n)
		engine, name, src, dst, dnsName, mode := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		for i, r := range rows {
			line[i], engine[i], name[i], src[i], dst[i], dnsName[i], mode[i] = int64(i), string(r.Engine), r.DatabaseName, r.Source, r.Destination, r.DNSName, string(modeOf(r))
			if r.SizeBytes > 0 {
				size[i] = &rows[i].SizeBytes
			}
		}
		// One statement for any number of rows: arrays, unnested server-side.
		_, err := tx.ExecContext(ctx, `INSERT INTO plan_input
			SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::text[])`,
			line, engine, name, src, dst, dnsName, size, mode)
		return err
	}
	if _, err := tx.ExecContext(ctx, "DROP TEMPORARY TABLE IF EXISTS plan_input"); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `CREATE TEMPORARY TABLE plan_input (
		line BIGINT NOT NULL PRIMARY KEY,
		engine VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
		database_name VARBINARY(256) NOT NULL,
		source VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
		destination VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
		dns_name VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
		size_bytes BIGINT,
		mode VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL) ENGINE = InnoDB`); err != nil {
		return err
	}
	for start := 0; start < len(rows); start += planBatch {
		end := min(start+planBatch, len(rows))
		args := make([]any, 0, (end-start)*8)
		for i := start; i < end; i++ {
			r := rows[i]
			var size any
			if r.SizeBytes > 0 {
				size = r.SizeBytes
			}
			args = append(args, i, string(r.Engine), []byte(r.DatabaseName), r.Source, r.Destination, r.DNSName, size, string(modeOf(r)))
		}
		q := "INSERT INTO plan_input (line, engine, database_name, source, destination, dns_name, size_bytes, mode) VALUES "
		for i := start; i < end; i++ {
			if i > start {
				q += ", "
			}
			q += "(?, ?, ?, ?, ?, ?, ?, ?)"
		}
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return err
		}
	}
	return nil
}

// planConflicts finds staged rows that clash with rows in the table.
func (s *Store) planConflicts(ctx context.Context, tx *sql.Tx) ([]statemachine.PlanConflict, error) {
	type check struct {
		query  string
		args   []any
		reason func(id int64, status, other string) string
	}
	checks := []check{
		{
			query: "SELECT p.line, m.id, m.status, m.destination FROM plan_input p JOIN migration m " +
				"ON m.source = p.source AND m.engine = p.engine AND m.database_name = p.database_name",
			reason: func(id int64, status, dest string) string {
				return fmt.Sprintf("already planned as row %d (to %s, status %s)", id, dest, status)
			},
		},
		{
			query: "SELECT p.line, m.id, m.status, m.source FROM plan_input p JOIN migration m " +
				"ON m.destination = p.destination AND m.engine = p.engine AND m.database_name = p.database_name " +
				"WHERE m.status NOT IN (?, ?) AND m.source <> p.source",
			args: []any{string(statemachine.Cancelled), string(statemachine.RolledBack)},
			reason: func(id int64, status, src string) string {
				return fmt.Sprintf("the destination already receives a database of that name from %s (row %d, status %s)", src, id, status)
			},
		},
		{
			query: "SELECT p.line, m.id, m.status, m.database_name FROM plan_input p JOIN migration m " +
				"ON m.dns_name = p.dns_name WHERE p.dns_name <> '' AND m.status NOT IN (?, ?, ?) " +
				// a row planned again is reported once, as already planned
				"AND NOT (m.source = p.source AND m.engine = p.engine AND m.database_name = p.database_name)",
			args: []any{string(statemachine.Done), string(statemachine.Cancelled), string(statemachine.RolledBack)},
			reason: func(id int64, status, name string) string {
				return fmt.Sprintf("DNS name already belongs to unfinished row %d (database %q, status %s)", id, name, status)
			},
		},
	}
	var out []statemachine.PlanConflict
	for _, c := range checks {
		err := func() error {
			rows, err := tx.QueryContext(ctx, s.d.q(c.query), c.args...)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var line, id int64
				var status, other string
				if err := rows.Scan(&line, &id, &status, &other); err != nil {
					return err
				}
				out = append(out, statemachine.PlanConflict{Index: int(line), Reason: c.reason(id, status, other)})
			}
			return rows.Err()
		}()
		if err != nil {
			return nil, err
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out, nil
}

// modeOf is a planned row's mode, dump when none was given.
func modeOf(r statemachine.Planned) statemachine.Mode {
	if r.Mode == "" {
		return statemachine.ModeDump
	}
	return r.Mode
}
