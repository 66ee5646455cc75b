package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

// Incoming describes a database about to arrive at a destination: enough to
// check, before anything changes, that it can.
type Incoming struct {
	Database  string
	Family    string
	Version   string
	SizeBytes int64
	Users     []engine.User
	Secrets   engine.Secrets
}

// IncomingFromSource describes src for the destination checks made before
// the source is blocked.
func IncomingFromSource(src *Source) Incoming {
	m := src.Manifest("", Position{}, nil)
	return Incoming{Database: src.Database, Family: src.Family, Version: src.ServerVersion, SizeBytes: src.SizeBytes,
		Users: m.Users, Secrets: src.Secrets()}
}

// IncomingFromManifest describes a dump for the checks made before import.
func IncomingFromManifest(m *engine.Manifest, sec engine.Secrets) Incoming {
	return Incoming{Database: m.Database, Family: m.ServerFamily, Version: m.ServerVersion, SizeBytes: m.SizeBytes, Users: m.Users, Secrets: sec}
}

// Destination is what CheckDestination found.
type Destination struct {
	// ExistsEmpty: a database of that name exists and holds nothing; the
	// import may use it (and must not drop it).
	ExistsEmpty bool
	// Charset and Collation of the existing empty database.
	Charset, Collation string
	// Create are the accounts to create; Reuse those that exist with the
	// same authentication.
	Create, Reuse []engine.User
	// Notes say what could not be checked.
	Notes []string
}

// CheckDestination checks that in can be imported here: same server family
// and a version at least the source's; no database of that name, or an
// empty one; every account's authentication plugin available, and an
// account that exists already authenticates the same way; room on disk
// where the server tells. Any refusal is a permanent error saying exactly
// what is in the way.
func (s *Server) CheckDestination(ctx context.Context, in Incoming) (*Destination, error) {
	d := &Destination{}
	if in.Family != s.family {
		return nil, engine.Permanentf("%s runs %s %s but the source runs %s %s: dumps across families do not import reliably (collations, authentication plugins); choose a %s destination",
			s, familyName(s.family), s.version, familyName(in.Family), in.Version, familyName(in.Family))
	}
	_, srcVer := parseVersion(in.Version)
	if compareVersions([3]int{s.ver[0], s.ver[1], 0}, [3]int{srcVer[0], srcVer[1], 0}) < 0 {
		return nil, engine.Permanentf("%s runs %s %s, older than the source's %s: a dump from a newer server may use what an older one lacks; choose a destination at %d.%d or later",
			s, familyName(s.family), s.version, in.Version, srcVer[0], srcVer[1])
	}
	var charset, collation string
	err := s.db.QueryRowContext(ctx, "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE "+
		schemaIs("SCHEMA_NAME"), in.Database, in.Database).Scan(&charset, &collation)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return nil, fmt.Errorf("look up database %q on %s: %w", in.Database, s, s.connectError(err))
	default:
		what, err := s.contents(ctx, in.Database)
		if err != nil {
			return nil, err
		}
		if len(what) > 0 {
			return nil, engine.Permanentf("database %q already exists on %s and is not empty (%s): refusing to import over it",
				in.Database, s, summarize(what, 5))
		}
		d.ExistsEmpty, d.Charset, d.Collation = true, charset, collation
	}
	if err := s.checkAccounts(ctx, in, d); err != nil {
		return nil, err
	}
	note, err := s.checkRoom(ctx, in.SizeBytes)
	if err != nil {
		return nil, err
	}
	if note != "" {
		d.Notes = append(d.Notes, note)
	}
	return d, nil
}

// contents lists what a database holds: tables, views, routines, events.
func (s *Server) contents(ctx context.Context, db string) ([]string, error) {
	src := &Source{Database: db, Definers: map[string][]string{}}
	if err := s.inspectObjects(ctx, src); err != nil {
		return nil, fmt.Errorf("list what %q holds on %s: %w", db, s, err)
	}
	var out []string
	for _, t := range src.Tables {
		out = append(out, "table "+t)
	}
	return append(out, src.Objects...), nil
}

func summarize(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:n], ", "), len(items)-n)
}

// checkAccounts sorts the incoming accounts into those to create and those
// to reuse, refusing plugins the server lacks and accounts that exist with
// another password.
func (s *Server) checkAccounts(ctx context.Context, in Incoming, d *Destination) error {
	plugins := map[string]bool{}
	err := s.queryRows(ctx, "SELECT PLUGIN_NAME FROM information_schema.PLUGINS WHERE PLUGIN_TYPE = 'AUTHENTICATION' AND PLUGIN_STATUS = 'ACTIVE'", nil,
		func(rows *sql.Rows) error {
			var name string
			err := rows.Scan(&name)
			plugins[strings.ToLower(name)] = true
			return err
		})
	if err != nil {
		return fmt.Errorf("list authentication plugins on %s: %w", s, err)
	}
	if s.family == MariaDB {
		plugins["mysql_native_password"] = true // built in, not always listed
	}
	for _, u := range in.Users {
		name := fmt.Sprintf("'%s'@'%s'", u.Name, u.Host)
		for _, p := range u.Plugins {
			if p == "mysql_old_password" {
				return engine.Permanentf("account %s has a pre-4.1 password hash, which modern servers refuse: reset its password at the source (SET PASSWORD) before migrating", name)
			}
			if !plugins[strings.ToLower(p)] {
				return engine.Permanentf("account %s logs in with the %s plugin, which %s does not have: install it there (INSTALL SONAME) or change the account's authentication at the source", name, p, s)
			}
		}
		sec, ok := in.Secrets.Secret(u.Name, u.Host)
		if !ok {
			return engine.Permanentf("account %s has no recorded definition (secrets): cannot recreate it", name)
		}
		exists, err := s.accountExists(ctx, u.Name, u.Host)
		if err != nil {
			return err
		}
		if !exists {
			d.Create = append(d.Create, u)
			continue
		}
		here := Account{User: u.Name, Host: u.Host}
		if err := s.readLogin(ctx, &here); err != nil {
			return err
		}
		if authClause(here.CreateUser, u.Name, u.Host) != authClause(sec.CreateUser, u.Name, u.Host) {
			return engine.Permanentf("account %s exists on %s with another password or authentication method: refusing to change it (it may serve other databases there); make them equal or drop it there first", name, s)
		}
		d.Reuse = append(d.Reuse, u)
	}
	return nil
}

// checkRoom checks free disk for twice the database's size where the
// server tells it (MariaDB with the DISKS information schema plugin);
// otherwise it returns a note that it was not checked.
func (s *Server) checkRoom(ctx context.Context, size int64) (string, error) {
	var datadir string
	if err := s.db.QueryRowContext(ctx, "SELECT @@datadir").Scan(&datadir); err != nil {
		return "", fmt.Errorf("read the data directory of %s: %w", s, err)
	}
	best, avail := "", int64(-1)
	err := s.queryRows(ctx, "SELECT Path, Available FROM information_schema.DISKS", nil, func(rows *sql.Rows) error {
		var path string
		var kb int64
		if err := rows.Scan(&path, &kb); err != nil {
			return err
		}
		if strings.HasPrefix(datadir, path) && len(path) > len(best) {
			best, avail = path, kb*1024
		}
		return nil
	})
	if err != nil || avail < 0 {
		return fmt.Sprintf("free disk space on %s not checked: the server does not expose it (MariaDB's DISKS plugin is not loaded)", s), nil
	}
	if avail < 2*size {
		return "", engine.Permanentf("%s has %d MiB free on %s, less than twice the database's %d MiB", s, avail>>20, best, size>>20)
	}
	return "", nil
}

// ImportRecord is what an import created at the destination, written
// before it creates it: undoing the import (a failed attempt, a crash, a
// rollback) drops exactly that and nothing else.
type ImportRecord struct {
	Database string `json:"database"`
	// CreatedDatabase: the import created the database; otherwise it used
	// an empty one that existed (with Charset/Collation), which it empties
	// again instead of dropping.
	CreatedDatabase bool   `json:"created_database"`
	Charset         string `json:"charset,omitempty"`
	Collation       string `json:"collation,omitempty"`
	// CreatedUsers are accounts the import created; Granted are the grant
	// statements it applied (to created and reused accounts).
	CreatedUsers []engine.User `json:"created_users,omitempty"`
	Granted      []string      `json:"granted,omitempty"`
}

// CreateDatabase creates db with the source's character set and collation.
func (s *Server) CreateDatabase(ctx context.Context, db, charset, collation string) error {
	st := "CREATE DATABASE " + ident.QuoteMySQL(db)
	if charset != "" {
		st += " CHARACTER SET " + ident.QuoteMySQL(charset)
	}
	if collation != "" {
		st += " COLLATE " + ident.QuoteMySQL(collation)
	}
	if _, err := s.db.ExecContext(ctx, st); err != nil {
		if errNo(err) == 1007 {
			return engine.Permanentf("database %q appeared on %s meanwhile: refusing to import over it", db, s)
		}
		return fmt.Errorf("create database %q on %s: %w", db, s, err)
	}
	return nil
}

// CreateUser creates an account from its recorded definition: the same
// authentication string, so that the same password works without anyone
// knowing it. The statement holds a hash: errors never quote it.
func (s *Server) CreateUser(ctx context.Context, sec engine.UserSecret) error {
	if !strings.HasPrefix(sec.CreateUser, "CREATE USER ") {
		return engine.Permanentf("the recorded definition of '%s'@'%s' is not a CREATE USER statement", sec.Name, sec.Host)
	}
	if _, err := s.db.ExecContext(ctx, sec.CreateUser); err != nil {
		var msg string
		if n := errNo(err); n != 0 {
			msg = fmt.Sprintf("error %d", n)
			if n == errCannotUser {
				return engine.Permanentf("account '%s'@'%s' appeared on %s meanwhile: refusing to change it", sec.Name, sec.Host, s)
			}
		} else {
			msg = err.Error()
		}
		return fmt.Errorf("create account '%s'@'%s' on %s: %s", sec.Name, sec.Host, s, msg)
	}
	return nil
}

// Grant applies grant statements.
func (s *Server) Grant(ctx context.Context, stmts []string) error {
	if err := s.execAll(ctx, stmts); err != nil {
		return fmt.Errorf("apply grants on %s: %w", s, err)
	}
	return nil
}

// EnableEvents enables events that were enabled at the source.
func (s *Server) EnableEvents(ctx context.Context, db string, events []engine.Event) error {
	return s.setEvents(ctx, db, events, true)
}

// Verify checks an import against its manifest: every table's row count
// and checksum, every other object, and that the accounts its objects run
// as exist. A difference is a permanent error naming what differs.
func (s *Server) Verify(ctx context.Context, m *engine.Manifest, done func(i, n int)) error {
	return s.verify(ctx, m, nil, done)
}

// verify compares the database with m; only, when not nil, are the only
// tables (of m's) whose checksums are computed and compared.
func (s *Server) verify(ctx context.Context, m *engine.Manifest, only []string, done func(i, n int)) error {
	names := make([]string, len(m.Tables))
	for i, t := range m.Tables {
		names[i] = t.Name
	}
	want := engine.Only(m.Tables, only)
	here := &Source{Database: m.Database, Definers: map[string][]string{}}
	if err := s.inspectObjects(ctx, here); err != nil {
		return fmt.Errorf("list what %q holds on %s: %w", m.Database, s, err)
	}
	var problems []string
	for _, t := range here.Tables {
		if !slices.Contains(names, t) {
			problems = append(problems, t+": not in the dump")
		}
	}
	var present []string
	for _, t := range want {
		if slices.Contains(here.Tables, t.Name) {
			present = append(present, t.Name)
		}
	}
	jobs := 1
	if s.parallel(m.SizeBytes) {
		jobs = s.opt.Jobs
	}
	sums, err := s.checksums(ctx, m.Database, present, jobs, done)
	if err != nil {
		return err
	}
	problems = append(problems, engine.Diff(want, sums)...)
	more, err := s.objectProblems(ctx, m, here, nil)
	if err != nil {
		return err
	}
	problems = append(problems, more...)
	if len(problems) > 0 {
		return engine.Permanentf("%q on %s does not match its dump: %s", m.Database, s, summarize(problems, 10))
	}
	return nil
}

// objectProblems lists m's objects that here lacks and their definers
// that do not exist at this server; with keep, only the objects keep
// says (and their definers).
func (s *Server) objectProblems(ctx context.Context, m *engine.Manifest, here *Source, keep func(object string) bool) ([]string, error) {
	var problems []string
	for _, o := range m.Objects {
		if (keep == nil || keep(o)) && !slices.Contains(here.Objects, o) {
			problems = append(problems, o+": missing")
		}
	}
	var definers []string
	for d, objs := range m.Definers {
		if keep == nil || slices.ContainsFunc(objs, keep) {
			definers = append(definers, d)
		}
	}
	sort.Strings(definers)
	for _, d := range definers {
		if slices.Contains(m.MissingDefiners, d) {
			continue
		}
		user, host := splitDefiner(d)
		ok, err := s.accountExists(ctx, user, host)
		if err != nil {
			return nil, err
		}
		if !ok {
			problems = append(problems, fmt.Sprintf("definer %s of %s does not exist here", d, strings.Join(m.Definers[d], ", ")))
		}
	}
	return problems, nil
}

// triggerOrEvent: what the online cutover creates under the block (the
// stream must not fire them while it applies).
func triggerOrEvent(object string) bool {
	return strings.HasPrefix(object, "trigger ") || strings.HasPrefix(object, "event ")
}

// VerifyObjects is the online cutover's check, before the block, of the
// objects of m other than triggers and events (tables, views, routines,
// sequences: made by the copy, and unchanged since, the stream carrying
// no DDL and the block's check of the source's log showing none) and of
// their definers: VerifyCutover checks the rest under the block.
func (s *Server) VerifyObjects(ctx context.Context, m *engine.Manifest) error {
	here := &Source{Database: m.Database, Definers: map[string][]string{}}
	if err := s.inspectObjects(ctx, here); err != nil {
		return fmt.Errorf("list what %q holds on %s: %w", m.Database, s, err)
	}
	problems, err := s.objectProblems(ctx, m, here, func(o string) bool { return !triggerOrEvent(o) })
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return engine.Permanentf("%q on %s does not match the source: %s", m.Database, s, summarize(problems, 10))
	}
	return nil
}

// VerifyCutover is the online cutover's check under the block: the
// tables of m.Tables, whose sums here are sums (computed at both servers
// at once), and the triggers and events with their definers (created by
// the cutover); VerifyObjects checked the other objects before the block.
func (s *Server) VerifyCutover(ctx context.Context, m *engine.Manifest, sums []engine.TableSum) error {
	problems := engine.Diff(m.Tables, sums)
	if slices.ContainsFunc(m.Objects, triggerOrEvent) {
		here := &Source{Database: m.Database, Definers: map[string][]string{}}
		if err := s.inspectTriggersEvents(ctx, here); err != nil {
			return fmt.Errorf("list the triggers and events of %q on %s: %w", m.Database, s, err)
		}
		more, err := s.objectProblems(ctx, m, here, triggerOrEvent)
		if err != nil {
			return err
		}
		problems = append(problems, more...)
	}
	if len(problems) > 0 {
		return engine.Permanentf("%q on %s does not match the source: %s", m.Database, s, summarize(problems, 10))
	}
	return nil
}

// Empty reports whether the record holds nothing to drop.
func (r ImportRecord) Empty() bool { return r.Database == "" && len(r.CreatedUsers) == 0 }

// DropImport undoes what rec says an import created: the database (or, if
// it existed empty, its contents), and the accounts it created, unless an
// account has since gained privileges elsewhere (another database's import
// reused it): that one only loses what this import granted. Idempotent.
func (s *Server) DropImport(ctx context.Context, rec ImportRecord) error {
	if rec.Database != "" {
		if _, err := s.db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+ident.QuoteMySQL(rec.Database)); err != nil {
			return fmt.Errorf("drop the import of %q on %s: %w", rec.Database, s, err)
		}
		if !rec.CreatedDatabase {
			if err := s.CreateDatabase(ctx, rec.Database, rec.Charset, rec.Collation); err != nil && !errors.Is(err, engine.ErrPermanent) {
				return fmt.Errorf("recreate the empty database %q that existed before the import: %w", rec.Database, err)
			}
		}
	}
	for _, u := range rec.CreatedUsers {
		exists, err := s.accountExists(ctx, u.Name, u.Host)
		if err != nil {
			return err
		}
		if !exists {
			continue
		}
		_, grants, err := s.showGrants(ctx, u.Name, u.Host)
		if err != nil {
			return err
		}
		if elsewhere := privilegesElsewhere(grants, rec.Database, s.foldCase); len(elsewhere) > 0 {
			s.log.Info("account created by an import has privileges on other databases now; keeping it", "account", accountName(u.Name, u.Host))
			continue
		}
		if _, err := s.db.ExecContext(ctx, "DROP USER "+accountName(u.Name, u.Host)); err != nil && errNo(err) != errCannotUser {
			return fmt.Errorf("drop account '%s'@'%s' created by the import on %s: %w", u.Name, u.Host, s, err)
		}
	}
	return nil
}

// privilegesElsewhere lists an account's grant lines on other databases.
func privilegesElsewhere(grants []grant, db string, foldCase bool) []string {
	var out []string
	for _, g := range grants {
		if g.Other || g.global() {
			continue
		}
		if g.dbLevel() && exactPattern(g.DB, db) || !g.dbLevel() && g.on(db, foldCase) {
			continue
		}
		out = append(out, g.Target)
	}
	return out
}
