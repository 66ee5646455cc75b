package demo

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPeerCountFailsOnAnyChangeOrRefusal(t *testing.T) {
	ok := PeerCount{Servers: 6, Sessions: 1815, PGServers: 4, PGSessions: 900, Asks: map[string]int{"block": 300, "publish": 40, "stream-remove": 60}}
	if !ok.OK() {
		t.Error("a peer account that changed nothing and was refused nothing is not OK")
	}
	var b strings.Builder
	ok.print(&b)
	for _, want := range []string{"1815 sessions of the read-only peer account at the 6 MariaDB servers", "changed nothing and was refused nothing",
		"900 sessions of the read-only peer role at the 4 PostgreSQL servers, read-only sessions, refused nothing", "300 block, 40 publish, 60 stream-remove (0 answered with an error)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("the line does not say %q: %s", want, b.String())
		}
	}
	for _, bad := range []PeerCount{{Servers: 1, RowsChanged: 1}, {Servers: 1, Denied: 2}, {PGServers: 1, PGRefused: 1}, {Err: errors.New("x")}} {
		if bad.OK() {
			t.Errorf("%+v is OK", bad)
		}
	}
	b.Reset()
	(PeerCount{Servers: 1, RowsChanged: 3, Denied: 1}).print(&b)
	if !strings.Contains(b.String(), "CHANGED 3 rows and was REFUSED 1 times") {
		t.Errorf("a failing count does not say so: %s", b.String())
	}
}

// TestCountPGPeerReadsTheServersLog: the peer role's sessions and
// refusals as a PostgreSQL server logs them (pgLogPrefix, log_connections).
func TestCountPGPeerReadsTheServersLog(t *testing.T) {
	log := strings.Join([]string{
		"2026-12-07 10:00:00.000 UTC [10] [unknown]@[unknown] 00000 LOG:  connection received: host=127.0.0.1 port=5",
		"2026-12-07 10:00:00.001 UTC [10] fleetmigrate_peer@db 00000 LOG:  connection authorized: user=fleetmigrate_peer database=db SSL enabled (protocol=TLSv1.3)",
		"2026-12-07 10:00:00.002 UTC [11] fleetmigrate_peer@[unknown] 00000 LOG:  replication connection authorized: user=fleetmigrate_peer application_name=s SSL enabled",
		"2026-12-07 10:00:00.003 UTC [12] fleetmigrate@db 00000 LOG:  connection authorized: user=fleetmigrate database=db",
		"2026-12-07 10:00:00.004 UTC [10] fleetmigrate_peer@db 25006 ERROR:  cannot execute CREATE TABLE in a read-only transaction",
		"2026-12-07 10:00:00.005 UTC [13] fleetmigrate_peer@db 28P01 FATAL:  password authentication failed for user \"fleetmigrate_peer\"",
		"2026-12-07 10:00:00.006 UTC [14] o@db 42501 ERROR:  permission denied for table t",
		"2026-12-07 10:00:00.007 UTC [10] fleetmigrate_peer@db 57P01 FATAL:  terminating connection due to administrator command",
	}, "\n")
	path := filepath.Join(t.TempDir(), "postgres.log")
	if err := os.WriteFile(path, []byte(log+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sessions, refused, err := countPGPeer(path, "fleetmigrate_peer")
	if err != nil || sessions != 2 || refused != 2 {
		t.Fatalf("countPGPeer = %d sessions, %d refused, %v; want 2, 2", sessions, refused, err)
	}
}
