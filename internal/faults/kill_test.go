//go:build faults

package faults_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/dns"
	"github.com/fleetmigrate/fleetmigrate/internal/demo"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// Case 1: the dump agent — the destination's: it dumps from the source
// into the store and imports at once — dies (SIGKILL) while it dumps a
// database, then again while the next attempt uploads it; systemd
// restarts it at once.
func TestKillDumpAgent(t *testing.T) {
	t.Parallel()
	r := record(t, "1", "kill -9 the dump agent (at the destination) mid-dump, then mid-upload")
	d, ctx := fleet(t, 8, 40<<20, nil)
	big := largest(d, demo.MySQL)
	prefix := dumpPrefix(big)
	if err := d.StartMigration(ctx); err != nil {
		t.Fatal(err)
	}

	var m statemachine.Migration
	waitFor(ctx, t, d, "the large database's dump to start", 2*time.Minute, func() bool {
		m = row(ctx, t, d, big)
		return m.Status == statemachine.Dumping && !m.BlockedAt.IsZero()
	})
	if err := d.KillAgent(big.Destination); err != nil {
		t.Fatal(err)
	}
	r.inject("SIGKILL to the agent of %s while it dumped %q from %s (%d rows, writes blocked)", big.Destination, big.Name, big.Source, big.Rows)
	m = row(ctx, t, d, big)
	if m.Status != statemachine.Dumping || m.BlockedAt.IsZero() || !m.UnblockedAt.IsZero() && m.UnblockedAt.After(m.BlockedAt) {
		t.Errorf("right after the kill the row should say Dumping with writes blocked: %s blocked %v unblocked %v", m.Status, m.BlockedAt, m.UnblockedAt)
	}
	if err := d.RestartAgent(big.Destination); err != nil {
		t.Fatal(err)
	}
	firstFence := m.Fence
	waitFor(ctx, t, d, "the next attempt to upload", 2*time.Minute, func() bool {
		m = row(ctx, t, d, big)
		return m.Status == statemachine.Dumping && m.Fence > firstFence && uploads(ctx, d, prefix) > 0
	})
	if err := d.KillAgent(big.Destination); err != nil {
		t.Fatal(err)
	}
	r.inject("restarted it; SIGKILL again while the next attempt's multipart upload was in progress")
	if err := d.RestartAgent(big.Destination); err != nil {
		t.Fatal(err)
	}
	settle(ctx, t, d, false)

	m = row(ctx, t, d, big)
	if m.Status != statemachine.Done {
		t.Errorf("row %s is %s (%s), want Done", m.String(), m.Status, m.LastError)
	}
	r.saw("row: %s", trail(ctx, t, d, m.ID))
	rep := checkInvariants(ctx, t, d, r)
	left := uploads(ctx, d, prefix)
	after := abortPending(ctx, t, d, prefix)
	if after != 0 {
		t.Errorf("%d incomplete multipart uploads under %s after aborting every one the janitor listed", after, prefix)
	}
	r.saw("all %d rows Done: %v; one dump referenced, %d earlier attempts' dumps left to gc; %d incomplete multipart uploads left by the kill, %d after aborting what the store's janitor lists (migrate gc does so once they are a day old)",
		len(d.DBs), rep.Statuses[statemachine.Done] == len(d.DBs), rep.Superseded, left, after)
	wantAllDone(t, d, rep)
}

// Case 2: the destination's agent dies (SIGKILL) with the database half
// loaded there, mid-stream: the dump step imports as it dumps.
func TestKillImportAgent(t *testing.T) {
	t.Parallel()
	r := record(t, "2", "kill -9 the destination agent mid-stream (dump and import both running)")
	d, ctx, big, loaded := midImport(t, nil)
	if err := d.KillAgent(big.Destination); err != nil {
		t.Fatal(err)
	}
	r.inject("SIGKILL to the agent of %s while it imported %q (%d of %d rows of its largest table loaded)", big.Destination, big.Name, loaded, big.Rows)
	time.Sleep(time.Second)
	if err := d.RestartAgent(big.Destination); err != nil {
		t.Fatal(err)
	}
	settle(ctx, t, d, false)
	m := row(ctx, t, d, big)
	if m.Status != statemachine.Done {
		t.Errorf("row %s is %s (%s), want Done", m.String(), m.Status, m.LastError)
	}
	r.saw("row: %s", trail(ctx, t, d, m.ID))
	rep := checkInvariants(ctx, t, d, r)
	r.saw("%d of %d rows Done", rep.Statuses[statemachine.Done], len(d.DBs))
	wantAllDone(t, d, rep)
}

// Case 3: the DNS agent dies between the update and the advance. Two
// records are moved by hand before it ever runs (an earlier update landed,
// its advance lost); then the DNS server is frozen while the agent claims
// rows and sends its updates, the agent is killed, and the server continues
// and applies what it had received.
func TestKillDNSAgent(t *testing.T) {
	t.Parallel()
	r := record(t, "3", "kill -9 the DNS agent between update and advance")
	d, ctx := fleet(t, 8, 1<<20, nil)
	dnsWaiting(t, d)
	b := d.Fleet.BIND
	up, err := dns.New(dns.Config{Zones: []dns.Zone{{Name: demo.Zone, Primary: b.Addr}},
		Key: dns.Key{Name: b.KeyName, Algorithm: b.KeyAlgorithm, Secret: b.KeySecret}})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	planted := d.DBs[:2]
	for _, db := range planted {
		from, _ := dns.ParseTarget(d.Fleet.Host(db.Source).IP)
		to, _ := dns.ParseTarget(d.Fleet.Host(db.Destination).IP)
		if _, err := up.Repoint(ctx, db.DNSName, from, to); err != nil {
			t.Fatal(err)
		}
	}
	r.inject("DNS agent stopped; 2 records moved to the destination by hand while their rows were DNS to update (an update that landed, its advance lost)")

	if err := b.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := d.RestartAgent("dns-1"); err != nil {
		t.Fatal(err)
	}
	var claimed int
	waitFor(ctx, t, d, "the DNS agent to claim rows", time.Minute, func() bool {
		claimed, err = d.Store.CountStatuses(ctx, statemachine.UpdatingDNS)
		return err == nil && claimed > 0
	})
	time.Sleep(time.Second) // its updates sent, waiting for the frozen server
	if err := d.KillAgent("dns-1"); err != nil {
		t.Fatal(err)
	}
	if err := b.Resume(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	landed := 0
	for _, db := range d.DBs {
		m := row(ctx, t, d, db)
		ip, err := demo.Resolve(ctx, b.Addr, db.DNSName)
		if err == nil && m.Status == statemachine.UpdatingDNS && ip == d.Fleet.Host(db.Destination).IP && !slices.Contains(planted, db) {
			landed++
		}
	}
	r.inject("then BIND frozen (SIGSTOP), the agent restarted, SIGKILL once it had claimed %d rows and sent their updates, BIND continued: %d more rows Updating DNS with their record already at the destination", claimed, landed)
	if err := d.RestartAgent("dns-1"); err != nil {
		t.Fatal(err)
	}
	settle(ctx, t, d, false)

	for _, db := range d.DBs {
		m := row(ctx, t, d, db)
		if m.Status != statemachine.Done {
			t.Errorf("row %s is %s (%s), want Done", m.String(), m.Status, m.LastError)
		}
		evs, err := d.Store.Events(ctx, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		switched := 0
		for _, e := range evs {
			if strings.Contains(e.Detail, "now points at the destination") || strings.Contains(e.Detail, "already pointed at the destination") ||
				strings.Contains(e.Detail, "the update landed although") {
				switched++
			}
		}
		if switched != 1 {
			t.Errorf("row %s: the switch was recorded %d times, want once", m.String(), switched)
		}
	}
	m := row(ctx, t, d, planted[0])
	r.saw("a planted row: %s", trail(ctx, t, d, m.ID))
	rep := checkInvariants(ctx, t, d, r)
	r.saw("%d of %d rows Done, each switch recorded once, every name one A record at its destination", rep.Statuses[statemachine.Done], len(d.DBs))
}
