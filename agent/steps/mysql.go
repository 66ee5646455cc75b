package steps

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/fleetmigrate/fleetmigrate/agent"
	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/mysql"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/storage"
)

// MySQL runs the MySQL/MariaDB steps of one host.
type MySQL struct {
	// Host is this agent's host ID.
	Host string
	// Server is how this agent reaches its local server as administrator.
	// Peers (the destination, from the source) are reached at the address
	// their agent publishes, with the same account.
	Server engine.Server
	// Options configure the engine (tools, session wait, temp dir).
	Options mysql.Options
	// Store holds the dumps; Level is their zstd level.
	Store storage.Store
	Level zstd.EncoderLevel
	// ProgressEvery is how often a running dump or import reports (default
	// 5 s; the agent's progress interval limits what is written).
	ProgressEvery time.Duration
	// HangTimeout cancels a step whose server has not answered a probe for
	// this long (watch.go); 0: no watchdog.
	HangTimeout time.Duration
	// StoreFirst: the dump step only stores the dump (no import beside
	// it); the import step takes it from the store.
	StoreFirst bool
	// FullRecheck: the close step reads every table of the source again
	// instead of only those its change marks (or binary log) say were
	// written since the dump.
	FullRecheck bool
	// Online configures the sync and cutover steps of online rows.
	Online Online

	streams *myStreams
}

// Register adds the sync, cutover, dump, import, close and rollback
// handlers for rows of engine mysql.
func (c *MySQL) Register(a *agent.Agent) {
	c.streams = &myStreams{c: c, state: a.Store(), host: a.Host()}
	a.Service("mysql streams", c.streams.run)
	c.Online.gauges = newStreamGauges(string(statemachine.EngineMySQL))
	a.MustRegister(c.Online.gauges)
	a.Handle(statemachine.RoleSync, statemachine.EngineMySQL, c.watch(&mysqlSync{c}))
	a.Handle(statemachine.RoleCutover, statemachine.EngineMySQL, c.watch(&mysqlCutover{c}))
	a.Handle(statemachine.RoleDump, statemachine.EngineMySQL, c.watch(&mysqlDump{c}))
	a.Handle(statemachine.RoleImport, statemachine.EngineMySQL, c.watch(&mysqlImport{c}))
	a.Handle(statemachine.RoleClose, statemachine.EngineMySQL, c.watch(&mysqlClose{c}))
	a.Handle(statemachine.RoleRollback, statemachine.EngineMySQL, c.watch(&mysqlRollback{c}))
}

// watch puts a handler under the hang watchdog of this host's server.
func (c *MySQL) watch(h agent.Handler) agent.Handler {
	srv := c.Server
	srv.Host = c.Host
	return watch(h, srv.String(), c.HangTimeout, func(ctx context.Context) error { return mysql.Probe(ctx, srv) })
}

func (c *MySQL) local(ctx context.Context, log *slog.Logger) (*mysql.Server, error) {
	opt := c.Options
	opt.Log = log
	srv := c.Server
	srv.Host = c.Host
	s, err := mysql.Open(ctx, srv, opt)
	if err != nil {
		return nil, permanent(err)
	}
	return s, nil
}

// peer connects to the server of another host, at the address its agent
// publishes.
func (c *MySQL) peer(ctx context.Context, job *agent.Job, host string) (*mysql.Server, error) {
	srv, err := c.peerServer(ctx, job, host)
	if err != nil {
		return nil, err
	}
	opt := c.Options
	opt.Log = job.Log
	s, err := mysql.Open(ctx, srv, opt)
	if err != nil {
		return nil, permanent(fmt.Errorf("reach the %s server of %s: %w", statemachine.EngineMySQL, host, err))
	}
	return s, nil
}

// peerServer is how this agent reaches the server of another host.
func (c *MySQL) peerServer(ctx context.Context, job *agent.Job, host string) (engine.Server, error) {
	addr, err := job.Endpoint(ctx, host, statemachine.EngineMySQL)
	if err != nil {
		return engine.Server{}, err
	}
	return engine.Server{Host: host, Address: addr, User: c.Server.User, Password: c.Server.Password}, nil
}

func (c *MySQL) every() time.Duration {
	if c.ProgressEvery > 0 {
		return c.ProgressEvery
	}
	return 5 * time.Second
}

// unblockMySQL undoes a MySQL block.
func unblockMySQL(src *mysql.Server) unblockFunc[mysql.Access] {
	return src.Unblock
}

// mysqlDump is the dump step, run at the destination: check both sides,
// block writes at the source, dump from there into the store and import
// the same bytes here as they come (pull.go), verify. Any failure drops
// what the import created and restores writes before the row fails or is
// retried.
type mysqlDump struct{ c *MySQL }

func (h *mysqlDump) Run(ctx context.Context, job *agent.Job) (f statemachine.Fields, err error) {
	row := &job.Row
	srv, err := h.c.peerServer(ctx, job, row.Source)
	if err != nil {
		return statemachine.Fields{}, err
	}
	ctx, stop := watchSource(ctx, job, srv.String(), h.c.HangTimeout, func(ctx context.Context) error { return mysql.Probe(ctx, srv) })
	defer func() { err = stop(err) }()
	src, err := h.c.peer(ctx, job, row.Source)
	if err != nil {
		return statemachine.Fields{}, err
	}
	defer func() { _ = src.Close() }()
	dst, err := h.c.local(ctx, job.Log)
	if err != nil {
		return statemachine.Fields{}, err
	}
	defer func() { _ = dst.Close() }()
	// A block left in force by an earlier attempt is undone first: this
	// attempt plans its own from the grants as they are.
	if err := unblockRecorded(ctx, job, unblockMySQL(src)); err != nil {
		return statemachine.Fields{}, err
	}
	if err := dropMySQLImport(ctx, job, dst, "an earlier attempt"); err != nil {
		return statemachine.Fields{}, err
	}
	s, err := src.Inspect(ctx, row.DatabaseName)
	if err != nil {
		return statemachine.Fields{}, permanent(err)
	}
	d, err := dst.CheckDestination(ctx, mysql.IncomingFromSource(s))
	if err != nil {
		return statemachine.Fields{}, permanent(err)
	}
	checked := fmt.Sprintf("destination %s %s ready", row.Destination, dst.Version())
	if len(d.Notes) > 0 {
		checked += " (" + strings.Join(d.Notes, "; ") + ")"
	}
	access, err := src.PlanBlock(ctx, s)
	if err != nil {
		return statemachine.Fields{}, permanent(err)
	}
	rec := blockRecord[mysql.Access]{Blocked: true, Access: access}
	if err := job.PutRecord(ctx, recordBlock, rec); err != nil {
		return statemachine.Fields{}, err
	}
	detail := fmt.Sprintf("blocking writes to %q at %s (%s, %d tables, %s; %s); %s", s.Database, row.Source, src.Version(), len(s.Tables), mb(s.SizeBytes), describeAccess(access), checked)
	if err := job.Record(ctx, statemachine.Fields{SizeBytes: s.SizeBytes, Marks: []statemachine.Mark{statemachine.MarkBlocked}}, detail); err != nil {
		return statemachine.Fields{}, err
	}
	importer := dst
	if h.c.StoreFirst {
		importer = nil
	}
	f, err = h.blocked(ctx, job, src, s, access, importer)
	if err != nil {
		uctx, cancel := undoContext(ctx)
		defer cancel()
		if derr := dropMySQLImport(uctx, job, dst, "this attempt"); derr != nil {
			job.Log.Error("the import beside the failed dump was NOT dropped: the next attempt, a rollback or recovery drops it", "err", derr)
			err = errors.Join(err, derr)
		}
		if uerr := unblock(uctx, job, unblockMySQL(src), rec); uerr != nil {
			job.Log.Error("writes NOT restored after the dump failed: the next attempt, a rollback or recovery restores them", "err", uerr)
			err = errors.Join(err, uerr)
		}
		return statemachine.Fields{}, permanent(err)
	}
	return f, nil
}

func describeAccess(a *mysql.Access) string {
	var parts []string
	if a.Mode == mysql.ModeReadOnly {
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

// blocked blocks writes and dumps into the store and, when dst is not
// nil, into an import at dst beside it, then verifies that import
// (Fields.Divert: on to the DNS step). An import that fails beside a
// stored dump is dropped and the row goes to the import step, which takes
// the dump from the store.
func (h *mysqlDump) blocked(ctx context.Context, job *agent.Job, src *mysql.Server, s *mysql.Source, access *mysql.Access, dst *mysql.Server) (statemachine.Fields, error) {
	ended, err := src.Block(ctx, access)
	if err != nil {
		return statemachine.Fields{}, err
	}
	job.Note(ctx, "writes blocked; %d sessions ended", ended)
	pos, err := src.Position(ctx)
	if err != nil {
		return statemachine.Fields{}, err
	}
	ref := storage.DumpRef{Engine: string(statemachine.EngineMySQL), Source: job.Row.Source, Database: s.Database, ConsistencyPoint: pos.At}
	key := ref.DumpKey("sql")
	rep := report(ctx, job, h.c.every(), func(b, done, total int64) string {
		return fmt.Sprintf("dumping: %s written, checksums of %d/%d tables", mb(b), done, total)
	})
	var side importSide
	var imported importProgress
	if dst != nil {
		si, notes, err := dst.StartStreamedImport(ctx, s, job.Row.Source, func(rec mysql.ImportRecord) error {
			return job.PutRecord(ctx, recordImport, rec)
		}, &imported.bytes)
		if err != nil {
			rep.Stop()
			return statemachine.Fields{}, err
		}
		side, imported.notes = si, notes
	}
	var sec engine.Secrets
	res, man, importErr, err := dumpBeside(ctx, h.c.Store, key, h.c.Level, side, func(w io.Writer) (*engine.Manifest, error) {
		var man *engine.Manifest
		var err error
		man, sec, _, err = src.Snapshot(ctx, s, job.Row.Source, pos, w, &mysql.Progress{Bytes: &rep.bytes, Tables: rep.tables})
		return man, err
	})
	rep.Stop()
	if err != nil {
		return statemachine.Fields{}, fmt.Errorf("dump %q: %w", s.Database, err) // the store's errors name it
	}
	job.CountBytes("out", res.Size)
	man.DumpSHA256, man.DumpBytes = res.SHA256, res.Size
	if err := putJSON(ctx, h.c.Store, ref.SecretsKey(), sec, true); err != nil {
		return statemachine.Fields{}, err
	}
	if err := putJSON(ctx, h.c.Store, ref.ManifestKey(), man, false); err != nil {
		return statemachine.Fields{}, err
	}
	job.Note(ctx, "dumped %q: %s of SQL, %s stored, %d tables checksummed, %d accounts", s.Database, mb(rep.bytes.Load()), mb(res.Size), len(man.Tables), len(man.Users))
	f := statemachine.Fields{
		SizeBytes:        s.SizeBytes,
		DumpURL:          h.c.Store.URL(key),
		DumpSHA256:       res.SHA256,
		DumpBytes:        res.Size,
		ConsistencyPoint: pos.At,
	}
	if dst == nil {
		return f, nil
	}
	if importErr == nil {
		job.Note(ctx, "imported %q beside the dump: %s of SQL%s; verifying %d tables", man.Database, mb(imported.bytes.Load()), notesSuffix(imported.notes), len(man.Tables))
	}
	return importedBeside(ctx, job, h.c.every(), f, importErr, func(tables func(int, int)) error { return dst.Verify(ctx, man, tables) },
		fmt.Sprintf("verified %q: %d tables, row counts and checksums (%s) match the source's, %d objects, %d accounts", man.Database, len(man.Tables), man.ChecksumAlgorithm, len(man.Objects), len(man.Users)),
		func(ctx context.Context) error { return dropMySQLImport(ctx, job, dst, "the import beside the dump") })
}

// Recover undoes what the dead run left: the block at the source (writes
// restored) and the import beside the dump (dropped), each whether or not
// the other's server answers.
func (h *mysqlDump) Recover(ctx context.Context, job *agent.Job) error {
	return errors.Join(h.restoreWrites(ctx, job), dropLocalMySQLImport(ctx, h.c, job, "an interrupted attempt"))
}

// Abandon undoes what the last attempt could not (abandonDump).
func (h *mysqlDump) Abandon(ctx context.Context, job *agent.Job) error {
	return abandonDump(ctx, job, func(ctx context.Context) error { return h.restoreWrites(ctx, job) },
		func(ctx context.Context) error { return dropLocalMySQLImport(ctx, h.c, job, "the last attempt") })
}

func (h *mysqlDump) restoreWrites(ctx context.Context, job *agent.Job) error {
	return recoverBlock(ctx, job, func(ctx context.Context) (unblockFunc[mysql.Access], func(), error) {
		src, err := h.c.peer(ctx, job, job.Row.Source)
		if err != nil {
			return nil, nil, err
		}
		return unblockMySQL(src), func() { _ = src.Close() }, nil
	})
}

// mysqlImport is the import step at the destination: drop what an earlier
// attempt left, import (recording what it creates first), verify against
// the manifest; on any failure drop what this attempt created.
type mysqlImport struct{ c *MySQL }

func (h *mysqlImport) Run(ctx context.Context, job *agent.Job) (statemachine.Fields, error) {
	row := &job.Row
	objs, man, err := readManifest(ctx, h.c.Store, row)
	if err != nil {
		return statemachine.Fields{}, permanent(err)
	}
	var sec engine.Secrets
	if err := getJSON(ctx, h.c.Store, objs.Secrets, &sec); err != nil {
		return statemachine.Fields{}, permanent(err)
	}
	dst, err := h.c.local(ctx, job.Log)
	if err != nil {
		return statemachine.Fields{}, err
	}
	defer func() { _ = dst.Close() }()
	if err := dropMySQLImport(ctx, job, dst, "an earlier attempt"); err != nil {
		return statemachine.Fields{}, err
	}
	if err := h.load(ctx, job, dst, objs, man, sec); err != nil {
		uctx, cancel := undoContext(ctx)
		defer cancel()
		if derr := dropMySQLImport(uctx, job, dst, "this attempt"); derr != nil {
			job.Log.Error("the failed import was NOT dropped: the next attempt, a rollback or recovery drops it", "err", derr)
			err = errors.Join(err, derr)
		}
		return statemachine.Fields{}, permanent(err)
	}
	return statemachine.Fields{}, nil
}

func (h *mysqlImport) load(ctx context.Context, job *agent.Job, dst *mysql.Server, objs dumpObjects, man *engine.Manifest, sec engine.Secrets) error {
	r, err := storage.OpenDump(ctx, h.c.Store, objs.Dump, job.Row.DumpSHA256)
	if err != nil {
		return fmt.Errorf("open the dump: %w", err)
	}
	defer r.Close()
	rep := report(ctx, job, h.c.every(), func(b, done, total int64) string {
		if total > 0 {
			return fmt.Sprintf("verifying: %d/%d tables", done, total)
		}
		return fmt.Sprintf("importing: %s of SQL loaded", mb(b))
	})
	defer rep.Stop()
	notes, err := dst.Import(ctx, man, sec, r, func(rec mysql.ImportRecord) error {
		return job.PutRecord(ctx, recordImport, rec)
	}, &mysql.Progress{Bytes: &rep.bytes})
	if err != nil {
		return corruptOr(ctx, h.c.Store, objs, job.Row.DumpSHA256, man.Database, err)
	}
	job.CountBytes("in", job.Row.DumpBytes)
	job.Note(ctx, "imported %q: %s of SQL%s; verifying %d tables", man.Database, mb(rep.bytes.Load()), notesSuffix(notes), len(man.Tables))
	if err := dst.Verify(ctx, man, rep.tables); err != nil {
		return err
	}
	job.Note(ctx, "verified %q: %d tables, row counts and checksums (%s) match the source's, %d objects, %d accounts", man.Database, len(man.Tables), man.ChecksumAlgorithm, len(man.Objects), len(man.Users))
	return nil
}

func notesSuffix(notes []string) string {
	if len(notes) == 0 {
		return ""
	}
	return " (" + strings.Join(notes, "; ") + ")"
}

// dropMySQLImport drops what the row's import record says an import
// created on dst, then clears the record.
func dropMySQLImport(ctx context.Context, job *agent.Job, dst *mysql.Server, whose string) error {
	return dropRecordedImport(ctx, job, dst, func(ctx context.Context, rec mysql.ImportRecord) ([]string, error) {
		return nil, dst.DropImport(ctx, rec)
	}, describeImport, whose)
}

func describeImport(rec mysql.ImportRecord) string {
	var parts []string
	switch {
	case rec.Database != "" && rec.CreatedDatabase:
		parts = append(parts, fmt.Sprintf("database %q dropped", rec.Database))
	case rec.Database != "":
		parts = append(parts, fmt.Sprintf("database %q emptied (it existed before)", rec.Database))
	}
	if len(rec.CreatedUsers) > 0 {
		parts = append(parts, fmt.Sprintf("%d accounts it created removed", len(rec.CreatedUsers)))
	}
	return strings.Join(parts, ", ")
}

// Recover drops the partial import of the dead run.
func (h *mysqlImport) Recover(ctx context.Context, job *agent.Job) error {
	return dropLocalMySQLImport(ctx, h.c, job, "an interrupted attempt")
}

// Abandon drops what the last attempt could not when the row fails after
// its attempts were used up, waiting for the server within the undo window.
func (h *mysqlImport) Abandon(ctx context.Context, job *agent.Job) error {
	return undoPatiently(ctx, job, "drop the failed import", func(ctx context.Context) error {
		return dropLocalMySQLImport(ctx, h.c, job, "the last attempt")
	})
}

// dropLocalMySQLImport drops what the row's import record says an import
// created at this host's server.
func dropLocalMySQLImport(ctx context.Context, c *MySQL, job *agent.Job, whose string) error {
	dst, err := c.local(ctx, job.Log)
	if err != nil {
		return err
	}
	defer func() { _ = dst.Close() }()
	return dropMySQLImport(ctx, job, dst, whose)
}

// mysqlClose is the close step at the source, after DNS moved: re-check
// the source against the manifest, then take the accounts' access to the
// old copy away and end their sessions. The data stays.
type mysqlClose struct{ c *MySQL }

func (h *mysqlClose) Run(ctx context.Context, job *agent.Job) (statemachine.Fields, error) {
	row := &job.Row
	src, err := h.c.local(ctx, job.Log)
	if err != nil {
		return statemachine.Fields{}, err
	}
	defer func() { _ = src.Close() }()
	var dumped statemachine.Fields
	if row.Mode == statemachine.ModeOnline && row.DumpURL == "" {
		if dumped, err = h.online(ctx, job, src); err != nil {
			return statemachine.Fields{}, err
		}
		row.DumpURL, row.DumpSHA256, row.DumpBytes, row.ConsistencyPoint = dumped.DumpURL, dumped.DumpSHA256, dumped.DumpBytes, dumped.ConsistencyPoint
	}
	_, man, err := readManifest(ctx, h.c.Store, row)
	if err != nil {
		return statemachine.Fields{}, permanent(err)
	}
	s, err := src.Inspect(ctx, row.DatabaseName)
	if err != nil {
		return statemachine.Fields{}, permanent(err)
	}
	if dumped.DumpURL == "" { // a dump just taken under the block needs no re-check
		// The source must still be what was dumped: the same check as the
		// import's verification, against the same manifest, of the tables
		// written since the dump.
		rep := report(ctx, job, h.c.every(), func(_, done, total int64) string {
			return fmt.Sprintf("re-checking the source: %d/%d tables", done, total)
		})
		err := recheck(ctx, job, man, h.c.FullRecheck, src.Verify, src.VerifySince, rep.tables)
		rep.Stop()
		if err != nil {
			return statemachine.Fields{}, err
		}
	}
	access, err := src.PlanClose(ctx, s)
	if err != nil {
		return statemachine.Fields{}, permanent(err)
	}
	if err := job.PutRecord(ctx, recordClose, access); err != nil {
		return statemachine.Fields{}, err
	}
	ended, err := src.CloseAccess(ctx, access)
	if err != nil {
		return statemachine.Fields{}, permanent(err)
	}
	job.Note(ctx, "source closed: %d accounts lost access to %q, %d sessions ended; the data stays until the retention ends", len(access.Accounts), row.DatabaseName, ended)
	return dumped, nil
}

// online removes what is left of an online row's stream and takes the
// customer's consistency-point dump of the frozen source into the store,
// as the dump step of dump mode does (dump_url and download links then
// work the same), and compares it with what the destination was verified
// to have at the cutover.
func (h *mysqlClose) online(ctx context.Context, job *agent.Job, src *mysql.Server) (statemachine.Fields, error) {
	var st mysql.Stream
	if _, err := job.GetRecord(ctx, recordStream, &st); err != nil {
		return statemachine.Fields{}, err
	}
	if st.Name != "" {
		dst, err := h.c.peer(ctx, job, job.Row.Destination)
		if err != nil {
			return statemachine.Fields{}, fmt.Errorf("remove the stream at the destination: %w", err)
		}
		err = h.c.teardown(ctx, job, dst)
		_ = dst.Close()
		if err != nil {
			return statemachine.Fields{}, err
		}
	}
	access, err := cutoverBlock[mysql.Access](ctx, job)
	if err != nil {
		return statemachine.Fields{}, err
	}
	s, err := src.Inspect(ctx, job.Row.DatabaseName)
	if err != nil {
		return statemachine.Fields{}, permanent(err)
	}
	// Blocked, the accounts' grants and events are the block's: the dump
	// describes them as they were before.
	s.Blocked(access)
	f, err := (&mysqlDump{h.c}).blocked(ctx, job, src, s, access, nil)
	if err != nil {
		return f, err
	}
	var done mysql.Stream
	if _, err := job.GetRecord(ctx, recordStream, &done); err != nil {
		return f, err
	}
	var verified []engine.TableSum
	for _, v := range done.Verified {
		verified = append(verified, v)
	}
	if err := verifiedAgainstDump(ctx, job, h.c.Store, f, verified, done.CutKeys...); err != nil {
		return f, err
	}
	return f, loggedSinceCut(ctx, job, src, &done)
}

// loggedSinceCut finds a write to the source after the cutover in the
// tables the cutover verified by keys (their checksums were not taken
// then): a row event for them in the source's log after the cutover's
// position.
func loggedSinceCut(ctx context.Context, job *agent.Job, src *mysql.Server, done *mysql.Stream) error {
	if len(done.CutKeys) == 0 {
		return nil
	}
	now, err := src.BinlogNow(ctx)
	if err != nil {
		return err
	}
	changed, err := src.ChangedTables(ctx, job.Row.DatabaseName, done.CutKeys, done.VerifiedAt, now)
	if errors.Is(err, mysql.ErrLogPurged) {
		job.Note(ctx, "WARNING: cannot look for writes at the source after the cutover in %s (verified by keys, no checksum taken then): %v", strings.Join(done.CutKeys, ", "), err)
		return nil
	}
	if err != nil {
		return err
	}
	for _, t := range done.CutKeys {
		if changed[t] {
			return lateWrites(&job.Row, engine.Permanentf("rows of %s were written at the source after the cutover verified it (row events in its binary log after %s)", t, done.VerifiedAt))
		}
	}
	return nil
}

// Recover has nothing to undo: closing is final and runs again whole.
func (h *mysqlClose) Recover(context.Context, *agent.Job) error { return nil }

// mysqlRollback is the rollback step at the source: restore writes and
// drop the destination's copy (only what the import created).
type mysqlRollback struct{ c *MySQL }

func (h *mysqlRollback) Run(ctx context.Context, job *agent.Job) (statemachine.Fields, error) {
	row := &job.Row
	if err := switchedRefusal(row); err != nil {
		return statemachine.Fields{}, err
	}
	// Writes come back first: that ends the customer's downtime whatever
	// happens at the destination.
	src, err := h.c.local(ctx, job.Log)
	if err != nil {
		return statemachine.Fields{}, err
	}
	defer func() { _ = src.Close() }()
	if err := unblockRecorded(ctx, job, unblockMySQL(src)); err != nil {
		return statemachine.Fields{}, err
	}
	var imp mysql.ImportRecord
	var st mysql.Stream
	if _, err := job.GetRecord(ctx, recordImport, &imp); err != nil {
		return statemachine.Fields{}, err
	}
	if _, err := job.GetRecord(ctx, recordStream, &st); err != nil {
		return statemachine.Fields{}, err
	}
	if imp.Empty() && st.Name == "" {
		return statemachine.Fields{}, nil
	}
	dst, err := h.c.peer(ctx, job, row.Destination)
	if err != nil {
		return statemachine.Fields{}, fmt.Errorf("drop the copy at the destination: %w", err)
	}
	defer func() { _ = dst.Close() }()
	// The stream first: it would write into the copy being dropped.
	if err := h.c.teardown(ctx, job, dst); err != nil {
		return statemachine.Fields{}, err
	}
	return statemachine.Fields{}, dropMySQLImport(ctx, job, dst, "this migration")
}

// Recover has nothing to undo: rolling back runs again whole.
func (h *mysqlRollback) Recover(context.Context, *agent.Job) error { return nil }
