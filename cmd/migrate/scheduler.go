package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/obs"
	"github.com/fleetmigrate/fleetmigrate/scheduler"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// Exit codes of the scheduler besides 0 (stopped by a signal), 1 (error)
// and 2 (usage).
const (
	// exitTripped: the stop switch tripped; a person must look.
	exitTripped = 3
	// exitHeld: another scheduler, which may be alive, holds the lease (or
	// took it): the shipped unit retries, so a crashed scheduler's
	// successor, or a standby on another host, starts once it is free.
	exitHeld = 4
)

// runScheduler: `migrate --max-procs N` keeps N migrations in flight until
// SIGINT/SIGTERM (exit 0: agents finish what is in flight), an automatic trip
// of the stop switch (exit 3), another live scheduler holding the lease
// (exit 4), or an error (exit 1).
func runScheduler(ctx context.Context, e *env, args []string) error {
	fs, cf := newFlags(e, "", "--max-procs N [flags]")
	maxProcs := fs.Int("max-procs", 0, "migrations to keep in flight (required); failed rows count until an operator acts")
	perSource := fs.Int("max-per-source", scheduler.DefaultMaxPerSource, "in-flight rows per source host (0: no cap)")
	perDest := fs.Int("max-per-destination", scheduler.DefaultMaxPerDestination, "in-flight rows per destination host (0: no cap)")
	order := fs.String("order", string(statemachine.OrderPlan), "order within a source host: plan (plan order) or size (smallest first)")
	tick := fs.Duration("tick", scheduler.DefaultTick, "how often to promote and rescue")
	lease := fs.Duration("lease", 0, "scheduler lease; another scheduler may take over this long after this one dies (default: 3 ticks, at least 15s)")
	maxAttempts := fs.Int("max-attempts", scheduler.DefaultMaxAttempts, "attempts of a step before a row whose agent died goes to its failed status")
	maxFailed := fs.Int("max-failed", 0, "trip the stop switch when this many rows are in a failed status (0: off)")
	maxRate := fs.Float64("max-failure-rate", 0, "trip the stop switch when this fraction of the steps in --window failed, e.g. 0.2 (0: off)")
	window := fs.Duration("window", scheduler.DefaultWindow, "time window of --max-failure-rate")
	minSample := fs.Int("min-sample", scheduler.DefaultMinSample, "steps needed in --window before --max-failure-rate can trip")
	metricsAddr := fs.String("metrics-addr", "", "serve Prometheus /metrics and /healthz on this address, e.g. :9108")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *maxProcs == 0 {
		return usagef("migrate --max-procs 400", "--max-procs is required")
	}
	noCap := func(v int) int {
		if v == 0 {
			return -1
		}
		return v
	}
	// On the command line a zero is never "the default": flags show their
	// defaults, and an explicit 0 where none makes sense is a mistake.
	var bad []string
	if *perSource < 0 || *perDest < 0 {
		bad = append(bad, "caps cannot be negative (0 means no cap)")
	}
	for name, d := range map[string]time.Duration{"--tick": *tick, "--window": *window} {
		if d <= 0 {
			bad = append(bad, fmt.Sprintf("%s %s: want a positive duration", name, d))
		}
	}
	if *lease < 0 {
		bad = append(bad, fmt.Sprintf("--lease %s: want a positive duration", *lease))
	}
	if *maxAttempts <= 0 || *minSample <= 0 {
		bad = append(bad, fmt.Sprintf("--max-attempts %d, --min-sample %d: want positive numbers", *maxAttempts, *minSample))
	}
	scfg := scheduler.Config{
		MaxProcs: *maxProcs, MaxPerSource: noCap(*perSource), MaxPerDestination: noCap(*perDest),
		Order: statemachine.PromoteOrder(*order), Tick: *tick, LeaseTTL: *lease, MaxAttempts: *maxAttempts,
		MaxFailed: *maxFailed, MaxFailureRate: *maxRate, Window: *window, MinSample: *minSample,
		Holder: "validating",
	}
	if err := scfg.Validate(); err != nil {
		bad = append(bad, err.Error())
	}
	if len(bad) > 0 {
		return usagef("migrate --max-procs 1 -h", "%s", strings.Join(bad, "; "))
	}
	cfg, log, err := loadConfig(e, cf)
	if err != nil {
		return err
	}
	// The holder is unique per process (a container's scheduler is pid 1
	// every time): a successor never renews its predecessor's lease as its
	// own.
	instance := make([]byte, 4)
	_, _ = rand.Read(instance)
	scfg.Holder = fmt.Sprintf("%s pid %d (%x)", cfg.Host, os.Getpid(), instance)
	store, err := openStoreWith(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer store.Close()

	reg := obs.NewRegistry()
	metrics := scheduler.NewMetrics(reg)
	if *metricsAddr != "" {
		stop, err := obs.Serve(*metricsAddr, reg)
		if err != nil {
			return err
		}
		defer stop(ctx)
	}
	sch, err := scheduler.New(store, scfg, log, metrics)
	if err != nil {
		return usagef("migrate --max-procs 1 -h", "%v", err)
	}
	runErr := sch.Run(ctx)

	// Whatever ended the run, say what is left in flight: agents finish it.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 300*time.Millisecond)
	defer cancel()
	inFlight, cerr := store.CountStatuses(cctx, statemachine.InFlightStatuses()...)
	left := fmt.Sprintf("%d rows still in flight; their agents finish them", inFlight)
	if cerr != nil {
		left = "rows in flight unknown (" + cerr.Error() + "); their agents finish them"
	}
	var refused *scheduler.HeldError
	var held *statemachine.LeaseHeldError
	var tripped *scheduler.TrippedError
	switch {
	case runErr == nil:
		fmt.Fprintf(e.stdout, "scheduler stopped: nothing more is promoted; %s.\n", left)
		return nil
	case errors.As(runErr, &refused):
		return &exitError{code: exitHeld, msg: fmt.Sprintf("another scheduler is running: held by %s since %s (lease until %s; %s). "+
			"Not starting (exit %d): stop the other one first, or let this one wait as a standby (the shipped systemd unit restarts it until the lease is free)",
			refused.Lease.Holder, refused.Lease.Since.Format(time.RFC3339), refused.Lease.ExpiresAt.Format(time.RFC3339), refused.Alive, exitHeld)}
	case errors.As(runErr, &held):
		return &exitError{code: exitHeld, msg: fmt.Sprintf("another scheduler took the lease: %s since %s (lease until %s); this one stopped promoting (exit %d). %s",
			held.Lease.Holder, held.Lease.Since.Format(time.RFC3339), held.Lease.ExpiresAt.Format(time.RFC3339), exitHeld, left)}
	case errors.As(runErr, &tripped):
		return &exitError{code: exitTripped, msg: fmt.Sprintf("stop switch tripped: %s\n%s. Look at the failures (`migrate list --failed`, `migrate status`), deal with them (`migrate retry`, `migrate rollback`), then `migrate resume`.",
			tripped.Reason, left)}
	default:
		return runErr
	}
}
