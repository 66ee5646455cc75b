package mysql

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

// LoadDump loads the dump of manifest m from r into database db (which
// must exist). A dump in parts (m.DumpParts) loads part by part, its data
// part over Options.Jobs sessions at once (loadData); any other dump, or
// with Jobs 1, goes through the client as one script (Load). counted, when
// not nil, is kept up to date with the bytes read.
func (s *Server) LoadDump(ctx context.Context, m *engine.Manifest, r io.Reader, counted *atomic.Int64) error {
	if len(m.DumpParts) == 0 || s.opt.Jobs < 2 {
		return s.Load(ctx, m.Database, r, counted)
	}
	cr := engine.CountReader(r, counted)
	for i, part := range m.DumpParts {
		pr := &partReader{r: io.LimitReader(cr, part.Bytes), part: part}
		var err error
		switch {
		case part.Name == partData:
			err = s.loadData(ctx, m.Database, pr)
		case i == len(m.DumpParts)-1:
			err = s.loadScript(ctx, m.Database, pr, dumpTrailer)
		default:
			err = s.loadScript(ctx, m.Database, pr, toolTrailer)
		}
		if err != nil {
			return fmt.Errorf("import into %q on %s (%s part): %w", m.Database, s, part.Name, err)
		}
	}
	// Nothing may follow the last part; reading to the end also checks the
	// stored object's digest.
	n, err := io.Copy(io.Discard, cr)
	if err != nil {
		return fmt.Errorf("import into %q on %s: read the end of the dump: %w", m.Database, s, err)
	}
	if n > 0 {
		return engine.Permanentf("import into %q: the dump holds %d bytes more than the parts its manifest lists: the stored dump and its manifest do not belong together (corrupt, or one was replaced); take a new dump", m.Database, n)
	}
	return nil
}

// partReader reads one part of a dump and fails, permanently, where the
// dump ends before the part does.
type partReader struct {
	r    io.Reader
	part engine.DumpPart
	n    int64
}

func (p *partReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if errors.Is(err, io.EOF) && p.n < p.part.Bytes {
		return n, engine.Permanentf("%w: it ends in its %s part after %d of %d bytes", ErrNoTrailer, p.part.Name, p.n, p.part.Bytes)
	}
	return n, err
}

// statement kinds of a data part.
const (
	stmtInsert = iota
	stmtSession
)

type dataStatement struct {
	kind  int
	sql   string
	table string
}

// dataParser reads the data part of a dump (dumpParts): blank lines,
// comments, the tool's client-side sandbox line, session settings in
// version comments, and INSERT statements, one per line or one row per
// line (values never hold a raw newline: the tool escapes them), each
// ending with a semicolon at the end of a line. Anything else is refused:
// it is not a data part this loader understands.
type dataParser struct {
	br      *bufio.Reader
	line    []byte
	trailer bool
}

func newDataParser(r io.Reader) *dataParser {
	return &dataParser{br: bufio.NewReaderSize(r, 1<<20)}
}

// readLine reads one line without its newline; io.EOF only when nothing
// is left.
func (p *dataParser) readLine() ([]byte, error) {
	p.line = p.line[:0]
	for {
		chunk, err := p.br.ReadSlice('\n')
		p.line = append(p.line, chunk...)
		switch {
		case err == nil:
			return p.line[:len(p.line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(p.line) > 0:
			return p.line, nil
		default:
			return nil, err
		}
	}
}

// sandboxLine is the first line of recent MariaDB dumps, a command to the
// client (no shell escapes from here on), not a statement.
var sandboxLine = []byte(`/*M!999999\- enable the sandbox mode */`)

// next returns the next statement, without its final semicolon; io.EOF at
// the end of a complete part.
func (p *dataParser) next() (dataStatement, error) {
	var st bytes.Buffer
	for {
		line, err := p.readLine()
		if errors.Is(err, io.EOF) {
			if st.Len() > 0 {
				return dataStatement{}, engine.Permanentf("%w: the data part ends inside a statement (%.60q)", ErrNoTrailer, st.String())
			}
			if !p.trailer {
				return dataStatement{}, engine.Permanentf("%w: the data part lacks the dump tool's trailer %q", ErrNoTrailer, toolTrailer)
			}
			return dataStatement{}, io.EOF
		}
		if err != nil {
			return dataStatement{}, err
		}
		if st.Len() == 0 {
			trimmed := bytes.TrimSpace(line)
			switch {
			case len(trimmed) == 0:
				continue
			case bytes.HasPrefix(trimmed, []byte("--")):
				if bytes.HasPrefix(trimmed, toolTrailer) {
					p.trailer = true
				}
				continue
			case bytes.HasPrefix(trimmed, sandboxLine):
				continue
			case p.trailer:
				return dataStatement{}, engine.Permanentf("the data part has a statement after the dump tool's trailer (%.60q)", trimmed)
			}
		} else {
			st.WriteByte('\n')
		}
		st.Write(line)
		end := bytes.TrimRight(st.Bytes(), " \t\r")
		if !bytes.HasSuffix(end, []byte(";")) {
			continue
		}
		text := string(bytes.TrimSpace(end[:len(end)-1]))
		switch {
		case hasPrefixFold(text, "INSERT INTO "):
			return dataStatement{kind: stmtInsert, sql: text, table: insertTable(text)}, nil
		case hasPrefixFold(text, "/*!"), hasPrefixFold(text, "SET "):
			return dataStatement{kind: stmtSession, sql: text}, nil
		default:
			return dataStatement{}, engine.Permanentf("the data part holds a statement the parallel import does not run (%.60q): only INSERTs and session settings belong there; "+
				"with mysql.jobs: 1 the client loads the dump as one script", text)
		}
	}
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// insertTable reads the table name of an INSERT INTO `name` statement
// ("" if it is not quoted that way), for messages.
func insertTable(stmt string) string {
	rest := stmt[len("INSERT INTO "):]
	if len(rest) == 0 || rest[0] != '`' {
		return ""
	}
	var b []byte
	for i := 1; i < len(rest); i++ {
		if rest[i] == '`' {
			if i+1 < len(rest) && rest[i+1] == '`' {
				b = append(b, '`')
				i++
				continue
			}
			return string(b)
		}
		b = append(b, rest[i])
	}
	return ""
}

// loadData runs a data part's statements over Options.Jobs sessions of
// database db: session settings on every session (after the statements
// before them have finished), each INSERT on whichever session is free.
// The tables exist (the schema part made them) and have no triggers yet
// (the post part adds them); rows of one table may arrive in any order.
// Each INSERT commits on its own, as the client would run it; one rolled
// back by a deadlock or lock wait timeout runs again, up to 3 times.
func (s *Server) loadData(ctx context.Context, db string, r io.Reader) error {
	jobs := max(1, s.opt.Jobs)
	conns := make([]*sql.Conn, 0, jobs)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for range jobs {
		c, err := s.conn(ctx)
		if err != nil {
			return err
		}
		conns = append(conns, c)
		if _, err := c.ExecContext(ctx, "USE "+ident.QuoteMySQL(db)); err != nil {
			return fmt.Errorf("use database %q: %w", db, err)
		}
		// As a whole dump sets it: the rows come from a consistent copy.
		if _, err := c.ExecContext(ctx, "SET SESSION unique_checks = 0"); err != nil {
			return fmt.Errorf("session settings: %w", err)
		}
	}
	lctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work := make(chan dataStatement, jobs)
	var running, workers sync.WaitGroup
	for _, c := range conns {
		workers.Go(func() {
			failed := false
			for st := range work {
				// After a failure the rest is drained, not run.
				if !failed {
					if err := s.execInsert(lctx, c, st); err != nil {
						cancel(err)
						failed = true
					}
				}
				running.Done()
			}
		})
	}
	err := s.dispatchData(lctx, r, conns, work, &running)
	if err != nil {
		cancel(err)
	}
	close(work)
	workers.Wait()
	if lctx.Err() != nil {
		return context.Cause(lctx)
	}
	return nil
}

// dispatchData parses the data part and hands its INSERTs to the sessions'
// workers through work; session settings it runs itself on every session,
// once the statements before them are done (nothing else uses the
// sessions meanwhile).
func (s *Server) dispatchData(ctx context.Context, r io.Reader, conns []*sql.Conn, work chan<- dataStatement, running *sync.WaitGroup) error {
	p := newDataParser(r)
	for {
		st, err := p.next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if st.kind == stmtSession {
			running.Wait()
			for _, c := range conns {
				if _, err := c.ExecContext(ctx, st.sql); err != nil {
					return fmt.Errorf("session setting %.60q: %w", st.sql, err)
				}
			}
			continue
		}
		running.Add(1)
		select {
		case work <- st:
		case <-ctx.Done():
			running.Done()
			return context.Cause(ctx)
		}
	}
}

// execInsert runs one INSERT of a data part, again after a deadlock or a
// lock wait timeout.
func (s *Server) execInsert(ctx context.Context, c *sql.Conn, st dataStatement) error {
	for attempt := 1; ; attempt++ {
		_, err := c.ExecContext(ctx, st.sql)
		if err == nil {
			return nil
		}
		if n := errNo(err); (n == errDeadlock || n == errLockWaitTimeout) && attempt < 4 {
			s.log.Debug("insert rolled back, running it again", "table", st.table, "attempt", attempt, "err", err)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
			}
			continue
		}
		return fmt.Errorf("load rows of table %s: %w", ident.QuoteMySQL(st.table), redactServerError(err))
	}
}

// redactServerError replaces the values a server error quotes ("Duplicate
// entry '…' for key 'email'") and keeps its number.
func redactServerError(err error) error {
	var me *mysqldrv.MySQLError
	if !errors.As(err, &me) {
		return err
	}
	red := *me
	red.Message = quotedValue.ReplaceAllString(me.Message, "$1'…'")
	return &red
}
