package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

var recordKind = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)

// PutRecord stores a step record, only while the claim is m's: the claimed
// row is locked, checked and the record upserted in one transaction.
func (s *Store) PutRecord(ctx context.Context, m *statemachine.Migration, kind string, body []byte) error {
	if !recordKind.MatchString(kind) {
		return fmt.Errorf("record kind %q: want lower-case letters, digits, '-' or '_', at most 32", kind)
	}
	if len(body) > 8<<20 {
		return fmt.Errorf("record %s of row %d takes %d bytes, more than 8 MiB", kind, m.ID, len(body))
	}
	upsert := "INSERT INTO migration_record (migration_id, kind, body, owner, fence, updated_at) VALUES (?, ?, ?, ?, ?, " + s.d.now() + ")"
	if s.d.pg() {
		upsert += " ON CONFLICT (migration_id, kind) DO UPDATE SET body = EXCLUDED.body, owner = EXCLUDED.owner, fence = EXCLUDED.fence, updated_at = EXCLUDED.updated_at"
	} else {
		upsert += " ON DUPLICATE KEY UPDATE body = VALUES(body), owner = VALUES(owner), fence = VALUES(fence), updated_at = VALUES(updated_at)"
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if err := s.lockClaim(ctx, tx, m); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, s.d.q(upsert), m.ID, kind, string(body), m.Owner, m.Fence, s.nowArg())
		return err
	})
	if err != nil {
		return fmt.Errorf("write record %s of row %d (fence %d): %w", kind, m.ID, m.Fence, err)
	}
	return nil
}

// GetRecord reads a step record.
func (s *Store) GetRecord(ctx context.Context, id int64, kind string) ([]byte, bool, error) {
	var body string
	err := s.db.QueryRowContext(ctx, s.d.q("SELECT body FROM migration_record WHERE migration_id = ? AND kind = ?"), id, kind).Scan(&body)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read record %s of row %d: %w", kind, id, err)
	}
	return []byte(body), true, nil
}

// lockClaim locks m's row in tx if the claim is still m's (ErrLeaseLost
// otherwise): what a holder writes beside the row is fenced by it.
func (s *Store) lockClaim(ctx context.Context, tx *sql.Tx, m *statemachine.Migration) error {
	var one int
	err := tx.QueryRowContext(ctx, s.d.q("SELECT 1 FROM migration WHERE id = ? AND status = ? AND owner = ? AND fence = ? FOR UPDATE"),
		m.ID, string(m.Status), m.Owner, m.Fence).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return statemachine.ErrLeaseLost
	}
	return err
}
