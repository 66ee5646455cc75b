package postgres

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/fleetmigrate/fleetmigrate/engine"
)

// Driver is PostgreSQL as the engine contract (engine.Driver) names it:
// the steps reach every cluster through it.
type Driver struct {
	// Options configure every connection it opens (Log is set per Open;
	// Pools, shared by every connection, is made by the caller).
	Options Options
}

var _ engine.Driver = Driver{}

// Name is "postgres".
func (Driver) Name() string { return "postgres" }

// Words name the engine's things in notes.
func (Driver) Words() engine.Words {
	return engine.Words{Dump: "pg_dump archive", DumpExt: "pgdump", Accounts: "roles", Sequences: true}
}

// Open connects to srv (Open).
func (d Driver) Open(ctx context.Context, srv engine.Server, log *slog.Logger) (engine.Conn, error) {
	opt := d.Options
	if log != nil {
		opt.Log = log
	}
	s, err := Open(ctx, srv, opt)
	if err != nil {
		return nil, err
	}
	return Conn{s}, nil
}

// Probe checks that srv answers (Probe).
func (d Driver) Probe(ctx context.Context, srv engine.Server) error {
	return Probe(ctx, srv, d.Options)
}

// DecodeBlock reads a block or close record (an Access).
func (Driver) DecodeBlock(body []byte) (engine.Block, error) {
	a, err := engine.DecodeRecord[Access](body)
	if a == nil {
		return nil, err
	}
	return a, nil
}

// DecodeImport reads an import record.
func (Driver) DecodeImport(body []byte) (engine.ImportRecord, error) {
	r, err := engine.DecodeRecord[ImportRecord](body)
	if r == nil {
		return nil, err
	}
	return *r, nil
}

// Conn is a Server as an engine.Conn.
type Conn struct{ S *Server }

var _ engine.Conn = Conn{}

// ServerOf is the Server behind a Conn this driver opened.
func ServerOf(c engine.Conn) *Server { return c.(Conn).S }

// Close gives the server's sessions back.
func (c Conn) Close() error { return c.S.Close() }

// Version is "PostgreSQL" and the server's version.
func (c Conn) Version() string { return "PostgreSQL " + c.S.Version() }

// Inspect describes database (Server.Inspect).
func (c Conn) Inspect(ctx context.Context, database string) (engine.Source, error) {
	s, err := c.S.Inspect(ctx, database)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// CheckDestination checks this destination for s, and chooses the
// checksum both servers compute (the source's ChooseChecksum).
func (c Conn) CheckDestination(ctx context.Context, from engine.Conn, s engine.Source) ([]string, error) {
	src, in := ServerOf(from), s.(*Source)
	d, err := c.S.CheckDestination(ctx, IncomingFromSource(in, src.Major()))
	if err != nil {
		return nil, err
	}
	if _, err := src.ChooseChecksum(ctx, in, c.S); err != nil {
		return nil, err
	}
	return d.Notes, nil
}

// PlanBlock plans the block (Server.PlanBlock).
func (c Conn) PlanBlock(ctx context.Context, s engine.Source) (engine.Block, error) {
	a, err := c.S.PlanBlock(ctx, s.(*Source))
	if err != nil {
		return nil, err
	}
	return a, nil
}

// Block applies a block.
func (c Conn) Block(ctx context.Context, b engine.Block) (int, error) {
	return c.S.Block(ctx, b.(*Access))
}

// Unblock undoes a block.
func (c Conn) Unblock(ctx context.Context, b engine.Block) ([]string, error) {
	return c.S.Unblock(ctx, b.(*Access))
}

// point is an exported snapshot, held open until Close.
type point struct{ snap *Snapshot }

func (p point) At() time.Time             { return p.snap.At }
func (p point) Describe() string          { return "at LSN " + p.snap.LSN }
func (p point) Close(ctx context.Context) { p.snap.Close(ctx) }

// ConsistencyPoint exports a snapshot of s's database.
func (c Conn) ConsistencyPoint(ctx context.Context, s engine.Source) (engine.Point, error) {
	snap, err := c.S.Snapshot(ctx, s.Info().Database)
	if err != nil {
		return nil, err
	}
	return point{snap}, nil
}

// Dump dumps s as of p (Server.Dump).
func (c Conn) Dump(ctx context.Context, s engine.Source, p engine.Point, source string, w io.Writer, prog *engine.Progress) (*engine.Manifest, engine.Secrets, error) {
	man, sec, _, err := c.S.Dump(ctx, s.(*Source), p.(point).snap, source, w, prog)
	return man, sec, err
}

// ImportBeside reads the dump's manifest from the source's snapshot, then
// restores the archive as it comes (Server.ImportBeside).
func (c Conn) ImportBeside(ctx context.Context, from engine.Conn, s engine.Source, p engine.Point, source string, record func(engine.ImportRecord) error, prog *engine.Progress) (engine.ImportWriter, []string, error) {
	in := s.(*Source)
	pre, err := ServerOf(from).PullManifest(ctx, in, p.(point).snap, source)
	if err != nil {
		return nil, nil, err
	}
	var notes []string
	w := engine.PipeImport(func(r io.Reader) error {
		var err error
		notes, err = c.S.ImportBeside(ctx, pre, in.Secrets, r, func(r ImportRecord) error { return record(r) }, prog)
		return err
	})
	return &notedImport{ImportWriter: w, notes: &notes}, nil, nil
}

// notedImport returns the import's notes with its end: they are known
// only once it has read the whole archive.
type notedImport struct {
	engine.ImportWriter
	notes *[]string
}

// Notes are the import's notes, once Finish returned.
func (n *notedImport) Notes() []string { return *n.notes }

// Import restores a stored dump (Server.Import).
func (c Conn) Import(ctx context.Context, man *engine.Manifest, sec engine.Secrets, r io.Reader, record func(engine.ImportRecord) error, prog *engine.Progress) ([]string, error) {
	return c.S.Import(ctx, man, sec, r, func(r ImportRecord) error { return record(r) }, prog)
}

// Verify verifies against man (Server.Verify).
func (c Conn) Verify(ctx context.Context, man *engine.Manifest, progress func(done, total int)) error {
	return c.S.Verify(ctx, man, progress)
}

// VerifySince re-checks a source (Server.VerifySince).
func (c Conn) VerifySince(ctx context.Context, man *engine.Manifest, progress func(done, total int)) (int, string, error) {
	return c.S.VerifySince(ctx, man, progress)
}

// DropImport drops what rec created (Server.DropImport).
func (c Conn) DropImport(ctx context.Context, rec engine.ImportRecord) ([]string, error) {
	return c.S.DropImport(ctx, rec.(ImportRecord))
}

// InspectBlocked describes database as it was before the block b: its
// owner and privileges are the customer's again (blocked, the database is
// the administrator's).
func (c Conn) InspectBlocked(ctx context.Context, database string, b engine.Block) (engine.Source, error) {
	s, err := c.S.Inspect(ctx, database)
	if err != nil {
		return nil, err
	}
	a := b.(*Access)
	s.DB.Owner, s.DB.ACL, s.DB.DefaultACL = a.Owner, a.ACL, a.DefaultACL
	return s, nil
}

// PlanClose plans the close from the dump's manifest (Server.PlanClose).
func (c Conn) PlanClose(ctx context.Context, _ string, man *engine.Manifest) (engine.Block, error) {
	a, err := c.S.PlanClose(ctx, man)
	if err != nil {
		return nil, err
	}
	return a, nil
}

// CloseAccess applies a close (Server.CloseAccess).
func (c Conn) CloseAccess(ctx context.Context, b engine.Block) (int, error) {
	return c.S.CloseAccess(ctx, b.(*Access))
}

// Info is what the steps read of a Source.
func (src *Source) Info() engine.SourceInfo {
	return engine.SourceInfo{Database: src.Database, Tables: len(src.Tables), SizeBytes: src.SizeBytes}
}

// Describe says what the block does.
func (a *Access) Describe() string {
	return fmt.Sprintf("%s lose CONNECT, owner %q replaced by %q%s", describeRevoked(a.Revoked()), a.Owner, a.Admin, warningsSuffix(a.Warnings))
}

// DescribeClose says what the close did.
func (a *Access) DescribeClose(database string) string {
	return fmt.Sprintf("%s have no access to %q, owned by %q now (it was %q's)", describeRevoked(a.Revoked()), database, a.Admin, a.Owner)
}

// describeRevoked names who loses access: "PUBLIC and 2 roles".
func describeRevoked(grantees []string) string {
	n, public := 0, false
	for _, g := range grantees {
		if g == "" {
			public = true
		} else {
			n++
		}
	}
	switch {
	case public && n > 0:
		return fmt.Sprintf("PUBLIC and %d roles", n)
	case public:
		return "PUBLIC"
	}
	return fmt.Sprintf("%d roles", n)
}

func warningsSuffix(w []string) string {
	if len(w) == 0 {
		return ""
	}
	return "; warning: " + strings.Join(w, "; warning: ")
}

// Describe says what dropping the import removes.
func (r ImportRecord) Describe() string {
	var parts []string
	switch {
	case r.Database != "" && r.CreatedDatabase:
		parts = append(parts, fmt.Sprintf("database %q dropped", r.Database))
	case r.Database != "":
		parts = append(parts, fmt.Sprintf("database %q made empty again (it existed before)", r.Database))
	}
	if len(r.CreatedRoles) > 0 {
		parts = append(parts, fmt.Sprintf("%d roles it created removed", len(r.CreatedRoles)))
	}
	return strings.Join(parts, ", ")
}
