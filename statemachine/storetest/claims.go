package storetest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// walk claims m's row for role and advances it with f; it returns the row as
// the table has it afterwards.
func walk(t *testing.T, h Harness, role statemachine.Role, host string, f statemachine.Fields) statemachine.Migration {
	t.Helper()
	m := claimOne(t, h.Store, role, host)
	if err := h.Store.Advance(ctx(t), &m, f, string(role)+" done"); err != nil {
		t.Fatalf("advance %s: %v", role, err)
	}
	got, err := h.Store.Get(ctx(t), m.ID)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func testLifecycle(t *testing.T, h Harness) {
	ms := mustPlan(t, h.Store, planned(1, "src", "dst"))
	id := ms[0].ID
	mustPromote(t, h.Store, 1)
	wantStatus(t, h, id, statemachine.ToDump)

	m := claimOne(t, h.Store, statemachine.RoleDump, "dst")
	if m.Status != statemachine.Dumping || m.Owner != "dst/agent" || m.Fence != 1 || m.Attempt != 1 || m.LeaseUntil.IsZero() {
		t.Fatalf("claimed row: %+v", m)
	}
	if err := h.Store.Record(ctx(t), &m, statemachine.Fields{Marks: []statemachine.Mark{statemachine.MarkBlocked}, SizeBytes: 9999}, ""); err != nil {
		t.Fatal(err)
	}
	if err := h.Store.Progress(ctx(t), &m, "dumping 3/12 tables, 41 MB"); err != nil {
		t.Fatal(err)
	}
	if err := h.Store.Advance(ctx(t), &m, dumpFields(id), "dumped"); err != nil {
		t.Fatal(err)
	}
	got, _ := h.Store.Get(ctx(t), id)
	if got.Status != statemachine.ToImport || got.Owner != "" || !got.LeaseUntil.IsZero() || got.Attempt != 0 ||
		got.DumpSHA256 != dumpFields(id).DumpSHA256 || got.DumpBytes != 4242 || got.SizeBytes != 9999 ||
		got.BlockedAt.IsZero() || !got.ConsistencyPoint.Equal(dumpFields(id).ConsistencyPoint) {
		t.Fatalf("after dump: %+v", got)
	}

	got = walk(t, h, statemachine.RoleImport, "dst", statemachine.Fields{})
	if got.Status != statemachine.DNSToUpdate {
		t.Fatalf("after import: %s", got.Status)
	}
	got = walk(t, h, statemachine.RoleDNS, "", statemachine.Fields{Marks: []statemachine.Mark{statemachine.MarkSwitched}})
	if got.Status != statemachine.ToCloseSource || got.SwitchedAt.IsZero() || got.SwitchedAt.Before(got.BlockedAt) {
		t.Fatalf("after dns: %+v", got)
	}
	got = walk(t, h, statemachine.RoleClose, "src", statemachine.Fields{})
	if got.Status != statemachine.Done || got.Fence != 4 {
		t.Fatalf("after close: %+v", got)
	}

	want := []string{
		" -> Waiting", // planned
		"Waiting -> To dump", "To dump -> Dumping", "Dumping -> To import",
		"To import -> Importing", "Importing -> DNS to update",
		"DNS to update -> Updating DNS", "Updating DNS -> To close source",
		"To close source -> Closing source", "Closing source -> Done",
	}
	if got := eventPairs(t, h, id); !slices.Equal(got, want) {
		t.Errorf("audit trail\n got %v\nwant %v", got, want)
	}
	evs, err := h.Store.Events(ctx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	var sawProgress, sawBlocked bool
	for _, e := range evs {
		sawProgress = sawProgress || (e.From == e.To && e.Detail == "dumping 3/12 tables, 41 MB")
		sawBlocked = sawBlocked || (e.From == e.To && e.Detail != "" && e.Actor == "dst/agent" && e.To == statemachine.Dumping && e.Detail != "dumping 3/12 tables, 41 MB")
	}
	if !sawProgress || !sawBlocked {
		t.Errorf("progress/record events missing: %+v", evs)
	}
}

func testLifecycleWithoutDNS(t *testing.T, h Harness) {
	rows := planned(1, "src", "dst")
	rows[0].DNSName = ""
	id := mustPlan(t, h.Store, rows)[0].ID
	mustPromote(t, h.Store, 1)
	walk(t, h, statemachine.RoleDump, "dst", dumpFields(id))
	got := walk(t, h, statemachine.RoleImport, "dst", statemachine.Fields{})
	if got.Status != statemachine.ToCloseSource {
		t.Fatalf("row without a DNS name went to %q after import, want %q", got.Status, statemachine.ToCloseSource)
	}
}

func testClaimScope(t *testing.T, h Harness) {
	rows := append(planned(3, "a", "x"), planned(2, "b", "y")...)
	for i := range rows[3:] {
		rows[3+i].DatabaseName = fmt.Sprintf("b_%d", i)
		rows[3+i].DNSName = ""
	}
	mustPlan(t, h.Store, rows)
	mustPromote(t, h.Store, 5)
	if got := claim(t, h.Store, statemachine.RoleDump, "a", "a/agent", 10); len(got) != 0 {
		t.Errorf("source host claimed %d dump rows: the destination pulls them", len(got))
	}
	if got := claim(t, h.Store, statemachine.RoleImport, "x", "x/agent", 10); len(got) != 0 {
		t.Errorf("import claimed %d rows in To dump", len(got))
	}
	got := claim(t, h.Store, statemachine.RoleDump, "x", "x/agent", 10)
	if len(got) != 3 {
		t.Fatalf("destination x claimed %d dump rows, want 3", len(got))
	}
	for i, m := range got {
		if m.Destination != "x" || (i > 0 && m.ID <= got[i-1].ID) {
			t.Errorf("claimed %+v: wrong host or not in plan order", m)
		}
		if err := h.Store.Advance(ctx(t), &got[i], dumpFields(m.ID), ""); err != nil {
			t.Fatal(err)
		}
	}
	if got := claim(t, h.Store, statemachine.RoleImport, "y", "y/agent", 10); len(got) != 0 {
		t.Errorf("destination y claimed %d rows meant for x", len(got))
	}
	if got := claim(t, h.Store, statemachine.RoleImport, "x", "x/agent", 10); len(got) != 3 {
		t.Errorf("destination x claimed %d rows, want 3", len(got))
	}
	if _, err := h.Store.Claim(ctx(t), statemachine.ClaimRequest{Role: statemachine.RoleDump, Owner: "o", Limit: 1, Lease: time.Minute}); err == nil {
		t.Error("dump claim without a host accepted")
	}
	if _, err := h.Store.Claim(ctx(t), statemachine.ClaimRequest{Role: statemachine.RoleOperator, Host: "a", Owner: "o", Limit: 1, Lease: time.Minute}); err == nil {
		t.Error("claim for the operator role accepted")
	}
}

func testClaimRace(t *testing.T, h Harness) {
	const rows, workers = 500, 32
	mustPlan(t, h.Store, planned(rows, "src", "dst"))
	mustPromote(t, h.Store, rows)
	var (
		mu     sync.Mutex
		byID   = map[int64]string{}
		dupes  []string
		errs   []error
		wg     sync.WaitGroup
		starts = make(chan struct{})
	)
	for w := range workers {
		s := h.Open(t, nil) // its own connection pool
		owner := fmt.Sprintf("worker-%02d", w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-starts
			for {
				ms, err := s.Claim(ctx(t), statemachine.ClaimRequest{Role: statemachine.RoleDump, Host: "dst", Owner: owner, Limit: 7, Lease: time.Minute})
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				}
				for _, m := range ms {
					if prev, ok := byID[m.ID]; ok {
						dupes = append(dupes, fmt.Sprintf("row %d claimed by %s and %s", m.ID, prev, owner))
					}
					byID[m.ID] = owner
				}
				mu.Unlock()
				if err != nil || len(ms) == 0 {
					return
				}
			}
		}()
	}
	close(starts)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d claim errors, first: %v", len(errs), errs[0])
	}
	if len(dupes) > 0 {
		t.Fatalf("rows claimed twice: %v", dupes)
	}
	if len(byID) != rows {
		t.Fatalf("%d rows claimed, want %d", len(byID), rows)
	}
	// The table agrees: every row Dumping, claimed once, by who we think.
	if n := countRows(t, h, "WHERE status = 'Dumping' AND fence = 1 AND attempt = 1"); n != rows {
		t.Fatalf("%d rows Dumping with fence 1, want %d", n, rows)
	}
	for id, owner := range byID {
		if r := readRow(t, h, id); r.Owner.String != owner {
			t.Fatalf("row %d owned by %q in the table, %q says it claimed it", id, r.Owner.String, owner)
		}
	}
	var claimEvents int
	if err := h.DB.QueryRowContext(ctx(t), "SELECT COUNT(*) FROM migration_event WHERE to_status = 'Dumping'").Scan(&claimEvents); err != nil || claimEvents != rows {
		t.Fatalf("%d claim events, want %d (%v)", claimEvents, rows, err)
	}
}

func testFenceAfterRescue(t *testing.T, h Harness) {
	clock := NewClock()
	s := h.Open(t, clock.Now)
	id := mustPlan(t, s, planned(1, "src", "dst"))[0].ID
	mustPromote(t, s, 1)
	old := claimOne(t, s, statemachine.RoleDump, "dst")
	if !old.LeaseUntil.Equal(clock.Now().Add(time.Minute)) {
		t.Fatalf("lease until %s, want now+1m = %s (pinned clock)", old.LeaseUntil, clock.Now().Add(time.Minute))
	}
	// Within the lease nothing is rescued.
	clock.Advance(30 * time.Second)
	if r, err := s.Rescue(ctx(t), 5); err != nil || len(r) != 0 {
		t.Fatalf("rescue within the lease: %v, %v", r, err)
	}
	clock.Advance(31 * time.Second)
	r, err := s.Rescue(ctx(t), 5)
	if err != nil || len(r) != 1 || r[0].ID != id || r[0].To != statemachine.ToDump || r[0].Owner != old.Owner {
		t.Fatalf("rescue: %+v, %v", r, err)
	}
	row := wantStatus(t, h, id, statemachine.ToDump)
	if row.Owner.Valid || row.LastErr.String == "" {
		t.Errorf("rescued row: %+v", row)
	}
	// The old worker wakes up: every write it tries is refused.
	stale := old
	if err := s.Advance(ctx(t), &stale, dumpFields(id), "late"); !errors.Is(err, statemachine.ErrLeaseLost) {
		t.Errorf("late advance: %v, want ErrLeaseLost", err)
	}
	stale = old
	if err := s.Fail(ctx(t), &stale, statemachine.Fields{}, "late"); !errors.Is(err, statemachine.ErrLeaseLost) {
		t.Errorf("late fail: %v, want ErrLeaseLost", err)
	}
	if _, err := s.Renew(ctx(t), &old, time.Minute); !errors.Is(err, statemachine.ErrLeaseLost) {
		t.Errorf("late renew: %v, want ErrLeaseLost", err)
	}
	if err := s.Record(ctx(t), &old, statemachine.Fields{Marks: []statemachine.Mark{statemachine.MarkUnblocked}}, ""); !errors.Is(err, statemachine.ErrLeaseLost) {
		t.Errorf("late record: %v, want ErrLeaseLost", err)
	}
	if err := s.Progress(ctx(t), &old, "still here"); !errors.Is(err, statemachine.ErrLeaseLost) {
		t.Errorf("late progress: %v, want ErrLeaseLost", err)
	}
	// A new claim (same host: the agent restarted) gets a new fence, and the
	// old claim still cannot touch the row although status and owner match.
	fresh := claimOne(t, s, statemachine.RoleDump, "dst")
	if fresh.Fence != old.Fence+1 || fresh.Attempt != 2 || fresh.Owner != old.Owner {
		t.Fatalf("re-claim: %+v", fresh)
	}
	stale = old
	if err := s.Advance(ctx(t), &stale, dumpFields(id), "late"); !errors.Is(err, statemachine.ErrLeaseLost) {
		t.Errorf("advance with the old fence: %v, want ErrLeaseLost", err)
	}
	if err := s.Advance(ctx(t), &fresh, dumpFields(id), "done"); err != nil {
		t.Fatalf("advance with the new fence: %v", err)
	}
	wantStatus(t, h, id, statemachine.ToImport)
}

func testRescueAttemptLimit(t *testing.T, h Harness) {
	clock := NewClock()
	s := h.Open(t, clock.Now)
	id := mustPlan(t, s, planned(1, "src", "dst"))[0].ID
	mustPromote(t, s, 1)
	for attempt := 1; attempt <= 3; attempt++ {
		m := claimOne(t, s, statemachine.RoleDump, "dst")
		if m.Attempt != attempt {
			t.Fatalf("claim %d: attempt %d", attempt, m.Attempt)
		}
		clock.Advance(2 * time.Minute)
		r, err := s.Rescue(ctx(t), 3)
		if err != nil || len(r) != 1 {
			t.Fatalf("rescue %d: %v, %v", attempt, r, err)
		}
	}
	row := wantStatus(t, h, id, statemachine.DumpFailed)
	if row.Attempt != 3 || row.LastErr.String == "" {
		t.Errorf("gave up with %+v", row)
	}
	// An operator retry counts toward the limit: one more attempt, then failed again.
	if _, err := s.Operate(ctx(t), id, statemachine.ActionRetry, "op", "try once more"); err != nil {
		t.Fatal(err)
	}
	m := claimOne(t, s, statemachine.RoleDump, "dst")
	if m.Attempt != 4 {
		t.Errorf("attempt after operator retry: %d, want 4", m.Attempt)
	}
	clock.Advance(2 * time.Minute)
	if _, err := s.Rescue(ctx(t), 3); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, h, id, statemachine.DumpFailed)
}

func testRenew(t *testing.T, h Harness) {
	clock := NewClock()
	s := h.Open(t, clock.Now)
	id := mustPlan(t, s, planned(1, "src", "dst"))[0].ID
	mustPromote(t, s, 1)
	m := claimOne(t, s, statemachine.RoleDump, "dst")
	clock.Advance(50 * time.Second)
	until, err := s.Renew(ctx(t), &m, time.Minute)
	if err != nil || !until.Equal(clock.Now().Add(time.Minute)) {
		t.Fatalf("renew: %s, %v", until, err)
	}
	// Renewed: a rescue 20 s after the original lease ended takes nothing.
	clock.Advance(30 * time.Second)
	if r, err := s.Rescue(ctx(t), 5); err != nil || len(r) != 0 {
		t.Fatalf("rescue of a renewed lease: %v, %v", r, err)
	}
	// Expired but not yet rescued: renewal is refused all the same.
	clock.Advance(31 * time.Second)
	if _, err := s.Renew(ctx(t), &m, time.Minute); !errors.Is(err, statemachine.ErrLeaseLost) {
		t.Fatalf("renew after expiry: %v, want ErrLeaseLost", err)
	}
	wantStatus(t, h, id, statemachine.Dumping)
}

func testFailReleaseRecord(t *testing.T, h Harness) {
	ms := mustPlan(t, h.Store, planned(2, "src", "dst"))
	mustPromote(t, h.Store, 2)
	a := claimOne(t, h.Store, statemachine.RoleDump, "dst")
	if err := h.Store.Record(ctx(t), &a, statemachine.Fields{Marks: []statemachine.Mark{statemachine.MarkBlocked}}, ""); err != nil {
		t.Fatal(err)
	}
	if err := h.Store.Fail(ctx(t), &a, statemachine.Fields{Marks: []statemachine.Mark{statemachine.MarkUnblocked}},
		"source database `shop` does not exist on src"); err != nil {
		t.Fatal(err)
	}
	row := wantStatus(t, h, ms[0].ID, statemachine.DumpFailed)
	if row.LastErr.String != "source database `shop` does not exist on src" || row.Owner.Valid {
		t.Errorf("failed row: %+v", row)
	}
	got, _ := h.Store.Get(ctx(t), ms[0].ID)
	if got.BlockedAt.IsZero() || got.UnblockedAt.IsZero() || got.UnblockedAt.Before(got.BlockedAt) {
		t.Errorf("blocked %s, unblocked %s", got.BlockedAt, got.UnblockedAt)
	}
	b := claimOne(t, h.Store, statemachine.RoleDump, "dst")
	if err := h.Store.Release(ctx(t), &b, statemachine.Fields{}, "agent shutting down"); err != nil {
		t.Fatal(err)
	}
	row = wantStatus(t, h, ms[1].ID, statemachine.ToDump)
	if row.Attempt != 1 || row.Owner.Valid {
		t.Errorf("released row: %+v", row)
	}
	// Blocking again on a retry clears the earlier unblock.
	if _, err := h.Store.Operate(ctx(t), ms[0].ID, statemachine.ActionRetry, "op", ""); err != nil {
		t.Fatal(err)
	}
	c := claim(t, h.Store, statemachine.RoleDump, "dst", "dst/agent", 2)
	for i := range c {
		if c[i].ID != ms[0].ID {
			continue
		}
		if err := h.Store.Record(ctx(t), &c[i], statemachine.Fields{Marks: []statemachine.Mark{statemachine.MarkBlocked}}, ""); err != nil {
			t.Fatal(err)
		}
	}
	got, _ = h.Store.Get(ctx(t), ms[0].ID)
	if got.BlockedAt.IsZero() || !got.UnblockedAt.IsZero() {
		t.Errorf("re-blocked row: blocked %s, unblocked %s (want unblocked cleared)", got.BlockedAt, got.UnblockedAt)
	}
}

func testOperatorActions(t *testing.T, h Harness) {
	ms := mustPlan(t, h.Store, planned(3, "src", "dst"))
	// cancel: only Waiting
	got, err := h.Store.Operate(ctx(t), ms[0].ID, statemachine.ActionCancel, "alice", "customer left")
	if err != nil || got.Status != statemachine.Cancelled {
		t.Fatalf("cancel: %+v, %v", got, err)
	}
	mustPromote(t, h.Store, 2)
	if _, err := h.Store.Operate(ctx(t), ms[1].ID, statemachine.ActionCancel, "alice", ""); err == nil {
		t.Error("cancelled a row in To dump")
	}
	// retry and rollback of a failed dump
	m := claimOne(t, h.Store, statemachine.RoleDump, "dst")
	if err := h.Store.Fail(ctx(t), &m, statemachine.Fields{}, "boom"); err != nil {
		t.Fatal(err)
	}
	got, err = h.Store.Operate(ctx(t), m.ID, statemachine.ActionRetry, "alice", "")
	if err != nil || got.Status != statemachine.ToDump || got.Attempt != 1 {
		t.Fatalf("retry: %+v, %v", got, err)
	}
	m = claimOne(t, h.Store, statemachine.RoleDump, "dst")
	if err := h.Store.Fail(ctx(t), &m, statemachine.Fields{}, "boom again"); err != nil {
		t.Fatal(err)
	}
	got, err = h.Store.Operate(ctx(t), m.ID, statemachine.ActionRollback, "alice", "give up")
	if err != nil || got.Status != statemachine.ToRollBack || got.Attempt != 0 {
		t.Fatalf("rollback: %+v, %v", got, err)
	}
	got = walk(t, h, statemachine.RoleRollback, "src", statemachine.Fields{})
	if got.Status != statemachine.RolledBack {
		t.Fatalf("after rollback: %s", got.Status)
	}
	if _, err := h.Store.Operate(ctx(t), 999999, statemachine.ActionRetry, "alice", ""); !errors.Is(err, statemachine.ErrNotFound) {
		t.Errorf("retry of a missing row: %v, want ErrNotFound", err)
	}
	evs, _ := h.Store.Events(ctx(t), ms[0].ID)
	if last := evs[len(evs)-1]; last.Actor != "alice" || last.Detail != "customer left" || last.To != statemachine.Cancelled {
		t.Errorf("cancel event: %+v", last)
	}
}

func testPromote(t *testing.T, h Harness) {
	ms := mustPlan(t, h.Store, planned(60, "src", "dst"))
	n, err := h.Store.Promote(ctx(t), 3, "scheduler")
	if err != nil || n != 3 {
		t.Fatalf("promote 3: %d, %v", n, err)
	}
	for i, m := range ms {
		want := statemachine.Waiting
		if i < 3 {
			want = statemachine.ToDump
		}
		wantStatus(t, h, m.ID, want)
	}
	// Ten concurrent promoters of 10 each, 57 rows left: exactly 57 move,
	// none twice.
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	for range 10 {
		s := h.Open(t, nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := s.Promote(ctx(t), 10, "scheduler")
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			total += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	if total != 57 {
		t.Errorf("promoted %d, want 57", total)
	}
	var events int
	if err := h.DB.QueryRowContext(ctx(t), "SELECT COUNT(*) FROM migration_event WHERE to_status = 'To dump'").Scan(&events); err != nil || events != 60 {
		t.Errorf("%d promotion events, want 60 (%v)", events, err)
	}
	if n := countRows(t, h, "WHERE status = 'To dump'"); n != 60 {
		t.Errorf("%d rows To dump, want 60", n)
	}
}

func testClaimEnginesRetryAndRescueHost(t *testing.T, h Harness) {
	clock := NewClock()
	s := h.Open(t, clock.Now)
	rows := append(planned(2, "a", "x"), planned(2, "b", "y")...)
	for i := range rows {
		rows[i].DatabaseName = fmt.Sprintf("db_%d", i)
		rows[i].DNSName = ""
		if rows[i].Source == "b" {
			rows[i].DNSName = fmt.Sprintf("db-%d.example.test", i)
		}
	}
	rows[1].Engine = statemachine.EnginePostgres
	all := mustPlan(t, s, rows)
	mustPromote(t, s, 4)
	// An agent with only a PostgreSQL handler claims only PostgreSQL rows.
	ms, err := s.Claim(ctx(t), statemachine.ClaimRequest{Role: statemachine.RoleDump, Host: "x", Owner: "x/pg", Limit: 5, Lease: time.Minute,
		Engines: []statemachine.Engine{statemachine.EnginePostgres}})
	if err != nil || len(ms) != 1 || ms[0].ID != all[1].ID {
		t.Fatalf("claim postgres rows on x: %+v, %v", ms, err)
	}
	// A retry keeps the claim, counts the attempt, says why.
	if err := s.NoteRetry(ctx(t), &ms[0], "connection refused"); err != nil {
		t.Fatal(err)
	}
	r := wantStatus(t, h, ms[0].ID, statemachine.Dumping)
	if r.Attempt != 2 || ms[0].Attempt != 2 || r.LastErr.String != "connection refused" || r.Owner.String != "x/pg" {
		t.Fatalf("after NoteRetry: %+v", r)
	}
	evs, _ := s.Events(ctx(t), ms[0].ID)
	if last := evs[len(evs)-1]; last.Detail != "retry 2 after: connection refused" {
		t.Errorf("retry event: %+v", last)
	}
	stale := ms[0]
	stale.Fence--
	if err := s.NoteRetry(ctx(t), &stale, "x"); !errors.Is(err, statemachine.ErrLeaseLost) {
		t.Errorf("NoteRetry with a stale fence: %v", err)
	}
	// Host y's rows are claimed too; both leases expire; host x's agent
	// takes back only its own.
	mb := claim(t, s, statemachine.RoleDump, "y", "y/agent", 5)
	if len(mb) != 2 {
		t.Fatalf("claimed %d rows on y", len(mb))
	}
	clock.Advance(2 * time.Minute)
	res, err := s.RescueHost(ctx(t), statemachine.RoleDump, "x", nil, 3)
	if err != nil || len(res) != 1 || res[0].ID != ms[0].ID || res[0].To != statemachine.ToDump {
		t.Fatalf("rescue host x: %+v, %v", res, err)
	}
	wantStatus(t, h, mb[0].ID, statemachine.Dumping)
	// The DNS role has no host column: its rows are found by owner.
	for i := range mb {
		if err := s.Advance(ctx(t), &mb[i], dumpFields(mb[i].ID), ""); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		walk(t, h, statemachine.RoleImport, "y", statemachine.Fields{})
	}
	mdns := claim(t, s, statemachine.RoleDNS, "", "dns-1/agent", 5)
	if len(mdns) != 2 {
		t.Fatalf("claimed %d DNS rows, want 2", len(mdns))
	}
	clock.Advance(2 * time.Minute)
	res, err = s.RescueHost(ctx(t), statemachine.RoleDNS, "dns-1", nil, 3)
	if err != nil || len(res) != 2 || res[0].To != statemachine.DNSToUpdate {
		t.Fatalf("rescue dns-1: %+v, %v", res, err)
	}
	if res, err := s.RescueHost(ctx(t), statemachine.RoleDNS, "dns-", nil, 3); err != nil || len(res) != 0 {
		t.Fatalf("rescue with a host that is a prefix of another: %+v, %v", res, err)
	}
}

// testRescueGoneOwner: an agent that knows its predecessor's process is
// gone takes back that owner's rows at once, leases unexpired; rows of
// any other owner keep their claim until their lease expires, and a row
// the dead owner held at its last attempt goes to its failed status.
func testRescueGoneOwner(t *testing.T, h Harness) {
	clock := NewClock()
	s := h.Open(t, clock.Now)
	mustPlan(t, s, planned(4, "a", "x"))
	mustPromote(t, s, 4)
	const dead, live = "x/pid 7 (dead0001)", "x/pid 8 (live0002)"
	gone := claim(t, s, statemachine.RoleDump, "x", dead, 2)
	kept := claim(t, s, statemachine.RoleDump, "x", live, 1)
	if len(gone) != 2 || len(kept) != 1 {
		t.Fatalf("claimed %d and %d rows", len(gone), len(kept))
	}
	// The dead owner's second row was at its last attempt.
	for range 2 {
		if err := s.NoteRetry(ctx(t), &gone[1], "connection refused"); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(5 * time.Second) // every lease has 55 s to run
	res, err := s.RescueHost(ctx(t), statemachine.RoleDump, "x", []string{dead, "x/pid 6 (older003)"}, 3)
	if err != nil || len(res) != 2 {
		t.Fatalf("rescue the gone owner's rows: %+v, %v", res, err)
	}
	if res[0].ID != gone[0].ID || res[0].To != statemachine.ToDump || res[0].Owner != dead ||
		res[1].ID != gone[1].ID || res[1].To != statemachine.DumpFailed {
		t.Fatalf("rescued %+v; want row %d to %q and row %d to %q", res, gone[0].ID, statemachine.ToDump, gone[1].ID, statemachine.DumpFailed)
	}
	r := wantStatus(t, h, gone[0].ID, statemachine.ToDump)
	if r.Owner.Valid || !strings.Contains(r.LastErr.String, dead+" is gone") {
		t.Errorf("taken-back row: owner %v, last error %q", r.Owner, r.LastErr.String)
	}
	if r := wantStatus(t, h, kept[0].ID, statemachine.Dumping); r.Owner.String != live {
		t.Errorf("the live owner's row: owner %q", r.Owner.String)
	}
	// The old claim cannot move its row any more.
	if err := s.Advance(ctx(t), &gone[0], dumpFields(gone[0].ID), ""); !errors.Is(err, statemachine.ErrLeaseLost) {
		t.Errorf("the dead owner's advance after the take-back: %v", err)
	}
	evs, _ := s.Events(ctx(t), gone[0].ID)
	if last := evs[len(evs)-1]; last.Actor != string(statemachine.RoleRescuer) || last.To != statemachine.ToDump {
		t.Errorf("take-back event: %+v", last)
	}
	// Once the lease expires, the live owner's row is taken back too (it
	// was not named: only its lease says it is over).
	clock.Advance(time.Minute)
	if res, err := s.RescueHost(ctx(t), statemachine.RoleDump, "x", nil, 3); err != nil || len(res) != 1 || res[0].ID != kept[0].ID ||
		!strings.Contains(readRow(t, h, kept[0].ID).LastErr.String, "lease of "+live+" expired") {
		t.Fatalf("rescue after expiry: %+v, %v", res, err)
	}
}

func testExpireDump(t *testing.T, h Harness) {
	ms := mustPlan(t, h.Store, planned(2, "src", "dst"))
	mustPromote(t, h.Store, 2)
	id := ms[0].ID
	got := walk(t, h, statemachine.RoleDump, "dst", dumpFields(id))
	for _, st := range []struct {
		role statemachine.Role
		host string
	}{{statemachine.RoleImport, "dst"}, {statemachine.RoleDNS, ""}, {statemachine.RoleClose, "src"}} {
		got = walk(t, h, st.role, st.host, statemachine.Fields{})
	}
	url := got.DumpURL
	// Not while the row is in flight, not for another URL.
	other := walk(t, h, statemachine.RoleDump, "dst", dumpFields(ms[1].ID))
	if ok, err := h.Store.ExpireDump(ctx(t), other.ID, other.DumpURL, "gc", ""); err != nil || ok {
		t.Fatalf("expired the dump of a row in To import: %v, %v", ok, err)
	}
	if ok, err := h.Store.ExpireDump(ctx(t), id, url+"x", "gc", ""); err != nil || ok {
		t.Fatalf("expired with the wrong URL: %v, %v", ok, err)
	}
	ok, err := h.Store.ExpireDump(ctx(t), id, url, "gc@ops-1", "dump deleted by retention (older than 720h)")
	if err != nil || !ok {
		t.Fatalf("expire: %v, %v", ok, err)
	}
	m, _ := h.Store.Get(ctx(t), id)
	if m.Status != statemachine.Done || m.DumpURL != "" || m.DumpSHA256 == "" || m.DumpBytes == 0 {
		t.Fatalf("after expiry: %+v", m)
	}
	evs, _ := h.Store.Events(ctx(t), id)
	if last := evs[len(evs)-1]; last.Actor != "gc@ops-1" || last.From != statemachine.Done || last.To != statemachine.Done || !strings.Contains(last.Detail, "retention") {
		t.Fatalf("expiry event: %+v", last)
	}
	if ok, _ := h.Store.ExpireDump(ctx(t), id, url, "gc", ""); ok {
		t.Fatal("expired twice")
	}
	// The table still refuses a row in the pipeline without its dump.
	if _, err := h.DB.ExecContext(ctx(t), h.Q("UPDATE migration SET dump_url = NULL WHERE id = ?"), other.ID); err == nil {
		t.Fatal("the table accepted a To import row without a dump_url")
	}
}

func testRecords(t *testing.T, h Harness) {
	s := h.Open(t, nil)
	rows := mustPlan(t, s, planned(1, "src-1", "dst-1"))
	mustPromote(t, s, 1)
	if _, ok, err := s.GetRecord(ctx(t), rows[0].ID, "block"); err != nil || ok {
		t.Fatalf("record before any was written: %v, %v", ok, err)
	}
	m := claimOne(t, s, statemachine.RoleDump, "dst-1")
	body := []byte(`{"grants":["GRANT ALL PRIVILEGES ON ` + "`shop`" + `.* TO 'a'@'%'"],"name":"ünï ' \" \\"}`)
	if err := s.PutRecord(ctx(t), &m, "block", body); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRecord(ctx(t), &m, "block", append(body, ' ')); err != nil {
		t.Fatalf("replace a record: %v", err)
	}
	if got, ok, err := s.GetRecord(ctx(t), m.ID, "block"); err != nil || !ok || string(got) != string(body)+" " {
		t.Fatalf("record read back: %q, %v, %v", got, ok, err)
	}
	if err := s.PutRecord(ctx(t), &m, "Block!", body); err == nil {
		t.Error("a record kind outside [a-z0-9_-] was accepted")
	}
	stale := m
	stale.Fence--
	if err := s.PutRecord(ctx(t), &stale, "block", []byte("{}")); !errors.Is(err, statemachine.ErrLeaseLost) {
		t.Fatalf("record by a stale claim: %v", err)
	}
	// The record outlives the claim: the next step (or a rollback) reads it.
	if err := s.Fail(ctx(t), &m, statemachine.Fields{}, "boom"); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRecord(ctx(t), &m, "block", []byte("{}")); !errors.Is(err, statemachine.ErrLeaseLost) {
		t.Fatalf("record on a row no longer claimed: %v", err)
	}
	if got, ok, err := s.GetRecord(ctx(t), m.ID, "block"); err != nil || !ok || string(got) != string(body)+" " {
		t.Fatalf("record after the claim ended: %q, %v, %v", got, ok, err)
	}
}
