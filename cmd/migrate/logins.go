package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/config"
	"github.com/fleetmigrate/fleetmigrate/migrations"
	"github.com/fleetmigrate/fleetmigrate/statemachine/sqlstore"
)

// adminDB connects as the operator, for the login commands.
func adminDB(ctx context.Context, e *env, cf *config.Flags) (*sql.DB, migrations.Dialect, string, config.Config, error) {
	cfg, log, err := loadConfig(e, cf)
	if err != nil {
		return nil, "", "", cfg, err
	}
	db, dialect, where, err := sqlstore.Connect(ctx, storeConfig(cfg, log))
	if err != nil {
		return nil, "", "", cfg, err
	}
	v, err := migrations.Status(ctx, db, dialect)
	if err == nil && v.Current < 11 {
		err = fmt.Errorf("the state database is at schema version %d; agent logins need version 11: run `migrate db upgrade`", v.Current)
	}
	if err != nil {
		db.Close()
		return nil, "", "", cfg, err
	}
	return db, dialect, where, cfg, nil
}

// runGrantAgent: `migrate db grant-agent HOST --password-file F` gives host
// its own state-database login: it may move only HOST's rows (and the DNS
// rows with --dns), through the columns its steps move, and write only
// HOST's registry entry — enforced by the database. Re-running it rotates
// the password. A missing password file is created (0600) with a random
// password; an existing one is read, and refused if others may read it.
// `--planned --password-dir DIR` does it for every source and destination
// host of the state table at once, each password in DIR/HOST.state-password.
func runGrantAgent(ctx context.Context, e *env, args []string) error {
	var host string
	rest := args
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		host, rest = strings.ToLower(args[0]), args[1:]
	}
	const usage = "db grant-agent HOST --password-file FILE [--dns] [--login NAME] [--from CLIENT-HOST]  |  db grant-agent --planned --password-dir DIR"
	fs, cf := newFlags(e, "db grant-agent", usage)
	pwFile := fs.String("password-file", "", "the login's password: read from this file (0600), or written there (0600, random) when it does not exist")
	dns := fs.Bool("dns", false, "the login may also move the DNS step's rows (the DNS host's agent)")
	login := fs.String("login", "", "the login's name (default: fm_ and the host ID, see docs/security.md)")
	from := fs.String("from", "%", "MySQL/MariaDB: the account's host part — the agent's address, or a pattern")
	planned := fs.Bool("planned", false, "every source and destination host of the state table's rows, instead of one HOST (with --password-dir)")
	pwDir := fs.String("password-dir", "", "with --planned: each host's password in DIR/HOST.state-password, read, or created (0600, random) when missing")
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	switch {
	case host == "" && !*planned:
		return usagef("migrate db grant-agent -h", "name the host first (migrate db grant-agent db-17 --password-file F), or --planned for every host of the plan")
	case host != "" && *planned:
		return usagef("migrate db grant-agent -h", "either one HOST or --planned, not both")
	case *planned && (*pwDir == "" || *pwFile != "" || *login != ""):
		return usagef("migrate db grant-agent -h", "--planned takes --password-dir DIR (one file per host), not --password-file or --login")
	case !*planned && *pwFile == "":
		return usagef("migrate db grant-agent -h", "--password-file is required: the password never goes on a command line")
	}
	db, dialect, where, cfg, err := adminDB(ctx, e, cf)
	if err != nil {
		return err
	}
	defer db.Close()
	admin := sqlstore.NewAdmin(db, dialect)
	fmt.Fprintf(e.stdout, "state database: %s\n", where)
	if !*planned {
		return grantOne(ctx, e, admin, sqlstore.AgentGrant{Host: host, Login: *login, DNS: *dns, ClientHost: *from, By: actor(cfg)}, *pwFile, true)
	}
	hosts, err := admin.PlannedHosts(ctx)
	if err != nil {
		return err
	}
	if len(hosts) == 0 {
		return errors.New("the state table has no rows: plan first, or name one HOST")
	}
	var failed []string
	for _, h := range hosts {
		if h == "" || strings.ContainsAny(h, "/\\") || strings.HasPrefix(h, ".") {
			fmt.Fprintf(e.stderr, "%s: not usable as a file name in --password-dir: grant it alone with --password-file\n", h)
			failed = append(failed, h)
			continue
		}
		g := sqlstore.AgentGrant{Host: h, DNS: *dns, ClientHost: *from, By: actor(cfg)}
		if err := grantOne(ctx, e, admin, g, filepath.Join(*pwDir, h+".state-password"), false); err != nil {
			fmt.Fprintf(e.stderr, "%s: %v\n", h, err)
			failed = append(failed, h)
		}
	}
	fmt.Fprintf(e.stdout, "%d hosts of the plan: %d with their own login now, %d failed\n", len(hosts), len(hosts)-len(failed), len(failed))
	fmt.Fprintf(e.stdout, "the DNS host has no rows of its own: grant it alone (migrate db grant-agent HOST --dns --password-file F)\n")
	if len(failed) > 0 {
		return &exitError{code: 1, msg: fmt.Sprintf("%d hosts have no login of their own: %s", len(failed), strings.Join(failed, ", "))}
	}
	return nil
}

// grantOne grants one host its login with the password of file, saying
// what it did (in full when verbose, on one line otherwise).
func grantOne(ctx context.Context, e *env, admin *sqlstore.Admin, g sqlstore.AgentGrant, file string, verbose bool) error {
	pw, wrote, err := agentPassword(file)
	if err != nil {
		return err
	}
	g.Password = pw
	l, created, err := admin.GrantAgent(ctx, g)
	if err != nil {
		if wrote {
			_ = os.Remove(file)
		}
		return err
	}
	verb := "updated (password set from " + file + ")"
	if created {
		verb = "created"
	}
	if wrote {
		verb += ", new password written to " + file + " (0600)"
	}
	if !verbose {
		fmt.Fprintf(e.stdout, "agent login %s for host %s %s\n", l.Account(), g.Host, verb)
		return nil
	}
	rows := "rows whose source or destination is " + g.Host
	if l.DNS {
		rows += ", and rows in the DNS step"
	}
	fmt.Fprintf(e.stdout, "agent login %s for host %s %s\n  may move: %s; write: its own registry entry\n  never: source, destination, dns_name, engine, database_name; another host's rows or entry; plans, switches, operator actions\n",
		l.Account(), g.Host, verb, rows)
	fmt.Fprintf(e.stdout, "  the agent's state.dsn logs in as %s with that password; check with migrate-agent --check\n", l.Login)
	return nil
}

// agentPassword reads the password file, or creates it with a new password.
func agentPassword(path string) (pw string, wrote bool, err error) {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		pw = sqlstore.NewPassword()
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return "", false, fmt.Errorf("write the new password: %w", err)
		}
		if _, err := f.WriteString(pw + "\n"); err != nil {
			f.Close()
			return "", false, fmt.Errorf("write the new password: %w", err)
		}
		return pw, true, f.Close()
	}
	if err != nil {
		return "", false, fmt.Errorf("--password-file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return "", false, fmt.Errorf("--password-file %s is readable by others (mode %04o): chmod 600 %s", path, st.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", false, fmt.Errorf("--password-file: %w", err)
	}
	pw = strings.TrimRight(string(b), "\r\n")
	if err := sqlstore.CheckPassword(pw); err != nil {
		return "", false, fmt.Errorf("--password-file %s: %w", path, err)
	}
	return pw, false, nil
}

// runRevokeAgent: `migrate db revoke-agent HOST|LOGIN` takes a host's
// agent logins out: privileges, open sessions, the logins.
func runRevokeAgent(ctx context.Context, e *env, args []string) error {
	arg, rest, err := hostArg("db revoke-agent", args)
	if err != nil {
		return err
	}
	fs, cf := newFlags(e, "db revoke-agent", "db revoke-agent HOST|LOGIN")
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	db, dialect, where, _, err := adminDB(ctx, e, cf)
	if err != nil {
		return err
	}
	defer db.Close()
	revoked, err := sqlstore.NewAdmin(db, dialect).RevokeAgent(ctx, arg)
	fmt.Fprintf(e.stdout, "state database: %s\n", where)
	for _, r := range revoked {
		if r.Kept != "" {
			fmt.Fprintf(e.stdout, "agent login %s (host %s): privileges revoked, %d sessions ended; the login itself could not be dropped (%s): it stays restricted to host %s\n",
				r.Account(), r.Host, r.Sessions, r.Kept, r.Host)
			continue
		}
		fmt.Fprintf(e.stdout, "agent login %s (host %s): revoked and dropped, %d open sessions ended\n", r.Account(), r.Host, r.Sessions)
	}
	return err
}

// runLogins: `migrate db logins` lists the agent logins.
func runLogins(ctx context.Context, e *env, args []string) error {
	fs, cf := newFlags(e, "db logins", "db logins [--config FILE]")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	db, dialect, where, _, err := adminDB(ctx, e, cf)
	if err != nil {
		return err
	}
	defer db.Close()
	logins, err := sqlstore.NewAdmin(db, dialect).AgentLogins(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "state database: %s\nagent logins: %d (any other login is an operator's)\n", where, len(logins))
	if len(logins) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tLOGIN\tDNS ROWS\tGRANTED BY\tGRANTED AT")
	for _, l := range logins {
		dns := "no"
		if l.DNS {
			dns = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", l.Host, l.Account(), dns, l.GrantedBy, l.GrantedAt.Format(time.RFC3339))
	}
	return tw.Flush()
}
