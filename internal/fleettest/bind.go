package fleettest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// BINDConfig configures StartBIND. The zero value serves an empty
// db.example.test zone.
type BINDConfig struct {
	// Zone defaults to "db.example.test".
	Zone string
	// Records are zone-file lines added after the SOA and NS records, with
	// names relative to the zone, e.g. "shop 300 IN A 127.42.0.7".
	Records []string
	// KeyName defaults to "migrate-key".
	KeyName string
	// Primary (host:port) makes the server a secondary of the zone,
	// transferring it from that primary. It polls the primary's SOA
	// about every second (refresh clamped), as a notify would make it do.
	Primary string
}

// BIND is a running BIND9 primary for one zone that takes dynamic updates
// signed with its TSIG key (hmac-sha256). named listens only on addresses an
// interface holds, so it uses 127.0.0.1 with a port of its own.
type BIND struct {
	// Addr is host:port of the server (UDP and TCP).
	Addr string
	Zone string
	// KeyName, KeyAlgorithm and KeySecret (base64) form the TSIG key.
	KeyName      string
	KeyAlgorithm string
	KeySecret    string
	Dir          string

	proc    *process
	release func()
}

// StartBIND writes a configuration, zone file and key, and starts named in
// the foreground. Stop it with Stop.
func StartBIND(ctx context.Context, cfg BINDConfig) (*BIND, error) {
	named, err := findTool("named")
	if err != nil {
		return nil, err
	}
	if cfg.Zone == "" {
		cfg.Zone = "db.example.test"
	}
	cfg.Zone = strings.TrimSuffix(cfg.Zone, ".")
	if cfg.KeyName == "" {
		cfg.KeyName = "migrate-key"
	}
	port, release, err := allocPort("127.0.0.1")
	if err != nil {
		return nil, fmt.Errorf("bind: %w", err)
	}
	b := &BIND{
		Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Zone: cfg.Zone,
		KeyName: cfg.KeyName, KeyAlgorithm: "hmac-sha256", release: release,
	}
	ok := false
	defer func() {
		if !ok {
			release()
		}
	}()
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	b.KeySecret = base64.StdEncoding.EncodeToString(secret)
	if b.Dir, err = os.MkdirTemp("", "fleettest-bind-"); err != nil {
		return nil, err
	}
	zoneFile := filepath.Join(b.Dir, cfg.Zone+".zone")
	zoneStmt := fmt.Sprintf("zone %q { type primary; file %q; allow-update { key %q; }; allow-transfer { 127.0.0.0/8; }; };", cfg.Zone, zoneFile, b.KeyName)
	refresh := ""
	if cfg.Primary != "" {
		host, port, err := net.SplitHostPort(cfg.Primary)
		if err != nil {
			return nil, fmt.Errorf("bind: primary %q: %w", cfg.Primary, err)
		}
		zoneStmt = fmt.Sprintf("zone %q { type secondary; file %q; primaries { %s port %s; }; };", cfg.Zone, zoneFile, host, port)
		refresh = "min-refresh-time 1; max-refresh-time 1; min-retry-time 1; max-retry-time 1;"
	}
	var zone strings.Builder
	fmt.Fprintf(&zone, "$ORIGIN %s.\n$TTL 300\n", cfg.Zone)
	fmt.Fprintf(&zone, "@ IN SOA ns1.%s. hostmaster.%s. 1 3600 600 86400 60\n", cfg.Zone, cfg.Zone)
	fmt.Fprintf(&zone, "@ IN NS ns1.%s.\nns1 IN A 127.0.0.1\n", cfg.Zone)
	for _, r := range cfg.Records {
		zone.WriteString(r + "\n")
	}
	conf := fmt.Sprintf(`key %q { algorithm hmac-sha256; secret %q; };
controls { };
options {
	directory %q;
	listen-on port %d { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion no;
	pid-file %q;
	dnssec-validation no;
	notify no;
	%s
};
%s
`, b.KeyName, b.KeySecret, b.Dir, port, filepath.Join(b.Dir, "named.pid"), refresh, zoneStmt)
	if cfg.Primary == "" {
		if err := os.WriteFile(zoneFile, []byte(zone.String()), 0o644); err != nil {
			return nil, err
		}
	}
	confFile := filepath.Join(b.Dir, "named.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	args := []string{"-c", confFile, "-g"}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root")
	}
	if b.proc, err = startProcess("named "+b.Addr, filepath.Join(b.Dir, "named.log"), exec.Command(named, args...)); err != nil {
		_ = os.RemoveAll(b.Dir)
		return nil, err
	}
	if err := waitReady(ctx, b.proc, func(ctx context.Context) error {
		_, err := b.Query(ctx, b.Zone, dns.TypeSOA)
		return err
	}); err != nil {
		b.proc.kill()
		_ = removeDir(b.Dir)
		return nil, err
	}
	ok = true
	return b, nil
}

// NewBIND starts a private BIND9 server for t.
func NewBIND(t testing.TB, cfg BINDConfig) *BIND {
	t.Helper()
	return startForTest(t, func(ctx context.Context) (*BIND, error) { return StartBIND(ctx, cfg) })
}

// TSIG returns the key in the form miekg/dns clients take
// (map of FQDN key name to secret).
func (b *BIND) TSIG() map[string]string {
	return map[string]string{dns.Fqdn(b.KeyName): b.KeySecret}
}

// Query asks the server for name/qtype over TCP and returns the answer
// section; a non-success rcode is an error.
func (b *BIND) Query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Net: "tcp", Timeout: 2 * time.Second}
	r, _, err := c.ExchangeContext(ctx, m, b.Addr)
	if err != nil {
		return nil, err
	}
	if r.Rcode != dns.RcodeSuccess {
		return nil, fmt.Errorf("query %s %s: %s", name, dns.TypeToString[qtype], dns.RcodeToString[r.Rcode])
	}
	return r.Answer, nil
}

// AXFR transfers the whole zone from the server, in the server's order.
func (b *BIND) AXFR(ctx context.Context) ([]dns.RR, error) {
	m := new(dns.Msg)
	m.SetAxfr(dns.Fqdn(b.Zone))
	tr := &dns.Transfer{DialTimeout: 2 * time.Second, ReadTimeout: 5 * time.Second}
	ch, err := tr.In(m, b.Addr)
	if err != nil {
		return nil, fmt.Errorf("axfr %s from %s: %w", b.Zone, b.Addr, err)
	}
	var out []dns.RR
	for env := range ch {
		if env.Error != nil {
			return nil, fmt.Errorf("axfr %s from %s: %w", b.Zone, b.Addr, env.Error)
		}
		out = append(out, env.RR...)
	}
	return out, ctx.Err()
}

// Stop shuts named down and removes its directory.
func (b *BIND) Stop() error {
	return shutdown(&b.proc, syscall.SIGTERM, 15*time.Second, b.release, b.Dir)
}

// Down stops named (its zone and journal stay, as does its address); Up
// starts it again.
func (b *BIND) Down() error {
	if b.proc == nil {
		return errors.New("server is stopped for good")
	}
	return b.proc.stop(syscall.SIGTERM, 15*time.Second)
}

// Up starts named again after Down and waits until it answers.
func (b *BIND) Up(ctx context.Context) error {
	return bringUp(ctx, &b.proc, func(ctx context.Context) error {
		_, err := b.Query(ctx, b.Zone, dns.TypeSOA)
		return err
	})
}

// RotateKey gives the TSIG key a new secret (KeySecret), as an operator
// rotating it would: named restarts with it, and updates signed with the
// old secret are refused from then on.
func (b *BIND) RotateKey(ctx context.Context) error {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	next := base64.StdEncoding.EncodeToString(secret)
	confFile := filepath.Join(b.Dir, "named.conf")
	conf, err := os.ReadFile(confFile)
	if err != nil {
		return err
	}
	old := fmt.Sprintf("secret %q;", b.KeySecret)
	if !strings.Contains(string(conf), old) {
		return fmt.Errorf("bind: %s does not hold the current secret", confFile)
	}
	if err := b.Down(); err != nil {
		return err
	}
	if err := os.WriteFile(confFile, []byte(strings.Replace(string(conf), old, fmt.Sprintf("secret %q;", next), 1)), 0o600); err != nil {
		return err
	}
	b.KeySecret = next
	return b.Up(ctx)
}

// LogTail returns the last lines of named's log.
func (b *BIND) LogTail(lines int) string { return tailFile(filepath.Join(b.Dir, "named.log"), lines) }

func (b *BIND) describe() string { return "named " + b.Addr }

// Pause freezes the server (SIGSTOP): connections stay open and nothing
// answers, as a hung server or a black-holed network would. Resume
// continues it.
func (b *BIND) Pause() error { return b.proc.pause() }

// Resume continues a paused server.
func (b *BIND) Resume() error { return b.proc.resume() }
