package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/statemachine/sqlstore"
)

// agentWindow is how recently an agent must have been seen to count as up.
const agentWindow = 2 * time.Minute

type statusReport struct {
	StateDatabase string                      `json:"state_database"`
	Counts        map[statemachine.Status]int `json:"counts"`
	Total         int                         `json:"total"`
	InFlight      int                         `json:"in_flight"`
	Failed        int                         `json:"failed"`
	StopSwitch    statemachine.StopSwitch     `json:"stop_switch"`
	Scheduler     schedulerReport             `json:"scheduler"`
	// Agents maps each role to the hosts whose agent runs it and was seen in
	// the last two minutes.
	Agents map[string][]string `json:"agents"`
}

type schedulerReport struct {
	Running bool `json:"running"`
	statemachine.Lease
}

// runStatus: `migrate status [--json]`, or `migrate status --id N [--json]`
// for one row with its audit trail.
func runStatus(ctx context.Context, e *env, args []string) error {
	fs, cf := newFlags(e, "status", "status [--id N] [--json] [--config FILE]")
	asJSON := fs.Bool("json", false, "print JSON for machines")
	id := fs.Int64("id", 0, "show this row and its events")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	store, _, err := openStore(ctx, e, cf)
	if err != nil {
		return err
	}
	defer store.Close()
	if *id != 0 {
		return showRow(ctx, e, store, *id, *asJSON)
	}

	rep := statusReport{StateDatabase: store.Where(), Counts: map[statemachine.Status]int{}, Agents: map[string][]string{}}
	counts, err := store.Counts(ctx)
	if err != nil {
		return err
	}
	for _, st := range statemachine.Statuses {
		n := counts[st]
		rep.Counts[st] = n
		rep.Total += n
		if st.InFlight() {
			rep.InFlight += n
		}
		if st.Failed() {
			rep.Failed += n
		}
	}
	if rep.StopSwitch, err = store.StopSwitch(ctx); err != nil {
		return err
	}
	lease, running, err := store.Leader(ctx)
	if err != nil {
		return err
	}
	rep.Scheduler = schedulerReport{Running: running}
	if running {
		rep.Scheduler.Lease = lease
	}
	agents, err := store.Agents(ctx, agentWindow)
	if err != nil {
		return err
	}
	for _, a := range agents {
		for _, r := range a.Roles {
			rep.Agents[string(r)] = append(rep.Agents[string(r)], a.Host)
		}
	}
	if *asJSON {
		return writeJSON(e.stdout, rep)
	}
	printStatus(e.stdout, rep)
	return nil
}

func printStatus(w io.Writer, rep statusReport) {
	fmt.Fprintf(w, "state database: %s\n", rep.StateDatabase)
	if rep.StopSwitch.Set {
		fmt.Fprintf(w, "stop switch:    SET by %s at %s: %s\n",
			rep.StopSwitch.By, rep.StopSwitch.Since.Format(time.RFC3339), rep.StopSwitch.Reason)
	} else {
		fmt.Fprintln(w, "stop switch:    clear")
	}
	if rep.Scheduler.Running {
		fmt.Fprintf(w, "scheduler:      running: %s since %s\n", rep.Scheduler.Holder, rep.Scheduler.Since.Format(time.RFC3339))
	} else {
		fmt.Fprintln(w, "scheduler:      not running")
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  %-16s %10s\n", "STATUS", "ROWS")
	for _, st := range statemachine.Statuses {
		fmt.Fprintf(w, "  %-16s %10d\n", st, rep.Counts[st])
	}
	fmt.Fprintf(w, "  %-16s %10d\n", "total", rep.Total)
	fmt.Fprintf(w, "\nin flight: %d (%d failed, holding their slots until an operator acts)\n", rep.InFlight, rep.Failed)
	fmt.Fprintf(w, "\nagents seen in the last %s:\n", agentWindow)
	if len(rep.Agents) == 0 {
		fmt.Fprintln(w, "  none")
	}
	for _, role := range statemachine.AgentRoles {
		hosts := rep.Agents[string(role)]
		if len(hosts) == 0 {
			continue
		}
		fmt.Fprintf(w, "  %-9s %3d  %s\n", role, len(hosts), abbreviate(hosts, 8))
	}
}

// abbreviate lists up to n items and counts the rest.
func abbreviate(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, ", ")
	}
	return strings.Join(items[:n], ", ") + fmt.Sprintf(" and %d more", len(items)-n)
}

func showRow(ctx context.Context, e *env, store *sqlstore.Store, id int64, asJSON bool) error {
	m, err := store.Get(ctx, id)
	if err != nil {
		return err
	}
	events, err := store.Events(ctx, id)
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(e.stdout, struct {
			Migration statemachine.Migration `json:"migration"`
			Events    []statemachine.Event   `json:"events"`
		}{m, events})
	}
	w := e.stdout
	dns := "no DNS step"
	if m.DNSName != "" {
		dns = "DNS name " + m.DNSName
	}
	fmt.Fprintf(w, "row %d: %s database %s, %s -> %s, %s\n", m.ID, m.Engine, displayName(m.DatabaseName), m.Source, m.Destination, dns)
	fmt.Fprintf(w, "status:   %s (attempt %d)\n", m.Status, m.Attempt)
	if m.Owner != "" {
		fmt.Fprintf(w, "held by:  %s until %s (fence %d)\n", m.Owner, m.LeaseUntil.Format(time.RFC3339), m.Fence)
	}
	if m.SizeBytes > 0 {
		fmt.Fprintf(w, "size:     %d bytes\n", m.SizeBytes)
	}
	if m.DumpURL != "" {
		fmt.Fprintf(w, "dump:     %s (%d bytes, sha256 %s, consistency point %s)\n", m.DumpURL, m.DumpBytes, m.DumpSHA256, m.ConsistencyPoint.Format(time.RFC3339))
	}
	if !m.BlockedAt.IsZero() {
		fmt.Fprintf(w, "writes:   %s\n", blockedSummary(m))
	}
	if m.LastError != "" {
		fmt.Fprintf(w, "error:    %s\n", m.LastError)
	}
	fmt.Fprintf(w, "planned:  %s, last change %s\n\nevents:\n", m.CreatedAt.Format(time.RFC3339), m.UpdatedAt.Format(time.RFC3339))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, ev := range events {
		var move string
		switch {
		case ev.From == "":
			move = "planned"
		case ev.From != ev.To:
			move = string(ev.From) + " -> " + string(ev.To)
		default:
			move = "(" + string(ev.To) + ")"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", ev.At.Format("2006-01-02 15:04:05.000"), move, ev.Actor, ev.Detail)
	}
	return tw.Flush()
}

// blockedSummary says how long the source has been, or was, write-blocked.
func blockedSummary(m statemachine.Migration) string {
	switch {
	case !m.SwitchedAt.IsZero():
		return fmt.Sprintf("blocked at the source from %s until the switch at %s (%s of write downtime)",
			m.BlockedAt.Format(time.RFC3339), m.SwitchedAt.Format(time.RFC3339), m.SwitchedAt.Sub(m.BlockedAt).Round(time.Millisecond))
	case !m.UnblockedAt.IsZero():
		return fmt.Sprintf("blocked at the source from %s, restored at %s (%s)",
			m.BlockedAt.Format(time.RFC3339), m.UnblockedAt.Format(time.RFC3339), m.UnblockedAt.Sub(m.BlockedAt).Round(time.Millisecond))
	default:
		return fmt.Sprintf("BLOCKED at the source since %s", m.BlockedAt.Format(time.RFC3339))
	}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
