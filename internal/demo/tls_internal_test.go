package demo

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// A refused login is listed; a session refused a database (a closed
// source, by design) is not; only lines after the offset count.
func TestRefusedLogins(t *testing.T) {
	before := "2026-12-07  1:40:00 9 [Warning] Access denied for user 'early'@'127.0.0.1' (using password: YES)\n"
	after := "2026-12-07  2:17:22 1051 [Warning] Access denied for user 'user with space'@'%' to database 'Café Ünïcødé'\n" +
		"2026-12-07  2:17:23 1052 [Warning] Aborted connection 1052 to db: 'unconnected' user: 'unauthenticated' host: '127.0.0.1' (This connection closed normally without authentication)\n" +
		"2026-12-07  2:17:24 16 [Warning] Access denied for user 'fleet admin'@'127.0.0.1' (using password: YES)\n"
	path := filepath.Join(t.TempDir(), "error.log")
	if err := os.WriteFile(path, []byte(before+after), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := refusedLogins(path, int64(len(before)))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"2026-12-07  2:17:24 16 [Warning] Access denied for user 'fleet admin'@'127.0.0.1' (using password: YES)"}
	if !slices.Equal(got, want) {
		t.Errorf("refused logins: %q, want %q", got, want)
	}
	c := TLSCount{Servers: 1, Sessions: 10, Encrypted: 9, Aborted: 1}
	if !c.OK() {
		t.Error("one connection closed before logging in counts as a session without TLS")
	}
	c.Refused = got
	if c.OK() {
		t.Error("a refused login is not reported")
	}
	if (TLSCount{Servers: 1, Sessions: 10, Encrypted: 8, Aborted: 1}).OK() {
		t.Error("a connection without TLS that was not aborted is not reported")
	}

	// PostgreSQL sessions count without MariaDB servers too.
	pg := TLSCount{PGServers: 3, PGSessions: 10, PGEncrypted: 9}
	if pg.OK() {
		t.Error("a PostgreSQL session without TLS is not reported")
	}
	var b bytes.Buffer
	pg.print(&b)
	if !strings.Contains(b.String(), "TLS:                9/10 sessions at the 3 PostgreSQL servers") || !strings.Contains(b.String(), "1 WITHOUT TLS") {
		t.Errorf("the PostgreSQL line: %q", b.String())
	}
	if (Summary{TLS: pg}).Failures() != 1 {
		t.Error("the summary does not count it as a failure")
	}
}
