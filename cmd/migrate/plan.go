package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/planfile"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// runPlan: `migrate plan --file fleet.csv [--dry-run]` validates every line
// and reports every bad one with its line number; only a wholly valid file
// is inserted, in one transaction.
func runPlan(ctx context.Context, e *env, args []string) error {
	fs, cf := newFlags(e, "plan", "plan --file fleet.csv [--dry-run] [--config FILE]")
	file := fs.String("file", "", "the plan: CSV with header engine,database,source,destination,dns_name[,mode] (- for stdin)")
	dryRun := fs.Bool("dry-run", false, "validate the file and check it against the state table, insert nothing")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *file == "" {
		return usagef("migrate plan --file fleet.csv", "--file is required")
	}
	r, name := e.stdin, "stdin"
	if *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			return fmt.Errorf("read the plan: %w", err)
		}
		defer f.Close()
		r, name = f, *file
	}
	start := time.Now()
	lines, err := planfile.Parse(r)
	var bad planfile.Errors
	if errors.As(err, &bad) {
		for _, b := range bad {
			fmt.Fprintf(e.stderr, "%s:%d: %s\n", name, b.Number, strings.Join(b.Problems, "; "))
		}
		return fmt.Errorf("%d of %s in %s are bad; nothing was planned",
			len(bad), plural(len(bad)+len(lines), "line", "lines"), name)
	}
	if err != nil {
		return fmt.Errorf("%s: %w; nothing was planned", name, err)
	}

	store, cfg, err := openStore(ctx, e, cf)
	if err != nil {
		return err
	}
	defer store.Close()
	def, err := statemachine.ParseMode(cfg.Online.DefaultMode)
	if err != nil {
		return fmt.Errorf("online.default-mode in the configuration: %w", err)
	}
	rows := make([]statemachine.Planned, len(lines))
	for i, l := range lines {
		rows[i] = l.Planned
		if rows[i].Mode == "" {
			rows[i].Mode = def
		}
	}
	n, err := store.Plan(ctx, rows, actor(cfg), *dryRun)
	var pc *statemachine.PlanConflictsError
	if errors.As(err, &pc) {
		badLines := map[int]bool{}
		for _, c := range pc.Conflicts {
			badLines[c.Index] = true
			l := lines[c.Index]
			fmt.Fprintf(e.stderr, "%s:%d: %s database %s on %s: %s\n", name, l.Number, l.Engine, displayName(l.DatabaseName), l.Source, c.Reason)
		}
		return fmt.Errorf("%d of %s in %s conflict with the state table; nothing was planned",
			len(badLines), plural(len(lines), "line", "lines"), name)
	}
	if err != nil {
		return err
	}
	took := time.Since(start).Round(time.Millisecond)
	if *dryRun {
		fmt.Fprintf(e.stdout, "%s: %s valid and free of conflicts (dry run: nothing inserted, %s)\n", name, plural(n, "line", "lines"), took)
		return nil
	}
	fmt.Fprintf(e.stdout, "%s: planned %s in Waiting (%s)\n", name, plural(n, "migration", "migrations"), took)
	return nil
}
