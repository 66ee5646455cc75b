package steps_test

import (
	"net/netip"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"

	"github.com/fleetmigrate/fleetmigrate/internal/statetest"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// TestDNSStep: the DNS agent repoints names at the destination, and
// refuses (DNS failed, record untouched) a name someone pointed elsewhere.
func TestDNSStep(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	// the source and destination agents publish their DNS targets
	f.start(t, f.src, agentOpts{}, statemachine.RoleRollback)
	f.start(t, f.dst, agentOpts{}, statemachine.RoleRollback)
	ok, cname, moved := f.plan(t, "dnsok"), f.plan(t, "dnscname"), f.plan(t, "dnsmoved")
	statetest.Walk(t, f.state, statetest.ToDNS(f.src.host, f.dst.host), nil)
	// someone pointed dnsmoved elsewhere by hand; dnscname is a CNAME,
	// which an address target does not match either
	movedName, cnameName := f.row(t, moved).DNSName, f.row(t, cname).DNSName
	f.dnsAgent(t, map[string]string{
		movedName: "300 IN A 127.0.0.9",
		cnameName: "300 IN CNAME src.hosts.example.test.",
	})
	m := f.waitStatus(t, ok, statemachine.ToCloseSource, statemachine.DNSFailed)
	if m.Status != statemachine.ToCloseSource || m.SwitchedAt.IsZero() {
		t.Fatalf("row ended %q: %s\n%s", m.Status, m.LastError, f.events(t, ok))
	}
	f.resolvesTo(t, ok, "127.77.0.2, fd77::2")
	if ev := f.events(t, ok); !strings.Contains(ev, "now points at the destination destination (127.77.0.2, fd77::2; was 127.77.0.1)") {
		t.Errorf("events:\n%s", ev)
	}
	for id, want := range map[int64]string{
		moved: "record " + movedName + " points to 127.0.0.9, expected 127.77.0.1 (the source source's target); it should now point to 127.77.0.2, fd77::2 (the destination destination's). Nothing was changed",
		cname: "record " + cnameName + " points to src.hosts.example.test, expected 127.77.0.1",
	} {
		m := f.waitStatus(t, id, statemachine.ToCloseSource, statemachine.DNSFailed)
		if m.Status != statemachine.DNSFailed || !strings.Contains(m.LastError, want) || !m.SwitchedAt.IsZero() {
			t.Errorf("row %d: %q %q switched %v", id, m.Status, m.LastError, m.SwitchedAt)
		}
	}
	rrs, err := f.bind.Query(ctx(t), movedName, mdns.TypeA)
	if err != nil || len(rrs) != 1 || rrs[0].(*mdns.A).A.String() != "127.0.0.9" {
		t.Errorf("dnsmoved changed: %v %v", rrs, err)
	}
}

// TestDNSStepRefusesAnUnvouchedTarget: a destination whose agent publishes
// an address outside dns.allowed-targets (a compromised server pointing
// names at itself, or a wrong configuration) fails its row, the name left
// as it was at BIND.
func TestDNSStepRefusesAnUnvouchedTarget(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.start(t, f.src, agentOpts{}, statemachine.RoleRollback)
	f.start(t, f.dst, agentOpts{}, statemachine.RoleRollback)
	id := f.plan(t, "dnsvouch")
	statetest.Walk(t, f.state, statetest.ToDNS(f.src.host, f.dst.host), nil)
	// the destination publishes 127.77.0.2 and fd77::2; only 10/8 and
	// fd77::/16 are vouched for
	f.dnsAllowed = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd77::/16")}
	f.dnsAgent(t)
	m := f.waitStatus(t, id, statemachine.ToCloseSource, statemachine.DNSFailed)
	want := "not repointed, nothing was changed in DNS: DNS target not allowed: host destination's agent publishes 127.77.0.2, fd77::2, and 127.77.0.2 is outside dns.allowed-targets ([10.0.0.0/8 fd77::/16])"
	if m.Status != statemachine.DNSFailed || !strings.Contains(m.LastError, want) || !m.SwitchedAt.IsZero() {
		t.Fatalf("row ended %q switched %v: %s\nwant the error to say: %s", m.Status, m.SwitchedAt, m.LastError, want)
	}
	f.resolvesTo(t, id, "127.77.0.1")
}
