package sqlstore

import (
	"context"
	"fmt"
)

// Guarded are the migration table's columns no agent's step moves: who
// may change them may send a customer's data, or its DNS name, elsewhere.
var Guarded = []string{"source", "destination", "dns_name", "engine", "database_name"}

// Posture is what the store's login may do to the state table, as the
// state database reports it (migrate-agent --check).
type Posture struct {
	// Role is the login as the database names it.
	Role string
	// Superuser: the role bypasses every privilege (PostgreSQL's
	// rolsuper; MySQL has none as such).
	Superuser bool
	// MayChange lists the Guarded columns of every row the role may
	// update.
	MayChange []string
	// RowSecurity reports PostgreSQL row-level security on the migration
	// table (always false on MySQL/MariaDB).
	RowSecurity bool
	// Agent is the login's agent_login entry; nil: an operator's login.
	Agent *AgentLogin
}

// Posture reads what the store's login may change.
func (s *Store) Posture(ctx context.Context) (Posture, error) {
	var p Posture
	if l, ok, err := s.Login(ctx); err != nil {
		return p, err
	} else if ok {
		p.Agent = &l
	}
	if s.d.pg() {
		err := s.db.QueryRowContext(ctx, `SELECT current_user, r.rolsuper, c.relrowsecurity
			FROM pg_roles r, pg_class c WHERE r.rolname = current_user AND c.oid = 'migration'::regclass`).Scan(&p.Role, &p.Superuser, &p.RowSecurity)
		if err != nil {
			return p, fmt.Errorf("read the state database role's privileges: %w", err)
		}
		for _, col := range Guarded {
			var ok bool
			if err := s.db.QueryRowContext(ctx, "SELECT has_column_privilege('migration', $1, 'UPDATE')", col).Scan(&ok); err != nil {
				return p, fmt.Errorf("read the state database role's privileges: %w", err)
			}
			if ok || p.Superuser {
				p.MayChange = append(p.MayChange, col)
			}
		}
		return p, nil
	}
	// MySQL/MariaDB: the privileges information_schema shows for the
	// current account, at any level (global, schema, table, column).
	if err := s.db.QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&p.Role); err != nil {
		return p, fmt.Errorf("read the state database account: %w", err)
	}
	const grantee = "CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''')"
	for _, col := range Guarded {
		var n int
		err := s.db.QueryRowContext(ctx, `SELECT
			(SELECT COUNT(*) FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = `+grantee+` AND PRIVILEGE_TYPE = 'UPDATE')
			+ (SELECT COUNT(*) FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = `+grantee+` AND TABLE_SCHEMA = DATABASE() AND PRIVILEGE_TYPE = 'UPDATE')
			+ (SELECT COUNT(*) FROM information_schema.TABLE_PRIVILEGES WHERE GRANTEE = `+grantee+` AND TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'migration' AND PRIVILEGE_TYPE = 'UPDATE')
			+ (SELECT COUNT(*) FROM information_schema.COLUMN_PRIVILEGES WHERE GRANTEE = `+grantee+` AND TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'migration' AND COLUMN_NAME = ? AND PRIVILEGE_TYPE = 'UPDATE')`, col).Scan(&n)
		if err != nil {
			return p, fmt.Errorf("read the state database account's privileges: %w", err)
		}
		if n > 0 {
			p.MayChange = append(p.MayChange, col)
		}
	}
	return p, nil
}
