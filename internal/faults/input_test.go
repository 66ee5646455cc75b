//go:build faults

package faults_test

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/fleetmigrate/fleetmigrate/internal/demo"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// run runs bin with the demo's environment and returns its exit code and
// output.
func run(t *testing.T, d *demo.Demo, bin string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), bin, args...)
	cmd.Env = d.Env()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String()
}

// Case 10: bad input at the entry points an operator touches, on a live
// fleet; then the migration runs and everything holds.
func TestBadInput(t *testing.T) {
	t.Parallel()
	r := record(t, "10", "bad input at every entry point")
	d, ctx := fleet(t, 5, 1<<20, nil)
	dir := t.TempDir()
	refused := 0
	expect := func(what string, code int, out string, want ...string) {
		t.Helper()
		if code == 0 {
			t.Errorf("%s: accepted (exit 0):\n%s", what, out)
			return
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: exit %d, the message does not say %q:\n%s", what, code, w, out)
				return
			}
		}
		refused++
	}

	// The plan file: every line wrong in its own way; nothing may be
	// inserted.
	bad := filepath.Join(dir, "bad.csv")
	lines := []string{
		"engine,database,source,destination,dns_name",
		"oracle,shop,mysql-src-1,mysql-dst-1,a.db.example.test",
		"mysql,shop,mysql-src-1,mysql-src-1,b.db.example.test",
		"mysql,,mysql-src-1,mysql-dst-1,c.db.example.test",
		"mysql," + strings.Repeat("x", 65) + ",mysql-src-1,mysql-dst-1,d.db.example.test",
		"mysql,bad\xffutf8,mysql-src-1,mysql-dst-1,e.db.example.test",
		"mysql,short line",
		"mysql,trailing space ,mysql-src-1,mysql-dst-1,f.db.example.test",
	}
	if err := os.WriteFile(bad, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out := run(t, d, d.Opt.MigrateBin, "plan", "--file", bad)
	expect("a plan with 7 bad lines", code, out, ".csv:2:", ".csv:3:", ".csv:4:", ".csv:5:", ".csv:6:", ".csv:7:", ".csv:8:", "nothing was planned")
	if n, err := d.Store.CountStatuses(ctx, statemachine.Statuses...); err != nil || n != 0 {
		t.Errorf("after a refused plan the table has %d rows (%v), want 0", n, err)
	}

	// Configuration files: unknown key, wrong type, a secret not set.
	base, err := os.ReadFile(filepath.Join(d.Opt.Dir, "mysql-src-1.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// The error names the line of the setting, wherever the file has it.
	pollLine := 1 + strings.Count(string(base)[:strings.Index(string(base), "poll-interval: 250ms")], "\n")
	for _, c := range []struct{ name, edit, want string }{
		{"unknown key", strings.Replace(string(base), "agent:\n", "agent:\n  max-job: 3\n", 1), "max-job"},
		{"wrong type", strings.Replace(string(base), "poll-interval: 250ms", "poll-interval: often", 1), fmt.Sprintf("agent.poll-interval (line %d): cannot unmarshal !!str `often`", pollLine)},
		{"missing secret", strings.Replace(string(base), "${FLEETMIGRATE_MYSQL_PASSWORD}", "${FLEETMIGRATE_NOT_SET}", 1), "FLEETMIGRATE_NOT_SET"},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".yaml")
		if err := os.WriteFile(p, []byte(c.edit), 0o600); err != nil {
			t.Fatal(err)
		}
		code, out := run(t, d, d.Opt.AgentBin, "--config", p, "--host", "bad-input-"+strings.ReplaceAll(c.name, " ", "-"))
		expect("agent configuration with "+c.name, code, out, c.want)
	}
	// Command-line flags.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--max-procs", "-3"}, "max-procs"},
		{[]string{"status", "--id", "abc"}, "id"},
		{[]string{"rollback", "--id", "999999", "--execute"}, "999999"},
		{[]string{"no-such-command"}, "no-such-command"},
		{[]string{"dump-link", "--id", "999999"}, "999999"},
		{[]string{"dump-link", "--id", "1", "--ttl", "forever"}, "forever"},
	} {
		code, out := run(t, d, d.Opt.MigrateBin, c.args...)
		expect("migrate "+strings.Join(c.args, " "), code, out, c.want)
	}
	r.inject("a plan file with 7 bad lines (unknown engine, source = destination, empty, 65-character and non-UTF-8 names, a short line, a trailing space); agent configurations with an unknown key, a wrong type, an unset secret; 6 bad command lines (2 of them dump links: a row that does not exist, a TTL that is not one)")
	r.saw("%d of 10 inputs refused with exit ≠ 0 and a message naming the problem (the plan's 7 lines each named, nothing inserted)", refused)

	// The migration itself, with awkward names, and a plan that also names
	// databases missing at their source (a typo, one dropped since).
	ghosts := []*demo.Database{
		{Engine: demo.MySQL, Name: "no such db", Source: "mysql-src-1", Destination: "mysql-dst-1"},
		{Engine: demo.Postgres, Name: "dropped since it's planned", Source: "postgres-src-1", Destination: "postgres-dst-1"},
	}
	for _, g := range ghosts {
		if err := d.PlanGhost(g.Engine, g.Source, g.Destination, g.Name); err != nil {
			t.Fatal(err)
		}
	}
	r.inject("a plan naming 2 databases missing at their source (one MariaDB, one PostgreSQL)")
	if err := d.StartMigration(ctx); err != nil {
		t.Fatal(err)
	}
	settle(ctx, t, d, false)
	for _, g := range ghosts {
		m := row(ctx, t, d, g)
		if m.Status != statemachine.DumpFailed || !strings.Contains(m.LastError, "does not exist") || !m.BlockedAt.IsZero() {
			t.Errorf("row of %s database %q missing at %s: %s blocked %v, %q; want Dump failed saying it does not exist, nothing blocked",
				g.Engine, g.Name, g.Source, m.Status, m.BlockedAt, m.LastError)
		}
		r.saw("%q: %s", g.Name, trail(ctx, t, d, m.ID))
	}

	// A row edited by hand into an impossible status: the checker must
	// say so, and the tools keep working.
	first := row(ctx, t, d, d.DBs[0])
	if _, err := d.Store.DB().ExecContext(ctx, d.Store.Rebind("UPDATE migration SET status = ? WHERE id = ?"), "Exploded", first.ID); err == nil {
		t.Errorf("the state database took a row in status Exploded")
	} else {
		r.saw("a row set to status \"Exploded\" by hand: refused by the state table's constraint (%.60s...)", err.Error())
	}
	// A valid status the transition table does not allow from here.
	if _, err := d.Store.DB().ExecContext(ctx, d.Store.Rebind("UPDATE migration SET status = ? WHERE id = ?"), string(statemachine.Importing), first.ID); err == nil {
		t.Errorf("the state database took Done -> Importing by hand")
	} else {
		r.saw("Done set to Importing by hand: refused by the state database's transition trigger (%.80s...)", err.Error())
	}
	code, out = run(t, d, d.Opt.MigrateBin, "status")
	if code != 0 {
		t.Errorf("migrate status after refused edits: exit %d:\n%s", code, out)
	}
	r.inject("rows edited by hand: an unknown status; Done set back to Importing")

	// Planted faults the checker must find (it is not vacuous): a database
	// at a destination no row accounts for, an object no row owns, a
	// changed row at a destination.
	dst := d.Fleet.Host(d.DBs[0].Destination)
	root, err := sql.Open("mysql", dst.RootDSN(""))
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	for _, q := range []string{"CREATE DATABASE stray", "UPDATE " + ident.QuoteMySQL(d.DBs[0].Name) + ".orders SET amount = amount + 1 WHERE id = 1"} {
		if _, err := root.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	orphan := "dumps/mysql/nowhere/x/20260101T000000.000000Z/dump.sql.zst"
	if _, err := d.Fleet.S3.Client().PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(d.Fleet.S3.Bucket), Key: aws.String(orphan), Body: strings.NewReader("x")}); err != nil {
		t.Fatal(err)
	}
	rep, err := d.CheckInvariants(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for inv, want := range map[string]string{demo.InvDestinations: "stray", demo.InvStorage: orphan, demo.InvDone: "content differs"} {
		if !hasViolation(rep, inv, want) {
			t.Errorf("the checker missed a planted fault (%s: %s): %s", inv, want, rep.Summary())
		}
	}
	r.saw("planted: a stray destination database, an object no row owns, a changed row at a destination — %d violations reported, each found", len(rep.Violations))
	for _, q := range []string{"DROP DATABASE stray", "UPDATE " + ident.QuoteMySQL(d.DBs[0].Name) + ".orders SET amount = amount - 1 WHERE id = 1"} {
		if _, err := root.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.Fleet.S3.Client().DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(d.Fleet.S3.Bucket), Key: aws.String(orphan)}); err != nil {
		t.Fatal(err)
	}
	rep = checkInvariants(ctx, t, d, r)
	wantAllDone(t, d, rep)
}

func hasViolation(rep demo.InvariantReport, inv, want string) bool {
	for _, v := range rep.Violations {
		if v.Invariant == inv && strings.Contains(v.What, want) {
			return true
		}
	}
	return false
}
