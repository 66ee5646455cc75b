package mysql

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/fleetmigrate/fleetmigrate/engine"
)

// The tools' option file carries the TLS options of the server's family
// for each mode; in preferred, what the engine's own session found.
func TestToolTLSOptions(t *testing.T) {
	srv := engine.Server{Host: "dst-1", Address: "10.0.0.1:3306"}
	for _, tc := range []struct {
		family, mode string
		seen         *SessionTLS // the engine's session, for preferred
		want         string
	}{
		{MariaDB, TLSDisabled, nil, "skip-ssl\n"},
		{MariaDB, TLSRequired, nil, "ssl\nskip-ssl-verify-server-cert\n"},
		{MariaDB, TLSVerifyIdentity, nil, "ssl\nssl-verify-server-cert\nssl-ca=\"/etc/ca dir/ca.pem\"\n"},
		{MariaDB, TLSPreferred, &SessionTLS{Version: "TLSv1.3", Cipher: "TLS_AES_256_GCM_SHA384"}, "ssl\nskip-ssl-verify-server-cert\n"},
		{MariaDB, TLSPreferred, &SessionTLS{}, "skip-ssl\n"},
		{MySQL, TLSDisabled, nil, "ssl-mode=DISABLED\n"},
		{MySQL, TLSRequired, nil, "ssl-mode=REQUIRED\n"},
		{MySQL, TLSVerifyIdentity, nil, "ssl-mode=VERIFY_IDENTITY\nssl-ca=\"/etc/ca dir/ca.pem\"\n"},
		{MySQL, TLSPreferred, &SessionTLS{Cipher: "x"}, "ssl-mode=REQUIRED\n"},
	} {
		s := &Server{srv: srv, family: tc.family, tls: clientTLS{mode: tc.mode, caFile: "/etc/ca dir/ca.pem"}, tlsSeen: tc.seen}
		got, err := s.toolTLS(context.Background())
		if err != nil || got != tc.want {
			t.Errorf("%s %s (session %v): %q, %v; want %q", tc.family, tc.mode, tc.seen, got, err, tc.want)
		}
	}
	// A socket is local: no TLS options at all.
	s := &Server{srv: engine.Server{Address: "/run/mysqld/mysqld.sock"}, family: MariaDB, tls: clientTLS{mode: TLSVerifyIdentity}}
	if got, err := s.toolTLS(context.Background()); err != nil || got != "" {
		t.Errorf("socket: %q, %v", got, err)
	}
}

// CheckTLS and tlsFor refuse a mode that does not exist, and a CA file
// that holds no certificate, naming the server.
func TestTLSSettings(t *testing.T) {
	if err := CheckTLS("verify-ca", ""); err == nil || !strings.Contains(err.Error(), "disabled, preferred, required, verify-identity") {
		t.Errorf("verify-ca: %v", err)
	}
	bad := t.TempDir() + "/ca.pem"
	if err := os.WriteFile(bad, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Options{TLS: TLSVerifyIdentity, CAFile: bad}.tlsFor(engine.Server{Host: "src-1", Address: "10.0.0.2:3306"})
	if err == nil || !strings.Contains(err.Error(), "src-1 (10.0.0.2:3306)") || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Errorf("a CA file without a certificate: %v", err)
	}
	tt, err := Options{}.tlsFor(engine.Server{Address: "db.example.net:3306"})
	if err != nil || tt.mode != TLSPreferred || tt.cfg == nil || !tt.cfg.InsecureSkipVerify {
		t.Errorf("the default: %+v, %v", tt, err)
	}
	tt, err = Options{TLS: TLSVerifyIdentity}.tlsFor(engine.Server{Address: "db.example.net:3306"})
	if err != nil || tt.cfg.ServerName != "db.example.net" || tt.cfg.InsecureSkipVerify || tt.cfg.RootCAs != nil {
		t.Errorf("verify-identity without a CA file (the system's CAs): %+v, %v", tt.cfg, err)
	}
}
