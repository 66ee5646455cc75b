package demo

import (
	"errors"
	"strings"
	"testing"
)

func TestPeerCountFailsOnAnyChangeOrRefusal(t *testing.T) {
	ok := PeerCount{Servers: 6, Sessions: 1815, Asks: map[string]int{"block": 300, "stream-remove": 60}}
	if !ok.OK() {
		t.Error("a peer account that changed nothing and was refused nothing is not OK")
	}
	var b strings.Builder
	ok.print(&b)
	for _, want := range []string{"1815 sessions of the read-only peer account at the 6 MariaDB servers", "changed nothing and was refused nothing", "300 block, 60 stream-remove (0 answered with an error)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("the line does not say %q: %s", want, b.String())
		}
	}
	for _, bad := range []PeerCount{{Servers: 1, RowsChanged: 1}, {Servers: 1, Denied: 2}, {Err: errors.New("x")}} {
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
