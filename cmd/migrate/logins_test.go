package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/statetest"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/statemachine/sqlstore"
)

// TestGrantAndRevokeAgentLogins: the operator's commands for agent logins,
// end to end on both state databases: grant-agent writes a new password
// file (0600) and refuses a file others can read; the login it made is
// refused an operator's command (plan) by the database; logins lists it;
// revoke-agent drops it.
func TestGrantAndRevokeAgentLogins(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		mustUpgrade(t, db)
		dir := t.TempDir()
		pwFile := filepath.Join(dir, "db-1.password")
		login := "fm_cli_" + strings.ReplaceAll(time.Now().Format("150405.000000"), ".", "")
		code, out, stderr := migrate(t, db, "", "db", "grant-agent", "db-1", "--password-file", pwFile, "--login", login)
		if code != 0 || !strings.Contains(out, "agent login "+login) || !strings.Contains(out, "for host db-1 created") ||
			!strings.Contains(out, "new password written to "+pwFile+" (0600)") {
			t.Fatalf("grant-agent: %d\n%s\n%s", code, out, stderr)
		}
		st, err := os.Stat(pwFile)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("password file: %v, %v", st, err)
		}
		b, _ := os.ReadFile(pwFile)
		pw := strings.TrimSpace(string(b))
		if strings.Contains(out, pw) || strings.Contains(stderr, pw) {
			t.Fatal("grant-agent printed the password")
		}
		// Re-running with the same file keeps the password and says so.
		code, out, _ = migrate(t, db, "", "db", "grant-agent", "db-1", "--password-file", pwFile, "--login", login, "--dns")
		if code != 0 || !strings.Contains(out, "updated (password set from") || !strings.Contains(out, "rows in the DNS step") {
			t.Fatalf("grant-agent again: %d\n%s", code, out)
		}
		loose := filepath.Join(dir, "loose.password")
		if err := os.WriteFile(loose, []byte(sqlstore.NewPassword()+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if code, _, stderr := migrate(t, db, "", "db", "grant-agent", "db-2", "--password-file", loose); code != 1 || !strings.Contains(stderr, "chmod 600") {
			t.Errorf("a password file others can read: %d %s", code, stderr)
		}
		if code, _, stderr := migrate(t, db, "", "db", "grant-agent", "db-2"); code != 2 || !strings.Contains(stderr, "--password-file is required") {
			t.Errorf("no password file: %d %s", code, stderr)
		}
		if code, out, _ := migrate(t, db, "", "db", "status"); code != 0 || !strings.Contains(out, "agent logins:   1 (") {
			t.Errorf("db status: %d\n%s", code, out)
		}
		code, out, _ = migrate(t, db, "", "db", "logins")
		if code != 0 || !strings.Contains(out, "agent logins: 1") || !strings.Contains(out, login) || !strings.Contains(out, "yes") {
			t.Fatalf("logins: %d\n%s", code, out)
		}
		// With the agent's login, an operator's command is refused by the
		// database, and nothing is planned.
		dsn, err := sqlstore.DSNWithLogin(db.Driver, db.DSN, login, pw)
		if err != nil {
			t.Fatal(err)
		}
		agentDB := stateDB{Driver: db.Driver, DSN: dsn}
		plan := filepath.Join(dir, "plan.csv")
		if err := os.WriteFile(plan, []byte("engine,database,source,destination,dns_name\nmysql,shop,db-1,db-9,shop.db.test\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if code, _, stderr := migrate(t, agentDB, "", "plan", "--file", plan); code != 1 || !strings.Contains(stderr, "denied") || !strings.Contains(stderr, "need an operator's login") {
			t.Errorf("plan with an agent's login: %d %s", code, stderr)
		}
		if n, err := testStore(t, db).CountStatuses(t.Context(), "Waiting"); err != nil || n != 0 {
			t.Errorf("rows planned by an agent login: %d, %v", n, err)
		}
		// migrate status tells the agents on their own login from those on
		// an operator's.
		as := statetest.DB{Driver: db.Driver, DSN: dsn}.Open(t)
		for _, reg := range []struct {
			s    statemachine.Store
			host string
		}{{as, "db-1"}, {testStore(t, db), "db-2"}} {
			if err := reg.s.RegisterAgent(t.Context(), statemachine.Agent{Host: reg.host, Roles: []statemachine.Role{statemachine.RoleDump}, Instance: "i-" + reg.host}, time.Minute, ""); err != nil {
				t.Fatalf("register %s: %v", reg.host, err)
			}
		}
		code, out, _ = migrate(t, db, "", "status")
		if code != 0 || !strings.Contains(out, "logins:   1 on their host's own, 1 on an operator's: db-2  WARNING") {
			t.Errorf("status: %d\n%s", code, out)
		}
		as.Close()
		code, out, stderr = migrate(t, db, "", "db", "revoke-agent", "db-1")
		if code != 0 || !strings.Contains(out, "revoked and dropped") {
			t.Fatalf("revoke-agent: %d\n%s\n%s", code, out, stderr)
		}
		if code, _, stderr := migrate(t, db, "", "db", "revoke-agent", "db-1"); code != 1 || !strings.Contains(stderr, "no such agent login") {
			t.Errorf("revoke-agent again: %d %s", code, stderr)
		}
		if code, _, _ := migrate(t, agentDB, "", "status"); code == 0 {
			t.Error("a revoked login still reads the state database")
		}
	})
}

// TestGrantAgentsOfThePlan: --planned gives every source and destination
// host of the state table its own login at once, each password in its own
// 0600 file; re-running changes nothing but says so.
func TestGrantAgentsOfThePlan(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		mustUpgrade(t, db)
		dir := t.TempDir()
		p := "pl" + strings.ReplaceAll(time.Now().Format("150405.000000"), ".", "")
		hosts := []string{p + "-a", p + "-b", p + "-c"}
		plan := filepath.Join(dir, "plan.csv")
		csv := "engine,database,source,destination,dns_name\nmysql,shop,%[1]s,%[3]s,\nmysql,blog,%[2]s,%[3]s,\n"
		if err := os.WriteFile(plan, []byte(fmt.Sprintf(csv, hosts[0], hosts[1], hosts[2])), 0o600); err != nil {
			t.Fatal(err)
		}
		if code, _, stderr := migrate(t, db, "", "plan", "--file", plan); code != 0 {
			t.Fatalf("plan: %s", stderr)
		}
		pwDir := filepath.Join(dir, "passwords")
		if err := os.Mkdir(pwDir, 0o700); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			for _, h := range hosts {
				migrate(t, db, "", "db", "revoke-agent", h)
			}
		})
		code, out, stderr := migrate(t, db, "", "db", "grant-agent", "--planned", "--password-dir", pwDir)
		if code != 0 || !strings.Contains(out, "3 hosts of the plan: 3 with their own login now, 0 failed") {
			t.Fatalf("grant-agent --planned: %d\n%s\n%s", code, out, stderr)
		}
		for _, h := range hosts {
			if !strings.Contains(out, "agent login fm_"+h) || !strings.Contains(out, "for host "+h+" created, new password written to") {
				t.Errorf("no line for %s:\n%s", h, out)
			}
			if st, err := os.Stat(filepath.Join(pwDir, h+".state-password")); err != nil || st.Mode().Perm() != 0o600 {
				t.Errorf("%s's password file: %v %v", h, st, err)
			}
		}
		code, out, _ = migrate(t, db, "", "db", "grant-agent", "--planned", "--password-dir", pwDir)
		if code != 0 || strings.Count(out, "updated (password set from") != 3 {
			t.Errorf("again: %d\n%s", code, out)
		}
		if code, _, stderr := migrate(t, db, "", "db", "grant-agent", "--planned"); code != 2 || !strings.Contains(stderr, "--password-dir") {
			t.Errorf("--planned without --password-dir: %d %s", code, stderr)
		}
		if code, _, stderr := migrate(t, db, "", "db", "grant-agent", hosts[0], "--planned", "--password-dir", pwDir); code != 2 || !strings.Contains(stderr, "not both") {
			t.Errorf("a host and --planned: %d %s", code, stderr)
		}
	})
}
