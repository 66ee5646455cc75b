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
	"github.com/fleetmigrate/fleetmigrate/engine/postgres"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/storage"
)

// Postgres runs the PostgreSQL steps of one host: the same steps, records
// and guarantees as MySQL, with engine/postgres.
type Postgres struct {
	// Host is this agent's host ID.
	Host string
	// Server is how this agent reaches its local cluster as a superuser.
	// Peers are reached at the address their agent publishes, with the
	// same role.
	Server  engine.Server
	Options postgres.Options
	// Store holds the dumps; Level is their zstd level.
	Store storage.Store
	Level zstd.EncoderLevel
	// ProgressEvery is how often a running dump or import reports
	// (default 5 s).
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
}

// Register adds the sync, cutover, dump, import, close and rollback
// handlers for rows of engine postgres, and the stream slots' collector.
func (c *Postgres) Register(a *agent.Agent) {
	if c.Options.Pools == nil {
		c.Options.Pools = new(postgres.Pools)
	}
	a.Handle(statemachine.RoleSync, statemachine.EnginePostgres, c.watch(&pgSync{c}))
	a.Handle(statemachine.RoleCutover, statemachine.EnginePostgres, c.watch(&pgCutover{c}))
	a.MustRegister(c.Collector())
	c.Online.gauges = newStreamGauges(string(statemachine.EnginePostgres))
	a.MustRegister(c.Online.gauges)
	a.Handle(statemachine.RoleDump, statemachine.EnginePostgres, c.watch(&pgDump{c}))
	a.Handle(statemachine.RoleImport, statemachine.EnginePostgres, c.watch(&pgImport{c}))
	a.Handle(statemachine.RoleClose, statemachine.EnginePostgres, c.watch(&pgClose{c}))
	a.Handle(statemachine.RoleRollback, statemachine.EnginePostgres, c.watch(&pgRollback{c}))
}

// watch puts a handler under the hang watchdog of this host's server.
func (c *Postgres) watch(h agent.Handler) agent.Handler {
	srv := c.Server
	srv.Host = c.Host
	return watch(h, srv.String(), c.HangTimeout, func(ctx context.Context) error { return postgres.Probe(ctx, srv, c.Options) })
}

func (c *Postgres) local(ctx context.Context, log *slog.Logger) (*postgres.Server, error) {
	opt := c.Options
	if log != nil {
		opt.Log = log
	}
	srv := c.Server
	srv.Host = c.Host
	s, err := postgres.Open(ctx, srv, opt)
	if err != nil {
		return nil, permanent(err)
	}
	return s, nil
}

// peer connects to the cluster of another host, at the address its agent
// publishes.
func (c *Postgres) peer(ctx context.Context, job *agent.Job, host string) (*postgres.Server, error) {
	srv, err := c.peerServer(ctx, job, host)
	if err != nil {
		return nil, err
	}
	opt := c.Options
	opt.Log = job.Log
	s, err := postgres.Open(ctx, srv, opt)
	if err != nil {
		return nil, permanent(fmt.Errorf("reach the %s server of %s: %w", statemachine.EnginePostgres, host, err))
	}
	return s, nil
}

// peerServer is how this agent reaches the cluster of another host.
func (c *Postgres) peerServer(ctx context.Context, job *agent.Job, host string) (engine.Server, error) {
	addr, err := job.Endpoint(ctx, host, statemachine.EnginePostgres)
	if err != nil {
		return engine.Server{}, err
	}
	return engine.Server{Host: host, Address: addr, User: c.Server.User, Password: c.Server.Password}, nil
}

func (c *Postgres) every() time.Duration {
	if c.ProgressEvery > 0 {
		return c.ProgressEvery
	}
	return 5 * time.Second
}

// pgDump is the dump step, run at the destination: check both sides,
// block writes at the source, dump from there into the store and import
// the same bytes here as they come (pull.go), verify. Any failure drops
// what the import created and restores writes before the row fails or is
// retried.
type pgDump struct{ c *Postgres }

func (h *pgDump) Run(ctx context.Context, job *agent.Job) (f statemachine.Fields, err error) {
	row := &job.Row
	srv, err := h.c.peerServer(ctx, job, row.Source)
	if err != nil {
		return statemachine.Fields{}, err
	}
	ctx, stop := watchSource(ctx, job, srv.String(), h.c.HangTimeout, func(ctx context.Context) error { return postgres.Probe(ctx, srv, h.c.Options) })
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
	if err := unblockRecorded(ctx, job, src.Unblock); err != nil {
		return statemachine.Fields{}, err
	}
	if err := dropPostgresImport(ctx, job, dst, "an earlier attempt"); err != nil {
		return statemachine.Fields{}, err
	}
	s, err := src.Inspect(ctx, row.DatabaseName)
	if err != nil {
		return statemachine.Fields{}, permanent(err)
	}
	d, err := dst.CheckDestination(ctx, postgres.IncomingFromSource(s, src.Major()))
	if err != nil {
		return statemachine.Fields{}, permanent(err)
	}
	if _, err := src.ChooseChecksum(ctx, s, dst); err != nil {
		return statemachine.Fields{}, err
	}
	checked := fmt.Sprintf("destination %s PostgreSQL %s ready%s", row.Destination, dst.Version(), notesSuffix(d.Notes))
	access, err := src.PlanBlock(ctx, s)
	if err != nil {
		return statemachine.Fields{}, permanent(err)
	}
	rec := blockRecord[postgres.Access]{Blocked: true, Access: access}
	if err := job.PutRecord(ctx, recordBlock, rec); err != nil {
		return statemachine.Fields{}, err
	}
	detail := fmt.Sprintf("blocking writes to %q at %s (PostgreSQL %s, %d tables, %s; %s lose CONNECT, owner %q replaced by %q%s); %s",
		s.Database, row.Source, src.Version(), len(s.Tables), mb(s.SizeBytes), describeRevoked(access.Revoked()), access.Owner, access.Admin, warningsSuffix(access.Warnings), checked)
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
		if derr := dropPostgresImport(uctx, job, dst, "this attempt"); derr != nil {
			job.Log.Error("the import beside the failed dump was NOT dropped: the next attempt, a rollback or recovery drops it", "err", derr)
			err = errors.Join(err, derr)
		}
		if uerr := unblock(uctx, job, src.Unblock, rec); uerr != nil {
			job.Log.Error("writes NOT restored after the dump failed: the next attempt, a rollback or recovery restores them", "err", uerr)
			err = errors.Join(err, uerr)
		}
		return statemachine.Fields{}, permanent(err)
	}
	return f, nil
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

// blocked blocks writes and dumps from an exported snapshot into the
// store and, when dst is not nil, into an import at dst beside it, then
// verifies that import (Fields.Divert: on to the DNS step). An import that
// fails beside a stored dump is dropped and the row goes to the import
// step, which takes the dump from the store.
func (h *pgDump) blocked(ctx context.Context, job *agent.Job, src *postgres.Server, s *postgres.Source, access *postgres.Access, dst *postgres.Server) (statemachine.Fields, error) {
	ended, err := src.Block(ctx, access)
	if err != nil {
		return statemachine.Fields{}, err
	}
	job.Note(ctx, "writes blocked; %d sessions ended", ended)
	snap, err := src.Snapshot(ctx, s.Database)
	if err != nil {
		return statemachine.Fields{}, err
	}
	defer snap.Close(ctx)
	ref := storage.DumpRef{Engine: string(statemachine.EnginePostgres), Source: job.Row.Source, Database: s.Database, ConsistencyPoint: snap.At}
	key := ref.DumpKey("pgdump")
	rep := report(ctx, job, h.c.every(), func(b, done, total int64) string {
		return fmt.Sprintf("dumping: %s written, checksums of %d/%d tables", mb(b), done, total)
	})
	var side importSide
	var imported importProgress
	if dst != nil {
		pre, err := src.PullManifest(ctx, s, snap, job.Row.Source)
		if err != nil {
			rep.Stop()
			return statemachine.Fields{}, err
		}
		side = startPipeSide(func(r io.Reader) error {
			notes, err := dst.ImportStreamed(ctx, pre, s.Secrets, r, func(rec postgres.ImportRecord) error {
				return job.PutRecord(ctx, recordImport, rec)
			}, &engine.Progress{Bytes: &imported.bytes})
			imported.notes = notes
			return err
		})
	}
	var sec engine.Secrets
	res, man, importErr, err := dumpBeside(ctx, h.c.Store, key, h.c.Level, side, func(w io.Writer) (*engine.Manifest, error) {
		var man *engine.Manifest
		var err error
		man, sec, _, err = src.Dump(ctx, s, snap, job.Row.Source, w, &engine.Progress{Bytes: &rep.bytes, Tables: rep.tables})
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
	job.Note(ctx, "dumped %q at LSN %s: %s of pg_dump archive, %s stored, %d tables checksummed, %d sequences, %d roles",
		s.Database, snap.LSN, mb(rep.bytes.Load()), mb(res.Size), len(man.Tables), len(man.Sequences), len(man.Users))
	f := statemachine.Fields{
		SizeBytes:        s.SizeBytes,
		DumpURL:          h.c.Store.URL(key),
		DumpSHA256:       res.SHA256,
		DumpBytes:        res.Size,
		ConsistencyPoint: snap.At,
	}
	if dst == nil {
		return f, nil
	}
	if importErr == nil {
		job.Note(ctx, "imported %q beside the dump: %s of pg_dump archive%s; verifying %d tables", man.Database, mb(imported.bytes.Load()), notesSuffix(imported.notes), len(man.Tables))
	}
	return importedBeside(ctx, job, h.c.every(), f, importErr, func(tables func(int, int)) error { return dst.Verify(ctx, man, tables) },
		fmt.Sprintf("verified %q: %d tables, row counts and checksums (%s) match the source's, %d sequences, %d objects, %d roles",
			man.Database, len(man.Tables), man.ChecksumAlgorithm, len(man.Sequences), len(man.Objects), len(man.Users)),
		func(ctx context.Context) error {
			return dropPostgresImport(ctx, job, dst, "the import beside the dump")
		})
}

// Recover undoes what the dead run left: the block at the source (writes
// restored) and the import beside the dump (dropped), each whether or not
// the other's server answers.
func (h *pgDump) Recover(ctx context.Context, job *agent.Job) error {
	return errors.Join(h.restoreWrites(ctx, job), dropLocalPostgresImport(ctx, h.c, job, "an interrupted attempt"))
}

// Abandon undoes what the last attempt could not (abandonDump).
func (h *pgDump) Abandon(ctx context.Context, job *agent.Job) error {
	return abandonDump(ctx, job, func(ctx context.Context) error { return h.restoreWrites(ctx, job) },
		func(ctx context.Context) error { return dropLocalPostgresImport(ctx, h.c, job, "the last attempt") })
}

func (h *pgDump) restoreWrites(ctx context.Context, job *agent.Job) error {
	return recoverBlock(ctx, job, func(ctx context.Context) (unblockFunc[postgres.Access], func(), error) {
		src, err := h.c.peer(ctx, job, job.Row.Source)
		if err != nil {
			return nil, nil, err
		}
		return src.Unblock, func() { _ = src.Close() }, nil
	})
}

// pgImport is the import step at the destination: drop what an earlier
// attempt left, import (recording what it creates first), verify against
// the manifest; on any failure drop what this attempt created.
type pgImport struct{ c *Postgres }

func (h *pgImport) Run(ctx context.Context, job *agent.Job) (statemachine.Fields, error) {
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
	if err := dropPostgresImport(ctx, job, dst, "an earlier attempt"); err != nil {
		return statemachine.Fields{}, err
	}
	if err := h.load(ctx, job, dst, objs, man, sec); err != nil {
		uctx, cancel := undoContext(ctx)
		defer cancel()
		if derr := dropPostgresImport(uctx, job, dst, "this attempt"); derr != nil {
			job.Log.Error("the failed import was NOT dropped: the next attempt, a rollback or recovery drops it", "err", derr)
			err = errors.Join(err, derr)
		}
		return statemachine.Fields{}, permanent(err)
	}
	return statemachine.Fields{}, nil
}

func (h *pgImport) load(ctx context.Context, job *agent.Job, dst *postgres.Server, objs dumpObjects, man *engine.Manifest, sec engine.Secrets) error {
	r, err := storage.OpenDump(ctx, h.c.Store, objs.Dump, job.Row.DumpSHA256)
	if err != nil {
		return fmt.Errorf("open the dump: %w", err)
	}
	defer r.Close()
	rep := report(ctx, job, h.c.every(), func(b, done, total int64) string {
		if total > 0 {
			return fmt.Sprintf("verifying: %d/%d tables", done, total)
		}
		return fmt.Sprintf("importing: %s of the archive restored", mb(b))
	})
	defer rep.Stop()
	notes, err := dst.Import(ctx, man, sec, r, func(rec postgres.ImportRecord) error {
		return job.PutRecord(ctx, recordImport, rec)
	}, &engine.Progress{Bytes: &rep.bytes})
	if err != nil {
		return corruptOr(ctx, h.c.Store, objs, job.Row.DumpSHA256, man.Database, err)
	}
	job.CountBytes("in", job.Row.DumpBytes)
	job.Note(ctx, "imported %q: %s of pg_dump archive%s; verifying %d tables", man.Database, mb(rep.bytes.Load()), notesSuffix(notes), len(man.Tables))
	if err := dst.Verify(ctx, man, rep.tables); err != nil {
		return err
	}
	job.Note(ctx, "verified %q: %d tables, row counts and checksums (%s) match the source's, %d sequences, %d objects, %d roles",
		man.Database, len(man.Tables), man.ChecksumAlgorithm, len(man.Sequences), len(man.Objects), len(man.Users))
	return nil
}

// dropPostgresImport drops what the row's import record says an import
// created on dst, then clears the record.
func dropPostgresImport(ctx context.Context, job *agent.Job, dst *postgres.Server, whose string) error {
	return dropRecordedImport(ctx, job, dst, dst.DropImport, describePostgresImport, whose)
}

func describePostgresImport(rec postgres.ImportRecord) string {
	var parts []string
	switch {
	case rec.Database != "" && rec.CreatedDatabase:
		parts = append(parts, fmt.Sprintf("database %q dropped", rec.Database))
	case rec.Database != "":
		parts = append(parts, fmt.Sprintf("database %q made empty again (it existed before)", rec.Database))
	}
	if len(rec.CreatedRoles) > 0 {
		parts = append(parts, fmt.Sprintf("%d roles it created removed", len(rec.CreatedRoles)))
	}
	return strings.Join(parts, ", ")
}

// Recover drops the partial import of the dead run.
func (h *pgImport) Recover(ctx context.Context, job *agent.Job) error {
	return dropLocalPostgresImport(ctx, h.c, job, "an interrupted attempt")
}

// Abandon drops what the last attempt could not when the row fails after
// its attempts were used up, waiting for the server within the undo window.
func (h *pgImport) Abandon(ctx context.Context, job *agent.Job) error {
	return undoPatiently(ctx, job, "drop the failed import", func(ctx context.Context) error {
		return dropLocalPostgresImport(ctx, h.c, job, "the last attempt")
	})
}

// dropLocalPostgresImport drops what the row's import record says an
// import created at this host's server.
func dropLocalPostgresImport(ctx context.Context, c *Postgres, job *agent.Job, whose string) error {
	dst, err := c.local(ctx, job.Log)
	if err != nil {
		return err
	}
	defer func() { _ = dst.Close() }()
	return dropPostgresImport(ctx, job, dst, whose)
}

// pgClose is the close step at the source, after DNS moved: re-check the
// source against the manifest, then keep every role out of it for good
// and end their sessions. The data stays.
type pgClose struct{ c *Postgres }

func (h *pgClose) Run(ctx context.Context, job *agent.Job) (statemachine.Fields, error) {
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
	if dumped.DumpURL == "" { // a dump just taken under the block needs no re-check
		rep := report(ctx, job, h.c.every(), func(_, done, total int64) string {
			return fmt.Sprintf("re-checking the source: %d/%d tables", done, total)
		})
		err := recheck(ctx, job, man, h.c.FullRecheck, src.Verify, src.VerifySince, rep.tables)
		rep.Stop()
		if err != nil {
			return statemachine.Fields{}, err
		}
	}
	access, err := src.PlanClose(ctx, man)
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
	// The block is final now: nothing may restore it.
	if err := job.PutRecord(ctx, recordBlock, blockRecord[postgres.Access]{Access: access}); err != nil {
		return statemachine.Fields{}, err
	}
	job.Note(ctx, "source closed: %s have no access to %q, owned by %q now (it was %q's), %d sessions ended; the data stays until the retention ends",
		describeRevoked(access.Revoked()), row.DatabaseName, access.Admin, access.Owner, ended)
	return dumped, nil
}

// online closes the stream of an online row (if anything of it is left)
// and takes the customer's consistency-point dump of the frozen source
// into the store, as the dump step of dump mode does: the row's dump_url
// and download links then work the same.
func (h *pgClose) online(ctx context.Context, job *agent.Job, src *postgres.Server) (statemachine.Fields, error) {
	var st postgres.Stream
	if _, err := job.GetRecord(ctx, recordStream, &st); err != nil {
		return statemachine.Fields{}, err
	}
	if st.Name != "" {
		dst, err := h.c.peer(ctx, job, job.Row.Destination)
		if err != nil {
			return statemachine.Fields{}, fmt.Errorf("remove the stream at the destination: %w", err)
		}
		err = h.c.teardown(ctx, job, src, dst)
		_ = dst.Close()
		if err != nil {
			return statemachine.Fields{}, err
		}
	}
	access, err := cutoverBlock[postgres.Access](ctx, job)
	if err != nil {
		return statemachine.Fields{}, err
	}
	s, err := src.Inspect(ctx, job.Row.DatabaseName)
	if err != nil {
		return statemachine.Fields{}, permanent(err)
	}
	// Blocked, the database is the administrator's: the dump describes it
	// as it was before (its owner and privileges come with the customer).
	s.DB.Owner, s.DB.ACL, s.DB.DefaultACL = access.Owner, access.ACL, access.DefaultACL
	f, err := (&pgDump{h.c}).blocked(ctx, job, src, s, access, nil)
	if err != nil {
		return f, err
	}
	var done postgres.Stream
	if _, err := job.GetRecord(ctx, recordStream, &done); err != nil {
		return f, err
	}
	var verified []engine.TableSum
	for name, v := range done.Verified {
		verified = append(verified, engine.TableSum{Name: name, Rows: v.Rows, Checksum: v.Checksum})
	}
	skip := []string{"large objects"}
	for name := range done.CutRows {
		skip = append(skip, name)
	}
	if err := verifiedAgainstDump(ctx, job, h.c.Store, f, verified, skip...); err != nil {
		return f, err
	}
	return f, writtenSinceCut(ctx, job, src, done.CutRows)
}

// writtenSinceCut finds a write to the source after the cutover in the
// tables the cutover verified by rows (their checksums were not taken
// then): a row written after the cutover's snapshot, or a row count that
// moved (a delete).
func writtenSinceCut(ctx context.Context, job *agent.Job, src *postgres.Server, cut map[string]postgres.RowCut) error {
	for table, c := range cut {
		rows, _, none, err := src.ChangedRows(ctx, job.Row.DatabaseName, table, c.Snapshot, 0)
		if err != nil {
			return err
		}
		switch {
		case !none:
			return lateWrites(&job.Row, engine.Permanentf("rows of %s were written at the source after the cutover verified it", table))
		case rows != c.Rows:
			return lateWrites(&job.Row, engine.Permanentf("%s has %d rows at the source, %d when the cutover verified it", table, rows, c.Rows))
		}
	}
	return nil
}

// Recover has nothing to undo: closing is final and runs again whole.
func (h *pgClose) Recover(context.Context, *agent.Job) error { return nil }

// pgRollback is the rollback step at the source: restore writes and drop
// the destination's copy (only what the import created).
type pgRollback struct{ c *Postgres }

func (h *pgRollback) Run(ctx context.Context, job *agent.Job) (statemachine.Fields, error) {
	row := &job.Row
	if err := switchedRefusal(row); err != nil {
		return statemachine.Fields{}, err
	}
	src, err := h.c.local(ctx, job.Log)
	if err != nil {
		return statemachine.Fields{}, err
	}
	defer func() { _ = src.Close() }()
	if err := unblockRecorded(ctx, job, src.Unblock); err != nil {
		return statemachine.Fields{}, err
	}
	var imp postgres.ImportRecord
	var st postgres.Stream
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
	// The stream first: a database with a subscription cannot be dropped.
	if err := h.c.teardown(ctx, job, src, dst); err != nil {
		return statemachine.Fields{}, err
	}
	return statemachine.Fields{}, dropPostgresImport(ctx, job, dst, "this migration")
}

// Recover has nothing to undo: rolling back runs again whole.
func (h *pgRollback) Recover(context.Context, *agent.Job) error { return nil }
