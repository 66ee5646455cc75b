package steps

// Flow tests of the steps over a fake engine (no server): what each step
// does at which server in what order, above all what it undoes after a
// failure. The engines' own behaviour is the conformance suite's
// (engine/enginetest) and the integration tests'.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/fleetmigrate/fleetmigrate/agent"
	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/storage/file"
)

// calls is the ordered log of what the fake engine was asked, as
// "server: Method".
type calls struct {
	mu  sync.Mutex
	log []string
}

func (c *calls) add(server, what string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.log = append(c.log, server+": "+what)
}

func (c *calls) list() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.log)
}

// index is where want is in the log (-1: not there).
func (c *calls) index(want string) int { return slices.Index(c.list(), want) }

// fakeDriver is an engine whose servers are the host names; fail makes
// the named method fail at the named server ("source: Dump").
type fakeDriver struct {
	calls *calls
	fail  map[string]error
}

func (d *fakeDriver) Name() string { return "mysql" }
func (d *fakeDriver) Words() engine.Words {
	return engine.Words{Dump: "SQL", DumpExt: "sql", Accounts: "accounts"}
}
func (d *fakeDriver) Open(_ context.Context, srv engine.Server, _ *slog.Logger) (engine.Conn, error) {
	return &fakeConn{d: d, host: srv.Host}, d.err(srv.Host, "Open")
}
func (d *fakeDriver) Probe(context.Context, engine.Server) error { return nil }
func (d *fakeDriver) DecodeBlock(body []byte) (engine.Block, error) {
	var b *fakeBlock
	if len(body) == 0 {
		return nil, nil
	}
	if err := json.Unmarshal(body, &b); err != nil || b == nil {
		return nil, err
	}
	return b, nil
}
func (d *fakeDriver) DecodeImport(body []byte) (engine.ImportRecord, error) {
	var r fakeImport
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, err
	}
	return r, nil
}

func (d *fakeDriver) err(host, method string) error {
	d.calls.add(host, method)
	return d.fail[host+": "+method]
}

type fakeBlock struct {
	Database string `json:"database"`
}

func (b *fakeBlock) Describe() string               { return "the fake block" }
func (b *fakeBlock) DescribeClose(db string) string { return "closed " + db }

type fakeImport struct {
	Database string `json:"database"`
}

func (r fakeImport) Empty() bool      { return r.Database == "" }
func (r fakeImport) Describe() string { return "database " + r.Database + " dropped" }

type fakeSource struct{ db string }

func (s fakeSource) Info() engine.SourceInfo {
	return engine.SourceInfo{Database: s.db, Tables: 1, SizeBytes: 1 << 10}
}

type fakePoint struct{}

func (fakePoint) At() time.Time         { return time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC) }
func (fakePoint) Describe() string      { return "" }
func (fakePoint) Close(context.Context) {}

type fakeConn struct {
	d    *fakeDriver
	host string
}

func (c *fakeConn) Close() error    { return nil }
func (c *fakeConn) Version() string { return "Fake 1.0" }
func (c *fakeConn) Inspect(_ context.Context, db string) (engine.Source, error) {
	return fakeSource{db}, c.d.err(c.host, "Inspect")
}
func (c *fakeConn) CheckDestination(context.Context, engine.Conn, engine.Source) ([]string, error) {
	return nil, c.d.err(c.host, "CheckDestination")
}
func (c *fakeConn) PlanBlock(_ context.Context, s engine.Source) (engine.Block, error) {
	return &fakeBlock{Database: s.Info().Database}, c.d.err(c.host, "PlanBlock")
}
func (c *fakeConn) Block(context.Context, engine.Block) (int, error) {
	return 1, c.d.err(c.host, "Block")
}
func (c *fakeConn) Unblock(context.Context, engine.Block) ([]string, error) {
	return nil, c.d.err(c.host, "Unblock")
}
func (c *fakeConn) ConsistencyPoint(context.Context, engine.Source) (engine.Point, error) {
	return fakePoint{}, c.d.err(c.host, "ConsistencyPoint")
}
func (c *fakeConn) Dump(_ context.Context, s engine.Source, _ engine.Point, source string, w io.Writer, _ *engine.Progress) (*engine.Manifest, engine.Secrets, error) {
	if _, err := w.Write([]byte("-- half of a dump\n")); err != nil {
		return nil, engine.Secrets{}, err
	}
	if err := c.d.err(c.host, "Dump"); err != nil {
		return nil, engine.Secrets{}, err
	}
	db := s.Info().Database
	return &engine.Manifest{FormatVersion: engine.ManifestVersion, Engine: "mysql", Database: db, Source: source, Tables: []engine.TableSum{{Name: "t", Rows: 1, Checksum: "1"}}}, engine.Secrets{}, nil
}
func (c *fakeConn) ImportBeside(ctx context.Context, _ engine.Conn, s engine.Source, _ engine.Point, _ string, record func(engine.ImportRecord) error, _ *engine.Progress) (engine.ImportWriter, []string, error) {
	if err := c.d.err(c.host, "ImportBeside"); err != nil {
		return nil, nil, err
	}
	if err := record(fakeImport{Database: s.Info().Database}); err != nil {
		return nil, nil, err
	}
	return engine.PipeImport(func(r io.Reader) error { _, err := io.Copy(io.Discard, r); return err }), nil, nil
}
func (c *fakeConn) Import(_ context.Context, man *engine.Manifest, _ engine.Secrets, _ io.Reader, record func(engine.ImportRecord) error, _ *engine.Progress) ([]string, error) {
	if err := record(fakeImport{Database: man.Database}); err != nil {
		return nil, err
	}
	return nil, c.d.err(c.host, "Import")
}
func (c *fakeConn) Verify(context.Context, *engine.Manifest, func(int, int)) error {
	return c.d.err(c.host, "Verify")
}
func (c *fakeConn) VerifySince(context.Context, *engine.Manifest, func(int, int)) (int, string, error) {
	return 0, "", c.d.err(c.host, "VerifySince")
}
func (c *fakeConn) DropImport(context.Context, engine.ImportRecord) ([]string, error) {
	return nil, c.d.err(c.host, "DropImport")
}
func (c *fakeConn) InspectBlocked(_ context.Context, db string, _ engine.Block) (engine.Source, error) {
	return fakeSource{db}, c.d.err(c.host, "InspectBlocked")
}
func (c *fakeConn) PlanClose(_ context.Context, db string, _ *engine.Manifest) (engine.Block, error) {
	return &fakeBlock{Database: db}, c.d.err(c.host, "PlanClose")
}
func (c *fakeConn) CloseAccess(context.Context, engine.Block) (int, error) {
	return 0, c.d.err(c.host, "CloseAccess")
}

// fakeStreams is a change stream whose cutover side does what the test
// says: waitApplied's lag (-1: caught up) and verify's failure.
type fakeStreams struct {
	calls     *calls
	lag       int64
	verifyErr error
	name      string // recorded stream; "" after teardown
	// teardownErr: teardown fails so when a server is missing.
	teardownErr error
}

func (f *fakeStreams) syncSide(context.Context, *agent.Job, engine.Conn, engine.Conn) (syncSide, error) {
	return nil, errors.New("not in these tests")
}
func (f *fakeStreams) cutoverSide(context.Context, *agent.Job, engine.Conn, engine.Conn) (cutoverSide, error) {
	return &fakeCutover{f: f}, nil
}
func (f *fakeStreams) recorded(context.Context, *agent.Job) (bool, error) { return f.name != "", nil }
func (f *fakeStreams) teardown(_ context.Context, _ *agent.Job, src, dst engine.Conn) error {
	f.calls.add("both", fmt.Sprintf("teardown (source reached: %t, destination reached: %t)", src != nil, dst != nil))
	if (src == nil || dst == nil) && f.teardownErr != nil {
		return f.teardownErr
	}
	f.name = ""
	return nil
}
func (f *fakeStreams) removeAt(_ context.Context, side statemachine.HostSide, c engine.Conn, name, _ string) error {
	f.calls.add(string(side), "remove the stream "+name)
	if c == nil && f.teardownErr != nil {
		return f.teardownErr
	}
	return nil
}
func (f *fakeStreams) forget(context.Context, *agent.Job) error {
	f.name = ""
	return nil
}
func (f *fakeStreams) verifiedAtCut(context.Context, *agent.Job) ([]engine.TableSum, []string, error) {
	return nil, nil, nil
}
func (f *fakeStreams) writtenSinceCut(context.Context, *agent.Job, engine.Conn) error { return nil }

type fakeCutover struct{ f *fakeStreams }

func (c *fakeCutover) ready(context.Context) (string, error) { return "", nil }
func (c *fakeCutover) lag(context.Context) (int64, error)    { return 0, nil }
func (c *fakeCutover) prepare(context.Context) (engine.Source, error) {
	return fakeSource{"db"}, nil
}
func (c *fakeCutover) schemaChange(context.Context) (string, error) { return "", nil }
func (c *fakeCutover) position(context.Context) (string, error)     { return "pos-1", nil }
func (c *fakeCutover) waitApplied(context.Context, string, time.Duration) (int64, error) {
	c.f.calls.add("destination", "waitApplied")
	return c.f.lag, nil
}
func (c *fakeCutover) timedOut(context.Context, int64) (int, error) { return 1, nil }
func (c *fakeCutover) stop(context.Context) error {
	c.f.calls.add("destination", "stop the stream")
	return nil
}
func (c *fakeCutover) remove(context.Context) error { return nil }
func (c *fakeCutover) removeLater() bool            { return true }
func (c *fakeCutover) verify(context.Context, engine.Block, string) (string, error) {
	c.f.calls.add("both", "verify")
	return "verified", c.f.verifyErr
}
func (c *fakeCutover) finish(context.Context) error { return nil }

// memStore is the part of the state store a Job uses, in memory; any
// other method panics (nil embedded interface).
type memStore struct {
	statemachine.Store
	mu      sync.Mutex
	records map[string][]byte
	events  []string
	// endpoints are the hosts' servers' addresses (of engine; default:
	// host:1, of mysql).
	endpoints map[string]string
	engine    statemachine.Engine
	// row is the row as Get returns it (the peer's agent reads it), asks
	// the peer asks; peer answers the open ones at once (the agent of the
	// row's other side).
	row  statemachine.Migration
	asks []statemachine.Ask
	peer *agent.Agent
	// author is the host whose agent wrote the records ("": an operator).
	author string
}

func (s *memStore) Get(_ context.Context, id int64) (statemachine.Migration, error) {
	if id != s.row.ID {
		return statemachine.Migration{}, statemachine.ErrNotFound
	}
	return s.row, nil
}
func (s *memStore) Ask(ctx context.Context, m *statemachine.Migration, side statemachine.HostSide, action, ref string) (int64, error) {
	s.mu.Lock()
	host, asker := m.Source, m.Destination
	if side == statemachine.SideDestination {
		host, asker = asker, host
	}
	id := int64(len(s.asks) + 1)
	s.asks = append(s.asks, statemachine.Ask{ID: id, MigrationID: m.ID, Side: side, Host: host, Asker: asker, Action: action, Ref: ref, Fence: m.Fence, AskedAt: time.Now()})
	s.mu.Unlock()
	if s.peer != nil {
		if _, err := s.peer.AnswerOpen(ctx); err != nil {
			return 0, err
		}
	}
	return id, nil
}
func (s *memStore) GetAsk(_ context.Context, id int64) (statemachine.Ask, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id < 1 || int(id) > len(s.asks) {
		return statemachine.Ask{}, statemachine.ErrNotFound
	}
	return s.asks[id-1], nil
}
func (s *memStore) OpenAsks(_ context.Context, host string, limit int) ([]statemachine.Ask, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []statemachine.Ask
	for _, a := range s.asks {
		if a.Host == host && !a.Answered() && len(out) < limit {
			out = append(out, a)
		}
	}
	return out, nil
}
func (s *memStore) AsksOf(_ context.Context, id int64, ref string) ([]statemachine.Ask, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []statemachine.Ask
	for _, a := range s.asks {
		if a.MigrationID == id && a.Ref == ref {
			out = append(out, a)
		}
	}
	return out, nil
}
func (s *memStore) SaveAnswer(_ context.Context, id int64, answer []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.asks[id-1].Answered() {
		return statemachine.ErrAnswered
	}
	s.asks[id-1].Answer = bytes.Clone(answer)
	return nil
}
func (s *memStore) AnswerAsk(_ context.Context, id int64, answer []byte, errText string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := &s.asks[id-1]
	if a.Answered() {
		return statemachine.ErrAnswered
	}
	a.Answer, a.Error, a.AnsweredAt = bytes.Clone(answer), errText, time.Now()
	return nil
}
func (s *memStore) RecordAuthor(_ context.Context, _ int64, kind string) (string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.records[kind]
	return s.author, ok, nil
}
func (s *memStore) WakeAsks(string) (<-chan struct{}, func())    { return nil, func() {} }
func (s *memStore) WakeAnswers(string) (<-chan struct{}, func()) { return nil, func() {} }

func (s *memStore) Record(_ context.Context, _ *statemachine.Migration, _ statemachine.Fields, detail string) error {
	s.note(detail)
	return nil
}
func (s *memStore) Progress(_ context.Context, _ *statemachine.Migration, detail string) error {
	s.note(detail)
	return nil
}
func (s *memStore) note(detail string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, detail)
}
func (s *memStore) PutRecord(_ context.Context, _ *statemachine.Migration, kind string, body []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[kind] = bytes.Clone(body)
	return nil
}
func (s *memStore) GetRecord(_ context.Context, _ int64, kind string) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.records[kind]
	return b, ok, nil
}
func (s *memStore) AgentFor(_ context.Context, host string) (statemachine.Agent, bool, error) {
	addr, eng := s.endpoints[host], s.engine
	if addr == "" {
		addr = host + ":1"
	}
	if eng == "" {
		eng = statemachine.EngineMySQL
	}
	return statemachine.Agent{Host: host, Endpoints: map[statemachine.Engine]string{eng: addr}}, true, nil
}

// flow is one row's step on the destination's (or source's) fake host.
type flow struct {
	calls   *calls
	driver  *fakeDriver
	streams *fakeStreams
	store   *memStore
	host    *host
	job     *agent.Job
}

func newFlow(t *testing.T, at string, role statemachine.Role) *flow {
	t.Helper()
	c := &calls{}
	f := &flow{calls: c, driver: &fakeDriver{calls: c, fail: map[string]error{}}, streams: &fakeStreams{calls: c}, store: &memStore{records: map[string][]byte{}}}
	a, err := agent.New(f.store, agent.Config{Host: at, Roles: []statemachine.Role{role}}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	dumps, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f.host = newHost(Config{Host: at, Server: engine.Server{User: "admin"}, Store: dumps, Level: zstd.SpeedFastest, ProgressEvery: time.Hour}, f.driver)
	f.host.streams = f.streams
	row := statemachine.Migration{ID: 7, DatabaseName: "db", Engine: statemachine.EngineMySQL, Source: "source", Destination: "destination", Mode: statemachine.ModeDump}
	f.job = a.JobFor(role, row)
	// The agent of the row's other side, on the same fake servers,
	// answers this one's asks.
	other := map[string]string{"source": "destination", "destination": "source"}[at]
	peer, err := agent.New(f.store, agent.Config{Host: other, Roles: []statemachine.Role{role}}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	ph := newHost(Config{Host: other, Server: engine.Server{User: "admin"}, Store: dumps}, f.driver)
	ph.streams = f.streams
	ph.registerAnswers(peer)
	step, _ := statemachine.StepFor(role)
	row.Status = step.Working
	f.store.row, f.store.peer = row, peer
	return f
}

func (f *flow) blockRecord(t *testing.T) blockRecord {
	t.Helper()
	rec, ok, err := f.host.blockRecord(context.Background(), f.job)
	if err != nil || !ok {
		t.Fatalf("block record: %v, %v", ok, err)
	}
	return rec
}

// before asserts that a happened, and before b if b happened at all.
func (f *flow) before(t *testing.T, a, b string) {
	t.Helper()
	i, j := f.calls.index(a), f.calls.index(b)
	if i < 0 || j >= 0 && j < i {
		t.Errorf("want %q before %q; calls: %s", a, b, strings.Join(f.calls.list(), " | "))
	}
}

func (f *flow) happened(t *testing.T, want string, yes bool) {
	t.Helper()
	if got := f.calls.index(want) >= 0; got != yes {
		t.Errorf("%q happened: %t, want %t; calls: %s", want, got, yes, strings.Join(f.calls.list(), " | "))
	}
}

// A dump that fails under the block: writes come back first, then the
// import beside it goes; both records say nothing is left.
func TestFlowDumpFailsUndoesInOrder(t *testing.T) {
	f := newFlow(t, "destination", statemachine.RoleDump)
	boom := errors.New("the dump tool died")
	f.driver.fail["source: Dump"] = boom
	_, err := (&dumpStep{f.host}).Run(context.Background(), f.job)
	if !errors.Is(err, boom) {
		t.Fatalf("Run: %v; want the dump's failure", err)
	}
	f.before(t, "source: PlanBlock", "source: Block")
	f.before(t, "source: Block", "source: ConsistencyPoint")
	f.before(t, "destination: ImportBeside", "source: Dump")
	f.before(t, "source: Dump", "source: Unblock")
	f.before(t, "source: Unblock", "destination: DropImport")
	if rec := f.blockRecord(t); rec.Blocked {
		t.Error("the block record says writes are still blocked")
	}
	if rec, err := f.host.importRecord(context.Background(), f.job); err != nil || rec != nil {
		t.Errorf("the import record still names %v (%v)", rec, err)
	}
}

// A block that cannot be undone (the source went away) is left recorded
// in force for the next attempt, a rollback or recovery; the import is
// dropped all the same.
func TestFlowDumpFailsSourceGone(t *testing.T) {
	f := newFlow(t, "destination", statemachine.RoleDump)
	f.driver.fail["source: Dump"] = errors.New("lost the source")
	f.driver.fail["source: Unblock"] = errors.New("source unreachable")
	_, err := (&dumpStep{f.host}).Run(context.Background(), f.job)
	if err == nil || !strings.Contains(err.Error(), "source unreachable") {
		t.Fatalf("Run: %v; want both failures", err)
	}
	if rec := f.blockRecord(t); !rec.Blocked {
		t.Error("the block record says writes were restored; they were not")
	}
	f.happened(t, "destination: DropImport", true)
	// The next attempt undoes the recorded block before anything else.
	delete(f.driver.fail, "source: Unblock")
	delete(f.driver.fail, "source: Dump")
	f.calls.log = nil
	if _, err := (&dumpStep{f.host}).Run(context.Background(), f.job); err != nil {
		t.Fatalf("retry: %v", err)
	}
	f.before(t, "source: Unblock", "source: PlanBlock")
}

// Recovery after the dump's agent died under the block: writes restored
// at the source and the import dropped at the destination, each whether
// or not the other's server answers.
func TestFlowDumpRecover(t *testing.T) {
	f := newFlow(t, "destination", statemachine.RoleDump)
	ctx := context.Background()
	if err := f.job.PutRecord(ctx, recordBlock, blockRecord{Blocked: true, Access: &fakeBlock{Database: "db"}}); err != nil {
		t.Fatal(err)
	}
	if err := f.job.PutRecord(ctx, recordImport, fakeImport{Database: "db"}); err != nil {
		t.Fatal(err)
	}
	f.driver.fail["destination: Open"] = errors.New("destination down")
	err := (&dumpStep{f.host}).Recover(ctx, f.job)
	if err == nil {
		t.Fatal("Recover: no error with the destination down")
	}
	f.happened(t, "source: Unblock", true)
	if f.blockRecord(t).Blocked {
		t.Error("writes not recorded as restored")
	}
	delete(f.driver.fail, "destination: Open")
	if err := (&dumpStep{f.host}).Recover(ctx, f.job); err != nil {
		t.Fatal(err)
	}
	f.happened(t, "destination: DropImport", true)
}

// A cutover whose catch-up times out restores writes and sends the row
// back to syncing: the stream and the copy stay.
func TestFlowCutoverTimeoutRestoresWrites(t *testing.T) {
	f := newFlow(t, "destination", statemachine.RoleCutover)
	f.streams.name, f.streams.lag = "fleetmigrate_7_x", 4096
	fields, err := (&cutoverStep{f.host}).Run(context.Background(), f.job)
	if err != nil || !fields.Divert {
		t.Fatalf("Run = %+v, %v; want back to syncing", fields, err)
	}
	f.before(t, "source: Block", "destination: waitApplied")
	f.before(t, "destination: waitApplied", "source: Unblock")
	f.happened(t, "destination: stop the stream", false)
	f.happened(t, "both: teardown (source reached: true, destination reached: true)", false)
	f.happened(t, "destination: DropImport", false)
	if f.blockRecord(t).Blocked {
		t.Error("the block record says writes are still blocked")
	}
}

// A cutover that fails for good (the destination differs) restores
// writes, then removes the stream, then drops the copy.
func TestFlowCutoverFailsForGood(t *testing.T) {
	f := newFlow(t, "destination", statemachine.RoleCutover)
	f.streams.name, f.streams.lag = "fleetmigrate_7_x", -1
	f.streams.verifyErr = engine.Permanentf("table t differs")
	ctx := context.Background()
	if err := f.job.PutRecord(ctx, recordImport, fakeImport{Database: "db"}); err != nil {
		t.Fatal(err)
	}
	_, err := (&cutoverStep{f.host}).Run(ctx, f.job)
	if !agent.IsPermanent(err) {
		t.Fatalf("Run: %v; want a permanent failure", err)
	}
	f.before(t, "destination: stop the stream", "both: verify")
	f.before(t, "both: verify", "source: Unblock")
	f.before(t, "source: Unblock", "both: teardown (source reached: true, destination reached: true)")
	f.before(t, "both: teardown (source reached: true, destination reached: true)", "destination: DropImport")
}

// An interrupted cutover's block is undone before anything else, even
// with the destination unreachable.
func TestFlowCutoverUndoesAnInterruptedBlock(t *testing.T) {
	f := newFlow(t, "destination", statemachine.RoleCutover)
	ctx := context.Background()
	if err := f.job.PutRecord(ctx, recordBlock, blockRecord{Blocked: true, Access: &fakeBlock{Database: "db"}}); err != nil {
		t.Fatal(err)
	}
	f.driver.fail["destination: Open"] = errors.New("destination down")
	if _, err := (&cutoverStep{f.host}).Run(ctx, f.job); err == nil {
		t.Fatal("Run: no error with the destination down")
	}
	f.happened(t, "source: Unblock", true)
	if f.blockRecord(t).Blocked {
		t.Error("writes not restored")
	}
	if n := strings.Count(strings.Join(f.calls.list(), "|"), "Unblock"); n != 1 {
		t.Errorf("writes restored %d times", n)
	}
}

// Abandoning a cutover with one server unreachable removes what the other
// holds: teardown is asked with the source alone.
func TestFlowCutoverAbandonReachesWhatAnswers(t *testing.T) {
	f := newFlow(t, "destination", statemachine.RoleCutover)
	f.streams.name = "fleetmigrate_7_x"
	f.driver.fail["destination: Open"] = errors.New("destination down")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	f.streams.teardownErr = engine.Permanentf("subscription not dropped: destination unreachable") // permanent: no waiting out the undo window here
	err := (&cutoverStep{f.host}).Abandon(ctx, f.job)
	f.happened(t, "both: teardown (source reached: true, destination reached: false)", true)
	// The error says why the destination was not reached.
	if err == nil || !strings.Contains(err.Error(), "destination down") {
		t.Errorf("Abandon: %v; want the reason the destination was not reached", err)
	}
}

// The close marks the block as final: a later recovery must not restore
// writes to the old copy.
func TestFlowCloseMakesTheBlockFinal(t *testing.T) {
	f := newFlow(t, "source", statemachine.RoleClose)
	ctx := context.Background()
	if err := f.job.PutRecord(ctx, recordBlock, blockRecord{Blocked: true, Access: &fakeBlock{Database: "db"}}); err != nil {
		t.Fatal(err)
	}
	// The dump's manifest, stored as the dump step stores it.
	man := &engine.Manifest{FormatVersion: engine.ManifestVersion, Engine: "mysql", Database: "db", Tables: []engine.TableSum{{Name: "t", Rows: 1, Checksum: "1"}}}
	key := "mysql/source/db/dump.sql.zst"
	if err := putJSON(ctx, f.host.Store, "mysql/source/db/manifest.json", man, false); err != nil {
		t.Fatal(err)
	}
	f.job.Row.DumpURL, f.job.Row.DumpSHA256 = f.host.Store.URL(key), "00"
	if _, err := (&closeStep{f.host}).Run(ctx, f.job); err != nil {
		t.Fatal(err)
	}
	f.before(t, "source: VerifySince", "source: CloseAccess")
	if f.blockRecord(t).Blocked {
		t.Error("the block record is still in force after the close")
	}
	if err := (&cutoverStep{f.host}).Recover(ctx, f.job); err != nil {
		t.Fatal(err)
	}
	f.happened(t, "source: Unblock", false)
}

// The dump step never blocks the source itself: it asks the source's
// agent, which plans the block from its own server and saves that plan in
// its answer; the undo is asked for too, and restores from that plan.
func TestFlowDumpAsksTheSourcesAgent(t *testing.T) {
	f := newFlow(t, "destination", statemachine.RoleDump)
	f.driver.fail["source: Dump"] = errors.New("the dump tool died")
	if _, err := (&dumpStep{f.host}).Run(context.Background(), f.job); err == nil {
		t.Fatal("Run: no error")
	}
	f.before(t, "source: PlanBlock", "source: Block")
	f.before(t, "source: Dump", "source: Unblock")
	if len(f.store.asks) != 3 {
		t.Fatalf("asks: %+v", f.store.asks)
	}
	// Planned first (outside the window), then applied, then undone.
	plan, block, unblock := f.store.asks[0], f.store.asks[1], f.store.asks[2]
	if plan.Action != askPlanBlock || plan.Ref != block.Ref || plan.Error != "" || strings.Contains(string(plan.Answer), `"applied"`) {
		t.Errorf("the plan ask: %+v (%s)", plan, plan.Answer)
	}
	if n := strings.Count(strings.Join(f.calls.list(), "|"), "source: PlanBlock"); n != 1 {
		t.Errorf("the block was planned %d times, want once (the block applies the plan asked before)", n)
	}
	if block.Action != askBlock || block.Host != "source" || block.Error != "" || !strings.Contains(string(block.Answer), `"applied":true`) {
		t.Errorf("the block ask: %+v (%s)", block, block.Answer)
	}
	if unblock.Action != askUnblock || unblock.Ref != block.Ref || unblock.Error != "" || !strings.Contains(string(unblock.Answer), `"undone":1`) {
		t.Errorf("the unblock ask: %+v (%s)", unblock, unblock.Answer)
	}
	rec := f.blockRecord(t)
	if rec.Blocked || rec.Ref != block.Ref {
		t.Errorf("the block record: %+v", rec)
	}
	if b, ok := rec.Access.(*fakeBlock); !ok || b.Database != "db" {
		t.Errorf("the record's plan is not the source agent's: %#v", rec.Access)
	}
	if raw := string(f.store.records[recordBlock]); strings.Contains(raw, `"access"`) {
		t.Errorf("the asker wrote a plan into its record: %s", raw)
	}
}

// A block asked by a claim that has ended is refused: nothing is blocked.
func TestFlowStaleBlockAskBlocksNothing(t *testing.T) {
	f := newFlow(t, "destination", statemachine.RoleDump)
	f.store.row.Fence = 9 // the row was claimed again since
	f.driver.fail["source: Dump"] = errors.New("not reached")
	_, err := (&dumpStep{f.host}).Run(context.Background(), f.job)
	if err == nil || !strings.Contains(err.Error(), "it has ended") {
		t.Fatalf("Run: %v; want the stale ask refused", err)
	}
	f.happened(t, "source: Block", false)
	f.happened(t, "source: PlanBlock", false)
	f.happened(t, "source: Dump", false)
}

// A rollback at the source changes nothing at the destination itself: it
// asks the destination's agent to remove the stream's part there and to
// drop the copy, and removes its own part.
func TestFlowRollbackAsksTheDestinationsAgent(t *testing.T) {
	f := newFlow(t, "source", statemachine.RoleRollback)
	f.streams.name = "fleetmigrate_7_db"
	if err := f.job.PutRecord(context.Background(), recordImport, fakeImport{Database: "db"}); err != nil {
		t.Fatal(err)
	}
	if _, err := (&rollbackStep{f.host}).Run(context.Background(), f.job); err != nil {
		t.Fatal(err)
	}
	name := engine.StreamName(7, "db")
	f.before(t, "destination: remove the stream "+name, "source: remove the stream "+name)
	f.before(t, "source: remove the stream "+name, "destination: DropImport")
	var actions []string
	for _, a := range f.store.asks {
		actions = append(actions, a.Action+"@"+a.Host+":"+a.Error)
	}
	if strings.Join(actions, " ") != "stream-remove@destination: drop-copy@destination:" {
		t.Errorf("asks: %v", actions)
	}
	if rec, err := f.host.importRecord(context.Background(), f.job); err != nil || rec != nil {
		t.Errorf("the import record still names %v (%v)", rec, err)
	}
}

// The destination's agent drops only what an import record of its own
// names: one the source's agent wrote (a compromised source naming another
// customer's database) is refused, and nothing is dropped.
func TestFlowDropCopyRefusesARecordTheAskerWrote(t *testing.T) {
	f := newFlow(t, "source", statemachine.RoleRollback)
	f.store.author = "source"
	if err := f.job.PutRecord(context.Background(), recordImport, fakeImport{Database: "someone else's"}); err != nil {
		t.Fatal(err)
	}
	_, err := (&rollbackStep{f.host}).Run(context.Background(), f.job)
	if err == nil || !strings.Contains(err.Error(), "last written by host source's agent") {
		t.Fatalf("Run: %v; want the record refused", err)
	}
	f.happened(t, "destination: DropImport", false)
}
