package sqlstore_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/statemachine/sqlstore"
)

// TestStateDatabaseOverVerifiedTLS: state.ca-file makes the connection to
// the state database TLS with the server's certificate and name checked,
// on both engines (the session is encrypted, as the server reports it);
// a CA that did not sign the certificate is refused, naming the server.
func TestStateDatabaseOverVerifiedTLS(t *testing.T) {
	fleettest.Integration(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	other, err := fleettest.NewCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ca, err := fleettest.NewCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	my := fleettest.SharedMariaDB(t)
	pg := fleettest.NewPostgres(t, fleettest.PostgresConfig{TLS: ca})
	for _, tc := range []struct {
		name, driver, dsn, caFile, encrypted string
	}{
		// The harness's DSNs ask for TLS without checking: ca-file is
		// what checks here.
		{"MariaDB", "mysql", strings.Replace(my.DSN(my.NewDatabase(t)), "tls=preferred", "tls=true", 1), my.CA.CertFile,
			"SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'SSL_CIPHER'"},
		{"PostgreSQL", "postgres", strings.Replace(pg.DSN("postgres"), "sslmode=require&", "", 1), ca.CertFile,
			"SELECT cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, _, where, err := sqlstore.Connect(ctx, sqlstore.Config{Driver: tc.driver, DSN: tc.dsn, CAFile: tc.caFile})
			if err != nil {
				t.Fatalf("connect with the server's CA: %v", err)
			}
			defer db.Close()
			var cipher string
			if err := db.QueryRowContext(ctx, tc.encrypted).Scan(&cipher); err != nil || cipher == "" {
				t.Errorf("%s: the session's cipher as the server reports it: %q, %v", where, cipher, err)
			}
			_, _, _, err = sqlstore.Connect(ctx, sqlstore.Config{Driver: tc.driver, DSN: tc.dsn, CAFile: other.CertFile})
			if err == nil || !strings.Contains(err.Error(), where) || !strings.Contains(err.Error(), "certificate") {
				t.Errorf("another CA: want an error naming %s and the certificate, got %v", where, err)
			}
		})
	}
}
