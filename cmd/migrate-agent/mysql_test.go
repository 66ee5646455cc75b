package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
	"github.com/fleetmigrate/fleetmigrate/internal/statetest"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// TestMySQLStepsFromTheConfiguration: two migrate-agent processes whose
// configuration has a mysql section move a database (a row without a DNS
// name) from one server to the other, to Done: the handlers are
// registered, the destination is found through the endpoint the agent
// publishes, the password comes from the environment.
func TestMySQLStepsFromTheConfiguration(t *testing.T) {
	fleettest.Integration(t)
	t.Parallel()
	bin := fleettest.Build(t, ".")
	sm := fleettest.SharedMariaDB(t)
	state := statetest.Upgraded(t, "mysql", sm.DSN(sm.NewDatabase(t)))
	src, dst := fleettest.SharedMariaDBAs(t, "source"), fleettest.SharedMariaDBAs(t, "destination")
	const admin, pass = "agent admin", `s3cr"et$`
	src.EnsureAdmin(t, admin, pass)
	dst.EnsureAdmin(t, admin, pass)
	db := fmt.Sprintf("from config %d", time.Now().UnixNano())
	q := ident.QuoteMySQL(db)
	fleettest.Exec(t, src.RootDB(t), "CREATE DATABASE "+q, "CREATE TABLE "+q+".t (id INT PRIMARY KEY, v TEXT)",
		"INSERT INTO "+q+".t VALUES (1, 'one'), (2, 'two')")
	t.Cleanup(func() {
		_, _ = src.RootDB(t).Exec("DROP DATABASE IF EXISTS " + q)
		_, _ = dst.RootDB(t).Exec("DROP DATABASE IF EXISTS " + q)
	})
	dumps := t.TempDir()
	for _, s := range []struct {
		host  string
		m     *fleettest.MariaDB
		roles string
	}{{"src-host", src, "close,rollback"}, {"dst-host", dst, "dump,import"}} {
		cfg := filepath.Join(t.TempDir(), "agent.yaml")
		body := fmt.Sprintf("host: %s\nagent:\n  poll-interval: 100ms\n  lease: 5s\nstorage:\n  backend: file\n  dir: %s\n"+
			"mysql:\n  address: %s\n  user: %s\n  password: ${TEST_MYSQL_PASSWORD}\n", s.host, dumps, s.m.Addr(), admin)
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		fleettest.Start(t, bin, append(state.Env(), "TEST_MYSQL_PASSWORD="+pass), "--config", cfg, "--roles", s.roles)
	}
	store := state.Open(t)
	ctx := context.Background()
	if _, err := store.Plan(ctx, []statemachine.Planned{{Engine: statemachine.EngineMySQL, DatabaseName: db, Source: "src-host", Destination: "dst-host"}}, "test", false); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Promote(ctx, 1, "test"); err != nil {
		t.Fatal(err)
	}
	waitDone(t, store)
	var got string
	if err := dst.RootDB(t).QueryRow("SELECT GROUP_CONCAT(v ORDER BY id) FROM " + q + ".t").Scan(&got); err != nil || got != "one,two" {
		t.Fatalf("at the destination: %q %v", got, err)
	}
}

// waitDone waits until the store's only row is Done, failing the test if
// it fails or takes more than 90 s.
func waitDone(t *testing.T, store statemachine.Store) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		rows, err := store.List(context.Background(), statemachine.Filter{})
		if err != nil || len(rows) != 1 {
			t.Fatalf("list: %v %v", rows, err)
		}
		m := rows[0]
		if m.Status == statemachine.Done {
			return
		}
		if strings.HasSuffix(string(m.Status), "failed") || time.Now().After(deadline) {
			t.Fatalf("row is %q: %s", m.Status, m.LastError)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
