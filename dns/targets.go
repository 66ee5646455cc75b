package dns

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// AgentLookup finds a host's entry in the agent registry.
type AgentLookup func(ctx context.Context, host string) (statemachine.Agent, bool, error)

// Targets resolves hosts' DNS targets: targets of the configuration
// first, else what the host's agent publishes (agent.dns-target).
type Targets struct {
	Config map[string]string
	Lookup AgentLookup
}

// ErrNoTarget: nobody says what a host's names point to.
var ErrNoTarget = errors.New("no DNS target")

// Of returns host's DNS target.
func (t Targets) Of(ctx context.Context, host string) (Target, error) {
	if s, ok := t.Config[host]; ok {
		tg, err := ParseTarget(s)
		if err != nil {
			return Target{}, fmt.Errorf("targets[%s]: %w: %w", host, ErrNoTarget, err)
		}
		return tg, nil
	}
	if t.Lookup != nil {
		a, ok, err := t.Lookup(ctx, host)
		if err != nil {
			return Target{}, fmt.Errorf("look up the agent of host %s: %w", host, err)
		}
		if ok && strings.TrimSpace(a.DNSTarget) != "" {
			tg, err := ParseTarget(a.DNSTarget)
			if err != nil {
				return Target{}, fmt.Errorf("the dns-target host %s's agent publishes: %w: %w", host, ErrNoTarget, err)
			}
			return tg, nil
		}
	}
	return Target{}, fmt.Errorf("%w known for host %s: set agent.dns-target in its agent's configuration (what its databases' names point to), or targets.%s here", ErrNoTarget, host, host)
}
