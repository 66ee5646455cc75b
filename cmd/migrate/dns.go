package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/fleetmigrate/fleetmigrate/dns"
	"github.com/fleetmigrate/fleetmigrate/internal/config"
	"github.com/fleetmigrate/fleetmigrate/internal/dnsopen"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/statemachine/sqlstore"
)

// runDNS: migrate dns lower-ttl | restore-ttl.
func runDNS(ctx context.Context, e *env, args []string) error {
	const hint = "migrate dns lower-ttl --ttl 60 --status Waiting --execute"
	if len(args) == 0 {
		return usagef(hint, "name a subcommand: lower-ttl (a day before the night) or restore-ttl (after Done)")
	}
	switch args[0] {
	case "lower-ttl":
		return runTTL(ctx, e, args[1:], true)
	case "restore-ttl":
		return runTTL(ctx, e, args[1:], false)
	case "-h", "--help", "help":
		fmt.Fprintln(e.stdout, "usage: migrate dns lower-ttl --ttl 60 [--status Waiting] [--execute]\n       migrate dns restore-ttl [--status Done] [--execute]")
		return nil
	}
	return usagef(hint, "unknown dns subcommand %q (lower-ttl, restore-ttl)", args[0])
}

// ttlJob is one name to change.
type ttlJob struct {
	// name is normalised (trailing dot); key is how dns_ttl and the
	// messages spell it (without).
	name, key string
	// holds is what the name must hold (the source's target before the
	// switch, the destination's after).
	holds dns.Target
	row   statemachine.Migration
	// ttl is the TTL to set (restore: the recorded original).
	ttl uint32
}

// ttlOutcome counts what happened to the names.
type ttlOutcome struct {
	mu                        sync.Mutex
	changed, already, refused int
	failed                    int
	reasons                   map[string][]string // message -> names
}

func (o *ttlOutcome) add(what *int, name, reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	*what++
	if reason != "" {
		if o.reasons == nil {
			o.reasons = map[string][]string{}
		}
		o.reasons[reason] = append(o.reasons[reason], name)
	}
}

func runTTL(ctx context.Context, e *env, args []string, lower bool) error {
	cmd, defStatus := "dns restore-ttl", string(statemachine.Done)
	if lower {
		cmd, defStatus = "dns lower-ttl", string(statemachine.Waiting)
	}
	fs, cf := newFlags(e, cmd, cmd+" [--ttl 60] [--status '"+defStatus+"'] [--source HOST] [--execute] [--rate N]")
	f := addRowFilter(fs, "rows in these statuses (comma-separated); default: "+defStatus)
	ttl := fs.Uint("ttl", 60, "the lowered TTL in seconds (lower-ttl)")
	execute := fs.Bool("execute", false, "change the records; without it, only show what would change")
	rateFlag := fs.Float64("rate", 0, "updates per second at most (default: dns.rate of the configuration)")
	workers := fs.Int("concurrency", 32, "names in flight at once (changes in flight together share UPDATE messages)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if !lower && isSet(fs, "ttl") {
		return usagef("migrate dns restore-ttl --status Done --execute", "restore-ttl puts back the TTL recorded by lower-ttl: --ttl does not apply")
	}
	if lower && (*ttl < 1 || *ttl > 86400) {
		return usagef("migrate dns lower-ttl --ttl 60", "--ttl %d: want 1 to 86400 seconds", *ttl)
	}
	if *f.status == "" {
		*f.status = defStatus
	}
	store, cfg, err := openStore(ctx, e, cf)
	if err != nil {
		return err
	}
	defer store.Close()
	rows, err := f.selectRows(ctx, store, cmd, statemachine.Statuses)
	if err != nil {
		return err
	}
	u, err := dnsopen.Updater(cfg.DNS)
	if err != nil {
		return err
	}
	defer u.Close()
	targets := dns.Targets{Config: cfg.DNS.Targets, Lookup: store.AgentFor}
	jobs, skipped, err := ttlJobs(ctx, store, targets, rows, lower, uint32(*ttl))
	if err != nil {
		return err
	}
	for _, s := range skipped {
		fmt.Fprintln(e.stderr, s)
	}
	if len(jobs) == 0 {
		fmt.Fprintf(e.stdout, "%s: no names to change among %s\n", cmd, plural(len(rows), "row", "rows"))
		return nil
	}
	r := *rateFlag
	if r <= 0 {
		r = cfg.DNS.Rate
	}
	out := &ttlOutcome{}
	start := time.Now()
	if err := changeTTLs(ctx, u, store, jobs, lower, *execute, r, *workers, actor(cfg), out); err != nil {
		return err
	}
	verb := map[bool]string{true: "lowered", false: "restored"}[lower]
	if !*execute {
		verb = "would change"
	}
	fmt.Fprintf(e.stdout, "%s: %d names %s, %d already right, %d refused, %d failed, in %s\n",
		cmd, out.changed, verb, out.already, out.refused, out.failed, time.Since(start).Round(time.Millisecond))
	reasons := make([]string, 0, len(out.reasons))
	for k := range out.reasons {
		reasons = append(reasons, k)
	}
	sort.Strings(reasons)
	for _, k := range reasons {
		names := out.reasons[k]
		more := ""
		if len(names) > 5 {
			more = fmt.Sprintf(" and %d more", len(names)-5)
			names = names[:5]
		}
		fmt.Fprintf(e.stderr, "  %s: %s%s\n", k, strings.Join(names, ", "), more)
	}
	if !*execute {
		fmt.Fprintln(e.stdout, "dry run: nothing was changed. Add --execute to do it.")
	}
	if out.refused+out.failed > 0 {
		return &exitError{code: 1, msg: fmt.Sprintf("%d names not changed (see above); fix them and run the command again: names already done are skipped", out.refused+out.failed)}
	}
	return nil
}

func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// ttlJobs turns rows into one job per DNS name: what the name must hold,
// and the TTL to give it.
func ttlJobs(ctx context.Context, store *sqlstore.Store, targets dns.Targets, rows []statemachine.Migration, lower bool, ttl uint32) ([]ttlJob, []string, error) {
	var jobs []ttlJob
	var skipped []string
	seen := map[string]bool{}
	for _, m := range rows {
		if m.DNSName == "" {
			continue
		}
		n, err := dns.Normalize(m.DNSName)
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("%s: %v", describeRow(m), err))
			continue
		}
		if seen[n] {
			continue
		}
		seen[n] = true
		host := m.Source
		if !m.SwitchedAt.IsZero() {
			host = m.Destination
		}
		holds, err := targets.Of(ctx, host)
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("%s: %v", describeRow(m), err))
			continue
		}
		jobs = append(jobs, ttlJob{name: n, key: show(n), holds: holds, row: m, ttl: ttl})
	}
	if lower {
		return jobs, skipped, nil
	}
	// restore: only names with a record not yet restored
	names := make([]string, len(jobs))
	for i, j := range jobs {
		names[i] = j.key
	}
	recs, err := store.TTLRecords(ctx, names)
	if err != nil {
		return nil, nil, err
	}
	kept := jobs[:0]
	for _, j := range jobs {
		rec, ok := recs[j.key]
		if !ok || !rec.RestoredAt.IsZero() {
			continue
		}
		j.ttl = rec.OriginalTTL
		kept = append(kept, j)
	}
	return kept, skipped, nil
}

// changeTTLs works through jobs with workers, at most r updates a second.
func changeTTLs(ctx context.Context, u *dns.Updater, store *sqlstore.Store, jobs []ttlJob, lower, execute bool, r float64, workers int, who string, out *ttlOutcome) error {
	lim := rate.NewLimiter(rate.Limit(r), max(1, int(r/10)))
	ch := make(chan ttlJob)
	var wg sync.WaitGroup
	for range max(1, workers) {
		wg.Go(func() {
			for j := range ch {
				if err := lim.Wait(ctx); err != nil {
					out.add(&out.failed, j.key, "interrupted")
					continue
				}
				changeTTL(ctx, u, store, j, lower, execute, who, out)
			}
		})
	}
	for _, j := range jobs {
		if ctx.Err() != nil {
			break
		}
		ch <- j
	}
	close(ch)
	wg.Wait()
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted: run the command again to finish (names already done are skipped): %w", ctx.Err())
	}
	return nil
}

func changeTTL(ctx context.Context, u *dns.Updater, store *sqlstore.Store, j ttlJob, lower, execute bool, who string, out *ttlOutcome) {
	name := j.key
	rec, err := u.Lookup(ctx, j.name)
	if err != nil {
		out.add(&out.failed, name, err.Error())
		return
	}
	if !rec.Target.Equal(j.holds) {
		mm := &dns.MismatchError{Name: j.name, Have: rec.Target, Expected: j.holds}
		out.add(&out.refused, name, "points elsewhere ("+mm.Error()+")")
		return
	}
	done := rec.TTL == j.ttl || (lower && rec.TTL < j.ttl)
	if done {
		if !lower && execute {
			if err := store.MarkTTLRestored(ctx, j.key); err != nil {
				out.add(&out.failed, name, err.Error())
				return
			}
		}
		out.add(&out.already, name, "")
		return
	}
	if !execute {
		out.add(&out.changed, name, "")
		return
	}
	if lower {
		// record the original first: a crash after the change must not
		// lose it, and a re-run keeps the first record's
		if _, err := store.SaveTTL(ctx, j.key, rec.TTL, j.ttl, who); err != nil {
			out.add(&out.failed, name, err.Error())
			return
		}
	}
	if _, err := u.SetTTL(ctx, j.name, j.holds, j.ttl); err != nil {
		var mm *dns.MismatchError
		if errors.As(err, &mm) {
			out.add(&out.refused, name, "points elsewhere ("+err.Error()+")")
		} else {
			out.add(&out.failed, name, err.Error())
		}
		return
	}
	if !lower {
		if err := store.MarkTTLRestored(ctx, j.key); err != nil {
			out.add(&out.failed, name, err.Error())
			return
		}
	}
	out.add(&out.changed, name, "")
}

func show(name string) string { return strings.TrimSuffix(name, ".") }

// rollbackDNS is the DNS side of migrate rollback: nil updater when the
// configuration has no dns section (err says why, for rows that need it).
type rollbackDNS struct {
	u       *dns.Updater
	err     error
	targets dns.Targets
	who     string
}

func newRollbackDNS(store *sqlstore.Store, cfg config.Config) (*rollbackDNS, error) {
	allowed, err := dns.ParseAllowed(cfg.DNS.AllowedTargets)
	if err != nil {
		return nil, err
	}
	r := &rollbackDNS{targets: dns.Targets{Config: cfg.DNS.Targets, Lookup: store.AgentFor, Allowed: allowed}, who: actor(cfg)}
	if !cfg.DNS.Configured() {
		r.err = errors.New("pointing DNS names back at their source needs the dns section of the configuration here (zones and the TSIG key)")
		return r, nil
	}
	u, err := dnsopen.Updater(cfg.DNS)
	if err != nil {
		return nil, err
	}
	r.u = u
	return r, nil
}

func (r *rollbackDNS) Close() {
	if r.u != nil {
		r.u.Close()
	}
}

// pointBack points the DNS names of switched rows back at their source
// (prerequisite: they point at the destination) and records it, so that
// the source's rollback step may proceed. It returns the rows it pointed
// back and says why for the others.
func (r *rollbackDNS) pointBack(ctx context.Context, e *env, store *sqlstore.Store, rows []statemachine.Migration) []statemachine.Migration {
	var ok []statemachine.Migration
	for _, m := range rows {
		err := r.err
		if err == nil {
			var detail string
			if detail, err = r.pointBackOne(ctx, store, m); err == nil {
				fmt.Fprintf(e.stdout, "%s: %s\n", describeRow(m), detail)
				m.SwitchedAt = time.Time{}
				ok = append(ok, m)
				continue
			}
		}
		fmt.Fprintf(e.stderr, "%s: not rolled back: its DNS name %s still points at the destination %s: %v\n", describeRow(m), m.DNSName, m.Destination, err)
	}
	return ok
}

func (r *rollbackDNS) pointBackOne(ctx context.Context, store *sqlstore.Store, m statemachine.Migration) (string, error) {
	// The name goes back to the source's target: one the configuration
	// vouches for, as the DNS step's (dns.allowed-targets).
	src, err := r.targets.Vouched(ctx, m.Source)
	if err != nil {
		return "", err
	}
	dst, err := r.targets.Of(ctx, m.Destination)
	if err != nil {
		return "", err
	}
	res, err := r.u.Repoint(ctx, m.DNSName, dst, src)
	if err != nil {
		return "", err
	}
	detail := fmt.Sprintf("DNS name %s points at the source %s (%s) again, by %s", m.DNSName, m.Source, src, r.who)
	if !res.Changed {
		detail = fmt.Sprintf("DNS name %s already pointed at the source %s (%s)", m.DNSName, m.Source, src)
	}
	return detail, store.Unswitch(ctx, m.ID, r.who, detail)
}

// switchedByDNS marks DNS failed rows whose name points at the destination
// although no switch was recorded (an update whose answer was lost).
// Without a dns section it cannot look, and leaves them as they are.
func (r *rollbackDNS) switchedByDNS(ctx context.Context, rows []statemachine.Migration) []statemachine.Migration {
	if r.u == nil {
		return rows
	}
	out := slices.Clone(rows)
	for i, m := range out {
		if m.DNSName == "" || !m.SwitchedAt.IsZero() || m.Status != statemachine.DNSFailed {
			continue
		}
		dst, err := r.targets.Of(ctx, m.Destination)
		if err != nil {
			continue
		}
		if rec, err := r.u.Lookup(ctx, m.DNSName); err == nil && rec.Target.Equal(dst) {
			out[i].SwitchedAt = m.UpdatedAt // moved; when exactly is unknown
		}
	}
	return out
}
