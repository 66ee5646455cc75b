package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	mysqldrv "github.com/go-sql-driver/mysql"
	"github.com/shopspring/decimal"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

// A stream is our own change reader and applier (docs/online.md says why
// not MariaDB's multi-source replication: it refuses a second connection to
// the same source). A Streamer reads the source server's binary log as a
// replica would, from the position of the database's consistent copy, and
// applies that one database's row events to the destination, consecutive
// source transactions grouped in one destination transaction that also
// moves the stream's position record (past the group's last transaction):
// a crash loses nothing and applies nothing twice. The
// position record lives at the destination, in a database of ours
// (StreamsDatabase); removing it stops the stream (fence): a transaction
// that would move a record that is gone rolls back.

// StreamsDatabase holds the position records of the streams applied at a
// server: one row per stream, named engine.StreamName(row).
const StreamsDatabase = "_fleetmigrate"

const streamsTable = "`" + StreamsDatabase + "`.`streams`"

// StreamRecord is a stream's position record at its destination.
type StreamRecord struct {
	Exists   bool
	Name     string
	Database string
	// Source is the source server's address (host:port).
	Source string
	// Applied is the source position the destination has applied up to.
	Applied BinlogPos
	// ErrNo and Error say why the stream stopped (Error empty: it did
	// not): a source that no longer has its position (1236), a row the
	// destination refused or could not find, a table that changed.
	ErrNo   int
	Error   string
	Updated time.Time
}

// ensureStreams creates the streams table.
func (s *Server) ensureStreams(ctx context.Context) error {
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS `" + StreamsDatabase + "`",
		"CREATE TABLE IF NOT EXISTS " + streamsTable + ` (
			name VARCHAR(64) NOT NULL PRIMARY KEY,
			db VARCHAR(256) NOT NULL,
			source VARCHAR(255) NOT NULL,
			file VARCHAR(255) NOT NULL,
			pos BIGINT NOT NULL,
			err_no INT NOT NULL DEFAULT 0,
			error TEXT NOT NULL DEFAULT '',
			updated DATETIME(6) NOT NULL
		) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
	} {
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("create the stream records at %s: %w", s, err)
		}
	}
	return nil
}

// CreateStreamRecord records st's stream at this (destination) server,
// from st.Start, reading the source at source (host:port): a streamer of
// this server's agent (Streams) applies it from then on.
func (s *Server) CreateStreamRecord(ctx context.Context, st *Stream, source string) error {
	if err := s.ensureStreams(ctx); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, "REPLACE INTO "+streamsTable+" (name, db, source, file, pos, updated) VALUES (?, ?, ?, ?, ?, UTC_TIMESTAMP(6))",
		st.Name, st.Database, source, st.Start.File, st.Start.Pos)
	if err != nil {
		return fmt.Errorf("record stream %s at %s: %w", st.Name, s, err)
	}
	return nil
}

const recordColumns = "name, db, source, file, pos, err_no, error, updated"

func scanRecord(row interface{ Scan(...any) error }) (StreamRecord, error) {
	r := StreamRecord{Exists: true}
	err := row.Scan(&r.Name, &r.Database, &r.Source, &r.Applied.File, &r.Applied.Pos, &r.ErrNo, &r.Error, &r.Updated)
	return r, err
}

// errNoSuchTable: the streams table (or its database) is not there: no
// stream was ever recorded here.
func errNoSuchTable(err error) bool { n := errNo(err); return n == 1146 || n == 1049 }

// StreamRecordOf reads the record of stream name (Exists false: none).
func (s *Server) StreamRecordOf(ctx context.Context, name string) (StreamRecord, error) {
	r, err := scanRecord(s.db.QueryRowContext(ctx, "SELECT "+recordColumns+" FROM "+streamsTable+" WHERE name = ?", name))
	if errors.Is(err, sql.ErrNoRows) || errNoSuchTable(err) {
		return StreamRecord{}, nil
	}
	if err != nil {
		return r, fmt.Errorf("read stream %s at %s: %w", name, s, s.connectError(err))
	}
	return r, nil
}

// StreamRecords lists the stream records here whose names start with
// prefix.
func (s *Server) StreamRecords(ctx context.Context, prefix string) ([]StreamRecord, error) {
	var out []StreamRecord
	err := s.queryRows(ctx, "SELECT "+recordColumns+" FROM "+streamsTable+" WHERE name LIKE CONCAT(?, '%') ORDER BY name",
		[]any{strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(prefix)}, func(rows *sql.Rows) error {
			r, err := scanRecord(rows)
			out = append(out, r)
			return err
		})
	if errNoSuchTable(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list the streams at %s: %w", s, s.connectError(err))
	}
	return out, nil
}

// RemoveStreamRecord removes the record of stream name: its streamer
// applies nothing more (a transaction it has under way rolls back). A
// record that is not there is removed already.
func (s *Server) RemoveStreamRecord(ctx context.Context, name string) error {
	_, err := s.db.ExecContext(ctx, "DELETE FROM "+streamsTable+" WHERE name = ?", name)
	if err != nil && !errNoSuchTable(err) {
		return fmt.Errorf("remove stream %s at %s: %w", name, s, err)
	}
	return nil
}

// WaitStreamApplied waits at most timeout until stream name has applied
// the source's log up to pos: true when it has; the record as last read.
func (s *Server) WaitStreamApplied(ctx context.Context, name string, pos BinlogPos, timeout time.Duration) (bool, StreamRecord, error) {
	return s.waitStream(ctx, name, pos, timeout, nil)
}

// WaitStreamCaughtUp is WaitStreamApplied that also counts the stream as
// caught up when the source's log between its recorded position and pos
// holds no write to its database (db, at src): a stream writes its
// position only every flushEvery while the source's log carries other
// databases' writes only, so on a busy source the record trails what the
// stream has read by up to that long.
func (s *Server) WaitStreamCaughtUp(ctx context.Context, src *Server, db, name string, pos BinlogPos, timeout time.Duration) (bool, StreamRecord, error) {
	var checked time.Time
	quiet := func(ctx context.Context, from BinlogPos) (bool, error) {
		if time.Since(checked) < quietEvery {
			return false, nil
		}
		checked = time.Now()
		w, err := src.WritesBetween(ctx, db, from, pos)
		return !w, err
	}
	return s.waitStream(ctx, name, pos, timeout, quiet)
}

// quietEvery is how often WaitStreamCaughtUp reads the source's log for
// writes to the database after the stream's position.
const quietEvery = 100 * time.Millisecond

func (s *Server) waitStream(ctx context.Context, name string, pos BinlogPos, timeout time.Duration, quiet func(context.Context, BinlogPos) (bool, error)) (bool, StreamRecord, error) {
	deadline := time.Now().Add(timeout)
	for {
		r, err := s.StreamRecordOf(ctx, name)
		if err != nil {
			return false, r, err
		}
		if !r.Exists {
			return false, r, engine.Permanentf("stream %s is gone at %s (its record removed by hand or by gc?): retry the row to sync again from the start", name, s)
		}
		if r.Applied.Compare(pos) >= 0 {
			return true, r, nil
		}
		if r.Error != "" {
			return false, r, engine.Permanentf("stream %s at %s stopped at %s: error %d: %s", name, s, r.Applied, r.ErrNo, r.Error)
		}
		if quiet != nil {
			q, err := quiet(ctx, r.Applied)
			if err != nil {
				return false, r, err
			}
			if q {
				return true, r, nil
			}
		}
		if time.Now().After(deadline) {
			return false, r, nil
		}
		select {
		case <-ctx.Done():
			return false, r, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// redactServerMessage replaces the values a server message quotes
// ("Duplicate entry '…' for key 'PRIMARY'"): customers' data.
func redactServerMessage(msg string) string {
	return quotedValue.ReplaceAllString(msg, "$1'…'")
}

// ---- the streamer ----

// Streamer applies one stream (a record at its destination) until it is
// stopped, fenced (its record removed) or broken (an error it cannot get
// past, written on its record).
type Streamer struct {
	dst      *Server
	name     string
	src      engine.Server
	serverID uint32
	log      *slog.Logger

	pauseRq chan chan BinlogPos // a pause request, answered with the applied position
	resume  chan struct{}

	// What the streamer applied since it was made: rows, the source's
	// transactions that had rows of its database, and the destination
	// transactions they were applied in (groups of them).
	rows, txns, commits atomic.Int64
	// reached is the source position up to which everything of the
	// database the streamer read is committed at the destination (its
	// record may trail it by up to flushEvery).
	mu      sync.Mutex
	reached BinlogPos
	// maxGroup is the rows a group holds at most (groupRows; 1: every
	// source transaction in its own destination transaction, as before
	// groups — the benchmark compares).
	maxGroup int64
}

// Applied reports what the streamer applied since it was made: rows, the
// source's transactions they came in and the destination's transactions
// (commits) that applied them.
func (st *Streamer) Applied() (rows, txns, commits int64) {
	return st.rows.Load(), st.txns.Load(), st.commits.Load()
}

// Reached returns the source position up to which everything of its
// database the streamer has read is committed at the destination: ahead
// of its position record while the source writes only other databases.
// Zero before it has read anything.
func (st *Streamer) Reached() BinlogPos {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.reached
}

func (st *Streamer) reach(p BinlogPos) {
	st.mu.Lock()
	st.reached = p
	st.mu.Unlock()
}

// NewStreamer prepares the streamer of the stream name recorded at this
// server, reading the source as src's account (its address is the
// record's) with the replica id serverID (unique among the source's
// replicas).
func (s *Server) NewStreamer(name string, src engine.Server, serverID uint32, log *slog.Logger) *Streamer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Streamer{dst: s, name: name, src: src, serverID: serverID, log: log.With("stream", name),
		pauseRq: make(chan chan BinlogPos), resume: make(chan struct{}), maxGroup: groupRows}
}

// Pause makes the streamer stop applying at the end of the transaction it
// is in and returns the source position applied so far; Resume lets it go
// on. A streamer that is not running answers nothing: ctx ends the wait.
func (st *Streamer) Pause(ctx context.Context) (BinlogPos, error) {
	answer := make(chan BinlogPos, 1)
	select {
	case st.pauseRq <- answer:
	case <-ctx.Done():
		return BinlogPos{}, ctx.Err()
	}
	select {
	case p := <-answer:
		return p, nil
	case <-ctx.Done():
		return BinlogPos{}, ctx.Err()
	}
}

// Resume ends a Pause.
func (st *Streamer) Resume() {
	select {
	case st.resume <- struct{}{}:
	case <-time.After(5 * time.Second):
	}
}

// ErrFenced: the stream's record was removed: the streamer stopped.
var ErrFenced = errors.New("the stream's record was removed")

// flushEvery is how often the position of a stream is written while the
// source's log moves without changes for its database; idleAfter is how
// long the log is quiet before the position reached is written at once
// (the lag and the cutover's wait read it).
//
// flushEvery was 50 ms: with 30 streams in flight that was 600 position
// writes a second at the destinations for databases that had nothing to
// apply, on servers busy importing — and each stream, one round trip after
// another, fell behind its source (a catch-up under the block then timed
// out 130–450 kB behind). A cutover does not wait for the record to move:
// WaitStreamCaughtUp reads the source's log after it for writes to the
// database. A statement that names the database (the cutover's block)
// writes the position at once.
const (
	flushEvery = time.Second
	idleAfter  = 10 * time.Millisecond
)

// Consecutive source transactions are applied in one destination
// transaction (a group), committed with the position after the last of
// them: nobody reads the destination's copy before the cutover, so a
// group's end is as good a consistency point as each transaction's, and a
// database written hundreds of times a second costs one commit per group
// instead of one each. A group is committed once its database has been
// quiet for idleAfter (so a cutover waiting for a blocked source's last
// transaction waits no longer than before), or it is groupFor old, or it
// holds groupRows rows.
const (
	groupFor  = 200 * time.Millisecond
	groupRows = 20000
)

// Run applies the stream until ctx ends (nil), its record is removed
// (ErrFenced) or it breaks (the error, also written on the record). It
// retries reading a source that is unreachable.
func (st *Streamer) Run(ctx context.Context) error {
	rec, err := st.dst.StreamRecordOf(ctx, st.name)
	if err != nil {
		return err
	}
	if !rec.Exists {
		return ErrFenced
	}
	if rec.Error != "" {
		return fmt.Errorf("stream %s is broken: error %d: %s", st.name, rec.ErrNo, rec.Error)
	}
	a, err := st.newApplier(ctx, rec)
	if err != nil {
		return err
	}
	defer a.close(ctx)
	host, port, err := net.SplitHostPort(rec.Source)
	if err != nil {
		return st.broken(ctx, 0, fmt.Sprintf("the source address %q is not host:port", rec.Source))
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return st.broken(ctx, 0, fmt.Sprintf("the source address %q has no port", rec.Source))
	}
	src := st.src
	src.Address = rec.Source
	t, err := st.dst.opt.tlsFor(src)
	if err != nil {
		return st.broken(ctx, 0, err.Error())
	}
	syncer, stream, err := t.startBinlog(src, replication.BinlogSyncerConfig{
		ServerID: st.serverID, Flavor: gomysql.MariaDBFlavor, Host: host, Port: uint16(p),
		User: st.src.User, Password: st.src.Password,
		UseDecimal: true, TimestampStringLocation: time.UTC, HeartbeatPeriod: time.Second,
		ReadTimeout: 10 * time.Second, Logger: st.log.With("component", "binlog reader"),
		// The source's log carries every database's rows; only this
		// stream's are decoded (the applier passes over the others): one
		// stream per database of a busy source each decoded them all.
		RowsEventDecodeFunc: func(e *replication.RowsEvent, data []byte) error {
			pos, err := e.DecodeHeader(data)
			if err != nil || e.Table == nil || string(e.Table.Schema) != rec.Database {
				return err
			}
			return e.DecodeData(pos, data)
		},
	}, gomysql.Position{Name: rec.Applied.File, Pos: uint32(rec.Applied.Pos)})
	if errors.Is(err, engine.ErrPermanent) {
		// A certificate refused, TLS the source does not offer: no retry
		// changes it; the record says why, and the row's step fails it.
		return st.broken(ctx, 0, err.Error())
	}
	if err != nil {
		return fmt.Errorf("read the binary log of %s from %s: %w", rec.Source, rec.Applied, err)
	}
	defer syncer.Close()
	return a.run(ctx, stream)
}

// broken writes why the stream stopped on its record and returns it.
func (st *Streamer) broken(ctx context.Context, no int, msg string) error {
	_, err := st.dst.db.ExecContext(context.WithoutCancel(ctx), "UPDATE "+streamsTable+" SET err_no = ?, error = ?, updated = UTC_TIMESTAMP(6) WHERE name = ?", no, msg, st.name)
	if err != nil {
		st.log.Warn("could not record why the stream stopped", "err", err)
	}
	return fmt.Errorf("stream %s stopped: error %d: %s", st.name, no, msg)
}

// applier is a running stream's destination side.
type applier struct {
	st      *Streamer
	db      string
	pool    *sql.DB
	c       *sql.Conn // the session the groups' transactions run in
	applied BinlogPos // committed at the destination
	at      BinlogPos // read up to (end of the last complete group)
	flushed time.Time
	tables  map[string]*tableMeta

	// The open group: inTxn while a source transaction's rows are being
	// applied (a group ends only between transactions), when it began,
	// when rows of ours last came, its rows and source transactions.
	inTxn           bool
	began, lastRows time.Time
	groupRows, txns int64
	// The open group's batch (batch.go): open once it has rows; started
	// once its transaction was begun at the destination (a batch sent);
	// the statements not sent yet, their size, and every op of the group
	// (a failed check names one by index).
	open, started bool
	stmts         []string
	size          int
	ops           []batchOp
}

// tableMeta is what applying a table's rows needs to know of it (from the
// destination's schema, the same as the source's).
type tableMeta struct {
	cols      []string
	unsigned  []bool
	intBits   []int // bits of an integer column, 0 otherwise
	generated []bool
	key       []int // primary (or first unique not-null) key columns
}

func (st *Streamer) newApplier(ctx context.Context, rec StreamRecord) (*applier, error) {
	// A connection of its own: found rows (not changed rows) count as
	// affected, so that a missing row is seen; several statements a
	// round trip (a group's batch).
	cfg := driverConfig(st.dst.srv, st.dst.tls)
	cfg.InterpolateParams, cfg.ClientFoundRows, cfg.MultiStatements = true, true, true
	cfg.Params = map[string]string{"time_zone": "'+00:00'", "sql_mode": "'NO_AUTO_VALUE_ON_ZERO'"}
	conn, err := mysqldrv.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(1)
	c, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to %s to apply stream %s: %w", st.dst, st.name, err)
	}
	return &applier{st: st, db: rec.Database, pool: db, c: c, applied: rec.Applied, at: rec.Applied, tables: map[string]*tableMeta{}}, nil
}

func (a *applier) close(ctx context.Context) {
	if a.started {
		_, _ = a.c.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
	}
	_ = a.c.Close()
	a.pool.Close()
}

// run applies events until the stream ends.
func (a *applier) run(ctx context.Context, stream *replication.BinlogStreamer) error {
	var pause chan BinlogPos // a pause asked for, answered between transactions
	for {
		if pause == nil {
			select {
			case pause = <-a.st.pauseRq:
			default:
			}
		}
		if pause != nil && !a.inTxn {
			if err := a.commit(ctx); err != nil {
				return err
			}
			if err := a.flush(ctx); err != nil {
				return err
			}
			pause <- a.applied
			pause = nil
			select {
			case <-a.st.resume:
			case <-ctx.Done():
				return nil
			}
			continue
		}
		ectx, cancel := context.WithTimeout(ctx, idleAfter)
		ev, err := stream.GetEvent(ectx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, context.DeadlineExceeded) {
			// The source's log is quiet: the open group is committed and the
			// position reached written now (a cutover waits for it).
			if !a.inTxn {
				if err := a.commit(ctx); err != nil {
					return err
				}
				if err := a.flush(ctx); err != nil {
					return err
				}
			}
			continue
		}
		if err != nil {
			var me *gomysql.MyError
			if errors.As(err, &me) {
				return a.st.broken(ctx, int(me.Code), fmt.Sprintf("reading the source's binary log from %s: %s", a.at, redactServerMessage(me.Message)))
			}
			return a.st.broken(ctx, 0, fmt.Sprintf("reading the source's binary log from %s: %v", a.at, err))
		}
		if err := a.event(ctx, ev); err != nil {
			return err
		}
	}
}

// event handles one event of the source's log.
func (a *applier) event(ctx context.Context, ev *replication.BinlogEvent) error {
	h := ev.Header
	switch e := ev.Event.(type) {
	case *replication.RotateEvent:
		if h.Timestamp != 0 || h.LogPos != 0 || a.at.File == "" || string(e.NextLogName) != a.at.File {
			a.at = BinlogPos{File: string(e.NextLogName), Pos: int64(e.Position)}
		}
		return nil
	case *replication.RowsEvent:
		if string(e.Table.Schema) != a.db {
			return nil
		}
		return a.rows(ctx, e)
	case *replication.XIDEvent:
		return a.groupEnd(ctx, h.LogPos)
	case *replication.QueryEvent:
		// BEGIN starts a transaction; anything else (COMMIT of a
		// non-transactional one, DDL, administration) ends a group. DDL is
		// not applied: the sync and the cutover refuse a schema that changed
		// (its fingerprint at the source), and rows that no longer fit the
		// destination's tables stop the stream.
		if strings.EqualFold(strings.TrimSpace(string(e.Query)), "BEGIN") {
			return nil
		}
		if err := a.groupEnd(ctx, h.LogPos); err != nil {
			return err
		}
		// A statement about the database (the cutover's block revoking
		// its accounts' writes): the position reached is written now.
		if string(e.Schema) == a.db || mentionsDatabase(string(e.Query), a.db) {
			if !a.inTxn {
				if err := a.commit(ctx); err != nil {
					return err
				}
				return a.flush(ctx)
			}
		}
		return nil
	}
	return nil
}

// groupEnd is the end of a transaction (or of a statement outside one) at
// logPos. Ours joins the open group, which is committed with the new
// position when it is due; another one moves the position (written at
// most every flushEvery, or with the group).
func (a *applier) groupEnd(ctx context.Context, logPos uint32) error {
	if logPos != 0 {
		a.at.Pos = int64(logPos)
	}
	if a.inTxn {
		a.inTxn = false
		a.txns++
	}
	if !a.open {
		a.st.reach(a.at)
		if time.Since(a.flushed) >= flushEvery {
			return a.flush(ctx)
		}
		return nil
	}
	if now := time.Now(); now.Sub(a.lastRows) >= idleAfter || now.Sub(a.began) >= groupFor || a.groupRows >= a.st.maxGroup {
		return a.commit(ctx)
	}
	return nil
}

// commit commits the open group (if any) with the position reached: its
// last batch, with the move of the position record and COMMIT.
func (a *applier) commit(ctx context.Context) error {
	if !a.open {
		return nil
	}
	if err := a.send(ctx, true); err != nil {
		return err
	}
	a.open = false
	a.applied, a.flushed = a.at, time.Now()
	a.st.reach(a.applied)
	a.st.rows.Add(a.groupRows)
	a.st.txns.Add(a.txns)
	a.st.commits.Add(1)
	a.groupRows, a.txns = 0, 0
	return nil
}

// moveQuery moves a stream's position record (file, pos, name).
const moveQuery = "UPDATE " + streamsTable + " SET file = ?, pos = ?, updated = UTC_TIMESTAMP(6) WHERE name = ? AND error = ''"

// move writes the position outside a group; a record that is gone fences
// the stream.
func (a *applier) move(ctx context.Context) error {
	res, err := a.c.ExecContext(ctx, moveQuery, a.at.File, a.at.Pos, a.st.name)
	if err != nil {
		return fmt.Errorf("move stream %s at %s: %w", a.st.name, a.st.dst, err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return ErrFenced
	}
	return nil
}

// flush writes the position reached outside our transactions.
func (a *applier) flush(ctx context.Context) error {
	if a.at == a.applied {
		a.flushed = time.Now()
		return nil
	}
	if err := a.move(ctx); err != nil {
		return err
	}
	a.applied, a.flushed = a.at, time.Now()
	return nil
}

// rows applies one rows event of our database in the open transaction.
func (a *applier) rows(ctx context.Context, e *replication.RowsEvent) error {
	table := string(e.Table.Table)
	m, err := a.meta(ctx, table, int(e.ColumnCount))
	if err != nil {
		return err
	}
	if !a.open {
		a.open, a.began = true, time.Now()
	}
	a.inTxn, a.lastRows = true, time.Now()
	if e.Type() == replication.EnumRowsEventTypeUpdate {
		a.groupRows += int64(len(e.Rows) / 2)
	} else {
		a.groupRows += int64(len(e.Rows))
	}
	qt := ident.QuoteMySQL(a.db) + "." + ident.QuoteMySQL(table)
	op := func(what string) batchOp { return batchOp{what: what, table: ident.QuoteMySQL(table)} }
	// (MariaDB's compressed row events are of these kinds too.)
	switch e.Type() {
	case replication.EnumRowsEventTypeInsert:
		var cols []string
		for i, c := range m.cols {
			if !m.generated[i] {
				cols = append(cols, ident.QuoteMySQL(c))
			}
		}
		var b strings.Builder
		var args []any
		b.WriteString("INSERT INTO " + qt + " (" + strings.Join(cols, ", ") + ") VALUES ")
		for r, row := range e.Rows {
			if r > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(")
			first := true
			for i, v := range row {
				if m.generated[i] {
					continue
				}
				if !first {
					b.WriteString(", ")
				}
				first = false
				b.WriteString("?")
				args = append(args, m.value(i, v))
			}
			b.WriteString(")")
		}
		if err := a.add(ctx, b.String(), args, op("insert"), false); err != nil {
			return err
		}
	case replication.EnumRowsEventTypeUpdate:
		for r := 0; r+1 < len(e.Rows); r += 2 {
			before, after := e.Rows[r], e.Rows[r+1]
			var set []string
			var args []any
			for i, v := range after {
				if !m.generated[i] {
					set = append(set, ident.QuoteMySQL(m.cols[i])+" = ?")
					args = append(args, m.value(i, v))
				}
			}
			where, wargs := m.where(before)
			if err := a.add(ctx, "UPDATE "+qt+" SET "+strings.Join(set, ", ")+" WHERE "+where+" LIMIT 1", append(args, wargs...), op("update"), true); err != nil {
				return err
			}
		}
	case replication.EnumRowsEventTypeDelete:
		for _, row := range e.Rows {
			where, args := m.where(row)
			if err := a.add(ctx, "DELETE FROM "+qt+" WHERE "+where+" LIMIT 1", args, op("delete"), true); err != nil {
				return err
			}
		}
	default:
		return a.failed(ctx, op("apply"), fmt.Errorf("a rows event of a kind the stream does not apply (%s)", rowsKind(e)))
	}
	return nil
}

// rowsKind names a rows event's kind for messages.
func rowsKind(e *replication.RowsEvent) string { return fmt.Sprintf("%T %d", e, e.Type()) }

// meta reads (once) what the destination's schema says of table; a column
// count that differs from the event's is a schema change.
func (a *applier) meta(ctx context.Context, table string, n int) (*tableMeta, error) {
	m := a.tables[table]
	if m == nil {
		var err error
		if m, err = a.st.dst.tableMetaOf(ctx, a.db, table); err != nil {
			return nil, err
		}
		a.tables[table] = m
	}
	if len(m.cols) != n {
		return nil, a.st.broken(ctx, 0, fmt.Sprintf("table %s has %d columns in the source's log at %s but %d at the destination: its schema changed at the source", ident.QuoteMySQL(table), n, a.at, len(m.cols)))
	}
	return m, nil
}

// tableMetaOf reads what this server's schema says of db's table.
func (s *Server) tableMetaOf(ctx context.Context, db, table string) (*tableMeta, error) {
	ms, err := s.tableMetas(ctx, db, table)
	if err != nil {
		return nil, err
	}
	if ms[table] == nil {
		return &tableMeta{}, nil
	}
	return ms[table], nil
}

// tableMetas reads what this server's schema says of db's tables, by
// table: one table, or every one ("").
func (s *Server) tableMetas(ctx context.Context, db, table string) (map[string]*tableMeta, error) {
	out := map[string]*tableMeta{}
	q := "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, DATA_TYPE, EXTRA, COLUMN_KEY FROM information_schema.COLUMNS WHERE " + schemaIs("TABLE_SCHEMA")
	args := []any{db, db}
	if table != "" {
		q += " AND TABLE_NAME = BINARY ?"
		args = append(args, table)
	}
	err := s.queryRows(ctx, q+" ORDER BY TABLE_NAME, ORDINAL_POSITION", args, func(rows *sql.Rows) error {
		var t, name, colType, dataType, extra, key string
		if err := rows.Scan(&t, &name, &colType, &dataType, &extra, &key); err != nil {
			return err
		}
		m := out[t]
		if m == nil {
			m = &tableMeta{}
			out[t] = m
		}
		i := len(m.cols)
		m.cols = append(m.cols, name)
		m.unsigned = append(m.unsigned, strings.Contains(colType, "unsigned"))
		m.intBits = append(m.intBits, map[string]int{"tinyint": 8, "smallint": 16, "mediumint": 24, "int": 32, "bigint": 64}[dataType])
		m.generated = append(m.generated, strings.Contains(strings.ToUpper(extra), "GENERATED"))
		if key == "PRI" {
			m.key = append(m.key, i)
		}
		return nil
	})
	if err != nil {
		if table != "" {
			return nil, fmt.Errorf("read the columns of table %s of %q at %s: %w", table, db, s, err)
		}
		return nil, fmt.Errorf("read the columns of %q at %s: %w", db, s, err)
	}
	return out, nil
}

// value is how a decoded value of column i goes to the destination:
// integers the log holds as signed are made unsigned where the column is,
// strings go as bytes (they are in the column's character set already),
// decimals exactly.
func (m *tableMeta) value(i int, v any) any {
	switch x := v.(type) {
	case nil:
		return nil
	case string:
		return []byte(x)
	case decimal.Decimal:
		return x.String()
	case int8, int16, int32, int64, int:
		n := toInt64(x)
		if m.unsigned[i] && n < 0 && m.intBits[i] > 0 {
			if m.intBits[i] == 64 {
				return uint64(n)
			}
			return uint64(n) & (1<<uint(m.intBits[i]) - 1)
		}
		return n
	case float32:
		if math.IsNaN(float64(x)) {
			return nil
		}
		return x
	}
	return v
}

func toInt64(v any) int64 {
	switch x := v.(type) {
	case int8:
		return int64(x)
	case int16:
		return int64(x)
	case int32:
		return int64(x)
	case int64:
		return x
	case int:
		return int64(x)
	}
	return 0
}

// where is the condition that finds a row by its image: its key, or every
// column (NULL-safe) for a table without one.
func (m *tableMeta) where(row []any) (string, []any) {
	idx := m.key
	if len(idx) == 0 {
		for i := range m.cols {
			if !m.generated[i] {
				idx = append(idx, i)
			}
		}
	}
	parts := make([]string, len(idx))
	args := make([]any, len(idx))
	for j, i := range idx {
		parts[j] = ident.QuoteMySQL(m.cols[i]) + " <=> ?"
		args[j] = m.value(i, row[i])
	}
	return strings.Join(parts, " AND "), args
}
