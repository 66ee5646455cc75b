package demo

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// The writers' sessions are ended by blocks on purpose: the driver's log of
// each one would drown the demo's output.
func init() { _ = mysql.SetLogger(log.New(io.Discard, "", 0)) }

// writesTable is where the demo's writers insert; the content checksums
// leave it out (it changes while the database moves).
const writesTable = "demo_writes"

// hotTable is the table of Options.HotRows rows a writer also updates at
// random keys, one update with each insert: a table the customer writes
// all the time (the content checksums leave it out too).
const hotTable = "demo_hot"

// Writer is a customer's application for one database: it resolves the
// database's DNS name at BIND, connects with the database's own user and
// password, and inserts numbered rows, one every interval, logging each
// acknowledged one. A refused write (blocked, session ended, name not yet
// moved) is retried with the same number after resolving the name again.
// A write whose answer was lost (the session ended or timed out after the
// server committed it) is found by that retry: the server says the number
// is already there, and the writer counts it in Unanswered and goes on
// with the next number, as an application with idempotent writes would.
type Writer struct {
	DB *Database
	mu sync.Mutex
	// Acked are the numbers the server acknowledged, in order; Unanswered
	// those committed without an answer (found by their retry).
	Acked      []int64
	Unanswered []int64
	// FirstRefused is the first refused write since the last one the
	// source accepted (a cutover whose catch-up timed out restores writes
	// at the source: the window is the last stretch of refusals, the one
	// that ended at the destination); AtDestination the first write
	// acknowledged by the destination.
	FirstRefused, AtDestination time.Time
	LastError                   string
	log                         *os.File
	stop, done                  chan struct{}
	halted                      bool // stopped (by the demo's goroutine)
}

// Window is what the writer saw of the write block: from its first refused
// write to its first write accepted at the destination (0 if it did not
// see both).
func (w *Writer) Window() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.FirstRefused.IsZero() || w.AtDestination.IsZero() {
		return 0
	}
	return w.AtDestination.Sub(w.FirstRefused)
}

// prepareWriters creates the writers' table in each sampled database, as
// its owner, before the baseline checksums.
func (d *Demo) prepareWriters(ctx context.Context) error {
	if d.Opt.Writers <= 0 {
		return nil
	}
	for _, db := range sampleWriters(d.DBs, d.Opt.Writers) {
		h := d.Fleet.Host(db.Source)
		if err := execAs(ctx, db, h.Addr(), "CREATE TABLE "+writesTable+" (n bigint PRIMARY KEY, at "+map[string]string{MySQL: "DATETIME(6)", Postgres: "timestamptz"}[db.Engine]+" NOT NULL)"); err != nil {
			return fmt.Errorf("writer table in %s database %q: %w", db.Engine, db.Name, err)
		}
		if n := d.Opt.HotRows; n > 0 {
			fill := fmt.Sprintf("INSERT INTO "+hotTable+" SELECT seq, 0, REPEAT('x', 60) FROM seq_1_to_%d", n)
			if db.Engine == Postgres {
				fill = fmt.Sprintf("INSERT INTO "+hotTable+" SELECT g, 0, repeat('x', 60) FROM generate_series(1, %d) g", n)
			}
			if err := execAs(ctx, db, h.Addr(), "CREATE TABLE "+hotTable+" (id bigint PRIMARY KEY, v bigint NOT NULL, pad varchar(100))", fill); err != nil {
				return fmt.Errorf("hot table of %d rows in %s database %q: %w", n, db.Engine, db.Name, err)
			}
		}
		d.writers = append(d.writers, &Writer{DB: db})
	}
	return nil
}

// sampleWriters picks n databases spread over the list, the engines taking
// turns so that both are watched.
func sampleWriters(dbs []*Database, n int) []*Database {
	byEngine := map[string][]*Database{}
	var engines []string
	for _, db := range dbs {
		if byEngine[db.Engine] == nil {
			engines = append(engines, db.Engine)
		}
		byEngine[db.Engine] = append(byEngine[db.Engine], db)
	}
	slices.Sort(engines)
	var out []*Database
	for round := 0; len(out) < n; round++ {
		added := false
		for _, e := range engines {
			list := byEngine[e]
			share := max((n+len(engines)-1)/len(engines), 1)
			i := round * max(len(list)/share, 1)
			if round < share && i < len(list) && len(out) < n {
				out = append(out, list[i])
				added = true
			}
		}
		if !added {
			break
		}
	}
	return out
}

// startWriters starts the writers (after prepareWriters); stopWriters
// stops them once their rows are finished.
func (d *Demo) startWriters(ctx context.Context) error {
	for i, w := range d.writers {
		f, err := os.Create(filepath.Join(d.Opt.Dir, fmt.Sprintf("writer-%d.log", i+1)))
		if err != nil {
			return err
		}
		fmt.Fprintf(f, "# writer of %s database %q through %s, one insert every %s; a line per acknowledged write: number, time, server\n",
			w.DB.Engine, w.DB.Name, w.DB.DNSName, d.writerEvery())
		w.log, w.stop, w.done = f, make(chan struct{}), make(chan struct{})
		// The writers outlive the call that starts them: stopWriters ends them.
		go d.runWriter(context.WithoutCancel(ctx), w)
	}
	if len(d.writers) > 0 {
		d.say("started %d writers: each inserts into %s through its database's DNS name with the database's own user, every %s (logs: writer-N.log)",
			len(d.writers), writesTable, d.writerEvery())
	}
	return nil
}

func (d *Demo) writerEvery() time.Duration {
	if d.Opt.WriterRate <= 0 {
		return 50 * time.Millisecond
	}
	return time.Duration(float64(time.Second) / d.Opt.WriterRate)
}

func (d *Demo) runWriter(ctx context.Context, w *Writer) {
	defer close(w.done)
	defer w.log.Close()
	every := d.writerEvery()
	var conn writerConn
	var at string
	n := int64(1)
	refused := func(err error) {
		w.mu.Lock()
		if w.FirstRefused.IsZero() {
			w.FirstRefused = time.Now()
		}
		w.LastError = err.Error()
		w.mu.Unlock()
		if conn != nil {
			conn.close()
			conn = nil
		}
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			if conn != nil {
				conn.close()
			}
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if conn == nil {
			ip, err := Resolve(ctx, d.Fleet.BIND.Addr, w.DB.DNSName)
			if err != nil {
				cancel()
				refused(err)
				continue
			}
			h := d.Fleet.HostByIP(w.DB.Engine, ip)
			if h == nil {
				cancel()
				refused(fmt.Errorf("%s resolves to %s, no host of the fleet", w.DB.DNSName, ip))
				continue
			}
			at = h.ID
			if conn, err = dialWriter(ctx, w.DB, h.Addr()); err != nil {
				cancel()
				refused(err)
				continue
			}
		}
		err := conn.insert(ctx, n)
		if err == nil && d.Opt.HotRows > 0 {
			// The update goes with the insert; a refused one is not retried
			// (the content checks leave the table out).
			_ = conn.update(ctx, 1+rand.Int64N(int64(d.Opt.HotRows)))
		}
		cancel()
		if err != nil && isDuplicate(err) {
			// The last attempt of n committed, its answer was lost.
			fmt.Fprintf(w.log, "%d\t%s\t%s\tcommitted earlier without an answer\n", n, time.Now().UTC().Format("15:04:05.000000"), at)
			w.mu.Lock()
			w.Unanswered = append(w.Unanswered, n)
			w.mu.Unlock()
			n++
			continue
		}
		if err != nil {
			refused(err)
			continue
		}
		now := time.Now()
		fmt.Fprintf(w.log, "%d\t%s\t%s\n", n, now.UTC().Format("15:04:05.000000"), at)
		w.mu.Lock()
		w.Acked = append(w.Acked, n)
		switch {
		case at == w.DB.Destination && w.AtDestination.IsZero():
			w.AtDestination = now
		case at != w.DB.Destination:
			w.FirstRefused = time.Time{} // the source takes writes (again)
		}
		w.mu.Unlock()
		n++
	}
}

// stopWriters stops the writers whose rows are Done, once each has written
// at its destination (waiting at most 15 s for that). A writer whose row
// has not arrived — failed, waiting for a retry — goes on writing at its
// source, where its writes belong: a later call stops it once a retry
// moved its row, Close at the end.
func (d *Demo) stopWriters(ctx context.Context) {
	if len(d.writers) == 0 {
		return
	}
	status := map[string]statemachine.Status{}
	rows, err := d.Store.List(ctx, statemachine.Filter{})
	for _, m := range rows {
		status[string(m.Engine)+"/"+m.Source+"/"+m.DatabaseName] = m.Status
	}
	var arrived []*Writer
	for _, w := range d.writers {
		if !w.halted && (err != nil || status[w.DB.Engine+"/"+w.DB.Source+"/"+w.DB.Name] == statemachine.Done) {
			arrived = append(arrived, w)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		waiting := 0
		for _, w := range arrived {
			w.mu.Lock()
			if w.AtDestination.IsZero() {
				waiting++
			}
			w.mu.Unlock()
		}
		if waiting == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, w := range arrived {
		w.halt()
	}
}

// halt stops the writer and waits for it (once).
func (w *Writer) halt() {
	if !w.halted {
		w.halted = true
		close(w.stop)
		<-w.done
	}
}

// WriterReport is what the writers saw, checked against the servers.
type WriterReport struct {
	Writers int
	// Acked writes in all; Unanswered: committed without an answer (found
	// by their retry); Missing: acknowledged or unanswered but not at the
	// destination; LateAtSource: at the source but not at the destination
	// (accepted after the block).
	Acked, Unanswered, Missing, LateAtSource int
	// Windows are the writers' write-blocked windows, sorted; ByMode by
	// the mode their row moved in.
	Windows []time.Duration
	ByMode  map[statemachine.Mode][]time.Duration
	// Problems name the writers whose writes went missing or that never
	// reached the destination.
	Problems []string
}

// CheckWriters is checkWriters for the fault suite (after Finish).
func (d *Demo) CheckWriters(ctx context.Context) WriterReport { return d.checkWriters(ctx) }

// OwnerDSN is the connection string of db's owner at host h (PostgreSQL).
func OwnerDSN(h *Host, db *Database) string { return pgDSN(h.Addr(), db.User, db.Password, db.Name) }

// OwnerExec runs statements at host h as database db's own user, on one
// session, whatever the engine: what a customer's application does.
func OwnerExec(ctx context.Context, h *Host, db *Database, stmts ...string) error {
	return execAs(ctx, db, h.Addr(), stmts...)
}

// checkWriters reads each writer's table at both servers as an
// administrator and compares it with what the writer was acknowledged.
func (d *Demo) checkWriters(ctx context.Context) WriterReport {
	r := WriterReport{Writers: len(d.writers), ByMode: map[statemachine.Mode][]time.Duration{}}
	rows, _ := d.Store.List(ctx, statemachine.Filter{})
	mode := map[string]statemachine.Mode{}
	status := map[string]statemachine.Status{}
	for _, m := range rows {
		mode[string(m.Engine)+"/"+m.Source+"/"+m.DatabaseName] = m.Mode
		status[string(m.Engine)+"/"+m.Source+"/"+m.DatabaseName] = m.Status
	}
	for _, w := range d.writers {
		if st := status[w.DB.Engine+"/"+w.DB.Source+"/"+w.DB.Name]; st != statemachine.Done {
			continue // not moved: its writes are at the source, where they belong (the row is reported)
		}
		r.Acked += len(w.Acked)
		r.Unanswered += len(w.Unanswered)
		dst, err := d.writtenAt(ctx, w.DB, w.DB.Destination)
		if err != nil {
			r.Problems = append(r.Problems, fmt.Sprintf("writer of %q: read the destination: %v", w.DB.Name, err))
			continue
		}
		src, err := d.writtenAt(ctx, w.DB, w.DB.Source)
		if err != nil {
			r.Problems = append(r.Problems, fmt.Sprintf("writer of %q: read the source: %v", w.DB.Name, err))
			continue
		}
		missing, late := 0, 0
		for _, n := range slices.Concat(w.Acked, w.Unanswered) {
			if !dst[n] {
				missing++
			}
		}
		for n := range src {
			if !dst[n] {
				late++
			}
		}
		r.Missing += missing
		r.LateAtSource += late
		if missing > 0 || late > 0 {
			r.Problems = append(r.Problems, fmt.Sprintf("writer of %s database %q: %d acknowledged writes missing at the destination, %d accepted at the source after the block", w.DB.Engine, w.DB.Name, missing, late))
		}
		if win := w.Window(); win > 0 {
			r.Windows = append(r.Windows, win)
			md := mode[w.DB.Engine+"/"+w.DB.Source+"/"+w.DB.Name]
			r.ByMode[md] = append(r.ByMode[md], win)
		} else {
			r.Problems = append(r.Problems, fmt.Sprintf("writer of %s database %q never wrote at the destination (last error: %s)", w.DB.Engine, w.DB.Name, w.LastError))
		}
	}
	slices.Sort(r.Windows)
	for _, win := range r.ByMode {
		slices.Sort(win)
	}
	return r
}

// writtenAt reads the writer's numbers at a host, as its administrator.
func (d *Demo) writtenAt(ctx context.Context, db *Database, host string) (map[int64]bool, error) {
	h := d.Fleet.Host(host)
	out := map[int64]bool{}
	switch db.Engine {
	case Postgres:
		c, err := pgx.Connect(ctx, h.pg.DSN(db.Name))
		if err != nil {
			return nil, err
		}
		defer c.Close(context.WithoutCancel(ctx))
		rows, err := c.Query(ctx, "SELECT n FROM "+writesTable)
		if err != nil {
			return nil, err
		}
		ns, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		for _, n := range ns {
			out[n] = true
		}
		return out, err
	default:
		sdb, err := sql.Open("mysql", h.my.DSN(db.Name))
		if err != nil {
			return nil, err
		}
		defer sdb.Close()
		rows, err := sdb.QueryContext(ctx, "SELECT n FROM "+writesTable)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		for rows.Next() {
			var n int64
			if err := rows.Scan(&n); err != nil {
				return nil, err
			}
			out[n] = true
		}
		return out, rows.Err()
	}
}

// writerConn is one writer's session.
type writerConn interface {
	insert(ctx context.Context, n int64) error
	update(ctx context.Context, id int64) error
	close()
}

// isDuplicate is a writer's insert refused because its number is already
// stored (MariaDB 1062, PostgreSQL 23505).
func isDuplicate(err error) bool {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number == 1062
	}
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

type pgWriter struct{ c *pgx.Conn }

func (p pgWriter) insert(ctx context.Context, n int64) error {
	_, err := p.c.Exec(ctx, "INSERT INTO "+writesTable+" (n, at) VALUES ($1, now())", n)
	return err
}
func (p pgWriter) update(ctx context.Context, id int64) error {
	_, err := p.c.Exec(ctx, "UPDATE "+hotTable+" SET v = v + 1 WHERE id = $1", id)
	return err
}
func (p pgWriter) close() { _ = p.c.Close(context.Background()) }

type myWriter struct{ db *sql.DB }

func (m myWriter) insert(ctx context.Context, n int64) error {
	_, err := m.db.ExecContext(ctx, "INSERT INTO "+writesTable+" (n, at) VALUES (?, NOW(6))", n)
	return err
}
func (m myWriter) update(ctx context.Context, id int64) error {
	_, err := m.db.ExecContext(ctx, "UPDATE "+hotTable+" SET v = v + 1 WHERE id = ?", id)
	return err
}
func (m myWriter) close() { _ = m.db.Close() }

func dialWriter(ctx context.Context, db *Database, addr string) (writerConn, error) {
	if db.Engine == Postgres {
		c, err := pgx.Connect(ctx, pgDSN(addr, db.User, db.Password, db.Name))
		if err != nil {
			return nil, err
		}
		return pgWriter{c}, nil
	}
	sdb, err := sql.Open("mysql", mysqlDSN(addr, db.User, db.Password, db.Name))
	if err != nil {
		return nil, err
	}
	sdb.SetMaxOpenConns(1)
	if err := sdb.PingContext(ctx); err != nil {
		_ = sdb.Close()
		return nil, err
	}
	return myWriter{sdb}, nil
}

// execAs runs statements in db at addr as the database's own user.
func execAs(ctx context.Context, db *Database, addr string, stmts ...string) error {
	c, err := dialWriter(ctx, db, addr)
	if err != nil {
		return err
	}
	defer c.close()
	for _, s := range stmts {
		var err error
		switch c := c.(type) {
		case pgWriter:
			_, err = c.c.Exec(ctx, s)
		case myWriter:
			_, err = c.db.ExecContext(ctx, s)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", strings.SplitN(s, " (", 2)[0], err)
		}
	}
	return nil
}
