package dns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
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
	// Allowed are the networks a published target's addresses must be in
	// for a name to be pointed at it (dns.allowed-targets, Vouched). A
	// target of Config is vouched for by the configuration itself.
	Allowed []netip.Prefix
}

// ErrNotAllowed: a host's published target that the DNS host does not
// vouch for (outside Allowed, or a host name).
var ErrNotAllowed = errors.New("DNS target not allowed")

// Vouched returns host's target if a name may be pointed at it: the
// configuration's (Config), or a published one whose every address is
// inside Allowed. Anything else is an ErrNotAllowed error that says what
// was published and what to do: an agent's credentials alone must not be
// enough to point customers' names at a server of its choice.
func (t Targets) Vouched(ctx context.Context, host string) (Target, error) {
	tg, err := t.Of(ctx, host)
	if _, configured := t.Config[host]; configured || err != nil {
		return tg, err
	}
	if tg.Host != "" {
		return Target{}, fmt.Errorf("%w: host %s's agent publishes the host name %s (a CNAME), which dns.allowed-targets cannot vouch for: "+
			"give targets.%s in the DNS host's configuration", ErrNotAllowed, host, show(tg.Host), host)
	}
	for _, a := range tg.Addrs {
		if !inAny(a, t.Allowed) {
			allowed := "none are set"
			if len(t.Allowed) > 0 {
				allowed = fmt.Sprint(t.Allowed)
			}
			return Target{}, fmt.Errorf("%w: host %s's agent publishes %s, and %s is outside dns.allowed-targets (%s). "+
				"If that is the host's address, add its network to dns.allowed-targets or give targets.%s in the DNS host's configuration; "+
				"if it is not, the agent of %s (or its state-database login) is not to be trusted", ErrNotAllowed, host, tg, a, allowed, host, host)
		}
	}
	return tg, nil
}

func inAny(a netip.Addr, prefixes []netip.Prefix) bool {
	for _, p := range prefixes {
		if p.Contains(a.Unmap()) {
			return true
		}
	}
	return false
}

// ParseAllowed reads dns.allowed-targets: CIDRs ("10.1.0.0/16") or single
// addresses.
func ParseAllowed(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("allowed-targets: %q is neither a network (10.1.0.0/16) nor an address", s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
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
