package statemachine

import (
	"context"
	"errors"
	"time"
)

// Peer asks (issue 33, part 4): the agent holding a row never changes the
// server of the row's other side itself; it asks that side's agent, through
// the state table, and waits for the answer. The asked agent checks the ask
// against the row, plans and makes the change on its own server, and
// answers with what it did. The database holds everyone to this: only the
// row's holder asks (its side's working status, its fence), the asked host
// comes from the row, and only that host's agent answers, once.

// Ask is one request of a row's holder to the agent of the row's other side.
type Ask struct {
	ID          int64
	MigrationID int64
	// Side is the side asked; Host its host and Asker the asking side's
	// host, both from the row when it was asked.
	Side   HostSide
	Host   string
	Asker  string
	Action string
	// Ref ties asks together (a block and its undo share the asking step's
	// token).
	Ref string
	// Fence is the asker's claim on the row when it asked.
	Fence   int64
	AskedBy string
	AskedAt time.Time
	// AnsweredAt is zero while the ask is open; AnsweredBy is the login
	// that answered.
	AnsweredBy string
	AnsweredAt time.Time
	// Error is why it was not done ("" when it was); Answer is what was
	// done (JSON, the action's own).
	Error  string
	Answer []byte
}

// Answered reports whether the ask has its answer.
func (a Ask) Answered() bool { return !a.AnsweredAt.IsZero() }

// ErrAnswered is returned by AnswerAsk for an ask that has its answer.
var ErrAnswered = errors.New("the ask was answered already")

// Asks is implemented by stores that carry peer asks.
type Asks interface {
	// Ask records that m's holder asks the agent of m's side side to do
	// action (ref: see Ask.Ref) and returns the ask's id. The claim must
	// still be m's (ErrLeaseLost otherwise).
	Ask(ctx context.Context, m *Migration, side HostSide, action, ref string) (int64, error)
	// GetAsk reads an ask (ErrNotFound: none).
	GetAsk(ctx context.Context, id int64) (Ask, error)
	// OpenAsks lists, oldest first and at most limit, the asks of host
	// that have no answer yet.
	OpenAsks(ctx context.Context, host string, limit int) ([]Ask, error)
	// AsksOf lists a row's asks with ref, oldest first.
	AsksOf(ctx context.Context, migrationID int64, ref string) ([]Ask, error)
	// SaveAnswer writes answer into an open ask without answering it: what
	// the asked agent is about to change, written before it changes it.
	// ErrAnswered if the ask has its answer.
	SaveAnswer(ctx context.Context, id int64, answer []byte) error
	// AnswerAsk answers an open ask: errText empty when it was done,
	// answer what was done. ErrAnswered if it has its answer already.
	AnswerAsk(ctx context.Context, id int64, answer []byte, errText string) error
	// RecordAuthor says who last wrote a row's step record: the host whose
	// agent login wrote it, or "" for an operator's login; ok is false
	// when there is no such record.
	RecordAuthor(ctx context.Context, migrationID int64, kind string) (host string, ok bool, err error)
	// WakeAsks and WakeAnswers are Waker's for asks: a channel that
	// receives when host may have a new ask, or one of host's asks an
	// answer (never, on a store without notifications).
	WakeAsks(host string) (<-chan struct{}, func())
	WakeAnswers(host string) (<-chan struct{}, func())
}
