package dns_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/fleetmigrate/fleetmigrate/dns"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// The DNS host points names only at targets it can vouch for: its own
// configuration's, or published addresses inside dns.allowed-targets.
func TestVouched(t *testing.T) {
	published := map[string]string{
		"inside":  "10.1.2.3, fd00::3",
		"outside": "10.1.2.3, 192.0.2.66",
		"cname":   "db-17.hosts.example.net",
		"mapped":  "::ffff:10.1.2.4",
	}
	allowed, err := dns.ParseAllowed([]string{"10.1.0.0/16", " fd00::/8", "192.0.2.1"})
	if err != nil {
		t.Fatal(err)
	}
	tg := dns.Targets{
		Config:  map[string]string{"configured": "192.0.2.99"},
		Allowed: allowed,
		Lookup: func(_ context.Context, host string) (statemachine.Agent, bool, error) {
			s, ok := published[host]
			return statemachine.Agent{Host: host, DNSTarget: s}, ok, nil
		},
	}
	for host, want := range map[string]string{
		"inside":     "10.1.2.3, fd00::3",
		"configured": "192.0.2.99", // outside, but the configuration's own
		"mapped":     "10.1.2.4",
		"outside":    "192.0.2.66 is outside dns.allowed-targets",
		"cname":      "publishes the host name db-17.hosts.example.net (a CNAME)",
		"unknown":    "no DNS target known for host unknown",
	} {
		got, err := tg.Vouched(context.Background(), host)
		switch {
		case err != nil && !strings.Contains(err.Error(), want):
			t.Errorf("%s: %v; want %q", host, err, want)
		case err == nil && got.String() != want:
			t.Errorf("%s: %s; want %s", host, got, want)
		case err != nil && host != "unknown" && !errors.Is(err, dns.ErrNotAllowed):
			t.Errorf("%s: %v is not ErrNotAllowed", host, err)
		}
	}
	// Nothing allowed: no published target is vouched for.
	tg.Allowed = nil
	if _, err := tg.Vouched(context.Background(), "inside"); !errors.Is(err, dns.ErrNotAllowed) || !strings.Contains(err.Error(), "none are set") {
		t.Errorf("with no allowed-targets: %v", err)
	}
	if _, err := dns.ParseAllowed([]string{"10.1.0.0/33"}); err == nil {
		t.Error("a bad network was accepted")
	}
}
