package steps

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/fleetmigrate/fleetmigrate/agent"
	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/mysql"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// MariaDB's side of the online steps (online.go): a copy piped from the
// source's dump tool (one consistent snapshot, its binary log position)
// into the destination, then a stream of our own (engine/mysql's Streamer,
// run by the destination agent's myStreams) that reads the source's binary
// log from that position and applies that database's row events, its
// position recorded at the destination and named after the row.

// mysqlSyncSide is the sync step of one row, its servers open.
type mysqlSyncSide struct {
	m                *mysqlStreams
	h                *host
	job              *agent.Job
	srcConn, dstConn engine.Conn
	src, dst         *mysql.Server
	st               mysql.Stream
}

func (p *mysqlSyncSide) resumable(ctx context.Context) (bool, error) {
	if p.st.Name == "" || p.st.Start.IsZero() {
		return false, nil
	}
	rec, err := p.dst.StreamRecordOf(ctx, p.st.Name)
	if err != nil || !rec.Exists || rec.Error != "" {
		return false, err
	}
	p.m.run.ensure(ctx, p.st.Name)
	return true, nil
}

func (p *mysqlSyncSide) problems(ctx context.Context, s engine.Source) ([]string, []string, error) {
	return mysqlOnlineProblems(ctx, p.src, p.dst, s.(*mysql.Source))
}

// create copies the database from a consistent snapshot and records its
// stream from that snapshot's position (this agent's streams service
// applies it).
func (p *mysqlSyncSide) create(ctx context.Context, is engine.Source, notes []string) (statemachine.Fields, error) {
	job, src, dst, s := p.job, p.src, p.dst, is.(*mysql.Source)
	row := &job.Row
	fp, tables, err := src.SchemaFingerprint(ctx, s.Database)
	if err != nil {
		return statemachine.Fields{}, err
	}
	p.st = mysql.Stream{Name: engine.StreamName(row.ID, s.Database), Database: s.Database, Tables: tables, Fingerprint: fp}
	if err := job.PutRecord(ctx, recordStream, p.st); err != nil {
		return statemachine.Fields{}, err
	}
	job.Note(ctx, "online: copying %q (%s, %d tables) from %s from one consistent snapshot while it takes writes", s.Database, mb(s.SizeBytes), len(tables), row.Source)
	rep := report(ctx, job, p.h.every(), func(b, _, _ int64) string {
		return fmt.Sprintf("syncing: copying: %s of SQL loaded", mb(b))
	})
	started := time.Now()
	pos, copyNotes, err := dst.CopyFrom(ctx, src, s, row.Source, func(rec mysql.ImportRecord) error {
		return job.PutRecord(ctx, recordImport, rec)
	}, &mysql.Progress{Bytes: &rep.bytes})
	rep.Stop()
	if err != nil {
		return statemachine.Fields{}, fmt.Errorf("copy %q to the destination: %w", s.Database, err)
	}
	p.st.Start = pos
	if err := job.PutRecord(ctx, recordStream, p.st); err != nil {
		return statemachine.Fields{}, err
	}
	if err := dst.CreateStreamRecord(ctx, &p.st, src.Address()); err != nil {
		return statemachine.Fields{}, err
	}
	p.m.run.ensure(ctx, p.st.Name)
	f := statemachine.Fields{Mode: statemachine.ModeOnline, SizeBytes: s.SizeBytes}
	if err := job.Record(ctx, f, fmt.Sprintf("online: %q copied (%s of SQL in %s, %d accounts%s) and streaming from %s from %s: stream %s at %s%s",
		s.Database, mb(rep.bytes.Load()), time.Since(started).Round(time.Millisecond), len(s.Accounts), notesSuffix(copyNotes), row.Source, pos, p.st.Name, row.Destination, notesSuffix(notes))); err != nil {
		return statemachine.Fields{}, err
	}
	return f, nil
}

// errSourceLogGone: the stream asked for a binary log position the source
// no longer has (ER_MASTER_FATAL_ERROR_READING_BINLOG).
const errSourceLogGone = 1236

func (p *mysqlSyncSide) state(ctx context.Context) (streamState, error) {
	rec, err := p.dst.StreamRecordOf(ctx, p.st.Name)
	if err != nil {
		return streamState{}, err
	}
	if !rec.Exists {
		return streamState{gone: fmt.Sprintf("stream %s is gone at %s (its record removed by hand?)", p.st.Name, p.job.Row.Destination)}, nil
	}
	files, err := p.src.BinlogFiles(ctx)
	if err != nil {
		return streamState{}, err
	}
	now, err := p.src.BinlogNow(ctx)
	if err != nil {
		return streamState{}, err
	}
	streamer := p.m.run.streamer(p.st.Name)
	running := rec.Error == "" && streamer != nil
	if rec.Error == "" && !running {
		p.m.run.ensure(ctx, p.st.Name)
	}
	// The streamer (it runs in this agent) knows how far it applied; its
	// record is written only every second while the source writes other
	// databases only.
	applied := rec.Applied
	if streamer != nil {
		if r := streamer.Reached(); r.Compare(applied) > 0 {
			applied = r
		}
	}
	s := streamState{applying: running, lag: mysql.LagBytes(applied, now, files), progress: "apply " + applied.String(),
		extra: fmt.Sprintf(", applied up to %s of %s", applied, now), rows: -1, txns: -1}
	if streamer != nil {
		s.rows, s.txns, _ = streamer.Applied()
	}
	switch {
	case rec.ErrNo == errSourceLogGone || rec.Error == "" && mysql.Purged(rec.Applied, files):
		s.gone = fmt.Sprintf("the source %s no longer has the binary log the stream reads (%s: purged or expired)", p.job.Row.Source, rec.Applied)
	case rec.Error != "":
		s.errors++
		s.broken = fmt.Sprintf("the stream stopped at %s of %s: %s", rec.Applied, p.job.Row.Source, rec.Error)
	}
	return s, nil
}

func (p *mysqlSyncSide) schemaChange(ctx context.Context) (string, error) {
	return p.src.SchemaChange(ctx, &p.st)
}

func (p *mysqlSyncSide) verified() bool { return p.st.Verified != nil }

// baseline verifies the tables while the stream runs: the source's
// checksums in one snapshot at position P1; the destination's applier,
// once past P1, paused at P2 while the destination's checksums are taken
// (then it runs on); a table equal at both with no row event between P1
// and P2 is verified as of P2. A table of rowsMin rows or more with an
// integer key that had row events between P1 and P2 is verified by keys
// (rows.go in engine/mysql): the rows the log shows written between P1
// and P2 are read at both sides, and each side's checksum less them must
// agree; they are left pending. The cutover verifies again only the
// tables with row events after P2 (by keys where it can), those with rows
// pending, and those not verified here.
func (p *mysqlSyncSide) baseline(ctx context.Context) error {
	opt := p.h.Online.withDefaults()
	st := &p.st
	start := time.Now()
	snap, err := p.src.OpenSnapshot(ctx)
	if err != nil {
		return err
	}
	defer snap.Close(ctx)
	p1 := snap.Pos
	srcSums, err := snap.Checksums(ctx, st.Database, st.Tables)
	if err != nil {
		return err
	}
	ok, _, err := p.dst.WaitStreamCaughtUp(ctx, p.src, st.Database, st.Name, p1, max(30*time.Second, 10*opt.CutoverTimeout))
	if err != nil {
		return err
	}
	streamer := p.m.run.streamer(st.Name)
	if !ok || streamer == nil {
		p.job.Note(ctx, "verification while streaming skipped: the destination had not applied %s after %s; the cutover verifies every table", p1, time.Since(start).Round(time.Second))
		st.Verified = map[string]engine.TableSum{}
		return p.job.PutRecord(ctx, recordStream, st)
	}
	p2, err := streamer.Pause(ctx)
	if err != nil {
		return err
	}
	paused := true
	resume := func() {
		if paused {
			streamer.Resume()
			paused = false
		}
	}
	defer resume()
	dstSums, err := p.dst.ChecksumsAll(ctx, st.Database, st.Tables)
	if err != nil {
		return err
	}
	changed, err := p.src.ChangedTables(ctx, st.Database, st.Tables, p1, p2)
	if err != nil {
		return err
	}
	dstOf := map[string]engine.TableSum{}
	for _, d := range dstSums {
		dstOf[d.Name] = d
	}
	var written []engine.TableSum
	st.Verified, st.VerifiedAt, st.Pending = map[string]engine.TableSum{}, p2, nil
	var rows int64
	for _, sum := range srcSums {
		switch {
		case changed[sum.Name]:
			written = append(written, sum)
		case sum == dstOf[sum.Name]:
			st.Verified[sum.Name] = sum
			rows += sum.Rows
		}
	}
	equal := len(st.Verified)
	byKeys := p.verifyByKeys(ctx, snap, written, dstOf, p1, p2)
	resume()
	if err := p.job.PutRecord(ctx, recordStream, st); err != nil {
		return err
	}
	p.job.Note(ctx, "verified while streaming: %d of %d tables (%d rows) equal at both servers at %s%s in %s; the cutover checks again only tables written from now on",
		equal, len(st.Tables), rows, p2, byKeys, time.Since(start).Round(time.Millisecond))
	return nil
}

// verifyByKeys verifies by keys the tables written between p1 (the
// source's snapshot) and p2 (the destination, paused), recording them in
// st.Verified and st.Pending; it describes what it did for the note. A
// table it cannot verify so is left to the cutover (read whole).
func (p *mysqlSyncSide) verifyByKeys(ctx context.Context, snap *mysql.Snapshot, written []engine.TableSum, dstOf map[string]engine.TableSum, p1, p2 mysql.BinlogPos) string {
	st := &p.st
	var large []engine.TableSum
	for _, sum := range written {
		if sum.Rows >= rowsMin {
			large = append(large, sum)
		}
	}
	if len(large) == 0 {
		return ""
	}
	keyed, err := p.src.Keyed(ctx, st.Database)
	if err != nil {
		return fmt.Sprintf("; tables written meanwhile not compared by keys (%v)", err)
	}
	want := map[string]mysql.KeyedTable{}
	for _, sum := range large {
		if k, ok := keyed[sum.Name]; ok {
			want[sum.Name] = k
		}
	}
	ck, err := p.src.ChangedKeysBetween(ctx, st.Database, want, p1, p2, keysServerID(st.Name), maxPendingRows)
	if err != nil {
		return fmt.Sprintf("; tables written meanwhile not compared by keys (%v)", err)
	}
	var notes []string
	var n, pending int
	var rows int64
	for _, sum := range large {
		k, ok := want[sum.Name]
		if !ok || ck.Over[sum.Name] {
			continue
		}
		keys := ck.List(sum.Name)
		var sh, dh map[string]int64
		g, gctx := errgroup.WithContext(ctx)
		g.Go(func() (err error) { sh, err = snap.RowHashes(gctx, st.Database, k, keys); return err })
		g.Go(func() (err error) { dh, err = p.dst.RowHashes(gctx, st.Database, k, keys); return err })
		if err := g.Wait(); err != nil {
			notes = append(notes, fmt.Sprintf("%s not compared by keys (%v)", sum.Name, err))
			continue
		}
		if !sumsLessAgree(sum, sh, dstOf[sum.Name], dh) {
			continue // differs beyond the rows written: read whole at the cutover
		}
		if st.Pending == nil {
			st.Pending = map[string][]string{}
		}
		// The rows present at either side stay pending; the cutover
		// compares them with those written after p2.
		var left []string
		for _, key := range keys {
			_, a := sh[key]
			_, b := dh[key]
			if a || b {
				left = append(left, key)
			}
		}
		st.Pending[sum.Name] = left
		st.Verified[sum.Name] = engine.TableSum{Name: sum.Name, Rows: sum.Rows} // no checksum: pending rows
		n++
		pending += len(left)
		rows += sum.Rows
	}
	if n == 0 && len(notes) == 0 {
		return ""
	}
	d := fmt.Sprintf("; %d tables written meanwhile compared by keys (%d rows, %d written between the two reads: compared again at the cutover)", n, rows, pending)
	if len(notes) > 0 {
		d += "; " + strings.Join(notes, "; ")
	}
	return d
}

// sumsLessAgree: a table's checksum at the source less the hashes of some
// of its rows there (sh) equals the destination's less the same rows'
// (dh), and so do the row counts.
func sumsLessAgree(src engine.TableSum, sh map[string]int64, dst engine.TableSum, dh map[string]int64) bool {
	less := func(sum engine.TableSum, h map[string]int64) (int64, *big.Int, bool) {
		v, ok := new(big.Int).SetString(sum.Checksum, 10)
		if !ok {
			return 0, nil, false
		}
		for _, x := range h {
			v.Sub(v, big.NewInt(x))
		}
		return sum.Rows - int64(len(h)), v, true
	}
	sr, sv, ok1 := less(src, sh)
	dr, dv, ok2 := less(dst, dh)
	return ok1 && ok2 && sr == dr && sv.Cmp(dv) == 0
}

// keysServerID is the replica id a stream's key scans read the source
// with: not the stream's own (a second connection with an id makes the
// source drop the first).
func keysServerID(name string) uint32 { return streamServerID(name + "/keys") }

func (p *mysqlSyncSide) cutoverAttempts() int { return p.st.CutoverAttempts }

// onlineProblems runs online mode's preflight on both servers and the
// database: what is missing (nothing changes then) and advice.
func mysqlOnlineProblems(ctx context.Context, src, dst *mysql.Server, s *mysql.Source) (problems, notes []string, err error) {
	sr, err := src.SourceReadiness(ctx)
	if err != nil {
		return nil, nil, err
	}
	dr, err := dst.DestinationReadiness(ctx, src)
	if err != nil {
		return nil, nil, err
	}
	blockers, cost, err := src.OnlineBlockers(ctx, s)
	if err != nil {
		return nil, nil, err
	}
	problems = slices.Concat(sr.Problems, dr.Problems, blockers)
	return problems, slices.Concat(sr.Notes, dr.Notes, cost), nil
}

// mysqlCutoverSide is the cutover of one row, its servers open.
type mysqlCutoverSide struct {
	m        *mysqlStreams
	h        *host
	job      *agent.Job
	src, dst *mysql.Server
	st       mysql.Stream
	s        *mysql.Source
	// scanned: the tables with row events between st.VerifiedAt and
	// scannedTo, read before the block (the block reads only the rest).
	scanned   map[string]bool
	scannedTo mysql.BinlogPos
	// schemaFrom: the schema was checked before the block against the
	// catalogue, as of this position; under the block only the log after
	// it is read for statements about the database. logClean: it had
	// none, so what plan read of the schema still holds (triggers, events).
	schemaFrom mysql.BinlogPos
	logClean   bool
	// triggers and events: the source's trigger count and event names,
	// read before the block.
	triggers int
	events   []string
	// keyed: the tables verified by keys where they were written since
	// (verified while streaming, with rowsMin rows or more or rows
	// pending, and an integer key); keys: the keys the source's log shows
	// written in them between st.VerifiedAt and scannedTo, read before
	// the block (nil keyed: every written table is read whole).
	keyed map[string]mysql.KeyedTable
	keys  *mysql.ChangedKeys
}

func (p *mysqlCutoverSide) ready(ctx context.Context) (string, error) {
	if p.st.Name == "" || p.st.Start.IsZero() {
		return "no stream recorded (removed after an earlier failure): syncing again from the start", nil
	}
	rec, err := p.dst.StreamRecordOf(ctx, p.st.Name)
	if err != nil {
		return "", err
	}
	switch {
	case !rec.Exists:
		return fmt.Sprintf("stream %s is gone at %s: syncing again from the start", p.st.Name, p.job.Row.Destination), nil
	case rec.ErrNo == errSourceLogGone:
		return fmt.Sprintf("the source no longer has the binary log stream %s reads (%s: purged or expired): syncing again from the start", p.st.Name, rec.Applied), nil
	case rec.Error != "":
		return "", agent.Permanentf("the stream stopped applying at %s of %s: %s; the stream and the destination's copy were removed: retry to sync again from the start, or roll back",
			rec.Applied, p.job.Row.Source, rec.Error)
	}
	files, err := p.src.BinlogFiles(ctx)
	if err != nil {
		return "", err
	}
	if mysql.Purged(rec.Applied, files) {
		return fmt.Sprintf("the source no longer has the binary log stream %s reads (%s: purged or expired): syncing again from the start", p.st.Name, rec.Applied), nil
	}
	// The tables written since they were verified, as far as the log goes
	// now: under the block only the rest is read.
	if !p.st.VerifiedAt.IsZero() {
		now, err := p.src.BinlogNow(ctx)
		if err != nil {
			return "", err
		}
		p.scanned, err = p.src.ChangedTables(ctx, p.st.Database, p.st.Tables, p.st.VerifiedAt, now)
		switch {
		case errors.Is(err, mysql.ErrLogPurged):
			// What changed cannot be known: every table is verified.
			p.job.Note(ctx, "%v: the cutover verifies every table", err)
			p.st.Verified, p.st.VerifiedAt = nil, mysql.BinlogPos{}
		case err != nil:
			return "", err
		default:
			p.scannedTo = now
			p.keyed, p.keys = p.keyScan(ctx, now)
		}
	}
	return "", nil
}

// keyScan reads, before the block, the keys written since the tables were
// verified in those the cutover can verify by keys (keyed); nil: none, or
// the log could not be read so (those tables are read whole).
func (p *mysqlCutoverSide) keyScan(ctx context.Context, to mysql.BinlogPos) (map[string]mysql.KeyedTable, *mysql.ChangedKeys) {
	st := &p.st
	keyed, err := p.src.Keyed(ctx, st.Database)
	if err != nil {
		p.job.Log.Info("cannot read the tables' keys: tables written since they were verified are read whole", "err", err)
		return nil, nil
	}
	want := map[string]mysql.KeyedTable{}
	for t, v := range st.Verified {
		if _, pending := st.Pending[t]; v.Rows >= rowsMin || pending {
			if k, ok := keyed[t]; ok {
				want[t] = k
			}
		}
	}
	if len(want) == 0 {
		return nil, nil
	}
	keys, err := p.src.ChangedKeysBetween(ctx, st.Database, want, st.VerifiedAt, to, keysServerID(st.Name), maxChangedRows)
	if err != nil {
		p.job.Log.Info("cannot read the keys written since the tables were verified: they are read whole", "err", err)
		return nil, nil
	}
	return want, keys
}

func (p *mysqlCutoverSide) lag(ctx context.Context) (int64, error) {
	rec, err := p.dst.StreamRecordOf(ctx, p.st.Name)
	if err != nil || !rec.Exists {
		return 0, err
	}
	files, err := p.src.BinlogFiles(ctx)
	if err != nil {
		return 0, err
	}
	now, err := p.src.BinlogNow(ctx)
	if err != nil {
		return 0, err
	}
	lag := mysql.LagBytes(rec.Applied, now, files)
	if lag > settleLag {
		// The record trails the stream on a busy source: behind only by
		// other databases' writes, it has nothing left to apply.
		if w, err := p.src.WritesBetween(ctx, p.st.Database, rec.Applied, now); err == nil && !w {
			return 0, nil
		}
	}
	return lag, nil
}

func (p *mysqlCutoverSide) prepare(ctx context.Context) (engine.Source, error) {
	s, err := p.src.Inspect(ctx, p.job.Row.DatabaseName)
	if err != nil {
		return nil, err
	}
	p.s = s
	// The schema, checked now against the catalogue (six catalogue reads
	// that take 0.2 s on a busy server): the block then reads only the
	// log written since (schemaChange). The position first: a change the
	// catalogue does not show yet is in the log after it.
	from, err := p.src.BinlogNow(ctx)
	if err != nil {
		return nil, err
	}
	change, err := p.src.SchemaChange(ctx, &p.st)
	if err != nil {
		return nil, err
	}
	if change != "" {
		return nil, agent.Permanentf("cutover refused before blocking writes: %s. The stream was removed; retry to sync again from the start, or roll back and plan the database as dump", change)
	}
	p.schemaFrom = from
	// The copy's objects other than triggers and events (which the block
	// creates), checked now: the block's check of the log shows that none
	// changed since.
	man := s.Manifest(p.job.Row.Source, mysql.Position{}, nil)
	if err := p.dst.VerifyObjects(ctx, &man); err != nil {
		return nil, err
	}
	// What the completion needs of the schema, read now too: the source's
	// triggers and events (read again under the block if the log shows a
	// statement about the database since). The copy's events at the
	// destination go now: the cutover creates them from the source's.
	if p.triggers, err = p.src.TriggerCount(ctx, s.Database); err != nil {
		return nil, err
	}
	if p.events, err = p.src.EventNames(ctx, s.Database); err != nil {
		return nil, err
	}
	if err := p.dst.DropEvents(ctx, s.Database); err != nil {
		return nil, err
	}
	return s, nil
}

// schemaChange, under the block, reads the source's log from where the
// schema was checked before the block: without a statement that mentions
// the database there, the schema is what was checked; with one (or a log
// that cannot be read), the catalogue is read again.
func (p *mysqlCutoverSide) schemaChange(ctx context.Context) (string, error) {
	if !p.schemaFrom.IsZero() {
		now, err := p.src.BinlogNow(ctx)
		if err == nil {
			var stmt string
			stmt, err = p.src.StatementSince(ctx, p.st.Database, p.schemaFrom, now)
			if err == nil && stmt == "" {
				p.logClean = true
				return "", nil
			}
		}
		if err != nil {
			p.job.Log.Info("cannot read the source's log since the schema check; reading the catalogue again", "err", err)
		}
	}
	return p.src.SchemaChange(ctx, &p.st)
}

func (p *mysqlCutoverSide) position(ctx context.Context) (string, error) {
	pos, err := p.src.BinlogNow(ctx)
	return pos.String(), err
}

func (p *mysqlCutoverSide) waitApplied(ctx context.Context, pos string, timeout time.Duration) (int64, error) {
	want, err := mysql.ParseBinlogPos(pos)
	if err != nil {
		return 0, err
	}
	ok, rec, err := p.dst.WaitStreamCaughtUp(ctx, p.src, p.st.Database, p.st.Name, want, timeout)
	if err != nil || ok {
		return -1, err
	}
	files, err := p.src.BinlogFiles(ctx)
	if err != nil {
		return 0, err
	}
	return max(1, mysql.LagBytes(rec.Applied, want, files)), nil
}

func (p *mysqlCutoverSide) timedOut(ctx context.Context, lag int64) (int, error) {
	p.st.CutoverAttempts++
	p.st.LastLagBytes = lag
	return p.st.CutoverAttempts, p.job.PutRecord(ctx, recordStream, p.st)
}

// stop removes the stream's record: its streamer applies nothing more (a
// transaction under way rolls back).
func (p *mysqlCutoverSide) stop(ctx context.Context) error {
	return p.dst.RemoveStreamRecord(ctx, p.st.Name)
}

// remove has nothing left to do: the record went with stop, the streamer
// stops by itself.
func (p *mysqlCutoverSide) remove(context.Context) error { return nil }

func (p *mysqlCutoverSide) removeLater() bool { return false }

// verify completes the destination with what the stream does not carry —
// accounts whose password changed during the sync, the triggers and the
// events (created now, the events enabled where they were before the
// block) — and verifies, at both
// servers at once, the tables written since they were verified while
// streaming (row events in the source's log after that point) and those
// not verified then, with the objects and accounts.
func (p *mysqlCutoverSide) verify(ctx context.Context, b engine.Block, pos string) (string, error) {
	st, s, a := &p.st, p.s, b.(*mysql.Access)
	took := startPhases()
	cut, err := mysql.ParseBinlogPos(pos)
	if err != nil {
		return "", err
	}
	altered, err := p.dst.SyncAccounts(ctx, s)
	took.mark("accounts")
	if err != nil {
		return "", err
	}
	if !p.logClean {
		// A statement about the database since plan read them: read again.
		if p.triggers, err = p.src.TriggerCount(ctx, s.Database); err != nil {
			return "", err
		}
		if p.events, err = p.src.EventNames(ctx, s.Database); err != nil {
			return "", err
		}
	}
	if err := p.dst.CopyTriggersCounted(ctx, p.src, s.Database, p.triggers); err != nil {
		return "", err
	}
	took.mark("triggers")
	if err := p.dst.CopyEventsNamed(ctx, p.src, s.Database, p.events, a.Events); err != nil {
		return "", err
	}
	took.mark("events")
	changed := p.scanned
	if !st.VerifiedAt.IsZero() {
		from := p.scannedTo
		if from.IsZero() {
			from = st.VerifiedAt
		}
		more, err := p.src.ChangedTables(ctx, st.Database, st.Tables, from, cut)
		if err != nil {
			return "", err
		}
		changed = mapUnion(changed, more)
	}
	took.mark("changed tables")
	byKeys := p.keysToCompare(ctx, cut)
	var recheck, whole []string
	for _, t := range s.Tables {
		_, verified := st.Verified[t]
		_, pending := st.Pending[t]
		if verified && !changed[t] && !pending {
			continue
		}
		recheck = append(recheck, t)
		if _, ok := byKeys[t]; !ok {
			whole = append(whole, t)
		}
	}
	var compared, keyedTables int
	for _, t := range recheck {
		keys, ok := byKeys[t]
		if !ok {
			continue
		}
		if err := compareByKeys(ctx, p.src, p.dst, s.Database, p.keyed[t], keys); err != nil {
			return "", err
		}
		compared += len(keys)
		keyedTables++
	}
	if keyedTables > 0 {
		took.mark(fmt.Sprintf("%d rows of %d tables compared by keys", compared, keyedTables))
	}
	var srcSums, dstSums []engine.TableSum
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		var err error
		srcSums, err = p.src.ChecksumsAll(gctx, s.Database, whole)
		return err
	})
	g.Go(func() error {
		var err error
		dstSums, err = p.dst.ChecksumsAll(gctx, s.Database, whole)
		return err
	})
	if err := g.Wait(); err != nil {
		return "", err
	}
	took.mark("checksums")
	s.Blocked(a)
	man := s.Manifest(p.job.Row.Source, mysql.Position{}, srcSums)
	if err := p.dst.VerifyCutover(ctx, &man, dstSums); err != nil {
		return "", err
	}
	took.mark("triggers' and events' check")
	if st.Verified == nil {
		st.Verified = map[string]engine.TableSum{}
	}
	for _, t := range srcSums {
		st.Verified[t.Name] = t
		delete(st.Pending, t.Name)
	}
	for _, t := range recheck {
		if _, ok := byKeys[t]; ok {
			delete(st.Verified, t)
			delete(st.Pending, t)
			st.CutKeys = append(st.CutKeys, t)
		}
	}
	st.VerifiedAt = cut
	summary := fmt.Sprintf("triggers and %d events created, %d tables verified now (row counts and checksums at both servers at once), %d unchanged since verified while streaming, %d objects, %d accounts",
		len(s.Events), len(recheck), len(s.Tables)-len(recheck), len(man.Objects), len(man.Users))
	if keyedTables > 0 {
		summary += fmt.Sprintf(", of the tables verified now %d by keys (%d rows written since they were verified, compared at both servers)", keyedTables, compared)
	}
	if len(altered) > 0 {
		summary += fmt.Sprintf(", %d accounts' passwords updated (%s)", len(altered), strings.Join(altered, ", "))
	}
	return summary + " (" + took.String() + ")", nil
}

// keysToCompare returns, by table, the keys the cutover compares of the
// tables it verifies by keys: those pending and those the source's log
// shows written since they were verified (before the block, and now up to
// cut). A table with more than maxChangedRows is left out (read whole).
func (p *mysqlCutoverSide) keysToCompare(ctx context.Context, cut mysql.BinlogPos) map[string][]string {
	st := &p.st
	out := map[string][]string{}
	if len(p.keyed) == 0 || p.keys == nil {
		return out
	}
	more, err := p.src.ChangedKeysBetween(ctx, st.Database, p.keyed, p.scannedTo, cut, keysServerID(st.Name), maxChangedRows)
	if err != nil {
		p.job.Log.Info("cannot read the keys written since the scan before the block: the tables written are read whole", "err", err)
		return out
	}
	for t := range p.keyed {
		if p.keys.Over[t] || more.Over[t] {
			continue
		}
		keys := slices.Concat(st.Pending[t], p.keys.List(t), more.List(t))
		slices.Sort(keys)
		keys = slices.Compact(keys)
		if len(keys) > maxChangedRows {
			continue
		}
		out[t] = keys
	}
	return out
}

// compareByKeys compares table's rows whose keys are keys at both servers
// at once (writes blocked, the destination caught up).
func compareByKeys(ctx context.Context, src, dst *mysql.Server, database string, table mysql.KeyedTable, keys []string) error {
	var sh, dh map[string]int64
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) { sh, err = src.RowHashes(gctx, database, table, keys); return err })
	g.Go(func() (err error) { dh, err = dst.RowHashes(gctx, database, table, keys); return err })
	if err := g.Wait(); err != nil {
		return err
	}
	if bad := keyedDiffs(keys, sh, dh); len(bad) > 0 {
		return engine.Permanentf("verification of table %s of %q failed (%d of %d rows written since it was verified while streaming): %s: %s",
			table.Table, database, len(bad), len(keys), shortList(bad, 5), rowsMismatchAdvice)
	}
	return nil
}

func mapUnion(a, b map[string]bool) map[string]bool {
	out := map[string]bool{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = out[k] || v
	}
	return out
}

func (p *mysqlCutoverSide) finish(ctx context.Context) error {
	return p.job.PutRecord(ctx, recordStream, mysql.Stream{Verified: p.st.Verified, VerifiedAt: p.st.VerifiedAt, CutKeys: p.st.CutKeys})
}
