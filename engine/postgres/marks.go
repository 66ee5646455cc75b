package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/fleetmigrate/fleetmigrate/engine"
)

// PostgreSQL's change marks (engine.Marks): a table's mark is its file
// (pg_relation_filenode: TRUNCATE, VACUUM FULL, CLUSTER and rewriting
// ALTERs give it a new one) and the rows ever inserted, updated and
// deleted in it (the cumulative statistics, which count a row at its
// write whether or not the transaction commits). The large objects are
// one mark over pg_largeobject and pg_largeobject_metadata. The epoch is
// the server's start (the statistics do not survive a crash) and the
// database's statistics reset; with track_counts off nothing counts and
// every mark is engine.Unknown. A backend reports its counts when its
// transaction ends (at most once a second) and when it exits, so a
// session still connected may not have reported a write yet: VerifySince
// reads every table when any other session is connected to the database.

const marksEpochQuery = `SELECT pg_postmaster_start_time()::text,
	coalesce((SELECT stats_reset::text FROM pg_stat_database WHERE datname = current_database()), 'never'),
	current_setting('track_counts')::bool`

// marksTablesQuery lists the tables readTables lists, with their marks'
// parts, and the large objects' two catalogues (with empty names).
var marksTablesQuery = `SELECT n.nspname, c.relname, pg_relation_filenode(c.oid)::bigint,
	pg_stat_get_tuples_inserted(c.oid) + pg_stat_get_tuples_updated(c.oid) + pg_stat_get_tuples_deleted(c.oid)
	FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE c.relkind = 'r' AND ` + userNamespace + ` AND ` + notExtensionMember("pg_class", "c.oid") + `
	UNION ALL
	SELECT '', '', pg_relation_filenode(c.oid)::bigint,
	pg_stat_get_tuples_inserted(c.oid) + pg_stat_get_tuples_updated(c.oid) + pg_stat_get_tuples_deleted(c.oid)
	FROM pg_class c WHERE c.oid IN ('pg_catalog.pg_largeobject'::regclass, 'pg_catalog.pg_largeobject_metadata'::regclass)
	ORDER BY 1, 2, 3`

// readMarks takes the change marks of the database q is connected to.
func readMarks(ctx context.Context, q interface {
	querier
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}) (*engine.Marks, error) {
	var started, reset string
	var counting bool
	if err := q.QueryRow(ctx, marksEpochQuery).Scan(&started, &reset, &counting); err != nil {
		return nil, fmt.Errorf("read the change marks: %w", err)
	}
	schema, _, err := schemaFingerprint(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("read the change marks: %w", err)
	}
	m := &engine.Marks{Epoch: "started " + started + ", statistics reset " + reset, Schema: schema, Tables: map[string]string{}}
	rows, err := q.Query(ctx, marksTablesQuery)
	if err != nil {
		return nil, fmt.Errorf("read the change marks: %w", err)
	}
	var nsp, rel string
	var file, changes int64
	if _, err := pgx.ForEachRow(rows, []any{&nsp, &rel, &file, &changes}, func() error {
		name := largeObjects
		if nsp != "" {
			name = qi(nsp) + "." + qi(rel)
		}
		mark := fmt.Sprintf("file %d, %d rows written", file, changes)
		if prev, ok := m.Tables[name]; ok {
			mark = prev + "; " + mark
		}
		m.Tables[name] = mark
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read the change marks: %w", err)
	}
	if !counting {
		for name := range m.Tables {
			m.Tables[name] = engine.Unknown
		}
	}
	return m, nil
}

// Marks takes database's change marks now and counts the other client
// sessions connected to it (the session is kept: the verification that
// follows uses it).
func (s *Server) Marks(ctx context.Context, database string) (*engine.Marks, int, error) {
	var m *engine.Marks
	var sessions int
	err := s.inDatabaseKept(ctx, database, func(c *pgx.Conn) error {
		if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`).Scan(&sessions); err != nil {
			return fmt.Errorf("count the sessions: %w", err)
		}
		var err error
		m, err = readMarks(ctx, c)
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("change marks of %q at %s: %w", database, s, err)
	}
	return m, sessions, nil
}

// VerifySince verifies the source database m was dumped from against m,
// as Verify does, but reads again only the tables whose change marks
// moved since the dump (m.Marks); the objects, sequences and roles are
// compared whole. It returns the tables read and, when it read all of
// them, why.
func (s *Server) VerifySince(ctx context.Context, m *engine.Manifest, progress func(done, total int)) (read int, why string, err error) {
	now, sessions, err := s.Marks(ctx, m.Database)
	if err != nil {
		return 0, "", err
	}
	tables, all := m.Marks.Changed(now)
	if all == "" && sessions > 0 {
		all = fmt.Sprintf("%d other sessions are connected to the database (writes of theirs may not be counted yet)", sessions)
	}
	if all != "" {
		return len(m.Tables), all, s.verify(ctx, m, nil, progress)
	}
	// Not nil: verify reads every table for a nil list.
	return len(tables), "", s.verify(ctx, m, append([]string{}, tables...), progress)
}
