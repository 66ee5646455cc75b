package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// A stream's group is sent to the destination as one batch of statements
// (one round trip): START TRANSACTION, the rows' statements — each UPDATE
// and DELETE followed by a check that it found its row — the move of the
// position record with its own check (a record that is gone fences the
// stream), and COMMIT. A check that fails signals an error that stops the
// batch before COMMIT; the applier rolls back. Sent one by one, a source
// transaction cost four round trips (begin, the row, the position, commit):
// at a destination busy importing, 10–40 ms each, a stream of a database
// written 20 times a second fell behind its source (BENCHMARKS.md, "The
// tail: streams that fell behind").
//
// Values are written into the statements as literals (as the driver's own
// interpolation writes them): a batch carries no parameters.

// batchBytes is how large the statements waiting to be sent grow before
// they are sent within the open transaction (a group of 20,000 rows is
// not one packet).
const batchBytes = 1 << 20

// batchOp is a statement of the batch, for a message if it fails.
type batchOp struct {
	what, table string
}

// checkMark is the message a failed check signals: its op's index follows.
const checkMark = "fleetmigrate check "

// checkFound is the check after an UPDATE or DELETE: it found its row
// (found rows count: the connection's CLIENT_FOUND_ROWS), or the batch
// stops with checkMark and the op's index.
func checkFound(op int) string {
	return fmt.Sprintf("IF ROW_COUNT() = 0 THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '%s%d'; END IF", checkMark, op)
}

var checkFailed = regexp.MustCompile(checkMark + `(\d+)`)

// failedCheck returns the op whose check failed in err, or -1.
func failedCheck(err error) int {
	if err == nil {
		return -1
	}
	m := checkFailed.FindStringSubmatch(err.Error())
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// interpolate writes args into query's placeholders as literals. Only
// placeholders outside backquoted names count (a name may hold a '?'); the
// queries it is given hold no string literals. ok false: a value of a kind
// it does not write.
func interpolate(query string, args []any) (string, bool) {
	var b strings.Builder
	b.Grow(len(query) + 16*len(args))
	next := 0
	inName := false
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case c == '`':
			inName = !inName // a doubled backquote toggles twice
			b.WriteByte(c)
		case c == '?' && !inName:
			if next >= len(args) {
				return "", false
			}
			if !appendLiteral(&b, args[next]) {
				return "", false
			}
			next++
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), next == len(args)
}

// appendLiteral writes v as an SQL literal, as go-sql-driver's
// interpolation does (backslash escapes: the session's sql_mode has no
// NO_BACKSLASH_ESCAPES); false for a kind it does not write.
func appendLiteral(b *strings.Builder, v any) bool {
	switch x := v.(type) {
	case nil:
		b.WriteString("NULL")
	case int64:
		b.WriteString(strconv.FormatInt(x, 10))
	case int:
		b.WriteString(strconv.Itoa(x))
	case int32:
		b.WriteString(strconv.FormatInt(int64(x), 10))
	case int16:
		b.WriteString(strconv.FormatInt(int64(x), 10))
	case int8:
		b.WriteString(strconv.FormatInt(int64(x), 10))
	case uint64:
		b.WriteString(strconv.FormatUint(x, 10))
	case uint32:
		b.WriteString(strconv.FormatUint(uint64(x), 10))
	case float32:
		// As database/sql hands it to the driver: widened to float64.
		if math.IsInf(float64(x), 0) || math.IsNaN(float64(x)) {
			return false
		}
		b.WriteString(strconv.FormatFloat(float64(x), 'g', -1, 64))
	case float64:
		if math.IsInf(x, 0) || math.IsNaN(x) {
			return false
		}
		b.WriteString(strconv.FormatFloat(x, 'g', -1, 64))
	case bool:
		if x {
			b.WriteString("1")
		} else {
			b.WriteString("0")
		}
	case []byte:
		b.WriteString("_binary'")
		escapeInto(b, string(x))
		b.WriteByte('\'')
	case string:
		b.WriteByte('\'')
		escapeInto(b, x)
		b.WriteByte('\'')
	case time.Time:
		if x.IsZero() {
			b.WriteString("'0000-00-00'")
		} else {
			b.WriteString("'" + x.UTC().Format("2006-01-02 15:04:05.999999") + "'")
		}
	default:
		return false
	}
	return true
}

// escapeInto writes s with backslash escapes for what a quoted literal
// cannot hold as is.
func escapeInto(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case 0:
			b.WriteString(`\0`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case 0x1a:
			b.WriteString(`\Z`)
		case '\'':
			b.WriteString(`\'`)
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		default:
			b.WriteByte(c)
		}
	}
}

// add queues a statement of the open group (query with its args), with a
// check that it found its row when check; a statement whose values it
// cannot write as literals is run at once instead, in the transaction.
func (a *applier) add(ctx context.Context, query string, args []any, op batchOp, check bool) error {
	q, ok := interpolate(query, args)
	if !ok {
		if err := a.send(ctx, false); err != nil {
			return err
		}
		if !a.started {
			if _, err := a.c.ExecContext(ctx, "START TRANSACTION"); err != nil {
				return fmt.Errorf("begin at %s: %w", a.st.dst, err)
			}
			a.started = true
		}
		res, err := a.c.ExecContext(ctx, query, args...)
		if err != nil {
			return a.failed(ctx, op, err)
		}
		if n, _ := res.RowsAffected(); check && n == 0 {
			return a.failed(ctx, op, errNotFound(op))
		}
		return nil
	}
	a.ops = append(a.ops, op)
	// Which op a failed batch stopped at: the session variable tells.
	a.stmts = append(a.stmts, fmt.Sprintf("SET @fleetmigrate_op = %d", len(a.ops)-1), q)
	a.size += len(q)
	if check {
		a.stmts = append(a.stmts, checkFound(len(a.ops)-1))
	}
	if a.size >= batchBytes {
		return a.send(ctx, false)
	}
	return nil
}

func errNotFound(op batchOp) error {
	return fmt.Errorf("the row to %s is not at the destination", op.what)
}

// send sends the queued statements in the open transaction (starting it
// if this is its first batch); final: with the position's move and
// COMMIT. A failed check or statement rolls the transaction back and
// breaks or fences the stream (the error says which).
func (a *applier) send(ctx context.Context, final bool) error {
	if len(a.stmts) == 0 && !final {
		return nil
	}
	var b strings.Builder
	b.WriteString("SET @fleetmigrate_op = NULL;\n")
	if !a.started {
		b.WriteString("START TRANSACTION;\n")
	}
	for _, s := range a.stmts {
		b.WriteString(s)
		b.WriteString(";\n")
	}
	if final {
		move, _ := interpolate(moveQuery, []any{a.at.File, a.at.Pos, a.st.name})
		b.WriteString("SET @fleetmigrate_op = NULL;\n" + move + ";\n")
		b.WriteString(checkFound(-1) + ";\n")
		b.WriteString("COMMIT")
	}
	_, err := a.c.ExecContext(ctx, b.String())
	a.started = true
	if err == nil {
		if final {
			a.started = false
		}
		a.stmts, a.size = a.stmts[:0], 0
		if !final {
			// ops stay: a later check names them by index.
			return nil
		}
		a.ops = nil
		return nil
	}
	return a.batchFailed(ctx, err)
}

// batchFailed says what failed, then rolls the open transaction back:
// the position's move (the record is gone: fenced), a row not found, or a
// statement the destination refused (the op the batch had reached).
func (a *applier) batchFailed(ctx context.Context, err error) error {
	fenced := strings.Contains(err.Error(), checkMark+"-1")
	checked := failedCheck(err)
	at := checked
	if at < 0 && !fenced {
		// The op the batch had reached (NULL outside the rows' ops).
		var n sql.NullInt64
		if qerr := a.c.QueryRowContext(context.WithoutCancel(ctx), "SELECT @fleetmigrate_op").Scan(&n); qerr == nil && n.Valid {
			at = int(n.Int64)
		}
	}
	ops := a.ops
	a.rollback(ctx)
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case fenced:
		return ErrFenced
	case at >= 0 && at < len(ops) && checked >= 0:
		return a.broken(ctx, ops[at], errNotFound(ops[at]))
	case at >= 0 && at < len(ops):
		return a.broken(ctx, ops[at], err)
	}
	return a.broken(ctx, batchOp{what: "commit a group"}, err)
}

// failed rolls the open transaction back and breaks the stream for op.
func (a *applier) failed(ctx context.Context, op batchOp, err error) error {
	a.rollback(ctx)
	return a.broken(ctx, op, err)
}

// rollback ends the open transaction and forgets the group.
func (a *applier) rollback(ctx context.Context) {
	if a.started {
		_, _ = a.c.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
	}
	a.started, a.open, a.inTxn = false, false, false
	a.stmts, a.ops, a.size = a.stmts[:0], nil, 0
	a.groupRows, a.txns = 0, 0
}

// broken records why the stream stopped, naming the statement's kind and
// table.
func (a *applier) broken(ctx context.Context, op batchOp, err error) error {
	what := op.what
	if op.table != "" {
		what += " of table " + op.table
	}
	return a.st.broken(ctx, int(errNo(err)), fmt.Sprintf("%s at %s (source position %s): %s", what, a.st.dst, a.at, redactServerMessage(err.Error())))
}
