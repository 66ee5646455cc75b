package storetest

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// Peer asks (issue 33, part 4): only a row's holder asks, only the other
// side's host is asked (from the row, whatever the asker writes), only that
// host's agent answers, once, and nothing but the answer changes — held by
// the database, on the agents' own logins.

func asks(t *testing.T, s statemachine.Store) statemachine.Asks {
	t.Helper()
	a, ok := s.(statemachine.Asks)
	if !ok {
		t.Fatalf("%T carries no peer asks", s)
	}
	return a
}

func testPeerAsks(t *testing.T, h Harness) {
	rows := planByName(t, h, row("mine", "a", "b", "mine.db.test", statemachine.ModeDump), row("theirs", "c", "d", "", statemachine.ModeDump))
	mustPromote(t, h.Store, 2)
	a, adb := h.AsAgent(t, "a", false)
	b, bdb := h.AsAgent(t, "b", false)
	c, _ := h.AsAgent(t, "c", false)
	q := h.Q

	held := claimAs(t, b, statemachine.RoleDump, "b", time.Minute) // b, the destination, holds "mine"
	if held.ID != rows["mine"].ID {
		t.Fatalf("b claimed row %d", held.ID)
	}
	id, err := asks(t, b).Ask(ctx(t), &held, statemachine.SideSource, "block", "dump-1-x")
	if err != nil {
		t.Fatalf("b, holding the row, asks its source: %v", err)
	}
	got, err := asks(t, a).GetAsk(ctx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	if got.Host != "a" || got.Asker != "b" || got.Side != statemachine.SideSource || got.Action != "block" || got.Ref != "dump-1-x" ||
		got.Fence != held.Fence || got.AskedBy == "" || got.Answered() {
		t.Errorf("the ask as stored: %+v", got)
	}
	if open, err := asks(t, a).OpenAsks(ctx(t), "a", 10); err != nil || len(open) != 1 || open[0].ID != id {
		t.Errorf("a's open asks: %+v, %v", open, err)
	}
	if open, err := asks(t, b).OpenAsks(ctx(t), "b", 10); err != nil || len(open) != 0 {
		t.Errorf("b's open asks: %+v, %v", open, err)
	}

	// Refused: asking for a row one does not hold, or another host's.
	_, err = adb.ExecContext(ctx(t), q("INSERT INTO migration_ask (migration_id, side, action, ref, fence, error, answer) VALUES (?, 'destination', 'drop', '', ?, '', '')"), held.ID, held.Fence)
	wantRefused(t, "a (the source, not holding the row) asks its destination", err)
	_, err = bdb.ExecContext(ctx(t), q("INSERT INTO migration_ask (migration_id, side, action, ref, fence, error, answer) VALUES (?, 'source', 'block', '', ?, '', '')"), held.ID, held.Fence-1)
	wantRefused(t, "b asks with an earlier claim's fence", err)
	_, err = bdb.ExecContext(ctx(t), q("INSERT INTO migration_ask (migration_id, side, action, ref, fence, error, answer) VALUES (?, 'source', 'block', '', 0, '', '')"), rows["theirs"].ID)
	wantRefused(t, "b asks c about c→d's row", err)
	_, err = asks(t, c).Ask(ctx(t), &held, statemachine.SideSource, "block", "")
	wantRefused(t, "c asks about a→b's row under b's claim", err)
	// The asked host comes from the row, whatever the asker writes.
	if _, err := bdb.ExecContext(ctx(t), q("INSERT INTO migration_ask (migration_id, side, host, asker, action, ref, fence, error, answer) VALUES (?, 'source', 'c', 'c', 'block', 'forged', ?, '', '')"), held.ID, held.Fence); err == nil {
		if n := countAsks(t, h, "ref = 'forged' AND (host <> 'a' OR asker <> 'b')"); n != 0 {
			t.Errorf("an ask names the host its asker wrote: %d", n)
		}
	} else {
		wantRefused(t, "b writes the asked host itself", err)
	}

	// Only the asked host answers, once, and only the answer changes.
	_, err = bdb.ExecContext(ctx(t), q("UPDATE migration_ask SET answered_at = CURRENT_TIMESTAMP, answer = '{}' WHERE id = ?"), id)
	wantRefused(t, "b answers its own ask to a", err)
	wantRefused(t, "c writes into a's answer", asks(t, c).SaveAnswer(ctx(t), id, []byte(`{}`)))
	wantRefused(t, "c answers an ask to a", asks(t, c).AnswerAsk(ctx(t), id, []byte(`{}`), ""))
	_, err = adb.ExecContext(ctx(t), q("UPDATE migration_ask SET action = 'unblock' WHERE id = ?"), id)
	wantRefused(t, "a changes what it was asked", err)
	if err := asks(t, a).SaveAnswer(ctx(t), id, []byte(`{"plan":1}`)); err != nil {
		t.Fatalf("a saves its plan into the answer: %v", err)
	}
	if err := asks(t, a).AnswerAsk(ctx(t), id, []byte(`{"plan":1,"applied":true}`), ""); err != nil {
		t.Fatalf("a answers: %v", err)
	}
	if err := asks(t, a).AnswerAsk(ctx(t), id, []byte(`{}`), "again"); !errors.Is(err, statemachine.ErrAnswered) {
		t.Errorf("a answers twice: want ErrAnswered, got %v", err)
	}
	_, err = adb.ExecContext(ctx(t), q("UPDATE migration_ask SET answer = '{}' WHERE id = ?"), id)
	wantRefused(t, "a rewrites its answer", err)
	got, err = asks(t, b).GetAsk(ctx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Answered() || got.Error != "" || string(got.Answer) != `{"plan":1,"applied":true}` || got.AnsweredBy == "" || got.AnsweredBy == got.AskedBy {
		t.Errorf("the answered ask: %+v", got)
	}
	if rel, err := asks(t, b).AsksOf(ctx(t), held.ID, "dump-1-x"); err != nil || len(rel) != 1 || rel[0].ID != id {
		t.Errorf("the row's asks of ref dump-1-x: %+v, %v", rel, err)
	}

	// Who wrote a step record is the database's to say: an asked agent
	// acts only on a record its own host's agent wrote.
	if err := b.PutRecord(ctx(t), &held, "import", []byte(`{"database":"mine"}`)); err != nil {
		t.Fatal(err)
	}
	if host, ok, err := asks(t, a).RecordAuthor(ctx(t), held.ID, "import"); err != nil || !ok || host != "b" {
		t.Errorf("the import record's author: %q, %v, %v; want b", host, ok, err)
	}
	if err := h.Store.PutRecord(ctx(t), &held, "import", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if host, ok, err := asks(t, a).RecordAuthor(ctx(t), held.ID, "import"); err != nil || !ok || host != "" {
		t.Errorf("the import record's author after an operator's write: %q, %v, %v; want \"\"", host, ok, err)
	}
	if _, ok, err := asks(t, a).RecordAuthor(ctx(t), held.ID, "nothing"); err != nil || ok {
		t.Errorf("a record that is not there: %v, %v", ok, err)
	}
	_, err = bdb.ExecContext(ctx(t), q("UPDATE migration_record SET login = 'fm_a' WHERE migration_id = ?"), held.ID)
	if err == nil {
		if host, _, _ := asks(t, a).RecordAuthor(ctx(t), held.ID, "import"); host != "b" {
			t.Errorf("b passed its record off as another login's: author %q", host)
		}
	}

	// A claim that ended asks nothing; an operator's login may ask for a
	// claim it holds (tools), and is refused an ended one as well.
	if err := b.Release(ctx(t), &held, statemachine.Fields{}, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := asks(t, b).Ask(ctx(t), &held, statemachine.SideSource, "unblock", "dump-1-x"); !errors.Is(err, statemachine.ErrLeaseLost) {
		t.Errorf("an ended claim asks: want ErrLeaseLost, got %v", err)
	}
	_, err = bdb.ExecContext(ctx(t), q("INSERT INTO migration_ask (migration_id, side, action, ref, fence, error, answer) VALUES (?, 'source', 'unblock', '', ?, '', '')"), held.ID, held.Fence)
	wantRefused(t, "b asks by hand for a row it gave back", err)
	if n := countAsks(t, h, "migration_id = ? AND ref <> 'forged'", held.ID); n != 1 {
		t.Errorf("%d asks of the row", n)
	}
	if n := countAsks(t, h, "migration_id = ?", rows["theirs"].ID); n != 0 {
		t.Errorf("%d asks of c→d's row", n)
	}
	if !strings.HasPrefix(got.AskedBy, "fm_") || !strings.HasPrefix(got.AnsweredBy, "fm_") {
		t.Errorf("asked by %q, answered by %q: want the agents' own logins", got.AskedBy, got.AnsweredBy)
	}
}

func countAsks(t *testing.T, h Harness, where string, args ...any) int {
	t.Helper()
	var n int
	if err := h.DB.QueryRowContext(ctx(t), h.Q("SELECT COUNT(*) FROM migration_ask WHERE "+where), args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
