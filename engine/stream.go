package engine

import (
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
)

// Online mode moves a database while its source keeps taking writes: a
// copy from a consistent point, then a stream of that database's changes
// (PostgreSQL logical replication; for MariaDB, a stream of our own that
// reads the source's binary log), everything it creates at a server named
// StreamName(row). The online steps drive it through each engine's stream
// adapter (agent/steps/online.go).

// StreamPrefix starts the name of everything an online stream creates at a
// server (publications, slots, subscriptions, MariaDB stream records);
// `migrate gc` removes only what is named so.
const StreamPrefix = "fleetmigrate_"

// StreamName is the name of what row (its id) moving database creates for
// its stream: fleetmigrate_<row>_<8 hex digits of the database name's
// CRC-32>. The digest keeps two fleets (state databases) that share a
// server apart, and lets gc check a name against its row.
func StreamName(row int64, database string) string {
	return fmt.Sprintf("%s%d_%08x", StreamPrefix, row, crc32.ChecksumIEEE([]byte(database)))
}

// StreamRow reads the row id back from a stream name (ok false: not a
// name StreamName makes).
func StreamRow(name string) (int64, bool) {
	rest, ok := strings.CutPrefix(name, StreamPrefix)
	if !ok {
		return 0, false
	}
	idPart, digest, ok := strings.Cut(rest, "_")
	if !ok || len(digest) != 8 || strings.Trim(digest, "0123456789abcdef") != "" {
		return 0, false
	}
	id, err := strconv.ParseInt(idPart, 10, 64)
	return id, err == nil && id > 0 && strconv.FormatInt(id, 10) == idPart
}

// Readiness says what a server lacks for online mode, before anything
// changes. Problems are things an operator must fix on the server (a row
// in mode auto dumps meanwhile); Notes are advice.
type Readiness struct {
	Problems []string
	Notes    []string
}

// Problem adds a problem.
func (r *Readiness) Problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// Note adds a note.
func (r *Readiness) Note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}
