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
	// Finished rows will not move again: Done, Rolled back, Cancelled.
	Finished int `json:"finished"`
	// Remaining rows are not finished yet.
	Remaining int `json:"remaining"`
	// MaxProcs is the running scheduler's --max-procs (0: none running).
	MaxProcs      int     `json:"max_procs"`
	DoneLastHour  int     `json:"done_last_hour"`
	DoneLast15Min int     `json:"done_last_15m"`
	PerHour       float64 `json:"rate_per_hour"`
	// ETASeconds is Remaining at the rate of the last 15 minutes (0: no rate).
	ETASeconds    float64                   `json:"eta_seconds"`
	FailedByError []statemachine.ErrorGroup `json:"failed_by_error"`
	// NotConverging are syncing rows whose stream's lag keeps growing.
	NotConverging []statemachine.RowNote     `json:"not_converging"`
	StopSwitch    statemachine.StopSwitch    `json:"stop_switch"`
	Scheduler     schedulerReport            `json:"scheduler"`
	PausedSources []statemachine.SourcePause `json:"paused_sources"`
	// OperatorLogins are the hosts whose agent (seen in the window) wrote
	// its registry entry with a login that is not its host's own agent
	// login: with it, it may change any host's rows.
	OperatorLogins []string `json:"operator_logins,omitempty"`
	// OwnLogins counts the agents seen on their host's own login.
	OwnLogins int `json:"own_logins"`
	// OpenAsks counts the peer asks without an answer; OldestAsk is the
	// oldest of them.
	OpenAsks  int               `json:"open_asks"`
	OldestAsk *statemachine.Ask `json:"oldest_ask,omitempty"`
	// Agents maps each role to the hosts whose agent runs it and was seen in
	// the last two minutes.
	Agents map[string][]string `json:"agents"`
	At     time.Time           `json:"at"`
}

type schedulerReport struct {
	Running bool `json:"running"`
	statemachine.Lease
}

// watchInterval is how often `status --watch` redraws.
const watchInterval = 2 * time.Second

// runStatus: `migrate status [--json] [--watch]`, or `migrate status --id
// N [--json]` for one row with its audit trail.
func runStatus(ctx context.Context, e *env, args []string) error {
	fs, cf := newFlags(e, "status", "status [--id N] [--json] [--watch] [--config FILE]")
	asJSON := fs.Bool("json", false, "print JSON for machines")
	id := fs.Int64("id", 0, "show this row and its events")
	watch := fs.Bool("watch", false, "redraw every 2 s until interrupted (with --json: one document every 2 s)")
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
	for {
		rep, err := buildStatus(ctx, store)
		if err != nil {
			if *watch && ctx.Err() != nil {
				return nil
			}
			return err
		}
		switch {
		case *asJSON:
			if err := writeJSON(e.stdout, rep); err != nil {
				return err
			}
		case *watch:
			fmt.Fprint(e.stdout, "\033[H\033[2J") // home, clear screen
			fmt.Fprintf(e.stdout, "%s  (every %s; Ctrl-C to leave)\n", rep.At.Format("2006-01-02 15:04:05Z"), watchInterval)
			printStatus(e.stdout, rep)
		default:
			printStatus(e.stdout, rep)
		}
		if !*watch {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(watchInterval):
		}
	}
}

func buildStatus(ctx context.Context, store *sqlstore.Store) (statusReport, error) {
	rep := statusReport{StateDatabase: store.Where(), Counts: map[statemachine.Status]int{}, Agents: map[string][]string{}}
	counts, err := store.Counts(ctx)
	if err != nil {
		return rep, err
	}
	for _, st := range statemachine.Statuses {
		n := counts[st]
		rep.Counts[st] = n
		rep.Total += n
		switch {
		case st.Terminal():
			rep.Finished += n
		case st.InFlight():
			rep.InFlight += n
		}
		if st.Failed() {
			rep.Failed += n
		}
	}
	rep.Remaining = rep.Total - rep.Finished
	if rep.StopSwitch, err = store.StopSwitch(ctx); err != nil {
		return rep, err
	}
	lease, running, err := store.Leader(ctx)
	if err != nil {
		return rep, err
	}
	rep.Scheduler = schedulerReport{Running: running}
	if running {
		rep.Scheduler.Lease, rep.MaxProcs = lease, lease.MaxProcs
	}
	if rep.DoneLastHour, err = store.DoneWithin(ctx, time.Hour); err != nil {
		return rep, err
	}
	if rep.DoneLast15Min, err = store.DoneWithin(ctx, 15*time.Minute); err != nil {
		return rep, err
	}
	rep.PerHour = float64(rep.DoneLast15Min) * 4
	if rep.PerHour > 0 {
		rep.ETASeconds = float64(rep.Remaining) / rep.PerHour * 3600
	}
	if rep.FailedByError, err = store.FailedByError(ctx, 5); err != nil {
		return rep, err
	}
	if rep.NotConverging, err = store.NotConverging(ctx, 10); err != nil {
		return rep, err
	}
	if rep.PausedSources, err = store.PausedSources(ctx); err != nil {
		return rep, err
	}
	agents, err := store.Agents(ctx, agentWindow)
	if err != nil {
		return rep, err
	}
	logins, err := sqlstore.NewAdmin(store.DB(), store.Dialect()).AgentLogins(ctx)
	if err != nil {
		return rep, err
	}
	own := map[string]string{} // login → host
	for _, l := range logins {
		own[l.Login] = l.Host
	}
	for _, a := range agents {
		for _, r := range a.Roles {
			rep.Agents[string(r)] = append(rep.Agents[string(r)], a.Host)
		}
		if h, ok := own[a.Login]; ok && h == a.Host {
			rep.OwnLogins++
		} else {
			rep.OperatorLogins = append(rep.OperatorLogins, a.Host)
		}
	}
	n, oldest, err := store.OpenAskSummary(ctx)
	if err != nil {
		return rep, err
	}
	if rep.OpenAsks = n; n > 0 {
		rep.OldestAsk = &oldest
	}
	rep.At, err = store.Now(ctx)
	return rep, err
}

func printStatus(w io.Writer, rep statusReport) {
	fmt.Fprintf(w, "state database: %s\n", rep.StateDatabase)
	if rep.Scheduler.Running {
		fmt.Fprintf(w, "scheduler:      running: %s since %s, max-procs %d\n", rep.Scheduler.Holder, rep.Scheduler.Since.Format(time.RFC3339), rep.MaxProcs)
	} else {
		fmt.Fprintln(w, "scheduler:      not running")
	}
	if rep.StopSwitch.Set {
		fmt.Fprintf(w, "stop switch:    SET by %s at %s: %s\n", rep.StopSwitch.By, rep.StopSwitch.Since.Format(time.RFC3339), rep.StopSwitch.Reason)
	} else {
		fmt.Fprintln(w, "stop switch:    clear")
	}
	fmt.Fprintf(w, "progress:       %s %3.0f%%  %s of %s finished\n", bar(rep.Finished, rep.Total, 30), percent(rep.Finished, rep.Total), num(rep.Finished), num(rep.Total))
	max := "no scheduler"
	if rep.MaxProcs > 0 {
		max = num(rep.MaxProcs)
	}
	fmt.Fprintf(w, "in flight:      %s / %s (%s failed, holding their slots until an operator acts)\n", num(rep.InFlight), max, num(rep.Failed))
	eta := "ETA unknown: nothing finished in the last 15 min"
	if rep.ETASeconds > 0 {
		eta = fmt.Sprintf("ETA %s for %s rows", (time.Duration(rep.ETASeconds) * time.Second).Round(time.Minute), num(rep.Remaining))
	}
	fmt.Fprintf(w, "throughput:     %s done in the last hour, %.0f/h over the last 15 min; %s\n", num(rep.DoneLastHour), rep.PerHour, eta)
	for _, p := range rep.PausedSources {
		fmt.Fprintf(w, "paused source:  %s (by %s since %s) %s\n", p.Host, p.By, p.Since.Format(time.RFC3339), p.Reason)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  %-16s %10s\n", "STATUS", "ROWS")
	for _, st := range statemachine.Statuses {
		fmt.Fprintf(w, "  %-16s %10s\n", st, num(rep.Counts[st]))
	}
	fmt.Fprintf(w, "  %-16s %10s\n", "total", num(rep.Total))
	if len(rep.FailedByError) > 0 {
		fmt.Fprintln(w, "\nfailed rows by error (most common first):")
		for _, g := range rep.FailedByError {
			fmt.Fprintf(w, "  %6s  %s\n", num(g.Count), firstLine(g.Error, 120))
		}
	}
	if len(rep.NotConverging) > 0 {
		fmt.Fprintf(w, "\nstreams NOT CONVERGING (lag growing; first %d; docs/online.md, what an SRE watches):\n", len(rep.NotConverging))
		for _, n := range rep.NotConverging {
			fmt.Fprintf(w, "  row %-8d %-24s %s\n", n.ID, firstLine(n.Database, 24), firstLine(n.Detail, 140))
		}
	}
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
	if n := len(rep.OperatorLogins); n > 0 {
		fmt.Fprintf(w, "  logins:   %d on their host's own, %d on an operator's: %s  WARNING: those may change any host's rows (migrate db grant-agent HOST; docs/security.md)\n",
			rep.OwnLogins, n, abbreviate(rep.OperatorLogins, 8))
	} else if rep.OwnLogins > 0 {
		fmt.Fprintf(w, "  logins:   all %d on their host's own (the state database holds each to its host's rows)\n", rep.OwnLogins)
	}
	if a := rep.OldestAsk; a != nil {
		age := rep.At.Sub(a.AskedAt).Round(time.Second)
		warn := ""
		if age > 30*time.Second {
			warn = fmt.Sprintf("  WARNING: host %s's agent is not answering (is it running? its log says why)", a.Host)
		}
		fmt.Fprintf(w, "  peer asks: %d open; the oldest %s ago, %s of row %d asked of host %s by %s%s\n", rep.OpenAsks, age, a.Action, a.MigrationID, a.Host, a.Asker, warn)
	}
}

// bar draws a progress bar of width characters.
func bar(done, total, width int) string {
	filled := 0
	if total > 0 {
		filled = done * width / total
	}
	return "[" + strings.Repeat("#", filled) + strings.Repeat("-", width-filled) + "]"
}

func percent(n, total int) float64 {
	if total == 0 {
		return 0
	}
	return 100 * float64(n) / float64(total)
}

// num formats an integer with thousands separators.
func num(n int) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		return "-" + s
	}
	return s
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
	fmt.Fprintf(w, "mode:     %s\n", modeSummary(m))
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

// modeSummary says how a row moves its data: its mode, and for an online
// row that is syncing, where the stream's lag is written.
func modeSummary(m statemachine.Migration) string {
	switch {
	case m.Mode == statemachine.ModeAuto:
		return "auto (the sync step chooses online or dump, and says why in the events)"
	case m.Mode == statemachine.ModeOnline && m.Status == statemachine.Syncing:
		return "online (syncing: the latest \"syncing:\" event has the stream's lag)"
	case m.Mode == "":
		return string(statemachine.ModeDump)
	}
	return string(m.Mode)
}
