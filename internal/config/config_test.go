package config_test

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fleetmigrate/fleetmigrate/internal/config"
)

func TestExampleLoadsAndDocumentsEveryKey(t *testing.T) {
	t.Setenv("FLEETMIGRATE_DB_PASSWORD", "p@ss:w/rd#1")
	t.Setenv("FLEETMIGRATE_S3_ACCESS_KEY", "AKIA")
	t.Setenv("FLEETMIGRATE_S3_SECRET_KEY", "s3cret")
	t.Setenv("FLEETMIGRATE_LINK_SECRET", "0123456789abcdef0123456789abcdef")
	t.Setenv("FLEETMIGRATE_MYSQL_PASSWORD", `my "sql" pa$$`)
	t.Setenv("FLEETMIGRATE_MYSQL_PEER_PASSWORD", `re'ad only`)
	t.Setenv("FLEETMIGRATE_POSTGRES_PASSWORD", `pg: 'pa\ss'`)
	t.Setenv("FLEETMIGRATE_POSTGRES_PEER_PASSWORD", `pg re'ad`)
	t.Setenv("FLEETMIGRATE_TSIG_SECRET", "c2VjcmV0")
	path := filepath.Join("..", "..", "deploy", "config.example.yaml")
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("deploy/config.example.yaml: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.MySQL.Password != `my "sql" pa$$` || cfg.MySQL.PeerUser != "fleetmigrate_peer" || cfg.MySQL.PeerPassword != `re'ad only` || cfg.MySQL.AdvertiseAddress != "10.1.2.17:3306" || cfg.MySQL.TLS != "verify-identity" || cfg.MySQL.CAFile == "" {
		t.Errorf("mysql section: %+v", cfg.MySQL)
	}
	if cfg.Postgres.Password != `pg: 'pa\ss'` || cfg.Postgres.PeerUser != "fleetmigrate_peer" || cfg.Postgres.PeerPassword != `pg re'ad` || cfg.Postgres.AdvertiseAddress != "10.1.2.17:5432" || cfg.Postgres.ParallelAboveMiB != 512 || cfg.Postgres.Jobs != 2 {
		t.Errorf("postgres section: %+v", cfg.Postgres)
	}
	if d := cfg.DNS; d.KeySecret != "c2VjcmV0" || len(d.Zones) != 1 || len(d.Zones[0].Secondaries) != 2 || d.MaxBatch != 50 || !d.Configured() {
		t.Errorf("dns section: %+v", d)
	}
	if !strings.Contains(cfg.State.DSN, ":p@ss:w/rd#1@") {
		t.Errorf("password not expanded: %q", cfg.State.DSN)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	for _, key := range keyPaths(reflect.TypeOf(config.Config{}), "") {
		if !hasPath(doc, key) {
			t.Errorf("deploy/config.example.yaml does not document %s", key)
		}
	}
}

func keyPaths(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if f.Type.Kind() == reflect.Struct {
			out = append(out, keyPaths(f.Type, prefix+name+".")...)
		} else {
			out = append(out, prefix+name)
		}
	}
	return out
}

func hasPath(doc map[string]any, path string) bool {
	head, rest, more := strings.Cut(path, ".")
	v, ok := doc[head]
	if !ok || !more {
		return ok
	}
	m, ok := v.(map[string]any)
	return ok && hasPath(m, rest)
}

func TestStrictAndClear(t *testing.T) {
	cases := []struct {
		name, yaml, want string
	}{
		{"unknown top-level key", "host: a\nhosts: b\n", `line 2: unknown key "hosts"`},
		{"unknown nested key", "state:\n  driver: mysql\n  dns: x\n", `line 3: unknown key "dns" in state`},
		{"wrong type", "state:\n  max-open-conns: many\n", "state.max-open-conns (line 2): cannot unmarshal !!str `many`"},
		{"wrong type in a list", "agent:\n  roles: [dump]\n  poll-interval: often\n", "agent.poll-interval (line 3): cannot unmarshal !!str `often` into time.Duration"},
		{"unset variable", "state:\n  dsn: \"${FLEETMIGRATE_SURELY_UNSET_VAR}\"\n", "line 2: environment variable FLEETMIGRATE_SURELY_UNSET_VAR is not set"},
		{"bad syntax", "state: [\n", "line"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse(strings.NewReader(tc.yaml), "test.yaml")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "test.yaml") {
				t.Errorf("error does not name the file: %v", err)
			}
		})
	}
}

func TestEnvExpansion(t *testing.T) {
	t.Setenv("FM_PORT", "5433")
	t.Setenv("FM_SECRET", "a'b\"c: d # e")
	cfg, err := config.Parse(strings.NewReader("state:\n  dsn: \"host=x port=${FM_PORT} password='${FM_SECRET}' cost=$$5\"\n  max-open-conns: 3\n"), "t")
	if err != nil {
		t.Fatal(err)
	}
	if want := `host=x port=5433 password='a'b"c: d # e' cost=$5`; cfg.State.DSN != want {
		t.Errorf("dsn %q, want %q", cfg.State.DSN, want)
	}
	if cfg.State.MaxOpenConns != 3 {
		t.Errorf("max-open-conns %d", cfg.State.MaxOpenConns)
	}
}

func TestValidate(t *testing.T) {
	cfg := config.New()
	cfg.State.DSN = "fleet:x@tcp(127.0.0.1:3306)/fleet"
	if err := cfg.Validate(); err != nil || cfg.State.Driver != "mysql" {
		t.Fatalf("driver %q, %v", cfg.State.Driver, err)
	}
	cfg = config.New()
	cfg.State.Driver, cfg.Log.Format, cfg.Log.Level, cfg.State.MaxOpenConns = "oracle", "xml", "loud", 0
	cfg.Storage.Backend, cfg.Storage.Compression, cfg.Storage.Retention = "tape", "ultra", 0
	cfg.Agent.HangTimeout = 2 * time.Second
	cfg.Online.StallTimeout, cfg.Online.CutoverTimeout = 3*time.Second, 0
	cfg.MySQL.TLS = "verify-ca"
	cfg.MySQL.PeerUser, cfg.Postgres.PeerUser = cfg.MySQL.User, cfg.Postgres.User
	err := cfg.Validate()
	for _, want := range []string{`mysql.tls "verify-ca"`, "mysql.peer-user is mysql.user", "postgres.peer-user is postgres.user", "state.driver", "log.format", "log.level", "max-open-conns", "storage.backend", "storage.compression", "storage.retention", "agent.hang-timeout 2s",
		"online.stall-timeout 3s", "online: cutover-timeout 0s"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validation error %v does not mention %s", err, want)
		}
	}
}

func TestFlagsOverrideAndRefusePasswords(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(path, []byte("host: from-file\nstate:\n  dsn: postgres://u@file/db\nlog:\n  level: warn\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FLEETMIGRATE_STATE_DSN", "")
	t.Setenv("LOG_LEVEL", "")
	load := func(args ...string) (config.Config, error) {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		f := config.RegisterFlags(fs)
		if err := fs.Parse(append([]string{"--config", path}, args...)); err != nil {
			t.Fatal(err)
		}
		return f.Load()
	}
	cfg, err := load("--host", "From-Flag", "--log-level", "debug")
	if err != nil || cfg.Host != "from-flag" || cfg.Log.Level != "debug" || cfg.State.DSN != "postgres://u@file/db" || cfg.State.Driver != "postgres" {
		t.Fatalf("%+v, %v", cfg, err)
	}
	for _, dsn := range []string{"postgres://u:secret@h/db", "host=h password=secret", "u:secret@tcp(h:3306)/db"} {
		if _, err := load("--state-dsn", dsn); err == nil || strings.Contains(err.Error(), "secret") {
			t.Errorf("--state-dsn %q: %v; want a refusal that does not echo the password", dsn, err)
		}
	}
	if _, err := load("--state-dsn", "u@tcp(h:3306)/db"); err != nil {
		t.Errorf("password-less DSN refused: %v", err)
	}
}
