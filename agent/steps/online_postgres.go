package steps

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/fleetmigrate/fleetmigrate/agent"
	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/postgres"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// PostgreSQL's side of the online steps (online.go): native logical
// replication — an explicit-table publication and a slot at the source, a
// subscription at the destination, all named after the row.

// pgSyncSide is the sync step of one row, its servers open.
type pgSyncSide struct {
	p                *pgStreams
	h                *host
	job              *agent.Job
	srcConn, dstConn engine.Conn
	src, dst         *postgres.Server
	st               postgres.Stream
}

func (p *pgSyncSide) resumable(ctx context.Context) (bool, error) {
	if p.st.Name == "" {
		return false, nil
	}
	sub, err := p.dst.SubscriptionOf(ctx, p.st.Database, p.st.Name)
	return sub.Exists && sub.Enabled, err
}

func (p *pgSyncSide) problems(ctx context.Context, s engine.Source) ([]string, []string, error) {
	return pgOnlineProblems(ctx, p.src, p.dst, s.(*postgres.Source))
}

func (p *pgSyncSide) state(ctx context.Context) (streamState, error) {
	sub, err := p.dst.SubscriptionOf(ctx, p.st.Database, p.st.Name)
	if err != nil {
		return streamState{}, err
	}
	slot, found, err := p.src.SlotOf(ctx, p.st.Name)
	if err != nil {
		return streamState{}, err
	}
	s := streamState{applying: sub.Worker != 0, lag: slot.LagBytes, errors: sub.Errors, extra: ", WAL retained " + mb(slot.Retained), progress: progressOf(sub, slot), rows: -1, txns: -1}
	switch {
	case !sub.Exists:
		s.gone = fmt.Sprintf("subscription %s is gone at %s (lost in a crash, or dropped by hand)", p.st.Name, p.job.Row.Destination)
	case !found:
		s.gone = fmt.Sprintf("replication slot %s is gone at %s (dropped by hand, or invalidated when WAL it needed was removed under max_slot_wal_keep_size)", p.st.Name, p.job.Row.Source)
	case sub.Tables > sub.Ready:
		s.copying = fmt.Sprintf("initial copy: %d of %d tables done (%s), %d rows into the tables copying now", sub.Ready, sub.Tables, sub.States, sub.Copied)
	}
	return s, nil
}

func (p *pgSyncSide) schemaChange(ctx context.Context) (string, error) {
	return p.src.SchemaChange(ctx, &p.st)
}

func (p *pgSyncSide) verified() bool { return p.st.Verified != nil }

func (p *pgSyncSide) baseline(ctx context.Context) error {
	return p.baseline1(ctx, p.job, p.src, p.dst, &p.st)
}

func (p *pgSyncSide) cutoverAttempts() int { return p.st.CutoverAttempts }

// progressOf is what a stream that is not ready yet has done: while tables
// copy, their states and the rows the running copies wrote; after, the
// position the destination confirmed. A stream whose progress stays the
// same for Online.StallTimeout is stuck (a copy that fails again and
// again, an apply blocked at the destination).
func progressOf(sub postgres.Subscription, slot postgres.Slot) string {
	if sub.Tables > sub.Ready {
		return fmt.Sprintf("copy %s %d", sub.States, sub.Copied)
	}
	return "apply " + slot.Confirmed
}

// create prepares the destination (the schema and the roles) and creates
// the stream: the publication and its slot at the source, the
// subscription at the destination, which copies the rows.
func (p *pgSyncSide) create(ctx context.Context, is engine.Source, notes []string) (statemachine.Fields, error) {
	job, src, dst, s, st := p.job, p.src, p.dst, is.(*postgres.Source), &p.st
	row := &job.Row
	*st = postgres.Stream{Name: engine.StreamName(row.ID, s.Database), Database: s.Database}
	if err := job.PutRecord(ctx, recordStream, st); err != nil {
		return statemachine.Fields{}, err
	}
	// The source's agent publishes (the tables' owner may; the read-only
	// peer role this agent reads the source with may not).
	if err := p.p.askPublish(ctx, job, st); err != nil {
		return statemachine.Fields{}, err
	}
	if err := job.PutRecord(ctx, recordStream, st); err != nil {
		return statemachine.Fields{}, err
	}
	var schema bytes.Buffer
	man, sec, err := src.DumpSchema(ctx, s, row.Source, &schema)
	if err != nil {
		return statemachine.Fields{}, err
	}
	importNotes, err := dst.Import(ctx, man, sec, &schema, func(rec postgres.ImportRecord) error {
		return job.PutRecord(ctx, recordImport, rec)
	}, &engine.Progress{})
	if err != nil {
		return statemachine.Fields{}, fmt.Errorf("prepare %q at the destination: %w", s.Database, err)
	}
	// The schema carries our own publication (created just before it was
	// dumped): it is not the customer's.
	if err := dst.DropPublication(ctx, s.Database, st.Name); err != nil {
		return statemachine.Fields{}, err
	}
	if err := dst.Subscribe(ctx, src, st); err != nil {
		return statemachine.Fields{}, err
	}
	f := statemachine.Fields{Mode: statemachine.ModeOnline, SizeBytes: s.SizeBytes}
	if err := job.Record(ctx, f, fmt.Sprintf("online: %q (%s, %d tables) prepared at the destination (%d roles, schema%s) and streaming from %s: publication, slot and subscription %s%s",
		s.Database, mb(s.SizeBytes), len(st.Tables), len(man.Users), notesSuffix(importNotes), row.Source, st.Name, notesSuffix(notes))); err != nil {
		return statemachine.Fields{}, err
	}
	return f, nil
}

// onlineProblems runs online mode's preflight on both servers and the
// database: what is missing (nothing changes then) and advice.
func pgOnlineProblems(ctx context.Context, src, dst *postgres.Server, s *postgres.Source) (problems, notes []string, err error) {
	sr, err := src.SourceReadiness(ctx)
	if err != nil {
		return nil, nil, err
	}
	dr, err := dst.DestinationReadiness(ctx)
	if err != nil {
		return nil, nil, err
	}
	blockers, err := src.OnlineBlockers(ctx, s)
	if err != nil {
		return nil, nil, err
	}
	problems = append(append(append(problems, sr.Problems...), dr.Problems...), blockers...)
	return problems, append(sr.Notes, dr.Notes...), nil
}

// baseline verifies the tables while the stream runs, so that the cutover
// re-reads only the tables that change from then on: the source's change
// counters, its checksums, then (once the destination has applied past
// them) the destination's checksums, then the counters again. A table
// equal at both with counters that did not move is recorded as verified
// with the first counters: any later change moves them (the block ends
// the sessions, which flushes their counts), and the cutover checks it
// again under the block. A table that changed meanwhile is not recorded
// and is checked under the block.
func (p *pgSyncSide) baseline1(ctx context.Context, job *agent.Job, src, dst *postgres.Server, st *postgres.Stream) error {
	opt := p.h.Online.withDefaults()
	start := time.Now()
	before, err := src.TableCounters(ctx, st.Database)
	if err != nil {
		return err
	}
	srcSums, err := src.Checksums(ctx, st.Database, st.Tables, nil)
	if err != nil {
		return err
	}
	pos, err := src.Position(ctx, st.Database)
	if err != nil {
		return err
	}
	lag, err := waitApplied(ctx, src, dst, st, pos, max(30*time.Second, 10*opt.CutoverTimeout))
	if err != nil {
		return err
	}
	if lag >= 0 {
		job.Note(ctx, "verification while streaming skipped: the destination was still %s behind after %s; the cutover verifies every table", mb(lag), time.Since(start).Round(time.Second))
		st.Verified = map[string]postgres.Verified{}
		return job.PutRecord(ctx, recordStream, st)
	}
	dstSums, err := dst.Checksums(ctx, st.Database, st.Tables, nil)
	if err != nil {
		return err
	}
	after, err := src.TableCounters(ctx, st.Database)
	if err != nil {
		return err
	}
	st.Verified = map[string]postgres.Verified{}
	var bytesRows int64
	var written []string
	for i, t := range st.Tables {
		if srcSums[i] == dstSums[i] && before[t] != "" && before[t] == after[t] {
			st.Verified[t] = postgres.Verified{Rows: srcSums[i].Rows, Checksum: srcSums[i].Checksum, Counters: before[t]}
			bytesRows += srcSums[i].Rows
		} else if srcSums[i].Rows >= rowsMin {
			written = append(written, t)
		}
	}
	byRows := p.compareRows(ctx, job, src, dst, st, written)
	if err := job.PutRecord(ctx, recordStream, st); err != nil {
		return err
	}
	job.Note(ctx, "verified while streaming: %d of %d tables (%d rows) equal at both servers%s in %s; the cutover checks again only tables that change from now on",
		len(st.Verified), len(st.Tables), bytesRows, byRows, time.Since(start).Round(time.Millisecond))
	return nil
}

// rowsMin is the row count from which a table written while it was
// verified is compared by rows (rows.go in engine/postgres): smaller ones
// are read whole at the cutover, as quickly. maxPendingRows and
// maxChangedRows bound the rows compared again under the block (more: the
// table is read whole).
const (
	rowsMin        = 10_000
	maxPendingRows = 10_000
	maxChangedRows = 50_000
)

// compareRows compares by rows the tables written while they were
// verified (a table the customer writes all the time is never unchanged
// between two reads), recording them in st.ByRows; it describes what it
// did for the note. A table it cannot compare so is verified whole at the
// cutover, as before.
func (p *pgSyncSide) compareRows(ctx context.Context, job *agent.Job, src, dst *postgres.Server, st *postgres.Stream, tables []string) string {
	opt := p.h.Online.withDefaults()
	var rows int64
	var pending int
	var notes []string
	for _, t := range tables {
		wait := func(ctx context.Context) error {
			pos, err := src.Position(ctx, st.Database)
			if err != nil {
				return err
			}
			lag, err := waitApplied(ctx, src, dst, st, pos, max(30*time.Second, 10*opt.CutoverTimeout))
			if err == nil && lag >= 0 {
				err = fmt.Errorf("the destination was still %s behind", mb(lag))
			}
			return err
		}
		base, ok, err := postgres.CompareRows(ctx, src, dst, st.Database, t, wait, maxPendingRows)
		switch {
		case ctx.Err() != nil:
			return ""
		case errors.Is(err, postgres.ErrNoKey):
			continue
		case err != nil:
			notes = append(notes, fmt.Sprintf("%s not compared by rows (%v)", t, err))
			continue
		case !ok:
			notes = append(notes, fmt.Sprintf("%s not compared by rows (more than %d rows differed)", t, maxPendingRows))
			continue
		}
		if st.ByRows == nil {
			st.ByRows = map[string]postgres.RowBase{}
		}
		st.ByRows[t] = base
		rows += base.Rows
		pending += len(base.Pending)
	}
	if len(st.ByRows) == 0 && len(notes) == 0 {
		return ""
	}
	d := fmt.Sprintf("; %d tables written meanwhile compared by rows (%d rows, %d written between the two reads: compared again at the cutover)", len(st.ByRows), rows, pending)
	if len(notes) > 0 {
		d += "; " + strings.Join(notes, "; ")
	}
	return d
}

// pgCutoverSide is the cutover of one row, its servers open.
type pgCutoverSide struct {
	p        *pgStreams
	job      *agent.Job
	src, dst *postgres.Server
	st       postgres.Stream
	s        *postgres.Source
}

func (p *pgCutoverSide) ready(ctx context.Context) (string, error) {
	if p.st.Name == "" {
		return "no stream recorded (removed after an earlier failure): syncing again from the start", nil
	}
	sub, err := p.dst.SubscriptionOf(ctx, p.st.Database, p.st.Name)
	if err != nil {
		return "", err
	}
	if !sub.Exists {
		return fmt.Sprintf("subscription %s is gone at %s: syncing again from the start", p.st.Name, p.job.Row.Destination), nil
	}
	if !sub.Enabled { // an interrupted cutover stopped it
		if err := p.dst.EnableSubscription(ctx, p.st.Database, p.st.Name); err != nil {
			return "", err
		}
		return "the stream was stopped by an interrupted cutover and is running again", nil
	}
	return "", nil
}

// lag is 0: a PostgreSQL stream's catch-up under the block is short
// already (p95 41–78 ms at 40 in flight), and its slot's confirmed
// position, which a lag would be read from, moves only when the subscriber
// reports (every few seconds for a quiet database on a busy cluster).
func (p *pgCutoverSide) lag(context.Context) (int64, error) { return 0, nil }

func (p *pgCutoverSide) prepare(ctx context.Context) (engine.Source, error) {
	s, err := p.src.Inspect(ctx, p.job.Row.DatabaseName)
	if err != nil {
		return nil, err
	}
	p.s = s
	// A schema that changed since the stream started is refused now,
	// before writes are blocked (and again under the block, for a change
	// made meanwhile); then the copy's objects and roles are checked.
	change, err := p.src.SchemaChange(ctx, &p.st)
	if err != nil {
		return nil, err
	}
	if change != "" {
		return nil, agent.Permanentf("cutover refused before blocking writes: %s. The stream was removed; retry to sync again from the start, or roll back and plan the database as dump", change)
	}
	man := s.Manifest(p.job.Row.Source, &postgres.Snapshot{}, nil, nil)
	if err := p.dst.VerifyObjects(ctx, &man); err != nil {
		return nil, err
	}
	return s, nil
}

func (p *pgCutoverSide) schemaChange(ctx context.Context) (string, error) {
	return p.src.SchemaChange(ctx, &p.st)
}

func (p *pgCutoverSide) position(ctx context.Context) (string, error) {
	return p.src.Position(ctx, p.s.Database)
}

func (p *pgCutoverSide) waitApplied(ctx context.Context, pos string, timeout time.Duration) (int64, error) {
	return waitApplied(ctx, p.src, p.dst, &p.st, pos, timeout)
}

func (p *pgCutoverSide) timedOut(ctx context.Context, lag int64) (int, error) {
	p.st.CutoverAttempts++
	p.st.LastLagBytes = lag
	return p.st.CutoverAttempts, p.job.PutRecord(ctx, recordStream, p.st)
}

func (p *pgCutoverSide) stop(ctx context.Context) error {
	return p.dst.StopSubscription(ctx, p.st.Database, p.st.Name)
}

func (p *pgCutoverSide) remove(ctx context.Context) error {
	return p.p.teardown(ctx, p.job, postgres.Conn{S: p.src}, postgres.Conn{S: p.dst})
}

// removeLater: the stopped subscription and its slot are removed once the
// row has moved on to DNS (finish), the publication by the close step (at
// the source, by its agent): the window loses 0.1–0.4 s.
func (p *pgCutoverSide) removeLater() bool { return true }

func (p *pgCutoverSide) verify(ctx context.Context, _ engine.Block, _ string) (string, error) {
	nseqs, recheck, man, took, err := verifyCutover(ctx, p.src, p.dst, p.s, p.job.Row.Source, &p.st)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d sequences set, %d tables verified now (row counts and checksums at both servers at once), %d unchanged since verified while streaming, %d objects, %d roles (%s)",
		nseqs, len(man.Tables), len(p.s.Tables)-len(recheck), len(man.Objects), len(man.Users), took), nil
}

// finish records what was verified, and keeps the stream's name; the
// stopped subscription and its slot are removed once the row has moved on
// (removeLater: the row is no longer this step's to ask its source's agent
// anything), and the close step, at the source, removes the publication
// and whatever else of the stream is still there.
func (p *pgCutoverSide) finish(ctx context.Context) error {
	st := postgres.Stream{Name: p.st.Name, Database: p.st.Database, Tables: p.st.Tables, Verified: p.st.Verified, CutRows: p.st.CutRows}
	if err := p.job.PutRecord(ctx, recordStream, st); err != nil {
		return err
	}
	h, job := p.p.h, p.job
	job.AfterAdvance("remove the stopped stream "+st.Name, func(ctx context.Context) error {
		src, err := h.atSource(job)(ctx)
		if err != nil {
			return err
		}
		defer closeConn(src)
		dst, err := h.atDestination(job)(ctx)
		if err != nil {
			return err
		}
		defer closeConn(dst)
		// The row is not this step's any more: no ask; the slot goes with
		// the replication right, the publication with the close.
		return errors.Join(postgres.ServerOf(dst).DropSubscription(ctx, st.Name), postgres.ServerOf(src).DropSlot(ctx, st.Name))
	})
	return nil
}

// verifyCutover sets the destination's sequences from the source's (logical
// replication does not carry them), then checks under the block the
// tables whose change counters moved since they were verified while
// streaming (or that were not), at both servers at once, with the
// sequences (the objects and roles were checked before the block); it
// records them in st.Verified. A table compared by rows while streaming
// has only its rows written since compared (checkRows).
func verifyCutover(ctx context.Context, src, dst *postgres.Server, s *postgres.Source, source string, st *postgres.Stream) (nseqs int, recheck []string, man *engine.Manifest, took *phaseTimes, err error) {
	took = startPhases()
	seqs, err := src.SequenceValues(ctx, s.Database)
	if err != nil {
		return 0, nil, nil, took, err
	}
	if err := dst.SetSequences(ctx, s.Database, seqs); err != nil {
		return 0, nil, nil, took, err
	}
	took.mark("sequences")
	// Tables verified while streaming whose counters have not moved since
	// are as verified; every other one is read at both servers now.
	counters, err := src.TableCounters(ctx, s.Database)
	if err != nil {
		return 0, nil, nil, took, err
	}
	took.mark("changed tables")
	recheck = []string{}
	whole := []string{} // not nil: nil would be every table
	byRows := map[string]postgres.RowBase{}
	for _, t := range s.Tables {
		if v, ok := st.Verified[t]; ok && counters[t] == v.Counters {
			continue
		}
		recheck = append(recheck, t)
		if b, ok := st.ByRows[t]; ok {
			byRows[t] = b
		} else {
			whole = append(whole, t)
		}
	}
	if len(byRows) > 0 {
		cut, err := src.CurrentSnapshot(ctx, s.Database)
		if err != nil {
			return 0, nil, nil, took, err
		}
		var n int
		for t, b := range byRows {
			rows, compared, err := checkRows(ctx, src, dst, s.Database, t, b)
			if err != nil {
				return 0, nil, nil, took, err
			}
			if compared < 0 { // too many written: read whole
				whole = append(whole, t)
				continue
			}
			n += compared
			if st.CutRows == nil {
				st.CutRows = map[string]postgres.RowCut{}
			}
			st.CutRows[t] = postgres.RowCut{Snapshot: cut, Rows: rows}
			delete(st.Verified, t)
		}
		took.mark(fmt.Sprintf("%d rows of %d tables compared by rows", n, len(byRows)))
	}
	var dstSums []engine.TableSum
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		var err error
		man, err = src.VerifyManifest(gctx, s, source, whole, seqs, nil)
		return err
	})
	g.Go(func() error {
		var err error
		dstSums, err = dst.Checksums(gctx, s.Database, whole, nil)
		return err
	})
	if err := g.Wait(); err != nil {
		return 0, nil, nil, took, err
	}
	took.mark("checksums")
	if err := dst.VerifyCutover(ctx, man, dstSums); err != nil {
		return 0, nil, nil, took, err
	}
	took.mark("sequences' check")
	if st.Verified == nil {
		st.Verified = map[string]postgres.Verified{}
	}
	for _, t := range man.Tables {
		st.Verified[t.Name] = postgres.Verified{Rows: t.Rows, Checksum: t.Checksum, Counters: counters[t.Name]}
		delete(st.CutRows, t.Name)
	}
	return len(seqs), recheck, man, took, nil
}

// checkRows compares, under the block, the rows of table written at
// either server since it was compared by rows while streaming (and those
// that differed then) and both row counts. It returns the source's row
// count and how many rows it compared; -1: more were written than it
// compares (the table is then verified whole).
func checkRows(ctx context.Context, src, dst *postgres.Server, database, table string, b postgres.RowBase) (rows int64, compared int, err error) {
	var srcRows, dstRows int64
	var srcKeys, dstKeys []string
	var srcOK, dstOK bool
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		srcRows, srcKeys, srcOK, err = src.ChangedRows(gctx, database, table, b.SrcSnapshot, maxChangedRows)
		return err
	})
	g.Go(func() (err error) {
		dstRows, dstKeys, dstOK, err = dst.ChangedRows(gctx, database, table, b.DstSnapshot, maxChangedRows)
		return err
	})
	if err := g.Wait(); err != nil {
		return 0, 0, err
	}
	if !srcOK || !dstOK {
		return 0, -1, nil
	}
	if srcRows != dstRows {
		return 0, 0, engine.Permanentf("verification of table %s of %q failed: %d rows at the source, %d at the destination (a write the stream did not carry, or one at the destination): %s",
			table, database, srcRows, dstRows, rowsMismatchAdvice)
	}
	keys := slices.Concat(srcKeys, dstKeys, b.Pending)
	slices.Sort(keys)
	keys = slices.Compact(keys)
	var sh, dh map[string]int64
	g, gctx = errgroup.WithContext(ctx)
	g.Go(func() (err error) { sh, err = src.RowHashesOf(gctx, database, table, keys); return err })
	g.Go(func() (err error) { dh, err = dst.RowHashesOf(gctx, database, table, keys); return err })
	if err := g.Wait(); err != nil {
		return 0, 0, err
	}
	if bad := keyedDiffs(keys, sh, dh); len(bad) > 0 {
		return 0, 0, engine.Permanentf("verification of table %s of %q failed (%d of %d rows written since it was compared while streaming): %s: %s",
			table, database, len(bad), len(keys), shortList(bad, 5), rowsMismatchAdvice)
	}
	return srcRows, len(keys), nil
}

// keyedDiffs compares the hashes of the rows with keys at the source (sh)
// and the destination (dh) and says which differ.
func keyedDiffs(keys []string, sh, dh map[string]int64) []string {
	var bad []string
	for _, k := range keys {
		s, inSrc := sh[k]
		d, inDst := dh[k]
		switch {
		case inSrc && !inDst:
			bad = append(bad, "row "+k+" missing at the destination")
		case !inSrc && inDst:
			bad = append(bad, "row "+k+" at the destination only")
		case s != d:
			bad = append(bad, "row "+k+" differs")
		}
	}
	return bad
}

// rowsMismatchAdvice says what a difference found by rows at the cutover
// leaves and what to do.
const rowsMismatchAdvice = "writes were restored at the source and the stream and the destination's copy removed; " +
	"look for writes at the destination (nothing but the stream should write there), then retry to sync again from the start, or roll back"

// shortList joins at most n items and says how many more there are.
func shortList(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, "; ")
	}
	return fmt.Sprintf("%s; and %d more", strings.Join(items[:n], "; "), len(items)-n)
}

// waitApplied waits until the destination has applied the source's WAL up
// to pos: the slot's confirmed position, or the apply worker's received
// one (it applies in order, so receiving past pos means everything before
// it was applied). It returns -1 when it has, or the bytes still missing
// when timeout passed.
func waitApplied(ctx context.Context, src, dst *postgres.Server, st *postgres.Stream, pos string, timeout time.Duration) (int64, error) {
	name := st.Name
	want, err := parseLSN(pos)
	if err != nil {
		return 0, err
	}
	deadline := time.Now().Add(timeout)
	var behind int64
	for {
		slot, ok, err := src.SlotOf(ctx, name)
		if err != nil {
			return 0, err
		}
		if !ok {
			return 0, agent.Permanentf("replication slot %s is gone at the source during the cutover", name)
		}
		if c, err := parseLSN(slot.Confirmed); err == nil {
			if c >= want {
				return -1, nil
			}
			behind = int64(want - c)
		}
		sub, err := dst.SubscriptionOf(ctx, st.Database, name)
		if err != nil {
			return 0, err
		}
		if r, err := parseLSN(sub.Received); err == nil && r >= want {
			return -1, nil
		}
		if time.Now().After(deadline) {
			return behind, nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// parseLSN reads a PostgreSQL LSN ("16/B374D848").
func parseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("not an LSN: %q", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("not an LSN: %q", s)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("not an LSN: %q", s)
	}
	return h<<32 | l, nil
}
