package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/postgres"
	"github.com/fleetmigrate/fleetmigrate/internal/config"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// streamVerdict says what gc does with a PostgreSQL object named name:
// remove it (its row exists, the name is its row's, and the row does not
// stream any more), or leave it, and why.
func streamVerdict(ctx context.Context, store statemachine.Store, name string) (remove bool, why string) {
	id, ok := engine.StreamRow(name)
	if !ok {
		return false, "not a name of ours"
	}
	m, err := store.Get(ctx, id)
	switch {
	case errors.Is(err, statemachine.ErrNotFound):
		return false, fmt.Sprintf("no row %d in this state database (another fleet's?)", id)
	case err != nil:
		return false, fmt.Sprintf("row %d: %v", id, err)
	case engine.StreamName(m.ID, m.DatabaseName) != name:
		return false, fmt.Sprintf("row %d moves another database (another fleet's?)", id)
	case m.Status.Streams():
		return false, fmt.Sprintf("row %d is %s and streams", id, m.Status)
	}
	return true, fmt.Sprintf("row %d is %s: nothing streams for it", id, m.Status)
}

// gcStreams removes, on every PostgreSQL server in the agent registry, the
// replication slots, subscriptions and publications of ours whose row does
// not stream any more (a row edited by hand, a teardown that could not
// reach a server): a slot nobody consumes keeps WAL at its server until the
// disk fills. It returns how many servers or removals failed.
func gcStreams(ctx context.Context, e *env, store statemachine.Store, cfg config.Config, execute bool) int {
	verb := "would remove"
	if execute {
		verb = "remove"
	}
	agents, err := store.Agents(ctx, 0)
	if err != nil {
		fmt.Fprintf(e.stderr, "streams: %v\n", err)
		return 1
	}
	var removed, kept, failed int
	for _, a := range agents {
		addr := a.Endpoints[statemachine.EnginePostgres]
		if addr == "" {
			continue
		}
		srv, err := postgres.Open(ctx, engine.Server{Host: a.Host, Address: addr, User: cfg.Postgres.User, Password: cfg.Postgres.Password},
			postgres.Options{SSLMode: cfg.Postgres.SSLMode, SSLRootCert: cfg.Postgres.SSLRootCert, MaintenanceDB: "postgres"})
		if err != nil {
			failed++
			fmt.Fprintf(e.stderr, "streams at %s: %v\n", a.Host, err)
			continue
		}
		r, k, f := gcStreamsAt(ctx, e, store, srv, a.Host, verb, execute)
		_ = srv.Close()
		removed, kept, failed = removed+r, kept+k, failed+f
	}
	summary := fmt.Sprintf("%s %d replication slots, subscriptions and publications of rows that do not stream; kept %d", verb, removed, kept)
	if !execute && removed > 0 {
		summary = "dry run: " + summary + "; add --execute to remove them"
	}
	fmt.Fprintln(e.stdout, summary)
	return failed
}

func gcStreamsAt(ctx context.Context, e *env, store statemachine.Store, srv *postgres.Server, host, verb string, execute bool) (removed, kept, failed int) {
	subs, err := srv.Subscriptions(ctx, engine.StreamPrefix)
	if err != nil {
		fmt.Fprintf(e.stderr, "streams at %s: %v\n", host, err)
		return 0, 0, 1
	}
	slots, err := srv.Slots(ctx, engine.StreamPrefix)
	if err != nil {
		fmt.Fprintf(e.stderr, "streams at %s: %v\n", host, err)
		return 0, 0, 1
	}
	pubs, err := srv.Publications(ctx, engine.StreamPrefix)
	if err != nil {
		fmt.Fprintf(e.stderr, "streams at %s: %v\n", host, err)
		return 0, 0, 1
	}
	type object struct {
		kind, name, database string
		drop                 func() error
	}
	var objs []object
	for name, db := range subs {
		objs = append(objs, object{"subscription", name, db, func() error { return srv.DropSubscription(ctx, name) }})
	}
	for _, sl := range slots {
		objs = append(objs, object{"replication slot", sl.Name, sl.Database, func() error { return srv.DropSlot(ctx, sl.Name) }})
	}
	for name, db := range pubs {
		objs = append(objs, object{"publication", name, db, func() error { return srv.DropPublication(ctx, db, name) }})
	}
	// Subscriptions first (a subscription holds its slot), then slots.
	for _, o := range objs {
		remove, why := streamVerdict(ctx, store, o.name)
		if !remove {
			kept++
			fmt.Fprintf(e.stdout, "keep   %s %s in %q at %s: %s\n", o.kind, o.name, o.database, host, why)
			continue
		}
		fmt.Fprintf(e.stdout, "%s %s %s in %q at %s: %s\n", verb, o.kind, o.name, o.database, host, why)
		if execute {
			if err := o.drop(); err != nil {
				failed++
				fmt.Fprintf(e.stderr, "%s %s at %s: %v\n", o.kind, o.name, host, err)
				continue
			}
		}
		removed++
	}
	return removed, kept, failed
}
