package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/postgres"
	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
	"github.com/fleetmigrate/fleetmigrate/internal/statetest"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// TestPostgresStepsFromTheConfiguration: two migrate-agent processes whose
// configuration has a postgres section move a PostgreSQL database (a row
// without a DNS name) to Done; its owner logs in at the destination with
// its original password.
func TestPostgresStepsFromTheConfiguration(t *testing.T) {
	fleettest.Integration(t)
	t.Parallel()
	postgresFromConfig(t, fleettest.SharedPostgresAs(t, "source"), fleettest.SharedPostgresAs(t, "destination"), "")
}

// TestPostgresOverTLS: the same with both clusters serving TLS from a
// private CA and the agents configured with sslmode verify-full and the
// CA's certificate: every session of the agents and of pg_dump/pg_restore
// is encrypted and the servers' certificates checked. An agent given
// another CA cannot connect.
func TestPostgresOverTLS(t *testing.T) {
	fleettest.Integration(t)
	t.Parallel()
	ca, err := fleettest.NewCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	src := fleettest.NewPostgres(t, fleettest.PostgresConfig{TLS: ca})
	dst := fleettest.NewPostgres(t, fleettest.PostgresConfig{TLS: ca})
	postgresFromConfig(t, src, dst, fmt.Sprintf("  sslmode: verify-full\n  sslrootcert: %s\n", ca.CertFile))
	for _, p := range []*fleettest.Postgres{src, dst} {
		log := p.LogTail(100000)
		plain, tls := 0, 0
		for _, l := range strings.Split(log, "\n") {
			if !strings.Contains(l, "connection authorized: user=agent admin") {
				continue
			}
			if strings.Contains(l, "SSL enabled") {
				tls++
			} else {
				plain++
			}
		}
		if tls == 0 || plain > 0 {
			t.Errorf("%s: %d sessions of the agent with TLS, %d without; want all with TLS", p.Addr(), tls, plain)
		}
	}
	other, err := fleettest.NewCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, err = postgres.Open(context.Background(), engine.Server{Host: "src", Address: src.Addr(), User: "postgres", Password: src.Password},
		postgres.Options{SSLMode: "verify-full", SSLRootCert: other.CertFile})
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("with another CA: %v, want a certificate error", err)
	}
}

// postgresFromConfig moves a database from src to dst with two
// migrate-agent processes whose postgres section ends with extra.
func postgresFromConfig(t *testing.T, src, dst *fleettest.Postgres, extra string) {
	bin := fleettest.Build(t, ".")
	sm := fleettest.SharedMariaDB(t)
	state := statetest.Upgraded(t, "mysql", sm.DSN(sm.NewDatabase(t)))
	const admin, pass = "agent admin", `s3cr"et$: \x`
	for _, p := range []*fleettest.Postgres{src, dst} {
		fleettest.PGExec(t, p.Root(t, "postgres"), "CREATE ROLE "+ident.QuotePostgres(admin)+" SUPERUSER LOGIN PASSWORD "+ident.QuotePostgresLiteral(pass))
	}
	n := time.Now().UnixNano()
	db, owner, ownerPass := fmt.Sprintf("from config %d", n), fmt.Sprintf("cfg owner %d", n), "owner's pw"
	fleettest.PGExec(t, src.Root(t, "postgres"), "CREATE ROLE "+ident.QuotePostgres(owner)+" LOGIN PASSWORD "+ident.QuotePostgresLiteral(ownerPass),
		"CREATE DATABASE "+ident.QuotePostgres(db)+" OWNER "+ident.QuotePostgres(owner))
	fleettest.PGExec(t, src.Connect(t, db, owner, ownerPass), "CREATE TABLE t (id int PRIMARY KEY, v text)", "INSERT INTO t VALUES (1, 'one'), (2, 'two')")
	dumps := t.TempDir()
	for _, s := range []struct {
		host  string
		p     *fleettest.Postgres
		roles string
	}{{"src-host", src, "close,rollback"}, {"dst-host", dst, "dump,import"}} {
		cfg := filepath.Join(t.TempDir(), "agent.yaml")
		body := fmt.Sprintf("host: %s\nagent:\n  poll-interval: 100ms\n  lease: 5s\nstorage:\n  backend: file\n  dir: %s\n"+
			"postgres:\n  address: %s\n  user: %s\n  password: ${TEST_PG_PASSWORD}\n  temp-dir: %s\n", s.host, dumps, s.p.Addr(), admin, t.TempDir()) + extra
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		fleettest.Start(t, bin, append(state.Env(), "TEST_PG_PASSWORD="+pass), "--config", cfg, "--roles", s.roles)
	}
	t.Cleanup(func() {
		for _, p := range []*fleettest.Postgres{src, dst} {
			c, err := p.Dial(context.Background(), "postgres", "postgres", p.Password)
			if err != nil {
				continue
			}
			_, _ = c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+ident.QuotePostgres(db)+" WITH (FORCE)")
			_, _ = c.Exec(context.Background(), "DROP ROLE IF EXISTS "+ident.QuotePostgres(owner))
			_, _ = c.Exec(context.Background(), "DROP ROLE IF EXISTS "+ident.QuotePostgres(admin))
			_ = c.Close(context.Background())
		}
	})
	store := state.Open(t)
	ctx := context.Background()
	if _, err := store.Plan(ctx, []statemachine.Planned{{Engine: statemachine.EnginePostgres, DatabaseName: db, Source: "src-host", Destination: "dst-host"}}, "test", false); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Promote(ctx, 1, "test"); err != nil {
		t.Fatal(err)
	}
	waitDone(t, store)
	var got string
	if err := dst.Connect(t, db, owner, ownerPass).QueryRow(ctx, "SELECT string_agg(v, ',' ORDER BY id) FROM t").Scan(&got); err != nil || got != "one,two" {
		t.Fatalf("at the destination: %q %v", got, err)
	}
}
