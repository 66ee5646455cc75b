package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/statetest"
	"github.com/fleetmigrate/fleetmigrate/migrations"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/statemachine/sqlstore"
)

func TestMain(m *testing.M) { fleettest.Main(m) }

// stateDB is one fresh state database on a harness server.
type stateDB = statetest.DB

// processEnv configures a migrate process through the environment alone,
// with an empty configuration file so that no file on the machine
// interferes.
func processEnv(t *testing.T, db stateDB) []string {
	empty := filepath.Join(t.TempDir(), "empty.yaml")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return append(db.Env(), "FLEETMIGRATE_CONFIG="+empty)
}

// engines runs fn once against PostgreSQL and once against MariaDB.
func engines(t *testing.T, fn func(t *testing.T, db stateDB)) { statetest.Engines(t, fn) }

// migrate runs the CLI in-process with the state database given by flags
// (no environment: parallel tests share it).
func migrate(t *testing.T, db stateDB, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return migrateWith(t, db, "", stdin, args...)
}

// migrateWith is migrate with more configuration (YAML appended to the
// generated file).
func migrateWith(t *testing.T, db stateDB, extra, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return migrateCtx(context.Background(), t, db, extra, stdin, args...)
}

// migrateCtx is migrateWith under ctx (for commands that run until stopped).
func migrateCtx(ctx context.Context, t *testing.T, db stateDB, extra, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	if len(args) > 0 && args[0] != "version" {
		cfg := filepath.Join(t.TempDir(), "config.yaml")
		body := fmt.Sprintf("host: ops-1\nstate:\n  driver: %s\n  dsn: %q\nlog:\n  level: warn\n  format: text\n", db.Driver, db.DSN) + extra
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(append([]string{}, args...), "--config", cfg)
	}
	code = run(ctx, args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// process runs the built migrate binary as a real process.
func process(t *testing.T, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(fleettest.Build(t, "."), args...)
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

func testStore(t *testing.T, db stateDB) *sqlstore.Store { return db.Open(t) }

func mustUpgrade(t *testing.T, db stateDB) {
	t.Helper()
	if code, _, stderr := migrate(t, db, "", "db", "upgrade"); code != 0 {
		t.Fatalf("db upgrade: %d %s", code, stderr)
	}
}

func TestDBUpgradeIsIdempotent(t *testing.T) {
	statetest.EnginesWithoutSchema(t, func(t *testing.T, db stateDB) {
		code, out, stderr := migrate(t, db, "", "db", "status")
		if code != 0 || !strings.Contains(out, "schema version: 0") || !strings.Contains(out, "run `migrate db upgrade`") {
			t.Fatalf("status of an empty database: %d %q %q", code, out, stderr)
		}
		// Any other command refuses to work on a database without the schema.
		code, _, stderr = migrate(t, db, "", "status")
		if code != 1 || !strings.Contains(stderr, "run `migrate db upgrade`") {
			t.Fatalf("status before upgrade: %d %q", code, stderr)
		}
		latest := latestVersion(t, db)
		code, out, _ = migrate(t, db, "", "db", "upgrade")
		if code != 0 || !strings.Contains(out, fmt.Sprintf("from version 0 to %d", latest)) {
			t.Fatalf("first upgrade: %d %q", code, out)
		}
		code, out, _ = migrate(t, db, "", "db", "upgrade")
		if code != 0 || !strings.Contains(out, fmt.Sprintf("already at version %d", latest)) {
			t.Fatalf("second upgrade: %d %q", code, out)
		}
		checkSchemaOnce(t, db)
	})
}

func TestDBUpgradeFromTwoProcessesAtOnce(t *testing.T) {
	statetest.EnginesWithoutSchema(t, func(t *testing.T, db stateDB) {
		var wg sync.WaitGroup
		outs := make([]string, 4)
		errs := make([]error, 4)
		for i := range outs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b, err := process(t, processEnv(t, db), "db", "upgrade").CombinedOutput()
				outs[i], errs[i] = string(b), err
			}()
		}
		wg.Wait()
		upgraded := 0
		for i := range outs {
			if errs[i] != nil {
				t.Fatalf("process %d: %v\n%s", i, errs[i], outs[i])
			}
			if strings.Contains(outs[i], fmt.Sprintf("upgraded from version 0 to %d", latestVersion(t, db))) {
				upgraded++
			}
		}
		if upgraded != 1 {
			t.Fatalf("%d processes say they upgraded, want 1:\n%s", upgraded, strings.Join(outs, "\n"))
		}
		checkSchemaOnce(t, db)
	})
}

// checkSchemaOnce reads the schema back: one version row, every table, the
// transition table filled once.
// statusJSON runs `migrate status --json` and decodes it.
func statusJSON(t *testing.T, db stateDB) statusReport {
	t.Helper()
	code, out, stderr := migrate(t, db, "", "status", "--json")
	if code != 0 {
		t.Fatalf("status: %d %s", code, stderr)
	}
	var rep statusReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	return rep
}

func latestVersion(t *testing.T, db stateDB) int64 {
	t.Helper()
	v, err := migrations.Latest(migrations.Dialect(db.Driver))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func checkSchemaOnce(t *testing.T, db stateDB) {
	t.Helper()
	s := testStore(t, db)
	var versions, pairs int
	if err := s.DB().QueryRow("SELECT COUNT(*) FROM fleetmigrate_schema_version WHERE version_id > 0").Scan(&versions); err != nil || versions != int(latestVersion(t, db)) {
		t.Errorf("%d applied versions (%v), want %d", versions, err, latestVersion(t, db))
	}
	if err := s.DB().QueryRow("SELECT COUNT(*) FROM migration_transition").Scan(&pairs); err != nil || pairs != len(statemachine.Pairs()) {
		t.Errorf("%d transitions (%v), want %d", pairs, err, len(statemachine.Pairs()))
	}
	for _, table := range []string{"migration", "migration_event", "control", "agent"} {
		if _, err := s.DB().Exec("SELECT 1 FROM " + table + " WHERE 1 = 0"); err != nil {
			t.Errorf("table %s: %v", table, err)
		}
	}
}

func TestPlanReportsEveryBadLineAndInsertsNothing(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		mustUpgrade(t, db)
		var b strings.Builder
		b.WriteString("engine,database,source,destination,dns_name\r\n") // CRLF throughout
		for line := 2; line <= 101; line++ {
			switch line {
			case 9:
				b.WriteString("oracle,shop,db-1,db-2,\r\n")
			case 40:
				b.WriteString("postgres," + strings.Repeat("n", 64) + ",db-1,db-2,\r\n")
			case 77:
				b.WriteString("mysql,db_5,db-1,db-2,\r\n") // duplicate of line 7
			default:
				fmt.Fprintf(&b, "mysql,db_%d,db-1,db-2,db-%d.example.test\r\n", line-2, line)
			}
		}
		file := filepath.Join(t.TempDir(), "fleet.csv")
		if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := migrate(t, db, "", "plan", "--file", file)
		if code != 1 {
			t.Fatalf("exit %d, want 1: %s", code, stderr)
		}
		for _, want := range []string{"fleet.csv:9: unknown engine", "fleet.csv:40: database", "fleet.csv:77: database \"db_5\" on db-1 is already on line 7", "3 of 100 lines"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("stderr lacks %q:\n%s", want, stderr)
			}
		}
		if n := countRows(t, db); n != 0 {
			t.Fatalf("%d rows inserted from a bad file", n)
		}
		// The same file without the bad lines plans all 97.
		var good []string
		for i, l := range strings.Split(b.String(), "\r\n") {
			if i+1 != 9 && i+1 != 40 && i+1 != 77 && l != "" {
				good = append(good, l)
			}
		}
		code, out, stderr := migrate(t, db, strings.Join(good, "\r\n")+"\r\n", "plan", "--file", "-")
		if code != 0 || !strings.Contains(out, "planned 97 migrations") {
			t.Fatalf("good plan: %d %q %q", code, out, stderr)
		}
		if n := countRows(t, db); n != 97 {
			t.Fatalf("%d rows, want 97", n)
		}
	})
}

func countRows(t *testing.T, db stateDB) int {
	t.Helper()
	var n int
	if err := testStore(t, db).DB().QueryRow("SELECT COUNT(*) FROM migration").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// awkward names from the issue: backtick, double and single quotes, space,
// %, unicode, and the longest legal names.
var awkward = []struct{ engine, name string }{
	{"mysql", "back`tick"},
	{"mysql", `double"quote`},
	{"mysql", "single'quote"},
	{"mysql", "with space"},
	{"mysql", "100%"},
	{"mysql", "ünïcødé_数据库"},
	{"mysql", strings.Repeat("m", 64)},
	{"mysql", strings.Repeat("ü", 64)},
	{"postgres", strings.Repeat("p", 63)},
	{"postgres", "pg with 'all' \"the\" `quotes` "},
}

func TestNamesSurvivePlanStoreStatus(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		mustUpgrade(t, db)
		var b strings.Builder
		b.WriteString("engine,database,source,destination,dns_name\n")
		for i, a := range awkward {
			fmt.Fprintf(&b, "%s,%s,db-1,db-2,n%d.db.example.test\n", a.engine, csvQuote(a.name), i)
		}
		if code, _, stderr := migrate(t, db, b.String(), "plan", "--file", "-"); code != 0 {
			t.Fatalf("plan: %s", stderr)
		}
		code, out, stderr := migrate(t, db, "", "list", "--json", "--limit", "0")
		if code != 0 {
			t.Fatalf("list: %s", stderr)
		}
		var rows []statemachine.Migration
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatal(err)
		}
		if len(rows) != len(awkward) {
			t.Fatalf("%d rows, want %d", len(rows), len(awkward))
		}
		for i, m := range rows {
			if m.DatabaseName != awkward[i].name || string(m.Engine) != awkward[i].engine {
				t.Errorf("row %d: %q, want %q", i, m.DatabaseName, awkward[i].name)
			}
			// status --id shows the same name, in JSON and in text.
			code, out, _ := migrate(t, db, "", "status", "--id", fmt.Sprint(m.ID), "--json")
			var one struct{ Migration statemachine.Migration }
			if code != 0 || json.Unmarshal([]byte(out), &one) != nil || one.Migration.DatabaseName != awkward[i].name {
				t.Errorf("status --id %d: %q", m.ID, out)
			}
			code, out, _ = migrate(t, db, "", "status", "--id", fmt.Sprint(m.ID))
			if code != 0 || !strings.Contains(out, fmt.Sprintf("%q", awkward[i].name)) {
				t.Errorf("status --id %d text does not show %q:\n%s", m.ID, awkward[i].name, out)
			}
			// and list finds it by exact name
			code, out, _ = migrate(t, db, "", "list", "--database", awkward[i].name, "--json")
			var found []statemachine.Migration
			if code != 0 || json.Unmarshal([]byte(out), &found) != nil || len(found) != 1 || found[0].ID != m.ID {
				t.Errorf("list --database %q: %s", awkward[i].name, out)
			}
		}
	})
}

func csvQuote(s string) string {
	if strings.ContainsAny(s, "\",\n") || strings.HasSuffix(s, " ") || strings.HasPrefix(s, " ") {
		return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
	}
	return s
}

func TestStatusShowsCountsSwitchAndAgents(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		mustUpgrade(t, db)
		plan := "engine,database,source,destination,dns_name\nmysql,a,db-1,db-2,\nmysql,b,db-1,db-2,\nmysql,c,db-1,db-2,\n"
		if code, _, stderr := migrate(t, db, plan, "plan", "--file", "-"); code != 0 {
			t.Fatal(stderr)
		}
		s := testStore(t, db)
		ctx := context.Background()
		if _, err := s.Promote(ctx, 1, "scheduler"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.SetStop(ctx, "alice@ops-1", "maintenance window over"); err != nil {
			t.Fatal(err)
		}
		for _, a := range []statemachine.Agent{
			{Host: "db-1", Roles: []statemachine.Role{statemachine.RoleDump, statemachine.RoleClose}, Instance: "i-1"},
			{Host: "db-2", Roles: []statemachine.Role{statemachine.RoleImport}, Instance: "i-2"},
		} {
			if err := s.RegisterAgent(ctx, a, time.Minute, ""); err != nil {
				t.Fatal(err)
			}
		}
		rep := statusJSON(t, db)
		if rep.Counts[statemachine.Waiting] != 2 || rep.Counts[statemachine.ToDump] != 1 || rep.Total != 3 || rep.InFlight != 1 {
			t.Errorf("counts: %+v", rep)
		}
		if !rep.StopSwitch.Set || rep.StopSwitch.Reason != "maintenance window over" {
			t.Errorf("stop switch: %+v", rep.StopSwitch)
		}
		if fmt.Sprint(rep.Agents["dump"]) != "[db-1]" || fmt.Sprint(rep.Agents["import"]) != "[db-2]" || fmt.Sprint(rep.Agents["close"]) != "[db-1]" {
			t.Errorf("agents: %v", rep.Agents)
		}
		code, out, _ := migrate(t, db, "", "status")
		for _, want := range []string{"stop switch:    SET by alice@ops-1", "Waiting                   2", "dump", "db-1"} {
			if code != 0 || !strings.Contains(out, want) {
				t.Errorf("status text lacks %q:\n%s", want, out)
			}
		}
	})
}

func TestUnreachableStateDatabase(t *testing.T) {
	fleettest.Integration(t)
	t.Parallel()
	for _, tc := range []struct{ driver, dsn, where string }{
		{"postgres", "postgres://fleet@127.0.0.1:1/fleet?sslmode=disable", "127.0.0.1:1"},
		{"mysql", "fleet@tcp(127.0.0.1:1)/fleet", "127.0.0.1:1"},
	} {
		cmd := process(t, processEnv(t, stateDB{Driver: tc.driver, DSN: tc.dsn}), "status")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) || exitErr.ExitCode() != 1 {
			t.Fatalf("%s: exit %v, want 1", tc.driver, err)
		}
		msg := stderr.String()
		if strings.Count(msg, "\n") != 1 || !strings.Contains(msg, tc.where) || !strings.Contains(msg, "connection refused") ||
			strings.Contains(msg, "goroutine") {
			t.Errorf("%s: want one line naming %s and the cause, got:\n%s", tc.driver, tc.where, msg)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{}, {"plan"}, {"nonsense"}, {"list", "--status", "Bogus"}, {"db"}, {"status", "extra"}, {"status", "--no-such-flag"}} {
		var out, errb bytes.Buffer
		code := run(context.Background(), args, strings.NewReader(""), &out, &errb)
		if hint := strings.Contains(errb.String(), "try:") || strings.Contains(errb.String(), "usage:"); code != 2 || !hint {
			t.Errorf("migrate %v: exit %d, stderr %q; want 2 and a hint", args, code, errb.String())
		}
	}
	var out bytes.Buffer
	if code := run(context.Background(), []string{"version"}, nil, &out, &out); code != 0 || !strings.HasPrefix(out.String(), "migrate ") {
		t.Errorf("version: %d %q", code, out.String())
	}
}
