package scheduler

import (
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// Caps are the per-host limits on rows in flight (0: no limit).
type Caps struct {
	PerSource      int
	PerDestination int
}

// Choose picks which candidates to promote: round-robin across source hosts,
// one row per source per round, so that no server is hammered while others
// idle. Sources are served in statemachine.SourceOrder: fewer rows in flight
// first; among equals the order rotates, starting after `after` (the last
// source served the previous time), so that a small budget does not always
// go to the same hosts. Within
// a source, candidates are taken in the offered order, skipping rows whose
// destination is at its cap. It returns the chosen ids and the last source
// served.
func Choose(st statemachine.PromoteState, caps Caps, after string) ([]int64, string) {
	if st.Budget <= 0 || len(st.Candidates) == 0 {
		return nil, after
	}
	bySource := make(map[string]int, len(st.InFlightBySource))
	for k, v := range st.InFlightBySource {
		bySource[k] = v
	}
	byDest := make(map[string]int, len(st.InFlightByDestination))
	for k, v := range st.InFlightByDestination {
		byDest[k] = v
	}
	sources := make([]string, 0, len(st.Candidates))
	for src := range st.Candidates {
		sources = append(sources, src)
	}
	sources = statemachine.SourceOrder(sources, bySource, after)

	next := make(map[string]int, len(sources)) // index of the next candidate per source
	var ids []int64
	last := after
	for progress := true; progress && len(ids) < st.Budget; {
		progress = false
		for _, src := range sources {
			if len(ids) >= st.Budget {
				break
			}
			if caps.PerSource > 0 && bySource[src] >= caps.PerSource {
				continue
			}
			cs := st.Candidates[src]
			for next[src] < len(cs) {
				c := cs[next[src]]
				next[src]++
				if caps.PerDestination > 0 && byDest[c.Destination] >= caps.PerDestination {
					continue
				}
				ids = append(ids, c.ID)
				bySource[src]++
				byDest[c.Destination]++
				last = src
				progress = true
				break
			}
		}
	}
	return ids, last
}
