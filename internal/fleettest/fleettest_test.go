package fleettest_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	_ "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/miekg/dns"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
)

func TestMain(m *testing.M) { fleettest.Main(m) }

func TestMariaDB(t *testing.T) {
	t.Parallel()
	a := fleettest.NewMariaDB(t, fleettest.MariaDBConfig{})
	b := fleettest.NewMariaDB(t, fleettest.MariaDBConfig{})
	if a.Host == b.Host || a.Port != b.Port {
		t.Fatalf("want distinct hosts on one port, got %s and %s", a.Addr(), b.Addr())
	}
	ctx := context.Background()
	// Each server holds its own data: write a different value to each and
	// read both back.
	for i, srv := range []*fleettest.MariaDB{a, b} {
		db, err := sql.Open("mysql", srv.DSN(""))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		mustExec(t, db, "CREATE DATABASE probe")
		mustExec(t, db, "CREATE TABLE probe.t (v INT)")
		mustExec(t, db, "INSERT INTO probe.t VALUES (?)", i+1)
	}
	for i, srv := range []*fleettest.MariaDB{a, b} {
		db, _ := sql.Open("mysql", srv.DSN("probe"))
		defer db.Close()
		var v int
		if err := db.QueryRowContext(ctx, "SELECT v FROM t").Scan(&v); err != nil || v != i+1 {
			t.Fatalf("%s: read back %d, %v; want %d", srv.Addr(), v, err, i+1)
		}
	}
	// The server listens only on its own address.
	if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", "13306"), time.Second); err == nil {
		_ = c.Close()
		t.Errorf("something answers on 127.0.0.1:13306; servers must bind their own address only")
	}
}

func TestMariaDBStartFailureSaysWhy(t *testing.T) {
	fleettest.Integration(t)
	t.Parallel()
	_, err := fleettest.StartMariaDB(context.Background(), fleettest.MariaDBConfig{Args: []string{"--no-such-option-here"}})
	if err == nil {
		t.Fatal("started with a bogus option")
	}
	if !strings.Contains(err.Error(), "no-such-option-here") {
		t.Errorf("error does not show the server's complaint: %v", err)
	}
}

func TestSharedMariaDBNewDatabase(t *testing.T) {
	t.Parallel()
	srv := fleettest.SharedMariaDB(t)
	if again := fleettest.SharedMariaDB(t); again != srv {
		t.Fatal("SharedMariaDB started a second server")
	}
	n1, n2 := srv.NewDatabase(t), srv.NewDatabase(t)
	if n1 == n2 {
		t.Fatal("NewDatabase returned the same name twice")
	}
	db, _ := sql.Open("mysql", srv.DSN(n1))
	defer db.Close()
	mustExec(t, db, "CREATE TABLE t (id INT)")
}

func TestPostgres(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := fleettest.NewPostgres(t, fleettest.PostgresConfig{Password: "s3cret pass'word"})
	c, err := pgx.Connect(ctx, p.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var addr string
	if err := c.QueryRow(ctx, "SELECT host(inet_server_addr())").Scan(&addr); err != nil || addr != p.Host {
		t.Fatalf("server address %q, %v; want %s", addr, err, p.Host)
	}
	var method string
	if err := c.QueryRow(ctx, "SHOW password_encryption").Scan(&method); err != nil || method != "scram-sha-256" {
		t.Fatalf("password_encryption %q, %v", method, err)
	}
	// A wrong password is refused: authentication is real.
	bad := strings.Replace(p.DSN("postgres"), "s3cret", "wrong", 1)
	if c2, err := pgx.Connect(ctx, bad); err == nil {
		c2.Close(ctx)
		t.Fatal("wrong password accepted")
	}
	name := p.NewDatabase(t)
	c3, err := pgx.Connect(ctx, p.DSN(name))
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close(ctx)
	if _, err := c3.Exec(ctx, "CREATE TABLE t (v int); INSERT INTO t VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	var v int
	if err := c3.QueryRow(ctx, "SELECT v FROM t").Scan(&v); err != nil || v != 42 {
		t.Fatalf("read back %d, %v", v, err)
	}
}

func TestBIND(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := fleettest.NewBIND(t, fleettest.BINDConfig{Records: []string{"shop 300 IN A 127.42.0.7"}})
	ans, err := b.Query(ctx, "shop."+b.Zone, dns.TypeA)
	if err != nil || len(ans) != 1 || ans[0].(*dns.A).A.String() != "127.42.0.7" {
		t.Fatalf("seeded record: %v, %v", ans, err)
	}

	update := func(secret string) (*dns.Msg, error) {
		m := new(dns.Msg)
		m.SetUpdate(dns.Fqdn(b.Zone))
		old, _ := dns.NewRR("shop." + b.Zone + ". 300 IN A 127.42.0.7")
		neu, _ := dns.NewRR("shop." + b.Zone + ". 300 IN A 127.42.0.8")
		m.Remove([]dns.RR{old})
		m.Insert([]dns.RR{neu})
		c := &dns.Client{Net: "tcp", Timeout: 2 * time.Second}
		if secret != "" {
			m.SetTsig(dns.Fqdn(b.KeyName), dns.HmacSHA256, 300, time.Now().Unix())
			c.TsigSecret = map[string]string{dns.Fqdn(b.KeyName): secret}
		}
		r, _, err := c.ExchangeContext(ctx, m, b.Addr)
		return r, err
	}
	// unsigned: refused
	if r, err := update(""); err != nil || r.Rcode != dns.RcodeRefused {
		t.Fatalf("unsigned update: %v, %v; want REFUSED", r, err)
	}
	// wrong key: refused with a TSIG error
	if r, err := update("d3Jvbmcgc2VjcmV0IHdyb25nIHNlY3JldCB3cm9uZyE="); err == nil && r.Rcode == dns.RcodeSuccess {
		t.Fatal("update signed with the wrong key was accepted")
	}
	// right key: applied, and the server answers the new address
	if r, err := update(b.KeySecret); err != nil || r.Rcode != dns.RcodeSuccess {
		t.Fatalf("signed update: %v, %v", r, err)
	}
	ans, err = b.Query(ctx, "shop."+b.Zone, dns.TypeA)
	if err != nil || len(ans) != 1 || ans[0].(*dns.A).A.String() != "127.42.0.8" {
		t.Fatalf("after update: %v, %v", ans, err)
	}
}

func TestS3(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := fleettest.NewS3(t, fleettest.S3Config{})
	c := s.Client()
	body := bytes.Repeat([]byte("fleet"), 1000)
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String("a/b.txt"), Body: bytes.NewReader(body)}); err != nil {
		t.Fatal(err)
	}
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String("a/b.txt")})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(out.Body)
	out.Body.Close()
	if !bytes.Equal(got, body) {
		t.Fatalf("read back %d bytes, want %d", len(got), len(body))
	}
	// A wrong secret is refused: signatures are checked.
	bad := s3.New(s3.Options{Region: s.Region, BaseEndpoint: aws.String(s.Endpoint), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(s.AccessKey, "wrong"+s.SecretKey, "")})
	_, err = bad.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String("a/b.txt")})
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("wrong secret: %v; want an S3 error", err)
	}
}

func mustExec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// TestReadProcStat reads this test process from /proc: its parent is the
// one the kernel reports, and its CPU time grows with work done.
func TestReadProcStat(t *testing.T) {
	before, err := fleettest.ReadProcStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if before.PPID != os.Getppid() {
		t.Errorf("ppid %d, want %d", before.PPID, os.Getppid())
	}
	// Busy until the process's CPU time moves on (on a loaded machine the
	// loop may get little of it: wait for it, do not time it).
	deadline := time.Now().Add(30 * time.Second)
	x := 0
	var after fleettest.ProcStat
	for {
		for range 1_000_000 {
			x++
		}
		if after, err = fleettest.ReadProcStat(os.Getpid()); err != nil {
			t.Fatal(err)
		}
		if after.CPU-before.CPU >= 0.1 || time.Now().After(deadline) {
			break
		}
	}
	if after.CPU-before.CPU < 0.1 {
		t.Errorf("CPU went from %.2f s to %.2f s over 30 s of busy loop (%d rounds)", before.CPU, after.CPU, x)
	}
	if _, err := fleettest.ReadProcStat(1 << 30); err == nil {
		t.Error("a process that does not exist was read")
	}
}

// TestProxy puts a proxy in front of a real MariaDB: queries go through;
// paused, they get no answer; cut, an open session fails and a new one
// works; slowed, a large result takes its time.
func TestProxy(t *testing.T) {
	t.Parallel()
	m := fleettest.SharedMariaDB(t)
	p, err := fleettest.StartProxy(m.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	db, err := sql.Open("mysql", "root@tcp("+p.Addr+")/?tls=preferred")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	one := func(c interface {
		QueryRowContext(context.Context, string, ...any) *sql.Row
	}, timeout time.Duration) error {
		qctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		var n int
		return c.QueryRowContext(qctx, "SELECT 1").Scan(&n)
	}
	if err := one(db, 10*time.Second); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	p.Pause()
	if err := one(conn, 2*time.Second); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("paused: %v, want no answer (deadline exceeded)", err)
	}
	p.Resume()
	if err := one(db, 10*time.Second); err != nil {
		t.Fatalf("resumed: %v", err)
	}

	conn2, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	if err := one(conn2, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := p.Cut(); n < 1 {
		t.Fatalf("cut %d connections", n)
	}
	if err := one(conn2, 10*time.Second); err == nil {
		t.Fatal("a cut session still answered")
	}
	if err := one(db, 10*time.Second); err != nil {
		t.Fatalf("a new session after the cut: %v", err)
	}

	p.Slow(128 << 10)
	start, before := time.Now(), p.Forwarded()
	var s string
	if err := db.QueryRowContext(ctx, "SELECT REPEAT('x', 256 * 1024)").Scan(&s); err != nil || len(s) != 256<<10 {
		t.Fatalf("slowed: %d bytes, %v", len(s), err)
	}
	if took := time.Since(start); took < time.Second || p.Forwarded()-before < 256<<10 {
		t.Fatalf("256 KiB at 128 KiB/s took %s (%d bytes forwarded)", took, p.Forwarded()-before)
	}
}

// TestMariaDBDiskFull: a data directory with 16 MiB free fills up (the
// server says the table is full) until GrowDisk gives it room. (With only
// a few MiB free, MariaDB 10.11 may crash instead: its undo log cannot grow
// either.)
func TestMariaDBDiskFull(t *testing.T) {
	t.Parallel()
	m := fleettest.NewMariaDB(t, fleettest.MariaDBConfig{DiskFree: 16 << 20})
	if free, err := m.DiskFree(); err != nil || free > 17<<20 {
		t.Fatalf("free after start: %d bytes, %v; want about 16 MiB", free, err)
	}
	db, err := sql.Open("mysql", m.DSN(""))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	for _, q := range []string{"CREATE DATABASE full_test", "CREATE TABLE full_test.t (id INT AUTO_INCREMENT PRIMARY KEY, s VARCHAR(4000))"} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	fill := func() error {
		for range 32 {
			if _, err := db.ExecContext(ctx, "INSERT INTO full_test.t (s) SELECT REPEAT('y', 4000) FROM full_test.seq_1_to_500"); err != nil {
				return err
			}
		}
		return nil
	}
	if err := fill(); err == nil || !strings.Contains(err.Error(), "is full") {
		t.Fatalf("64 MB into 16 MiB free: %v, want the table is full", err)
	}
	if err := m.GrowDisk(ctx, 256<<20); err != nil {
		t.Fatal(err)
	}
	if err := fill(); err != nil {
		t.Fatalf("after GrowDisk: %v", err)
	}
}
