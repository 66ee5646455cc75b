package postgres

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/fleetmigrate/fleetmigrate/engine"
)

// Source is what the source knows about a database before its dump: its
// locale, owner, privileges and settings, its tables and other objects,
// and the roles that come with it (their verifiers apart, in Secrets).
type Source struct {
	Database string
	OID      uint32
	Encoding string
	Collate  string
	DB       engine.PostgresDatabase
	// SizeBytes is pg_database_size.
	SizeBytes int64
	// Tables are the tables that hold rows, quoted "schema"."table".
	Tables []string
	// LargeObjects is how many large objects the database has.
	LargeObjects int64
	// Objects are the schema objects ("view "s"."v"", ...), sorted.
	Objects  []string
	Secrets  engine.Secrets
	Warnings []string
	// checksum is the algorithm of the dump's checksums (ChooseChecksum;
	// "": ChecksumRowMD5).
	checksum string
}

// userNamespace is a condition on pg_namespace n: a schema of the
// database's own, not the system's.
const userNamespace = `n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'`

// notExtensionMember is a condition that the object (class, oid) does not
// belong to an extension (CREATE EXTENSION makes those).
func notExtensionMember(class, oid string) string {
	return fmt.Sprintf("NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = '%s'::regclass AND e.objid = %s AND e.deptype = 'e')", class, oid)
}

// Inspect reads what the migration needs to know about database at this
// source. A missing database, a non-default tablespace and pending
// prepared transactions are permanent errors.
func (s *Server) Inspect(ctx context.Context, database string) (*Source, error) {
	if err := validName(database); err != nil {
		return nil, err
	}
	src := &Source{Database: database}
	// A kept session: the dump's snapshot takes it up after the block.
	err := s.inDatabaseKept(ctx, database, func(c *pgx.Conn) error {
		if err := s.readDatabase(ctx, c, src); err != nil {
			return err
		}
		steps := []func(context.Context, *pgx.Conn, *Source) error{
			readRefusals, readTables, readObjects, readSettings, readExtensions,
			func(ctx context.Context, c *pgx.Conn, src *Source) error { return readRoles(ctx, c, src, s.opt.Peer) },
		}
		for _, step := range steps {
			if err := step(ctx, c, src); err != nil {
				return err
			}
		}
		if s.srv.ReadOnly && src.LargeObjects > 0 {
			return s.largeObjectsReadable(ctx, c, database)
		}
		return nil
	})
	if errors.Is(err, engine.ErrPermanent) && strings.Contains(err.Error(), s.String()) {
		return nil, err // says what and where already ("database ... does not exist on ...")
	}
	if err != nil {
		return nil, fmt.Errorf("inspect %q on %s: %w", database, s, err)
	}
	return src, nil
}

func (s *Server) readDatabase(ctx context.Context, c *pgx.Conn, src *Source) error {
	var space string
	err := c.QueryRow(ctx, `SELECT d.oid, pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, `+s.localeColumns()+`,
			pg_get_userbyid(d.datdba), d.datacl IS NULL, t.spcname, pg_database_size(d.oid)
		FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace WHERE d.datname = $1`, src.Database).
		Scan(&src.OID, &src.Encoding, &src.Collate, &src.DB.Ctype, &src.DB.LocaleProvider, &src.DB.ICULocale, &src.DB.Owner, &src.DB.DefaultACL, &space, &src.SizeBytes)
	if err != nil {
		return fmt.Errorf("read the database's catalog entry: %w", err)
	}
	if space != "pg_default" {
		return engine.Permanentf("database %q lives in tablespace %q: only databases in pg_default are migrated (move it with ALTER DATABASE ... SET TABLESPACE pg_default first)", src.Database, space)
	}
	src.DB.ACL, err = readACL(ctx, c, src.Database)
	return err
}

// localeColumns selects pg_database's locale provider and ICU locale
// (columns of d), as far as this server version has them.
func (s *Server) localeColumns() string {
	switch {
	case s.num >= 170000:
		return `d.datlocprovider::text, coalesce(d.datlocale, '')`
	case s.num >= 150000:
		return `d.datlocprovider::text, coalesce(d.daticulocale, '')`
	}
	return `'c', ''`
}

// readACL reads the database's privileges, the defaults spelt out.
func readACL(ctx context.Context, q querier, database string) ([]engine.ACLItem, error) {
	rows, err := q.Query(ctx, `SELECT CASE WHEN a.grantee = 0 THEN '' ELSE pg_get_userbyid(a.grantee) END,
			pg_get_userbyid(a.grantor), a.privilege_type, a.is_grantable
		FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a WHERE d.datname = $1`, database)
	if err != nil {
		return nil, fmt.Errorf("read the database's privileges: %w", err)
	}
	acl, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (engine.ACLItem, error) {
		var a engine.ACLItem
		err := r.Scan(&a.Grantee, &a.Grantor, &a.Privilege, &a.Grantable)
		return a, err
	})
	if err != nil {
		return nil, fmt.Errorf("read the database's privileges: %w", err)
	}
	sortACL(acl)
	return acl, nil
}

func sortACL(acl []engine.ACLItem) {
	sort.Slice(acl, func(i, j int) bool {
		a, b := acl[i], acl[j]
		if a.Grantee != b.Grantee {
			return a.Grantee < b.Grantee
		}
		if a.Privilege != b.Privilege {
			return a.Privilege < b.Privilege
		}
		return a.Grantor < b.Grantor
	})
}

// readRefusals finds what the engine does not move: relations in other
// tablespaces, and prepared transactions (they could commit after the
// snapshot).
func readRefusals(ctx context.Context, c *pgx.Conn, src *Source) error {
	rows, err := c.Query(ctx, `SELECT t.spcname, string_agg(quote_ident(n.nspname) || '.' || quote_ident(c.relname), ', ' ORDER BY n.nspname, c.relname)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_tablespace t ON t.oid = c.reltablespace
		WHERE c.reltablespace <> 0 AND t.spcname NOT IN ('pg_default', 'pg_global') GROUP BY t.spcname ORDER BY t.spcname`)
	if err != nil {
		return fmt.Errorf("read tablespaces: %w", err)
	}
	var spaces []string
	var space, rels string
	if _, err := pgx.ForEachRow(rows, []any{&space, &rels}, func() error {
		spaces = append(spaces, fmt.Sprintf("tablespace %q (%s)", space, shorten(rels, 200)))
		return nil
	}); err != nil {
		return fmt.Errorf("read tablespaces: %w", err)
	}
	if len(spaces) > 0 {
		return engine.Permanentf("database %q uses non-default %s: only the default tablespace is migrated (move them with ALTER TABLE ... SET TABLESPACE pg_default first)", src.Database, strings.Join(spaces, ", "))
	}
	var gids []string
	rows, err = c.Query(ctx, `SELECT gid FROM pg_prepared_xacts WHERE database = $1 ORDER BY gid`, src.Database)
	if err != nil {
		return fmt.Errorf("read prepared transactions: %w", err)
	}
	if gids, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return fmt.Errorf("read prepared transactions: %w", err)
	}
	if len(gids) > 0 {
		return engine.Permanentf("database %q has %d prepared transactions (%s): they could commit after the dump's snapshot; COMMIT PREPARED or ROLLBACK PREPARED them first",
			src.Database, len(gids), shorten(strings.Join(gids, ", "), 200))
	}
	return nil
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// readTables lists the tables that hold rows (plain tables and
// partitions, not extensions' own) and counts the large objects.
func readTables(ctx context.Context, c *pgx.Conn, src *Source) error {
	rows, err := c.Query(ctx, `SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND `+userNamespace+` AND `+notExtensionMember("pg_class", "c.oid")+`
		ORDER BY 1, 2`)
	if err != nil {
		return fmt.Errorf("list tables: %w", err)
	}
	var nsp, rel string
	if _, err := pgx.ForEachRow(rows, []any{&nsp, &rel}, func() error {
		src.Tables = append(src.Tables, qi(nsp)+"."+qi(rel))
		return nil
	}); err != nil {
		return fmt.Errorf("list tables: %w", err)
	}
	if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_largeobject_metadata`).Scan(&src.LargeObjects); err != nil {
		return fmt.Errorf("count large objects: %w", err)
	}
	return nil
}

// largeObjectsReadable refuses a database whose large objects this
// (peer's read-only) role may not read: pg_read_all_data does not cover
// large objects, and a dump would fail on the first one — after the
// source's writes were blocked for it. Each is tried (a read of no
// bytes); the check changes nothing.
func (s *Server) largeObjectsReadable(ctx context.Context, c *pgx.Conn, database string) error {
	_, err := c.Exec(ctx, `DO $$
DECLARE n bigint := 0; o oid;
BEGIN
	FOR o IN SELECT oid FROM pg_largeobject_metadata LOOP
		BEGIN
			PERFORM lo_get(o, 0, 0);
		EXCEPTION WHEN insufficient_privilege THEN
			n := n + 1;
		END;
	END LOOP;
	IF n > 0 THEN
		RAISE EXCEPTION 'fleetmigrate: % large objects unreadable', n USING ERRCODE = 'FM001', DETAIL = n::text;
	END IF;
END $$`)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "FM001" {
		return engine.Permanentf("%q at %s has %s large objects the peers' read-only role %q may not read (pg_read_all_data does not cover large objects): "+
			"grant it SELECT on them at the source (GRANT SELECT ON LARGE OBJECT ... TO %s; the grant is copied with them), or migrate this database with a destination agent whose postgres.peer-user is unset (docs/security.md)",
			database, s, pe.Detail, s.srv.User, qi(s.srv.User))
	}
	if err != nil {
		return fmt.Errorf("check that the large objects are readable: %w", err)
	}
	return nil
}

// objectsQuery lists a database's schema objects as (kind, schema, name,
// detail) for describing them the same way on every server version.
const objectsQuery = `
SELECT 'schema', '', n.nspname, '' FROM pg_namespace n
 WHERE ` + userNamespace + ` AND n.nspname <> 'public'
UNION ALL
SELECT CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table' WHEN 'v' THEN 'view'
         WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence' ELSE 'foreign table' END,
       n.nspname, c.relname, ''
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND ` + userNamespace + `
UNION ALL
SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' WHEN 'w' THEN 'window function' ELSE 'function' END,
       n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE ` + userNamespace + `
UNION ALL
SELECT 'trigger', n.nspname, c.relname, t.tgname
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE NOT t.tgisinternal AND ` + userNamespace + `
UNION ALL
SELECT 'extension', '', x.extname, '' FROM pg_extension x`

// readObjects lists the schema objects the import must have (those of
// extensions included: CREATE EXTENSION recreates them).
func readObjects(ctx context.Context, c *pgx.Conn, src *Source) error {
	objs, err := listObjects(ctx, c)
	if err != nil {
		return err
	}
	src.Objects = objs
	return nil
}

func listObjects(ctx context.Context, c *pgx.Conn) ([]string, error) {
	rows, err := c.Query(ctx, objectsQuery)
	if err != nil {
		return nil, fmt.Errorf("list objects: %w", err)
	}
	var out []string
	var kind, nsp, name, detail string
	if _, err := pgx.ForEachRow(rows, []any{&kind, &nsp, &name, &detail}, func() error {
		out = append(out, describeObject(kind, nsp, name, detail))
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list objects: %w", err)
	}
	sort.Strings(out)
	return out, nil
}

func describeObject(kind, nsp, name, detail string) string {
	switch {
	case kind == "trigger":
		return fmt.Sprintf("trigger %s on %s.%s", qi(detail), qi(nsp), qi(name))
	case nsp == "":
		return kind + " " + qi(name)
	case strings.Contains(kind, "function") || kind == "procedure" || kind == "aggregate":
		return fmt.Sprintf("%s %s.%s(%s)", kind, qi(nsp), qi(name), detail)
	}
	return fmt.Sprintf("%s %s.%s", kind, qi(nsp), qi(name))
}

// readSettings reads ALTER DATABASE ... SET and ALTER ROLE ... IN
// DATABASE ... SET.
func readSettings(ctx context.Context, c *pgx.Conn, src *Source) error {
	rows, err := c.Query(ctx, `SELECT coalesce(r.rolname, ''), x.setting
		FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole, unnest(s.setconfig) WITH ORDINALITY x(setting, n)
		WHERE s.setdatabase = $1 ORDER BY 1, x.n`, src.OID)
	if err != nil {
		return fmt.Errorf("read database settings: %w", err)
	}
	var st engine.Setting
	_, err = pgx.ForEachRow(rows, []any{&st.Role, &st.Setting}, func() error {
		src.DB.Settings = append(src.DB.Settings, st)
		return nil
	})
	if err != nil {
		return fmt.Errorf("read database settings: %w", err)
	}
	return nil
}

func readExtensions(ctx context.Context, c *pgx.Conn, src *Source) error {
	rows, err := c.Query(ctx, `SELECT x.extname, x.extversion, n.nspname FROM pg_extension x JOIN pg_namespace n ON n.oid = x.extnamespace ORDER BY 1`)
	if err != nil {
		return fmt.Errorf("read extensions: %w", err)
	}
	var x engine.Extension
	_, err = pgx.ForEachRow(rows, []any{&x.Name, &x.Version, &x.Schema}, func() error {
		src.DB.Extensions = append(src.DB.Extensions, x)
		return nil
	})
	if err != nil {
		return fmt.Errorf("read extensions: %w", err)
	}
	return nil
}

// rolesQuery finds the roles that come with database $1: its owner, the
// grantees of its privileges, the owners and grantees of its objects
// (pg_shdepend), roles with settings in it, and every role that is a
// member of one of those, however indirectly (they reach the data through
// that membership); not the peers' read-only role $2 (the fleet's own, at
// every server: a grant to it on a large object makes it a grantee).
const rolesQuery = `
WITH RECURSIVE direct(oid) AS (
  SELECT datdba FROM pg_database WHERE oid = $1
  UNION SELECT (aclexplode(coalesce(datacl, acldefault('d', datdba)))).grantee FROM pg_database WHERE oid = $1
  UNION SELECT refobjid FROM pg_shdepend WHERE dbid = $1 AND refclassid = 'pg_authid'::regclass AND deptype IN ('o', 'a', 'r', 'i')
  UNION SELECT setrole FROM pg_db_role_setting WHERE setdatabase = $1
), closure(oid) AS (
  SELECT oid FROM direct WHERE oid <> 0
  UNION SELECT m.member FROM pg_auth_members m JOIN closure c ON m.roleid = c.oid
)
SELECT a.rolname, a.rolsuper, a.rolinherit, a.rolcreaterole, a.rolcreatedb, a.rolcanlogin, a.rolreplication,
       a.rolbypassrls, a.rolconnlimit, a.rolvaliduntil, coalesce(a.rolpassword, ''),
       coalesce((SELECT s.setconfig FROM pg_db_role_setting s WHERE s.setrole = a.oid AND s.setdatabase = 0), '{}')
  FROM pg_authid a JOIN closure USING (oid)
 WHERE a.rolname !~ '^pg_' AND a.rolname <> $2
 ORDER BY a.rolname`

// readRoles reads the roles that come with the database, their
// verifiers, and their memberships among themselves and in predefined
// roles.
func readRoles(ctx context.Context, c *pgx.Conn, src *Source, peer string) error {
	rows, err := c.Query(ctx, rolesQuery, src.OID, peer)
	if err != nil {
		return fmt.Errorf("read roles: %w", err)
	}
	var names []string
	var supers []string
	for rows.Next() {
		var r engine.Role
		var valid *time.Time
		var verifier string
		if err := rows.Scan(&r.Name, &r.Superuser, &r.Inherit, &r.CreateRole, &r.CreateDB, &r.Login, &r.Replication,
			&r.BypassRLS, &r.ConnLimit, &valid, &verifier, &r.Settings); err != nil {
			rows.Close()
			return fmt.Errorf("read roles: %w", err)
		}
		if valid != nil && !valid.IsZero() && valid.Year() < 9999 {
			v := valid.UTC()
			r.ValidUntil = &v
		}
		r.Password = verifierKind(verifier)
		src.DB.Roles = append(src.DB.Roles, r)
		if r.Superuser {
			supers = append(supers, r.Name)
			continue
		}
		names = append(names, r.Name)
		src.Secrets.Users = append(src.Secrets.Users, engine.UserSecret{Name: r.Name, CreateUser: createRoleSQL(r, verifier), Verifier: verifier})
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read roles: %w", err)
	}
	if len(supers) > 0 {
		src.Warnings = append(src.Warnings, fmt.Sprintf("superuser roles %s have access: blocking does not stop them, and they are not copied (the destination must have them)", strings.Join(quoteAll(supers), ", ")))
	}
	rows, err = c.Query(ctx, `SELECT r.rolname, m.rolname, am.admin_option FROM pg_auth_members am
		JOIN pg_roles r ON r.oid = am.roleid JOIN pg_roles m ON m.oid = am.member
		WHERE m.rolname = ANY($1) AND (r.rolname = ANY($1) OR r.rolname ~ '^pg_') ORDER BY 1, 2`, names)
	if err != nil {
		return fmt.Errorf("read role memberships: %w", err)
	}
	var m engine.Membership
	_, err = pgx.ForEachRow(rows, []any{&m.Role, &m.Member, &m.Admin}, func() error {
		src.DB.Memberships = append(src.DB.Memberships, m)
		return nil
	})
	if err != nil {
		return fmt.Errorf("read role memberships: %w", err)
	}
	return nil
}

func quoteAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = qi(n)
	}
	return out
}

// verifierKind names the kind of a pg_authid.rolpassword.
func verifierKind(v string) string {
	switch {
	case v == "":
		return ""
	case strings.HasPrefix(v, "SCRAM-SHA-256$"):
		return "SCRAM-SHA-256"
	case strings.HasPrefix(v, "md5") && len(v) == 35:
		return "md5"
	}
	return "unknown"
}

// createRoleSQL is the statement that recreates r with its attributes and
// its password verifier: the server stores a verifier given as the
// password as it is, so the original password works and nobody needs it.
func createRoleSQL(r engine.Role, verifier string) string {
	flag := func(on bool, name string) string {
		if on {
			return name
		}
		return "NO" + name
	}
	parts := []string{"CREATE ROLE", qi(r.Name), "WITH", "NOSUPERUSER",
		flag(r.Inherit, "INHERIT"), flag(r.CreateRole, "CREATEROLE"), flag(r.CreateDB, "CREATEDB"),
		flag(r.Login, "LOGIN"), flag(r.Replication, "REPLICATION"), flag(r.BypassRLS, "BYPASSRLS"),
		fmt.Sprintf("CONNECTION LIMIT %d", r.ConnLimit)}
	if r.ValidUntil != nil {
		parts = append(parts, "VALID UNTIL", ql(r.ValidUntil.UTC().Format("2006-01-02 15:04:05.999999Z07:00")))
	}
	if verifier != "" {
		parts = append(parts, "PASSWORD", ql(verifier))
	}
	return strings.Join(parts, " ")
}

// Manifest describes the dump of src taken at snap, with the tables'
// checksums sums and the sequences' values seqs.
func (src *Source) Manifest(source string, snap *Snapshot, sums []engine.TableSum, seqs []engine.Sequence) engine.Manifest {
	db := src.DB
	return engine.Manifest{
		FormatVersion:     engine.ManifestVersion,
		Engine:            "postgres",
		Database:          src.Database,
		Charset:           src.Encoding,
		Collation:         src.Collate,
		Source:            source,
		SizeBytes:         src.SizeBytes,
		ConsistencyPoint:  snap.At,
		LSN:               snap.LSN,
		DumpFormat:        "pg_dump-custom",
		Tables:            sums,
		ChecksumAlgorithm: src.checksumOrDefault(),
		Objects:           src.Objects,
		Sequences:         seqs,
		Postgres:          &db,
		Users:             src.users(),
		Warnings:          src.Warnings,
	}
}

// users lists the roles as the manifest's users (for counts and
// messages): their memberships are their grants.
func (src *Source) users() []engine.User {
	var out []engine.User
	for _, r := range src.DB.Roles {
		u := engine.User{Name: r.Name}
		if r.Password != "" {
			u.Plugins = []string{r.Password}
		}
		for _, m := range src.DB.Memberships {
			if m.Member == r.Name {
				u.Grants = append(u.Grants, grantMembershipSQL(m))
			}
		}
		out = append(out, u)
	}
	return out
}

func grantMembershipSQL(m engine.Membership) string {
	s := "GRANT " + qi(m.Role) + " TO " + qi(m.Member)
	if m.Admin {
		s += " WITH ADMIN OPTION"
	}
	return s
}
