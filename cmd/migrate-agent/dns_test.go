package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/statetest"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// TestDNSRoleFromTheConfiguration: a migrate-agent process with --roles
// dns and a dns section (key from a BIND key file) repoints a row's name
// at BIND and hands the row to the close step.
func TestDNSRoleFromTheConfiguration(t *testing.T) {
	fleettest.Integration(t)
	t.Parallel()
	bin := fleettest.Build(t, ".")
	sm := fleettest.SharedMariaDB(t)
	state := statetest.Upgraded(t, "mysql", sm.DSN(sm.NewDatabase(t)))
	b := fleettest.NewBIND(t, fleettest.BINDConfig{Records: []string{"Shop 300 IN A 127.77.0.1", "www 300 IN TXT \"stays\""}})
	keyFile := filepath.Join(t.TempDir(), "tsig.key")
	if err := os.WriteFile(keyFile, fmt.Appendf(nil, "key %q {\n\talgorithm hmac-sha256;\n\tsecret %q;\n};\n", b.KeyName, b.KeySecret), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "agent.yaml")
	body := fmt.Sprintf("host: dns-1\nagent:\n  poll-interval: 100ms\n  lease: 5s\n"+
		"dns:\n  zones:\n    - name: %s\n      primary: %s\n  key-file: %s\n  targets:\n    src-1: 127.77.0.1\n    dst-1: dst-1.hosts.example.test\n",
		b.Zone, b.Addr, keyFile)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	store := state.Open(t)
	ctx := context.Background()
	if _, err := store.Plan(ctx, []statemachine.Planned{{Engine: statemachine.EngineMySQL, DatabaseName: "shop", Source: "src-1", Destination: "dst-1", DNSName: "SHOP.db.example.test."}}, "test", false); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Promote(ctx, 1, "test"); err != nil {
		t.Fatal(err)
	}
	statetest.Walk(t, store, statetest.ToDNS("src-1", "dst-1"), nil)
	fleettest.Start(t, bin, state.Env(), "--config", cfg, "--roles", "dns")
	deadline := time.Now().Add(30 * time.Second)
	for {
		rows, err := store.List(ctx, statemachine.Filter{})
		if err != nil || len(rows) != 1 {
			t.Fatalf("list: %v %v", rows, err)
		}
		if m := rows[0]; m.Status == statemachine.ToCloseSource {
			if m.SwitchedAt.IsZero() {
				t.Error("switched_at not recorded")
			}
			break
		} else if m.Status == statemachine.DNSFailed || time.Now().After(deadline) {
			t.Fatalf("row is %q: %s", m.Status, m.LastError)
		}
		time.Sleep(100 * time.Millisecond)
	}
	rrs, err := b.Query(ctx, "shop.db.example.test", mdns.TypeCNAME)
	if err != nil || len(rrs) != 1 || rrs[0].(*mdns.CNAME).Target != "dst-1.hosts.example.test." || rrs[0].Header().Ttl != 300 {
		t.Errorf("shop: %v %v", rrs, err)
	}
	if rrs, err := b.Query(ctx, "www.db.example.test", mdns.TypeTXT); err != nil || len(rrs) != 1 {
		t.Errorf("the TXT record went: %v %v", rrs, err)
	}
}

// TestCheckDNS: --check with the dns role sends a signed query to each
// zone's primary: a good key is reported with the zone's serial, a wrong
// secret is named (not shown), a missing dns section is explained.
func TestCheckDNS(t *testing.T) {
	fleettest.Integration(t)
	t.Parallel()
	sm := fleettest.SharedMariaDB(t)
	state := statetest.Upgraded(t, "mysql", sm.DSN(sm.NewDatabase(t)))
	b := fleettest.NewBIND(t, fleettest.BINDConfig{})
	base := fmt.Sprintf("host: dns-1\nstate:\n  driver: mysql\n  dsn: %q\n", state.DSN)
	dnsSection := func(secret string) string {
		return fmt.Sprintf("dns:\n  zones:\n    - name: %s\n      primary: %s\n  key-name: %s\n  key-secret: %q\n", b.Zone, b.Addr, b.KeyName, secret)
	}
	code, out, stderr := runAgent(t, base+dnsSection(b.KeySecret), "--roles", "dns", "--check")
	if code != 0 || !strings.Contains(out, fmt.Sprintf(`zone db.example.test: primary %s at serial 1 accepts TSIG key "migrate-key"`, b.Addr)) {
		t.Fatalf("check: %d %q %q", code, out, stderr)
	}
	wrong := "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldA=="
	code, out, stderr = runAgent(t, base+dnsSection(wrong), "--roles", "dns", "--check")
	if code != 1 || !strings.Contains(stderr, "BADSIG") || !strings.Contains(stderr, `"migrate-key"`) || strings.Contains(out+stderr, wrong) {
		t.Fatalf("wrong secret: %d %q %q", code, out, stderr)
	}
	if code, _, stderr = runAgent(t, base, "--roles", "dns", "--check"); code != 1 || !strings.Contains(stderr, "dns.zones") {
		t.Fatalf("no dns section: %d %q", code, stderr)
	}
}
