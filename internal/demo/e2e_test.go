package demo_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/klauspost/compress/zstd"

	"github.com/fleetmigrate/fleetmigrate/dns"
	"github.com/fleetmigrate/fleetmigrate/internal/demo"
	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

func TestMain(m *testing.M) { fleettest.Main(m) }

// TestEndToEnd is `make demo` at 40 databases (both engines, awkward names,
// each with its own user, password and DNS name): the real binaries move
// them all, and every one is checked the way its users will reach it —
// name resolved at BIND to the destination, the ORIGINAL user and password,
// the content checksum from before, a write accepted. Then three customer
// dumps are downloaded through `migrate serve` links and one is imported
// into a scratch server; then a wrong row, a wrong password and a wrong DNS
// record are planted and the verification must name exactly those. Midway,
// an agent and then the scheduler are killed with kill -9 and restarted at
// once (make demo KILL=2): the agent's rows must be taken back within 5 s
// of its restart (the lease is 30 s), the scheduler lead again.
func TestEndToEnd(t *testing.T) {
	fleettest.Integration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	var out fleettest.LogBuffer
	d, err := demo.New(demo.Options{
		Layout:     demo.Layout{DBs: 40, MaxBytes: 3 << 20, Seed: 42},
		Dir:        t.TempDir(),
		MigrateBin: fleettest.Build(t, "../../cmd/migrate"),
		AgentBin:   fleettest.Build(t, "../../cmd/migrate-agent"),
		Out:        &out,
		Timeout:    5 * time.Minute,
		Kills:      2,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("demo output:\n%s", out.String())
			var diag strings.Builder
			d.Diagnose(context.Background(), &diag, 30)
			t.Logf("rows that did not end, agent and server logs:\n%s", diag.String())
		}
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	if err := d.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	engines := map[string]int{}
	for _, db := range d.DBs {
		engines[db.Engine]++
	}
	if engines[demo.MySQL] == 0 || engines[demo.Postgres] == 0 {
		t.Fatalf("want both engines, got %v", engines)
	}
	if err := d.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range d.Verify(ctx) {
		t.Errorf("verification: %v", p)
	}
	// The fault suite's invariant check on a run without faults (make
	// test-faults runs it after every injected fault).
	inv, err := d.CheckInvariants(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range inv.Violations {
		t.Errorf("invariant broken: %s", v)
	}
	sum, err := d.Summarize(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Moved != len(d.DBs) || len(sum.NotDone) > 0 {
		t.Fatalf("moved %d of %d: %v", sum.Moved, len(d.DBs), sum.NotDone)
	}
	if len(sum.Blocked) != len(d.DBs) || sum.Blocked[0] <= 0 {
		t.Errorf("write-blocked times: %v", sum.Blocked)
	}
	var report bytes.Buffer
	sum.Print(&report)
	t.Logf("%s", report.String())
	if len(sum.Kills) != 2 {
		t.Errorf("%d kills, want 2 (an agent, then the scheduler): %+v", len(sum.Kills), sum.Kills)
	}
	for _, k := range sum.Kills {
		switch {
		case k.Err != nil:
			t.Errorf("kill of %s: %v", k.Process, k.Err)
		case k.Step == "" && k.Led <= 0:
			t.Errorf("%s did not lead again after its restart", k.Process)
		case k.Step != "" && len(k.Held)+k.Landed == 0:
			t.Errorf("%s held no row when killed in %s", k.Process, k.Step)
		}
		for _, m := range k.Held {
			if w, ok := k.Waited[m.ID]; !ok || w > 5*time.Second {
				t.Errorf("%s: row %s (held in %s) taken back %s after the restart (seen: %v), want within 5 s", k.Process, m.String(), m.Status, w, ok)
			}
		}
	}
	// Every agent (the database hosts' and the DNS host's) logged in to
	// the state database as its host's own login, and the database
	// refused nothing.
	if !sum.Logins.OK() || len(sum.Logins.Logins) != len(d.Fleet.Hosts)+1 {
		t.Errorf("state logins: %+v", sum.Logins)
	}
	if sum.Failures() > 0 {
		t.Errorf("the summary counts %d failures", sum.Failures())
	}

	t.Run("status shows write-blocked time", func(t *testing.T) {
		out, err := d.Tool(ctx, "status", "--id", "1")
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`writes: +blocked at the source from \S+ until the switch at \S+ \([0-9.]+m?s of write downtime\)`).MatchString(out) {
			t.Errorf("status --id 1 does not show the write downtime:\n%s", out)
		}
	})
	t.Run("customer dumps", func(t *testing.T) { customerDumps(ctx, t, d) })
	t.Run("planted faults are caught", func(t *testing.T) { plantedFaults(ctx, t, d) })
}

// customerDumps downloads three dumps through `migrate serve` links (two
// MariaDB, one PostgreSQL), checks each against the row's SHA-256, and
// imports a MariaDB one into a scratch server: its content must be what the
// database held before the migration.
func customerDumps(ctx context.Context, t *testing.T, d *demo.Demo) {
	rows, err := d.Store.List(ctx, statemachine.Filter{Statuses: []statemachine.Status{statemachine.Done}})
	if err != nil {
		t.Fatal(err)
	}
	var picks []statemachine.Migration
	nMy, nPG := 0, 0
	for _, m := range rows {
		switch {
		case m.Engine == statemachine.EngineMySQL && nMy < 2 && m.DumpBytes > 0:
			picks, nMy = append(picks, m), nMy+1
		case m.Engine == statemachine.EnginePostgres && nPG < 1 && m.DumpBytes > 0:
			picks, nPG = append(picks, m), nPG+1
		}
	}
	if len(picks) != 3 {
		t.Fatalf("want two MariaDB rows and one PostgreSQL row with dumps, got %d", len(picks))
	}
	addr := fleettest.FreeAddr(t)
	serve := fleettest.Start(t, d.Opt.MigrateBin, d.Env(), "serve", "--listen", addr)
	waitHTTP(t, "http://"+addr+"/healthz", serve)
	var imported bool
	for _, m := range picks {
		link, err := d.Tool(ctx, "dump-link", "--id", fmt.Sprint(m.ID), "--ttl", "1h")
		if err != nil {
			t.Fatal(err)
		}
		url := strings.TrimSpace(strings.SplitN(link, "\n", 2)[0])
		// The link's public base is the configured one; the test reaches the
		// same path on the address it serves at.
		url = "http://" + addr + url[strings.Index(url, "/dumps/"):]
		// S3 answers with a redirect to a presigned URL on the S3 server,
		// whose certificate comes from the fleet's private CA.
		body := download(t, d.Fleet.CA.HTTPClient(), url)
		sum := sha256.Sum256(body)
		if got := hex.EncodeToString(sum[:]); got != m.DumpSHA256 || int64(len(body)) != m.DumpBytes {
			t.Fatalf("row %d: downloaded %d bytes sha256 %s, the row says %d bytes sha256 %s", m.ID, len(body), got, m.DumpBytes, m.DumpSHA256)
		}
		if m.Engine != statemachine.EngineMySQL || imported {
			continue
		}
		imported = true
		importIntoScratch(ctx, t, d, m, body)
	}
}

func importIntoScratch(ctx context.Context, t *testing.T, d *demo.Demo, m statemachine.Migration, compressed []byte) {
	dec, err := zstd.NewReader(bytes.NewReader(compressed))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	scratch := fleettest.NewMariaDB(t, fleettest.MariaDBConfig{})
	var db *demo.Database
	for _, x := range d.DBs {
		if x.Engine == demo.MySQL && x.Name == m.DatabaseName {
			db = x
		}
	}
	const user, pass = "customer", "their own 'password'"
	fleettest.Exec(t, scratch.RootDB(t), "CREATE DATABASE "+ident.QuoteMySQL(db.Name),
		"CREATE USER "+fleettest.MySQLAccount(user, "%")+" IDENTIFIED BY "+fleettest.MySQLString(pass),
		"GRANT ALL ON "+ident.QuoteMySQL(db.Name)+".* TO "+fleettest.MySQLAccount(user, "%"))
	// As a customer would: zstd -d < dump | mariadb -h ... their_db
	cmd := exec.CommandContext(ctx, "mariadb", "--host", scratch.Host, "--port", fmt.Sprint(scratch.Port), "--user", "root",
		"--default-character-set=utf8mb4", db.Name)
	cmd.Stdin = dec
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("import the downloaded dump of %q into a scratch server: %v\n%s", db.Name, err, out)
	}
	got, err := demo.ReadAs(ctx, demo.MySQL, scratch.Addr(), user, pass, db.Name)
	if err != nil {
		t.Fatal(err)
	}
	if got != db.Before {
		t.Errorf("the customer's dump of %q imports as %s; before the migration it was %s", db.Name, got, db.Before)
	}
}

func download(t *testing.T, client *http.Client, url string) []byte {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v %.200s", url, resp.Status, err, body)
	}
	return body
}

func waitHTTP(t *testing.T, url string, p *fleettest.Proc) {
	t.Helper()
	for range 100 {
		if _, err := fleettest.Get(url); err == nil {
			return
		}
		if !p.Running() {
			t.Fatalf("migrate serve exited: %s", p.Stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s did not answer", url)
}

// plantedFaults breaks three databases after the migration, one way each,
// and expects the verification to report exactly those three, saying what
// is wrong: a changed row, a changed password, a name pointing back at the
// source.
func plantedFaults(ctx context.Context, t *testing.T, d *demo.Demo) {
	var content, user, record *demo.Database
	for _, db := range d.DBs {
		switch {
		case content == nil && db.Engine == demo.MySQL:
			content = db
		case user == nil && db.Engine == demo.Postgres:
			user = db
		case record == nil && db.Engine == demo.MySQL:
			record = db
		}
	}
	dst := func(db *demo.Database) *demo.Host { return d.Fleet.Host(db.Destination) }

	// 1. One row of one table changes at the destination.
	root, err := sql.Open("mysql", dst(content).RootDSN(""))
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	fleettest.Exec(t, root, "UPDATE "+ident.QuoteMySQL(content.Name)+".orders SET amount = amount + 0.01 WHERE id = 3")
	// 2. The user's password is not the one the customer has.
	admin, err := pgx.Connect(ctx, dst(user).RootDSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "ALTER ROLE "+ident.QuotePostgres(user.User)+" PASSWORD 'not theirs'"); err != nil {
		t.Fatal(err)
	}
	// 3. The DNS name points back at the source.
	up, err := dns.New(dns.Config{Zones: []dns.Zone{{Name: demo.Zone, Primary: d.Fleet.BIND.Addr}},
		Key: dns.Key{Name: d.Fleet.BIND.KeyName, Algorithm: d.Fleet.BIND.KeyAlgorithm, Secret: d.Fleet.BIND.KeySecret}})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	from, _ := dns.ParseTarget(dst(record).IP)
	to, _ := dns.ParseTarget(d.Fleet.Host(record.Source).IP)
	if _, err := up.Repoint(ctx, record.DNSName, from, to); err != nil {
		t.Fatal(err)
	}

	problems := d.Verify(ctx)
	want := map[*demo.Database]string{
		content: "content differs",
		user:    "password authentication failed",
		record:  "DNS: " + record.DNSName + " points to " + d.Fleet.Host(record.Source).IP + " (" + record.Source + ")",
	}
	if len(problems) != len(want) {
		t.Errorf("want %d problems, got %d: %v", len(want), len(problems), problems)
	}
	for _, p := range problems {
		w, ok := want[p.DB]
		if !ok || !strings.Contains(p.Error(), w) {
			t.Errorf("problem %q, want one about %q", p.Error(), w)
		}
		delete(want, p.DB)
	}
	for db, w := range want {
		t.Errorf("planted fault in %q not found (want %q)", db.Name, w)
	}
}
