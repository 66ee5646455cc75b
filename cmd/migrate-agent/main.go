// Command migrate-agent is the daemon that runs on every database server
// (--roles dump,import,close) and on the DNS host (--roles dns): it claims
// rows from the state table, does the work and hands them on.
//
// This version checks an agent's configuration and its reach to the state
// database (--check, for deployment and systemd's ExecStartPre); the poll
// loop and the role handlers arrive with the agent runtime.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"

	"github.com/fleetmigrate/fleetmigrate/internal/config"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/statemachine/sqlstore"
)

var version = ""

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("migrate-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cf := config.RegisterFlags(fs)
	roles := fs.String("roles", "", "comma-separated roles: dump, import, close, rollback (database servers), dns (the DNS host)")
	check := fs.Bool("check", false, "check the configuration and the state database, then exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: migrate-agent --config FILE --roles dump,import,close [--check]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "try: migrate-agent -h")
		return 2
	}
	if *showVersion {
		fmt.Fprintf(stdout, "migrate-agent %s\n", versionString())
		return 0
	}
	rs, err := parseRoles(*roles)
	if err != nil {
		fmt.Fprintf(stderr, "migrate-agent: %v\ntry: migrate-agent --roles dump,import,close\n", err)
		return 2
	}
	if !*check {
		fmt.Fprintln(stderr, "migrate-agent: this version has no agent runtime yet; only --check is available (it checks the configuration and the state database)")
		return 1
	}
	cfg, err := cf.Load()
	if err != nil {
		fmt.Fprintf(stderr, "migrate-agent: %v\n", err)
		return 1
	}
	store, err := sqlstore.Open(ctx, sqlstore.Config{Driver: cfg.State.Driver, DSN: cfg.State.DSN, MaxOpenConns: 1, Logger: cfg.Logger(stderr)})
	if err != nil {
		fmt.Fprintf(stderr, "migrate-agent: %v\n", err)
		return 1
	}
	defer store.Close()
	now, err := store.Now(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "migrate-agent: read the state database's clock: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "migrate-agent %s: configuration ok\n  host:           %s\n  roles:          %s\n  state database: %s (schema current, clock %s)\n",
		versionString(), cfg.Host, strings.Join(roleNames(rs), ","), store.Where(), now.Format("2006-01-02T15:04:05Z"))
	return 0
}

// parseRoles validates a --roles list.
func parseRoles(s string) ([]statemachine.Role, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("--roles is required")
	}
	var out []statemachine.Role
	for _, part := range strings.Split(s, ",") {
		r := statemachine.Role(strings.ToLower(strings.TrimSpace(part)))
		if !slices.Contains(statemachine.AgentRoles, r) {
			return nil, fmt.Errorf("unknown role %q (roles: %s)", part, strings.Join(roleNames(statemachine.AgentRoles), ", "))
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out, nil
}

func roleNames(rs []statemachine.Role) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = string(r)
	}
	return out
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
