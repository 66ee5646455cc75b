package mysql_test

import (
	"testing"

	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

// TestCopyTriggersAndEvents: what an online cutover creates at the
// destination that the stream does not carry. A database with a trigger
// and an event gets both there, as the source has them; one with neither
// gets nothing, and a copy's stray event is dropped by DropEvents first.
func TestCopyTriggersAndEvents(t *testing.T) {
	src, dst := fleet(t)
	t.Parallel()
	with, without := name("trg_ev_"), name("plain_")
	for _, db := range []string{with, without} {
		q := ident.QuoteMySQL(db)
		for _, s := range []*side{src, dst} {
			dropAtEnd(t, s, db)
			exec(t, s.root, "CREATE DATABASE "+q, "CREATE TABLE "+q+".t (id INT PRIMARY KEY, v VARCHAR(20), stamped VARCHAR(30))")
		}
	}
	qw := ident.QuoteMySQL(with)
	exec(t, src.root,
		"CREATE TRIGGER "+qw+".stamp BEFORE INSERT ON "+qw+".t FOR EACH ROW SET NEW.stamped = CONCAT('t:', NEW.v)",
		"CREATE EVENT "+qw+".tick ON SCHEDULE EVERY 1 HOUR DISABLE DO DELETE FROM "+qw+".t WHERE id < 0")
	// The copy at the destination holds a stray event (as a dump of the
	// source's would): the cutover drops it before creating the source's.
	qo := ident.QuoteMySQL(without)
	exec(t, dst.root, "CREATE EVENT "+qo+".stray ON SCHEDULE EVERY 1 HOUR DISABLE DO DELETE FROM "+qo+".t WHERE id < 0")
	for _, db := range []string{with, without} {
		if err := dst.srv.DropEvents(ctx(t), db); err != nil {
			t.Fatal(err)
		}
		if err := dst.srv.CopyTriggers(ctx(t), src.srv, db); err != nil {
			t.Fatalf("copy the triggers of %q: %v", db, err)
		}
		if err := dst.srv.CopyEvents(ctx(t), src.srv, db, nil); err != nil {
			t.Fatalf("copy the events of %q: %v", db, err)
		}
	}
	count := func(q string, args ...any) int {
		var n int
		if err := dst.root.QueryRowContext(ctx(t), q, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count("SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? AND TRIGGER_NAME = 'stamp'", with); n != 1 {
		t.Errorf("trigger stamp at the destination: %d", n)
	}
	if n := count("SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ? AND EVENT_NAME = 'tick'", with); n != 1 {
		t.Errorf("event tick at the destination: %d", n)
	}
	exec(t, dst.root, "INSERT INTO "+qw+".t (id, v) VALUES (1, 'x')")
	if n := count("SELECT COUNT(*) FROM " + qw + ".t WHERE stamped = 't:x'"); n != 1 {
		t.Error("the copied trigger does not fire at the destination")
	}
	if n := count("SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ?", without) +
		count("SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ?", without); n != 0 {
		t.Errorf("%d triggers and events at the destination of a database that has none (the stray event must be gone)", n)
	}
}
