package demo

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/fleetmigrate/fleetmigrate/statemachine/sqlstore"
)

// LoginCount is what the state database logged of the agents' logins:
// each agent logs in as its host's own login (migrate db grant-agent),
// which may move only that host's rows; the database refuses anything
// else, and a refusal in a clean run is a bug of ours.
type LoginCount struct {
	// Logins are the agent logins granted.
	Logins []string
	// Sessions counts the sessions of each agent login; Operator those of
	// other logins (the ops host, the scheduler, the demo's own reads).
	Sessions map[string]int64
	Operator int64
	// Refused are the state database's log lines of refusals (a trigger's
	// or a privilege's).
	Refused []string
	Err     error
}

// OK: every agent logged in as its own login and nothing was refused.
func (c LoginCount) OK() bool {
	if c.Err != nil || len(c.Refused) > 0 || len(c.Logins) == 0 {
		return false
	}
	for _, l := range c.Logins {
		if c.Sessions[l] == 0 {
			return false
		}
	}
	return true
}

// countLogins reads the state database's connection log.
func (d *Demo) countLogins() LoginCount {
	var logins []string
	for _, id := range d.agentHosts() {
		logins = append(logins, sqlstore.DefaultLogin(id))
	}
	return loginsFromLog(d.Fleet.State.LogFile(), logins)
}

// loginsFromLog counts the sessions of each of logins and the refusals in a
// PostgreSQL server's log.
func loginsFromLog(path string, logins []string) LoginCount {
	c := LoginCount{Logins: logins, Sessions: map[string]int64{}}
	c.Err = logLinesSince(path, 0, func(l string) {
		if i := strings.Index(l, "connection authorized: user="); i >= 0 {
			user, _, _ := strings.Cut(l[i+len("connection authorized: user="):], " ")
			if slices.Contains(c.Logins, user) {
				c.Sessions[user]++
			} else {
				c.Operator++
			}
			return
		}
		if strings.Contains(l, "ERROR:  ") && (strings.Contains(l, "fleetmigrate: ") && strings.Contains(l, " refused") || strings.Contains(l, "permission denied")) {
			c.Refused = append(c.Refused, strings.TrimSpace(l[strings.Index(l, "ERROR:  "):]))
		}
	})
	return c
}

func (c LoginCount) print(w io.Writer) {
	label := "state logins:       "
	if c.Err != nil {
		fmt.Fprintf(w, "%scould not be counted: %v\n", label, c.Err)
		return
	}
	var sessions int64
	own := 0
	for _, l := range c.Logins {
		sessions += c.Sessions[l]
		if c.Sessions[l] > 0 {
			own++
		}
	}
	fmt.Fprintf(w, "%s%d/%d agents logged in as their host's own login (%d sessions; operator logins: %d), %d refused by the state database; counted from its connection log\n",
		label, own, len(c.Logins), sessions, c.Operator, len(c.Refused))
	for i, l := range c.Refused {
		if i == 10 {
			fmt.Fprintf(w, "  refused:  … and %d more (the state database's log)\n", len(c.Refused)-i)
			break
		}
		fmt.Fprintf(w, "  refused:  %s\n", l)
	}
}
