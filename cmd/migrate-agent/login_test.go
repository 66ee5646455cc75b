package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/statetest"
	"github.com/fleetmigrate/fleetmigrate/statemachine/sqlstore"
)

// TestAgentLoginChecks: with its host's own login, --check says what the
// login may move; with another host's login, or without the DNS rows for
// the dns role, the agent refuses to start (the state database would
// refuse each of its steps) and says which login to give it.
func TestAgentLoginChecks(t *testing.T) {
	statetest.Engines(t, func(t *testing.T, db statetest.DB) {
		s := db.Open(t)
		admin := sqlstore.NewAdmin(s.DB(), s.Dialect())
		login := "fm_chk_" + strings.ReplaceAll(time.Now().Format("150405.000000"), ".", "")
		pw := sqlstore.NewPassword()
		if _, _, err := admin.GrantAgent(context.Background(), sqlstore.AgentGrant{Host: "db-7", Login: login, Password: pw}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = admin.RevokeAgent(context.Background(), login) })
		dsn, err := sqlstore.DSNWithLogin(db.Driver, db.DSN, login, pw)
		if err != nil {
			t.Fatal(err)
		}
		config := func(host string) string {
			return fmt.Sprintf("host: %s\nstate:\n  driver: %s\n  dsn: %q\n", host, db.Driver, dsn)
		}
		code, out, stderr := runAgent(t, config("db-7"), "--roles", "dump,import", "--check")
		if code != 0 || !strings.Contains(out, "state role:     "+login) || strings.Contains(out, "WARNING") ||
			!strings.Contains(out, ": the agent login of host db-7 — may move only rows whose source or destination is db-7, by its steps; never source, destination, dns_name, engine, database_name") {
			t.Fatalf("check with the host's own login: %d\n%s\n%s", code, out, stderr)
		}
		for _, tc := range []struct {
			host, roles, want string
		}{
			{"db-8", "dump,import", "the agent login of host db-7, but this agent is host db-8"},
			{"db-7", "dns", "may not move the DNS rows: migrate db grant-agent db-7 --dns"},
		} {
			for _, args := range [][]string{{"--roles", tc.roles, "--check"}, {"--roles", tc.roles}} {
				code, _, stderr := runAgent(t, config(tc.host), args...)
				if code != 1 || !strings.Contains(stderr, tc.want) {
					t.Errorf("%s %v: exit %d %q; want 1 and %q", tc.host, args, code, stderr, tc.want)
				}
			}
		}
	})
}
