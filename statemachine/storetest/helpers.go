package storetest

import (
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// planned builds n rows for one source → destination pair.
func planned(n int, source, dest string) []statemachine.Planned {
	out := make([]statemachine.Planned, n)
	for i := range out {
		out[i] = statemachine.Planned{
			Engine: statemachine.EngineMySQL, DatabaseName: fmt.Sprintf("db_%04d", i),
			Source: source, Destination: dest, DNSName: fmt.Sprintf("db-%04d.%s.example.test", i, source),
			SizeBytes: int64(1000 + i),
		}
	}
	return out
}

func mustPlan(t *testing.T, s statemachine.Store, rows []statemachine.Planned) []statemachine.Migration {
	t.Helper()
	n, err := s.Plan(ctx(t), rows, "test", false)
	if err != nil || n != len(rows) {
		t.Fatalf("plan %d rows: inserted %d, %v", len(rows), n, err)
	}
	all, err := s.List(ctx(t), statemachine.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	return all
}

// mustPromote promotes exactly n Waiting rows to To dump.
func mustPromote(t *testing.T, s statemachine.Store, n int) {
	t.Helper()
	if got, err := s.Promote(ctx(t), n, "scheduler"); err != nil || got != n {
		t.Fatalf("promote %d: %d, %v", n, got, err)
	}
}

// dumpFields is what a dump step records before advancing.
func dumpFields(id int64) statemachine.Fields {
	return statemachine.Fields{
		DumpURL:    fmt.Sprintf("file:///var/lib/fleetmigrate/dumps/%d/dump.sql.zst", id),
		DumpSHA256: strings.Repeat("ab", 32), DumpBytes: 4242,
		ConsistencyPoint: time.Date(2026, 11, 23, 21, 0, 0, 0, time.UTC),
	}
}

func claim(t *testing.T, s statemachine.Store, role statemachine.Role, host, owner string, limit int) []statemachine.Migration {
	t.Helper()
	ms, err := s.Claim(ctx(t), statemachine.ClaimRequest{Role: role, Host: host, Owner: owner, Limit: limit, Lease: time.Minute})
	if err != nil {
		t.Fatalf("claim %s for %s: %v", role, host, err)
	}
	return ms
}

func claimOne(t *testing.T, s statemachine.Store, role statemachine.Role, host string) statemachine.Migration {
	t.Helper()
	ms := claim(t, s, role, host, host+"/agent", 1)
	if len(ms) != 1 {
		t.Fatalf("claim %s for %s: got %d rows, want 1", role, host, len(ms))
	}
	return ms[0]
}

// rowState reads what the table says about a row, bypassing the store.
type rowState struct {
	Status  string
	Attempt int
	Owner   sql.NullString
	Fence   int64
	LastErr sql.NullString
}

func readRow(t *testing.T, h Harness, id int64) rowState {
	t.Helper()
	var r rowState
	err := h.DB.QueryRowContext(ctx(t), h.Q("SELECT status, attempt, owner, fence, last_error FROM migration WHERE id = ?"), id).
		Scan(&r.Status, &r.Attempt, &r.Owner, &r.Fence, &r.LastErr)
	if err != nil {
		t.Fatalf("read row %d: %v", id, err)
	}
	return r
}

func wantStatus(t *testing.T, h Harness, id int64, want statemachine.Status) rowState {
	t.Helper()
	r := readRow(t, h, id)
	if r.Status != string(want) {
		t.Fatalf("row %d is %q in the table, want %q", id, r.Status, want)
	}
	return r
}

func countRows(t *testing.T, h Harness, where string, args ...any) int {
	t.Helper()
	var n int
	if err := h.DB.QueryRowContext(ctx(t), h.Q("SELECT COUNT(*) FROM migration "+where), args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// eventPairs reads a row's transitions from the event table.
func eventPairs(t *testing.T, h Harness, id int64) []string {
	t.Helper()
	rows, err := h.DB.QueryContext(ctx(t), h.Q("SELECT from_status, to_status FROM migration_event WHERE migration_id = ? AND from_status <> to_status ORDER BY id"), id)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var from, to string
		if err := rows.Scan(&from, &to); err != nil {
			t.Fatal(err)
		}
		out = append(out, from+" -> "+to)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
