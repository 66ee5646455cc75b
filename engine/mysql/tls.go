package mysql

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	mysqldrv "github.com/go-sql-driver/mysql"

	"github.com/fleetmigrate/fleetmigrate/engine"
)

// TLS modes of Options.TLS: MySQL's --ssl-mode, less VERIFY_CA (MariaDB's
// tools cannot check a certificate's CA without its name).
const (
	// TLSDisabled: plaintext. A server that requires secure transport
	// refuses every connection.
	TLSDisabled = "disabled"
	// TLSPreferred (the default): TLS when the server offers it, without
	// checking its certificate; plaintext when it does not. Protects from
	// an observer on the network, not from one who can reroute it.
	TLSPreferred = "preferred"
	// TLSRequired: TLS or no connection; the certificate is not checked.
	TLSRequired = "required"
	// TLSVerifyIdentity: TLS, the certificate signed by a CA of CAFile
	// (the system's CAs without one) and issued for the name or address
	// the server is reached by.
	TLSVerifyIdentity = "verify-identity"
)

// TLSModes lists the modes, for messages.
var TLSModes = []string{TLSDisabled, TLSPreferred, TLSRequired, TLSVerifyIdentity}

// CheckTLS reports whether mode and caFile make a valid setting (the
// configuration's check; Open checks again).
func CheckTLS(mode, caFile string) error {
	switch mode {
	case "", TLSDisabled, TLSPreferred, TLSRequired, TLSVerifyIdentity:
	default:
		return fmt.Errorf("mysql tls %q: want one of %s", mode, strings.Join(TLSModes, ", "))
	}
	if caFile != "" {
		if _, err := loadCA(caFile); err != nil {
			return err
		}
	}
	return nil
}

// tlsMode is o.TLS with its default.
func (o Options) tlsMode() string {
	if o.TLS == "" {
		return TLSPreferred
	}
	return o.TLS
}

// clientTLS is how connections to one server use TLS.
type clientTLS struct {
	mode   string
	caFile string
	// cfg is nil for plaintext (mode disabled, or a Unix socket: local,
	// and counted as secure by require_secure_transport).
	cfg *tls.Config
}

// tlsFor is the TLS of connections to srv under o.
func (o Options) tlsFor(srv engine.Server) (clientTLS, error) {
	t := clientTLS{mode: o.tlsMode(), caFile: o.CAFile}
	if err := CheckTLS(o.TLS, ""); err != nil {
		return t, engine.Permanentf("mysql server %s: %v", srv, err)
	}
	if t.mode == TLSDisabled || strings.HasPrefix(srv.Address, "/") {
		return t, nil
	}
	switch t.mode {
	case TLSPreferred, TLSRequired:
		t.cfg = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} //nolint:gosec // the modes that encrypt without checking, as documented
	case TLSVerifyIdentity:
		host, _, err := net.SplitHostPort(srv.Address)
		if err != nil {
			host = srv.Address
		}
		t.cfg = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
		if o.CAFile != "" {
			pool, err := loadCA(o.CAFile)
			if err != nil {
				return t, engine.Permanentf("mysql server %s: %v", srv, err)
			}
			t.cfg.RootCAs = pool
		}
	}
	return t, nil
}

// apply sets t on a driver configuration.
func (t clientTLS) apply(cfg *mysqldrv.Config) {
	if t.cfg == nil {
		return
	}
	cfg.TLS = t.cfg.Clone()
	cfg.AllowFallbackToPlaintext = t.mode == TLSPreferred
}

// CA bundles are read once per path.
var caCache sync.Map // path → *x509.CertPool

// loadCA reads a PEM bundle of CA certificates.
func loadCA(path string) (*x509.CertPool, error) {
	if p, ok := caCache.Load(path); ok {
		return p.(*x509.CertPool), nil
	}
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("mysql ca-file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("mysql ca-file %s holds no PEM certificate", path)
	}
	caCache.Store(path, pool)
	return pool, nil
}

// noTLSAtServer is what go-mysql says when TLS is required and the server
// does not offer it.
const noTLSAtServer = "does not support TLS"

// tlsError explains a connection's TLS failure to srv: which server, what
// is wrong, what to change. It returns nil if err is not one. A failed
// check of the certificate and a server without TLS are permanent: no
// retry changes them.
func (t clientTLS) tlsError(srv engine.Server, err error) error {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		verify   *tls.CertificateVerificationError
	)
	ca := "the system's CAs (mysql.ca-file is not set)"
	if t.caFile != "" {
		ca = "mysql.ca-file (" + t.caFile + ")"
	}
	switch {
	case errors.As(err, &hostname):
		return engine.Permanentf("mysql server %s: its TLS certificate is not for the address it is reached by (%v; it is for %s): reach it by a name or address its certificate holds (that agent's mysql.advertise-address), or reissue the certificate for it; mysql.tls %s checks the name", srv, hostname, certNames(hostname.Certificate), t.mode)
	case errors.As(err, &unknown):
		return engine.Permanentf("mysql server %s: its TLS certificate is not signed by a CA of %s (%v): add the CA that signed it, or give the server a certificate from this one", srv, ca, unknown)
	case errors.As(err, &invalid):
		return engine.Permanentf("mysql server %s: its TLS certificate is not valid (%v): renew it", srv, invalid)
	case errors.As(err, &verify):
		return engine.Permanentf("mysql server %s: its TLS certificate was refused (%v): check it against %s", srv, verify, ca)
	case errors.Is(err, mysqldrv.ErrNoTLS), strings.Contains(err.Error(), noTLSAtServer):
		return engine.Permanentf("mysql server %s does not offer TLS and mysql.tls is %s: give the server a certificate (ssl_cert, ssl_key: docs/security.md), or set mysql.tls: preferred to allow plaintext", srv, t.mode)
	case isSecureTransportRequired(err):
		return engine.Permanentf("mysql server %s requires TLS (require_secure_transport) and mysql.tls is %s: set mysql.tls to preferred, required or verify-identity", srv, t.mode)
	}
	return nil
}

// certNames lists the names and addresses a certificate is for.
func certNames(c *x509.Certificate) string {
	if c == nil {
		return "no name"
	}
	names := slices.Clone(c.DNSNames)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		return "no name (common name " + strconv.Quote(c.Subject.CommonName) + " only)"
	}
	return strings.Join(names, ", ")
}

// isSecureTransportRequired reports the server's refusal of a plaintext
// connection (MySQL's error 3159; MariaDB says it in 1045's place on some
// versions: its text is checked).
func isSecureTransportRequired(err error) bool {
	return errNo(err) == 3159 || strings.Contains(err.Error(), "insecure transport")
}

// SessionTLS is the TLS of one session, as the server sees it.
type SessionTLS struct {
	Version, Cipher string
}

// Encrypted reports whether the session uses TLS.
func (t SessionTLS) Encrypted() bool { return t.Cipher != "" }

func (t SessionTLS) String() string {
	if !t.Encrypted() {
		return "plaintext"
	}
	return t.Version + " " + t.Cipher
}

// SessionTLS asks the server how a session of the pool is secured (its
// Ssl_version and Ssl_cipher): what migrate-agent --check reports, and
// what tells the tools to use TLS in mode preferred. The answer is kept:
// every session of the pool connects alike.
func (s *Server) SessionTLS(ctx context.Context) (SessionTLS, error) {
	s.tlsMu.Lock()
	defer s.tlsMu.Unlock()
	if s.tlsSeen != nil {
		return *s.tlsSeen, nil
	}
	var t SessionTLS
	rows, err := s.db.QueryContext(ctx, "SHOW SESSION STATUS WHERE Variable_name IN ('Ssl_version', 'Ssl_cipher')")
	if err != nil {
		return t, fmt.Errorf("read the TLS of a session at %s: %w", s, err)
	}
	defer rows.Close()
	for rows.Next() {
		var name, value string
		if err := rows.Scan(&name, &value); err != nil {
			return t, fmt.Errorf("read the TLS of a session at %s: %w", s, err)
		}
		switch strings.ToLower(name) {
		case "ssl_version":
			t.Version = value
		case "ssl_cipher":
			t.Cipher = value
		}
	}
	if err := rows.Err(); err != nil {
		return t, fmt.Errorf("read the TLS of a session at %s: %w", s, err)
	}
	s.tlsSeen = &t
	return t, nil
}

// TLSMode is the mode connections to this server were opened with.
func (s *Server) TLSMode() string { return s.tls.mode }

// toolTLS is the TLS part of the tools' option file, in the options of
// the server's family: MariaDB's tools take ssl, ssl-ca and
// ssl-verify-server-cert; MySQL's take ssl-mode. In mode preferred the
// tools use TLS if the engine's own sessions do.
func (s *Server) toolTLS(ctx context.Context) (string, error) {
	if strings.HasPrefix(s.srv.Address, "/") {
		return "", nil
	}
	mode := s.tls.mode
	if mode == TLSPreferred {
		seen, err := s.SessionTLS(ctx)
		if err != nil {
			return "", err
		}
		mode = TLSDisabled
		if seen.Encrypted() {
			mode = TLSRequired
		}
	}
	var b strings.Builder
	if s.family == MySQL {
		fmt.Fprintf(&b, "ssl-mode=%s\n", strings.ToUpper(strings.ReplaceAll(mode, "-", "_")))
		if mode == TLSVerifyIdentity && s.tls.caFile != "" {
			fmt.Fprintf(&b, "ssl-ca=%s\n", optionValue(s.tls.caFile))
		}
		return b.String(), nil
	}
	switch mode {
	case TLSDisabled:
		b.WriteString("skip-ssl\n")
	case TLSRequired:
		// MariaDB 11.4's tools check the certificate by default.
		b.WriteString("ssl\nskip-ssl-verify-server-cert\n")
	case TLSVerifyIdentity:
		b.WriteString("ssl\nssl-verify-server-cert\n")
		if s.tls.caFile != "" {
			fmt.Fprintf(&b, "ssl-ca=%s\n", optionValue(s.tls.caFile))
		}
	}
	return b.String(), nil
}

// startBinlog reads srv's binary log from pos as a replica does, with cfg
// and t's TLS; in mode preferred, plaintext if the server offers no TLS.
// The caller closes the syncer.
func (t clientTLS) startBinlog(srv engine.Server, cfg replication.BinlogSyncerConfig, pos gomysql.Position) (*replication.BinlogSyncer, *replication.BinlogStreamer, error) {
	cfg.TLSConfig = nil
	if t.cfg != nil {
		cfg.TLSConfig = t.cfg.Clone()
	}
	syncer := replication.NewBinlogSyncer(cfg)
	stream, err := syncer.StartSync(pos)
	if err != nil && t.mode == TLSPreferred && cfg.TLSConfig != nil && strings.Contains(err.Error(), noTLSAtServer) {
		syncer.Close()
		cfg.TLSConfig = nil
		syncer = replication.NewBinlogSyncer(cfg)
		stream, err = syncer.StartSync(pos)
	}
	if err != nil {
		syncer.Close()
		if terr := t.tlsError(srv, err); terr != nil {
			return nil, nil, terr
		}
		return nil, nil, err
	}
	return syncer, stream, nil
}

// OwnGrants lists the privileges of the engine's own account (SHOW GRANTS,
// password hashes redacted): what migrate-agent --check reports.
func (s *Server) OwnGrants(ctx context.Context) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, "SHOW GRANTS")
	if err != nil {
		return nil, fmt.Errorf("read the grants of %q at %s: %w", s.srv.User, s, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var g string
		if err := rows.Scan(&g); err != nil {
			return nil, err
		}
		out = append(out, redactGrant(g))
	}
	return out, rows.Err()
}
