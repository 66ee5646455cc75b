package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/config"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/statemachine/sqlstore"
)

// runStop: `migrate stop --reason "..."` sets the persisted stop switch.
func runStop(ctx context.Context, e *env, args []string) error {
	fs, cf := newFlags(e, "stop", `stop --reason "why"`)
	reason := fs.String("reason", "", "why the fleet is stopped (shown to everyone; required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if strings.TrimSpace(*reason) == "" {
		return usagef(`migrate stop --reason "disk alarm on dst-4"`, "--reason is required: others will read it")
	}
	store, cfg, err := openStore(ctx, e, cf)
	if err != nil {
		return err
	}
	defer store.Close()
	before, err := store.StopSwitch(ctx)
	if err != nil {
		return err
	}
	sw, err := store.SetStop(ctx, actor(cfg), *reason)
	if err != nil {
		return err
	}
	inFlight, err := store.CountStatuses(ctx, statemachine.InFlightStatuses()...)
	if err != nil {
		return err
	}
	if before.Set {
		fmt.Fprintf(e.stdout, "stop switch was already set by %s at %s: %s (left as it was)\n", sw.By, sw.Since.Format(time.RFC3339), sw.Reason)
		return nil
	}
	fmt.Fprintf(e.stdout, "stop switch set by %s: %s\nthe scheduler promotes nothing more (within one tick); the %d rows in flight finish. `migrate resume` clears it.\n",
		sw.By, sw.Reason, inFlight)
	return nil
}

// runResume: `migrate resume` clears the stop switch.
func runResume(ctx context.Context, e *env, args []string) error {
	fs, cf := newFlags(e, "resume", "resume")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	store, cfg, err := openStore(ctx, e, cf)
	if err != nil {
		return err
	}
	defer store.Close()
	sw, err := store.StopSwitch(ctx)
	if err != nil {
		return err
	}
	if !sw.Set {
		fmt.Fprintln(e.stdout, "stop switch was not set; nothing to do")
		return nil
	}
	if err := store.ClearStop(ctx, actor(cfg)); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "stop switch cleared (it was set by %s at %s: %s); a running scheduler promotes again within one tick\n",
		sw.By, sw.Since.Format(time.RFC3339), sw.Reason)
	return nil
}

// rowFilter is the selection flags of the bulk operator commands.
type rowFilter struct {
	id          *int64
	status      *string
	source      *string
	destination *string
	database    *string
}

func addRowFilter(fs *flag.FlagSet, statusHelp string) rowFilter {
	return rowFilter{
		id:          fs.Int64("id", 0, "only this row"),
		status:      fs.String("status", "", statusHelp),
		source:      fs.String("source", "", "only rows from this source host"),
		destination: fs.String("destination", "", "only rows to this destination host"),
		database:    fs.String("database", "", "only rows for this database name (exact)"),
	}
}

// bulkRows is the shared start of retry, cancel and rollback: parse the
// flags, insist on a filter when the action is final, open the store and
// select the matching rows in one of from. The caller closes the store.
func bulkRows(ctx context.Context, e *env, fs *flag.FlagSet, cf *config.Flags, f rowFilter, args []string,
	cmd, example string, requireFilter bool, from []statemachine.Status) (*sqlstore.Store, config.Config, []statemachine.Migration, error) {
	if err := parseFlags(fs, args); err != nil {
		return nil, config.Config{}, nil, err
	}
	if requireFilter && f.empty() {
		return nil, config.Config{}, nil, usagef(example, "say which rows: --id, --status, --source, --destination or --database")
	}
	store, cfg, err := openStore(ctx, e, cf)
	if err != nil {
		return nil, cfg, nil, err
	}
	rows, err := f.selectRows(ctx, store, cmd, from)
	if err != nil {
		store.Close()
		return nil, cfg, nil, err
	}
	return store, cfg, rows, nil
}

func (f rowFilter) empty() bool {
	return *f.id == 0 && *f.status == "" && *f.source == "" && *f.destination == "" && *f.database == ""
}

// selectRows returns the rows matching f whose status is one of allowed.
func (f rowFilter) selectRows(ctx context.Context, store *sqlstore.Store, cmd string, allowed []statemachine.Status) ([]statemachine.Migration, error) {
	statuses := allowed
	if *f.status != "" {
		statuses = nil
		for _, s := range strings.Split(*f.status, ",") {
			st := statemachine.Status(strings.TrimSpace(s))
			if !containsStatus(allowed, st) {
				return nil, usagef("migrate "+cmd+" -h", "%s applies to rows in %s, not %q", cmd, statusList(allowed), s)
			}
			statuses = append(statuses, st)
		}
	}
	if *f.id != 0 {
		m, err := store.Get(ctx, *f.id)
		if err != nil {
			return nil, err
		}
		if !containsStatus(statuses, m.Status) {
			return nil, fmt.Errorf("row %d is %q: %s applies to rows in %s", m.ID, m.Status, cmd, statusList(statuses))
		}
		return []statemachine.Migration{m}, nil
	}
	return store.List(ctx, statemachine.Filter{Statuses: statuses, Source: *f.source, Destination: *f.destination, DatabaseName: *f.database})
}

func containsStatus(list []statemachine.Status, s statemachine.Status) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func statusList(list []statemachine.Status) string {
	parts := make([]string, len(list))
	for i, s := range list {
		parts[i] = string(s)
	}
	return strings.Join(parts, ", ")
}

func describeRow(m statemachine.Migration) string {
	return fmt.Sprintf("row %d: %s %s, %s -> %s", m.ID, m.Engine, displayName(m.DatabaseName), m.Source, m.Destination)
}

// operateRows applies action to each row and reports each outcome; rows
// that moved meanwhile are reported and skipped.
func operateRows(ctx context.Context, e *env, store *sqlstore.Store, rows []statemachine.Migration, action, who, detail string) error {
	failed := 0
	for _, m := range rows {
		after, err := store.Operate(ctx, m.ID, action, who, detail)
		if err != nil {
			failed++
			fmt.Fprintf(e.stderr, "%s: not done: %v\n", describeRow(m), err)
			continue
		}
		fmt.Fprintf(e.stdout, "%s: %s -> %s\n", describeRow(m), m.Status, after.Status)
	}
	done := len(rows) - failed
	fmt.Fprintf(e.stdout, "%s: %s\n", action, plural(done, "row", "rows"))
	if failed > 0 {
		return fmt.Errorf("%d of %d rows could not be changed (see above)", failed, len(rows))
	}
	return nil
}

// runRetry: failed rows go back to their step's queued status.
func runRetry(ctx context.Context, e *env, args []string) error {
	fs, cf := newFlags(e, "retry", "retry [--status 'Dump failed'] [--source H] [--id N]")
	var failed []statemachine.Status
	for _, st := range statemachine.Statuses {
		if st.Failed() {
			failed = append(failed, st)
		}
	}
	f := addRowFilter(fs, "only rows in these failed statuses (comma-separated; default: all failed statuses)")
	store, cfg, rows, err := bulkRows(ctx, e, fs, cf, f, args, "retry", "", false, failed)
	if err != nil {
		return err
	}
	defer store.Close()
	if len(rows) == 0 {
		fmt.Fprintln(e.stdout, "no failed rows match; nothing to retry")
		return nil
	}
	return operateRows(ctx, e, store, rows, statemachine.ActionRetry, actor(cfg), "retried by "+actor(cfg))
}

// runCancel: Waiting rows are cancelled for good (dry run without --execute).
func runCancel(ctx context.Context, e *env, args []string) error {
	fs, cf := newFlags(e, "cancel", "cancel (--id N | --source H | --database NAME ...) [--execute]")
	f := addRowFilter(fs, "Waiting, or an online row's "+statusList(statemachine.StopStreamFrom)+" (its stream is removed by the rollback step)")
	execute := fs.Bool("execute", false, "cancel; without it, only show what would be cancelled")
	store, cfg, rows, err := bulkRows(ctx, e, fs, cf, f, args, "cancel", "migrate cancel --source db-17 --execute", true,
		append([]statemachine.Status{statemachine.Waiting}, statemachine.StopStreamFrom...))
	if err != nil {
		return err
	}
	defer store.Close()
	if len(rows) == 0 {
		fmt.Fprintln(e.stdout, "no Waiting or syncing rows match; nothing to cancel")
		return nil
	}
	if !*execute {
		return dryRun(e, "cancel", rows, "Cancelled is final: the row is never migrated (a syncing row is rolled back: its stream and the destination's copy are removed)")
	}
	return operateRows(ctx, e, store, rows, statemachine.ActionCancel, actor(cfg), "cancelled by "+actor(cfg))
}

// runRollback: failed rows go to To roll back (dry run without --execute).
// A row whose DNS name already moved may have taken writes at the
// destination; those need --discard-destination-writes.
func runRollback(ctx context.Context, e *env, args []string) error {
	fs, cf := newFlags(e, "rollback", "rollback (--id N | --status 'Import failed' ...) [--execute] [--discard-destination-writes]")
	rollbackFrom := append(slices.Clone(statemachine.RollbackFrom), statemachine.StopStreamFrom...)
	f := addRowFilter(fs, "only rows in these statuses (comma-separated): "+statusList(rollbackFrom))
	execute := fs.Bool("execute", false, "roll back; without it, only show what would be rolled back")
	discard := fs.Bool("discard-destination-writes", false, "also roll back rows whose DNS name already moved (writes made at the destination since are lost)")
	store, cfg, rows, err := bulkRows(ctx, e, fs, cf, f, args, "rollback", "migrate rollback --id 1234", true, rollbackFrom)
	if err != nil {
		return err
	}
	defer store.Close()
	rdns, err := newRollbackDNS(store, cfg)
	if err != nil {
		return err
	}
	defer rdns.Close()
	rows = rdns.switchedByDNS(ctx, rows)
	var ok, switched []statemachine.Migration
	for _, m := range rows {
		if !m.SwitchedAt.IsZero() && !*discard {
			switched = append(switched, m)
			continue
		}
		ok = append(ok, m)
	}
	for _, m := range switched {
		fmt.Fprintf(e.stderr, "%s: refused: its DNS name moved to the destination at %s, which may have taken writes since; "+
			"add --discard-destination-writes to lose them, or plan a migration back instead\n", describeRow(m), m.SwitchedAt.Format(time.RFC3339))
	}
	if len(ok) == 0 {
		if len(switched) > 0 {
			return errors.New("nothing to roll back without --discard-destination-writes")
		}
		fmt.Fprintln(e.stdout, "no rows match; nothing to roll back")
		return nil
	}
	if !*execute {
		for _, m := range ok {
			if !m.SwitchedAt.IsZero() {
				fmt.Fprintf(e.stdout, "would point the DNS name %s of %s back at its source first\n", m.DNSName, describeRow(m))
			}
		}
		return dryRun(e, "roll back", ok, "the source gets writes back and the destination copy is dropped")
	}
	// names that moved go back first (prerequisite: they point at the
	// destination), so that the source's rollback step may proceed
	var moved []statemachine.Migration
	refused := len(switched)
	ok = slices.DeleteFunc(ok, func(m statemachine.Migration) bool {
		if !m.SwitchedAt.IsZero() {
			moved = append(moved, m)
			return true
		}
		return false
	})
	if len(moved) > 0 {
		back := rdns.pointBack(ctx, e, store, moved)
		refused += len(moved) - len(back)
		ok = append(ok, back...)
	}
	if len(ok) == 0 {
		return fmt.Errorf("%d rows refused (see above)", refused)
	}
	detail := "rollback requested by " + actor(cfg)
	if *discard {
		detail += " (destination writes discarded)"
	}
	err = operateRows(ctx, e, store, ok, statemachine.ActionRollback, actor(cfg), detail)
	if err == nil && refused > 0 {
		err = fmt.Errorf("%d rows refused (see above)", refused)
	}
	return err
}

func dryRun(e *env, what string, rows []statemachine.Migration, consequence string) error {
	for _, m := range rows {
		fmt.Fprintf(e.stdout, "would %s %s (%s)\n", what, describeRow(m), m.Status)
	}
	fmt.Fprintf(e.stdout, "dry run: would %s %s; %s. Add --execute to do it.\n", what, plural(len(rows), "row", "rows"), consequence)
	return nil
}

// hostArg takes `migrate pause-source HOST [flags]`: the host comes first.
func hostArg(cmd string, args []string) (string, []string, error) {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return "", args, nil
		}
		return "", nil, usagef("migrate "+cmd+" db-17", "name the source host first")
	}
	return strings.ToLower(args[0]), args[1:], nil
}

// runPauseSource: no promotions from one source host.
func runPauseSource(ctx context.Context, e *env, args []string) error {
	host, rest, err := hostArg("pause-source", args)
	if err != nil {
		return err
	}
	fs, cf := newFlags(e, "pause-source", `pause-source HOST [--reason "why"]`)
	reason := fs.String("reason", "", "why (shown by migrate status)")
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	store, cfg, err := openStore(ctx, e, cf)
	if err != nil {
		return err
	}
	defer store.Close()
	p, err := store.PauseSource(ctx, host, actor(cfg), *reason)
	if err != nil {
		return err
	}
	inFlight, err := store.List(ctx, statemachine.Filter{Source: host, Statuses: statemachine.InFlightStatuses()})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "source %s paused by %s since %s: the scheduler promotes nothing more from it; its %s in flight finish. `migrate resume-source %s` lifts it.\n",
		p.Host, p.By, p.Since.Format(time.RFC3339), plural(len(inFlight), "row", "rows"), host)
	return nil
}

// runResumeSource lifts a pause.
func runResumeSource(ctx context.Context, e *env, args []string) error {
	host, rest, err := hostArg("resume-source", args)
	if err != nil {
		return err
	}
	fs, cf := newFlags(e, "resume-source", "resume-source HOST")
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	store, _, err := openStore(ctx, e, cf)
	if err != nil {
		return err
	}
	defer store.Close()
	was, err := store.ResumeSource(ctx, host)
	if err != nil {
		return err
	}
	if !was {
		fmt.Fprintf(e.stdout, "source %s was not paused; nothing to do\n", host)
		return nil
	}
	fmt.Fprintf(e.stdout, "source %s resumed: the scheduler promotes from it again\n", host)
	return nil
}
