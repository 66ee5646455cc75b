package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// Unswitch clears switched_at of an unclaimed row an operator may roll
// back, with an event, in one transaction.
func (s *Store) Unswitch(ctx context.Context, id int64, actor, detail string) error {
	in := strings.TrimSuffix(strings.Repeat("?, ", len(statemachine.RollbackFrom)), ", ")
	args := []any{id}
	for _, st := range statemachine.RollbackFrom {
		args = append(args, string(st))
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var status string
		err := tx.QueryRowContext(ctx, s.d.q("SELECT status FROM migration WHERE id = ? AND owner IS NULL AND status IN ("+in+") FOR UPDATE"), args...).Scan(&status)
		if errors.Is(err, sql.ErrNoRows) {
			return statemachine.ErrConflict
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.d.q("UPDATE migration SET switched_at = NULL, updated_at = "+s.d.now()+" WHERE id = ?"), s.nowArg(), id); err != nil {
			return err
		}
		return s.recordEvents(ctx, tx, []int64{id}, statemachine.Status(status), actor, truncate(detail, 4000))
	})
	if err != nil {
		return fmt.Errorf("record that the DNS name of row %d points at the source again: %w", id, err)
	}
	return nil
}

// SaveTTL records a name's original TTL before it is lowered.
func (s *Store) SaveTTL(ctx context.Context, name string, original, lowered uint32, by string) (statemachine.TTLRecord, error) {
	var rec statemachine.TTLRecord
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		// a name restored earlier starts a new record
		if _, err := tx.ExecContext(ctx, s.d.q("UPDATE dns_ttl SET original_ttl = ?, lowered_ttl = ?, lowered_at = "+s.d.now()+", lowered_by = ?, restored_at = NULL "+
			"WHERE name = ? AND restored_at IS NOT NULL"), original, lowered, s.nowArg(), by, name); err != nil {
			return err
		}
		insert := "INSERT INTO dns_ttl (name, original_ttl, lowered_ttl, lowered_at, lowered_by) VALUES (?, ?, ?, " + s.d.now() + ", ?)"
		if s.d.pg() {
			insert += " ON CONFLICT (name) DO NOTHING"
		} else {
			insert += " ON DUPLICATE KEY UPDATE name = name"
		}
		if _, err := tx.ExecContext(ctx, s.d.q(insert), name, original, lowered, s.nowArg(), by); err != nil {
			return err
		}
		got, err := s.ttlRecords(ctx, tx, []string{name})
		rec = got[name]
		return err
	})
	if err != nil {
		return rec, fmt.Errorf("record the TTL of %s: %w", name, err)
	}
	return rec, nil
}

// TTLRecords reads the records of names, 500 at a time.
func (s *Store) TTLRecords(ctx context.Context, names []string) (map[string]statemachine.TTLRecord, error) {
	out := map[string]statemachine.TTLRecord{}
	for len(names) > 0 {
		n := min(len(names), 500)
		got, err := s.ttlRecords(ctx, s.db, names[:n])
		if err != nil {
			return nil, fmt.Errorf("read DNS TTL records: %w", err)
		}
		for k, v := range got {
			out[k] = v
		}
		names = names[n:]
	}
	return out, nil
}

func (s *Store) ttlRecords(ctx context.Context, q querier, names []string) (map[string]statemachine.TTLRecord, error) {
	args := make([]any, len(names))
	for i, n := range names {
		args[i] = n
	}
	rows, err := q.QueryContext(ctx, s.d.q("SELECT name, original_ttl, lowered_ttl, lowered_at, lowered_by, restored_at FROM dns_ttl WHERE name IN ("+
		strings.TrimSuffix(strings.Repeat("?, ", len(names)), ", ")+")"), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]statemachine.TTLRecord{}
	for rows.Next() {
		var r statemachine.TTLRecord
		var lowered, restored sql.NullTime
		var orig, low int64
		if err := rows.Scan(&r.Name, &orig, &low, &lowered, &r.LoweredBy, &restored); err != nil {
			return nil, err
		}
		r.OriginalTTL, r.LoweredTTL, r.LoweredAt, r.RestoredAt = uint32(orig), uint32(low), utc(lowered), utc(restored)
		out[r.Name] = r
	}
	return out, rows.Err()
}

// MarkTTLRestored records that name's original TTL is back.
func (s *Store) MarkTTLRestored(ctx context.Context, name string) error {
	if _, err := s.db.ExecContext(ctx, s.d.q("UPDATE dns_ttl SET restored_at = "+s.d.now()+" WHERE name = ? AND restored_at IS NULL"), s.nowArg(), name); err != nil {
		return fmt.Errorf("record the restored TTL of %s: %w", name, err)
	}
	return nil
}
