package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/jackc/pgx/v5"

	"github.com/fleetmigrate/fleetmigrate/engine"
)

// Incoming is what a destination must accept: from the source's
// inspection (the dump step's preflight) or from a manifest (the import).
type Incoming struct {
	Database    string
	Encoding    string
	Collate     string
	DB          engine.PostgresDatabase
	Secrets     engine.Secrets
	SourceMajor int
	SizeBytes   int64
}

// IncomingFromSource is what src brings; major is the source's major
// version.
func IncomingFromSource(src *Source, major int) Incoming {
	return Incoming{Database: src.Database, Encoding: src.Encoding, Collate: src.Collate, DB: src.DB, Secrets: src.Secrets, SourceMajor: major, SizeBytes: src.SizeBytes}
}

// IncomingFromManifest is what a dump brings.
func IncomingFromManifest(m *engine.Manifest, sec engine.Secrets) Incoming {
	in := Incoming{Database: m.Database, Encoding: m.Charset, Collate: m.Collation, Secrets: sec, SourceMajor: serverMajor(m.ServerVersion), SizeBytes: m.SizeBytes}
	if m.Postgres != nil {
		in.DB = *m.Postgres
	}
	return in
}

// serverMajor reads the major version from server_version ("15.4 (Debian
// ...)" is 15, "9.6.2" is 9).
func serverMajor(v string) int {
	n := 0
	for _, r := range v {
		if r < '0' || r > '9' {
			break
		}
		n = n*10 + int(r-'0')
	}
	return n
}

// Destination is what CheckDestination found.
type Destination struct {
	// Existing is the destination's empty database of that name, if it
	// has one: the import fills it instead of creating it.
	Existing *ExistingDatabase
	// CreateRoles are the roles the import creates; the others exist
	// with the same verifier and are reused.
	CreateRoles []string
	ReuseRoles  []string
	Notes       []string
}

// ExistingDatabase is an empty database that was at the destination
// before the import: dropping the import makes it again like this.
type ExistingDatabase struct {
	Owner          string `json:"owner"`
	Encoding       string `json:"encoding"`
	Collate        string `json:"collate"`
	Ctype          string `json:"ctype"`
	LocaleProvider string `json:"locale_provider,omitempty"`
	ICULocale      string `json:"icu_locale,omitempty"`
}

// CheckDestination checks that this server can take the incoming
// database: a major version not older than the source's, no database of
// that name (or an empty one with the same encoding and locale), every
// extension available, no role of the same name with another password
// verifier, the superuser roles present, and room where measurable.
// Anything missing is a permanent error that says exactly what.
func (s *Server) CheckDestination(ctx context.Context, in Incoming) (*Destination, error) {
	if err := validName(in.Database); err != nil {
		return nil, err
	}
	d := &Destination{}
	if in.SourceMajor > s.Major() {
		return nil, engine.Permanentf("destination %s runs PostgreSQL %s, older than the source's %d: a dump cannot be restored into an older major version", s, s.version, in.SourceMajor)
	}
	var err error
	if d.Existing, err = s.existing(ctx, in); err != nil {
		return nil, err
	}
	if err := s.checkExtensions(ctx, in, d); err != nil {
		return nil, err
	}
	if err := s.checkRoles(ctx, in, d); err != nil {
		return nil, err
	}
	if err := s.checkRoom(ctx, in, d); err != nil {
		return nil, err
	}
	return d, nil
}

// existing finds an existing database of the incoming name: none is
// fine; an empty one with the same encoding and locale is used; anything
// else is refused.
func (s *Server) existing(ctx context.Context, in Incoming) (*ExistingDatabase, error) {
	e := &ExistingDatabase{}
	err := s.pool.QueryRow(ctx, `SELECT pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, `+s.localeColumns()+`
		FROM pg_database d WHERE d.datname = $1`, in.Database).Scan(&e.Owner, &e.Encoding, &e.Collate, &e.Ctype, &e.LocaleProvider, &e.ICULocale)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look for database %q on %s: %w", in.Database, s, err)
	}
	var objs []string
	err = s.inDatabase(ctx, in.Database, func(c *pgx.Conn) error {
		all, err := listObjects(ctx, c)
		objs = slices.DeleteFunc(all, func(o string) bool { return o == `extension "plpgsql"` })
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(objs) > 0 {
		return nil, engine.Permanentf("destination %s already has a database %q holding %d objects (%s): it is not touched; drop or rename it, or migrate elsewhere",
			s, in.Database, len(objs), shorten(strings.Join(objs, ", "), 200))
	}
	if e.Encoding != in.Encoding || e.Collate != in.Collate || e.Ctype != in.DB.Ctype {
		return nil, engine.Permanentf("encoding mismatch: destination %s has an empty database %q with encoding %s, collation %s, ctype %s; the source's has %s, %s, %s: drop it and let the import create it",
			s, in.Database, e.Encoding, e.Collate, e.Ctype, in.Encoding, in.Collate, in.DB.Ctype)
	}
	return e, nil
}

func (s *Server) checkExtensions(ctx context.Context, in Incoming, d *Destination) error {
	var missing []string
	for _, x := range in.DB.Extensions {
		var versions []string
		err := s.pool.QueryRow(ctx, `SELECT coalesce(array_agg(version::text), '{}') FROM pg_available_extension_versions WHERE name = $1`, x.Name).Scan(&versions)
		if err != nil {
			return fmt.Errorf("read the available extensions on %s: %w", s, err)
		}
		switch {
		case len(versions) == 0:
			missing = append(missing, fmt.Sprintf("%s %s (package postgresql-%d-%s or postgresql-contrib, as the source has it)", x.Name, x.Version, s.Major(), x.Name))
		case !slices.Contains(versions, x.Version):
			d.Notes = append(d.Notes, fmt.Sprintf("extension %s: the source has version %s, the destination offers %s", x.Name, x.Version, strings.Join(versions, ", ")))
		}
	}
	if len(missing) > 0 {
		return engine.Permanentf("destination %s lacks extensions %q uses: %s", s, in.Database, strings.Join(missing, "; "))
	}
	return nil
}

// checkRoles sorts the incoming roles into created and reused ones. A
// role that exists with another verifier is refused: reusing it would
// change a password or lock its users out.
func (s *Server) checkRoles(ctx context.Context, in Incoming, d *Destination) error {
	var conflicts []string
	for _, r := range in.DB.Roles {
		var super bool
		var verifier string
		err := s.pool.QueryRow(ctx, `SELECT rolsuper, coalesce(rolpassword, '') FROM pg_authid WHERE rolname = $1`, r.Name).Scan(&super, &verifier)
		exists := err == nil
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("look for role %q on %s: %w", r.Name, s, err)
		}
		switch {
		case r.Superuser && !exists:
			conflicts = append(conflicts, fmt.Sprintf("superuser role %q, which has access at the source, does not exist (superusers are not copied: create it first)", r.Name))
		case r.Superuser:
		case !exists:
			d.CreateRoles = append(d.CreateRoles, r.Name)
		default:
			sec, _ := in.Secrets.Secret(r.Name, "")
			if sec.Verifier != verifier {
				conflicts = append(conflicts, fmt.Sprintf("role %q exists with a different password verifier (source %s, destination %s): reusing it would change which password works",
					r.Name, kindOrNone(verifierKind(sec.Verifier)), kindOrNone(verifierKind(verifier))))
				continue
			}
			if super {
				d.Notes = append(d.Notes, fmt.Sprintf("role %q is a superuser at the destination", r.Name))
			}
			d.ReuseRoles = append(d.ReuseRoles, r.Name)
		}
	}
	if len(conflicts) > 0 {
		return engine.Permanentf("role conflict at destination %s: %s", s, strings.Join(conflicts, "; "))
	}
	return nil
}

func kindOrNone(k string) string {
	if k == "" {
		return "no password"
	}
	return k
}

// checkRoom compares the free space of the destination's data directory
// with twice the database's size, when the server runs on this machine
// (otherwise it cannot be measured from SQL, and a note says so).
func (s *Server) checkRoom(ctx context.Context, in Incoming, d *Destination) error {
	host := s.cfg.ConnConfig.Host
	local := strings.HasPrefix(host, "/")
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() || host == "localhost" {
		local = true
	}
	var dir string
	if local {
		if err := s.pool.QueryRow(ctx, "SELECT current_setting('data_directory')").Scan(&dir); err != nil {
			return fmt.Errorf("read the data directory of %s: %w", s, err)
		}
	}
	var st syscall.Statfs_t
	if !local || syscall.Statfs(dir, &st) != nil {
		d.Notes = append(d.Notes, "free space not checked (the server's data directory is not on this machine)")
		return nil
	}
	free := int64(st.Bavail) * st.Bsize //nolint:gosec // block counts fit
	if need := 2 * in.SizeBytes; free < need {
		return engine.Permanentf("destination %s has %d MB free in %s; %q needs about %d MB (twice its size at the source)", s, free>>20, dir, in.Database, need>>20)
	}
	return nil
}

// ImportRecord is what an import created at the destination, recorded
// before it is created: DropImport undoes exactly this.
type ImportRecord struct {
	Database string `json:"database"`
	// CreatedDatabase is false when the import filled an empty database
	// that was there (Existing): dropping the import makes it again.
	CreatedDatabase bool              `json:"created_database"`
	Existing        *ExistingDatabase `json:"existing,omitempty"`
	CreatedRoles    []string          `json:"created_roles,omitempty"`
}

// Empty reports whether the record holds nothing to drop.
func (r ImportRecord) Empty() bool { return r.Database == "" && len(r.CreatedRoles) == 0 }

// Import creates the database of manifest m at this destination with its
// roles (their verifiers from sec), restores the dump from r into it (in
// parallel from a spooled copy above Options.ParallelAbove), applies the
// database's settings and privileges and ANALYZEs it. Before it creates
// anything it calls record with what it is about to create, so that
// DropImport can undo exactly that; a record error stops it. It does not
// verify (Verify does). It returns notes on what was not checked.
func (s *Server) Import(ctx context.Context, m *engine.Manifest, sec engine.Secrets, r io.Reader, record func(ImportRecord) error, p *engine.Progress) ([]string, error) {
	return s.importFrom(ctx, m, sec, r, record, p, true)
}

// ImportBeside is Import for a dump read while it is being written (r
// is the pipe from the dump tool): pg_restore reads it as it comes, never
// from a spooled copy, and fails if r ends with an error. m is the
// manifest as far as it is known before the dump (PullManifest): the
// tables' checksums come with the finished dump and go to Verify.
func (s *Server) ImportBeside(ctx context.Context, m *engine.Manifest, sec engine.Secrets, r io.Reader, record func(ImportRecord) error, p *engine.Progress) ([]string, error) {
	return s.importFrom(ctx, m, sec, r, record, p, false)
}

func (s *Server) importFrom(ctx context.Context, m *engine.Manifest, sec engine.Secrets, r io.Reader, record func(ImportRecord) error, p *engine.Progress, mayspool bool) ([]string, error) {
	if m.Postgres == nil {
		return nil, engine.Permanentf("the manifest of %q has no PostgreSQL section", m.Database)
	}
	in := IncomingFromManifest(m, sec)
	d, err := s.CheckDestination(ctx, in)
	if err != nil {
		return nil, err
	}
	rec := ImportRecord{Database: m.Database, CreatedDatabase: d.Existing == nil, Existing: d.Existing, CreatedRoles: d.CreateRoles}
	if err := record(rec); err != nil {
		return nil, fmt.Errorf("record what the import creates: %w", err)
	}
	if err := s.createRoles(ctx, in, d, &rec, record); err != nil {
		return nil, err
	}
	if d.Existing == nil {
		if err := s.createDatabase(ctx, m.Database, ExistingDatabase{Owner: in.DB.Owner, Encoding: in.Encoding, Collate: in.Collate,
			Ctype: in.DB.Ctype, LocaleProvider: in.DB.LocaleProvider, ICULocale: in.DB.ICULocale}); err != nil {
			if sqlState(err) == "42P04" { // someone else created it meanwhile: not ours to drop
				rec.Database = ""
				return nil, errors.Join(engine.Permanentf("database %q appeared at %s during the import: it is not touched", m.Database, s), record(rec))
			}
			return nil, err
		}
	} else if _, err := s.pool.Exec(ctx, "ALTER DATABASE "+qi(m.Database)+" OWNER TO "+qi(in.DB.Owner)); err != nil {
		return nil, fmt.Errorf("give %q to %q: %w", m.Database, in.DB.Owner, err)
	}
	if err := s.restore(ctx, m, r, p.ByteCounter(), mayspool); err != nil {
		return nil, err
	}
	if err := s.applyDatabase(ctx, m.Database, in.DB); err != nil {
		return nil, err
	}
	if !s.opt.SkipAnalyze {
		// A kept session: the verification that follows uses it.
		if err := s.inDatabaseKept(ctx, m.Database, func(c *pgx.Conn) error {
			_, err := c.Exec(ctx, "ANALYZE")
			return err
		}); err != nil {
			return nil, fmt.Errorf("ANALYZE %q: %w", m.Database, err)
		}
	}
	return d.Notes, nil
}

// createRoles creates the roles the check found missing, with their
// verifiers and settings, then the memberships among the incoming roles.
func (s *Server) createRoles(ctx context.Context, in Incoming, d *Destination, rec *ImportRecord, record func(ImportRecord) error) error {
	for _, name := range d.CreateRoles {
		sec, ok := in.Secrets.Secret(name, "")
		if !ok {
			return engine.Permanentf("the dump's secrets have no statement for role %q", name)
		}
		if _, err := s.pool.Exec(ctx, sec.CreateUser); err != nil {
			if sqlState(err) == "42710" { // created by someone else meanwhile: not ours
				rec.CreatedRoles = slices.DeleteFunc(rec.CreatedRoles, func(r string) bool { return r == name })
				return errors.Join(fmt.Errorf("role %q appeared at %s during the import; the next attempt checks it again", name, s), record(*rec))
			}
			return fmt.Errorf("create role %q: %w", name, err)
		}
		i := slices.IndexFunc(in.DB.Roles, func(r engine.Role) bool { return r.Name == name })
		for _, set := range in.DB.Roles[i].Settings {
			st, err := alterSetting("ALTER ROLE "+qi(name), set)
			if err != nil {
				return err
			}
			if _, err := s.pool.Exec(ctx, st); err != nil {
				return fmt.Errorf("%s: %w", st, err)
			}
		}
	}
	for _, m := range in.DB.Memberships {
		if !slices.Contains(d.CreateRoles, m.Member) && !slices.Contains(d.ReuseRoles, m.Member) {
			continue
		}
		st := grantMembershipSQL(m)
		if _, err := s.pool.Exec(ctx, st); err != nil {
			return fmt.Errorf("%s: %w", st, err)
		}
	}
	return nil
}

// createDatabase creates an empty database from template0 with e's
// encoding, locale and owner.
func (s *Server) createDatabase(ctx context.Context, name string, e ExistingDatabase) error {
	st := "CREATE DATABASE " + qi(name) + " WITH TEMPLATE template0 ENCODING " + ql(e.Encoding) +
		" LC_COLLATE " + ql(e.Collate) + " LC_CTYPE " + ql(e.Ctype)
	switch {
	case e.LocaleProvider == "i" && s.num >= 150000:
		st += " LOCALE_PROVIDER icu ICU_LOCALE " + ql(e.ICULocale)
	case e.LocaleProvider == "i":
		return engine.Permanentf("database %q uses an ICU locale, which PostgreSQL %s at %s cannot create", name, s.version, s)
	case e.LocaleProvider != "" && e.LocaleProvider != "c":
		return engine.Permanentf("database %q uses locale provider %q, which this engine does not create", name, e.LocaleProvider)
	}
	st += " OWNER " + qi(e.Owner)
	if _, err := s.pool.Exec(ctx, st); err != nil {
		if c := sqlState(err); c == "22023" || c == "42809" || c == "42704" {
			return engine.Permanentf("create database %q at %s with encoding %s, collation %s, ctype %s: %v (the destination lacks that locale or refuses that encoding with it)",
				name, s, e.Encoding, e.Collate, e.Ctype, err)
		}
		return fmt.Errorf("create database %q at %s: %w", name, s, err)
	}
	return nil
}

// restore runs pg_restore into the database: streamed from r, or from a
// spooled copy with Jobs workers when the database is large.
func (s *Server) restore(ctx context.Context, m *engine.Manifest, r io.Reader, counter *atomic.Int64, mayspool bool) error {
	need := max(s.Major(), toolMajor(m.DumpTool))
	tool, _, err := s.tool(ctx, "pg_restore", need)
	if err != nil {
		return err
	}
	cr := engine.CountReader(r, counter)
	args := []string{"--exit-on-error", "--no-password", "--dbname=" + s.conninfo(m.Database)}
	if !mayspool || s.opt.ParallelAbove < 0 || m.SizeBytes <= s.opt.ParallelAbove || s.opt.Jobs < 2 {
		if err := s.run(ctx, tool, args, io.Discard, cr); err != nil {
			return fmt.Errorf("pg_restore into %q: %w", m.Database, err)
		}
		return nil
	}
	spool, err := os.CreateTemp(s.opt.TempDir, "fleetmigrate-restore-*.dump")
	if err != nil {
		return fmt.Errorf("spool the dump for a parallel restore: %w", err)
	}
	defer func() {
		_ = spool.Close()
		_ = os.Remove(spool.Name())
	}()
	if _, err := io.Copy(spool, cr); err != nil {
		return fmt.Errorf("spool the dump to %s for a parallel restore: %w", spool.Name(), err)
	}
	if err := spool.Close(); err != nil {
		return fmt.Errorf("spool the dump to %s: %w", spool.Name(), err)
	}
	args = append(args, fmt.Sprintf("--jobs=%d", s.opt.Jobs), spool.Name())
	if err := s.run(ctx, tool, args, io.Discard, nil); err != nil {
		return fmt.Errorf("pg_restore --jobs=%d into %q: %w", s.opt.Jobs, m.Database, err)
	}
	return nil
}

// applyDatabase gives the database its settings and privileges.
func (s *Server) applyDatabase(ctx context.Context, database string, db engine.PostgresDatabase) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for _, set := range db.Settings {
			target := "ALTER DATABASE " + qi(database)
			if set.Role != "" {
				target = "ALTER ROLE " + qi(set.Role) + " IN DATABASE " + qi(database)
			}
			st, err := alterSetting(target, set.Setting)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, st); err != nil {
				return fmt.Errorf("%s: %w", st, err)
			}
		}
		warnings, err := setACL(ctx, tx, database, db.Owner, db.ACL, db.DefaultACL)
		if err != nil {
			return fmt.Errorf("set the privileges on %q: %w", database, err)
		}
		if len(warnings) > 0 {
			return engine.Permanentf("set the privileges on %q: %s", database, strings.Join(warnings, "; "))
		}
		return nil
	})
}

// listSettings are the settings whose value is a list of quoted elements
// (GUC_LIST_QUOTE): each element is its own literal in SET.
var listSettings = map[string]bool{"search_path": true, "temp_tablespaces": true, "session_preload_libraries": true,
	"shared_preload_libraries": true, "local_preload_libraries": true}

// alterSetting is "<target> SET name TO value" for a stored "name=value".
func alterSetting(target, setting string) (string, error) {
	name, value, ok := strings.Cut(setting, "=")
	if !ok || name == "" {
		return "", engine.Permanentf("setting %q is not name=value", setting)
	}
	if !listSettings[strings.ToLower(name)] {
		return target + " SET " + qi(name) + " TO " + ql(value), nil
	}
	elems := splitList(value)
	lits := make([]string, len(elems))
	for i, e := range elems {
		lits[i] = ql(e)
	}
	if len(lits) == 0 {
		lits = []string{"''"}
	}
	return target + " SET " + qi(name) + " TO " + strings.Join(lits, ", "), nil
}

// splitList splits a stored list setting ("$user", public) into its
// elements, unquoting double-quoted ones.
func splitList(v string) []string {
	var out []string
	var cur strings.Builder
	inQuote, seen := false, false
	for i := 0; i < len(v); i++ {
		ch := v[i]
		switch {
		case inQuote && ch == '"' && i+1 < len(v) && v[i+1] == '"':
			cur.WriteByte('"')
			i++
		case ch == '"':
			inQuote, seen = !inQuote, true
		case !inQuote && ch == ',':
			out = append(out, strings.TrimSpace(cur.String()))
			cur.Reset()
			seen = false
		case !inQuote && (ch == ' ' || ch == '\t') && !seen && cur.Len() == 0:
		default:
			cur.WriteByte(ch)
			seen = true
		}
	}
	if cur.Len() > 0 || seen || len(out) > 0 {
		out = append(out, strings.TrimSpace(cur.String()))
	}
	return out
}

// Verify checks the imported database against its manifest: every object
// there, every table's row count and checksum, every sequence's value,
// every role. A difference is a permanent error naming what differs.
func (s *Server) Verify(ctx context.Context, m *engine.Manifest, progress func(done, total int)) error {
	return s.verify(ctx, m, nil, progress)
}

// VerifyObjects is the online cutover's check, before the block, of m's
// objects and roles here (made by the sync and unchanged since: logical
// replication carries no DDL and the cutover refuses a changed schema);
// VerifyCutover checks the rest under the block.
func (s *Server) VerifyObjects(ctx context.Context, m *engine.Manifest) error {
	if m.Postgres == nil {
		return engine.Permanentf("the manifest of %q has no PostgreSQL section", m.Database)
	}
	var problems []string
	err := s.inDatabaseKept(ctx, m.Database, func(c *pgx.Conn) error {
		objs, err := listObjects(ctx, c)
		if err != nil {
			return err
		}
		problems = missingObjects(m.Objects, objs)
		return nil
	})
	if err != nil {
		return fmt.Errorf("verify the objects of %q at %s: %w", m.Database, s, err)
	}
	more, err := s.missingRoles(ctx, m)
	if err != nil {
		return fmt.Errorf("verify the roles of %q at %s: %w", m.Database, s, err)
	}
	if problems = append(problems, more...); len(problems) > 0 {
		return engine.Permanentf("verification of %q at %s failed: %s", m.Database, s, strings.Join(problems, "; "))
	}
	return nil
}

// VerifyCutover is the online cutover's check under the block: m's tables,
// whose checksums here are sums (computed at both servers at once), and
// its sequences (set by the cutover).
func (s *Server) VerifyCutover(ctx context.Context, m *engine.Manifest, sums []engine.TableSum) error {
	var problems []string
	err := s.inDatabaseKept(ctx, m.Database, func(c *pgx.Conn) error {
		seqs, err := readSequences(ctx, c)
		if err != nil {
			return err
		}
		problems = diffSequences(m.Sequences, seqs)
		return nil
	})
	if err != nil {
		return fmt.Errorf("verify the sequences of %q at %s: %w", m.Database, s, err)
	}
	if problems = append(problems, engine.Diff(m.Tables, sums)...); len(problems) > 0 {
		return engine.Permanentf("verification of %q at %s failed: %s", m.Database, s, strings.Join(problems, "; "))
	}
	return nil
}

// missingObjects lists the objects of want that have (sorted) lacks.
func missingObjects(want, have []string) []string {
	var missing []string
	for _, o := range want {
		if _, found := slices.BinarySearch(have, o); !found {
			missing = append(missing, o)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return []string{"missing: " + shorten(strings.Join(missing, ", "), 500)}
}

// missingRoles lists m's roles that do not exist at this server.
func (s *Server) missingRoles(ctx context.Context, m *engine.Manifest) ([]string, error) {
	var missing []string
	if err := s.pool.QueryRow(ctx, "SELECT coalesce(array_agg(r), '{}') FROM unnest($1::text[]) r WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r)",
		roleNames(m.Postgres.Roles)).Scan(&missing); err != nil {
		return nil, err
	}
	out := make([]string, 0, len(missing))
	for _, r := range missing {
		out = append(out, fmt.Sprintf("role %q: missing", r))
	}
	return out, nil
}

// verify compares the database with m; only, when not nil, are the only
// tables (of m's) whose checksums are computed and compared.
func (s *Server) verify(ctx context.Context, m *engine.Manifest, only []string, progress func(done, total int)) error {
	if m.Postgres == nil {
		return engine.Permanentf("the manifest of %q has no PostgreSQL section", m.Database)
	}
	var problems []string
	var objs []string
	err := s.inDatabaseKept(ctx, m.Database, func(c *pgx.Conn) error {
		var err error
		if objs, err = listObjects(ctx, c); err != nil {
			return err
		}
		problems = append(problems, missingObjects(m.Objects, objs)...)
		seqs, err := readSequences(ctx, c)
		if err != nil {
			return err
		}
		problems = append(problems, diffSequences(m.Sequences, seqs)...)
		return nil
	})
	if err != nil {
		return fmt.Errorf("verify %q at %s: %w", m.Database, s, err)
	}
	// Only tables that exist are summed (a missing one would fail the
	// whole transaction); Diff reports the others missing.
	var tables []string
	withLOs := false
	want := engine.Only(m.Tables, only)
	for _, t := range want {
		if t.Name == largeObjects {
			withLOs = true
		} else if _, found := slices.BinarySearch(objs, "table "+t.Name); found {
			tables = append(tables, t.Name)
		}
	}
	algo, err := s.checksumAlgorithm(ctx, m.ChecksumAlgorithm)
	if err != nil {
		return fmt.Errorf("verify %q at %s: %w", m.Database, s, err)
	}
	sums, err := s.checksums(ctx, m.Database, "", tables, withLOs, m.SizeBytes, algo, progress)
	if err != nil {
		return fmt.Errorf("verify %q at %s: %w", m.Database, s, err)
	}
	problems = append(problems, engine.Diff(want, sums)...)
	missingRoles, err := s.missingRoles(ctx, m)
	if err != nil {
		return fmt.Errorf("verify %q at %s: %w", m.Database, s, err)
	}
	problems = append(problems, missingRoles...)
	if len(problems) > 0 {
		return engine.Permanentf("verification of %q at %s failed: %s", m.Database, s, strings.Join(problems, "; "))
	}
	return nil
}

// diffSequences compares the sequences' values with the manifest's.
func diffSequences(want, got []engine.Sequence) []string {
	now := map[string]string{}
	for _, q := range got {
		now[q.Name] = q.LastValue
	}
	var out []string
	for _, q := range want {
		if v, ok := now[q.Name]; !ok {
			out = append(out, fmt.Sprintf("sequence %s: missing", q.Name))
		} else if v != q.LastValue {
			out = append(out, fmt.Sprintf("sequence %s: last value %s, %s expected", q.Name, orNone(v), orNone(q.LastValue)))
		}
	}
	return out
}

func orNone(v string) string {
	if v == "" {
		return "none (never used)"
	}
	return v
}

// DropImport drops what rec says an import created: the database (or,
// when it filled an empty one that was there, drops and recreates that
// empty) and the roles it created that nothing else at the destination
// depends on (those are kept, and a note says so).
func (s *Server) DropImport(ctx context.Context, rec ImportRecord) ([]string, error) {
	var notes []string
	if rec.Database != "" {
		s.forgetDatabase(rec.Database)
		if _, err := s.pool.Exec(ctx, "DROP DATABASE IF EXISTS "+qi(rec.Database)+" WITH (FORCE)"); err != nil {
			return nil, fmt.Errorf("drop the imported database %q at %s: %w", rec.Database, s, err)
		}
		if !rec.CreatedDatabase && rec.Existing != nil {
			if err := s.createDatabase(ctx, rec.Database, *rec.Existing); err != nil {
				return nil, fmt.Errorf("recreate the empty database %q that was there before: %w", rec.Database, err)
			}
		}
	}
	for _, r := range rec.CreatedRoles {
		if _, err := s.pool.Exec(ctx, "DROP ROLE IF EXISTS "+qi(r)); err != nil {
			if sqlState(err) == "2BP01" {
				notes = append(notes, fmt.Sprintf("role %q kept: objects elsewhere at the destination depend on it", r))
				continue
			}
			return notes, fmt.Errorf("drop role %q at %s: %w", r, s, err)
		}
	}
	return notes, nil
}

func roleNames(roles []engine.Role) []string {
	out := make([]string, len(roles))
	for i, r := range roles {
		out[i] = r.Name
	}
	return out
}
