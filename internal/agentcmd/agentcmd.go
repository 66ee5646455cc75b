// Package agentcmd is the migrate-agent command: flags and configuration,
// connecting to the state database (with retries), signals, metrics, systemd
// readiness. cmd/migrate-agent runs it with the real handlers; tests run it
// with fake ones, so both go through the same wiring.
package agentcmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/fleetmigrate/fleetmigrate/agent"
	"github.com/fleetmigrate/fleetmigrate/internal/config"
	"github.com/fleetmigrate/fleetmigrate/internal/dnsopen"
	"github.com/fleetmigrate/fleetmigrate/internal/obs"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/statemachine/sqlstore"
)

// Exit codes besides 0 (stopped by a signal).
const (
	ExitError = 1 // could not run, or another process took the host over
	ExitUsage = 2
	ExitHeld  = 3 // another live agent serves this host ID
)

// Register adds the handlers the binary has to an agent.
type Register func(a *agent.Agent, cfg config.Config) error

// Check is a readiness check of the binary's engines for --check: it
// writes what it found, one line per finding, and fails when something the
// agent's roles need is missing.
type Check func(ctx context.Context, cfg config.Config, w io.Writer) error

// Main runs migrate-agent with args and returns the exit code. It handles
// SIGINT/SIGTERM itself: the first stops claiming and waits for running
// steps, a second cancels them.
func Main(args []string, version string, stdout, stderr io.Writer, register Register, checks ...Check) int {
	fs := flag.NewFlagSet("migrate-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cf := config.RegisterFlags(fs)
	roles := fs.String("roles", "", "comma-separated roles: sync, cutover, dump, import, close, rollback (database servers), dns (the DNS host); default: agent.roles of the configuration")
	check := fs.Bool("check", false, "check the configuration and the state database, then exit")
	metricsAddr := fs.String("metrics-addr", "", "serve Prometheus /metrics and /healthz here (default: agent.metrics-addr)")
	shutdown := fs.Duration("shutdown-timeout", 0, "how long SIGTERM waits for running steps (default: agent.shutdown-timeout)")
	poll := fs.Duration("poll-interval", 0, "mean wait between polls when idle (default: agent.poll-interval)")
	lease := fs.Duration("lease", 0, "claim lease (default: agent.lease)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: migrate-agent --config FILE [--roles dump,import,close] [--check]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "try: migrate-agent -h")
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "migrate-agent: unexpected argument %q\ntry: migrate-agent -h\n", fs.Arg(0))
		return ExitUsage
	}
	if *showVersion {
		fmt.Fprintf(stdout, "migrate-agent %s\n", version)
		return 0
	}
	cfg, err := cf.Load()
	if err != nil {
		fmt.Fprintf(stderr, "migrate-agent: %v\n", err)
		return ExitError
	}
	if *roles != "" {
		cfg.Agent.Roles = strings.Split(*roles, ",")
	}
	if *metricsAddr != "" {
		cfg.Agent.MetricsAddr = *metricsAddr
	}
	for flagVal, dst := range map[*time.Duration]*time.Duration{shutdown: &cfg.Agent.ShutdownTimeout, poll: &cfg.Agent.PollInterval, lease: &cfg.Agent.Lease} {
		if *flagVal != 0 {
			*dst = *flagVal
		}
	}
	acfg, err := agentConfig(cfg, version)
	if err != nil {
		fmt.Fprintf(stderr, "migrate-agent: %v\ntry: migrate-agent --roles dump,import,close\n", err)
		return ExitUsage
	}
	log := cfg.Logger(stderr)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	scfg := sqlstore.Config{Driver: cfg.State.Driver, DSN: cfg.State.DSN, CAFile: cfg.State.CAFile, MaxOpenConns: cfg.State.MaxOpenConns, Logger: log}
	if *check {
		code := runCheck(ctx, stdout, stderr, scfg, acfg, cfg.DNS, version)
		for _, c := range checks {
			if err := c(ctx, cfg, stdout); err != nil {
				fmt.Fprintf(stderr, "migrate-agent: %v\n", err)
				code = ExitError
			}
		}
		return code
	}
	store, err := connect(ctx, scfg, log)
	if err != nil {
		if ctx.Err() != nil {
			return 0
		}
		fmt.Fprintf(stderr, "migrate-agent: %v\n", err)
		return ExitError
	}
	defer store.Close()
	if err := checkLogin(ctx, store, acfg, log); err != nil {
		fmt.Fprintf(stderr, "migrate-agent: %v\n", err)
		return ExitError
	}

	reg := obs.NewRegistry()
	a, err := agent.New(store, acfg, log, agent.NewMetrics(reg))
	if err != nil {
		fmt.Fprintf(stderr, "migrate-agent: %v\n", err)
		return ExitUsage
	}
	if register != nil {
		if err := register(a, cfg); err != nil {
			fmt.Fprintf(stderr, "migrate-agent: %v\n", err)
			return ExitError
		}
	}
	if cfg.Agent.MetricsAddr != "" {
		stopMetrics, err := obs.Serve(cfg.Agent.MetricsAddr, reg)
		if err != nil {
			fmt.Fprintf(stderr, "migrate-agent: %v\n", err)
			return ExitError
		}
		defer stopMetrics(ctx)
	}

	// A second signal during the graceful stop cancels the running steps
	// (they get agent.stop-grace to undo their work); a third exits now.
	go func() {
		<-ctx.Done()
		again := make(chan os.Signal, 2)
		signal.Notify(again, os.Interrupt, syscall.SIGTERM)
		defer signal.Stop(again)
		<-again
		log.Warn("second signal: cancelling running steps now; a third exits at once")
		a.CancelSteps()
		<-again
		log.Warn("third signal: exiting now; the rows of running steps keep this process's claim and the next start takes them back at once")
		os.Exit(ExitError)
	}()
	notify("READY=1\nSTATUS=claiming rows for " + acfg.Host)
	err = a.Run(ctx)
	notify("STOPPING=1")
	var held *statemachine.AgentHeldError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &held):
		fmt.Fprintf(stderr, "migrate-agent: %v.\nTwo agents for one host would both claim its rows: stop the other process, or give this one its own host ID (host in the configuration, or --host).\n", err)
		return ExitHeld
	default:
		fmt.Fprintf(stderr, "migrate-agent: %v\n", err)
		return ExitError
	}
}

// agentConfig maps the configuration file's agent section to agent.Config.
func agentConfig(cfg config.Config, version string) (agent.Config, error) {
	ac := agent.Config{
		Host: cfg.Host, PollInterval: cfg.Agent.PollInterval, Lease: cfg.Agent.Lease, HeartbeatInterval: cfg.Agent.HeartbeatInterval,
		ShutdownTimeout: cfg.Agent.ShutdownTimeout, StopGrace: cfg.Agent.StopGrace, MaxAttempts: cfg.Agent.MaxAttempts, Version: version,
		DNSTarget: cfg.Agent.DNSTarget, Address: cfg.Agent.MetricsAddr, MaxJobs: map[statemachine.Role]int{},
	}
	ac.Endpoints = map[statemachine.Engine]string{}
	for eng, addrs := range map[statemachine.Engine][2]string{
		statemachine.EngineMySQL:    {cfg.MySQL.AdvertiseAddress, cfg.MySQL.Address},
		statemachine.EnginePostgres: {cfg.Postgres.AdvertiseAddress, cfg.Postgres.Address},
	} {
		if addrs[1] == "" {
			continue
		}
		if addrs[0] == "" {
			addrs[0] = addrs[1]
		}
		ac.Endpoints[eng] = addrs[0]
	}
	for _, r := range cfg.Agent.Roles {
		role := statemachine.Role(strings.ToLower(strings.TrimSpace(r)))
		if role == "" {
			continue
		}
		if !slices.Contains(statemachine.AgentRoles, role) {
			return ac, fmt.Errorf("unknown role %q (roles: sync, cutover, dump, import, close, rollback, dns)", r)
		}
		if !slices.Contains(ac.Roles, role) {
			ac.Roles = append(ac.Roles, role)
		}
	}
	for r, n := range cfg.Agent.MaxJobs {
		role := statemachine.Role(r)
		if !slices.Contains(statemachine.AgentRoles, role) {
			return ac, fmt.Errorf("agent.max-jobs: unknown role %q", r)
		}
		ac.MaxJobs[role] = n
	}
	return ac, ac.Validate()
}

// connect opens the state database, retrying with backoff (1 s doubling to
// 30 s) while it is unreachable or its schema is outdated, logging once a
// minute. Bad configuration is not retried.
func connect(ctx context.Context, scfg sqlstore.Config, log *slog.Logger) (*sqlstore.Store, error) {
	var last time.Time
	wait := time.Second
	for {
		store, err := sqlstore.Open(ctx, scfg)
		if err == nil {
			if !last.IsZero() {
				log.Info("state database reachable; starting")
			}
			return store, nil
		}
		if !errors.Is(err, sqlstore.ErrUnreachable) && !errors.Is(err, statemachine.ErrSchemaOutdated) {
			return nil, err
		}
		if time.Since(last) >= time.Minute {
			log.Error("cannot start yet; retrying with backoff", "err", err.Error(), "retry_in", wait.String())
			last = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

func runCheck(ctx context.Context, stdout, stderr io.Writer, scfg sqlstore.Config, acfg agent.Config, dcfg config.DNS, version string) int {
	scfg.MaxOpenConns = 1
	store, err := sqlstore.Open(ctx, scfg)
	if err != nil {
		fmt.Fprintf(stderr, "migrate-agent: %v\n", err)
		return ExitError
	}
	defer store.Close()
	now, err := store.Now(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "migrate-agent: read the state database's clock: %v\n", err)
		return ExitError
	}
	roles := make([]string, len(acfg.Roles))
	for i, r := range acfg.Roles {
		roles[i] = string(r)
	}
	fmt.Fprintf(stdout, "migrate-agent %s: configuration ok\n  host:           %s\n  roles:          %s\n  state database: %s (schema current, clock %s)\n",
		version, acfg.Host, strings.Join(roles, ","), store.Where(), now.Format("2006-01-02T15:04:05Z"))
	posture, err := store.Posture(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "migrate-agent: %v\n", err)
		return ExitError
	}
	fmt.Fprintf(stdout, "  state role:     %s\n", describePosture(posture))
	if err := loginFits(posture.Agent, acfg); err != nil {
		fmt.Fprintf(stderr, "migrate-agent: %v\n", err)
		return ExitError
	}
	if cur, ok, err := store.AgentFor(ctx, acfg.Host); err == nil && ok {
		fmt.Fprintf(stdout, "  registry:       host %s last served by pid %d on %s, seen %s\n", cur.Host, cur.PID, cur.Machine, cur.LastSeen.Format(time.RFC3339))
	}
	if slices.Contains(acfg.Roles, statemachine.RoleDNS) {
		u, err := dnsopen.Updater(dcfg)
		if err != nil {
			fmt.Fprintf(stderr, "migrate-agent: the dns role: %v\n", err)
			return ExitError
		}
		defer u.Close()
		lines, err := u.Check(ctx)
		for _, l := range lines {
			fmt.Fprintf(stdout, "  dns:            %s\n", l)
		}
		if err != nil {
			fmt.Fprintf(stderr, "migrate-agent: the dns role: %v\n", err)
			return ExitError
		}
	}
	return 0
}

// notify sends a state to systemd (Type=notify) when NOTIFY_SOCKET is set.
func notify(state string) {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return
	}
	if strings.HasPrefix(sock, "@") {
		sock = "\x00" + sock[1:] // abstract socket
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return
	}
	_, _ = conn.Write([]byte(state))
	_ = conn.Close()
}

// checkLogin refuses to start with another host's agent login (the
// database would refuse each of its steps) and warns when the login is an
// operator's (it may change any host's rows).
func checkLogin(ctx context.Context, store *sqlstore.Store, acfg agent.Config, log *slog.Logger) error {
	l, ok, err := store.Login(ctx)
	if err != nil {
		return fmt.Errorf("read this agent's state-database login: %w", err)
	}
	if !ok {
		log.Warn("the state database login is not an agent login: with it this agent may change any host's rows; give it its own (migrate db grant-agent "+acfg.Host+", docs/security.md)",
			"host", acfg.Host)
		return nil
	}
	if err := loginFits(&l, acfg); err != nil {
		return err
	}
	log.Info("state database login is this host's own", "login", l.Login, "host", l.Host, "dns_rows", l.DNS)
	return nil
}

// loginFits says what is wrong with agent login l for an agent of acfg
// (nil: an operator's login, which fits anything).
func loginFits(l *sqlstore.AgentLogin, acfg agent.Config) error {
	switch {
	case l == nil:
		return nil
	case l.Host != acfg.Host:
		return fmt.Errorf("state.dsn logs in as %s, the agent login of host %s, but this agent is host %s: the state database would refuse every step; give it host %s's own login (migrate db grant-agent %s)",
			l.Login, l.Host, acfg.Host, acfg.Host, acfg.Host)
	case slices.Contains(acfg.Roles, statemachine.RoleDNS) && !l.DNS:
		return fmt.Errorf("this agent runs the dns role, but its login %s may not move the DNS rows: migrate db grant-agent %s --dns --password-file FILE", l.Login, acfg.Host)
	}
	return nil
}

// describePosture says what the agent's state-database login may change
// and warns where it reaches beyond this host's own rows.
func describePosture(p sqlstore.Posture) string {
	switch {
	case p.Superuser:
		return p.Role + ": a superuser — may change every row and column of the state table  WARNING: any agent with this login can rewrite any host's rows, redirect any customer's name (docs/security.md)"
	case len(p.MayChange) > 0:
		return fmt.Sprintf("%s: may change %s of every row  WARNING: no agent's step moves those; with this login any agent can send any customer's data or name elsewhere (docs/security.md)",
			p.Role, strings.Join(p.MayChange, ", "))
	}
	if p.Agent != nil {
		rows := "rows whose source or destination is " + p.Agent.Host
		if p.Agent.DNS {
			rows += " and the DNS step's rows"
		}
		return fmt.Sprintf("%s: the agent login of host %s — may move only %s, by its steps; never %s; publishes only %s's address (enforced by the state database)",
			p.Role, p.Agent.Host, rows, strings.Join(sqlstore.Guarded, ", "), p.Agent.Host)
	}
	return p.Role + ": may not change " + strings.Join(sqlstore.Guarded, ", ") + "  WARNING: an operator's login, not this host's own: it may move any host's rows (migrate db grant-agent, docs/security.md)"
}
