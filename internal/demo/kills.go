package demo

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// Kill is one kill -9 the demo did during the migration (Options.Kills),
// each followed at once by a restart, as systemd's Restart= would.
type Kill struct {
	// Process is what was killed: "the agent of mysql-dst-2" or "the
	// scheduler".
	Process string
	// Step is the working status the kill aimed at (the agent held rows in
	// it); empty for the scheduler.
	Step statemachine.Status
	// At is when it was killed, Restarted when its successor started.
	At, Restarted time.Time
	// Held are the rows the killed agent held (owner of those rows) and
	// left to be taken back; a row whose last write the process had sent
	// before it died (it landed after) is not among them but counted in
	// Landed.
	Held   []statemachine.Migration
	Landed int
	// Waited is, by row id, how long after the restart each held row was
	// taken back (filled in by the summary); a held row missing here was
	// never seen taken back.
	Waited map[int64]time.Duration
	// Led is, for the scheduler, how long after the restart it held the
	// lease again (0: not seen within a minute).
	Led time.Duration
	// Err says why the kill or the restart did not happen.
	Err error
}

// killSteps are the steps an agent kill aims at, in turn: the first with
// rows in flight at the time of a kill is hit.
var killSteps = []statemachine.Status{statemachine.Dumping, statemachine.CuttingOver, statemachine.Syncing,
	statemachine.Importing, statemachine.UpdatingDNS, statemachine.ClosingSource}

// killLoop kills Options.Kills processes during the migration, spread over
// it (the i-th once i/(Kills+1) of the rows are Done), each restarted at
// once: every third kill is the scheduler's, the others an agent's holding
// rows of the next step in killSteps. It returns when every kill is done
// or ctx ends.
func (d *Demo) killLoop(ctx context.Context) {
	total := len(d.DBs)
	agents := 0
	for i := range d.Opt.Kills {
		due := total * (i + 1) / (d.Opt.Kills + 1)
		for {
			n, err := d.Store.CountStatuses(ctx, statemachine.Done)
			if ctx.Err() != nil {
				return
			}
			if err == nil && n >= due {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
		var k Kill
		if i%3 == 1 {
			k = d.killScheduler(ctx)
			d.mu.Lock()
			d.kills = append(d.kills, k)
			d.mu.Unlock()
		} else {
			k = d.killAgent(ctx, agents)
			agents++
		}
		what := k.Process
		if k.Step != "" {
			what += fmt.Sprintf(" (holding %d rows, %s)", len(k.Held), k.Step)
		}
		if d.Opt.Redraw {
			fmt.Fprint(d.Opt.Out, "\r\033[K") // over the progress line being redrawn
		}
		if k.Err != nil {
			d.say("  kill %d of %d: %s: %v", i+1, d.Opt.Kills, what, k.Err)
		} else {
			d.say("  kill %d of %d: kill -9 %s, restarted at once", i+1, d.Opt.Kills, what)
		}
	}
}

// killAgent kills the agent holding the most rows of the first step with
// rows in flight, trying killSteps from the n-th on, steps no kill aimed
// at yet first, and restarts it.
func (d *Demo) killAgent(ctx context.Context, n int) Kill {
	// A moment between steps may find no row worked on: look again for
	// ten seconds.
	order := make([]statemachine.Status, len(killSteps))
	for j := range killSteps {
		order[j] = killSteps[(n+j)%len(killSteps)]
	}
	// Steps no kill aimed at yet come first: each kill, another step.
	d.mu.Lock()
	aimed := map[statemachine.Status]bool{}
	for _, k := range d.kills {
		aimed[k.Step] = true
	}
	d.mu.Unlock()
	slices.SortStableFunc(order, func(a, b statemachine.Status) int {
		switch {
		case aimed[a] == aimed[b]:
			return 0
		case aimed[a]:
			return 1
		}
		return -1
	})
	for deadline := time.Now().Add(10 * time.Second); ctx.Err() == nil && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		for _, st := range order {
			k, err := d.KillHolder(ctx, st)
			if err == nil || !errors.Is(err, ErrNoHolder) {
				return k
			}
		}
	}
	k := Kill{Process: "an agent", Err: fmt.Errorf("no agent held rows of %v for 10 s", killSteps)}
	d.mu.Lock()
	d.kills = append(d.kills, k)
	d.mu.Unlock()
	return k
}

// ErrNoHolder: no agent holds rows of the status (KillHolder).
var ErrNoHolder = errors.New("no agent holds rows of the status")

// KillHolder kills with kill -9 the agent holding the most rows in status
// and restarts it at once, as systemd would after a crash. The Kill (its
// Err set if the kill or the restart failed) is recorded for Kills and the
// summary; err is ErrNoHolder-wrapped when no agent held such rows.
func (d *Demo) KillHolder(ctx context.Context, status statemachine.Status) (Kill, error) {
	rows, err := d.Store.List(ctx, statemachine.Filter{Statuses: []statemachine.Status{status}})
	if err != nil {
		return Kill{Process: "an agent", Err: err}, err
	}
	byHost := map[string]int{}
	for _, m := range rows {
		if host, _, ok := strings.Cut(m.Owner, "/pid "); ok && d.Agent(host) != nil {
			byHost[host]++
		}
	}
	if len(byHost) == 0 {
		return Kill{}, fmt.Errorf("%w %s", ErrNoHolder, status)
	}
	hosts := slices.Sorted(maps.Keys(byHost))
	host := slices.MaxFunc(hosts, func(a, b string) int { return byHost[a] - byHost[b] })
	p := d.Agent(host)
	k := Kill{Process: "the agent of " + host, Step: status}
	owner := fmt.Sprintf("%s/pid %d (", host, p.PID())
	d.countKilledCPU(p)
	k.At = time.Now()
	if k.Err = d.KillAgent(host); k.Err == nil {
		// The rows this very process held when it died.
		if rows, err := d.Store.List(ctx, statemachine.Filter{}); err == nil {
			for _, m := range rows {
				if strings.HasPrefix(m.Owner, owner) {
					k.Held = append(k.Held, m)
				}
			}
		}
		k.Restarted = time.Now()
		k.Err = d.RestartAgent(host)
	}
	d.mu.Lock()
	d.kills = append(d.kills, k)
	d.mu.Unlock()
	return k, k.Err
}

// killScheduler kills the scheduler, restarts it and waits (up to a
// minute) until it holds the lease again.
func (d *Demo) killScheduler(ctx context.Context) Kill {
	k := Kill{Process: "the scheduler", At: time.Now()}
	d.KillScheduler()
	k.Restarted = time.Now()
	if k.Err = d.RestartScheduler(); k.Err != nil {
		return k
	}
	suffix := fmt.Sprintf(" pid %d (", d.Scheduler().PID())
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && ctx.Err() == nil; {
		if l, ok, err := d.Store.Leader(ctx); err == nil && ok && strings.Contains(l.Holder, suffix) {
			k.Led = time.Since(k.Restarted)
			return k
		}
		if d.Scheduler().Exited() {
			k.Err = fmt.Errorf("the restarted scheduler exited (code %d): %s", d.Scheduler().ExitCode(), tail(readFile(d.Scheduler().LogPath()), 3))
			return k
		}
		time.Sleep(20 * time.Millisecond)
	}
	k.Err = fmt.Errorf("the restarted scheduler did not hold the lease within a minute")
	return k
}

// countKilledCPU adds the CPU time a process about to be killed used since
// the migration started, which the end-of-run reading of the agents would
// miss.
func (d *Demo) countKilledCPU(p *fleettest.Process) {
	if st, err := fleettest.ReadProcStat(p.PID()); err == nil {
		d.mu.Lock()
		d.killedCPU += st.CPU + st.ChildrenCPU
		d.mu.Unlock()
	}
}

// Kills returns the kills so far (Options.Kills, KillHolder), each with
// Waited filled in from the rows' events: the time from the restart to the
// event that took the row back from the killed process (its successor's,
// or the scheduler's after the lease).
func (d *Demo) Kills(ctx context.Context) ([]Kill, error) {
	d.mu.Lock()
	kills := slices.Clone(d.kills)
	d.mu.Unlock()
	for i := range kills {
		k := &kills[i]
		k.Waited = map[int64]time.Duration{}
		var left []statemachine.Migration
		for _, m := range k.Held {
			evs, err := d.Store.Events(ctx, m.ID)
			if err != nil {
				return kills, fmt.Errorf("read the events of row %d: %w", m.ID, err)
			}
			// From the killed process's claim (owners are unique per
			// process), the first move out of the status it held the row in:
			// its own last write, landed after its death, or the take-back.
			claim := -1
			for j, e := range evs {
				if e.To == m.Status && e.From != m.Status && e.Actor == m.Owner {
					claim = j // its last claim of the row
				}
			}
			landed := false
			for _, e := range evs[claim+1:] {
				if e.From != m.Status || e.To == m.Status {
					continue
				}
				switch {
				case e.Actor == m.Owner:
					landed = true
				case e.Actor == string(statemachine.RoleRescuer) && strings.Contains(e.Detail, m.Owner):
					k.Waited[m.ID] = max(e.At.Sub(k.Restarted), 0)
				}
				break
			}
			if landed {
				k.Landed++
			} else {
				left = append(left, m)
			}
		}
		k.Held = left
	}
	return kills, nil
}

// printKills writes the kills' lines of the summary.
func printKills(w interface{ Write([]byte) (int, error) }, kills []Kill) {
	if len(kills) == 0 {
		return
	}
	var waits []time.Duration
	held, seen := 0, 0
	fmt.Fprintf(w, "kills:              %d processes killed with kill -9 during the migration, each restarted at once:\n", len(kills))
	for _, k := range kills {
		switch {
		case k.Err != nil:
			fmt.Fprintf(w, "  %s: %v\n", k.Process, k.Err)
		case k.Step == "":
			fmt.Fprintf(w, "  %s: leading again %s after its restart\n", k.Process, k.Led.Round(time.Millisecond))
		default:
			var ws []time.Duration
			for _, v := range k.Waited {
				ws = append(ws, v)
			}
			slices.Sort(ws)
			held += len(k.Held)
			seen += len(ws)
			waits = append(waits, ws...)
			span := "none taken back"
			if len(ws) > 0 {
				span = fmt.Sprintf("taken back %s to %s after its restart", ws[0].Round(time.Millisecond), ws[len(ws)-1].Round(time.Millisecond))
			}
			landed := ""
			if k.Landed > 0 {
				landed = fmt.Sprintf(" (and %d more whose last write, sent before the kill, landed)", k.Landed)
			}
			fmt.Fprintf(w, "  %s (aimed at %s): held %d rows (%s)%s; %s\n", k.Process, k.Step, len(k.Held), statusesOf(k.Held), landed, span)
		}
	}
	slices.Sort(waits)
	if held > 0 {
		fmt.Fprintf(w, "  rows of killed agents: %d held, %d seen taken back; waited after the restart p50 %s, max %s\n",
			held, seen, percentile(waits, 0.5).Round(time.Millisecond), percentile(waits, 1).Round(time.Millisecond))
	}
}

// statusesOf counts rows by status: "Dumping 3, Syncing 1".
func statusesOf(rows []statemachine.Migration) string {
	n := map[statemachine.Status]int{}
	for _, m := range rows {
		n[m.Status]++
	}
	var parts []string
	for _, st := range statemachine.Statuses {
		if n[st] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", st, n[st]))
		}
	}
	return strings.Join(parts, ", ")
}
