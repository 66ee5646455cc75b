package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/fleetmigrate/fleetmigrate/migrations"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// Peer asks (statemachine.Asks; migrations 00012). The database sets the
// asked host and the asker from the row, and holds an agent login to its
// own rows' asks and answers; these methods add the claim check for every
// login, as PutRecord does.

var _ statemachine.Asks = (*Store)(nil)

const askColumns = "id, migration_id, side, host, asker, action, ref, fence, asked_by, asked_at, answered_by, answered_at, error, answer"

// Ask implements statemachine.Asks.
func (s *Store) Ask(ctx context.Context, m *statemachine.Migration, side statemachine.HostSide, action, ref string) (int64, error) {
	if side != statemachine.SideSource && side != statemachine.SideDestination {
		return 0, fmt.Errorf("ask %s of row %d: side %q: want source or destination", action, m.ID, side)
	}
	if !recordKind.MatchString(action) {
		return 0, fmt.Errorf("ask %q of row %d: want lower-case letters, digits, '-' or '_', at most 32", action, m.ID)
	}
	if len(ref) > 64 {
		return 0, fmt.Errorf("ask %s of row %d: ref longer than 64", action, m.ID)
	}
	var id int64
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if err := s.lockClaim(ctx, tx, m); err != nil {
			return err
		}
		insert := "INSERT INTO migration_ask (migration_id, side, action, ref, fence, error, answer) VALUES (?, ?, ?, ?, ?, '', '')"
		if s.d.pg() {
			return tx.QueryRowContext(ctx, s.d.q(insert+" RETURNING id"), m.ID, string(side), action, ref, m.Fence).Scan(&id)
		}
		res, err := tx.ExecContext(ctx, insert, m.ID, string(side), action, ref, m.Fence)
		if err != nil {
			return err
		}
		id, err = res.LastInsertId()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("ask the %s of row %d to %s: %w", side, m.ID, action, s.wrapDBErr(err))
	}
	return id, nil
}

// GetAsk implements statemachine.Asks.
func (s *Store) GetAsk(ctx context.Context, id int64) (statemachine.Ask, error) {
	asks, err := s.queryAsks(ctx, "SELECT "+askColumns+" FROM migration_ask WHERE id = ?", id)
	if err != nil {
		return statemachine.Ask{}, fmt.Errorf("read ask %d: %w", id, err)
	}
	if len(asks) == 0 {
		return statemachine.Ask{}, fmt.Errorf("ask %d: %w", id, statemachine.ErrNotFound)
	}
	return asks[0], nil
}

// OpenAsks implements statemachine.Asks.
func (s *Store) OpenAsks(ctx context.Context, host string, limit int) ([]statemachine.Ask, error) {
	asks, err := s.queryAsks(ctx, "SELECT "+askColumns+" FROM migration_ask WHERE host = ? AND answered_at IS NULL ORDER BY id LIMIT ?", host, limit)
	if err != nil {
		return nil, fmt.Errorf("read the open asks of host %s: %w", host, err)
	}
	return asks, nil
}

// AsksOf implements statemachine.Asks.
func (s *Store) AsksOf(ctx context.Context, migrationID int64, ref string) ([]statemachine.Ask, error) {
	asks, err := s.queryAsks(ctx, "SELECT "+askColumns+" FROM migration_ask WHERE migration_id = ? AND ref = ? ORDER BY id", migrationID, ref)
	if err != nil {
		return nil, fmt.Errorf("read the asks of row %d: %w", migrationID, err)
	}
	return asks, nil
}

// AnswerAsk implements statemachine.Asks.
func (s *Store) AnswerAsk(ctx context.Context, id int64, answer []byte, errText string) error {
	return s.answer(ctx, id, "UPDATE migration_ask SET answered_at = "+s.d.now()+", error = ?, answer = ? WHERE id = ? AND answered_at IS NULL",
		s.nowArg(), errText, string(answer), id)
}

// SaveAnswer implements statemachine.Asks.
func (s *Store) SaveAnswer(ctx context.Context, id int64, answer []byte) error {
	return s.answer(ctx, id, "UPDATE migration_ask SET answer = ? WHERE id = ? AND answered_at IS NULL", string(answer), id)
}

func (s *Store) answer(ctx context.Context, id int64, update string, args ...any) error {
	if n := len(args[len(args)-2].(string)); n > 8<<20 {
		return fmt.Errorf("answer to ask %d takes %d bytes, more than 8 MiB", id, n)
	}
	var res sql.Result
	err := s.retried(ctx, func() error {
		var err error
		res, err = s.db.ExecContext(ctx, s.d.q(update), args...)
		return err
	})
	if err != nil {
		return fmt.Errorf("answer ask %d: %w", id, s.wrapDBErr(err))
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("answer ask %d: %w", id, err)
	} else if n == 0 {
		if _, err := s.GetAsk(ctx, id); err != nil {
			return err
		}
		return fmt.Errorf("answer ask %d: %w", id, statemachine.ErrAnswered)
	}
	return nil
}

// WakeAsks implements statemachine.Asks (PostgreSQL: 00012's NOTIFY).
func (s *Store) WakeAsks(host string) (<-chan struct{}, func()) {
	if s.d.name != migrations.Postgres {
		return nil, func() {}
	}
	return s.subscribe(hostChannel(host), "ask")
}

// WakeAnswers implements statemachine.Asks.
func (s *Store) WakeAnswers(host string) (<-chan struct{}, func()) {
	if s.d.name != migrations.Postgres {
		return nil, func() {}
	}
	return s.subscribe(hostChannel(host), "answer")
}

func (s *Store) queryAsks(ctx context.Context, query string, args ...any) ([]statemachine.Ask, error) {
	rows, err := s.db.QueryContext(ctx, s.d.q(query), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []statemachine.Ask
	for rows.Next() {
		var a statemachine.Ask
		var side, answer string
		var answered sql.NullTime
		if err := rows.Scan(&a.ID, &a.MigrationID, &side, &a.Host, &a.Asker, &a.Action, &a.Ref, &a.Fence, &a.AskedBy, &a.AskedAt,
			&a.AnsweredBy, &answered, &a.Error, &answer); err != nil {
			return nil, err
		}
		a.Side, a.Answer = statemachine.HostSide(side), []byte(answer)
		a.AskedAt = a.AskedAt.UTC()
		if answered.Valid {
			a.AnsweredAt = answered.Time.UTC()
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// OpenAskSummary counts the asks without an answer and returns the oldest
// (zero when none): an ask left open long says its host's agent is not
// answering (migrate status).
func (s *Store) OpenAskSummary(ctx context.Context) (int, statemachine.Ask, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM migration_ask WHERE answered_at IS NULL").Scan(&n); err != nil {
		return 0, statemachine.Ask{}, fmt.Errorf("count the open peer asks: %w", err)
	}
	if n == 0 {
		return 0, statemachine.Ask{}, nil
	}
	asks, err := s.queryAsks(ctx, "SELECT "+askColumns+" FROM migration_ask WHERE answered_at IS NULL ORDER BY id LIMIT 1")
	if err != nil || len(asks) == 0 {
		return n, statemachine.Ask{}, err
	}
	return n, asks[0], nil
}

// RecordAuthor implements statemachine.Asks.
func (s *Store) RecordAuthor(ctx context.Context, migrationID int64, kind string) (string, bool, error) {
	var host sql.NullString
	err := s.db.QueryRowContext(ctx, s.d.q("SELECT a.host FROM migration_record r LEFT JOIN agent_login a ON a.login = r.login WHERE r.migration_id = ? AND r.kind = ?"),
		migrationID, kind).Scan(&host)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read who wrote record %s of row %d: %w", kind, migrationID, err)
	}
	return host.String, true, nil
}
