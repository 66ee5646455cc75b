// Package engine holds what every database engine's migration code shares:
// the contract the steps use (driver.go: Driver, Conn and the values they
// carry), how to reach a server as its administrator (Server: an address
// and a login, not a connection; Conn is one), the manifest that describes
// a dump, and the error classes the steps act on. The engines themselves
// live in engine/mysql and engine/postgres, each an adapter to the
// contract that passes engine/enginetest; agent/steps runs them for the
// agent, with the object store (docs/architecture.md).
package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// ErrPermanent marks failures that retrying cannot fix (a missing database,
// a conflicting destination, a corrupt dump, a verification mismatch): the
// row goes to its failed status at once. Everything else is transient.
var ErrPermanent = errors.New("permanent")

// Permanentf formats a permanent error.
func Permanentf(format string, args ...any) error {
	return &permanent{fmt.Errorf(format, args...)}
}

type permanent struct{ err error }

func (p *permanent) Error() string { return p.err.Error() }
func (p *permanent) Unwrap() []error {
	return []error{p.err, ErrPermanent}
}

// Server is where one database server is and how to log in to it as its
// administrator (Driver.Open makes a connection of it).
type Server struct {
	// Host is the server's host ID, for messages.
	Host string
	// Address is host:port, or the path of a Unix socket.
	Address  string
	User     string
	Password string
	// ReadOnly: the account only reads (a peer's, docs/security.md): the
	// engine asks nothing of it an administrator would need to have.
	ReadOnly bool
}

// String names the server for messages (never the password).
func (s Server) String() string { return fmt.Sprintf("%s (%s)", s.Host, s.Address) }

// ManifestVersion is the format of manifests this code writes.
const ManifestVersion = 1

// Manifest describes a dump: where it came from, what it holds, and how to
// check an import of it. It holds no secrets (see Secrets).
type Manifest struct {
	FormatVersion int    `json:"format_version"`
	Engine        string `json:"engine"`
	ServerVersion string `json:"server_version"`
	ServerFamily  string `json:"server_family"`
	Database      string `json:"database"`
	Charset       string `json:"charset"`
	Collation     string `json:"collation"`
	Source        string `json:"source"`
	// SizeBytes is the database's size at the source, as the server
	// estimates it.
	SizeBytes int64 `json:"size_bytes"`
	// ConsistencyPoint is when the dump's snapshot was taken (source
	// server clock, UTC), writes being blocked.
	ConsistencyPoint time.Time `json:"consistency_point"`
	// BinlogFile/BinlogPosition/GTID locate the snapshot in the source's
	// binary log, where the server has one.
	BinlogFile     string `json:"binlog_file,omitempty"`
	BinlogPosition int64  `json:"binlog_position,omitempty"`
	GTID           string `json:"gtid,omitempty"`
	// DumpFormat is the dump's format ("sql").
	DumpFormat string `json:"dump_format"`
	// DumpSHA256 and DumpBytes describe the stored (compressed) dump.
	DumpSHA256 string `json:"dump_sha256,omitempty"`
	DumpBytes  int64  `json:"dump_bytes,omitempty"`
	DumpTool   string `json:"dump_tool"`
	// DumpParts, when set, are the sections the dump is made of, one after
	// another (sizes uncompressed). Run in order they are one script, so a
	// reader that ignores them loads the dump as a whole; a reader that
	// knows them may load a "data" part over several sessions.
	DumpParts []DumpPart `json:"dump_parts,omitempty"`
	Tables    []TableSum `json:"tables"`
	// ChecksumAlgorithm names how Tables' checksums were computed.
	ChecksumAlgorithm string `json:"checksum_algorithm"`
	// Objects are the schema objects besides tables ("view v",
	// "procedure p"...), sorted: the import must have them all.
	Objects []string `json:"objects,omitempty"`
	Users   []User   `json:"users"`
	// Definers are the accounts the database's objects run as, with those
	// objects; MissingDefiners did not exist at the source either.
	Definers        map[string][]string `json:"definers,omitempty"`
	MissingDefiners []string            `json:"missing_definers,omitempty"`
	// Events are the database's events that were enabled before blocking
	// (they are dumped disabled and enabled again at the destination).
	Events []Event `json:"events,omitempty"`
	// LSN is the source's WAL position of the dump's snapshot
	// (PostgreSQL).
	LSN string `json:"lsn,omitempty"`
	// Sequences are the sequences' values in the dump (PostgreSQL): the
	// import must continue from the same ones.
	Sequences []Sequence `json:"sequences,omitempty"`
	// Postgres is what a PostgreSQL database brings beyond its dump.
	Postgres *PostgresDatabase `json:"postgres,omitempty"`
	Warnings []string          `json:"warnings,omitempty"`
	// Marks are the source's change marks taken under the dump's block:
	// the close step compares them with the marks then and reads again
	// only the tables they say were written (all of them when there are
	// none, as in manifests of earlier versions).
	Marks *Marks `json:"marks,omitempty"`
}

// Marks tell, without reading a table's rows, whether anything wrote to
// it since they were taken: the server's own per-table bookkeeping
// (PostgreSQL: rows inserted, updated and deleted, and the table's file;
// MariaDB: when the table was created and last written), under an epoch
// that changes whenever that bookkeeping starts again (a restart, a reset,
// counting switched off). Marks of different epochs compare as "every
// table may have changed". Engines decide when a mark cannot be trusted
// and write Unknown, which never compares equal.
type Marks struct {
	Epoch string `json:"epoch"`
	// Schema is a hash of the database's schema: a changed schema (a
	// column added without rewriting the table) means every table is read
	// again.
	Schema string `json:"schema"`
	// Tables maps the manifest's table names to their marks.
	Tables map[string]string `json:"tables"`
}

// Unknown is a mark that says nothing: its table is always read again.
const Unknown = "unknown"

// Changed compares marks taken now with m: all says why every table must
// be read again ("" if the marks compare); otherwise tables are those
// whose marks differ, are unknown, or appear in only one of them, sorted.
func (m *Marks) Changed(now *Marks) (tables []string, all string) {
	switch {
	case m == nil:
		return nil, "no change marks were taken at the dump"
	case now == nil:
		return nil, "no change marks now"
	case m.Epoch != now.Epoch:
		return nil, fmt.Sprintf("the server's change counters started again since the dump (%s, now %s)", m.Epoch, now.Epoch)
	case m.Schema != now.Schema:
		return nil, "the schema changed since the dump"
	}
	for name, mark := range m.Tables {
		if got, ok := now.Tables[name]; !ok || got != mark || mark == Unknown {
			tables = append(tables, name)
		}
	}
	for name := range now.Tables {
		if _, ok := m.Tables[name]; !ok {
			tables = append(tables, name)
		}
	}
	slices.Sort(tables)
	return tables, ""
}

// DumpPart is one section of a dump: its name ("schema", "data", "post")
// and its size in bytes, uncompressed.
type DumpPart struct {
	Name  string `json:"name"`
	Bytes int64  `json:"bytes"`
}

// Sequence is a sequence's last value ("" when it was never used).
type Sequence struct {
	Name      string `json:"name"`
	LastValue string `json:"last_value"`
}

// PostgresDatabase is what pg_dump leaves out of a database and the import
// recreates: its locale, owner, privileges, settings, extensions and roles
// (their password verifiers are in Secrets).
type PostgresDatabase struct {
	Owner          string `json:"owner"`
	Ctype          string `json:"ctype"`
	LocaleProvider string `json:"locale_provider,omitempty"`
	ICULocale      string `json:"icu_locale,omitempty"`
	// ACL is the database's privileges (its default ones spelt out);
	// DefaultACL says they were the defaults, never granted or revoked.
	ACL        []ACLItem `json:"acl"`
	DefaultACL bool      `json:"default_acl,omitempty"`
	// Settings are ALTER DATABASE ... SET ("name=value"), and ALTER ROLE
	// ... IN DATABASE ... SET for Role.
	Settings    []Setting    `json:"settings,omitempty"`
	Extensions  []Extension  `json:"extensions,omitempty"`
	Roles       []Role       `json:"roles"`
	Memberships []Membership `json:"memberships,omitempty"`
}

// ACLItem is one privilege on the database; an empty Grantee is PUBLIC.
type ACLItem struct {
	Grantee   string `json:"grantee"`
	Grantor   string `json:"grantor"`
	Privilege string `json:"privilege"`
	Grantable bool   `json:"grantable,omitempty"`
}

// Setting is a configuration setting of the database (Role empty) or of a
// role in the database.
type Setting struct {
	Role    string `json:"role,omitempty"`
	Setting string `json:"setting"`
}

// Extension is an extension installed in the database.
type Extension struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Schema  string `json:"schema"`
}

// Role is a PostgreSQL role that owns objects of the database or holds
// privileges on it (or is a member of one that does), with its
// attributes; its password verifier is in Secrets.
type Role struct {
	Name        string     `json:"name"`
	Superuser   bool       `json:"superuser,omitempty"`
	Login       bool       `json:"login"`
	Inherit     bool       `json:"inherit"`
	CreateRole  bool       `json:"create_role,omitempty"`
	CreateDB    bool       `json:"create_db,omitempty"`
	Replication bool       `json:"replication,omitempty"`
	BypassRLS   bool       `json:"bypass_rls,omitempty"`
	ConnLimit   int        `json:"connection_limit"`
	ValidUntil  *time.Time `json:"valid_until,omitempty"`
	// Password is the verifier's kind: "SCRAM-SHA-256", "md5" or "".
	Password string `json:"password,omitempty"`
	// Settings are ALTER ROLE ... SET ("name=value") for every database.
	Settings []string `json:"settings,omitempty"`
}

// Membership is GRANT Role TO Member.
type Membership struct {
	Role   string `json:"role"`
	Member string `json:"member"`
	Admin  bool   `json:"admin,omitempty"`
}

// Event is a scheduled event and the account it runs as.
type Event struct {
	Name    string `json:"name"`
	Definer string `json:"definer"`
}

// TableSum is a table's row count and checksum.
type TableSum struct {
	Name     string `json:"name"`
	Rows     int64  `json:"rows"`
	Checksum string `json:"checksum"`
}

// User is an account with privileges on the database, and those
// privileges: the statements that grant them (on this database only).
type User struct {
	Name string `json:"name"`
	Host string `json:"host"`
	// Plugins are the authentication plugins (or methods) it logs in with:
	// the destination must have them.
	Plugins []string `json:"plugins,omitempty"`
	// Grants are the statements that give it its privileges on this
	// database at the destination.
	Grants []string `json:"grants"`
	// DefinerOnly: it has no privileges on the database but defines some
	// of its objects.
	DefinerOnly bool `json:"definer_only,omitempty"`
}

// Account is "'name'@'host'" for messages.
func (u User) Account() string { return fmt.Sprintf("'%s'@'%s'", u.Name, u.Host) }

// Secrets are what recreates the users with their password hashes: kept
// apart from the manifest and stored private (docs/security.md).
type Secrets struct {
	Users []UserSecret `json:"users"`
}

// UserSecret is the statement that creates one account with its
// authentication string (SHOW CREATE USER).
type UserSecret struct {
	Name       string `json:"name"`
	Host       string `json:"host"`
	CreateUser string `json:"create_user"`
	// Verifier is a PostgreSQL role's password verifier (pg_authid).
	Verifier string `json:"verifier,omitempty"`
}

// Secret returns the secret of an account, if any.
func (s Secrets) Secret(name, host string) (UserSecret, bool) {
	for _, u := range s.Users {
		if u.Name == name && u.Host == host {
			return u, true
		}
	}
	return UserSecret{}, false
}

// Only is want's entries named in only, in want's order; all of want when
// only is nil.
func Only(want []TableSum, only []string) []TableSum {
	if only == nil {
		return want
	}
	var out []TableSum
	for _, t := range want {
		if slices.Contains(only, t.Name) {
			out = append(out, t)
		}
	}
	return out
}

// Diff compares checksums computed now against a manifest's; it returns
// the tables that differ, are missing or are extra, described.
func Diff(want, got []TableSum) []string {
	byName := map[string]TableSum{}
	for _, t := range got {
		byName[t.Name] = t
	}
	var out []string
	for _, w := range want {
		g, ok := byName[w.Name]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("%s: missing", w.Name))
		case g.Rows != w.Rows:
			out = append(out, fmt.Sprintf("%s: %d rows, %d expected", w.Name, g.Rows, w.Rows))
		case g.Checksum != w.Checksum:
			out = append(out, fmt.Sprintf("%s: same row count (%d), different contents", w.Name, g.Rows))
		}
		delete(byName, w.Name)
	}
	for name := range byName {
		out = append(out, fmt.Sprintf("%s: not in the dump", name))
	}
	return out
}

// Backoff paces a poll: its first wait is short and each next one twice
// as long, up to a cap. Polls made while a customer's writes are blocked
// (sessions to end, a subscription to stop) use it: a session usually
// goes within milliseconds, and a fixed 50 ms wait was the customer's.
type Backoff struct{ next, max time.Duration }

// NewBackoff returns a Backoff waiting first, then doubling up to max.
func NewBackoff(first, max time.Duration) *Backoff { return &Backoff{next: first, max: max} }

// Wait waits the next interval, or until ctx ends (its error).
func (b *Backoff) Wait(ctx context.Context) error {
	t := time.NewTimer(b.next)
	defer t.Stop()
	b.next = min(2*b.next, b.max)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
