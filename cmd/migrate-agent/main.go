// Command migrate-agent is the daemon that runs on every database server
// (--roles dump,import,close) and on the DNS host (--roles dns): it claims
// rows from the state table, does the work and hands them on. See
// internal/agentcmd for the command and agent for the runtime.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/fleetmigrate/fleetmigrate/agent"
	"github.com/fleetmigrate/fleetmigrate/agent/steps"
	"github.com/fleetmigrate/fleetmigrate/dns"
	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/mysql"
	"github.com/fleetmigrate/fleetmigrate/engine/postgres"
	"github.com/fleetmigrate/fleetmigrate/internal/agentcmd"
	"github.com/fleetmigrate/fleetmigrate/internal/config"
	"github.com/fleetmigrate/fleetmigrate/internal/dnsopen"
	"github.com/fleetmigrate/fleetmigrate/internal/storeopen"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/storage"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

func main() {
	os.Exit(agentcmd.Main(os.Args[1:], versionString(), os.Stdout, os.Stderr, registerHandlers, checkOnline))
}

// registerHandlers adds the step handlers of the engines this host has a
// server of (the mysql and postgres sections of the configuration), and the
// DNS step when the agent runs the dns role (the dns section).
func registerHandlers(a *agent.Agent, cfg config.Config) error {
	if slices.ContainsFunc(cfg.Agent.Roles, func(r string) bool { return strings.EqualFold(strings.TrimSpace(r), string(statemachine.RoleDNS)) }) {
		u, err := dnsopen.Updater(cfg.DNS)
		if err != nil {
			return fmt.Errorf("the dns role: %w", err)
		}
		allowed, err := dns.ParseAllowed(cfg.DNS.AllowedTargets)
		if err != nil {
			return err
		}
		(&steps.DNS{Updater: u, Targets: cfg.DNS.Targets, Allowed: allowed}).Register(a)
	}
	if cfg.MySQL.Address == "" && cfg.Postgres.Address == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := storeopen.Open(ctx, cfg.Storage)
	if err != nil {
		return fmt.Errorf("open the object store: %w", err)
	}
	level, err := storage.ParseLevel(cfg.Storage.Compression)
	if err != nil {
		return err
	}
	// What every engine's steps take from the configuration.
	common := func(host string, srv engine.Server) steps.Config {
		return steps.Config{Host: host, Server: srv, Store: st, Level: level,
			HangTimeout: cfg.Agent.HangTimeout, StoreFirst: cfg.Agent.StoreFirst, FullRecheck: cfg.Agent.FullRecheck, Online: online(cfg)}
	}
	if c := cfg.MySQL; c.Address != "" {
		my := common(cfg.Host, engine.Server{Host: cfg.Host, Address: c.Address, User: c.User, Password: c.Password})
		my.PeerUser, my.PeerPassword = c.PeerUser, c.PeerPassword
		(&steps.MySQL{
			Config: my,
			Options: mysql.Options{
				DumpTool: c.DumpTool, ClientTool: c.ClientTool,
				SessionWait: c.SessionWait, TempDir: c.TempDir,
				Jobs: c.Jobs, ParallelAbove: c.ParallelAboveMiB << 20,
				TLS: c.TLS, CAFile: c.CAFile,
			},
		}).Register(a)
	}
	if c := cfg.Postgres; c.Address != "" {
		pg := common(cfg.Host, engine.Server{Host: cfg.Host, Address: c.Address, User: c.User, Password: c.Password})
		pg.PeerUser, pg.PeerPassword = c.PeerUser, c.PeerPassword
		(&steps.Postgres{
			Config: pg,
			Options: postgres.Options{
				BinDir: c.BinDir, SessionWait: c.SessionWait, TempDir: c.TempDir,
				ParallelAbove: c.ParallelAboveMiB << 20, Jobs: c.Jobs,
				SSLMode: c.SSLMode, SSLRootCert: c.SSLRootCert,
			},
		}).Register(a)
	}
	return nil
}

// online is the online section of the configuration for the steps.
func online(cfg config.Config) steps.Online {
	o := cfg.Online
	stall := o.StallTimeout
	if stall == 0 {
		stall = -1 // the configuration's 0 is off; the steps' 0 is the default
	}
	converge := o.ConvergeTimeout
	if converge == 0 {
		converge = -1
	}
	return steps.Online{
		AutoMinBytes: o.AutoMinMiB << 20, MaxLagBytes: o.MaxLagMiB << 20,
		CutoverTimeout: o.CutoverTimeout, CutoverAttempts: o.CutoverAttempts, CutoverBackoff: o.CutoverBackoff, LagEvery: o.LagInterval,
		StallTimeout: stall, ConvergeWindow: o.ConvergeWindow, ConvergeTimeout: converge,
	}
}

// checkOnline reports the online readiness of this host's servers
// (--check).
func checkOnline(ctx context.Context, cfg config.Config, w io.Writer) error {
	return errors.Join(checkMySQL(ctx, cfg, w), checkPostgres(ctx, cfg, w))
}

// checkPostgres reports the online readiness of this host's PostgreSQL
// server (--check): what it lacks as a source and as a destination of a
// stream. Missing readiness is not an error (rows in mode auto dump); an
// unreachable server is.
func checkPostgres(ctx context.Context, cfg config.Config, w io.Writer) error {
	c := cfg.Postgres
	if c.Address == "" {
		return nil
	}
	srv, err := postgres.Open(ctx, engine.Server{Host: cfg.Host, Address: c.Address, User: c.User, Password: c.Password},
		postgres.Options{SSLMode: c.SSLMode, SSLRootCert: c.SSLRootCert})
	if err != nil {
		return fmt.Errorf("the postgres server: %w", err)
	}
	defer func() { _ = srv.Close() }()
	fmt.Fprintf(w, "  postgres:       %s, PostgreSQL %s\n", c.Address, srv.Version())
	seen, err := srv.SessionTLS(ctx)
	if err != nil {
		return err
	}
	mode := c.SSLMode
	if mode == "" {
		mode = "prefer"
	}
	warn := ""
	switch {
	case strings.HasPrefix(c.Address, "/"):
	case seen == "plaintext":
		warn = "  WARNING: plaintext: customers' data and the administrator's login cross the network in the clear"
	case mode != "verify-full":
		warn = "  WARNING: encrypted but the server's name is not checked: set postgres.sslmode: verify-full"
	}
	fmt.Fprintf(w, "  postgres tls:   %s (postgres.sslmode %s)%s\n", seen, mode, warn)
	fmt.Fprintf(w, "  postgres role:  %s: a superuser, which the engine needs at its own cluster (it creates roles with their password verifiers and changes ownerships; docs/security.md)\n", c.User)
	checkPostgresPeer(ctx, cfg, w)
	src, err := srv.SourceReadiness(ctx)
	if err != nil {
		return err
	}
	dst, err := srv.DestinationReadiness(ctx)
	if err != nil {
		return err
	}
	printReadiness(w, "online source", src)
	printReadiness(w, "online dest", dst)
	return nil
}

// pgPeerReads are the roles a read-only peer role may be a member of.
var pgPeerReads = []string{"pg_read_all_data", "pg_monitor", "pg_read_all_settings", "pg_read_all_stats", "pg_stat_scan_tables"}

// checkPostgresPeer reports the role peers read this cluster with (the
// same on every cluster): read-only, or a WARNING saying what it may
// change or what it lacks to read.
func checkPostgresPeer(ctx context.Context, cfg config.Config, w io.Writer) {
	c := cfg.Postgres
	if c.PeerUser == "" {
		fmt.Fprintf(w, "  postgres peers: note: other hosts' clusters are read with the superuser role (set postgres.peer-user to a read-only role: docs/security.md, least privilege)\n")
		return
	}
	srv, err := postgres.Open(ctx, engine.Server{Host: cfg.Host, Address: c.Address, User: c.PeerUser, Password: c.PeerPassword, ReadOnly: true},
		postgres.Options{SSLMode: c.SSLMode, SSLRootCert: c.SSLRootCert})
	if err != nil {
		fmt.Fprintf(w, "  postgres peers: WARNING: %s cannot log in here (%v): it must exist on every cluster, reachable from the fleet's network (docs/security.md)\n", c.PeerUser, err)
		return
	}
	defer func() { _ = srv.Close() }()
	r, err := srv.SessionRole(ctx)
	if err != nil {
		fmt.Fprintf(w, "  postgres peers: WARNING: %v\n", err)
		return
	}
	// Its attributes, those that change the cluster marked.
	var attrs, writes, lacks []string
	for _, a := range []struct {
		on, writes bool
		name       string
	}{{r.Super, true, "SUPERUSER"}, {r.CreateRole, true, "CREATEROLE"}, {r.CreateDB, true, "CREATEDB"}, {r.Replication, false, "REPLICATION"}, {r.BypassRLS, false, "BYPASSRLS"}} {
		if !a.on {
			continue
		}
		attrs = append(attrs, a.name)
		if a.writes {
			writes = append(writes, a.name)
		}
	}
	fmt.Fprintf(w, "  postgres peers: %s: %s; member of %s; sessions read-only by default: %t\n", r.Name, strings.Join(append([]string{"LOGIN"}, attrs...), " "), strings.Join(r.MemberOf, ", "), r.ReadOnlyDefault)
	if r.Owns > 0 {
		writes = append(writes, fmt.Sprintf("owns %d databases", r.Owns))
	}
	for _, m := range r.MemberOf {
		if !slices.Contains(pgPeerReads, m) {
			writes = append(writes, "member of "+m)
		}
	}
	if !r.Super {
		if !slices.Contains(r.MemberOf, "pg_read_all_data") {
			lacks = append(lacks, "pg_read_all_data (it reads every database)")
		}
		if !r.Replication {
			lacks = append(lacks, "REPLICATION (online mode's subscriptions)")
		}
		if !r.BypassRLS {
			lacks = append(lacks, "BYPASSRLS (a table's policies would hide rows from its copy and checksums)")
		}
	}
	if len(writes) > 0 {
		fmt.Fprintf(w, "  postgres peers: WARNING: %s may change this cluster (%s): peers need only to read (docs/security.md, least privilege)\n", r.Name, strings.Join(writes, ", "))
	}
	if len(lacks) > 0 {
		fmt.Fprintf(w, "  postgres peers: WARNING: %s lacks %s\n", r.Name, strings.Join(lacks, "; "))
	}
	replicates := true
	if (r.Replication || r.Super) && len(lacks) == 0 {
		if err := srv.CanReplicate(ctx); err != nil {
			replicates = false
			fmt.Fprintf(w, "  postgres peers: WARNING: %s cannot replicate from this host: %v (pg_hba.conf needs a `hostssl replication %s …` line for the fleet's network: online mode's subscriptions use it)\n", r.Name, err, r.Name)
		}
	}
	if len(writes) == 0 && len(lacks) == 0 && replicates {
		fmt.Fprintf(w, "  postgres peers: %s is read-only: other hosts' agents read this cluster with it; every change here is this agent's\n", r.Name)
	}
}

// peerWrites are grants a read-only peer account must not hold.
var peerWrites = []string{"ALL PRIVILEGES", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "GRANT OPTION", "SUPER", "RELOAD", "SHUTDOWN", "FILE"}

// checkMySQLPeer reports the account peers read this server with (the
// same on every server): read-only, or a WARNING saying what it may write.
func checkMySQLPeer(ctx context.Context, cfg config.Config, w io.Writer) {
	c := cfg.MySQL
	if c.PeerUser == "" {
		fmt.Fprintf(w, "  mysql peers:    note: other hosts' servers are read with the administrator account (set mysql.peer-user to a read-only account: docs/security.md, least privilege)\n")
		return
	}
	srv, err := mysql.Open(ctx, engine.Server{Host: cfg.Host, Address: c.Address, User: c.PeerUser, Password: c.PeerPassword}, mysql.Options{TLS: c.TLS, CAFile: c.CAFile})
	if err != nil {
		fmt.Fprintf(w, "  mysql peers:    WARNING: %s cannot log in here (%v): it must exist on every server, from the fleet's network (docs/security.md)\n", c.PeerUser, err)
		return
	}
	defer func() { _ = srv.Close() }()
	grants, err := srv.OwnGrants(ctx)
	if err != nil {
		fmt.Fprintf(w, "  mysql peers:    WARNING: cannot read the grants of %s: %v\n", c.PeerUser, err)
		return
	}
	var writes []string
	for _, g := range grants {
		fmt.Fprintf(w, "  mysql peers:    %s\n", g)
		head, _, _ := strings.Cut(g, " ON ")
		for _, p := range peerWrites {
			if strings.Contains(head, p) && !slices.Contains(writes, p) {
				writes = append(writes, p)
			}
		}
	}
	if len(writes) > 0 {
		fmt.Fprintf(w, "  mysql peers:    WARNING: %s may write (%s): peers need only to read (docs/security.md, least privilege)\n", c.PeerUser, strings.Join(writes, ", "))
		return
	}
	fmt.Fprintf(w, "  mysql peers:    %s is read-only: other hosts' agents read this server with it; every change here is this agent's\n", c.PeerUser)
}

// checkMySQL reports the online readiness of this host's MySQL/MariaDB
// server (--check), as checkPostgres does.
func checkMySQL(ctx context.Context, cfg config.Config, w io.Writer) error {
	c := cfg.MySQL
	if c.Address == "" {
		return nil
	}
	srv, err := mysql.Open(ctx, engine.Server{Host: cfg.Host, Address: c.Address, User: c.User, Password: c.Password}, mysql.Options{TLS: c.TLS, CAFile: c.CAFile})
	if err != nil {
		return fmt.Errorf("the mysql server: %w", err)
	}
	defer func() { _ = srv.Close() }()
	fmt.Fprintf(w, "  mysql:          %s, %s\n", c.Address, srv.Version())
	seen, err := srv.SessionTLS(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "  mysql tls:      %s (mysql.tls %s%s)%s\n", seen, srv.TLSMode(), caNote(c.CAFile, srv.TLSMode()), tlsWarning(seen.Encrypted(), srv.TLSMode(), strings.HasPrefix(c.Address, "/")))
	grants, err := srv.OwnGrants(ctx)
	if err != nil {
		return err
	}
	for _, g := range grants {
		fmt.Fprintf(w, "  mysql account:  %s\n", g)
	}
	if slices.ContainsFunc(grants, func(g string) bool { return strings.HasPrefix(g, "GRANT ALL PRIVILEGES ON *.*") }) {
		fmt.Fprintf(w, "  mysql account:  note: administrator of this server, which the engine needs here (it creates accounts, grants and definers)\n")
	}
	checkMySQLPeer(ctx, cfg, w)
	src, err := srv.SourceReadiness(ctx)
	if err != nil {
		return err
	}
	dst, err := srv.DestinationReadiness(ctx, nil)
	if err != nil {
		return err
	}
	printReadiness(w, "online source", src)
	printReadiness(w, "online dest", dst)
	return nil
}

// caNote names the CA bundle certificates are checked against.
func caNote(caFile, mode string) string {
	switch {
	case mode != mysql.TLSVerifyIdentity:
		return ", certificate not checked"
	case caFile == "":
		return ", certificate checked against the system's CAs"
	}
	return ", certificate checked against " + caFile
}

// tlsWarning flags a posture a review would not sign.
func tlsWarning(encrypted bool, mode string, socket bool) string {
	switch {
	case socket:
		return "" // local; peers reach it over TCP with the same settings
	case !encrypted:
		return "  WARNING: plaintext: customers' data and the administrator's login cross the network in the clear"
	case mode != mysql.TLSVerifyIdentity:
		return "  WARNING: encrypted but the server is not authenticated: set mysql.tls: verify-identity"
	}
	return ""
}

// printReadiness prints what a server lacks to be one side of a stream.
func printReadiness(w io.Writer, side string, r *engine.Readiness) {
	if len(r.Problems) == 0 {
		fmt.Fprintf(w, "  %-15s ready\n", side+":")
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  %-15s NOT READY: %s\n", side+":", p)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "  %-15s note: %s\n", side+":", n)
	}
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
