package mysql

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/fleetmigrate/fleetmigrate/engine"
)

// Driver is MySQL/MariaDB as the engine contract (engine.Driver) names
// it: the steps reach every server through it.
type Driver struct {
	// Options configure every connection it opens (Log is set per Open).
	Options Options
}

var _ engine.Driver = Driver{}

// Name is "mysql".
func (Driver) Name() string { return "mysql" }

// Words name the engine's things in notes.
func (Driver) Words() engine.Words {
	return engine.Words{Dump: "SQL", DumpExt: "sql", Accounts: "accounts"}
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

// Close closes the server's pool.
func (c Conn) Close() error { return c.S.Close() }

// Version is the server's version ("10.11.6-MariaDB").
func (c Conn) Version() string { return c.S.Version() }

// Inspect describes database (Server.Inspect).
func (c Conn) Inspect(ctx context.Context, database string) (engine.Source, error) {
	s, err := c.S.Inspect(ctx, database)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// CheckDestination checks this destination for s.
func (c Conn) CheckDestination(ctx context.Context, _ engine.Conn, s engine.Source) ([]string, error) {
	d, err := c.S.CheckDestination(ctx, IncomingFromSource(s.(*Source)))
	if err != nil {
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

// point is a dump's binary log position.
type point struct{ pos Position }

func (p point) At() time.Time { return p.pos.At }
func (p point) Describe() string {
	if p.pos.BinlogFile == "" {
		return ""
	}
	return fmt.Sprintf("at %s:%d", p.pos.BinlogFile, p.pos.BinlogPosition)
}
func (point) Close(context.Context) {}

// ConsistencyPoint reads the position writes are blocked at.
func (c Conn) ConsistencyPoint(ctx context.Context, _ engine.Source) (engine.Point, error) {
	pos, err := c.S.Position(ctx)
	if err != nil {
		return nil, err
	}
	return point{pos}, nil
}

// Dump dumps s (Server.Snapshot).
func (c Conn) Dump(ctx context.Context, s engine.Source, p engine.Point, source string, w io.Writer, prog *engine.Progress) (*engine.Manifest, engine.Secrets, error) {
	man, sec, _, err := c.S.Snapshot(ctx, s.(*Source), source, p.(point).pos, w, prog)
	return man, sec, err
}

// ImportBeside starts the import beside the dump (Server.StartImportBeside).
func (c Conn) ImportBeside(ctx context.Context, _ engine.Conn, s engine.Source, _ engine.Point, source string, record func(engine.ImportRecord) error, prog *engine.Progress) (engine.ImportWriter, []string, error) {
	si, notes, err := c.S.StartImportBeside(ctx, s.(*Source), source, func(r ImportRecord) error { return record(r) }, prog.ByteCounter())
	if err != nil {
		return nil, nil, err
	}
	return si, notes, nil
}

// Import loads a stored dump (Server.Import).
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
	return nil, c.S.DropImport(ctx, rec.(ImportRecord))
}

// InspectBlocked describes database as it was before the block b.
func (c Conn) InspectBlocked(ctx context.Context, database string, b engine.Block) (engine.Source, error) {
	s, err := c.S.Inspect(ctx, database)
	if err != nil {
		return nil, err
	}
	s.Blocked(b.(*Access))
	return s, nil
}

// PlanClose plans the close (Server.PlanClose).
func (c Conn) PlanClose(ctx context.Context, database string, _ *engine.Manifest) (engine.Block, error) {
	s, err := c.S.Inspect(ctx, database)
	if err != nil {
		return nil, err
	}
	a, err := c.S.PlanClose(ctx, s)
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
	var parts []string
	if a.Mode == ModeReadOnly {
		parts = append(parts, "READ ONLY")
	} else {
		parts = append(parts, fmt.Sprintf("%d accounts lose write privileges", len(a.Accounts)))
	}
	if len(a.Events) > 0 {
		parts = append(parts, fmt.Sprintf("%d events disabled", len(a.Events)))
	}
	for _, w := range a.Warnings {
		parts = append(parts, "warning: "+w)
	}
	return strings.Join(parts, ", ")
}

// DescribeClose says what the close did.
func (a *Access) DescribeClose(database string) string {
	return fmt.Sprintf("%d accounts lost access to %q", len(a.Accounts), database)
}

// Describe says what dropping the import removes.
func (r ImportRecord) Describe() string {
	var parts []string
	switch {
	case r.Database != "" && r.CreatedDatabase:
		parts = append(parts, fmt.Sprintf("database %q dropped", r.Database))
	case r.Database != "":
		parts = append(parts, fmt.Sprintf("database %q emptied (it existed before)", r.Database))
	}
	if len(r.CreatedUsers) > 0 {
		parts = append(parts, fmt.Sprintf("%d accounts it created removed", len(r.CreatedUsers)))
	}
	return strings.Join(parts, ", ")
}
