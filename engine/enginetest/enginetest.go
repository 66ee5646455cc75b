// Package enginetest is the engine conformance suite: the cases every
// engine.Driver must pass against its real servers, as storetest is for
// the state store. An engine's own tests call Run with a Fleet of two of
// its servers (engine/mysql/driver_test.go, engine/postgres/driver_test.go);
// a new engine passes it before the steps may run it.
//
// The suite checks through the driver what the steps rely on, and checks
// the outcome as the customer sees it, through the engine's own SQL
// (Customer): a write refused while blocked, accepted after; a copy the
// customer can log in to with the same password; a tampered row found.
package enginetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/engine"
)

// Fleet is what the suite needs of an engine's test harness.
type Fleet struct {
	Driver engine.Driver
	// Source and Destination are two distinct servers of the engine,
	// reached as their administrator.
	Source, Destination engine.Server
	Customer            Customer
}

// Customer acts as a customer (and, for Tamper, as someone writing behind
// the engine's back) in the engine's own SQL, independently of the driver
// under test.
type Customer interface {
	// Create makes, at the source, a new database with a few tables with
	// rows and a login account that owns or may write to it, and returns
	// its name. It is removed from both servers when t ends.
	Create(t *testing.T) string
	// Write adds a row to database at srv as the customer's account, with
	// its password: an error when the server refuses it.
	Write(ctx context.Context, srv engine.Server, database string) error
	// Tamper changes one row's contents of database at srv, keeping the
	// row count, as the administrator.
	Tamper(t *testing.T, srv engine.Server, database string)
	// Exists reports whether database exists at srv.
	Exists(t *testing.T, srv engine.Server, database string) bool
	// Occupy creates database at the destination with a table of its own
	// (someone else's database of the same name).
	Occupy(t *testing.T, database string)
}

// Run runs every case.
func Run(t *testing.T, f Fleet) {
	t.Run("MissingDatabase", func(t *testing.T) { testMissing(t, f) })
	t.Run("BlockAndRestore", func(t *testing.T) { testBlock(t, f) })
	t.Run("DumpImportVerifyDrop", func(t *testing.T) { testRoundTrip(t, f) })
	t.Run("ImportBeside", func(t *testing.T) { testBeside(t, f) })
	t.Run("AbandonedBeside", func(t *testing.T) { testAbandonedBeside(t, f) })
	t.Run("CorruptionFound", func(t *testing.T) { testCorruption(t, f) })
	t.Run("ConflictingDestination", func(t *testing.T) { testConflict(t, f) })
	t.Run("Close", func(t *testing.T) { testClose(t, f) })
}

func ctxOf(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func open(t *testing.T, f Fleet, srv engine.Server) engine.Conn {
	t.Helper()
	c, err := f.Driver.Open(ctxOf(t), srv, nil)
	if err != nil {
		t.Fatalf("open %s: %v", srv, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// roundTrip stores a record as the steps do and reads it back with the
// driver, as an agent after a crash (or of the next version) would.
func blockRoundTrip(t *testing.T, f Fleet, b engine.Block) engine.Block {
	t.Helper()
	body, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.Driver.DecodeBlock(body)
	if err != nil || got == nil {
		t.Fatalf("DecodeBlock(%s) = %v, %v", body, got, err)
	}
	if got.Describe() != b.Describe() {
		t.Errorf("the block read back says %q, the one stored %q", got.Describe(), b.Describe())
	}
	if none, err := f.Driver.DecodeBlock([]byte("null")); none != nil || err != nil {
		t.Errorf("DecodeBlock(null) = %v, %v; want nil, nil", none, err)
	}
	return got
}

func importRoundTrip(t *testing.T, f Fleet, r engine.ImportRecord) engine.ImportRecord {
	t.Helper()
	body, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.Driver.DecodeImport(body)
	if err != nil || got == nil || got.Empty() || got.Describe() != r.Describe() {
		t.Fatalf("DecodeImport(%s) = %v, %v; want %q", body, got, err, r.Describe())
	}
	if empty, err := f.Driver.DecodeImport([]byte("{}")); err != nil || empty == nil || !empty.Empty() {
		t.Errorf("DecodeImport({}) = %v, %v; want an empty record", empty, err)
	}
	return got
}

func testMissing(t *testing.T, f Fleet) {
	src := open(t, f, f.Source)
	_, err := src.Inspect(ctxOf(t), "fleetmigrate_no_such_database")
	if !errors.Is(err, engine.ErrPermanent) {
		t.Fatalf("Inspect of a missing database: %v; want a permanent error", err)
	}
	if !strings.Contains(err.Error(), "fleetmigrate_no_such_database") {
		t.Errorf("the error does not name the database: %v", err)
	}
}

func testBlock(t *testing.T, f Fleet) {
	ctx, db := ctxOf(t), f.Customer.Create(t)
	src := open(t, f, f.Source)
	if err := f.Customer.Write(ctx, f.Source, db); err != nil {
		t.Fatalf("fixture: the customer cannot write before the block: %v", err)
	}
	s, err := src.Inspect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if info := s.Info(); info.Database != db || info.Tables == 0 {
		t.Errorf("Info = %+v; want database %q with tables", info, db)
	}
	plan, err := src.PlanBlock(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Customer.Write(ctx, f.Source, db); err != nil {
		t.Errorf("PlanBlock changed something: the customer cannot write: %v", err)
	}
	// Applied from the record, as a recovery does.
	b := blockRoundTrip(t, f, plan)
	if _, err := src.Block(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := f.Customer.Write(ctx, f.Source, db); err == nil {
		t.Error("the customer wrote while writes were blocked")
	}
	for i := range 2 { // idempotent
		if _, err := src.Unblock(ctx, b); err != nil {
			t.Fatalf("Unblock #%d: %v", i+1, err)
		}
		if err := f.Customer.Write(ctx, f.Source, db); err != nil {
			t.Errorf("after Unblock #%d the customer cannot write: %v", i+1, err)
		}
	}
}

// dumped is a database dumped at the source, writes restored after.
type dumped struct {
	db  string
	s   engine.Source
	man *engine.Manifest
	sec engine.Secrets
	buf bytes.Buffer
}

func dump(t *testing.T, f Fleet, src engine.Conn, db string) *dumped {
	t.Helper()
	ctx := ctxOf(t)
	d := &dumped{db: db}
	var err error
	if d.s, err = src.Inspect(ctx, db); err != nil {
		t.Fatal(err)
	}
	b, err := src.PlanBlock(ctx, d.s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Block(ctx, b); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if _, err := src.Unblock(ctx, b); err != nil {
			t.Errorf("Unblock: %v", err)
		}
	}()
	p, err := src.ConsistencyPoint(ctx, d.s)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	if p.At().IsZero() {
		t.Error("the consistency point has no time")
	}
	if d.man, d.sec, err = src.Dump(ctx, d.s, p, "source", &d.buf, &engine.Progress{}); err != nil {
		t.Fatal(err)
	}
	// Every table has its sum (an engine may add its own entries: the
	// large objects of PostgreSQL).
	if d.man.Database != db || len(d.man.Tables) < d.s.Info().Tables || d.buf.Len() == 0 {
		t.Fatalf("the manifest describes %q with %d tables (%d bytes dumped); want %q with %d", d.man.Database, len(d.man.Tables), d.buf.Len(), db, d.s.Info().Tables)
	}
	return d
}

// imported imports d at dst and returns what the import recorded last.
func imported(t *testing.T, f Fleet, src, dst engine.Conn, d *dumped) engine.ImportRecord {
	t.Helper()
	ctx := ctxOf(t)
	if _, err := dst.CheckDestination(ctx, src, d.s); err != nil {
		t.Fatalf("CheckDestination: %v", err)
	}
	var rec engine.ImportRecord
	if _, err := dst.Import(ctx, d.man, d.sec, bytes.NewReader(d.buf.Bytes()), func(r engine.ImportRecord) error { rec = r; return nil }, &engine.Progress{}); err != nil {
		t.Fatalf("Import: %v", err)
	}
	if rec == nil || rec.Empty() {
		t.Fatal("the import recorded nothing it created")
	}
	return rec
}

// dropped drops an import (twice: it is idempotent) and checks it is gone.
func dropped(t *testing.T, f Fleet, dst engine.Conn, rec engine.ImportRecord, db string) {
	t.Helper()
	rec = importRoundTrip(t, f, rec)
	for i := range 2 {
		if _, err := dst.DropImport(ctxOf(t), rec); err != nil {
			t.Fatalf("DropImport #%d: %v", i+1, err)
		}
	}
	if f.Customer.Exists(t, f.Destination, db) {
		t.Errorf("%q is still at the destination after DropImport", db)
	}
}

func testRoundTrip(t *testing.T, f Fleet) {
	ctx, db := ctxOf(t), f.Customer.Create(t)
	src, dst := open(t, f, f.Source), open(t, f, f.Destination)
	d := dump(t, f, src, db)
	rec := imported(t, f, src, dst, d)
	if err := dst.Verify(ctx, d.man, nil); err != nil {
		t.Fatalf("Verify of the import: %v", err)
	}
	// The customer logs in to the copy with the same account and password.
	if err := f.Customer.Write(ctx, f.Destination, db); err != nil {
		t.Errorf("the customer cannot write to the copy: %v", err)
	}
	// The source is as dumped (nothing written since): its re-check reads
	// nothing or finds it equal.
	if _, _, err := src.VerifySince(ctx, d.man, nil); err != nil {
		t.Errorf("VerifySince of the unchanged source: %v", err)
	}
	dropped(t, f, dst, rec, db)
	if !f.Customer.Exists(t, f.Source, db) {
		t.Error("the source database is gone")
	}
}

// partTee writes a dump to a buffer and to an import beside it, passing
// on where the dump's parts begin.
type partTee struct {
	buf  *bytes.Buffer
	side engine.ImportWriter
}

func (p *partTee) Write(b []byte) (int, error) {
	p.buf.Write(b)
	return p.side.Write(b)
}

func (p *partTee) StartPart(name string) error {
	if pw, ok := p.side.(engine.PartWriter); ok {
		return pw.StartPart(name)
	}
	return nil
}

func testBeside(t *testing.T, f Fleet) {
	ctx, db := ctxOf(t), f.Customer.Create(t)
	src, dst := open(t, f, f.Source), open(t, f, f.Destination)
	s, err := src.Inspect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dst.CheckDestination(ctx, src, s); err != nil {
		t.Fatal(err)
	}
	b, err := src.PlanBlock(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Block(ctx, b); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = src.Unblock(ctx, b) }()
	p, err := src.ConsistencyPoint(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	var rec engine.ImportRecord
	side, _, err := dst.ImportBeside(ctx, src, s, p, "source", func(r engine.ImportRecord) error { rec = r; return nil }, &engine.Progress{})
	if err != nil {
		t.Fatalf("ImportBeside: %v", err)
	}
	var buf bytes.Buffer
	man, _, err := src.Dump(ctx, s, p, "source", &partTee{buf: &buf, side: side}, &engine.Progress{})
	if err != nil {
		_ = side.Finish(nil, err)
		t.Fatalf("Dump: %v", err)
	}
	if err := side.Finish(man, nil); err != nil {
		t.Fatalf("the import beside the dump: %v", err)
	}
	if err := dst.Verify(ctx, man, nil); err != nil {
		t.Fatalf("Verify of the import beside the dump: %v", err)
	}
	dropped(t, f, dst, rec, db)
}

// A dump that fails abandons the import beside it: Finish returns the
// dump's failure, and what the import created is dropped by its record.
func testAbandonedBeside(t *testing.T, f Fleet) {
	ctx, db := ctxOf(t), f.Customer.Create(t)
	src, dst := open(t, f, f.Source), open(t, f, f.Destination)
	s, err := src.Inspect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	p, err := src.ConsistencyPoint(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	var whole bytes.Buffer
	if _, _, err := src.Dump(ctx, s, p, "source", &whole, &engine.Progress{}); err != nil {
		t.Fatal(err)
	}
	var rec engine.ImportRecord
	side, _, err := dst.ImportBeside(ctx, src, s, p, "source", func(r engine.ImportRecord) error { rec = r; return nil }, &engine.Progress{})
	if err != nil {
		t.Fatalf("ImportBeside: %v", err)
	}
	// Half of the dump arrives, then the dump tool dies.
	_, _ = side.Write(whole.Bytes()[:whole.Len()/2])
	cut := errors.New("the dump tool died")
	if err := side.Finish(nil, cut); !errors.Is(err, cut) {
		t.Errorf("Finish after the dump failed: %v; want the dump's failure", err)
	}
	if rec == nil || rec.Empty() {
		t.Fatal("the import recorded nothing it created")
	}
	dropped(t, f, dst, rec, db)
}

func testCorruption(t *testing.T, f Fleet) {
	ctx, db := ctxOf(t), f.Customer.Create(t)
	src, dst := open(t, f, f.Source), open(t, f, f.Destination)
	d := dump(t, f, src, db)
	rec := imported(t, f, src, dst, d)
	f.Customer.Tamper(t, f.Destination, db)
	err := dst.Verify(ctx, d.man, nil)
	if !errors.Is(err, engine.ErrPermanent) {
		t.Fatalf("Verify of a tampered copy: %v; want a permanent error", err)
	}
	t.Logf("found: %v", err)
	// The source's re-check finds a write made after the dump.
	f.Customer.Tamper(t, f.Source, db)
	if _, _, err := src.VerifySince(ctx, d.man, nil); !errors.Is(err, engine.ErrPermanent) {
		t.Errorf("VerifySince of a source written after its dump: %v; want a permanent error", err)
	}
	dropped(t, f, dst, rec, db)
}

func testConflict(t *testing.T, f Fleet) {
	ctx, db := ctxOf(t), f.Customer.Create(t)
	src, dst := open(t, f, f.Source), open(t, f, f.Destination)
	f.Customer.Occupy(t, db)
	s, err := src.Inspect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	_, err = dst.CheckDestination(ctx, src, s)
	if !errors.Is(err, engine.ErrPermanent) {
		t.Fatalf("CheckDestination with %q taken at the destination: %v; want a permanent error", db, err)
	}
	if !f.Customer.Exists(t, f.Destination, db) {
		t.Error("the destination's own database is gone")
	}
}

func testClose(t *testing.T, f Fleet) {
	ctx, db := ctxOf(t), f.Customer.Create(t)
	src := open(t, f, f.Source)
	d := dump(t, f, src, db)
	plan, err := src.PlanClose(ctx, db, d.man)
	if err != nil {
		t.Fatal(err)
	}
	body, err := json.Marshal(plan)
	if err != nil {
		t.Fatal(err)
	}
	b, err := f.Driver.DecodeBlock(body)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.CloseAccess(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := f.Customer.Write(ctx, f.Source, db); err == nil {
		t.Error("the customer wrote to a closed source")
	}
	if desc := b.DescribeClose(db); !strings.Contains(desc, db) {
		t.Errorf("DescribeClose = %q; want the database named", desc)
	}
	// What the close leaves is the dump's: the data stays.
	if !f.Customer.Exists(t, f.Source, db) {
		t.Error("the source database is gone after the close")
	}
	// InspectBlocked describes the database as it was before the block.
	if _, err := src.InspectBlocked(ctx, db, b); err != nil {
		t.Errorf("InspectBlocked: %v", err)
	}
}
