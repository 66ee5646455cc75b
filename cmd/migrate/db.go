package main

import (
	"context"
	"fmt"

	"github.com/fleetmigrate/fleetmigrate/migrations"
	"github.com/fleetmigrate/fleetmigrate/statemachine/sqlstore"
)

// runDB: `migrate db upgrade` applies pending schema migrations (idempotent,
// safe to run concurrently); `migrate db status` shows the version.
func runDB(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || (args[0] != "upgrade" && args[0] != "status") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprintln(e.stdout, "usage: migrate db upgrade|status [--config FILE]")
			return nil
		}
		return usagef("migrate db upgrade", "want a subcommand: upgrade or status")
	}
	sub := args[0]
	fs, cf := newFlags(e, "db "+sub, "db "+sub+" [--config FILE]")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	cfg, log, err := loadConfig(e, cf)
	if err != nil {
		return err
	}
	db, dialect, where, err := sqlstore.Connect(ctx, storeConfig(cfg, log))
	if err != nil {
		return err
	}
	defer db.Close()
	before, err := migrations.Status(ctx, db, dialect)
	if err != nil {
		return err
	}
	if sub == "status" {
		state := "up to date"
		switch {
		case before.Current == 0:
			state = "empty: run `migrate db upgrade`"
		case before.Outdated():
			state = "outdated: run `migrate db upgrade`"
		case before.Newer():
			state = "newer than this binary: upgrade the binary"
		}
		fmt.Fprintf(e.stdout, "state database: %s\nschema version: %d (this binary: %d), %s\n", where, before.Current, before.Latest, state)
		return nil
	}
	applied, err := migrations.Up(ctx, db, dialect, nil)
	if err != nil {
		return err
	}
	after, err := migrations.Status(ctx, db, dialect)
	if err != nil {
		return err
	}
	if len(applied) == 0 {
		fmt.Fprintf(e.stdout, "state database: %s\nschema already at version %d; nothing to do\n", where, after.Current)
		return nil
	}
	fmt.Fprintf(e.stdout, "state database: %s\nschema upgraded from version %d to %d\n", where, before.Current, after.Current)
	return nil
}
