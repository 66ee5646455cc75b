package statetest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// Step is one pipeline step to walk rows through by hand: the role and
// the host whose rows it claims (empty for dns).
type Step struct {
	Role statemachine.Role
	Host string
}

// ToDNS are the steps from To dump to DNS to update for rows from src to
// dst.
func ToDNS(_, dst string) []Step {
	return []Step{{statemachine.RoleDump, dst}, {statemachine.RoleImport, dst}}
}

// Walk moves every row claimable in each step through it by hand, without
// doing its work, so a test can start at a later status: the dump step
// records a placeholder dump, the DNS step the switch. fail, when it
// returns a reason for a row at a role, fails the row there instead,
// recording f ("" advances it). It returns the rows as last claimed, by
// database name.
func Walk(t testing.TB, s statemachine.Store, steps []Step, fail func(statemachine.Role, statemachine.Migration) (reason string, f statemachine.Fields)) map[string]statemachine.Migration {
	t.Helper()
	ctx := context.Background()
	out := map[string]statemachine.Migration{}
	for _, st := range steps {
		ms, err := s.Claim(ctx, statemachine.ClaimRequest{Role: st.Role, Host: st.Host, Owner: "walk", Limit: 1 << 20, Lease: time.Hour})
		if err != nil {
			t.Fatalf("walk: claim %s: %v", st.Role, err)
		}
		for i := range ms {
			m := &ms[i]
			out[m.DatabaseName] = *m
			if fail != nil {
				if reason, f := fail(st.Role, *m); reason != "" {
					if err := s.Fail(ctx, m, f, reason); err != nil {
						t.Fatalf("walk: fail row %d: %v", m.ID, err)
					}
					continue
				}
			}
			f := statemachine.Fields{}
			switch st.Role {
			case statemachine.RoleDump:
				f = statemachine.Fields{DumpURL: "file:///walk/" + m.DatabaseName, DumpSHA256: strings.Repeat("0", 64), DumpBytes: 1}
			case statemachine.RoleDNS:
				f = statemachine.Fields{Marks: []statemachine.Mark{statemachine.MarkSwitched}}
			}
			if err := s.Advance(ctx, m, f, "walked by hand"); err != nil {
				t.Fatalf("walk: advance row %d at %s: %v", m.ID, st.Role, err)
			}
		}
	}
	return out
}
