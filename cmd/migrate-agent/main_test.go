package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetmigrate/fleetmigrate/internal/agentcmd"
	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/statetest"
	"github.com/fleetmigrate/fleetmigrate/migrations"
	"github.com/fleetmigrate/fleetmigrate/statemachine/sqlstore"
)

func TestMain(m *testing.M) { fleettest.Main(m) }

func runAgent(t *testing.T, configBody string, args ...string) (int, string, string) {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(cfg, []byte(configBody), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := agentcmd.Main(append([]string{"--config", cfg}, args...), "test", &out, &errb, registerHandlers, checkOnline)
	return code, out.String(), errb.String()
}

func TestCheck(t *testing.T) {
	srv := fleettest.SharedPostgres(t)
	dsn := srv.DSN(srv.NewDatabase(t))
	body := fmt.Sprintf("host: DB-7\nstate:\n  dsn: %q\n", dsn)

	// Before the schema exists the check fails and says what to do.
	code, _, stderr := runAgent(t, body, "--roles", "dump,import", "--check")
	if code != 1 || !strings.Contains(stderr, "migrate db upgrade") {
		t.Fatalf("check before upgrade: %d %q", code, stderr)
	}
	db, dialect, _, err := sqlstore.Connect(context.Background(), sqlstore.Config{Driver: "postgres", DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := migrations.Up(context.Background(), db, dialect, nil); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runAgent(t, body, "--roles", "dump, import,dump", "--check")
	if code != 0 || !strings.Contains(out, "host:           db-7") || !strings.Contains(out, "roles:          dump,import") {
		t.Fatalf("check: %d %q %q", code, out, stderr)
	}
	if strings.Contains(out+stderr, "password") {
		t.Errorf("output mentions a password: %s", out+stderr)
	}
}

// TestCheckReportsOnlineReadiness: --check says what a PostgreSQL server
// lacks for online mode (wal_level, a restart) and that a ready one is.
func TestCheckReportsOnlineReadiness(t *testing.T) {
	fleettest.Integration(t)
	t.Parallel()
	sm := fleettest.SharedMariaDB(t)
	state := statetest.Upgraded(t, "mysql", sm.DSN(sm.NewDatabase(t)))
	replica := fleettest.NewPostgres(t, fleettest.PostgresConfig{Settings: map[string]string{"wal_level": "replica"}})
	ready := fleettest.SharedPostgresAs(t, "source")
	ready.EnsurePeer(t, "check peer", "pe'er")
	fleettest.PGExec(t, replica.Root(t, "postgres"), "CREATE ROLE pgwriter LOGIN CREATEDB PASSWORD 'w'", "GRANT pg_read_all_data, pg_write_all_data TO pgwriter")
	for _, tc := range []struct {
		pg   *fleettest.Postgres
		peer string // extra lines of the postgres section
		want []string
	}{
		{replica, "", []string{`online source:  NOT READY: wal_level is "replica"`, "restart the server", "online dest:    ready",
			// the posture: TLS as the server sees the session, the role,
			// what the state-database login may change
			"postgres tls:   plaintext (postgres.sslmode prefer)  WARNING: plaintext", "postgres role:  postgres: a superuser",
			"postgres peers: note: other hosts' clusters are read with the superuser role",
			"may change source, destination, dns_name, engine, database_name of every row  WARNING"}},
		{ready, "  peer-user: check peer\n  peer-password: \"pe'er\"\n", []string{"online source:  ready", "online dest:    ready", "note: max_slot_wal_keep_size is unlimited",
			"postgres peers: check peer: LOGIN REPLICATION BYPASSRLS; member of pg_monitor, pg_read_all_data, pg_read_all_settings, pg_read_all_stats, pg_stat_scan_tables; sessions read-only by default: true",
			"postgres peers: check peer is read-only"}},
		{replica, "  peer-user: pgwriter\n  peer-password: w\n", []string{"postgres peers: WARNING: pgwriter may change this cluster (CREATEDB, member of pg_write_all_data)",
			"postgres peers: WARNING: pgwriter lacks REPLICATION (online mode's subscriptions); BYPASSRLS"}},
	} {
		body := fmt.Sprintf("host: db-7\nstate:\n  driver: mysql\n  dsn: %q\nstorage:\n  dir: %q\npostgres:\n  address: %s\n  user: postgres\n  password: %q\n%s",
			state.DSN, t.TempDir(), tc.pg.Addr(), tc.pg.Password, tc.peer)
		code, out, stderr := runAgent(t, body, "--roles", "sync,cutover", "--check")
		if code != 0 {
			t.Fatalf("check: %d %s %s", code, out, stderr)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: --check does not say %q:\n%s", tc.pg.Addr(), w, out)
			}
		}
		if tc.pg.Password != "" && strings.Contains(out+stderr, tc.pg.Password) {
			t.Error("the output holds the password")
		}
		if strings.Contains(out+stderr, "pe'er") {
			t.Error("the output holds the peer's password")
		}
	}
}

func TestBadInput(t *testing.T) {
	cases := []struct {
		name, body string
		args       []string
		code       int
		want       string
	}{
		{"unknown role", "", []string{"--roles", "dump,backup", "--check"}, 2, `unknown role "backup"`},
		{"no roles", "", []string{"--check"}, 2, "no roles"},
		{"unknown config key", "hots: x\n", []string{"--roles", "dns", "--check"}, 1, `line 1: unknown key "hots"`},
		{"no state database", "host: x\n", []string{"--roles", "dns", "--check"}, 1, "no state database configured"},
		{"bad max-jobs", "agent:\n  max-jobs:\n    backup: 2\n", []string{"--roles", "dns", "--check"}, 2, `unknown role "backup"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("FLEETMIGRATE_STATE_DSN", "")
			code, _, stderr := runAgent(t, tc.body, tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d %q; want %d and %q", code, stderr, tc.code, tc.want)
			}
		})
	}
}

// TestCheckReportsMariaDBOnlineReadiness: --check says what a MariaDB
// server lacks to be the source of a stream (its binary log, ROW format)
// and that a ready one is.
func TestCheckReportsMariaDBOnlineReadiness(t *testing.T) {
	fleettest.Integration(t)
	t.Parallel()
	sm := fleettest.SharedMariaDB(t)
	state := statetest.Upgraded(t, "mysql", sm.DSN(sm.NewDatabase(t)))
	noLog := fleettest.NewMariaDB(t, fleettest.MariaDBConfig{Args: []string{"--skip-log-bin", "--binlog-format=MIXED"}})
	ready := fleettest.SharedMariaDBAs(t, "source")
	ready.EnsurePeer(t, "check peer", "pe'er")
	fleettest.Exec(t, noLog.RootDB(t), "CREATE USER 'writer'@'%' IDENTIFIED BY 'w'", "GRANT SELECT, INSERT, REPLICATION SLAVE ON *.* TO 'writer'@'%'")
	for _, tc := range []struct {
		m    *fleettest.MariaDB
		tls  string // extra lines of the mysql section
		want []string
	}{
		{noLog, "", []string{"online source:  NOT READY: ", "keeps no binary log (log_bin is off)", "binlog_format is MIXED", "online dest:    ready",
			"mysql account:  GRANT ALL PRIVILEGES ON *.* TO `root`", "mysql account:  note: administrator of this server",
			"mysql peers:    note: other hosts' servers are read with the administrator account",
			"mysql tls:      TLSv1.", "(mysql.tls preferred, certificate not checked)  WARNING: encrypted but the server is not authenticated"}},
		{ready, fmt.Sprintf("  tls: verify-identity\n  ca-file: %s\n  peer-user: check peer\n  peer-password: \"pe'er\"\n", ready.CA.CertFile), []string{"online source:  ready", "online dest:    ready", "note: binary logs at",
			"(mysql.tls verify-identity, certificate checked against " + ready.CA.CertFile + ")\n",
			"mysql peers:    GRANT SELECT, ", "ON *.* TO `check peer`", "mysql peers:    check peer is read-only"}},
		{noLog, "  peer-user: writer\n  peer-password: w\n", []string{"mysql peers:    WARNING: writer may write (INSERT)"}},
	} {
		body := fmt.Sprintf("host: db-7\nstate:\n  driver: mysql\n  dsn: %q\nstorage:\n  dir: %q\nmysql:\n  address: %s\n  user: root\n%s",
			state.DSN, t.TempDir(), tc.m.Addr(), tc.tls)
		code, out, stderr := runAgent(t, body, "--roles", "sync,cutover", "--check")
		if code != 0 {
			t.Fatalf("check: %d %s %s", code, out, stderr)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: --check does not say %q:\n%s", tc.m.Addr(), w, out)
			}
		}
	}
}
