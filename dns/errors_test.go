package dns

import (
	"strings"
	"testing"

	mdns "github.com/miekg/dns"
)

// TestRcodeMessages: each refusal a server can answer an update with has
// its own message, and only SERVFAIL is worth retrying. (The refusals a
// real BIND gives are exercised in updater_test.go.)
func TestRcodeMessages(t *testing.T) {
	u := &Updater{key: Key{Name: "migrate-key.", Algorithm: "hmac-sha256", Secret: "c2VjcmV0"}}
	z := Zone{Name: "db.example.test.", Primary: "10.0.0.53:53"}
	for rcode, want := range map[int]string{
		mdns.RcodeNotAuth:        "NOTAUTH: the server is not authoritative for zone db.example.test",
		mdns.RcodeRefused:        `REFUSED: TSIG key "migrate-key" (hmac-sha256) may not update zone db.example.test there`,
		mdns.RcodeNotZone:        "NOTZONE: the name is outside zone db.example.test",
		mdns.RcodeNotImplemented: "does not take dynamic updates",
		mdns.RcodeServerFailure:  "SERVFAIL",
		mdns.RcodeNXRrset:        "NXRRSET",
	} {
		r := new(mdns.Msg)
		r.Rcode = rcode
		e := u.rcodeError("update", "shop.db.example.test.", z, z.Primary, r)
		if !strings.Contains(e.Error(), want) || !strings.Contains(e.Error(), "shop.db.example.test") || strings.Contains(e.Error(), "c2VjcmV0") {
			t.Errorf("rcode %s: %q lacks %q", mdns.RcodeToString[rcode], e, want)
		}
		if e.Transient != (rcode == mdns.RcodeServerFailure) {
			t.Errorf("rcode %s: transient %v", mdns.RcodeToString[rcode], e.Transient)
		}
		if prereqFailed(rcode) != (rcode == mdns.RcodeNXRrset) {
			t.Errorf("rcode %s: prerequisite failure %v", mdns.RcodeToString[rcode], prereqFailed(rcode))
		}
	}
}
