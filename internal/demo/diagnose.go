package demo

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// Diagnose writes what a failed test needs to explain itself when nothing
// but its output survives (CI): every row that did not end, with its last
// events; the last lines of every agent's log and of every database
// server's log.
func (d *Demo) Diagnose(ctx context.Context, w io.Writer, lines int) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if d.Store != nil {
		rows, err := d.Store.List(ctx, statemachine.Filter{})
		if err != nil {
			fmt.Fprintf(w, "rows: cannot list them: %v\n", err)
		}
		for _, m := range rows {
			switch m.Status {
			case statemachine.Done, statemachine.RolledBack, statemachine.Cancelled:
				continue
			}
			fmt.Fprintf(w, "row %s: %s (mode %s, attempt %d, owner %q) %s\n", m.String(), m.Status, m.Mode, m.Attempt, m.Owner, m.LastError)
			evs, err := d.Store.Events(ctx, m.ID)
			if err != nil {
				fmt.Fprintf(w, "  events: %v\n", err)
				continue
			}
			for _, e := range evs[max(0, len(evs)-lines):] {
				fmt.Fprintf(w, "  %s %s → %s [%s] %.300s\n", e.At.Format("15:04:05.000"), e.From, e.To, e.Actor, e.Detail)
			}
		}
	}
	d.mu.Lock()
	ids := append([]string(nil), d.agentIDs...)
	d.mu.Unlock()
	for _, id := range ids {
		fmt.Fprintf(w, "agent %s log (last %d lines):\n%s\n", id, lines, fleettest.TailFile(filepath.Join(d.Opt.Dir, "agent-"+id+".log"), lines))
	}
	if d.Fleet != nil {
		for _, h := range d.Fleet.Hosts {
			fmt.Fprintf(w, "server %s (%s) log (last %d lines):\n%s\n", h.ID, h.Addr(), lines, h.server().LogTail(lines))
		}
	}
}
