package statemachine

import "sort"

// SourceOrder is the round-robin order in which the scheduler serves source
// hosts: fewest rows in flight first; among equals, the hosts after `after`
// (the last one served) first, then the wrap-around, by name. The store asks
// the first hosts of this order for candidates, and the scheduler's chooser
// serves them in it, so both agree on who is next.
func SourceOrder(sources []string, inFlight map[string]int, after string) []string {
	out := append([]string(nil), sources...)
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if inFlight[a] != inFlight[b] {
			return inFlight[a] < inFlight[b]
		}
		if (a > after) != (b > after) {
			return a > after
		}
		return a < b
	})
	return out
}
