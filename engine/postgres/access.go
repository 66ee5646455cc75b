package postgres

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fleetmigrate/fleetmigrate/engine"
)

// Access is a change of who may connect to one database at its source:
// blocking writes (undone by Unblock) or closing it (final). Both make the
// administrator the database's owner and revoke every privilege on the
// database from everyone else, PUBLIC included, then end the sessions of
// every non-superuser role connected to it.
//
// Why this mechanism: the owner role, which customers usually are, can
// grant itself back anything a REVOKE on its own tables took, and any
// client can turn default_transaction_read_only off; a fencing session's
// locks vanish with the session. Without CONNECT on the database and
// without its ownership, a role cannot reach the data at all, whatever it
// sets or grants, and the change survives any agent crash. Its cost:
// reads stop too while the database is blocked (docs/engines.md).
//
// The owner and privileges before the change are kept (the steps store the
// Access before applying it) so that Unblock restores them exactly.
type Access struct {
	Database string `json:"database"`
	// Owner and ACL are the database's owner and privileges before.
	Owner      string           `json:"owner"`
	ACL        []engine.ACLItem `json:"acl"`
	DefaultACL bool             `json:"default_acl,omitempty"`
	// Admin owns the database while the change is in force.
	Admin    string   `json:"admin"`
	Warnings []string `json:"warnings,omitempty"`
}

// Revoked are the roles that lose their privileges ("" is PUBLIC).
func (a *Access) Revoked() []string { return grantees(a.ACL, a.Admin) }

// grantees lists the distinct grantees of acl except one.
func grantees(acl []engine.ACLItem, except ...string) []string {
	var out []string
	for _, it := range acl {
		if !slices.Contains(except, it.Grantee) && !slices.Contains(out, it.Grantee) {
			out = append(out, it.Grantee)
		}
	}
	return out
}

// PlanBlock plans blocking writes to src's database.
func (s *Server) PlanBlock(_ context.Context, src *Source) (*Access, error) {
	return &Access{Database: src.Database, Owner: src.DB.Owner, ACL: slices.Clone(src.DB.ACL), DefaultACL: src.DB.DefaultACL, Admin: s.admin, Warnings: src.Warnings}, nil
}

// PlanClose plans closing the database for good: the same change as
// blocking, recorded with the owner and privileges it had before the
// migration (from its manifest), for whoever must reopen it by hand.
func (s *Server) PlanClose(_ context.Context, m *engine.Manifest) (*Access, error) {
	if m.Postgres == nil {
		return nil, engine.Permanentf("the manifest of %q has no PostgreSQL section", m.Database)
	}
	return &Access{Database: m.Database, Owner: m.Postgres.Owner, ACL: slices.Clone(m.Postgres.ACL), DefaultACL: m.Postgres.DefaultACL, Admin: s.admin}, nil
}

// Block applies a (in one transaction), then ends the sessions of every
// non-superuser role connected to the database and waits until they are
// gone, so that no transaction that began before is still writing. It
// returns how many sessions it ended. Running it again is harmless.
func (s *Server) Block(ctx context.Context, a *Access) (int, error) {
	if err := s.revokeAll(ctx, a.Database); err != nil {
		return 0, err
	}
	return s.endSessions(ctx, a.Database)
}

// CloseAccess closes the database for good: the change of Block (already
// in force after a migration), then its sessions are ended. It returns how
// many it ended.
func (s *Server) CloseAccess(ctx context.Context, a *Access) (int, error) { return s.Block(ctx, a) }

// revokeAll makes the administrator the owner of database and revokes
// every privilege on it from everyone else, with CASCADE so that what
// holders of a grant option granted goes too.
func (s *Server) revokeAll(ctx context.Context, database string) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "ALTER DATABASE "+qi(database)+" OWNER TO "+qi(s.admin)); err != nil {
			return fmt.Errorf("make %q the owner: %w", s.admin, err)
		}
		grantees, err := currentGrantees(ctx, tx, database, s.admin)
		if err != nil {
			return err
		}
		if len(grantees) > 0 {
			if _, err := tx.Exec(ctx, "REVOKE ALL ON DATABASE "+qi(database)+" FROM "+granteeList(grantees)+" CASCADE"); err != nil {
				return fmt.Errorf("revoke the privileges on the database: %w", err)
			}
		}
		keep := []string{s.admin}
		if p := s.peer(); p != "" {
			// The peers' read-only role reads the blocked database: the
			// destination's dump, checks and stream (pg_read_all_data
			// does not give CONNECT).
			if _, err := tx.Exec(ctx, "GRANT CONNECT ON DATABASE "+qi(database)+" TO "+qi(p)); err != nil {
				return fmt.Errorf("let the peers' role %q connect: %w", p, err)
			}
			keep = append(keep, p)
		}
		left, err := currentGrantees(ctx, tx, database, keep...)
		if err != nil {
			return err
		}
		if len(left) > 0 {
			return engine.Permanentf("privileges of %s on the database survived REVOKE", granteeList(left))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("revoke access to %q on %s: %w", database, s, err)
	}
	return nil
}

// currentGrantees lists who holds privileges on database now, except
// keep ("" is PUBLIC).
func currentGrantees(ctx context.Context, tx pgx.Tx, database string, keep ...string) ([]string, error) {
	acl, err := readACL(ctx, tx, database)
	if err != nil {
		return nil, err
	}
	return grantees(acl, keep...), nil
}

// peer is the peers' read-only role, if it is not the administrator.
func (s *Server) peer() string {
	if s.opt.Peer == s.admin {
		return ""
	}
	return s.opt.Peer
}

// granteeList is a GRANT/REVOKE role list ("" is PUBLIC).
func granteeList(grantees []string) string {
	out := make([]string, len(grantees))
	for i, g := range grantees {
		out[i] = grantee(g)
	}
	return strings.Join(out, ", ")
}

func grantee(g string) string {
	if g == "" {
		return "PUBLIC"
	}
	return qi(g)
}

// endSessions ends the sessions of non-superuser roles connected to
// database (but the peers' read-only role's: other agents') and waits
// until they are gone. It returns how many it ended.
func (s *Server) endSessions(ctx context.Context, database string) (int, error) {
	const others = ` FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid
		WHERE a.datname = $1 AND a.pid <> pg_backend_pid() AND NOT r.rolsuper AND r.rolname <> $2`
	var ended int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(a.pid))`+others, database, s.peer()).Scan(&ended); err != nil {
		return 0, fmt.Errorf("end the sessions of %q: %w", database, err)
	}
	deadline := time.Now().Add(s.opt.SessionWait)
	poll := engine.NewBackoff(5*time.Millisecond, 50*time.Millisecond)
	for {
		var left int
		if err := s.pool.QueryRow(ctx, `SELECT count(*)`+others, database, s.peer()).Scan(&left); err != nil {
			return ended, fmt.Errorf("wait for the sessions of %q to end: %w", database, err)
		}
		if left == 0 {
			return ended, nil
		}
		if time.Now().After(deadline) {
			return ended, fmt.Errorf("%d sessions of %q on %s were still there %s after pg_terminate_backend (see pg_stat_activity: a backend stuck in I/O or in an extension ignores it); "+
				"the step gives up and restores what it changed, and is retried; raise postgres.session-wait if this repeats", left, database, s, s.opt.SessionWait)
		}
		if err := poll.Wait(ctx); err != nil {
			return ended, err
		}
	}
}

// Unblock restores the owner and privileges a recorded, in one
// transaction, and returns warnings for whatever could not be made as it
// was. Running it again is harmless.
func (s *Server) Unblock(ctx context.Context, a *Access) ([]string, error) {
	var warnings []string
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "ALTER DATABASE "+qi(a.Database)+" OWNER TO "+qi(a.Owner)); err != nil {
			return fmt.Errorf("give the database back to %q: %w", a.Owner, err)
		}
		var err error
		warnings, err = setACL(ctx, tx, a.Database, a.Owner, a.ACL, a.DefaultACL)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("restore access to %q on %s: %w", a.Database, s, err)
	}
	return warnings, nil
}

// setACL makes the privileges on database exactly acl (its owner being
// owner): it revokes what is not in it and grants what is, as the grantor
// recorded, then compares. Differences left are returned as warnings. When
// the privileges were the defaults (datacl NULL, never granted or
// revoked), the same privileges spelt out are made NULL again, so that
// the catalog is as it was.
func setACL(ctx context.Context, tx pgx.Tx, database, owner string, acl []engine.ACLItem, defaults bool) ([]string, error) {
	db := qi(database)
	grantees, err := currentGrantees(ctx, tx, database, owner)
	if err != nil {
		return nil, err
	}
	if len(grantees) > 0 {
		if _, err := tx.Exec(ctx, "REVOKE ALL ON DATABASE "+db+" FROM "+granteeList(grantees)+" CASCADE"); err != nil {
			return nil, fmt.Errorf("revoke the privileges on the database: %w", err)
		}
	}
	// The owner's grants first: holders of a grant option grant after.
	items := slices.Clone(acl)
	slices.SortStableFunc(items, func(a, b engine.ACLItem) int {
		return boolInt(a.Grantor != owner) - boolInt(b.Grantor != owner)
	})
	for _, it := range items {
		st := "GRANT " + it.Privilege + " ON DATABASE " + db + " TO " + grantee(it.Grantee)
		if it.Grantable {
			st += " WITH GRANT OPTION"
		}
		stmts := []string{st}
		if it.Grantor != owner {
			// A grant made by a holder of the grant option is made as it.
			stmts = []string{"SET LOCAL ROLE " + qi(it.Grantor), st, "RESET ROLE"}
		}
		for _, st := range stmts {
			if _, err := tx.Exec(ctx, st); err != nil {
				return nil, fmt.Errorf("%s: %w", st, err)
			}
		}
	}
	now, err := readACL(ctx, tx, database)
	if err != nil {
		return nil, err
	}
	want := slices.Clone(acl)
	sortACL(want)
	if !slices.Equal(now, want) {
		return []string{fmt.Sprintf("the privileges on %s are now %s, before they were %s", db, describeACL(now), describeACL(want))}, nil
	}
	if defaults {
		var same bool
		if err := tx.QueryRow(ctx, "SELECT datacl IS NULL OR datacl::text[] <@ acldefault('d', datdba)::text[] AND acldefault('d', datdba)::text[] <@ datacl::text[] FROM pg_database WHERE datname = $1", database).Scan(&same); err != nil {
			return nil, fmt.Errorf("compare the privileges with the defaults: %w", err)
		}
		if same {
			if _, err := tx.Exec(ctx, "UPDATE pg_database SET datacl = NULL WHERE datname = $1", database); err != nil {
				return nil, fmt.Errorf("restore the default privileges: %w", err)
			}
		}
	}
	return nil, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func describeACL(acl []engine.ACLItem) string {
	var parts []string
	for _, it := range acl {
		g := "PUBLIC"
		if it.Grantee != "" {
			g = it.Grantee
		}
		p := fmt.Sprintf("%s %s by %s", g, it.Privilege, it.Grantor)
		if it.Grantable {
			p += " with grant option"
		}
		parts = append(parts, p)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}
