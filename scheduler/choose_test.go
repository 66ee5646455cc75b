package scheduler

import (
	"fmt"
	"slices"
	"testing"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// state builds a PromoteState with n candidates for each source, destination
// given by dest(source, i).
func state(budget int, sources []string, n int, dest func(src string, i int) string) statemachine.PromoteState {
	st := statemachine.PromoteState{Budget: budget, InFlightBySource: map[string]int{}, InFlightByDestination: map[string]int{},
		Candidates: map[string][]statemachine.Candidate{}}
	id := int64(1)
	for _, src := range sources {
		for i := range n {
			st.Candidates[src] = append(st.Candidates[src], statemachine.Candidate{ID: id, Source: src, Destination: dest(src, i)})
			id++
		}
	}
	return st
}

func perSource(st statemachine.PromoteState, ids []int64) map[string]int {
	out := map[string]int{}
	for src, cs := range st.Candidates {
		for _, c := range cs {
			if slices.Contains(ids, c.ID) {
				out[src]++
			}
		}
	}
	return out
}

func TestChooseRoundRobin(t *testing.T) {
	var srcs []string
	for i := range 10 {
		srcs = append(srcs, fmt.Sprintf("src-%02d", i))
	}
	st := state(20, srcs, 10, func(string, int) string { return "dst" })
	ids, _ := Choose(st, Caps{PerSource: 4}, "")
	if len(ids) != 20 {
		t.Fatalf("chose %d, want 20", len(ids))
	}
	for src, n := range perSource(st, ids) {
		if n != 2 {
			t.Errorf("%s got %d, want 2", src, n)
		}
	}
}

func TestChooseCaps(t *testing.T) {
	st := state(50, []string{"a", "b"}, 10, func(src string, i int) string { return fmt.Sprintf("d%d", i%2) })
	st.InFlightBySource["a"] = 3
	st.InFlightByDestination["d0"] = 5
	ids, _ := Choose(st, Caps{PerSource: 4, PerDestination: 6}, "")
	got := perSource(st, ids)
	// a: one free slot; d0 has one free slot, d1 six.
	if got["a"] != 1 || got["b"] != 4 {
		t.Errorf("per source %v, want a:1 b:4", got)
	}
	dests := map[string]int{}
	for _, cs := range st.Candidates {
		for _, c := range cs {
			if slices.Contains(ids, c.ID) {
				dests[c.Destination]++
			}
		}
	}
	if dests["d0"] > 1 {
		t.Errorf("destination d0 got %d more rows with one free slot", dests["d0"])
	}
	// Unlimited caps: the budget is the only limit.
	ids, _ = Choose(st, Caps{}, "")
	if len(ids) != 20 {
		t.Errorf("uncapped: %d, want all 20", len(ids))
	}
}

func TestChooseFewestInFlightFirstAndRotation(t *testing.T) {
	st := state(1, []string{"a", "b", "c"}, 3, func(string, int) string { return "d" })
	st.InFlightBySource = map[string]int{"a": 2, "b": 1}
	ids, last := Choose(st, Caps{}, "")
	if last != "c" || len(ids) != 1 {
		t.Fatalf("budget 1: served %q, want c (nothing in flight)", last)
	}
	// All equal: successive single promotions rotate through the sources.
	st.InFlightBySource = map[string]int{}
	var order []string
	after := ""
	for range 4 {
		_, after = Choose(st, Caps{}, after)
		order = append(order, after)
	}
	if fmt.Sprint(order) != "[a b c a]" {
		t.Errorf("rotation %v, want [a b c a]", order)
	}
}

func TestChooseNothing(t *testing.T) {
	if ids, last := Choose(statemachine.PromoteState{Budget: 0, Candidates: map[string][]statemachine.Candidate{"a": {{ID: 1}}}}, Caps{}, "x"); ids != nil || last != "x" {
		t.Errorf("budget 0: %v %q", ids, last)
	}
	st := state(5, []string{"a"}, 3, func(string, int) string { return "full" })
	st.InFlightByDestination["full"] = 2
	if ids, _ := Choose(st, Caps{PerDestination: 2}, ""); len(ids) != 0 {
		t.Errorf("full destination: chose %v", ids)
	}
}
