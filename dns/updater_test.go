package dns_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/fleetmigrate/fleetmigrate/dns"
	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
)

func TestMain(m *testing.M) { fleettest.Main(m) }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func key(b *fleettest.BIND) dns.Key {
	return dns.Key{Name: b.KeyName, Algorithm: b.KeyAlgorithm, Secret: b.KeySecret}
}

func newUpdater(t *testing.T, b *fleettest.BIND, mod func(*dns.Config)) *dns.Updater {
	t.Helper()
	cfg := dns.Config{Zones: []dns.Zone{{Name: b.Zone, Primary: b.Addr}}, Key: key(b), Timeout: 2 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	u, err := dns.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.Close)
	return u
}

func target(t *testing.T, s string) dns.Target {
	t.Helper()
	tg, err := dns.ParseTarget(s)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

// resolve is the test's own resolver: it asks the server for each type.
func resolve(t *testing.T, b *fleettest.BIND, name string) []string {
	t.Helper()
	var out []string
	for _, qt := range []uint16{mdns.TypeA, mdns.TypeAAAA, mdns.TypeCNAME} {
		rrs, err := b.Query(ctx(t), name, qt)
		if err != nil {
			t.Fatalf("resolve %s: %v", name, err)
		}
		for _, rr := range rrs {
			if rr.Header().Rrtype == qt {
				out = append(out, rr.String())
			}
		}
	}
	slices.Sort(out)
	return out
}

// zone returns the zone's records by AXFR, SOA left out, sorted.
func zone(t *testing.T, b *fleettest.BIND) []string {
	t.Helper()
	rrs, err := b.AXFR(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, rr := range rrs {
		if rr.Header().Rrtype != mdns.TypeSOA {
			out = append(out, rr.String())
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

var fixture = []string{
	"shop 120 IN A 127.42.0.1",
	"shop 120 IN AAAA fd00::1",
	"shop 300 IN TXT \"keep me\"",
	"shop 300 IN MX 10 mail.example.test.",
	"blog 600 IN CNAME src-1.hosts.example.test.",
	"other 300 IN A 127.42.0.1",
	"www 300 IN CNAME shop",
}

// TestRepointAndBack repoints an A/AAAA name and a CNAME name, checks the
// answers and that nothing else in the zone changed, then points both
// back and gets the original zone.
func TestRepointAndBack(t *testing.T) {
	t.Parallel()
	b := fleettest.NewBIND(t, fleettest.BINDConfig{Records: fixture})
	u := newUpdater(t, b, nil)
	before := zone(t, b)

	shopFrom, shopTo := target(t, "127.42.0.1, fd00::1"), target(t, "127.42.0.2,127.42.0.3, fd00::2")
	// uppercase and a trailing dot are the same name
	res, err := u.Repoint(ctx(t), "SHOP.DB.Example.test.", shopFrom, shopTo)
	if err != nil || !res.Changed || res.TTL != 120 {
		t.Fatalf("repoint shop: %+v, %v", res, err)
	}
	blogFrom, blogTo := target(t, "src-1.hosts.example.test"), target(t, "DST-1.hosts.example.test.")
	if res, err := u.Repoint(ctx(t), "blog.db.example.test", blogFrom, blogTo); err != nil || !res.Changed || res.TTL != 600 {
		t.Fatalf("repoint blog: %+v, %v", res, err)
	}
	if err := u.Confirm(ctx(t), "shop.db.example.test", shopTo); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"shop.db.example.test.\t120\tIN\tA\t127.42.0.2", "shop.db.example.test.\t120\tIN\tA\t127.42.0.3",
		"shop.db.example.test.\t120\tIN\tAAAA\tfd00::2",
	}
	if got := resolve(t, b, "shop.db.example.test"); !slices.Equal(got, want) {
		t.Errorf("shop resolves to\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := resolve(t, b, "blog.db.example.test"); len(got) != 1 || got[0] != "blog.db.example.test.\t600\tIN\tCNAME\tdst-1.hosts.example.test." {
		t.Errorf("blog resolves to %q", got)
	}
	// nothing else changed: the zone minus the two names' A/AAAA/CNAME
	// records is the same
	strip := func(rrs []string) []string {
		return slices.DeleteFunc(slices.Clone(rrs), func(s string) bool {
			return (strings.HasPrefix(s, "shop.") || strings.HasPrefix(s, "blog.")) &&
				(strings.Contains(s, "\tA\t") || strings.Contains(s, "\tAAAA\t") || strings.Contains(s, "\tCNAME\t"))
		})
	}
	after := zone(t, b)
	if !slices.Equal(strip(before), strip(after)) {
		t.Errorf("other records changed:\nbefore\n%s\nafter\n%s", strings.Join(strip(before), "\n"), strings.Join(strip(after), "\n"))
	}
	// a retry finds the work done
	if res, err := u.Repoint(ctx(t), "shop.db.example.test", shopFrom, shopTo); err != nil || res.Changed {
		t.Fatalf("second repoint: %+v, %v", res, err)
	}
	// rollback: the prerequisite is now the destination
	if _, err := u.Repoint(ctx(t), "shop.db.example.test", shopTo, shopFrom); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Repoint(ctx(t), "blog.db.example.test", blogTo, blogFrom); err != nil {
		t.Fatal(err)
	}
	if got := zone(t, b); !slices.Equal(got, before) {
		t.Errorf("after rollback the zone is\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(before, "\n"))
	}
}

// TestMismatchLeavesRecord: a name that holds something else is not
// touched, and the error names all three.
func TestMismatchLeavesRecord(t *testing.T) {
	t.Parallel()
	b := fleettest.NewBIND(t, fleettest.BINDConfig{Records: []string{"shop 300 IN A 127.0.0.9"}})
	u := newUpdater(t, b, nil)
	_, err := u.Repoint(ctx(t), "shop.db.example.test", target(t, "127.42.0.1"), target(t, "127.42.0.2"))
	var mm *dns.MismatchError
	if !errors.As(err, &mm) || dns.IsTransient(err) {
		t.Fatalf("want a mismatch, got %v", err)
	}
	if got := err.Error(); got != "record shop.db.example.test points to 127.0.0.9, expected 127.42.0.1" {
		t.Errorf("message %q", got)
	}
	if got := resolve(t, b, "shop.db.example.test"); len(got) != 1 || !strings.HasSuffix(got[0], "127.0.0.9") {
		t.Errorf("record changed: %q", got)
	}
	// a name holding other data cannot become a CNAME: refused before
	// anything changes (the server would drop the A and ignore the CNAME)
	b2 := fleettest.NewBIND(t, fleettest.BINDConfig{Records: []string{"shop 300 IN A 127.42.0.1", "shop 300 IN TXT \"v=spf1 -all\""}})
	u2 := newUpdater(t, b2, nil)
	_, err = u2.Repoint(ctx(t), "shop.db.example.test", target(t, "127.42.0.1"), target(t, "dst.hosts.example.test"))
	if err == nil || !strings.Contains(err.Error(), "also holds TXT records") {
		t.Errorf("CNAME over other data: %v", err)
	}
	if got := resolve(t, b2, "shop.db.example.test"); len(got) != 1 || !strings.HasSuffix(got[0], "127.42.0.1") {
		t.Errorf("record changed: %q", got)
	}
	// a name that does not exist is a mismatch too
	_, err = u.Repoint(ctx(t), "nope.db.example.test", target(t, "127.42.0.1"), target(t, "127.42.0.2"))
	if !errors.As(err, &mm) || !strings.Contains(err.Error(), "points to nothing") {
		t.Errorf("missing name: %v", err)
	}
}

func TestTSIGRefusals(t *testing.T) {
	t.Parallel()
	b := fleettest.NewBIND(t, fleettest.BINDConfig{Records: []string{"shop 300 IN A 127.42.0.1"}})
	from, to := target(t, "127.42.0.1"), target(t, "127.42.0.2")
	wrong := "c2VjcmV0LXRoYXQtaXMtd3Jvbmctc2VjcmV0LXRoYXQtaXM="
	for _, tc := range []struct {
		name string
		mod  func(*dns.Config)
		want []string
	}{
		{"wrong secret", func(c *dns.Config) { c.Key.Secret = wrong }, []string{"TSIG verification failed", "BADSIG", `"migrate-key"`}},
		{"unknown key", func(c *dns.Config) { c.Key.Name = "other-key"; c.Key.Secret = wrong }, []string{"BADKEY", `"other-key"`}},
		{"clock skew", func(c *dns.Config) { c.Clock = func() time.Time { return time.Now().Add(-10 * time.Minute) } }, []string{"BADTIME", "check NTP"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := newUpdater(t, b, tc.mod)
			_, err := u.Repoint(ctx(t), "shop.db.example.test", from, to)
			if err == nil || dns.IsTransient(err) {
				t.Fatalf("want a permanent refusal, got %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), wrong) || strings.Contains(err.Error(), b.KeySecret) {
				t.Errorf("the message shows a secret: %q", err)
			}
			if got := resolve(t, b, "shop.db.example.test"); len(got) != 1 || !strings.HasSuffix(got[0], "127.42.0.1") {
				t.Errorf("record changed: %q", got)
			}
		})
	}
}

func TestZonesAndServers(t *testing.T) {
	t.Parallel()
	b := fleettest.NewBIND(t, fleettest.BINDConfig{Records: []string{"shop 300 IN A 127.42.0.1"}})
	from, to := target(t, "127.42.0.1"), target(t, "127.42.0.2")

	u := newUpdater(t, b, nil)
	_, err := u.Repoint(ctx(t), "shop.example.org", from, to)
	if err == nil || !strings.Contains(err.Error(), "outside every configured zone (db.example.test)") || dns.IsTransient(err) {
		t.Errorf("outside the zones: %v", err)
	}
	if _, err := u.Repoint(ctx(t), "bad..name", from, to); err == nil || !strings.Contains(err.Error(), "not a valid DNS name") {
		t.Errorf("bad name: %v", err)
	}

	// a configured zone the server does not serve
	u = newUpdater(t, b, func(c *dns.Config) { c.Zones = []dns.Zone{{Name: "other.test", Primary: b.Addr}} })
	_, err = u.Repoint(ctx(t), "shop.other.test", from, to)
	if err == nil || !strings.Contains(err.Error(), "REFUSED") || !strings.Contains(err.Error(), "does not serve") || dns.IsTransient(err) {
		t.Errorf("zone not served: %v", err)
	}

	// SOA discovery
	u = newUpdater(t, b, func(c *dns.Config) { c.Zones = nil; c.Server = b.Addr })
	if z, err := u.ZoneOf(ctx(t), "deep.shop.db.example.test"); err != nil || z.Name != "db.example.test." || z.Primary != b.Addr {
		t.Errorf("discovered %+v, %v", z, err)
	}
	if _, err := u.ZoneOf(ctx(t), "shop.nowhere.test"); err == nil || !strings.Contains(err.Error(), "zone not served") {
		t.Errorf("discovery outside: %v", err)
	}
	if _, err := u.Repoint(ctx(t), "shop.db.example.test", from, to); err != nil {
		t.Errorf("repoint in a discovered zone: %v", err)
	}

	// an unreachable server is transient
	u = newUpdater(t, b, func(c *dns.Config) {
		c.Zones = []dns.Zone{{Name: b.Zone, Primary: "127.0.0.1:1"}}
		c.Timeout = 500 * time.Millisecond
	})
	_, err = u.Repoint(ctx(t), "shop.db.example.test", to, from)
	if !dns.IsTransient(err) || !strings.Contains(err.Error(), "no answer from 127.0.0.1:1") {
		t.Errorf("unreachable: %v", err)
	}
}

// TestSecondaries: Confirm waits for a secondary to show the change, and
// names it when it does not in time.
func TestSecondaries(t *testing.T) {
	t.Parallel()
	p := fleettest.NewBIND(t, fleettest.BINDConfig{Records: []string{"shop 300 IN A 127.42.0.1"}})
	s := fleettest.NewBIND(t, fleettest.BINDConfig{Primary: p.Addr})
	u := newUpdater(t, p, func(c *dns.Config) {
		c.Zones[0].Secondaries = []string{s.Addr}
		c.ConfirmTimeout = 15 * time.Second
		c.ConfirmInterval = 100 * time.Millisecond
	})
	to := target(t, "127.42.0.2")
	if _, err := u.Repoint(ctx(t), "shop.db.example.test", target(t, "127.42.0.1"), to); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := u.Confirm(ctx(t), "shop.db.example.test", to); err != nil {
		t.Fatal(err)
	}
	t.Logf("secondary caught up in %s", time.Since(start).Round(time.Millisecond))
	if got := resolve(t, s, "shop.db.example.test"); len(got) != 1 || !strings.HasSuffix(got[0], "127.42.0.2") {
		t.Errorf("secondary answers %q", got)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	u = newUpdater(t, p, func(c *dns.Config) {
		c.Zones[0].Secondaries = []string{s.Addr}
		c.ConfirmTimeout = time.Second
		c.Timeout = 300 * time.Millisecond
	})
	err := u.Confirm(ctx(t), "shop.db.example.test", to)
	if !dns.IsTransient(err) || !strings.Contains(err.Error(), "secondary "+s.Addr) {
		t.Errorf("stopped secondary: %v", err)
	}
}

// TestBatching: concurrent changes share messages; one name whose
// prerequisite fails is refused alone.
func TestBatching(t *testing.T) {
	t.Parallel()
	var recs []string
	for i := range 300 {
		ip := "127.42.0.1"
		if i == 137 {
			ip = "127.0.0.9" // changed by someone else
		}
		recs = append(recs, fmt.Sprintf("db%03d 300 IN A %s", i, ip))
	}
	b := fleettest.NewBIND(t, fleettest.BINDConfig{Records: recs})
	u := newUpdater(t, b, func(c *dns.Config) { c.MaxBatch = 40 })
	from, to := target(t, "127.42.0.1"), target(t, "127.42.0.2")
	errs := make([]error, 300)
	var wg sync.WaitGroup
	for i := range 300 {
		wg.Go(func() {
			_, errs[i] = u.Repoint(ctx(t), fmt.Sprintf("db%03d.db.example.test", i), from, to)
		})
	}
	wg.Wait()
	for i, err := range errs {
		var mm *dns.MismatchError
		switch {
		case i == 137 && !errors.As(err, &mm):
			t.Errorf("db137: want a mismatch, got %v", err)
		case i != 137 && err != nil:
			t.Errorf("db%03d: %v", i, err)
		}
	}
	got := zone(t, b)
	n := 0
	for _, rr := range got {
		if strings.HasSuffix(rr, "\tA\t127.42.0.2") {
			n++
		}
		if strings.HasPrefix(rr, "db137.") && !strings.HasSuffix(rr, "127.0.0.9") {
			t.Errorf("db137 changed: %s", rr)
		}
	}
	if n != 299 {
		t.Errorf("%d names repointed, want 299", n)
	}
	st := u.Stats()
	t.Logf("%d updates in %d messages", st.Changes, st.Messages)
	if st.Messages >= st.Changes {
		t.Errorf("no batching: %d messages for %d changes", st.Messages, st.Changes)
	}
}

func TestSetTTL(t *testing.T) {
	t.Parallel()
	b := fleettest.NewBIND(t, fleettest.BINDConfig{Records: []string{"shop 3600 IN A 127.42.0.1", "shop 3600 IN A 127.42.0.5", "shop 300 IN TXT \"x\""}})
	u := newUpdater(t, b, nil)
	holds := target(t, "127.42.0.5,127.42.0.1")
	res, err := u.SetTTL(ctx(t), "shop.db.example.test", holds, 60)
	if err != nil || res.Before.TTL != 3600 || !res.Changed {
		t.Fatalf("lower: %+v %v", res, err)
	}
	got := resolve(t, b, "shop.db.example.test")
	if len(got) != 2 || !strings.Contains(got[0], "\t60\t") || !strings.Contains(got[1], "\t60\t") {
		t.Errorf("after lowering: %q", got)
	}
	if res, err := u.SetTTL(ctx(t), "shop.db.example.test", holds, 60); err != nil || res.Changed {
		t.Errorf("again: %+v %v", res, err)
	}
	if _, err := u.SetTTL(ctx(t), "shop.db.example.test", target(t, "127.42.0.1"), 3600); err == nil {
		t.Error("a TTL change on a name holding more than expected went through")
	}
}

func TestParse(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.2, 127.0.0.1,127.0.0.1": "127.0.0.1, 127.0.0.2",
		"::ffff:10.0.0.1, fd00::1":       "10.0.0.1, fd00::1",
		"DB-7.Hosts.Example.":            "db-7.hosts.example",
	} {
		tg, err := dns.ParseTarget(in)
		if err != nil || tg.String() != want {
			t.Errorf("ParseTarget(%q) = %q, %v; want %q", in, tg, err, want)
		}
	}
	for _, bad := range []string{"", " , ", "10.0.0.1, db7.example", "a.example, b.example", "fe80::1%eth0"} {
		if _, err := dns.ParseTarget(bad); err == nil {
			t.Errorf("ParseTarget(%q) accepted", bad)
		}
	}
	for in, want := range map[string]string{"Shop.DB.example.test": "shop.db.example.test.", "shop.db.example.test.": "shop.db.example.test."} {
		if got, err := dns.Normalize(in); err != nil || got != want {
			t.Errorf("Normalize(%q) = %q, %v", in, got, err)
		}
	}
	k, err := dns.ParseKey("key \"migrate-key\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0\";\n};\n")
	if err != nil || k.Name != "migrate-key." || k.Algorithm != "hmac-sha256" || k.Secret != "c2VjcmV0" {
		t.Errorf("ParseKey: %+v %v", k, err)
	}
	if strings.Contains(k.String(), k.Secret) {
		t.Errorf("Key.String shows the secret: %s", k)
	}
	for _, bad := range []string{"", "key x { algorithm hmac-sha999; secret \"c2VjcmV0\"; };", "key x { secret \"not base64!\"; };"} {
		if _, err := dns.ParseKey(bad); err == nil || strings.Contains(err.Error(), "not base64!") {
			t.Errorf("ParseKey(%q): %v", bad, err)
		}
	}
}
