package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/statetest"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// dnsConfig is the dns section for b, with the key in a BIND key file and
// the hosts' targets given in the configuration.
func dnsConfig(t *testing.T, b *fleettest.BIND) string {
	t.Helper()
	keyFile := filepath.Join(t.TempDir(), "tsig.key")
	if err := os.WriteFile(keyFile, fmt.Appendf(nil, "key %q {\n\talgorithm hmac-sha256;\n\tsecret %q;\n};\n", b.KeyName, b.KeySecret), 0o600); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("dns:\n  zones:\n    - name: %s\n      primary: %s\n  key-file: %s\n  rate: 5000\n  targets:\n    src-1: 127.77.0.1\n    dst-1: \"127.77.0.2, fd77::2\"\n",
		b.Zone, b.Addr, keyFile)
}

// ttls returns each name's TTL at b (A records), by AXFR.
func ttls(t *testing.T, b *fleettest.BIND) map[string]uint32 {
	t.Helper()
	rrs, err := b.AXFR(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint32{}
	for _, rr := range rrs {
		if a, ok := rr.(*mdns.A); ok && strings.HasPrefix(a.Hdr.Name, "db") {
			out[strings.TrimSuffix(a.Hdr.Name, ".")] = a.Hdr.Ttl
		}
	}
	return out
}

// TestDNSTTLRoundTrip lowers the TTL of 1,000 planned rows' names and
// restores it after they are done: each name gets its own TTL back, names
// pointing elsewhere are refused and left alone, and re-runs are no-ops.
func TestDNSTTLRoundTrip(t *testing.T) {
	t.Parallel()
	sm := fleettest.SharedPostgres(t)
	db := statetest.Upgraded(t, "postgres", sm.DSN(sm.NewDatabase(t)))
	const n = 1000
	var recs []string
	var csv strings.Builder
	csv.WriteString("engine,database,source,destination,dns_name\n")
	for i := range n {
		ip := "127.77.0.1"
		if i == 500 {
			ip = "127.0.0.9" // repointed by hand
		}
		recs = append(recs, fmt.Sprintf("db%04d %d IN A %s", i, 300+i, ip))
		fmt.Fprintf(&csv, "mysql,db%04d,src-1,dst-1,DB%04d.db.example.test.\n", i, i)
	}
	b := fleettest.NewBIND(t, fleettest.BINDConfig{Records: recs})
	extra := dnsConfig(t, b)
	if code, _, stderr := migrateWith(t, db, extra, csv.String(), "plan", "--file", "-"); code != 0 {
		t.Fatalf("plan: %d %s", code, stderr)
	}
	before := ttls(t, b)

	code, out, stderr := migrateWith(t, db, extra, "", "dns", "lower-ttl", "--ttl", "60")
	if code != 1 || !strings.Contains(out, "999 names would change") || !strings.Contains(stderr, "db0500.db.example.test points to 127.0.0.9, expected 127.77.0.1") {
		t.Fatalf("dry run: %d %q %q", code, out, stderr)
	}
	if got := ttls(t, b); got["db0001.db.example.test"] != 301 {
		t.Fatalf("the dry run changed TTLs")
	}
	start := time.Now()
	code, out, stderr = migrateWith(t, db, extra, "", "dns", "lower-ttl", "--ttl", "60", "--execute")
	t.Logf("lowered in %s: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
	if code != 1 || !strings.Contains(out, "999 names lowered, 0 already right, 1 refused") {
		t.Fatalf("lower: %d %q %q", code, out, stderr)
	}
	lowered := ttls(t, b)
	for name, ttl := range lowered {
		want := uint32(60)
		if name == "db0500.db.example.test" {
			want = 800
		}
		if ttl != want {
			t.Errorf("%s has TTL %d after lowering, want %d", name, ttl, want)
		}
	}
	// resumable: a second run finds the work done and keeps the originals
	if code, out, _ = migrateWith(t, db, extra, "", "dns", "lower-ttl", "--ttl", "60", "--execute"); code != 1 || !strings.Contains(out, "0 names lowered, 999 already right") {
		t.Fatalf("second lower: %d %q", code, out)
	}
	// the rows finish (db0007's does not): restore-ttl then wants the
	// names at the destination
	st := db.Open(t)
	if _, err := st.Promote(context.Background(), n, "test"); err != nil {
		t.Fatal(err)
	}
	statetest.Walk(t, st, append(statetest.ToDNS("src-1", "dst-1"), statetest.Step{Role: statemachine.RoleDNS}, statetest.Step{Role: statemachine.RoleClose, Host: "src-1"}),
		func(_ statemachine.Role, m statemachine.Migration) (string, statemachine.Fields) {
			if m.DatabaseName == "db0007" {
				return "not this one", statemachine.Fields{}
			}
			return "", statemachine.Fields{}
		})
	code, _, stderr = migrateWith(t, db, extra, "", "dns", "restore-ttl", "--execute")
	if code != 1 || !strings.Contains(stderr, "points to 127.77.0.1, expected 127.77.0.2, fd77::2") {
		t.Fatalf("restore before the names moved: %d %q", code, stderr)
	}
	// the DNS step moved them (keeping the lowered TTL); db0007 is not done
	var ups []string
	for i := range n {
		if i != 500 && i != 7 {
			ups = append(ups, fmt.Sprintf("update delete db%04d.db.example.test A\nupdate add db%04d.db.example.test 60 A 127.77.0.2\nupdate add db%04d.db.example.test 60 AAAA fd77::2\n", i, i, i))
		}
	}
	nsupdate(t, b, ups)
	code, out, stderr = migrateWith(t, db, extra, "", "dns", "restore-ttl", "--execute")
	if code != 0 || !strings.Contains(out, "998 names restored, 0 already right, 0 refused") {
		t.Fatalf("restore: %d %q %q", code, out, stderr)
	}
	after := ttls(t, b)
	for name, ttl := range after {
		want := before[name]
		if name == "db0007.db.example.test" {
			want = 60 // its row is not done: still lowered
		}
		if ttl != want {
			t.Errorf("%s has TTL %d after restore, want %d", name, ttl, want)
		}
	}
	if code, out, _ = migrateWith(t, db, extra, "", "dns", "restore-ttl", "--execute"); code != 0 || !strings.Contains(out, "no names to change among 999 rows") {
		t.Fatalf("second restore: %d %q", code, out)
	}
	if code, _, stderr = migrateWith(t, db, extra, "", "dns", "restore-ttl", "--ttl", "60"); code != 2 || !strings.Contains(stderr, "--ttl does not apply") {
		t.Errorf("restore-ttl --ttl: %d %q", code, stderr)
	}
	if code, _, stderr = migrateWith(t, db, "", "", "dns", "lower-ttl"); code != 1 || !strings.Contains(stderr, "dns.zones") {
		t.Errorf("no dns section: %d %q", code, stderr)
	}
}

// nsupdate applies updates (nsupdate syntax) with BIND's own tool, in
// messages of 100.
func nsupdate(t *testing.T, b *fleettest.BIND, updates []string) {
	t.Helper()
	host, port, _ := strings.Cut(b.Addr, ":")
	keyFile := filepath.Join(t.TempDir(), "ns.key")
	if err := os.WriteFile(keyFile, fmt.Appendf(nil, "key %q { algorithm hmac-sha256; secret %q; };\n", b.KeyName, b.KeySecret), 0o600); err != nil {
		t.Fatal(err)
	}
	for len(updates) > 0 {
		k := min(len(updates), 100)
		script := fmt.Sprintf("server %s %s\nzone %s\n%ssend\n", host, port, b.Zone, strings.Join(updates[:k], ""))
		cmd := exec.Command("nsupdate", "-k", keyFile)
		cmd.Stdin = strings.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nsupdate: %v\n%s", err, out)
		}
		updates = updates[k:]
	}
}

// TestRollbackPointsDNSBack: a row whose name moved is rolled back only
// with --discard-destination-writes, and then its name points at the
// source again before the row moves.
func TestRollbackPointsDNSBack(t *testing.T) {
	t.Parallel()
	sm := fleettest.SharedPostgres(t)
	db := statetest.Upgraded(t, "postgres", sm.DSN(sm.NewDatabase(t)))
	b := fleettest.NewBIND(t, fleettest.BINDConfig{Records: []string{"shop 300 IN A 127.77.0.2", "shop 300 IN AAAA fd77::2", "blog 300 IN A 127.77.0.2", "blog 300 IN AAAA fd77::2"}})
	extra := dnsConfig(t, b)
	if code, _, stderr := migrateWith(t, db, extra, "engine,database,source,destination,dns_name\nmysql,shop,src-1,dst-1,shop.db.example.test\nmysql,blog,src-1,dst-1,blog.db.example.test\n", "plan", "--file", "-"); code != 0 {
		t.Fatalf("plan: %d %s", code, stderr)
	}
	s := db.Open(t)
	ctx := context.Background()
	if _, err := s.Promote(ctx, 2, "test"); err != nil {
		t.Fatal(err)
	}
	// the update landed, the confirmation did not: DNS failed, switched
	// (shop recorded it, blog's answer was lost)
	rows := statetest.Walk(t, s, append(statetest.ToDNS("src-1", "dst-1"), statetest.Step{Role: statemachine.RoleDNS}),
		func(r statemachine.Role, m statemachine.Migration) (string, statemachine.Fields) {
			switch {
			case r != statemachine.RoleDNS:
				return "", statemachine.Fields{}
			case m.DatabaseName == "shop":
				return "secondary late", statemachine.Fields{Marks: []statemachine.Mark{statemachine.MarkSwitched}}
			}
			return "secondary late", statemachine.Fields{}
		})
	ids := map[string]int64{"shop": rows["shop"].ID, "blog": rows["blog"].ID}
	code, _, stderr := migrateWith(t, db, extra, "", "rollback", "--status", "DNS failed", "--execute")
	if code != 1 || !strings.Contains(stderr, `"shop", src-1 -> dst-1: refused`) || !strings.Contains(stderr, `"blog", src-1 -> dst-1: refused`) {
		t.Fatalf("rollback without discard: %d %q", code, stderr)
	}
	code, out, _ := migrateWith(t, db, extra, "", "rollback", "--status", "DNS failed", "--discard-destination-writes")
	if code != 0 || strings.Count(out, "would point the DNS name") != 2 {
		t.Fatalf("dry run: %d %q", code, out)
	}
	code, out, stderr = migrateWith(t, db, extra, "", "rollback", "--status", "DNS failed", "--execute", "--discard-destination-writes")
	if code != 0 || !strings.Contains(out, "rollback: 2 rows") {
		t.Fatalf("rollback: %d %q %q", code, out, stderr)
	}
	for _, name := range []string{"shop", "blog"} {
		rrs, err := b.Query(ctx, name+".db.example.test", mdns.TypeA)
		if err != nil || len(rrs) != 1 || rrs[0].(*mdns.A).A.String() != "127.77.0.1" {
			t.Errorf("%s: %v %v", name, rrs, err)
		}
		if rrs, _ := b.Query(ctx, name+".db.example.test", mdns.TypeAAAA); len(rrs) != 0 {
			t.Errorf("%s kept its AAAA: %v", name, rrs)
		}
		m, err := s.Get(ctx, ids[name])
		if err != nil || m.Status != statemachine.ToRollBack || !m.SwitchedAt.IsZero() {
			t.Errorf("%s: %+v %v", name, m, err)
		}
	}
}
