// Command migrate is the operator's tool for a fleetmigrate run: it plans
// migrations into the state table, shows where they stand, and manages the
// state database's schema. (The scheduler, `migrate --max-procs N`, arrives
// with its own issue.)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"os/user"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/fleetmigrate/fleetmigrate/internal/config"
	"github.com/fleetmigrate/fleetmigrate/statemachine/sqlstore"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// env is what a subcommand may touch besides its flags.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

func commands() []command {
	return []command{
		{"plan", "insert planned migrations from a CSV file (engine,database,source,destination,dns_name)", runPlan},
		{"status", "counts per status, stop switch, scheduler and agents; --id N shows one row and its events", runStatus},
		{"list", "list rows, filtered by status, host or database", runList},
		{"stop", "set the stop switch: the scheduler promotes nothing more (--reason required)", runStop},
		{"resume", "clear the stop switch", runResume},
		{"retry", "move failed rows back to their step (--status, --source, --id)", runRetry},
		{"cancel", "cancel Waiting rows for good (dry run without --execute)", runCancel},
		{"rollback", "roll failed rows back (dry run without --execute)", runRollback},
		{"dns", "lower-ttl (a day before) / restore-ttl (after Done) of planned rows' DNS names (dry run without --execute)", runDNS},
		{"pause-source", "promote nothing more from one source host", runPauseSource},
		{"resume-source", "lift a pause-source", runResumeSource},
		{"gc", "list, or delete with --execute, dumps older than the retention", runGC},
		{"dump-link", "print a download link for a row's dump (--id N [--ttl 720h])", runDumpLink},
		{"serve", "answer download links (--listen :8080)", runServe},
		{"db", "the state database: db upgrade | db status | db grant-agent HOST | db revoke-agent HOST | db logins", runDB},
		{"version", "print the version", runVersion},
	}
}

// exitError ends the command with a specific exit code and message.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// usageError is a mistake in the command line: exit 2 with a hint.
type usageError struct {
	msg  string
	hint string
}

func (e *usageError) Error() string { return e.msg }

func usagef(hint, format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...), hint: hint}
}

// run executes one command line and returns the exit code: 0 success, 1 the
// command failed, 2 the command line was wrong.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		printUsage(stderr)
		return 2
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stdout)
		return 0
	}
	if strings.HasPrefix(args[0], "-") {
		// `migrate --max-procs N ...`: the scheduler
		return finish(e, "", runScheduler(ctx, e, args))
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return finish(e, c.name, c.run(ctx, e, args[1:]))
		}
	}
	fmt.Fprintf(stderr, "migrate: unknown command %q\ntry: migrate help\n", args[0])
	return 2
}

// finish prints a command's error and returns the exit code.
func finish(e *env, name string, err error) int {
	prefix := "migrate"
	if name != "" {
		prefix += " " + name
	}
	var ue *usageError
	var ee *exitError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(e.stderr, "%s: %s\n", prefix, ue.msg)
		if ue.hint != "" {
			fmt.Fprintf(e.stderr, "try: %s\n", ue.hint)
		}
		return 2
	case errors.As(err, &ee):
		fmt.Fprintf(e.stderr, "%s: %s\n", prefix, ee.msg)
		return ee.code
	default:
		fmt.Fprintf(e.stderr, "%s: %v\n", prefix, err)
		if msg := err.Error(); strings.Contains(msg, "permission denied for") || strings.Contains(msg, "command denied to user") || (strings.Contains(msg, "Access denied for user") && strings.Contains(msg, "to database")) {
			fmt.Fprintf(e.stderr, "the state database refused this login: operator commands need an operator's login, not an agent's (migrate db logins lists the agents'; docs/security.md)\n")
		}
		return 1
	}
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: migrate --max-procs N [flags]    run the scheduler (migrate --max-procs 1 -h lists its flags)")
	fmt.Fprintln(w, "       migrate <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-14s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Every command takes --config FILE (see deploy/config.example.yaml); `migrate <command> -h` lists its flags.")
}

// newFlags returns a FlagSet for a subcommand with the shared flags on it.
func newFlags(e *env, name, usage string) (*flag.FlagSet, *config.Flags) {
	fs := flag.NewFlagSet("migrate "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	cf := config.RegisterFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: migrate %s\n\nflags:\n", usage)
		fs.PrintDefaults()
	}
	return fs, cf
}

// parseFlags parses args; a bad flag is a usage error (the flag package has
// already printed the flag list), and stray arguments are refused.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usagef(fs.Name()+" -h", "%v", err)
	}
	if fs.NArg() > 0 {
		return usagef(fs.Name()+" -h", "unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// loadConfig loads and validates the configuration and builds the logger.
func loadConfig(e *env, cf *config.Flags) (config.Config, *slog.Logger, error) {
	cfg, err := cf.Load()
	if err != nil {
		return cfg, nil, err
	}
	return cfg, cfg.Logger(e.stderr), nil
}

// openStore loads the configuration, connects to the state database and
// checks its schema. The caller closes the store.
func openStore(ctx context.Context, e *env, cf *config.Flags) (*sqlstore.Store, config.Config, error) {
	cfg, log, err := loadConfig(e, cf)
	if err != nil {
		return nil, cfg, err
	}
	s, err := openStoreWith(ctx, cfg, log)
	return s, cfg, err
}

// openStoreWith connects to the configured state database.
func openStoreWith(ctx context.Context, cfg config.Config, log *slog.Logger) (*sqlstore.Store, error) {
	return sqlstore.Open(ctx, storeConfig(cfg, log))
}

func storeConfig(cfg config.Config, log *slog.Logger) sqlstore.Config {
	return sqlstore.Config{Driver: cfg.State.Driver, DSN: cfg.State.DSN, CAFile: cfg.State.CAFile, MaxOpenConns: cfg.State.MaxOpenConns, Logger: log}
}

// actor names the person running the command in the audit trail:
// user@host (the sudo user when run through sudo).
func actor(cfg config.Config) string {
	name := os.Getenv("SUDO_USER")
	if name == "" {
		if u, err := user.Current(); err == nil {
			name = u.Username
		}
	}
	if name == "" {
		name = "unknown"
	}
	return name + "@" + cfg.Host
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			return bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "dev-" + s.Value[:12]
			}
		}
	}
	return "dev"
}

func runVersion(_ context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("migrate version", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "migrate %s\n", versionString())
	return nil
}

// displayName shows a user's identifier unambiguously: quoted, with
// invisible characters escaped.
func displayName(s string) string { return fmt.Sprintf("%q", s) }

func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}
