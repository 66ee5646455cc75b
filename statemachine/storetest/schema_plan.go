package storetest

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

func testSchemaMatchesStateMachine(t *testing.T, h Harness) {
	rows, err := h.DB.QueryContext(ctx(t), "SELECT from_status, to_status FROM migration_transition")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []statemachine.StatusPair
	for rows.Next() {
		var p statemachine.StatusPair
		if err := rows.Scan(&p.From, &p.To); err != nil {
			t.Fatal(err)
		}
		got = append(got, p)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := statemachine.Pairs()
	sortPairs(got)
	if !slices.Equal(got, want) {
		t.Errorf("migration_transition differs from statemachine.Pairs(): add a schema migration\n table: %v\n   code: %v", got, want)
	}
	// Every status of the code is accepted by the table's CHECK, and nothing
	// else is. Rows are inserted raw with what their status implies.
	for i, st := range statemachine.Statuses {
		owner, lease := "NULL", "NULL"
		if st.Working() {
			owner, lease = "'agent'", "CURRENT_TIMESTAMP"
		}
		_, err := h.DB.ExecContext(ctx(t), h.Q("INSERT INTO migration (engine, database_name, source, destination, status, owner, lease_until, dump_url, dump_sha256, dump_bytes) "+
			"VALUES ('mysql', ?, 'a', 'b', ?, "+owner+", "+lease+", 'file:///x', ?, 1)"),
			"status_"+string(rune('a'+i)), string(st), strings.Repeat("0", 64))
		if err != nil {
			t.Errorf("status %q refused by the table: %v", st, err)
		}
	}
	if _, err := h.DB.ExecContext(ctx(t), "INSERT INTO migration (engine, database_name, source, destination, status) VALUES ('mysql', 'bogus', 'a', 'b', 'Bogus')"); err == nil {
		t.Error("the table accepted status 'Bogus'")
	}
	if _, err := h.DB.ExecContext(ctx(t), "INSERT INTO migration (engine, database_name, source, destination) VALUES ('oracle', 'x', 'a', 'b')"); err == nil {
		t.Error("the table accepted engine 'oracle'")
	}
	if _, err := h.DB.ExecContext(ctx(t), "INSERT INTO migration (engine, database_name, source, destination) VALUES ('mysql', 'x', 'a', 'a')"); err == nil {
		t.Error("the table accepted source = destination")
	}
}

func sortPairs(ps []statemachine.StatusPair) {
	slices.SortFunc(ps, func(a, b statemachine.StatusPair) int {
		if c := strings.Compare(string(a.From), string(b.From)); c != 0 {
			return c
		}
		return strings.Compare(string(a.To), string(b.To))
	})
}

func testDatabaseRefusesInvalidTransitions(t *testing.T, h Harness) {
	ms := mustPlan(t, h.Store, planned(1, "src", "dst"))
	id := ms[0].ID
	// A raw UPDATE, as a careless script would issue, is refused by the
	// database itself.
	for _, to := range []string{"Done", "Dumping", "To import", "Bogus"} {
		if _, err := h.DB.ExecContext(ctx(t), h.Q("UPDATE migration SET status = ? WHERE id = ?"), to, id); err == nil {
			t.Errorf("database allowed Waiting -> %s", to)
		}
	}
	wantStatus(t, h, id, statemachine.Waiting)
	// The allowed move works through raw SQL too.
	if _, err := h.DB.ExecContext(ctx(t), h.Q("UPDATE migration SET status = 'Cancelled' WHERE id = ?"), id); err != nil {
		t.Fatalf("Waiting -> Cancelled refused: %v", err)
	}
	// The store refuses operator actions the table does not allow.
	if _, err := h.Store.Operate(ctx(t), id, statemachine.ActionRetry, "op", ""); err == nil {
		t.Error("store retried a Cancelled row")
	}
	if _, err := h.Store.Operate(ctx(t), id, "explode", "op", ""); err == nil {
		t.Error("store accepted an unknown action")
	}
	wantStatus(t, h, id, statemachine.Cancelled)
}

func testDatabaseRefusesContradictions(t *testing.T, h Harness) {
	ms := mustPlan(t, h.Store, planned(2, "src", "dst"))
	mustPromote(t, h.Store, 1)
	// Advancing a dump without recording the dump: the table refuses, the
	// claim stays, the row stays Dumping.
	m := claimOne(t, h.Store, statemachine.RoleDump, "dst")
	if err := h.Store.Advance(ctx(t), &m, statemachine.Fields{}, "no dump"); err == nil {
		t.Fatal("row reached To import without a dump")
	}
	wantStatus(t, h, m.ID, statemachine.Dumping)
	// A working status without an owner is refused.
	if _, err := h.DB.ExecContext(ctx(t), h.Q("UPDATE migration SET owner = NULL, lease_until = NULL WHERE id = ?"), m.ID); err == nil {
		t.Error("the table accepted a Dumping row without owner")
	}
	// A garbage checksum is refused.
	if err := h.Store.Record(ctx(t), &m, statemachine.Fields{DumpURL: "x", DumpSHA256: "nothex"}, ""); err == nil {
		t.Error("store recorded a malformed SHA-256")
	}
	if _, err := h.DB.ExecContext(ctx(t), h.Q("UPDATE migration SET dump_sha256 = 'XYZ' WHERE id = ?"), ms[1].ID); err == nil {
		t.Error("the table accepted a malformed SHA-256")
	}
}

// awkwardNames are legal database names that break naive quoting.
var awkwardNames = []struct {
	engine statemachine.Engine
	name   string
}{
	{statemachine.EngineMySQL, "back`tick"},
	{statemachine.EngineMySQL, `double"quote`},
	{statemachine.EngineMySQL, "single'quote"},
	{statemachine.EngineMySQL, "with space"},
	{statemachine.EngineMySQL, "100%_like"},
	{statemachine.EngineMySQL, "ünïcødé_数据库"},
	{statemachine.EngineMySQL, "Shop"},
	{statemachine.EngineMySQL, "shop"},
	{statemachine.EngineMySQL, strings.Repeat("é", 64)},
	{statemachine.EngineMySQL, `back\slash; DROP TABLE migration; --`},
	{statemachine.EnginePostgres, "trailing space "},
	{statemachine.EnginePostgres, "trailing space"},
	{statemachine.EnginePostgres, strings.Repeat("x", 63)},
}

func testPlanRoundTripsNames(t *testing.T, h Harness) {
	var rows []statemachine.Planned
	for _, n := range awkwardNames {
		rows = append(rows, statemachine.Planned{Engine: n.engine, DatabaseName: n.name, Source: "src-1", Destination: "dst-1"})
	}
	all := mustPlan(t, h.Store, rows)
	if len(all) != len(rows) {
		t.Fatalf("%d rows in the table, want %d", len(all), len(rows))
	}
	for i, m := range all {
		if m.DatabaseName != rows[i].DatabaseName || m.Engine != rows[i].Engine {
			t.Errorf("row %d: name %q (%s), want %q (%s)", i, m.DatabaseName, m.Engine, rows[i].DatabaseName, rows[i].Engine)
		}
		if m.Status != statemachine.Waiting || m.Attempt != 0 || m.Fence != 0 {
			t.Errorf("row %d: planned as %+v", i, m)
		}
		// Find it again by name: the name is usable as a key, byte for byte.
		got, err := h.Store.List(ctx(t), statemachine.Filter{DatabaseName: rows[i].DatabaseName})
		if err != nil || len(got) != 1 || got[0].ID != m.ID {
			t.Errorf("lookup by name %q: %v, %v", rows[i].DatabaseName, got, err)
		}
	}
	counts, err := h.Store.Counts(ctx(t))
	if err != nil || counts[statemachine.Waiting] != len(rows) {
		t.Errorf("counts %v, %v", counts, err)
	}
	ev, err := h.Store.Events(ctx(t), all[0].ID)
	if err != nil || len(ev) != 1 || ev[0].To != statemachine.Waiting || ev[0].Actor != "test" {
		t.Errorf("plan event: %+v, %v", ev, err)
	}
}

func testPlanConflicts(t *testing.T, h Harness) {
	mustPlan(t, h.Store, []statemachine.Planned{
		{Engine: statemachine.EngineMySQL, DatabaseName: "shop", Source: "a", Destination: "x", DNSName: "shop.example.test"},
	})
	batch := []statemachine.Planned{
		{Engine: statemachine.EngineMySQL, DatabaseName: "fine", Source: "a", Destination: "x"},                                // 0 ok
		{Engine: statemachine.EngineMySQL, DatabaseName: "shop", Source: "a", Destination: "y"},                                // 1 same db, same source
		{Engine: statemachine.EngineMySQL, DatabaseName: "shop", Source: "b", Destination: "x"},                                // 2 destination x gets shop twice
		{Engine: statemachine.EngineMySQL, DatabaseName: "blog", Source: "b", Destination: "y", DNSName: "shop.example.test"},  // 3 DNS name in use
		{Engine: statemachine.EnginePostgres, DatabaseName: "shop", Source: "a", Destination: "x"},                             // 4 ok: other engine
		{Engine: statemachine.EngineMySQL, DatabaseName: "Shop", Source: "a", Destination: "x", DNSName: "shop2.example.test"}, // 5 ok: other name
	}
	n, err := h.Store.Plan(ctx(t), batch, "test", false)
	var pc *statemachine.PlanConflictsError
	if !errors.As(err, &pc) || n != 0 {
		t.Fatalf("plan: %d, %v; want PlanConflictsError", n, err)
	}
	var idx []int
	for _, c := range pc.Conflicts {
		idx = append(idx, c.Index)
		if c.Reason == "" {
			t.Errorf("conflict %d has no reason", c.Index)
		}
	}
	if !slices.Equal(idx, []int{1, 2, 3}) {
		t.Errorf("conflicting rows %v, want [1 2 3]: %+v", idx, pc.Conflicts)
	}
	if got := countRows(t, h, ""); got != 1 {
		t.Errorf("%d rows in the table after a refused plan, want 1", got)
	}
	// Once the first row is done, its DNS name is free again; and a
	// cancelled row frees its destination.
	if _, err := h.DB.ExecContext(ctx(t), "UPDATE migration SET status = 'Cancelled'"); err != nil {
		t.Fatal(err)
	}
	ok := []statemachine.Planned{batch[2], batch[3]}
	if n, err := h.Store.Plan(ctx(t), ok, "test", false); err != nil || n != 2 {
		t.Fatalf("plan after cancel: %d, %v", n, err)
	}
}

func testPlanDryRun(t *testing.T, h Harness) {
	n, err := h.Store.Plan(ctx(t), planned(50, "a", "b"), "test", true)
	if err != nil || n != 50 {
		t.Fatalf("dry run: %d, %v", n, err)
	}
	if got := countRows(t, h, ""); got != 0 {
		t.Fatalf("dry run inserted %d rows", got)
	}
	// The staging table does not linger on the connection.
	if n, err := h.Store.Plan(ctx(t), planned(50, "a", "b"), "test", false); err != nil || n != 50 {
		t.Fatalf("plan after dry run: %d, %v", n, err)
	}
	if got := countRows(t, h, ""); got != 50 {
		t.Fatalf("%d rows, want 50", got)
	}
}
