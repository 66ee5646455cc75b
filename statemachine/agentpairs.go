package statemachine

import (
	"slices"
	"strings"
)

// LoginSide is a side of a row an agent's own state-database login may act
// for: the row's source host, its destination host, or the DNS host (rows
// in the DNS step's statuses, whatever their hosts).
type LoginSide string

// The login sides.
const (
	LoginSource      LoginSide = "source"
	LoginDestination LoginSide = "destination"
	LoginDNS         LoginSide = "dns"
)

// LoginSideOf is the login side of a step.
func LoginSideOf(s Step) LoginSide {
	switch s.Side {
	case SideSource:
		return LoginSource
	case SideDestination:
		return LoginDestination
	}
	return LoginDNS
}

// AgentPair is a status change (From → To) an agent login acting for Side
// may make on a row; From == To is a write that keeps the status (a lease
// renewal, a recorded field, a progress note, a step record) while the row
// is in the step's working status.
type AgentPair struct {
	Side     LoginSide
	From, To Status
}

// AgentPairs returns, sorted, what the state database's agent_transition
// table must hold: for each step, on its side, the claim, every way the
// holder ends it (done, diverted, failed, released — which are also the
// moves of its own crash recovery), and the writes of the holder.
func AgentPairs() []AgentPair {
	seen := map[AgentPair]bool{}
	var out []AgentPair
	add := func(side LoginSide, from, to Status) {
		p := AgentPair{side, from, to}
		if to != "" && !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	for _, s := range Steps {
		side := LoginSideOf(s)
		add(side, s.Queued, s.Working)
		for _, to := range []Status{s.Next, s.NextWithoutDNS, s.Divert, s.DivertWithoutDNS, s.Failed, s.Queued, s.Working} {
			add(side, s.Working, to)
		}
	}
	slices.SortFunc(out, func(a, b AgentPair) int {
		if c := strings.Compare(string(a.Side), string(b.Side)); c != 0 {
			return c
		}
		if c := strings.Compare(string(a.From), string(b.From)); c != 0 {
			return c
		}
		return strings.Compare(string(a.To), string(b.To))
	})
	return out
}
