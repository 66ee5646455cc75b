package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// runList: `migrate list [--status S] [--source H] ...` lists rows in plan
// order, a page at a time (--after-id to page on).
func runList(ctx context.Context, e *env, args []string) error {
	fs, cf := newFlags(e, "list", "list [--status S[,S...]] [--source H] [--destination H] [--database NAME] [--limit N] [--after-id ID] [--json]")
	statuses := fs.String("status", "", `comma-separated statuses, e.g. "Dump failed,Import failed"`)
	failed := fs.Bool("failed", false, "only rows in a failed status")
	source := fs.String("source", "", "only rows from this source host")
	dest := fs.String("destination", "", "only rows to this destination host")
	database := fs.String("database", "", "only rows for this database name (exact)")
	limit := fs.Int("limit", 100, "at most this many rows (0: all)")
	after := fs.Int64("after-id", 0, "only rows with a larger id (next page)")
	asJSON := fs.Bool("json", false, "print JSON for machines")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	f := statemachine.Filter{Source: *source, Destination: *dest, DatabaseName: *database, Limit: *limit, AfterID: *after}
	if *statuses != "" {
		for _, s := range strings.Split(*statuses, ",") {
			st := statemachine.Status(strings.TrimSpace(s))
			if !st.Valid() {
				var all []string
				for _, v := range statemachine.Statuses {
					all = append(all, string(v))
				}
				return usagef(`migrate list --status "Dump failed"`, "unknown status %q (statuses: %s)", s, strings.Join(all, ", "))
			}
			f.Statuses = append(f.Statuses, st)
		}
	}
	if *failed {
		for _, st := range statemachine.Statuses {
			if st.Failed() {
				f.Statuses = append(f.Statuses, st)
			}
		}
	}
	store, _, err := openStore(ctx, e, cf)
	if err != nil {
		return err
	}
	defer store.Close()
	rows, err := store.List(ctx, f)
	if err != nil {
		return err
	}
	if *asJSON {
		if rows == nil {
			rows = []statemachine.Migration{}
		}
		return writeJSON(e.stdout, rows)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tENGINE\tMODE\tDATABASE\tSOURCE\tDESTINATION\tSTATUS\tATTEMPT\tLAST ERROR")
	for _, m := range rows {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", m.ID, m.Engine, m.Mode, displayName(m.DatabaseName), m.Source, m.Destination, m.Status, m.Attempt, firstLine(m.LastError, 80))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if *limit > 0 && len(rows) == *limit {
		fmt.Fprintf(e.stderr, "(first %d rows; next page: --after-id %d)\n", *limit, rows[len(rows)-1].ID)
	}
	return nil
}

func firstLine(s string, n int) string {
	s, _, _ = strings.Cut(s, "\n")
	if len([]rune(s)) > n {
		return string([]rune(s)[:n-1]) + "…"
	}
	return s
}
