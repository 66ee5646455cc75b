package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// rescueBatch bounds how many expired rows one Rescue call takes back.
const rescueBatch = 500

// pickIDs selects up to limit ids matching where, locking them and skipping
// rows other transactions have locked.
func (s *Store) pickIDs(ctx context.Context, tx *sql.Tx, where string, limit int, args ...any) ([]int64, error) {
	args = append(args, limit)
	return int64s(tx.QueryContext(ctx, s.d.q("SELECT id FROM migration WHERE "+where+" ORDER BY id LIMIT ?"+s.d.forUpdateSkipLocked()), args...))
}

// int64s reads a one-column result of integers and closes it.
func int64s(rows *sql.Rows, err error) ([]int64, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var n int64
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

func idArgs(ids []int64) []any {
	out := make([]any, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
}

// Claim moves up to req.Limit queued rows of the role's step to its working
// status for req.Owner.
func (s *Store) Claim(ctx context.Context, req statemachine.ClaimRequest) ([]statemachine.Migration, error) {
	step, ok := statemachine.StepFor(req.Role)
	if !ok {
		return nil, fmt.Errorf("claim: role %q claims no rows", req.Role)
	}
	if req.Owner == "" || req.Limit <= 0 || req.Lease <= 0 {
		return nil, fmt.Errorf("claim %s: owner, a positive limit and a positive lease are required", req.Role)
	}
	where, args := "status = ?", []any{string(step.Queued)}
	if step.Side != statemachine.SideAny {
		if req.Host == "" {
			return nil, fmt.Errorf("claim %s: the agent's host is required", req.Role)
		}
		where, args = string(step.Side)+" = ? AND status = ?", []any{req.Host, string(step.Queued)}
	}
	if len(req.Engines) > 0 {
		where += " AND engine IN (" + placeholders(len(req.Engines)) + ")"
		for _, e := range req.Engines {
			args = append(args, string(e))
		}
	}
	// Most polls find nothing: look first without a transaction or locks
	// (one indexed read instead of BEGIN, SELECT ... FOR UPDATE, COMMIT).
	// A row queued just after this look is found by the next poll or
	// wake-up, as it would be if queued just after the locking read.
	var one int
	switch err := s.db.QueryRowContext(ctx, s.d.q("SELECT 1 FROM migration WHERE "+where+" LIMIT 1"), args...).Scan(&one); {
	case errors.Is(err, sql.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("claim %s rows for %s: %w", req.Role, req.Host, s.wrapDBErr(err))
	}
	if s.d.pg() {
		claimed, err := s.claimPG(ctx, step, req, where, args)
		if err != nil {
			return nil, fmt.Errorf("claim %s rows for %s: %w", req.Role, req.Host, err)
		}
		return claimed, nil
	}
	var claimed []statemachine.Migration
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		claimed = nil
		ids, err := s.pickIDs(ctx, tx, where, req.Limit, args...)
		if err != nil || len(ids) == 0 {
			return err
		}
		upd := []any{string(step.Working), req.Owner, s.nowArg(), req.Lease.Microseconds(), s.nowArg()}
		upd = append(upd, idArgs(ids)...)
		upd = append(upd, string(step.Queued))
		if _, err := tx.ExecContext(ctx, s.d.q("UPDATE migration SET status = ?, owner = ?, lease_until = "+s.d.plusMicros(s.d.now())+
			", fence = fence + 1, attempt = attempt + 1, updated_at = "+s.d.now()+
			" WHERE id IN ("+placeholders(len(ids))+") AND status = ?"), upd...); err != nil {
			return s.wrapDBErr(err)
		}
		// Read back what we now hold: still locked by this transaction.
		back := append(idArgs(ids), string(step.Working), req.Owner)
		claimed, err = s.queryMigrations(ctx, tx, "WHERE id IN ("+placeholders(len(ids))+") AND status = ? AND owner = ? ORDER BY id", back...)
		if err != nil {
			return err
		}
		got := make([]int64, len(claimed))
		for i, m := range claimed {
			got[i] = m.ID
		}
		return s.recordEvents(ctx, tx, got, step.Queued, req.Owner, "claimed")
	})
	if err != nil {
		return nil, fmt.Errorf("claim %s rows for %s: %w", req.Role, req.Host, err)
	}
	return claimed, nil
}

// claimPG is Claim in one statement on PostgreSQL (one round trip, no
// explicit transaction): pick and lock, move, record the events, return the
// rows, with the same compare-and-set guard as the MySQL path.
func (s *Store) claimPG(ctx context.Context, step statemachine.Step, req statemachine.ClaimRequest, where string, args []any) ([]statemachine.Migration, error) {
	q := "WITH picked AS (SELECT id FROM migration WHERE " + where + " ORDER BY id LIMIT ?" + s.d.forUpdateSkipLocked() + "), " +
		"claimed AS (UPDATE migration m SET status = ?, owner = ?, lease_until = " + s.d.plusMicros(s.d.now()) +
		", fence = m.fence + 1, attempt = m.attempt + 1, updated_at = " + s.d.now() +
		" FROM picked WHERE m.id = picked.id AND m.status = ? RETURNING m.*), " +
		"ev AS (INSERT INTO migration_event (migration_id, from_status, to_status, actor, detail, created_at) " +
		"SELECT id, ?, status, ?, 'claimed', updated_at FROM claimed) " +
		"SELECT " + migrationColumns + " FROM claimed ORDER BY id"
	all := append(append([]any{}, args...), req.Limit,
		string(step.Working), req.Owner, s.nowArg(), req.Lease.Microseconds(), s.nowArg(), string(step.Queued),
		string(step.Queued), req.Owner)
	var claimed []statemachine.Migration
	err := s.retried(ctx, func() error {
		var err error
		claimed, err = s.queryMigrationsRaw(ctx, s.db, q, all...)
		return err
	})
	if err != nil {
		return nil, s.wrapDBErr(err)
	}
	return claimed, nil
}

// Renew extends a claimed row's lease.
func (s *Store) Renew(ctx context.Context, m *statemachine.Migration, lease time.Duration) (time.Time, error) {
	res, err := s.db.ExecContext(ctx, s.d.q("UPDATE migration SET lease_until = "+s.d.plusMicros(s.d.now())+
		" WHERE id = ? AND status = ? AND owner = ? AND fence = ? AND lease_until >= "+s.d.now()),
		s.nowArg(), lease.Microseconds(), m.ID, string(m.Status), m.Owner, m.Fence, s.nowArg())
	if err != nil {
		return time.Time{}, fmt.Errorf("renew lease of row %d: %w", m.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return time.Time{}, fmt.Errorf("renew lease of row %d (fence %d): %w", m.ID, m.Fence, statemachine.ErrLeaseLost)
	}
	var until time.Time
	if err := s.db.QueryRowContext(ctx, s.d.q("SELECT lease_until FROM migration WHERE id = ? AND fence = ?"), m.ID, m.Fence).Scan(&until); err != nil {
		return time.Time{}, fmt.Errorf("read renewed lease of row %d: %w", m.ID, err)
	}
	m.LeaseUntil = until.UTC()
	return m.LeaseUntil, nil
}

// Advance moves a claimed row to its step's next status.
func (s *Store) Advance(ctx context.Context, m *statemachine.Migration, f statemachine.Fields, detail string) error {
	step, err := claimedStep(m)
	if err != nil {
		return err
	}
	if f.Divert && step.Divert == "" {
		return fmt.Errorf("row %d: the %s step has no other way on than %q: %w", m.ID, step.Role, step.NextStatus(m.DNSName), statemachine.ErrInvalidTransition)
	}
	to := step.NextFor(m, f)
	if f.Divert {
		detail = step.DivertLabel + ": " + detail
	}
	return s.moveClaimed(ctx, m, to, f, nil, true, detail)
}

// Fail moves a claimed row to its step's failed status.
func (s *Store) Fail(ctx context.Context, m *statemachine.Migration, f statemachine.Fields, reason string) error {
	step, err := claimedStep(m)
	if err != nil {
		return err
	}
	return s.moveClaimed(ctx, m, step.Failed, f, &reason, false, reason)
}

// Release gives a claimed row back to its step's queued status.
func (s *Store) Release(ctx context.Context, m *statemachine.Migration, f statemachine.Fields, reason string) error {
	step, err := claimedStep(m)
	if err != nil {
		return err
	}
	return s.moveClaimed(ctx, m, step.Queued, f, &reason, false, "released: "+reason)
}

func claimedStep(m *statemachine.Migration) (statemachine.Step, error) {
	step, ok := statemachine.StepOf(m.Status)
	if !ok {
		return step, fmt.Errorf("row %d is in %q, which no agent holds: %w", m.ID, m.Status, statemachine.ErrLeaseLost)
	}
	return step, nil
}

// moveClaimed is the one compare-and-set that ends a claim: it moves the
// row to `to` only if it is still in m's status, owner and fence.
func (s *Store) moveClaimed(ctx context.Context, m *statemachine.Migration, to statemachine.Status, f statemachine.Fields,
	lastError *string, success bool, detail string) error {
	set, setArgs, err := s.fieldsSQL(f)
	if err != nil {
		return err
	}
	set = append(set, "status = ?", "owner = NULL", "lease_until = NULL", "updated_at = "+s.d.now())
	setArgs = append(setArgs, string(to), s.nowArg())
	if success {
		set = append(set, "attempt = 0", "last_error = NULL")
	} else if lastError != nil {
		set = append(set, "last_error = ?")
		setArgs = append(setArgs, truncate(*lastError, 4000))
	}
	err = s.updateClaimed(ctx, m, set, setArgs, detail)
	if err != nil {
		return fmt.Errorf("move row %d from %q to %q (fence %d): %w", m.ID, m.Status, to, m.Fence, err)
	}
	m.Status, m.Owner, m.LeaseUntil = to, "", time.Time{}
	return nil
}

// updateClaimed is the compare-and-set on a claimed row: it applies set only
// while the row is still in m's status, owner and fence, and records the
// event in the same transaction. A lost claim is ErrLeaseLost.
func (s *Store) updateClaimed(ctx context.Context, m *statemachine.Migration, set []string, setArgs []any, detail string) error {
	if s.d.pg() {
		// One statement: the update and its event (one round trip).
		args := append(append([]any{}, setArgs...), m.ID, string(m.Status), m.Owner, m.Fence, string(m.Status), m.Owner, truncate(detail, 4000))
		return s.retried(ctx, func() error {
			res, err := s.db.ExecContext(ctx, s.d.q("WITH u AS (UPDATE migration SET "+strings.Join(set, ", ")+
				" WHERE id = ? AND status = ? AND owner = ? AND fence = ? RETURNING id, status, updated_at) "+
				"INSERT INTO migration_event (migration_id, from_status, to_status, actor, detail, created_at) "+
				"SELECT id, ?, status, ?, ?, updated_at FROM u"), args...)
			if err != nil {
				return s.wrapDBErr(err)
			}
			if n, err := res.RowsAffected(); err != nil || n != 1 {
				return statemachine.ErrLeaseLost
			}
			return nil
		})
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		args := append(append([]any{}, setArgs...), m.ID, string(m.Status), m.Owner, m.Fence)
		res, err := tx.ExecContext(ctx, s.d.q("UPDATE migration SET "+strings.Join(set, ", ")+
			" WHERE id = ? AND status = ? AND owner = ? AND fence = ?"), args...)
		if err != nil {
			return s.wrapDBErr(err)
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return statemachine.ErrLeaseLost
		}
		return s.recordEvents(ctx, tx, []int64{m.ID}, m.Status, m.Owner, truncate(detail, 4000))
	})
}

// Record writes f on a claimed row without changing its status.
func (s *Store) Record(ctx context.Context, m *statemachine.Migration, f statemachine.Fields, detail string) error {
	set, setArgs, err := s.fieldsSQL(f)
	if err != nil {
		return err
	}
	if len(set) == 0 {
		return nil
	}
	set = append(set, "updated_at = "+s.d.now())
	setArgs = append(setArgs, s.nowArg())
	if detail == "" {
		detail = describeFields(f)
	}
	err = s.updateClaimed(ctx, m, set, setArgs, detail)
	if err != nil {
		return fmt.Errorf("record on row %d (fence %d): %w", m.ID, m.Fence, err)
	}
	return nil
}

// Progress adds a progress note to a claimed row's events, only while the
// claim is m's.
func (s *Store) Progress(ctx context.Context, m *statemachine.Migration, detail string) error {
	res, err := s.db.ExecContext(ctx, s.d.q(
		"INSERT INTO migration_event (migration_id, from_status, to_status, actor, detail, created_at) "+
			"SELECT id, status, status, owner, ?, "+s.d.now()+" FROM migration WHERE id = ? AND status = ? AND owner = ? AND fence = ?"),
		truncate(detail, 4000), s.nowArg(), m.ID, string(m.Status), m.Owner, m.Fence)
	if err != nil {
		return fmt.Errorf("progress on row %d: %w", m.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return fmt.Errorf("progress on row %d (fence %d): %w", m.ID, m.Fence, statemachine.ErrLeaseLost)
	}
	return nil
}

// NoteRetry records a retry of the step by the claim's holder.
func (s *Store) NoteRetry(ctx context.Context, m *statemachine.Migration, reason string) error {
	reason = truncate(reason, 4000)
	err := s.updateClaimed(ctx, m, []string{"attempt = attempt + 1", "last_error = ?", "updated_at = " + s.d.now()},
		[]any{reason, s.nowArg()}, fmt.Sprintf("retry %d after: %s", m.Attempt+1, reason))
	if err != nil {
		return fmt.Errorf("note retry on row %d (fence %d): %w", m.ID, m.Fence, err)
	}
	m.Attempt++
	m.LastError = reason
	return nil
}

// ExpireDump clears dump_url on a finished row after its dump was deleted.
func (s *Store) ExpireDump(ctx context.Context, id int64, url, actor, detail string) (bool, error) {
	var done bool
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.d.q("UPDATE migration SET dump_url = NULL, updated_at = "+s.d.now()+
			" WHERE id = ? AND dump_url = ? AND status IN (?, ?, ?)"),
			s.nowArg(), id, url, string(statemachine.Done), string(statemachine.RolledBack), string(statemachine.Cancelled))
		if err != nil {
			return s.wrapDBErr(err)
		}
		n, err := res.RowsAffected()
		if err != nil || n != 1 {
			return err
		}
		done = true
		_, err = tx.ExecContext(ctx, s.d.q("INSERT INTO migration_event (migration_id, from_status, to_status, actor, detail, created_at) "+
			"SELECT id, status, status, ?, ?, updated_at FROM migration WHERE id = ?"), actor, truncate(detail, 4000), id)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("expire the dump of row %d: %w", id, err)
	}
	return done, nil
}

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// fieldsSQL renders f as SET clauses and their arguments.
func (s *Store) fieldsSQL(f statemachine.Fields) ([]string, []any, error) {
	var set []string
	var args []any
	if f.SizeBytes < 0 || f.DumpBytes < 0 {
		return nil, nil, errors.New("sizes cannot be negative")
	}
	if f.SizeBytes > 0 {
		set, args = append(set, "size_bytes = ?"), append(args, f.SizeBytes)
	}
	if f.DumpURL != "" || f.DumpSHA256 != "" {
		if f.DumpURL == "" || !sha256Hex.MatchString(f.DumpSHA256) {
			return nil, nil, fmt.Errorf("a dump is recorded with its URL and its SHA-256 as 64 lower-case hex digits (got url %q, sha256 %q)", f.DumpURL, f.DumpSHA256)
		}
		set = append(set, "dump_url = ?", "dump_sha256 = ?", "dump_bytes = ?")
		args = append(args, f.DumpURL, f.DumpSHA256, f.DumpBytes)
	}
	if !f.ConsistencyPoint.IsZero() {
		set, args = append(set, "consistency_point = ?"), append(args, f.ConsistencyPoint.UTC())
	}
	if f.Mode != "" {
		if f.Mode != statemachine.ModeDump && f.Mode != statemachine.ModeOnline {
			return nil, nil, fmt.Errorf("a row's mode is recorded as dump or online, not %q", f.Mode)
		}
		set, args = append(set, "mode = ?"), append(args, string(f.Mode))
	}
	for _, mk := range f.Marks {
		switch mk {
		case statemachine.MarkBlocked:
			set = append(set, "blocked_at = "+s.d.now(), "unblocked_at = NULL")
			args = append(args, s.nowArg())
		case statemachine.MarkUnblocked:
			set, args = append(set, "unblocked_at = "+s.d.now()), append(args, s.nowArg())
		case statemachine.MarkSwitched:
			set, args = append(set, "switched_at = "+s.d.now()), append(args, s.nowArg())
		case statemachine.MarkUnswitched:
			set = append(set, "switched_at = NULL")
		default:
			return nil, nil, fmt.Errorf("unknown mark %d", mk)
		}
	}
	return set, args, nil
}

func describeFields(f statemachine.Fields) string {
	var parts []string
	for _, mk := range f.Marks {
		switch mk {
		case statemachine.MarkBlocked:
			parts = append(parts, "writes blocked at the source")
		case statemachine.MarkUnblocked:
			parts = append(parts, "writes restored at the source")
		case statemachine.MarkSwitched:
			parts = append(parts, "DNS name points at the destination")
		case statemachine.MarkUnswitched:
			parts = append(parts, "DNS name points at the source again")
		}
	}
	if f.DumpURL != "" {
		parts = append(parts, fmt.Sprintf("dump stored: %s (%d bytes, sha256 %s)", f.DumpURL, f.DumpBytes, f.DumpSHA256))
	}
	if f.SizeBytes > 0 {
		parts = append(parts, fmt.Sprintf("size %d bytes", f.SizeBytes))
	}
	if f.Mode != "" {
		parts = append(parts, "mode "+string(f.Mode))
	}
	if len(parts) == 0 {
		return "recorded"
	}
	return strings.Join(parts, "; ")
}

// Rescue takes back rows whose lease expired.
func (s *Store) Rescue(ctx context.Context, maxAttempts int) ([]statemachine.Rescued, error) {
	working := workingStatuses()
	return s.rescue(ctx, maxAttempts, nil, "status IN ("+placeholders(len(working))+") AND lease_until < "+s.d.now(), append(working, s.nowArg())...)
}

// RescueHost takes back one role's rows on one host whose lease expired or
// whose owner is one of gone.
func (s *Store) RescueHost(ctx context.Context, role statemachine.Role, host string, gone []string, maxAttempts int) ([]statemachine.Rescued, error) {
	step, ok := statemachine.StepFor(role)
	if !ok {
		return nil, fmt.Errorf("rescue: role %q holds no rows", role)
	}
	where := string(step.Side) + " = ? AND status = ?"
	args := []any{host, string(step.Working)}
	if step.Side == statemachine.SideAny {
		where, args = "status = ? AND owner LIKE ?", []any{string(step.Working), likePrefix(host + "/")}
	}
	expired := "lease_until < " + s.d.now()
	args = append(args, s.nowArg())
	if len(gone) > 0 {
		expired += " OR owner IN (" + placeholders(len(gone)) + ")"
		for _, o := range gone {
			args = append(args, o)
		}
	}
	return s.rescue(ctx, maxAttempts, gone, where+" AND ("+expired+")", args...)
}

// likePrefix escapes s for use as a LIKE prefix.
func likePrefix(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(s) + "%"
}

// rescue takes back the rows where selects: to their step's queued status,
// or its failed status once attempt has reached maxAttempts. Rows whose
// owner is one of gone are said to be taken back from a process that is
// gone, the others from an expired lease.
func (s *Store) rescue(ctx context.Context, maxAttempts int, gone []string, where string, whereArgs ...any) ([]statemachine.Rescued, error) {
	if maxAttempts < 1 {
		maxAttempts = 1
	}
	var out []statemachine.Rescued
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		out = nil
		ids, err := s.pickIDs(ctx, tx, where, rescueBatch, whereArgs...)
		if err != nil || len(ids) == 0 {
			return err
		}
		rows, err := s.queryMigrations(ctx, tx, "WHERE id IN ("+placeholders(len(ids))+") ORDER BY id", idArgs(ids)...)
		if err != nil {
			return err
		}
		for _, m := range rows {
			step, ok := statemachine.StepOf(m.Status)
			if !ok {
				continue
			}
			to, then := step.Queued, "will retry"
			if m.Attempt >= maxAttempts {
				to, then = step.Failed, "giving up"
			}
			why := fmt.Sprintf("lease of %s expired at %s", m.Owner, m.LeaseUntil.Format(time.RFC3339))
			if slices.Contains(gone, m.Owner) {
				why = fmt.Sprintf("%s is gone (its process ended; taken back at once by the agent that replaced it on the same machine)", m.Owner)
			}
			reason := fmt.Sprintf("%s during attempt %d of %d; %s", why, m.Attempt, maxAttempts, then)
			res, err := tx.ExecContext(ctx, s.d.q("UPDATE migration SET status = ?, owner = NULL, lease_until = NULL, last_error = ?, updated_at = "+
				s.d.now()+" WHERE id = ? AND status = ? AND fence = ?"),
				string(to), reason, s.nowArg(), m.ID, string(m.Status), m.Fence)
			if err != nil {
				return s.wrapDBErr(err)
			}
			if n, _ := res.RowsAffected(); n != 1 {
				continue
			}
			if err := s.recordEvents(ctx, tx, []int64{m.ID}, m.Status, string(statemachine.RoleRescuer), reason); err != nil {
				return err
			}
			out = append(out, statemachine.Rescued{ID: m.ID, From: m.Status, To: to, Owner: m.Owner})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("rescue expired leases: %w", err)
	}
	return out, nil
}

// Operate applies an operator action to one row.
func (s *Store) Operate(ctx context.Context, id int64, action, actor, detail string) (statemachine.Migration, error) {
	m, err := s.Get(ctx, id)
	if err != nil {
		return m, err
	}
	to, err := statemachine.OperatorTarget(action, m.Status)
	if err != nil {
		return m, fmt.Errorf("row %d: %w", id, err)
	}
	set := "status = ?, updated_at = " + s.d.now()
	if action != statemachine.ActionRetry {
		// a rollback or a cancellation starts a new step: its attempts count
		// from zero. A retry keeps counting: it counts toward the limit.
		set += ", attempt = 0"
	}
	if m.Status.Working() {
		// An online row stopped while syncing: its claim ends here, which
		// fences the step out (its next write finds another owner).
		set += ", owner = NULL, lease_until = NULL"
	}
	if detail == "" {
		detail = action
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.d.q("UPDATE migration SET "+set+" WHERE id = ? AND status = ?"),
			string(to), s.nowArg(), id, string(m.Status))
		if err != nil {
			return s.wrapDBErr(err)
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return statemachine.ErrConflict
		}
		return s.recordEvents(ctx, tx, []int64{id}, m.Status, actor, truncate(detail, 4000))
	})
	if errors.Is(err, statemachine.ErrConflict) {
		now, gerr := s.Get(ctx, id)
		if gerr == nil {
			return now, fmt.Errorf("%s row %d: it moved from %q to %q meanwhile: %w", action, id, m.Status, now.Status, err)
		}
	}
	if err != nil {
		return m, fmt.Errorf("%s row %d: %w", action, id, err)
	}
	return s.Get(ctx, id)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && (s[cut]&0xC0) == 0x80 { // do not split a UTF-8 sequence
		cut--
	}
	return s[:cut] + "…"
}
