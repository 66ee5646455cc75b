package sqlstore_test

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/statetest"
	"github.com/fleetmigrate/fleetmigrate/statemachine/sqlstore"
)

func TestDefaultLogin(t *testing.T) {
	hashed := regexp.MustCompile(`^fm_[a-z0-9_.-]*_[0-9a-f]{8}$`)
	for host, want := range map[string]string{
		"db-17":     "fm_db-17",
		"db-17.dc1": "fm_db-17.dc1",
		// not plain, or too long: a readable prefix and a hash
		"DB-17":                              "fm_db-17_",
		"10.0.0.7:3306":                      "fm_10.0.0.7_3306_",
		"a-very-long-host-name-of-the-fleet": "fm_a-very-long-host-nam_",
		"ünïcødé":                            "fm__n_c_d__",
	} {
		got := sqlstore.DefaultLogin(host)
		if len(got) > sqlstore.MaxLoginLen || !strings.HasPrefix(got, want) || (got != want && !hashed.MatchString(got)) {
			t.Errorf("DefaultLogin(%q) = %q, want %q (and 8 hex digits if it ends in _)", host, got, want)
		}
	}
	if sqlstore.DefaultLogin("DB-17") == sqlstore.DefaultLogin("db-17") {
		t.Error("two host IDs share a login")
	}
	long := strings.Repeat("x", 300)
	if a, b := sqlstore.DefaultLogin(long+"1"), sqlstore.DefaultLogin(long+"2"); a == b || len(a) > sqlstore.MaxLoginLen {
		t.Errorf("long host IDs: %q, %q", a, b)
	}
}

func TestCheckPassword(t *testing.T) {
	for _, pw := range []string{"short", strings.Repeat("x", 129), "with space inside the password", `quote'inside-the-password`,
		`back\slash-inside-the-password`, `double"quote-in-the-password`, "unicode-é-in-the-password", "tab\tinside-the-password"} {
		if err := sqlstore.CheckPassword(pw); err == nil {
			t.Errorf("CheckPassword(%q) accepted it", pw)
		}
	}
	for _, pw := range []string{sqlstore.NewPassword(), "Abc!#$%&()*+,-./0123:;<=>?@[]^_`{|}~"} {
		if err := sqlstore.CheckPassword(pw); err != nil {
			t.Errorf("CheckPassword(%q): %v", pw, err)
		}
	}
	if a, b := sqlstore.NewPassword(), sqlstore.NewPassword(); a == b || len(a) != 32 {
		t.Errorf("NewPassword: %q, %q", a, b)
	}
}

func TestDSNWithLogin(t *testing.T) {
	for _, c := range []struct{ driver, dsn, want string }{
		{"mysql", "root:secret@tcp(10.0.0.1:3306)/fleet?tls=true", "fm_a:pw@tcp(10.0.0.1:3306)/fleet?tls=true"},
		{"postgres", "postgres://postgres:secret@10.0.0.1:5432/fleet?sslmode=verify-full", "postgres://fm_a:pw@10.0.0.1:5432/fleet?sslmode=verify-full"},
		{"postgres", "host=10.0.0.1 dbname=fleet user=postgres password=secret", "host=10.0.0.1 dbname=fleet user=postgres password=secret user='fm_a' password='pw'"},
	} {
		got, err := sqlstore.DSNWithLogin(c.driver, c.dsn, "fm_a", "pw")
		if err != nil || got != c.want {
			t.Errorf("DSNWithLogin(%s, %q) = %q, %v; want %q", c.driver, c.dsn, got, err, c.want)
		}
		// What the drivers make of it: the agent's login, never the
		// operator's (a keyword string names user twice: the last wins).
		var user, password string
		if c.driver == "mysql" {
			mc, err := mysql.ParseDSN(got)
			if err != nil {
				t.Fatal(err)
			}
			user, password = mc.User, mc.Passwd
		} else {
			pc, err := pgx.ParseConfig(got)
			if err != nil {
				t.Fatal(err)
			}
			user, password = pc.User, pc.Password
		}
		if user != "fm_a" || password != "pw" {
			t.Errorf("the driver reads %q as user %q password %q", got, user, password)
		}
	}
}

// TestAgentLoginAdministration: grant-agent creates a login that
// authenticates with its password (a PostgreSQL server checking SCRAM
// passwords, MariaDB's native ones) and nothing else; re-running it
// rotates the password; it refuses to turn an existing operator login into
// an agent's or to give one login two hosts; revoke ends the login's
// sessions and drops it.
func TestAgentLoginAdministration(t *testing.T) {
	ctx := context.Background()
	run := func(t *testing.T, driver, dsn string, operator func(t *testing.T, s *sqlstore.Store, name string)) {
		s := statetest.Upgraded(t, driver, dsn).Open(t)
		admin := sqlstore.NewAdmin(s.DB(), s.Dialect())
		login := "fm_adm_" + strings.ReplaceAll(time.Now().Format("150405.000000"), ".", "")
		pw1 := sqlstore.NewPassword()
		l, created, err := admin.GrantAgent(ctx, sqlstore.AgentGrant{Host: "db-1", Login: login, Password: pw1, By: "ops@test"})
		if err != nil || !created || l.Host != "db-1" || l.DNS || l.GrantedBy != "ops@test" {
			t.Fatalf("grant: %+v, created %v, %v", l, created, err)
		}
		open := func(as, pw string) (*sqlstore.Store, error) {
			d, err := sqlstore.DSNWithLogin(driver, dsn, as, pw)
			if err != nil {
				t.Fatal(err)
			}
			return sqlstore.Open(ctx, sqlstore.Config{Driver: driver, DSN: d, MaxOpenConns: 2})
		}
		a, err := open(login, pw1)
		if err != nil {
			t.Fatalf("log in with the password granted: %v", err)
		}
		defer a.Close()
		me, ok, err := a.Login(ctx)
		if err != nil || !ok || me.Host != "db-1" || me.Login != login {
			t.Fatalf("the login's own entry: %+v, %v, %v", me, ok, err)
		}
		if _, err := open(login, "not-"+pw1); err == nil {
			t.Fatal("a wrong password logged in")
		}
		p, err := a.Posture(ctx)
		if err != nil || len(p.MayChange) != 0 || p.Superuser {
			t.Errorf("posture of an agent login: %+v, %v", p, err)
		}
		// Re-running rotates the password and may add the DNS rows.
		pw2 := sqlstore.NewPassword()
		l, created, err = admin.GrantAgent(ctx, sqlstore.AgentGrant{Host: "db-1", Login: login, DNS: true, Password: pw2, By: "ops@test"})
		if err != nil || created || !l.DNS {
			t.Fatalf("re-grant: %+v, created %v, %v", l, created, err)
		}
		if _, err := open(login, pw1); err == nil {
			t.Error("the old password still logs in after a rotation")
		}
		b, err := open(login, pw2)
		if err != nil {
			t.Fatalf("log in with the new password: %v", err)
		}
		defer b.Close()
		// One login, one host.
		if _, _, err := admin.GrantAgent(ctx, sqlstore.AgentGrant{Host: "db-2", Login: login, Password: pw2}); err == nil || !strings.Contains(err.Error(), "already the agent login of host db-1") {
			t.Errorf("grant the login to a second host: %v", err)
		}
		// An operator's login stays an operator's.
		opName := login + "_op"
		operator(t, s, opName)
		if _, _, err := admin.GrantAgent(ctx, sqlstore.AgentGrant{Host: "db-3", Login: opName, Password: pw2}); err == nil || !strings.Contains(err.Error(), "is not an agent login") {
			t.Errorf("grant an existing operator login: %v", err)
		}
		for _, g := range []sqlstore.AgentGrant{{Host: "", Password: pw2}, {Host: "db-4", Login: "bad'login", Password: pw2}, {Host: "db-4", Password: "short"}} {
			if _, _, err := admin.GrantAgent(ctx, g); err == nil {
				t.Errorf("grant %+v: accepted", g)
			}
		}
		// A grant that failed half-way (its agent_login row written, the
		// login not made) is completed by running it again.
		half := login + "_h"
		if _, err := s.DB().ExecContext(ctx, s.Rebind("INSERT INTO agent_login (login, host) VALUES (?, 'db-5')"), half); err != nil {
			t.Fatal(err)
		}
		if l, created, err := admin.GrantAgent(ctx, sqlstore.AgentGrant{Host: "db-5", Login: half, Password: pw2}); err != nil || !created {
			t.Fatalf("complete a half-done grant: %+v, %v, %v", l, created, err)
		}
		if h, err := open(half, pw2); err != nil {
			t.Errorf("log in with the completed grant: %v", err)
		} else {
			h.Close()
		}
		if _, err := admin.RevokeAgent(ctx, half); err != nil {
			t.Fatal(err)
		}
		logins, err := admin.AgentLogins(ctx)
		if err != nil || len(logins) != 1 || logins[0].Login != login {
			t.Fatalf("logins: %+v, %v", logins, err)
		}
		// Revoke: the open sessions end, the login is gone.
		if err := b.DB().PingContext(ctx); err != nil {
			t.Fatal(err)
		}
		rev, err := admin.RevokeAgent(ctx, "db-1")
		if err != nil || len(rev) != 1 || rev[0].Kept != "" {
			t.Fatalf("revoke: %+v, %v", rev, err)
		}
		if rev[0].Sessions == 0 {
			t.Error("revoke ended no session of the login")
		}
		if _, err := open(login, pw2); err == nil {
			t.Error("a revoked login logs in")
		}
		if _, err := admin.RevokeAgent(ctx, "db-1"); !errors.Is(err, sqlstore.ErrNoSuchLogin) {
			t.Errorf("revoke again: %v", err)
		}
		if logins, _ := admin.AgentLogins(ctx); len(logins) != 0 {
			t.Errorf("logins after revoke: %+v", logins)
		}
	}
	t.Run("PostgreSQL", func(t *testing.T) {
		t.Parallel()
		srv := fleettest.NewPostgres(t, fleettest.PostgresConfig{Password: "operator-password-1"})
		run(t, "postgres", srv.DSN(srv.NewDatabase(t)), func(t *testing.T, s *sqlstore.Store, name string) {
			if _, err := s.DB().ExecContext(ctx, "CREATE ROLE "+name+" LOGIN"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _, _ = s.DB().ExecContext(context.Background(), "DROP ROLE "+name) })
		})
	})
	t.Run("MariaDB", func(t *testing.T) {
		t.Parallel()
		srv := fleettest.SharedMariaDB(t)
		run(t, "mysql", srv.DSN(srv.NewDatabase(t)), func(t *testing.T, s *sqlstore.Store, name string) {
			if _, err := s.DB().ExecContext(ctx, "CREATE USER '"+name+"'@'%'"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _, _ = s.DB().ExecContext(context.Background(), "DROP USER '"+name+"'@'%'") })
		})
	})
}
