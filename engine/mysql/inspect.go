package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/fleetmigrate/fleetmigrate/engine"
)

// Source is what Inspect found about a database at its source: its shape,
// the accounts that come with it, and what blocking must know.
type Source struct {
	Database      string `json:"database"`
	ServerVersion string `json:"server_version"`
	Family        string `json:"server_family"`
	Charset       string `json:"charset"`
	Collation     string `json:"collation"`
	// SizeBytes is data and index length as the server estimates it.
	SizeBytes int64 `json:"size_bytes"`
	// Tables are the base tables, by name.
	Tables []string `json:"tables"`
	// Objects are the other schema objects ("view v", "trigger t",
	// "procedure p", "function f", "event e", "sequence s"), sorted.
	Objects []string `json:"objects"`
	// Accounts are the customer accounts that have privileges on the
	// database, and the definers of its objects that are not admins: they
	// move with it.
	Accounts []Account `json:"accounts"`
	// Admins are accounts with server-wide privileges that also have
	// privileges on the database or define its objects: they are neither
	// migrated nor blocked; the destination must have its own.
	Admins []string `json:"admins,omitempty"`
	// Events are the database's events that are enabled.
	Events []Event `json:"events,omitempty"`
	// Definers are the accounts its views, triggers, routines and events
	// run as ("'u'@'h'"), with the objects.
	Definers map[string][]string `json:"definers,omitempty"`
	// MissingDefiners do not exist at the source either.
	MissingDefiners []string `json:"missing_definers,omitempty"`
	Warnings        []string `json:"warnings,omitempty"`
}

// Account is an account that moves with a database.
type Account struct {
	User string `json:"user"`
	Host string `json:"host"`
	// Lines are its SHOW GRANTS lines, secrets removed.
	Lines []string `json:"lines"`
	// CreateUser is SHOW CREATE USER: it holds the password hash, a
	// secret (engine.Secrets), and is not serialised with the rest.
	CreateUser string `json:"-"`
	// Plugins are the authentication plugins it uses.
	Plugins []string `json:"plugins,omitempty"`
	// DefinerOnly: it has no privileges on the database but defines some
	// of its objects.
	DefinerOnly bool `json:"definer_only,omitempty"`
}

// Name is 'user'@'host', for messages.
func (a Account) Name() string { return fmt.Sprintf("'%s'@'%s'", a.User, a.Host) }

// Event is an event and the account it runs as.
type Event = engine.Event

// systemAccounts are the servers' own accounts: expected everywhere, never
// migrated.
var systemAccounts = []string{"mariadb.sys", "mysql.sys", "mysql.session", "mysql.infoschema", "root"}

// Inspect reads what migrating db needs to know. A missing database is a
// permanent error.
func (s *Server) Inspect(ctx context.Context, db string) (*Source, error) {
	src := &Source{Database: db, ServerVersion: s.version, Family: s.family, Definers: map[string][]string{}}
	err := s.db.QueryRowContext(ctx, "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE "+
		schemaIs("SCHEMA_NAME"), db, db).Scan(&src.Charset, &src.Collation)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, engine.Permanentf("database %q does not exist on %s", db, s)
	}
	if err != nil {
		return nil, fmt.Errorf("look up database %q on %s: %w", db, s, s.connectError(err))
	}
	if err := s.inspectObjects(ctx, src); err != nil {
		return nil, fmt.Errorf("inspect database %q on %s: %w", db, s, err)
	}
	if err := s.inspectAccounts(ctx, src); err != nil {
		return nil, err
	}
	return src, nil
}

// inspectObjects reads tables, views, routines, triggers and events.
func (s *Server) inspectObjects(ctx context.Context, src *Source) error {
	db := src.Database
	addDefiner := func(definer, object string) {
		if definer != "" {
			src.Definers[definer] = append(src.Definers[definer], object)
		}
	}
	err := s.queryRows(ctx, "SELECT TABLE_NAME, TABLE_TYPE, COALESCE(DATA_LENGTH, 0) + COALESCE(INDEX_LENGTH, 0) FROM information_schema.TABLES WHERE "+
		schemaIs("TABLE_SCHEMA"), []any{db, db}, func(rows *sql.Rows) error {
		var name, typ string
		var size int64
		if err := rows.Scan(&name, &typ, &size); err != nil {
			return err
		}
		src.SizeBytes += size
		switch typ {
		case "BASE TABLE":
			src.Tables = append(src.Tables, name)
		case "SYSTEM VERSIONED":
			src.Tables = append(src.Tables, name)
			src.Warnings = append(src.Warnings, fmt.Sprintf("table %s is system-versioned: its history is not dumped, only its current rows", name))
		case "VIEW":
			src.Objects = append(src.Objects, "view "+name)
		case "SEQUENCE":
			src.Objects = append(src.Objects, "sequence "+name)
		default:
			src.Objects = append(src.Objects, strings.ToLower(typ)+" "+name)
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = s.queryRows(ctx, "SELECT TABLE_NAME, DEFINER FROM information_schema.VIEWS WHERE "+schemaIs("TABLE_SCHEMA"), []any{db, db},
		func(rows *sql.Rows) error {
			var name, definer string
			if err := rows.Scan(&name, &definer); err != nil {
				return err
			}
			addDefiner(definer, "view "+name)
			return nil
		})
	if err != nil {
		return err
	}
	err = s.queryRows(ctx, "SELECT ROUTINE_TYPE, ROUTINE_NAME, DEFINER FROM information_schema.ROUTINES WHERE "+schemaIs("ROUTINE_SCHEMA"), []any{db, db},
		func(rows *sql.Rows) error {
			var typ, name, definer string
			if err := rows.Scan(&typ, &name, &definer); err != nil {
				return err
			}
			obj := strings.ToLower(typ) + " " + name
			src.Objects = append(src.Objects, obj)
			addDefiner(definer, obj)
			return nil
		})
	if err != nil {
		return err
	}
	if err := s.inspectTriggersEvents(ctx, src); err != nil {
		return err
	}
	sort.Strings(src.Tables)
	sort.Strings(src.Objects)
	return nil
}

// inspectTriggersEvents adds the database's triggers and events (and their
// definers) to src.
func (s *Server) inspectTriggersEvents(ctx context.Context, src *Source) error {
	db := src.Database
	addDefiner := func(definer, object string) {
		if definer != "" {
			src.Definers[definer] = append(src.Definers[definer], object)
		}
	}
	err := s.queryRows(ctx, "SELECT TRIGGER_NAME, DEFINER FROM information_schema.TRIGGERS WHERE "+schemaIs("TRIGGER_SCHEMA"), []any{db, db},
		func(rows *sql.Rows) error {
			var name, definer string
			if err := rows.Scan(&name, &definer); err != nil {
				return err
			}
			src.Objects = append(src.Objects, "trigger "+name)
			addDefiner(definer, "trigger "+name)
			return nil
		})
	if err != nil {
		return err
	}
	err = s.queryRows(ctx, "SELECT EVENT_NAME, DEFINER, STATUS FROM information_schema.EVENTS WHERE "+schemaIs("EVENT_SCHEMA"), []any{db, db},
		func(rows *sql.Rows) error {
			var name, definer, status string
			if err := rows.Scan(&name, &definer, &status); err != nil {
				return err
			}
			src.Objects = append(src.Objects, "event "+name)
			addDefiner(definer, "event "+name)
			if status == "ENABLED" {
				src.Events = append(src.Events, Event{Name: name, Definer: definer})
			}
			return nil
		})
	if err != nil {
		return err
	}
	return nil
}

// inspectAccounts finds the accounts with privileges on the database and
// the definers of its objects, and reads their grants and how they log in.
func (s *Server) inspectAccounts(ctx context.Context, src *Source) error {
	db := src.Database
	type key struct{ user, host string }
	found := map[key]bool{}
	var order []key
	add := func(rows *sql.Rows) error {
		var k key
		if err := rows.Scan(&k.user, &k.host); err != nil {
			return err
		}
		if !found[k] {
			found[k] = true
			order = append(order, k)
		}
		return nil
	}
	// mysql.db holds LIKE patterns; its Db column has a binary collation,
	// so the comparison is the server's own matching of grants.
	for _, q := range []string{
		"SELECT User, Host FROM mysql.db WHERE ? LIKE Db",
		"SELECT User, Host FROM mysql.tables_priv WHERE Db = ?",
		"SELECT User, Host FROM mysql.columns_priv WHERE Db = ?",
		"SELECT User, Host FROM mysql.procs_priv WHERE Db = ?",
	} {
		if err := s.queryRows(ctx, q, []any{db}, add); err != nil {
			return fmt.Errorf("find the accounts with privileges on %q on %s: %w", db, s, err)
		}
	}
	slices.SortFunc(order, func(a, b key) int { return strings.Compare(a.user+"@"+a.host, b.user+"@"+b.host) })

	definers := make([]string, 0, len(src.Definers))
	for d := range src.Definers {
		definers = append(definers, d)
	}
	sort.Strings(definers)
	definerOnly := map[key]bool{}
	for _, d := range definers {
		user, host := splitDefiner(d)
		k := key{user, host}
		if found[k] {
			continue
		}
		exists, err := s.accountExists(ctx, user, host)
		if err != nil {
			return err
		}
		if !exists {
			src.MissingDefiners = append(src.MissingDefiners, d)
			src.Warnings = append(src.Warnings, fmt.Sprintf("%s, the definer of %s, does not exist at the source either; those objects fail when used",
				d, strings.Join(src.Definers[d], ", ")))
			continue
		}
		found[k], definerOnly[k] = true, true
		order = append(order, k)
	}

	for _, k := range order {
		if slices.Contains(systemAccounts, k.user) {
			src.Admins = append(src.Admins, accountName(k.user, k.host))
			continue
		}
		role, err := s.isRole(ctx, k.user, k.host)
		if err != nil {
			return err
		}
		if role {
			return engine.Permanentf("role %q holds privileges on %q on %s: databases whose privileges come through roles are not supported; grant them to the accounts directly", k.user, db, s)
		}
		lines, grants, err := s.showGrants(ctx, k.user, k.host)
		if err != nil {
			return err
		}
		if admin(grants) {
			src.Admins = append(src.Admins, accountName(k.user, k.host))
			continue
		}
		for _, g := range grants {
			if g.Other && g.Privs != "PROXY" {
				src.Warnings = append(src.Warnings, fmt.Sprintf("account '%s'@'%s' has the role %s: roles are not migrated", k.user, k.host, g.Privs))
			}
		}
		acct := Account{User: k.user, Host: k.host, Lines: lines, DefinerOnly: definerOnly[k]}
		if err := s.readLogin(ctx, &acct); err != nil {
			return err
		}
		src.Accounts = append(src.Accounts, acct)
	}
	if len(src.Admins) > 0 {
		src.Warnings = append(src.Warnings, fmt.Sprintf("accounts with server-wide privileges (%s) are neither migrated nor blocked: they can still write at the source while it is blocked, and must exist at the destination",
			strings.Join(src.Admins, ", ")))
	}
	for _, k := range order {
		if objs := src.Definers[k.user+"@"+k.host]; len(objs) > 0 && slices.Contains(src.Admins, accountName(k.user, k.host)) {
			src.Warnings = append(src.Warnings, fmt.Sprintf("%s run as %s, which has server-wide privileges: called while writes are blocked, SQL SECURITY DEFINER routines and views can still write",
				strings.Join(objs, ", "), accountName(k.user, k.host)))
		}
	}
	return nil
}

// admin reports whether grants include server-wide privileges beyond USAGE.
func admin(grants []grant) bool {
	for _, g := range grants {
		if g.global() && g.Privs != "USAGE" {
			return true
		}
	}
	return false
}

// splitDefiner splits "user@host" at its last '@'.
func splitDefiner(d string) (string, string) {
	i := strings.LastIndex(d, "@")
	if i < 0 {
		return d, ""
	}
	return d[:i], d[i+1:]
}

// definerClause is DEFINER = `user`@`host` for a "user@host" definer.
func definerClause(d string) string {
	user, host := splitDefiner(d)
	return "DEFINER = " + accountName(user, host)
}

func (s *Server) accountExists(ctx context.Context, user, host string) (bool, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM mysql.user WHERE User = ? AND Host = ?", user, host).Scan(&n); err != nil {
		return false, fmt.Errorf("look up account '%s'@'%s' on %s: %w", user, host, s, err)
	}
	return n > 0, nil
}

func (s *Server) isRole(ctx context.Context, user, host string) (bool, error) {
	if s.family != MariaDB {
		return false, nil
	}
	var role string
	err := s.db.QueryRowContext(ctx, "SELECT is_role FROM mysql.user WHERE User = ? AND Host = ?", user, host).Scan(&role)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up account '%s'@'%s' on %s: %w", user, host, s, err)
	}
	return role == "Y", nil
}

// showGrants reads an account's grants, secrets removed.
func (s *Server) showGrants(ctx context.Context, user, host string) ([]string, []grant, error) {
	var lines []string
	var grants []grant
	err := s.queryRows(ctx, "SHOW GRANTS FOR "+accountName(user, host), nil, func(rows *sql.Rows) error {
		var line string
		if err := rows.Scan(&line); err != nil {
			return err
		}
		g, err := parseGrant(line)
		if err != nil {
			return err
		}
		lines = append(lines, redactGrant(line))
		grants = append(grants, g)
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read the grants of '%s'@'%s' on %s: %w", user, host, s, err)
	}
	return lines, grants, nil
}

var viaPlugin = regexp.MustCompile(`(?:IDENTIFIED VIA|IDENTIFIED WITH|\bOR) '?([A-Za-z0-9_]+)'?`)

// readLogin reads SHOW CREATE USER and the plugins an account logs in with.
func (s *Server) readLogin(ctx context.Context, a *Account) error {
	c, err := s.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if s.family == MySQL && s.atLeast(8, 0, 17) {
		// caching_sha2_password hashes hold bytes that only survive as hex
		if _, err := c.ExecContext(ctx, "SET SESSION print_identified_with_as_hex = ON"); err != nil {
			return fmt.Errorf("prepare to read account definitions on %s: %w", s, err)
		}
	}
	if err := c.QueryRowContext(ctx, "SHOW CREATE USER "+accountName(a.User, a.Host)).Scan(&a.CreateUser); err != nil {
		return fmt.Errorf("read the definition of %s on %s: %w", a.Name(), s, err)
	}
	var plugin, auth string
	if err := c.QueryRowContext(ctx, "SELECT plugin, authentication_string FROM mysql.user WHERE User = ? AND Host = ?", a.User, a.Host).Scan(&plugin, &auth); err != nil {
		return fmt.Errorf("read how %s logs in on %s: %w", a.Name(), s, err)
	}
	if plugin == "" {
		plugin = "mysql_native_password"
	}
	if plugin == "mysql_native_password" && len(auth) == 16 {
		plugin = "mysql_old_password"
	}
	a.Plugins = []string{plugin}
	for _, m := range viaPlugin.FindAllStringSubmatch(a.CreateUser, -1) {
		if !slices.Contains(a.Plugins, m[1]) {
			a.Plugins = append(a.Plugins, m[1])
		}
	}
	return nil
}

// authClause is the part of a CREATE USER statement that says how the
// account logs in (plugin and hash), for comparing two servers' accounts.
func authClause(createUser, user, host string) string {
	rest := createUser
	for _, prefix := range []string{"CREATE USER " + accountName(user, host), "CREATE USER " + fmt.Sprintf("'%s'@'%s'", user, host)} {
		if r, ok := strings.CutPrefix(createUser, prefix); ok {
			rest = r
			break
		}
	}
	for _, stop := range []string{" REQUIRE ", " WITH ", " PASSWORD EXPIRE", " ACCOUNT ", " DEFAULT ROLE", " COMMENT ", " ATTRIBUTE "} {
		if i := strings.Index(rest, stop); i >= 0 {
			rest = rest[:i]
		}
	}
	return strings.TrimSpace(rest)
}

// queryRows runs a query and calls fn for each row.
func (s *Server) queryRows(ctx context.Context, q string, args []any, fn func(*sql.Rows) error) error {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// Blocked makes src describe the database as it was before a block that
// is still in place: the changed accounts' grants and the events come from
// the block's record (what the server shows now is the blocked state).
func (src *Source) Blocked(a *Access) {
	for i, acct := range src.Accounts {
		for _, c := range a.Accounts {
			if c.User == acct.User && c.Host == acct.Host {
				src.Accounts[i].Lines = c.Before
			}
		}
	}
	src.Events = a.Events
}

// Manifest describes a dump of src taken at pos, with its tables' sums.
// The users' grants are the statements that give them, at a destination,
// their privileges on this database: database-level wildcards become the
// exact, escaped name (a wildcard there could reach other customers'
// databases).
func (src *Source) Manifest(source string, pos Position, sums []engine.TableSum) engine.Manifest {
	m := engine.Manifest{
		FormatVersion: engine.ManifestVersion, Engine: "mysql", ServerVersion: src.ServerVersion, ServerFamily: src.Family,
		Database: src.Database, Charset: src.Charset, Collation: src.Collation, Source: source, SizeBytes: src.SizeBytes,
		ConsistencyPoint: pos.At, BinlogFile: pos.BinlogFile, BinlogPosition: pos.BinlogPosition, GTID: pos.GTID,
		DumpFormat: "sql", Tables: sums, ChecksumAlgorithm: ChecksumAlgorithm, Objects: src.Objects,
		Definers: src.Definers, MissingDefiners: src.MissingDefiners, Events: src.Events, Warnings: src.Warnings,
	}
	for _, a := range src.Accounts {
		u := engine.User{Name: a.User, Host: a.Host, Plugins: a.Plugins, DefinerOnly: a.DefinerOnly, Grants: []string{}}
		for _, line := range a.Lines {
			g, err := parseGrant(line)
			if err != nil || g.Other || g.global() || !g.on(src.Database, false) {
				continue
			}
			target := g.Target
			if g.dbLevel() {
				target = dbTarget(src.Database)
			}
			u.Grants = append(u.Grants, g.grantStmt(g.Privs, target))
		}
		m.Users = append(m.Users, u)
	}
	return m
}

// Secrets are the accounts' definitions with their password hashes.
func (src *Source) Secrets() engine.Secrets {
	var s engine.Secrets
	for _, a := range src.Accounts {
		s.Users = append(s.Users, engine.UserSecret{Name: a.User, Host: a.Host, CreateUser: a.CreateUser})
	}
	return s
}
