package mysql_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/mysql"
	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

// caBundle writes one PEM file with the CAs of the given servers (each
// test server has a CA of its own; a fleet's ca-file holds every CA that
// signs its servers).
func caBundle(t *testing.T, ms ...*fleettest.MariaDB) string {
	t.Helper()
	var all []byte
	for _, m := range ms {
		b, err := os.ReadFile(m.CA.CertFile)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	f := filepath.Join(t.TempDir(), "fleet-ca.pem")
	if err := os.WriteFile(f, all, 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// A migration with every connection verified: the engine's sessions, the
// dump and client tools, the checksums, the binary log read. The servers
// require TLS; a connection without it would be refused.
func TestTLSVerifyIdentity(t *testing.T) {
	src0, dst0 := fleet(t)
	t.Parallel()
	bundle := caBundle(t, src0.m, dst0.m)
	verified := func(s *side) *side {
		return &side{name: s.name, m: s.m, root: s.root, srv: openServer(t, s.m, s.name, mysql.Options{TLS: mysql.TLSVerifyIdentity, CAFile: bundle, ParallelAbove: 1})}
	}
	src, dst := verified(src0), verified(dst0)
	for _, s := range []*side{src, dst} {
		seen, err := s.srv.SessionTLS(ctx(t))
		if err != nil || !seen.Encrypted() || !strings.HasPrefix(seen.Version, "TLSv1.") {
			t.Fatalf("%s: the engine's session, as the server reports it: %v, %v", s.name, seen, err)
		}
	}

	// Dump (mariadb-dump in parts), import (sessions), verify: each
	// would fail against a server requiring TLS if it went without.
	db := name("tls_")
	users := shop(t, src, db)
	migrate(t, src, dst, db)
	owner := customer(t, dst.m, users.owner, users.ownerPass, db, "")
	if got := rows(t, owner, "SELECT COUNT(*) FROM "+ident.QuoteMySQL(db)+".items"); len(got) != 1 || got[0] == `"0"` {
		t.Errorf("the copy, read as its owner: %v", got)
	}

	// The binary log, read as a replica over a verified connection.
	q := ident.QuoteMySQL(db)
	exec(t, src.root, "CREATE TABLE "+q+".tls_keys (id INT PRIMARY KEY)")
	keyed, err := src.srv.Keyed(ctx(t), db)
	if err != nil {
		t.Fatal(err)
	}
	from, err := src.srv.BinlogNow(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	exec(t, src.root, "INSERT INTO "+q+".tls_keys VALUES (42)")
	to, err := src.srv.BinlogNow(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	got, err := src.srv.ChangedKeysBetween(ctx(t), db, keyed, from, to, 4343, 100)
	if err != nil {
		t.Fatalf("the binary log over TLS: %v", err)
	}
	if l := got.List("tls_keys"); !slices.Equal(l, []string{"42"}) {
		t.Errorf("keys read from the binary log over TLS: %v", l)
	}
}

// Wrong CA, wrong name, TLS off against a server that requires it, TLS
// required from one that has none: each refused, permanently, with an
// error that names the server and says what to change.
func TestTLSRefusals(t *testing.T) {
	fleettest.Integration(t)
	t.Parallel()
	src := serverAs(t, "source")
	at := func(m *fleettest.MariaDB, host string) engine.Server {
		return engine.Server{Host: host, Address: m.Addr(), User: adminUser, Password: adminPass}
	}
	refused := func(what string, srv engine.Server, opt mysql.Options, want ...string) {
		t.Helper()
		s, err := mysql.Open(ctx(t), srv, opt)
		if err == nil {
			_ = s.Close()
			t.Errorf("%s: opened", what)
			return
		}
		if !errors.Is(err, engine.ErrPermanent) || strings.Contains(err.Error(), adminPass) {
			t.Errorf("%s: want a permanent error without the password: %v", what, err)
		}
		for _, w := range append(want, srv.String()) {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: the error does not say %q: %v", what, w, err)
			}
		}
	}
	other, err := fleettest.NewCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	refused("a CA that did not sign the certificate", at(src.m, "source"), mysql.Options{TLS: mysql.TLSVerifyIdentity, CAFile: other.CertFile},
		"not signed by a CA of mysql.ca-file ("+other.CertFile+")")
	// MariaDB refuses a plaintext login under require_secure_transport as
	// it refuses a wrong password: the error says both.
	refused("TLS off", at(src.m, "source"), mysql.Options{TLS: mysql.TLSDisabled}, "mysql.tls is disabled", "require_secure_transport")
	refused("a mode that does not exist", at(src.m, "source"), mysql.Options{TLS: "verify-ca"}, `mysql tls "verify-ca"`)

	misnamed := fleettest.NewMariaDB(t, fleettest.MariaDBConfig{CertHost: "db.example.net"})
	misnamed.EnsureAdmin(t, adminUser, adminPass)
	refused("a certificate for another name", at(misnamed, "misnamed"), mysql.Options{TLS: mysql.TLSVerifyIdentity, CAFile: misnamed.CA.CertFile},
		"not for the address it is reached by", "db.example.net")
	// Required encrypts without checking the name.
	s := openServer(t, misnamed, "misnamed", mysql.Options{TLS: mysql.TLSRequired})
	if seen, err := s.SessionTLS(ctx(t)); err != nil || !seen.Encrypted() {
		t.Errorf("required: %v, %v", seen, err)
	}

	plain := fleettest.NewMariaDB(t, fleettest.MariaDBConfig{Plaintext: true})
	plain.EnsureAdmin(t, adminUser, adminPass)
	refused("TLS required of a server without it", at(plain, "plain"), mysql.Options{TLS: mysql.TLSRequired}, "does not offer TLS")
}

// Preferred (the default) migrates from a server without TLS to one that
// requires it: plaintext where there is no choice, TLS where there is.
func TestTLSPreferredMixedFleet(t *testing.T) {
	fleettest.Integration(t)
	t.Parallel()
	plain := fleettest.NewMariaDB(t, fleettest.MariaDBConfig{Plaintext: true})
	plain.EnsureAdmin(t, adminUser, adminPass)
	src := &side{name: "plain", m: plain, root: plain.RootDB(t), srv: openServer(t, plain, "plain", mysql.Options{ParallelAbove: 1})}
	dst := serverAs(t, "destination")
	if seen, err := src.srv.SessionTLS(ctx(t)); err != nil || seen.Encrypted() {
		t.Errorf("a server without TLS: %v, %v", seen, err)
	}
	if seen, err := dst.srv.SessionTLS(ctx(t)); err != nil || !seen.Encrypted() {
		t.Errorf("a server with TLS: %v, %v", seen, err)
	}
	db := name("tls_mixed_")
	shop(t, src, db)
	migrate(t, src, dst, db)
}

// A stream whose source's certificate the destination cannot verify stops
// at once, broken, its record saying why (the row's step then fails the
// row with it), instead of retrying a connection no retry can make.
func TestStreamRefusesACertificateItCannotVerify(t *testing.T) {
	src, dst0 := fleet(t)
	t.Parallel()
	// The destination trusts its own server's CA only: not the source's.
	dst := &side{name: dst0.name, m: dst0.m, root: dst0.root,
		srv: openServer(t, dst0.m, dst0.name, mysql.Options{TLS: mysql.TLSVerifyIdentity, CAFile: caBundle(t, dst0.m)})}
	db := name("tls_stream_")
	shop(t, src, db)
	s, err := src.srv.Inspect(ctx(t), db)
	if err != nil {
		t.Fatal(err)
	}
	st, _, _, ran := copyAndStream(t, src, dst, s)
	select {
	case err := <-ran:
		if err == nil || !strings.Contains(err.Error(), "not signed by a CA of mysql.ca-file") {
			t.Errorf("the stream stopped with %v", err)
		}
	case <-ctx(t).Done():
		t.Fatal("the stream did not stop")
	}
	rec, err := dst.srv.StreamRecordOf(ctx(t), st.Name)
	if err != nil || !strings.Contains(rec.Error, "its TLS certificate is not signed by a CA of mysql.ca-file") || !strings.Contains(rec.Error, src.m.Addr()) {
		t.Errorf("the stream's record: %q, %v", rec.Error, err)
	}
}
