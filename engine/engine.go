// Package engine holds what every database engine's migration code shares:
// how to reach a server as its administrator, the manifest that describes a
// dump, and the error classes the steps act on. The engines themselves live
// in engine/mysql and engine/postgres; the steps package runs them for the
// agent, with the object store.
package engine

import (
	"errors"
	"fmt"
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

// Server is one database server, reached as its administrator.
type Server struct {
	// Host is the server's host ID, for messages.
	Host string
	// Address is host:port, or the path of a Unix socket.
	Address  string
	User     string
	Password string
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
	DumpSHA256 string     `json:"dump_sha256,omitempty"`
	DumpBytes  int64      `json:"dump_bytes,omitempty"`
	DumpTool   string     `json:"dump_tool"`
	Tables     []TableSum `json:"tables"`
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
	Events   []Event  `json:"events,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
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
