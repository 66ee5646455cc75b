package main

import (
	"context"
	"fmt"

	"github.com/fleetmigrate/fleetmigrate/migrations"
	"github.com/fleetmigrate/fleetmigrate/statemachine/sqlstore"
)

// runDB: `migrate db upgrade` applies pending schema migrations (idempotent,
// safe to run concurrently); `migrate db status` shows the version;
// grant-agent, revoke-agent and logins manage the agents' own logins.
func runDB(ctx context.Context, e *env, args []string) error {
	const usage = "usage: migrate db upgrade|status|logins [--config FILE]\n" +
		"       migrate db grant-agent HOST --password-file FILE [--dns] [--login NAME] [--from CLIENT-HOST]\n" +
		"       migrate db revoke-agent HOST|LOGIN"
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Fprintln(e.stdout, usage)
		return nil
	}
	if len(args) > 0 {
		switch args[0] {
		case "grant-agent":
			return runGrantAgent(ctx, e, args[1:])
		case "revoke-agent":
			return runRevokeAgent(ctx, e, args[1:])
		case "logins":
			return runLogins(ctx, e, args[1:])
		}
	}
	if len(args) == 0 || (args[0] != "upgrade" && args[0] != "status") {
		return usagef("migrate db -h", "want a subcommand: upgrade, status, grant-agent, revoke-agent or logins")
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
		if before.Current >= 11 {
			logins, err := sqlstore.NewAdmin(db, dialect).AgentLogins(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "agent logins:   %d (migrate db logins lists them; any other login is an operator's)\n", len(logins))
		}
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
	// A new version may have added a table or a column the agents read:
	// their logins get it now, not at their first refusal.
	if n, err := sqlstore.NewAdmin(db, dialect).RefreshGrants(ctx); err != nil {
		return fmt.Errorf("schema upgraded, but the agent logins' privileges were not refreshed (re-run migrate db upgrade): %w", err)
	} else if n > 0 {
		fmt.Fprintf(e.stdout, "agent logins: %d, privileges refreshed\n", n)
	}
	return nil
}
