package engine

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"time"
)

// The engine contract: what the agent's steps (agent/steps) ask of a
// database engine to move one database in dump mode, and what each engine
// (engine/mysql, engine/postgres) promises in return. The steps are
// written once over it; an engine is an adapter (driver.go in its
// package) and passes the conformance suite (engine/enginetest) against
// its real server. docs/architecture.md says where what goes.
//
// Every method takes the step's context first and wraps its errors with
// what it was doing and on which server. Failures that retrying cannot fix
// wrap ErrPermanent (Permanentf); everything else is transient and the
// step is tried again.

// Driver is one database engine.
type Driver interface {
	// Name is the engine's name in the state table ("mysql", "postgres").
	Name() string
	// Words are how notes name the engine's things.
	Words() Words
	// Open connects to srv as its administrator; log receives the
	// engine's own log lines (nil: the driver's default). A server that
	// cannot be reached, or refuses the login, is an error naming it.
	Open(ctx context.Context, srv Server, log *slog.Logger) (Conn, error)
	// Probe checks that srv answers a trivial query (the steps' hang
	// watchdog). It never blocks longer than ctx allows.
	Probe(ctx context.Context, srv Server) error
	// DecodeBlock and DecodeImport read the records (Block, ImportRecord)
	// that this engine's steps stored as JSON, by this or an earlier
	// version: a record written before an upgrade is carried on by the new
	// agents. An empty body or JSON null decode to nil.
	DecodeBlock(body []byte) (Block, error)
	DecodeImport(body []byte) (ImportRecord, error)
}

// Words are how the steps' notes name an engine's things.
type Words struct {
	// Dump names the dump's format in notes ("SQL"); DumpExt is its file
	// extension in the store ("sql").
	Dump, DumpExt string
	// Accounts names the engine's logins ("accounts", "roles").
	Accounts string
	// Sequences: the engine's manifests carry sequences, named in notes.
	Sequences bool
}

// Conn is an open connection to one server as its administrator. The
// same Conn is a source (Inspect … Dump, PlanClose), a destination
// (CheckDestination … DropImport) or both. Close releases it.
type Conn interface {
	Close() error
	// Version is the server's product and version for notes
	// ("MariaDB 10.11.6", "PostgreSQL 15.8").
	Version() string

	// Inspect describes database at this (source) server. A database that
	// does not exist is a permanent error naming it.
	Inspect(ctx context.Context, database string) (Source, error)
	// CheckDestination checks that s, inspected at from, can be imported
	// here: nothing in the way (a database or account that would clash is
	// a permanent error that says what to do), the server able to take
	// it. It changes nothing; notes are what it could not check.
	CheckDestination(ctx context.Context, from Conn, s Source) (notes []string, err error)

	// PlanBlock plans how writes to s are blocked at this (source) server
	// without changing anything: the plan is the row's block record,
	// stored before Block applies it, so that Unblock can undo it after a
	// crash.
	PlanBlock(ctx context.Context, s Source) (Block, error)
	// Block applies b and ends the sessions that could still write; it
	// returns how many it ended. Once it returns, no write of the
	// customer's reaches the database (administrators excepted).
	Block(ctx context.Context, b Block) (ended int, err error)
	// Unblock undoes b: writes are possible again as before Block. It is
	// idempotent (a plan never applied, or undone already, is a no-op)
	// and returns warnings about what it could not put back.
	Unblock(ctx context.Context, b Block) (warnings []string, err error)

	// ConsistencyPoint marks, writes blocked, the point a dump of s is
	// taken from: every write before it is in the dump. Close the point
	// when the dump is done.
	ConsistencyPoint(ctx context.Context, s Source) (Point, error)
	// Dump writes s as of p to w in the engine's format, computing every
	// table's row count and checksum in the same snapshot, and returns
	// the dump's manifest and the accounts' secrets. source names the
	// source host in the manifest. A writer that fails stops it.
	Dump(ctx context.Context, s Source, p Point, source string, w io.Writer, prog *Progress) (*Manifest, Secrets, error)
	// ImportBeside starts, at this (destination) server, the import of the
	// dump that from is about to write of s at p: it checks and creates
	// what it needs (calling record with what it is about to create,
	// before it creates it) and returns the writer that takes the dump's
	// bytes as they come (Finish completes or abandons it).
	ImportBeside(ctx context.Context, from Conn, s Source, p Point, source string, record func(ImportRecord) error, prog *Progress) (ImportWriter, []string, error)
	// Import creates the database of man here with its accounts (secrets
	// from sec) and loads the dump read from r, calling record with what
	// it is about to create before it creates it (a record error stops
	// it). It does not verify; notes are what it could not check.
	Import(ctx context.Context, man *Manifest, sec Secrets, r io.Reader, record func(ImportRecord) error, prog *Progress) ([]string, error)
	// Verify checks the database here against man: every table's row
	// count and checksum, the objects and the accounts. A difference is a
	// permanent error that names the tables and what differs.
	Verify(ctx context.Context, man *Manifest, progress func(done, total int)) error
	// VerifySince is Verify for a source that was dumped to man: only the
	// tables its change marks say were written since are read (read is
	// how many; why, when not empty, says why every table was).
	VerifySince(ctx context.Context, man *Manifest, progress func(done, total int)) (read int, why string, err error)
	// DropImport drops exactly what rec says an import created here (the
	// database, or the contents of one that was there empty; the
	// accounts it created that nothing else uses), and nothing else. It
	// is idempotent; notes say what it kept and why.
	DropImport(ctx context.Context, rec ImportRecord) (notes []string, err error)

	// InspectBlocked is Inspect of a database whose writes are blocked by
	// b: it describes the database as it was before the block (its
	// accounts' privileges, its owner), as a dump of it must.
	InspectBlocked(ctx context.Context, database string, b Block) (Source, error)
	// PlanClose plans closing database at this (source) server for good
	// after the switch, dumped to man: its customers lose every access.
	PlanClose(ctx context.Context, database string, man *Manifest) (Block, error)
	// CloseAccess applies a close plan and ends the customers' sessions.
	CloseAccess(ctx context.Context, b Block) (ended int, err error)
}

// Source is a database inspected at its source server, as the engine
// needs it for the rest of the step.
type Source interface {
	Info() SourceInfo
}

// SourceInfo is what the steps read of a Source.
type SourceInfo struct {
	Database  string
	Tables    int
	SizeBytes int64
}

// Block is an engine's plan of a write block, or of a close: stored as
// JSON (the row's block and close records) before it is applied.
type Block interface {
	// Describe says what the block does, for the row's events ("3
	// accounts lose write privileges, 1 event disabled").
	Describe() string
	// DescribeClose says what applying it as a close did to database.
	DescribeClose(database string) string
}

// ImportRecord is an engine's record of what an import created at a
// destination (stored as JSON before it is created): DropImport undoes
// exactly it.
type ImportRecord interface {
	// Empty: nothing was created.
	Empty() bool
	// Describe says what dropping it removes, for the row's events.
	Describe() string
}

// Point is a consistency point of a dump (ConsistencyPoint).
type Point interface {
	// At is the source server's clock at the point (UTC).
	At() time.Time
	// Describe locates it for notes ("at LSN 0/1A2B3C"; "" when there is
	// nothing to say).
	Describe() string
	// Close releases what holds the point (a snapshot's session).
	Close(ctx context.Context)
}

// ImportWriter is an import that reads a dump while it is written
// (ImportBeside). It may implement PartWriter.
type ImportWriter interface {
	io.Writer
	// Finish ends the import. dumpErr is the dump's failure: the import is
	// abandoned. Otherwise the whole dump was written and man is its
	// manifest: the import completes, and its failure is returned.
	Finish(man *Manifest, dumpErr error) error
}

// DecodeRecord reads a record of an engine's type T that the steps stored
// as JSON (Driver.DecodeBlock, DecodeImport): nil for an empty body or
// JSON null.
func DecodeRecord[T any](body []byte) (*T, error) {
	var v *T
	if len(body) == 0 {
		return nil, nil
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, Permanentf("a stored %T record is not valid: %v", v, err)
	}
	return v, nil
}
