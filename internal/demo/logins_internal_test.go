package demo

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The agents' sessions are told from the operator's by login, and a
// refusal of the state database is listed and fails the summary.
func TestLoginsFromLog(t *testing.T) {
	log := `2026-12-07 04:51:01.101 UTC [101] LOG:  connection authorized: user=postgres database=fleet SSL enabled (protocol=TLSv1.3, cipher=TLS_AES_256_GCM_SHA384, bits=256)
2026-12-07 04:51:02.101 UTC [102] LOG:  connection authorized: user=fm_mysql-src-1 database=fleet SSL enabled (protocol=TLSv1.3, cipher=TLS_AES_256_GCM_SHA384, bits=256)
2026-12-07 04:51:02.201 UTC [103] LOG:  connection authorized: user=fm_dns-1 database=fleet SSL enabled (protocol=TLSv1.3, cipher=TLS_AES_256_GCM_SHA384, bits=256)
2026-12-07 04:51:02.301 UTC [104] LOG:  connection authorized: user=fm_mysql-src-1 database=fleet SSL enabled (protocol=TLSv1.3, cipher=TLS_AES_256_GCM_SHA384, bits=256)
`
	refusal := "2026-12-07 04:51:03.101 UTC [104] ERROR:  fleetmigrate: update of row 7 refused: the row goes from b to c, and login fm_mysql-src-1 is the agent of host mysql-src-1\n"
	path := filepath.Join(t.TempDir(), "postgres.log")
	if err := os.WriteFile(path, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	c := loginsFromLog(path, []string{"fm_mysql-src-1", "fm_dns-1"})
	if !c.OK() || c.Sessions["fm_mysql-src-1"] != 2 || c.Sessions["fm_dns-1"] != 1 || c.Operator != 1 {
		t.Fatalf("count: %+v", c)
	}
	if c := loginsFromLog(path, []string{"fm_mysql-src-1", "fm_dns-1", "fm_pg-dst-1"}); c.OK() {
		t.Error("an agent that never logged in as its own login is not reported")
	}
	if err := os.WriteFile(path, []byte(log+refusal), 0o600); err != nil {
		t.Fatal(err)
	}
	c = loginsFromLog(path, []string{"fm_mysql-src-1", "fm_dns-1"})
	if c.OK() || len(c.Refused) != 1 || (Summary{Logins: c}).Failures() != 1 {
		t.Fatalf("a refusal: %+v", c)
	}
	var b bytes.Buffer
	c.print(&b)
	if !strings.Contains(b.String(), "2/2 agents logged in as their host's own login (3 sessions; operator logins: 1), 1 refused") ||
		!strings.Contains(b.String(), "refused:  ERROR:  fleetmigrate: update of row 7 refused") {
		t.Errorf("printed: %q", b.String())
	}
}
