package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/mysql"
	"github.com/fleetmigrate/fleetmigrate/engine/postgres"
	"github.com/fleetmigrate/fleetmigrate/internal/config"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// streamVerdict says what gc does with a stream object named name:
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

// gcStreams removes, on every server in the agent registry, what online
// streams of ours left there whose row does not stream any more (a row
// edited by hand, a teardown that could not reach a server): PostgreSQL's
// replication slots, subscriptions and publications — a slot nobody
// consumes keeps WAL at its server until the disk fills — and MariaDB's
// stream records (a record left makes its destination's agent stream
// again). It returns how many servers or removals failed.
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
		for _, list := range []func() ([]streamObject, func(), error){
			func() ([]streamObject, func(), error) { return pgStreamObjects(ctx, cfg, a) },
			func() ([]streamObject, func(), error) { return myStreamObjects(ctx, cfg, a) },
		} {
			objs, done, err := list()
			if err != nil {
				failed++
				fmt.Fprintf(e.stderr, "streams at %s: %v\n", a.Host, err)
				continue
			}
			r, k, f := gcObjects(ctx, e, store, objs, a.Host, verb, execute)
			done()
			removed, kept, failed = removed+r, kept+k, failed+f
		}
	}
	summary := fmt.Sprintf("%s %d stream objects (replication slots, subscriptions, publications, stream records) of rows that do not stream; kept %d", verb, removed, kept)
	if !execute && removed > 0 {
		summary = "dry run: " + summary + "; add --execute to remove them"
	}
	fmt.Fprintln(e.stdout, summary)
	return failed
}

// streamObject is one thing of a stream at a server, and how to remove it.
type streamObject struct {
	kind, name, database string
	drop                 func() error
}

// pgStreamObjects lists the subscriptions, slots and publications of ours
// at a host's PostgreSQL server, in the order they must go (a
// subscription holds its slot); done closes the connection.
func pgStreamObjects(ctx context.Context, cfg config.Config, a statemachine.Agent) ([]streamObject, func(), error) {
	addr := a.Endpoints[statemachine.EnginePostgres]
	if addr == "" {
		return nil, func() {}, nil
	}
	srv, err := postgres.Open(ctx, engine.Server{Host: a.Host, Address: addr, User: cfg.Postgres.User, Password: cfg.Postgres.Password},
		postgres.Options{SSLMode: cfg.Postgres.SSLMode, SSLRootCert: cfg.Postgres.SSLRootCert, MaintenanceDB: "postgres"})
	if err != nil {
		return nil, nil, err
	}
	done := func() { _ = srv.Close() }
	subs, err := srv.Subscriptions(ctx, engine.StreamPrefix)
	if err != nil {
		done()
		return nil, nil, err
	}
	slots, err := srv.Slots(ctx, engine.StreamPrefix)
	if err != nil {
		done()
		return nil, nil, err
	}
	pubs, err := srv.Publications(ctx, engine.StreamPrefix)
	if err != nil {
		done()
		return nil, nil, err
	}
	var objs []streamObject
	for name, db := range subs {
		objs = append(objs, streamObject{"subscription", name, db, func() error { return srv.DropSubscription(ctx, name) }})
	}
	for _, sl := range slots {
		objs = append(objs, streamObject{"replication slot", sl.Name, sl.Database, func() error { return srv.DropSlot(ctx, sl.Name) }})
	}
	for name, db := range pubs {
		objs = append(objs, streamObject{"publication", name, db, func() error { return srv.DropPublication(ctx, db, name) }})
	}
	return objs, done, nil
}

// myStreamObjects lists the stream records of ours at a host's MariaDB
// server.
func myStreamObjects(ctx context.Context, cfg config.Config, a statemachine.Agent) ([]streamObject, func(), error) {
	addr := a.Endpoints[statemachine.EngineMySQL]
	if addr == "" {
		return nil, func() {}, nil
	}
	srv, err := mysql.Open(ctx, engine.Server{Host: a.Host, Address: addr, User: cfg.MySQL.User, Password: cfg.MySQL.Password}, mysql.Options{TLS: cfg.MySQL.TLS, CAFile: cfg.MySQL.CAFile})
	if err != nil {
		return nil, nil, err
	}
	recs, err := srv.StreamRecords(ctx, engine.StreamPrefix)
	if err != nil {
		_ = srv.Close()
		return nil, nil, err
	}
	var objs []streamObject
	for _, r := range recs {
		objs = append(objs, streamObject{"stream record", r.Name, r.Database, func() error { return srv.RemoveStreamRecord(ctx, r.Name) }})
	}
	return objs, func() { _ = srv.Close() }, nil
}

// gcObjects removes the objects whose row does not stream (streamVerdict).
func gcObjects(ctx context.Context, e *env, store statemachine.Store, objs []streamObject, host, verb string, execute bool) (removed, kept, failed int) {
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
