package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// firstN is a chooser that takes up to the budget, sources in name order,
// candidates in offered order.
func firstN(st statemachine.PromoteState) []int64 {
	var srcs []string
	for s := range st.Candidates {
		srcs = append(srcs, s)
	}
	sort.Strings(srcs)
	var ids []int64
	for _, s := range srcs {
		for _, c := range st.Candidates[s] {
			if len(ids) < st.Budget {
				ids = append(ids, c.ID)
			}
		}
	}
	return ids
}

func promoteReq(holder string, max int) statemachine.PromoteRequest {
	return statemachine.PromoteRequest{Holder: holder, Actor: "scheduler", MaxInFlight: max, ExtraCandidates: 2}
}

func testPromoteFairIsFenced(t *testing.T, h Harness) {
	clock := NewClock()
	s := h.Open(t, clock.Now)
	mustPlan(t, s, planned(10, "src", "dst"))
	// Without the lease: nothing.
	if _, err := s.PromoteFair(ctx(t), promoteReq("sched-1", 5), firstN); !errors.Is(err, statemachine.ErrLeaseLost) {
		t.Fatalf("promote without a lease: %v, want ErrLeaseLost", err)
	}
	if _, err := acquire(t, s, "sched-1", 5); err != nil {
		t.Fatal(err)
	}
	res, err := s.PromoteFair(ctx(t), promoteReq("sched-1", 5), firstN)
	if err != nil || len(res.Promoted) != 5 || res.InFlight != 5 {
		t.Fatalf("promote: %+v, %v", res, err)
	}
	if n := countRows(t, h, "WHERE status = 'To dump'"); n != 5 {
		t.Fatalf("%d rows To dump, want 5", n)
	}
	// At the limit: nothing more, and the chooser is not even offered rows.
	res, err = s.PromoteFair(ctx(t), promoteReq("sched-1", 5), func(st statemachine.PromoteState) []int64 {
		t.Errorf("chooser called with budget %d", st.Budget)
		return nil
	})
	if err != nil || len(res.Promoted) != 0 || res.InFlight != 5 {
		t.Fatalf("promote at the limit: %+v, %v", res, err)
	}
	// The lease expires (the scheduler hung): its promotion is refused.
	clock.Advance(2 * time.Minute)
	if _, err := s.PromoteFair(ctx(t), promoteReq("sched-1", 8), firstN); !errors.Is(err, statemachine.ErrLeaseLost) {
		t.Fatalf("promote with an expired lease: %v, want ErrLeaseLost", err)
	}
	// A chooser that oversteps is refused and nothing moves.
	if _, err := acquire(t, s, "sched-2", 8); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PromoteFair(ctx(t), promoteReq("sched-2", 8), func(statemachine.PromoteState) []int64 { return []int64{999999} }); err == nil {
		t.Error("chooser picked a row that was not offered; accepted")
	}
	if n := countRows(t, h, "WHERE status = 'To dump'"); n != 5 {
		t.Fatalf("%d rows To dump after refused promotions, want 5", n)
	}
	// The stop switch: nothing is promoted and the result says why.
	if _, err := s.SetStop(ctx(t), "alice", "enough for tonight"); err != nil {
		t.Fatal(err)
	}
	res, err = s.PromoteFair(ctx(t), promoteReq("sched-2", 8), firstN)
	if err != nil || len(res.Promoted) != 0 || !res.Stopped.Set || res.Stopped.Reason != "enough for tonight" || res.InFlight != 5 {
		t.Fatalf("promote with the stop switch set: %+v, %v", res, err)
	}
}

func testPromoteFairState(t *testing.T, h Harness) {
	s := h.Store
	var rows []statemachine.Planned
	for _, src := range []string{"a", "b", "c", "d"} {
		for i := range 5 {
			rows = append(rows, statemachine.Planned{Engine: statemachine.EngineMySQL, DatabaseName: fmt.Sprintf("%s_%d", src, i),
				Source: src, Destination: "dst-" + src, SizeBytes: int64(100 - i*10)})
		}
	}
	rows[4].SizeBytes = 0 // a_4: size unknown, sorted last by size
	mustPlan(t, s, rows)
	if _, err := acquire(t, s, "sched", 0); err != nil {
		t.Fatal(err)
	}
	// Two rows of a already in flight; b is paused.
	mustPromote(t, s, 2)
	if _, err := s.PauseSource(ctx(t), "b", "alice", "disk swap"); err != nil {
		t.Fatal(err)
	}
	req := promoteReq("sched", 10)
	req.MaxPerSource, req.ExtraCandidates, req.Order = 3, 1, statemachine.OrderSize
	var seen statemachine.PromoteState
	if _, err := s.PromoteFair(ctx(t), req, func(st statemachine.PromoteState) []int64 { seen = st; return nil }); err != nil {
		t.Fatal(err)
	}
	if seen.InFlight != 2 || seen.Budget != 8 || seen.InFlightBySource["a"] != 2 || seen.InFlightByDestination["dst-a"] != 2 {
		t.Errorf("counts: %+v", seen)
	}
	if _, ok := seen.Candidates["b"]; ok {
		t.Error("paused source b offered candidates")
	}
	// a has 1 free slot (+1 extra), c and d 3 (+1): smallest first, unknown last.
	var names []string
	for _, c := range seen.Candidates["a"] {
		names = append(names, fmt.Sprint(c.SizeBytes))
	}
	if got := fmt.Sprint(len(seen.Candidates["a"]), len(seen.Candidates["c"]), len(seen.Candidates["d"])); got != "2 4 4" {
		t.Errorf("candidates per source a c d: %s, want 2 4 4", got)
	}
	if c := seen.Candidates["c"]; len(c) < 2 || c[0].SizeBytes != 60 || c[1].SizeBytes != 70 {
		t.Errorf("candidates of c not smallest first: %+v", c)
	}
	if a := seen.Candidates["a"]; len(a) != 2 || a[0].SizeBytes != 70 || a[1].SizeBytes != 80 {
		t.Errorf("candidates of a: %+v (sizes %v)", a, names)
	}
	// Resume b: it is offered again.
	if ok, err := s.ResumeSource(ctx(t), "b"); err != nil || !ok {
		t.Fatalf("resume b: %v, %v", ok, err)
	}
	if ok, _ := s.ResumeSource(ctx(t), "b"); ok {
		t.Error("resuming twice reported a pause")
	}
	if _, err := s.PromoteFair(ctx(t), req, func(st statemachine.PromoteState) []int64 { seen = st; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(seen.Candidates["b"]) != 4 {
		t.Errorf("b after resume: %d candidates, want 4", len(seen.Candidates["b"]))
	}
}

func testPromoteFairRace(t *testing.T, h Harness) {
	const max = 25
	var rows []statemachine.Planned
	for i := range 300 {
		rows = append(rows, statemachine.Planned{Engine: statemachine.EngineMySQL, DatabaseName: fmt.Sprintf("db_%d", i),
			Source: fmt.Sprintf("src-%d", i%7), Destination: "dst"})
	}
	mustPlan(t, h.Store, rows)
	if _, err := acquire(t, h.Store, "sched", max); err != nil {
		t.Fatal(err)
	}
	// Eight promoters at once, each with its own connections, all claiming
	// to be the lease holder (a restart mid-tick, racing ticks): together
	// they never put more than max rows in flight.
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	for range 8 {
		s := h.Open(t, nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				res, err := s.PromoteFair(ctx(t), promoteReq("sched", max), firstN)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				total += len(res.Promoted)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if n := countRows(t, h, "WHERE status = 'To dump'"); n != max || total != max {
		t.Fatalf("%d rows in flight (%d reported promoted), want exactly %d", n, total, max)
	}
	n, err := h.Store.CountStatuses(ctx(t), statemachine.InFlightStatuses()...)
	if err != nil || n != max {
		t.Fatalf("CountStatuses: %d, %v", n, err)
	}
}

func testWindowStats(t *testing.T, h Harness) {
	clock := NewClock()
	s := h.Open(t, clock.Now)
	mustPlan(t, s, planned(6, "src", "dst"))
	mustPromote(t, s, 6)
	// 3 dumps fail (two with the same message), 3 succeed; 2 of those get
	// all the way to Done.
	for i, msg := range []string{"source database does not exist", "disk full", "source database does not exist"} {
		m := claimOne(t, s, statemachine.RoleDump, "dst")
		if err := s.Fail(ctx(t), &m, statemachine.Fields{}, msg); err != nil {
			t.Fatal(i, err)
		}
	}
	for range 3 {
		m := claimOne(t, s, statemachine.RoleDump, "dst")
		if err := s.Advance(ctx(t), &m, dumpFields(m.ID), ""); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		for _, step := range []struct {
			role statemachine.Role
			host string
		}{{statemachine.RoleImport, "dst"}, {statemachine.RoleDNS, ""}, {statemachine.RoleClose, "src"}} {
			m := claimOne(t, s, step.role, step.host)
			if err := s.Advance(ctx(t), &m, statemachine.Fields{}, ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	st, err := s.StepStats(ctx(t), 15*time.Minute)
	// completions: 3 dumps + 2 × (import, dns, close) = 9
	if err != nil || st.Failures != 3 || st.Completions != 9 || st.TopError != "source database does not exist" || st.TopErrorCount != 2 {
		t.Fatalf("step stats: %+v, %v", st, err)
	}
	groups, err := s.FailedByError(ctx(t), 5)
	if err != nil || len(groups) != 2 || groups[0] != (statemachine.ErrorGroup{Error: "source database does not exist", Count: 2}) {
		t.Fatalf("failed by error: %+v, %v", groups, err)
	}
	if n, err := s.DoneWithin(ctx(t), time.Hour); err != nil || n != 2 {
		t.Fatalf("done within an hour: %d, %v", n, err)
	}
	// Outside the window nothing counts.
	clock.Advance(16 * time.Minute)
	if st, err := s.StepStats(ctx(t), 15*time.Minute); err != nil || st.Failures != 0 || st.Completions != 0 {
		t.Fatalf("step stats after the window: %+v, %v", st, err)
	}
	if n, err := s.CountStatuses(ctx(t), statemachine.DumpFailed, statemachine.Done); err != nil || n != 5 {
		t.Fatalf("count Dump failed + Done: %d, %v", n, err)
	}
	ps, err := s.PausedSources(ctx(t))
	if err != nil || len(ps) != 0 {
		t.Fatalf("paused sources: %v, %v", ps, err)
	}
	p1, err := s.PauseSource(ctx(t), "src", "alice", "first")
	if err != nil || p1.By != "alice" || p1.Reason != "first" {
		t.Fatalf("pause: %+v, %v", p1, err)
	}
	p2, err := s.PauseSource(ctx(t), "src", "bob", "second")
	if err != nil || p2 != p1 {
		t.Fatalf("pausing twice changed the pause: %+v vs %+v, %v", p2, p1, err)
	}
	if ps, _ := s.PausedSources(ctx(t)); !slices.Equal(ps, []statemachine.SourcePause{p1}) {
		t.Fatalf("paused sources: %+v", ps)
	}
}
