package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

// Modes of blocking writes.
const (
	// ModeGrants revokes the accounts' write privileges on the database
	// (keeping reads) and ends their sessions: MariaDB and MySQL before
	// 8.0.22.
	ModeGrants = "grants"
	// ModeReadOnly is ALTER DATABASE ... READ ONLY = 1 (MySQL 8.0.22+): it
	// holds for every account, admins included.
	ModeReadOnly = "read-only"
)

// Access is a change of the access to one database at its source:
// blocking writes (undone by Unblock) or closing it (final). It is planned
// from the grants before anything changes, and kept (the steps store it
// before applying it) so that the change can be undone exactly, by any
// agent, after any crash.
type Access struct {
	Database string          `json:"database"`
	Mode     string          `json:"mode"`
	Accounts []AccountChange `json:"accounts,omitempty"`
	// Events were enabled and are disabled while blocked.
	Events   []Event  `json:"events,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
}

// AccountChange is what changes for one account.
type AccountChange struct {
	User string `json:"user"`
	Host string `json:"host"`
	// Before are its grants before the change (SHOW GRANTS, secrets
	// removed): Unblock checks that they are back.
	Before []string `json:"before"`
	// Apply makes the change; Undo reverts it (empty for a close).
	Apply []string `json:"apply"`
	Undo  []string `json:"undo,omitempty"`
}

// Name is 'user'@'host'.
func (c AccountChange) Name() string { return fmt.Sprintf("'%s'@'%s'", c.User, c.Host) }

// PlanBlock plans blocking writes to src's database: on MySQL 8.0.22+ the
// database is made read-only; otherwise every customer account that may
// write to it loses that (keeping SELECT and SHOW VIEW). Its enabled events
// are disabled in both modes.
func (s *Server) PlanBlock(ctx context.Context, src *Source) (*Access, error) {
	a := &Access{Database: src.Database, Mode: ModeGrants, Events: src.Events, Warnings: src.Warnings}
	if s.readOnlyDatabases() {
		a.Mode = ModeReadOnly
		return a, nil
	}
	var err error
	a.Accounts, err = s.planAccess(ctx, src, true)
	if err != nil {
		return nil, err
	}
	return a, nil
}

// PlanClose plans closing the database at its source: every customer
// account loses every privilege on it (reads too). An account whose
// wildcard grant covered it keeps exact grants on the other databases the
// wildcard matched: restoring the wildcard would open the old copy again.
func (s *Server) PlanClose(ctx context.Context, src *Source) (*Access, error) {
	accounts, err := s.planAccess(ctx, src, false)
	if err != nil {
		return nil, err
	}
	return &Access{Database: src.Database, Mode: ModeGrants, Accounts: accounts}, nil
}

// planAccess computes the statements for every account of src.
func (s *Server) planAccess(ctx context.Context, src *Source, keepRead bool) ([]AccountChange, error) {
	var all []string // every database name, read once if a wildcard needs it
	others := func(pattern string) ([]string, error) {
		if all == nil {
			all = []string{}
			err := s.queryRows(ctx, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA", nil, func(rows *sql.Rows) error {
				var name string
				err := rows.Scan(&name)
				all = append(all, name)
				return err
			})
			if err != nil {
				return nil, fmt.Errorf("list databases on %s: %w", s, err)
			}
		}
		var out []string
		for _, name := range all {
			if name != src.Database && likeMatch(pattern, name, s.foldCase) {
				out = append(out, name)
			}
		}
		return out, nil
	}
	var changes []AccountChange
	for _, acct := range src.Accounts {
		c, err := planAccount(src.Database, acct, s.foldCase, keepRead, others)
		if err != nil {
			return nil, err
		}
		if len(c.Apply) > 0 {
			changes = append(changes, c)
		}
	}
	return changes, nil
}

// planAccount plans the change for one account. Blocking (keepRead)
// revokes each of its grant lines on db that gives more than reading,
// gives the reading part back on db, and, for a wildcard line, grants the
// same privileges exactly on each other database the wildcard matches so
// that those keep working. Undoing revokes what was added and grants every
// original line again (GRANT adds; it never removes). Closing revokes every
// line on db.
func planAccount(db string, acct Account, foldCase, keepRead bool, others func(string) ([]string, error)) (AccountChange, error) {
	c := AccountChange{User: acct.User, Host: acct.Host, Before: acct.Lines}
	var added, restore []string
	for _, line := range acct.Lines {
		g, err := parseGrant(line)
		if err != nil {
			return c, err
		}
		if !g.Other && !g.global() {
			restore = append(restore, g.grantStmt(g.Privs, g.Target))
		}
		if !g.on(db, foldCase) || (keepRead && !g.writes()) {
			continue
		}
		c.Apply = append(c.Apply, g.revokeStmts()...)
		if g.dbLevel() && !exactPattern(g.DB, db) {
			names, err := others(g.DB)
			if err != nil {
				return c, err
			}
			for _, name := range names {
				c.Apply = append(c.Apply, g.grantStmt(g.Privs, dbTarget(name)))
				added = append(added, grant{Privs: g.Privs, Target: dbTarget(name), Grantee: g.Grantee, GrantOption: g.GrantOption}.revokeStmts()...)
			}
		}
		if !keepRead {
			continue
		}
		if read := g.readPart(); read != "" {
			target := g.Target
			if g.dbLevel() {
				target = dbTarget(db)
			}
			c.Apply = append(c.Apply, "GRANT "+read+" ON "+target+" TO "+g.Grantee)
			added = append(added, "REVOKE "+read+" ON "+target+" FROM "+g.Grantee)
		}
	}
	if keepRead && len(c.Apply) > 0 {
		c.Undo = append(added, restore...)
	}
	return c, nil
}

// Block applies a planned block: privileges (or READ ONLY), events, then
// the sessions of the accounts that lost privileges are ended and waited
// for (a REVOKE does not reach a session that is already open). It returns
// how many sessions were ended. Block is idempotent.
func (s *Server) Block(ctx context.Context, a *Access) (int, error) {
	if a.Mode == ModeReadOnly {
		if err := s.setReadOnly(ctx, a.Database, true); err != nil {
			return 0, err
		}
	} else {
		for _, c := range a.Accounts {
			if err := s.execAll(ctx, c.Apply, errNoSuchGrant, errNoSuchTableGrant); err != nil {
				return 0, fmt.Errorf("block writes of %s to %q on %s: %w", c.Name(), a.Database, s, err)
			}
		}
	}
	if err := s.setEvents(ctx, a.Database, a.Events, false); err != nil {
		return 0, err
	}
	n, err := s.endSessions(ctx, a.Database, a.users())
	if err != nil {
		return n, fmt.Errorf("block writes to %q on %s: %w", a.Database, s, err)
	}
	return n, nil
}

// Unblock undoes a block: the original grants (or READ ONLY = 0) and
// events. It is idempotent. It returns warnings when an account's grants
// now differ from those recorded before the block (someone changed them
// meanwhile).
func (s *Server) Unblock(ctx context.Context, a *Access) ([]string, error) {
	if a.Mode == ModeReadOnly {
		if err := s.setReadOnly(ctx, a.Database, false); err != nil {
			return nil, err
		}
	}
	var warnings []string
	for _, c := range a.Accounts {
		if err := s.execAll(ctx, c.Undo, errNoSuchGrant, errNoSuchTableGrant); err != nil {
			return nil, fmt.Errorf("restore the grants of %s on %q on %s: %w", c.Name(), a.Database, s, err)
		}
		now, _, err := s.showGrants(ctx, c.User, c.Host)
		if err != nil {
			return nil, err
		}
		if !sameLines(now, c.Before) {
			warnings = append(warnings, fmt.Sprintf("the grants of %s after restoring differ from those before the block (changed meanwhile?): now %q, before %q",
				c.Name(), now, c.Before))
		}
	}
	// A session keeps the database privileges it had when it chose its
	// database: one opened while writes were blocked (the block ended the
	// others) would be refused writes until it reconnects. They are ended:
	// the customer's clients reconnect with their privileges back.
	if a.Mode != ModeReadOnly {
		if n, err := s.endSessions(ctx, a.Database, a.users()); err != nil {
			return warnings, fmt.Errorf("end the sessions opened on %q while it was blocked on %s: %w", a.Database, s, err)
		} else if n > 0 {
			warnings = append(warnings, fmt.Sprintf("%d sessions opened while writes were blocked were ended (they would have kept the block's privileges)", n))
		}
	}
	if err := s.setEvents(ctx, a.Database, a.Events, true); err != nil {
		return warnings, err
	}
	return warnings, nil
}

// CloseAccess applies a planned close and ends the sessions of the accounts that
// lost access; it returns how many were ended.
func (s *Server) CloseAccess(ctx context.Context, a *Access) (int, error) {
	for _, c := range a.Accounts {
		if err := s.execAll(ctx, c.Apply, errNoSuchGrant, errNoSuchTableGrant); err != nil {
			return 0, fmt.Errorf("close %q to %s on %s: %w", a.Database, c.Name(), s, err)
		}
	}
	n, err := s.endSessions(ctx, a.Database, a.users())
	if err != nil {
		return n, fmt.Errorf("close %q on %s: %w", a.Database, s, err)
	}
	return n, nil
}

func (a *Access) users() []string {
	var users []string
	for _, c := range a.Accounts {
		if !slices.Contains(users, c.User) {
			users = append(users, c.User)
		}
	}
	return users
}

func sameLines(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	sort.Strings(a)
	sort.Strings(b)
	return slices.Equal(a, b)
}

// setEvents disables or enables events, keeping their definers (a plain
// ALTER EVENT would make the administrator their definer).
func (s *Server) setEvents(ctx context.Context, db string, events []Event, enable bool) error {
	state := "DISABLE"
	if enable {
		state = "ENABLE"
	}
	for _, e := range events {
		st := "ALTER " + definerClause(e.Definer) + " EVENT " + ident.QuoteMySQL(db) + "." + ident.QuoteMySQL(e.Name) + " " + state
		if _, err := s.db.ExecContext(ctx, st); err != nil {
			if errNo(err) == errUnknownEvent {
				continue // dropped meanwhile
			}
			return fmt.Errorf("%s event %s of %q on %s: %w", strings.ToLower(state), e.Name, db, s, err)
		}
	}
	return nil
}

const errUnknownEvent = 1539

// endSessions ends the sessions of the given users (all their sessions:
// processlist shows no account host pattern) and waits until they are gone,
// that is until their open transactions are rolled back. In read-only mode
// (no users) it ends nothing.
func (s *Server) endSessions(ctx context.Context, db string, users []string) (int, error) {
	if len(users) == 0 {
		return 0, nil
	}
	ids, err := s.sessionsOf(ctx, users)
	if err != nil {
		return 0, err
	}
	for _, id := range ids {
		if _, err := s.db.ExecContext(ctx, fmt.Sprintf("KILL CONNECTION %d", id)); err != nil && errNo(err) != errUnknownThread {
			return 0, fmt.Errorf("end session %d: %w", id, err)
		}
	}
	if len(ids) > 0 {
		s.log.Info("ended sessions of the database's accounts", "database", db, "sessions", len(ids))
	}
	deadline := time.Now().Add(s.opt.SessionWait)
	poll := engine.NewBackoff(5*time.Millisecond, 50*time.Millisecond)
	for {
		left, err := s.sessionsOf(ctx, users)
		if err != nil {
			return len(ids), err
		}
		var still []int64
		for _, id := range left {
			if slices.Contains(ids, id) {
				still = append(still, id)
			}
		}
		if len(still) == 0 {
			return len(ids), nil
		}
		if time.Now().After(deadline) {
			return len(ids), fmt.Errorf("sessions %v of %s were told to end but still run after %s (a long rollback?)", still, strings.Join(users, ", "), s.opt.SessionWait)
		}
		if err := poll.Wait(ctx); err != nil {
			return len(ids), err
		}
	}
}

func (s *Server) sessionsOf(ctx context.Context, users []string) ([]int64, error) {
	var ids []int64
	err := s.queryRows(ctx, "SELECT ID, USER FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID()", nil, func(rows *sql.Rows) error {
		var id int64
		var user sql.NullString
		if err := rows.Scan(&id, &user); err != nil {
			return err
		}
		if slices.Contains(users, user.String) {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list sessions on %s: %w", s, err)
	}
	return ids, nil
}

// setReadOnly runs ALTER DATABASE ... READ ONLY (MySQL 8.0.22+). The
// statement waits for transactions that touched the database; it runs with
// a short lock wait, and on a timeout the sessions using the database are
// ended and it is tried again.
func (s *Server) setReadOnly(ctx context.Context, db string, on bool) error {
	c, err := s.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.ExecContext(ctx, "SET SESSION lock_wait_timeout = 5"); err != nil {
		return fmt.Errorf("prepare to change %q on %s: %w", db, s, err)
	}
	val := "0"
	if on {
		val = "1"
	}
	for attempt := 1; ; attempt++ {
		_, err := c.ExecContext(ctx, "ALTER DATABASE "+ident.QuoteMySQL(db)+" READ ONLY = "+val)
		if err == nil {
			return nil
		}
		if errNo(err) != errLockWaitTimeout || attempt == 5 {
			return fmt.Errorf("set %q READ ONLY = %s on %s: %w", db, val, s, err)
		}
		var ids []int64
		err = s.queryRows(ctx, "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND "+schemaIs("DB"), []any{db, db},
			func(rows *sql.Rows) error {
				var id int64
				err := rows.Scan(&id)
				ids = append(ids, id)
				return err
			})
		if err != nil {
			return err
		}
		for _, id := range ids {
			_, _ = s.db.ExecContext(ctx, fmt.Sprintf("KILL CONNECTION %d", id))
		}
	}
}
