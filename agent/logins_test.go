package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/agent"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// TestAgentsOnTheirOwnLogins: the agent runtime does everything it needs
// with its host's own state-database login — register and heartbeat, claim,
// renew, record, advance, notes, its crash recovery at start, wake-ups —
// on both state databases: three sources, three destinations and the DNS
// host drain 150 rows through four steps, each on its own login, and the
// state database refuses none of their writes.
func TestAgentsOnTheirOwnLogins(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		const rows = 150
		s := db.Open(t)
		planOn(t, s, rows, 3, 3, true)
		var logs []*bytes.Buffer
		logger := func() *slog.Logger {
			b := &bytes.Buffer{}
			logs = append(logs, b)
			return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelWarn}))
		}
		h := &fakeHandler{}
		for i := range 3 {
			src, dst := fmt.Sprintf("src-%d", i), fmt.Sprintf("dst-%d", i)
			start(t, db.AsAgent(t, src, false).Open(t), fast(src, statemachine.RoleClose), h, logger())
			a, err := agent.New(db.AsAgent(t, dst, false).Open(t), fast(dst, statemachine.RoleDump, statemachine.RoleImport), logger(), nil)
			if err != nil {
				t.Fatal(err)
			}
			a.Handle(statemachine.RoleDump, "", h)
			a.Handle(statemachine.RoleImport, "", h)
			runUntilCleanup(t, a)
		}
		start(t, db.AsAgent(t, "dns-1", true).Open(t), fast("dns-1", statemachine.RoleDNS), h, logger())
		stop := runScheduler(t, s, 60)
		defer stop()
		waitDone(t, s, rows, 2*time.Minute)
		stop()
		agents, err := s.Agents(context.Background(), 0)
		if err != nil || len(agents) != 7 {
			t.Fatalf("registry: %d entries, %v", len(agents), err)
		}
		for _, a := range agents {
			if !strings.HasPrefix(a.Login, "fm_t") || !strings.HasSuffix(a.Login, a.Host) {
				t.Errorf("%s's entry was written by %q, not its own login", a.Host, a.Login)
			}
		}
		for _, b := range logs {
			if l := b.String(); strings.Contains(l, "refused") || strings.Contains(l, "denied") {
				t.Errorf("an agent was refused something:\n%s", l)
			}
		}
	})
}
