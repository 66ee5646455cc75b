package demo

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/statemachine/sqlstore"
)

// Zone is the DNS zone of the demo's database names.
const Zone = "db.example.test"

// Options configure a demo run.
type Options struct {
	Layout
	Size FleetSize
	// MaxProcs is the scheduler's --max-procs.
	MaxProcs int
	// Dir receives the configuration files, the secrets file and every
	// process's log. It is kept.
	Dir string
	// MigrateBin and AgentBin are the built binaries.
	MigrateBin, AgentBin string
	// Out receives progress and the summary.
	Out io.Writer
	// Redraw: progress redraws one line (a terminal) instead of printing a
	// line every ProgressEvery.
	Redraw        bool
	ProgressEvery time.Duration
	// Timeout bounds the migration phase (0: none).
	Timeout time.Duration
	// Parallel is how many databases are seeded and verified at once.
	Parallel int
	// MySQLJobs is the agents' mysql.jobs (0: the default).
	MySQLJobs int
	// DumpJobs is the agents' max-jobs.dump (0: 2, the shipped default).
	DumpJobs int
	// StoreFirst is the agents' agent.store-first: the dump step only
	// stores the dump, the import step takes it from the store.
	StoreFirst bool
	// Baselines: before migrating, copy each database with the tools users
	// would otherwise use (mariadb-dump, mydumper, pg_dump, pgcopydb) and
	// report their times beside ours. For a few large databases.
	Baselines bool
	// Lease is the agents' lease (0: 30 s; heartbeats every sixth of it):
	// how long a dead agent's rows wait before they are taken back. Fault
	// tests shorten it.
	Lease time.Duration
	// MaxFailed is the scheduler's --max-failed (0: 10): the failures that
	// trip the stop switch.
	MaxFailed int
	// HangTimeout is the agents' agent.hang-timeout (0: the default, 5m).
	HangTimeout time.Duration
	// StallTimeout is the agents' online.stall-timeout (0: the default, 5m).
	StallTimeout time.Duration
	// CutoverTimeout and CutoverAttempts are the agents'
	// online.cutover-timeout and online.cutover-attempts (0: the defaults,
	// 5 s and 8).
	CutoverTimeout  time.Duration
	CutoverAttempts int
	// ConvergeWindow and ConvergeTimeout are the agents'
	// online.converge-window and online.converge-timeout (0: the defaults,
	// 40 s and 30 min).
	ConvergeWindow, ConvergeTimeout time.Duration
	// CutoverBackoff is the agents' online.cutover-backoff (0: 10 s).
	CutoverBackoff time.Duration
	// StopGrace is the agents' agent.stop-grace (0: the default, 30 s);
	// their shutdown-timeout is 20 s.
	StopGrace time.Duration
	// Mode is the mode column of the plan (dump, online, auto); empty: no
	// column (the configuration's default, dump).
	Mode string
	// Writers is how many databases get a writer (Writer) during the
	// migration, WriterRate its inserts per second (0: 20).
	Writers    int
	WriterRate float64
	// HotRows: each writer's database also has a table of this many rows
	// that the writer updates at random keys, one update with each insert
	// (a table the customer writes all the time; 0: none).
	HotRows int
	// Proxied hosts' agents reach their database server through a TCP
	// proxy (Demo.Proxy) that a fault test can pause, slow and cut; so do
	// peers reaching it at the address the agent publishes.
	Proxied []string
	// Kills is how many processes the migration kills with kill -9 and
	// restarts at once, as systemd would after a crash (make demo KILL=N):
	// every third the scheduler, the others an agent holding rows of a
	// step, a different step each time (Kill).
	Kills int
}

func (o *Options) defaults() {
	switch {
	case o.Size != (FleetSize{}):
	case o.Engine == Postgres:
		// A PostgreSQL-only run gets the three clusters a side that a
		// mixed one gives MariaDB.
		o.Size = FleetSize{MySQLSources: 1, MySQLDestinations: 1, PostgresSources: 3, PostgresDestinations: 3}
	default:
		o.Size = FleetSize{MySQLSources: 3, MySQLDestinations: 3, PostgresSources: 1, PostgresDestinations: 1}
	}
	if o.MaxProcs == 0 {
		o.MaxProcs = 40
	}
	if o.ProgressEvery == 0 {
		o.ProgressEvery = 5 * time.Second
	}
	if o.Parallel == 0 {
		o.Parallel = 8
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Lease == 0 {
		o.Lease = 30 * time.Second
	}
	if o.MaxFailed == 0 {
		o.MaxFailed = 10
	}
}

// Demo is one run: the fleet, its databases, the processes.
type Demo struct {
	Opt   Options
	Fleet *Fleet
	DBs   []*Database
	// Store reads the state database (the demo's own view, for progress,
	// the summary and tests).
	Store *sqlstore.Store

	opsConf string
	// mu guards env, agents and down: fault tests kill, restart and
	// reconfigure processes while the demo watches them.
	mu     sync.Mutex
	env    []string
	agents []*fleettest.Process
	// agentIDs[i] is the host of agents[i]; down says which agents a fault
	// test killed on purpose (their exit is not an error).
	agentIDs []string
	down     map[string]bool
	// CPU seconds of the agents and the tools they ran, at the start and
	// end of the migration; killedCPU what killed agents had used.
	cpuStart, cpuEnd, killedCPU float64
	// kills done during the migration (Options.Kills)
	kills     []Kill
	peakRSS   int64
	sizes     map[string]int64 // measured before the baselines
	sched     *fleettest.Process
	schedArgs []string
	// extra schedulers a fault test started (StartScheduler)
	extra []*fleettest.Process
	// foreign: databases a test created at a server before the migration,
	// by host; no row accounts for them, and nothing may drop them.
	foreign map[string][]string
	// ghosts: rows a test planned for databases that do not exist at
	// their source (PlanGhost).
	ghosts []*Database
	// proxies by host ID (Options.Proxied)
	proxies map[string]*fleettest.Proxy
	// writers (Options.Writers)
	writers []*Writer
	started time.Time
	// migration phase
	migStart, migEnd time.Time
	verifyTook       time.Duration
	setupTook        time.Duration
	tlsBase          map[string]tlsStatus // host → its connection counters before the run (tls.go)
	statePasswords   map[string]string    // host → its agent's state-database password (grantAgents)
	invTook          time.Duration
}

// Secrets as environment variables, named as in deploy/config.example.yaml;
// the configuration files reference them as ${NAME}.
const (
	envStatePassword = "FLEETMIGRATE_DB_PASSWORD"
	envMySQLPassword = "FLEETMIGRATE_MYSQL_PASSWORD"
	envMySQLPeerPass = "FLEETMIGRATE_MYSQL_PEER_PASSWORD"
	envPGPassword    = "FLEETMIGRATE_POSTGRES_PASSWORD"
	envPGPeerPass    = "FLEETMIGRATE_POSTGRES_PEER_PASSWORD"
	envS3Access      = "FLEETMIGRATE_S3_ACCESS_KEY"
	envS3Secret      = "FLEETMIGRATE_S3_SECRET_KEY"
	envTSIG          = "FLEETMIGRATE_TSIG_SECRET"
	envLinkSecret    = "FLEETMIGRATE_LINK_SECRET"
)

// New prepares a demo; Setup starts it.
func New(opt Options) (*Demo, error) {
	opt.defaults()
	if opt.Dir == "" {
		return nil, errors.New("demo: no directory for logs and configuration")
	}
	if err := os.MkdirAll(opt.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	for _, b := range []string{opt.MigrateBin, opt.AgentBin} {
		if _, err := os.Stat(b); err != nil {
			return nil, fmt.Errorf("demo: binary %s: %w (run make build)", b, err)
		}
	}
	return &Demo{Opt: opt, started: time.Now()}, nil
}

func (d *Demo) say(format string, args ...any) {
	fmt.Fprintf(d.Opt.Out, format+"\n", args...)
}

// Setup starts the servers, seeds the databases, takes their checksums
// through DNS with their own credentials, writes the configuration and
// starts the agents.
func (d *Demo) Setup(ctx context.Context) error {
	t0 := time.Now()
	s := d.Opt.Size
	d.say("starting the fleet: state database, %d+%d MariaDB and %d+%d PostgreSQL hosts (source+destination), S3 server...",
		s.MySQLSources, s.MySQLDestinations, s.PostgresSources, s.PostgresDestinations)
	f, err := StartServers(ctx, s, d.Opt.Dir)
	if err != nil {
		return err
	}
	d.Fleet = f // Close stops it from here on
	// Count from here every connection the MariaDB servers take: all of
	// them must use TLS (the summary's TLS line).
	if err := d.tlsBaseline(ctx); err != nil {
		return err
	}
	for _, h := range f.Hosts {
		side := "destination"
		if h.Source {
			side = "source"
		}
		d.say("  %-14s %-8s %-11s %s", h.ID, h.Engine, side, h.Addr())
	}
	d.DBs = d.Opt.Plan(f, Zone)
	if err := f.StartDNS(ctx, Zone, Records(f, d.DBs, Zone)); err != nil {
		return err
	}
	d.say("  BIND9 for %s at %s (TSIG key %s); S3 bucket %s at %s (TLS, private CA)", Zone, f.BIND.Addr, f.BIND.KeyName, f.S3.Bucket, f.S3.Endpoint)

	var raw int64
	nMy := 0
	for _, db := range d.DBs {
		raw += int64(db.Rows) * 200
		if db.Engine == MySQL {
			nMy++
		}
	}
	d.say("seeding %d databases (%d MariaDB, %d PostgreSQL; about %s), each with its own user, password and DNS name...",
		len(d.DBs), nMy, len(d.DBs)-nMy, humanBytes(raw))
	if err := d.each(ctx, func(ctx context.Context, db *Database) error { return Seed(ctx, f, db) }); err != nil {
		return err
	}
	if err := d.prepareWriters(ctx); err != nil {
		return err
	}
	d.say("checksumming every database through DNS with its own credentials (the baseline)...")
	if err := d.each(ctx, func(ctx context.Context, db *Database) error {
		sum, err := Check(ctx, f, db, db.Source, nil)
		if err != nil {
			return fmt.Errorf("baseline of %s database %q: %w", db.Engine, db.Name, err)
		}
		db.Before = sum
		return nil
	}); err != nil {
		return err
	}
	for _, id := range d.Opt.Proxied {
		h := f.Host(id)
		if h == nil {
			return fmt.Errorf("proxy: no host %q", id)
		}
		p, err := fleettest.StartProxy(h.Addr())
		if err != nil {
			return err
		}
		f.track("proxy "+p.Addr+" to "+id, p.Close)
		if d.proxies == nil {
			d.proxies = map[string]*fleettest.Proxy{}
		}
		d.proxies[id] = p
		d.say("  %s's agent reaches its server through a TCP proxy at %s", id, p.Addr)
	}
	if err := d.writeConfig(); err != nil {
		return err
	}
	if _, err := d.tool(ctx, "db", "upgrade"); err != nil {
		return err
	}
	if err := d.grantAgents(ctx); err != nil {
		return err
	}
	if d.Store, err = sqlstore.Open(ctx, sqlstore.Config{Driver: "postgres", DSN: f.State.DSN("fleet")}); err != nil {
		return fmt.Errorf("open the state database: %w", err)
	}
	if err := d.startAgents(ctx); err != nil {
		return err
	}
	d.setupTook = time.Since(t0)
	return nil
}

// each runs fn for every database, Parallel at once; the first error ends it.
func (d *Demo) each(ctx context.Context, fn func(context.Context, *Database) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(d.Opt.Parallel)
	for _, db := range d.DBs {
		g.Go(func() error { return fn(gctx, db) })
	}
	return g.Wait()
}

// writeConfig writes the secrets file (as an EnvironmentFile would hold
// them), the ops host's configuration and one per agent.
func (d *Demo) writeConfig() error {
	f := d.Fleet
	secrets := map[string]string{
		envStatePassword: f.State.Password,
		envMySQLPassword: f.AdminPassword,
		envMySQLPeerPass: f.PeerPassword,
		envPGPassword:    f.AdminPassword,
		envPGPeerPass:    f.PeerPassword,
		envS3Access:      f.S3.AccessKey,
		envS3Secret:      f.S3.SecretKey,
		envTSIG:          f.BIND.KeySecret,
		envLinkSecret:    randomHex(32),
	}
	var env, file []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FLEETMIGRATE_") && !strings.HasPrefix(kv, "LOG_LEVEL=") {
			env = append(env, kv)
		}
	}
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range secrets {
			if !yield(k) {
				return
			}
		}
	}) {
		env = append(env, k+"="+secrets[k])
		file = append(file, k+"="+shellQuote(secrets[k]))
	}
	d.opsConf = filepath.Join(d.Opt.Dir, "ops.yaml")
	d.env = append(env, "FLEETMIGRATE_CONFIG="+d.opsConf)
	if err := os.WriteFile(filepath.Join(d.Opt.Dir, "secrets.env"), []byte(strings.Join(file, "\n")+"\n"), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(d.opsConf, []byte(d.config("ops", "", nil)), 0o600); err != nil {
		return err
	}
	for _, h := range f.Hosts {
		if err := d.SetRoles(h.ID, allRoles); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(d.Opt.Dir, "dns-1.yaml"), []byte(d.config("dns-1", "dns", nil)), 0o600)
}

// allRoles are the roles of a database host's agent.
const allRoles = "sync, cutover, dump, import, close, rollback"

// SetRoles rewrites the configuration of database host id's agent with
// roles (a comma-separated list; "" for every role); RestartAgent then
// runs it so.
func (d *Demo) SetRoles(id, roles string) error {
	if roles == "" {
		roles = allRoles
	}
	for _, h := range d.Fleet.Hosts {
		if h.ID == id {
			return os.WriteFile(filepath.Join(d.Opt.Dir, h.ID+".yaml"), []byte(d.config(h.ID, roles, h)), 0o600)
		}
	}
	return fmt.Errorf("no database host %q", id)
}

// config is the YAML of one host's configuration: what an operator would
// put in /etc/fleetmigrate/config.yaml, secrets as ${VAR}.
func (d *Demo) config(host, roles string, h *Host) string {
	f := d.Fleet
	var b strings.Builder
	// The agents log in to the state database as their host's own login
	// (migrate db grant-agent), with their own password in
	// FLEETMIGRATE_DB_PASSWORD; the ops host as the operator.
	stateDSN := f.StateDSN(envStatePassword)
	if roles != "" {
		stateDSN = f.StateDSNAs(sqlstore.DefaultLogin(host), envStatePassword)
	}
	fmt.Fprintf(&b, "# %s — written by the demo\nhost: %s\nstate:\n  driver: postgres\n  dsn: %q\n  ca-file: %s\nlog:\n  format: json\n", host, host, stateDSN, f.CA.CertFile)
	if roles != "" {
		fmt.Fprintf(&b, "agent:\n  roles: [%s]\n  poll-interval: 250ms\n  lease: %s\n  heartbeat-interval: %s\n  shutdown-timeout: 20s\n",
			roles, d.Opt.Lease, d.Opt.Lease/6)
		if d.Opt.HangTimeout > 0 {
			fmt.Fprintf(&b, "  hang-timeout: %s\n", d.Opt.HangTimeout)
		}
		if d.Opt.StopGrace > 0 {
			fmt.Fprintf(&b, "  stop-grace: %s\n", d.Opt.StopGrace)
		}
		if d.Opt.StoreFirst {
			fmt.Fprintf(&b, "  store-first: true\n")
		}
		dumpJobs := d.Opt.DumpJobs
		if dumpJobs <= 0 {
			dumpJobs = 2
		}
		fmt.Fprintf(&b, "  max-jobs: {sync: 16, cutover: 8, dump: %d, import: 6, close: 8, rollback: 2, dns: 32}\n", dumpJobs)
		if h != nil {
			fmt.Fprintf(&b, "  dns-target: %s\n", h.IP)
		}
	}
	fmt.Fprintf(&b, "storage:\n  backend: s3\n  s3:\n    endpoint: %s\n    ca-file: %s\n    region: %s\n    bucket: %s\n    path-style: true\n    access-key: ${%s}\n    secret-key: ${%s}\n",
		f.S3.Endpoint, f.CA.CertFile, f.S3.Region, f.S3.Bucket, envS3Access, envS3Secret)
	fmt.Fprintf(&b, "links:\n  public-base: http://127.0.0.1:18080\n  listen: 127.0.0.1:18080\n  secret: ${%s}\n", envLinkSecret)
	if h != nil {
		addr := h.Addr()
		if p := d.proxies[h.ID]; p != nil {
			addr = p.Addr
		}
		switch h.Engine {
		case MySQL:
			// Every connection to a MariaDB server (this one, its peers;
			// the engine's, the tools', the binary log's) checks the
			// server's certificate against the fleet's CA and its
			// address. Through a fault proxy the address is the proxy's:
			// encrypted, the name not checked.
			tlsMode := "verify-identity"
			if d.proxies[h.ID] != nil {
				tlsMode = "required"
			}
			// Other hosts' servers are read with the read-only peer
			// account (security.md, least privilege between servers).
			fmt.Fprintf(&b, "mysql:\n  address: %s\n  user: %s\n  password: ${%s}\n  peer-user: %s\n  peer-password: ${%s}\n  session-wait: 10s\n  tls: %s\n  ca-file: %s\n",
				addr, f.AdminUser, envMySQLPassword, f.PeerUser, envMySQLPeerPass, tlsMode, f.CA.CertFile)
			if d.Opt.MySQLJobs > 0 {
				fmt.Fprintf(&b, "  jobs: %d\n", d.Opt.MySQLJobs)
			}
		case Postgres:
			// verify-full: the agent's sessions, pg_dump/pg_restore and
			// the subscriptions check the server's certificate and name.
			sslmode := "verify-full"
			if d.proxies[h.ID] != nil {
				sslmode = "require"
			}
			fmt.Fprintf(&b, "postgres:\n  address: %s\n  user: %s\n  password: ${%s}\n  peer-user: %s\n  peer-password: ${%s}\n  session-wait: 10s\n  sslmode: %s\n  sslrootcert: %s\n",
				addr, f.AdminUser, envPGPassword, f.PeerUser, envPGPeerPass, sslmode, f.CA.CertFile)
		}
	}
	var online []string
	for _, o := range []struct {
		key string
		val time.Duration
	}{{"stall-timeout", d.Opt.StallTimeout}, {"cutover-timeout", d.Opt.CutoverTimeout}, {"cutover-backoff", d.Opt.CutoverBackoff},
		{"converge-window", d.Opt.ConvergeWindow}, {"converge-timeout", d.Opt.ConvergeTimeout}} {
		if o.val > 0 {
			online = append(online, fmt.Sprintf("  %s: %s\n", o.key, o.val))
		}
	}
	if d.Opt.CutoverAttempts > 0 {
		online = append(online, fmt.Sprintf("  cutover-attempts: %d\n", d.Opt.CutoverAttempts))
	}
	if len(online) > 0 {
		fmt.Fprintf(&b, "online:\n%s", strings.Join(online, ""))
	}
	if h == nil {
		// The fleet's hosts are loopback addresses: the DNS host vouches for
		// what their agents publish there, and nothing else.
		fmt.Fprintf(&b, "dns:\n  zones:\n    - name: %s\n      primary: %s\n  key-name: %s\n  key-secret: ${%s}\n  key-algorithm: %s\n  rate: 2000\n  allowed-targets: [127.0.0.0/8]\n",
			Zone, f.BIND.Addr, f.BIND.KeyName, envTSIG, f.BIND.KeyAlgorithm)
	}
	return b.String()
}

func (d *Demo) startAgents(ctx context.Context) error {
	hosts := d.agentHosts()
	for _, id := range hosts {
		p, err := startProc("migrate-agent "+id, d.Opt.AgentBin, d.AgentEnv(id), filepath.Join(d.Opt.Dir, "agent-"+id+".log"),
			"--config", filepath.Join(d.Opt.Dir, id+".yaml"))
		if err != nil {
			return err
		}
		d.mu.Lock()
		d.agents, d.agentIDs = append(d.agents, p), append(d.agentIDs, id)
		d.mu.Unlock()
	}
	d.say("started %d migrate-agent processes (one per host, one for DNS); waiting for them to register...", len(d.agents))
	deadline := time.Now().Add(30 * time.Second)
	for {
		as, err := d.Store.Agents(ctx, time.Minute)
		if err == nil && len(as) == len(hosts) {
			return nil
		}
		if err := d.agentExited(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("agents: cannot read the agent registry in the state database: %w", err)
			}
			var missing []string
			for _, id := range hosts {
				if !slices.ContainsFunc(as, func(a statemachine.Agent) bool { return a.Host == id }) {
					missing = append(missing, id)
				}
			}
			return fmt.Errorf("the agents of %s did not register within 30 s; see %s", strings.Join(missing, ", "),
				filepath.Join(d.Opt.Dir, "agent-<host>.log"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Env is the environment the demo's processes run with: the secrets and
// FLEETMIGRATE_CONFIG of the ops host's configuration.
func (d *Demo) Env() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.env)
}

// agentHosts are the hosts with an agent: every database host and the DNS
// host.
func (d *Demo) agentHosts() []string {
	var hosts []string
	for _, h := range d.Fleet.Hosts {
		hosts = append(hosts, h.ID)
	}
	return append(hosts, "dns-1")
}

// grantAgents gives every agent its host's own state-database login, as an
// operator would: `migrate db grant-agent HOST --password-file F` (the DNS
// host's with --dns). The password files stand for each host's own
// environment file.
func (d *Demo) grantAgents(ctx context.Context) error {
	passwords := map[string]string{}
	for _, id := range d.agentHosts() {
		file := filepath.Join(d.Opt.Dir, id+".state-password")
		args := []string{"db", "grant-agent", id, "--password-file", file}
		if id == "dns-1" {
			args = append(args, "--dns")
		}
		if _, err := d.tool(ctx, args...); err != nil {
			return fmt.Errorf("grant %s its state-database login: %w", id, err)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		passwords[id] = strings.TrimSpace(string(b))
	}
	d.mu.Lock()
	d.statePasswords = passwords
	d.mu.Unlock()
	d.say("  state database: %d agent logins, one per host (migrate db grant-agent); each agent may move only its host's rows", len(passwords))
	return nil
}

// AgentEnv is the environment of host id's agent: Env with its own
// state-database password, as its host's environment file would hold.
func (d *Demo) AgentEnv(id string) []string {
	env := d.Env()
	d.mu.Lock()
	defer d.mu.Unlock()
	if pw, ok := d.statePasswords[id]; ok {
		env = append(env, envStatePassword+"="+pw)
	}
	return env
}

// SetSecret changes one secret of the environment (FLEETMIGRATE_...), for
// processes started from now on, as an operator editing the environment
// file would.
func (d *Demo) SetSecret(name, value string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.env = slices.DeleteFunc(d.env, func(kv string) bool { return strings.HasPrefix(kv, name+"=") })
	d.env = append(d.env, name+"="+value)
}

// Agent returns the agent process of host id ("dns-1" for the DNS agent).
func (d *Demo) Agent(id string) *fleettest.Process {
	d.mu.Lock()
	defer d.mu.Unlock()
	if i := slices.Index(d.agentIDs, id); i >= 0 {
		return d.agents[i]
	}
	return nil
}

// Proxy is the TCP proxy between host id's agent and its server
// (Options.Proxied), nil if there is none.
func (d *Demo) Proxy(id string) *fleettest.Proxy { return d.proxies[id] }

// KillAgent ends host id's agent with SIGKILL, as a crash would: its rows
// keep their leases until those expire.
func (d *Demo) KillAgent(id string) error {
	p := d.Agent(id)
	if p == nil {
		return fmt.Errorf("no agent for host %q", id)
	}
	d.setDown(id, true)
	p.Kill()
	return nil
}

// StopAgent stops host id's agent with SIGTERM, as systemctl stop would,
// waiting up to timeout (then it is killed and the error says so).
func (d *Demo) StopAgent(id string, timeout time.Duration) error {
	p := d.Agent(id)
	if p == nil {
		return fmt.Errorf("no agent for host %q", id)
	}
	d.setDown(id, true)
	return p.Stop(timeout)
}

// RestartAgent starts host id's agent again (after KillAgent, or to take a
// changed secret), as systemd would, with the current environment.
func (d *Demo) RestartAgent(id string) error {
	p := d.Agent(id)
	if p == nil {
		return fmt.Errorf("no agent for host %q", id)
	}
	if !p.Exited() {
		d.setDown(id, true)
		if err := p.Stop(30 * time.Second); err != nil {
			return err
		}
	}
	if err := p.Restart(d.AgentEnv(id)); err != nil {
		return err
	}
	d.setDown(id, false)
	return nil
}

// Scheduler is the running scheduler process (nil before StartMigration).
func (d *Demo) Scheduler() *fleettest.Process {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sched
}

// Tool runs `migrate args...` with the ops host's configuration and returns
// its output.
func (d *Demo) Tool(ctx context.Context, args ...string) (string, error) { return d.tool(ctx, args...) }

// agentExited says which agent exited, with the end of its log.
func (d *Demo) agentExited() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, p := range d.agents {
		if p.Exited() && !d.down[d.agentIDs[i]] {
			return fmt.Errorf("%s exited (code %d); the end of its log %s:\n%s", p.Name(), p.ExitCode(), p.LogPath(), tail(readFile(p.LogPath()), 10))
		}
	}
	return nil
}

// tool runs `migrate args...` with the ops configuration.
func (d *Demo) tool(ctx context.Context, args ...string) (string, error) {
	return runTool(ctx, d.Opt.MigrateBin, d.Env(), filepath.Join(d.Opt.Dir, "migrate-commands.log"), args...)
}

// Migrate plans the databases, lowers their TTLs, runs the scheduler until
// no row is waiting or in flight, then stops it.
func (d *Demo) Migrate(ctx context.Context) error {
	if err := d.StartMigration(ctx); err != nil {
		return err
	}
	return d.Finish(ctx, Settled(false))
}

// Settled: no row queued or worked on: every row ended, failed (an
// operator's turn), or waits behind a tripped stop switch when stopped.
func Settled(stopped bool) func(map[statemachine.Status]int) bool {
	return func(counts map[statemachine.Status]int) bool {
		for st, n := range counts {
			if n == 0 || st.Terminal() || st.Failed() || (st == statemachine.Waiting && stopped) {
				continue
			}
			return false
		}
		return true
	}
}

// StartMigration plans the databases, lowers their TTLs and starts the
// scheduler; Finish waits and stops it.
func (d *Demo) StartMigration(ctx context.Context) error {
	planFile := filepath.Join(d.Opt.Dir, "plan.csv")
	d.mu.Lock()
	planned := append(slices.Clone(d.DBs), d.ghosts...)
	d.mu.Unlock()
	if err := writePlan(planFile, planned, d.Opt.Mode); err != nil {
		return err
	}
	if err := d.startWriters(ctx); err != nil {
		return err
	}
	out, err := d.tool(ctx, "plan", "--file", planFile)
	if err != nil {
		return err
	}
	d.say("$ migrate plan --file %s\n  %s", planFile, strings.TrimSpace(lastLine(out)))
	out, err = d.tool(ctx, "dns", "lower-ttl", "--ttl", "60", "--execute")
	if err != nil {
		return err
	}
	d.say("$ migrate dns lower-ttl --ttl 60 --execute\n  %s", strings.TrimSpace(lastLine(out)))

	args := []string{"--max-procs", fmt.Sprint(d.Opt.MaxProcs), "--max-per-source", "16", "--max-per-destination", "16", "--tick", "1s", "--max-failed", fmt.Sprint(d.Opt.MaxFailed)}
	d.say("$ migrate %s", strings.Join(args, " "))
	d.say("  (watch it from another terminal: set -a; . %s; %s status --watch --config %s)",
		filepath.Join(d.Opt.Dir, "secrets.env"), d.Opt.MigrateBin, d.opsConf)
	d.migStart = time.Now()
	d.cpuStart = d.agentsCPU()
	sched, err := startProc("migrate (scheduler)", d.Opt.MigrateBin, d.Env(), filepath.Join(d.Opt.Dir, "scheduler.log"), args...)
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.sched, d.schedArgs = sched, args
	d.mu.Unlock()
	return nil
}

// StartScheduler starts one more scheduler with the same flags (after
// StartMigration), as an operator starting a second one by mistake or as a
// standby would; Close stops it.
func (d *Demo) StartScheduler(name string) (*fleettest.Process, error) {
	d.mu.Lock()
	args := d.schedArgs
	d.mu.Unlock()
	if args == nil {
		return nil, errors.New("demo: no migration started")
	}
	p, err := startProc("migrate (scheduler "+name+")", d.Opt.MigrateBin, d.Env(), filepath.Join(d.Opt.Dir, "scheduler-"+name+".log"), args...)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.extra = append(d.extra, p)
	d.mu.Unlock()
	return p, nil
}

// Finish shows progress until done says the counts are final (or
// Options.Timeout), then stops the scheduler.
func (d *Demo) Finish(ctx context.Context, until func(map[statemachine.Status]int) bool) error {
	mctx := ctx
	if d.Opt.Timeout > 0 {
		var cancel context.CancelFunc
		mctx, cancel = context.WithTimeout(ctx, d.Opt.Timeout)
		defer cancel()
	}
	kctx, stopKills := context.WithCancel(mctx)
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		if d.Opt.Kills > 0 {
			d.killLoop(kctx)
		}
	}()
	werr := d.wait(mctx, until)
	stopKills()
	<-killed
	d.migEnd = time.Now()
	d.stopWriters(ctx)
	d.cpuEnd = d.agentsCPU()
	d.peakRSS = d.agentsPeakRSS()
	if err := d.Scheduler().Stop(30 * time.Second); err != nil && werr == nil {
		werr = err
	}
	if werr != nil && ctx.Err() == nil && mctx.Err() != nil {
		return fmt.Errorf("the migration did not finish within %s: %w", d.Opt.Timeout, werr)
	}
	return werr
}

// wait shows progress until nothing is waiting or in flight.
func (d *Demo) wait(ctx context.Context, until func(map[statemachine.Status]int) bool) error {
	total := len(d.DBs)
	last := time.Time{}
	for {
		counts, err := d.Store.Counts(ctx)
		if err != nil {
			// The state database may be down for a while (an outage, a
			// fault test): say so and keep watching.
			if ctx.Err() != nil {
				return fmt.Errorf("%w (last: %w)", ctx.Err(), err)
			}
			if time.Since(last) >= d.Opt.ProgressEvery {
				fmt.Fprintf(d.Opt.Out, "%7.1fs  cannot read the state database: %v\n", time.Since(d.migStart).Seconds(), err)
				last = time.Now()
			}
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		var active, failed, done int
		var parts []string
		for _, st := range statemachine.Statuses {
			n := counts[st]
			switch {
			case st == statemachine.Done:
				done += n
			case st.Failed():
				failed += n
			case st == statemachine.Waiting || st.InFlight():
				active += n
				if n > 0 && st != statemachine.Waiting {
					parts = append(parts, fmt.Sprintf("%s %d", st, n))
				}
			}
		}
		line := fmt.Sprintf("%7.1fs  done %d/%d  waiting %d  in flight %d  failed %d  [%s]",
			time.Since(d.migStart).Seconds(), done, total, counts[statemachine.Waiting], active-counts[statemachine.Waiting], failed, strings.Join(parts, ", "))
		finished := until(counts)
		switch {
		case d.Opt.Redraw:
			fmt.Fprintf(d.Opt.Out, "\r\033[K%s", line)
			if finished {
				fmt.Fprintln(d.Opt.Out)
			}
		case finished || time.Since(last) >= d.Opt.ProgressEvery:
			fmt.Fprintln(d.Opt.Out, line)
			last = time.Now()
		}
		if finished {
			return nil
		}
		if sched := d.Scheduler(); sched.Exited() && !d.isDown("scheduler") && active > 0 && counts[statemachine.Waiting] == active {
			return fmt.Errorf("the scheduler exited (code %d) with %d rows waiting; the end of %s:\n%s", sched.ExitCode(), active, sched.LogPath(), tail(readFile(sched.LogPath()), 10))
		}
		if err := d.agentExited(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			if d.Opt.Redraw {
				fmt.Fprintln(d.Opt.Out)
			}
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Verify checks every database as its users will, after the migration.
func (d *Demo) Verify(ctx context.Context) []Problem {
	t0 := time.Now()
	defer func() { d.verifyTook = time.Since(t0) }()
	var mu sync.Mutex
	var problems []Problem
	_ = d.each(ctx, func(ctx context.Context, db *Database) error {
		if _, err := Check(ctx, d.Fleet, db, db.Destination, &db.Before); err != nil {
			mu.Lock()
			problems = append(problems, Problem{DB: db, Err: err})
			mu.Unlock()
		}
		return nil
	})
	slices.SortFunc(problems, func(a, b Problem) int { return strings.Compare(a.DB.DNSName, b.DB.DNSName) })
	return problems
}

// Close stops the agents (SIGTERM, as systemd would), the scheduler if it
// still runs, and every server. It says what it stopped.
func (d *Demo) Close() error {
	for _, w := range d.writers {
		if w.stop != nil {
			w.halt()
		}
	}
	var errs []error
	n := 0
	if sched := d.Scheduler(); sched != nil {
		if err := sched.Stop(30 * time.Second); err != nil {
			errs = append(errs, err)
		}
		n++
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	d.mu.Lock()
	agents, extra := slices.Clone(d.agents), slices.Clone(d.extra)
	d.mu.Unlock()
	for _, p := range extra {
		if err := p.Stop(30 * time.Second); err != nil {
			errs = append(errs, err)
		}
		n++
	}
	for _, p := range agents {
		wg.Go(func() {
			if err := p.Stop(30 * time.Second); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
		n++
	}
	wg.Wait()
	if d.Store != nil {
		_ = d.Store.Close()
	}
	servers := 0
	if d.Fleet != nil {
		servers = d.Fleet.Servers()
		if err := d.Fleet.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	d.say("stopped %d fleetmigrate processes and %d servers; logs and configuration are in %s", n, servers, d.Opt.Dir)
	return errors.Join(errs...)
}

func writePlan(path string, dbs []*Database, mode string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	header := []string{"engine", "database", "source", "destination", "dns_name"}
	if mode != "" {
		header = append(header, "mode")
	}
	_ = w.Write(header)
	for _, db := range dbs {
		line := []string{db.Engine, db.Name, db.Source, db.Destination, db.DNSName}
		if mode != "" {
			m := mode
			line = append(line, m)
		}
		_ = w.Write(line)
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// Run is the whole demo: Setup, Migrate, Verify, the summary, Close. It
// returns the summary; err is set when the demo could not run to the end
// (the summary then says how far it got) or ctx was cancelled.
func Run(ctx context.Context, opt Options) (Summary, error) {
	d, err := New(opt)
	if err != nil {
		return Summary{}, err
	}
	defer func() {
		if cerr := d.Close(); cerr != nil {
			d.say("while stopping: %v", cerr)
		}
	}()
	if err := d.Setup(ctx); err != nil {
		return Summary{Dir: d.Opt.Dir}, fmt.Errorf("setting up: %w", err)
	}
	var baselines []Baseline
	if d.Opt.Baselines || d.Opt.SizeBytes > 0 {
		// Fresh statistics (ANALYZE), as a settled database has: the
		// engines size a database from them, and a freshly loaded one
		// looks small to MariaDB for a while.
		sizes, err := d.Sizes(ctx)
		if err != nil {
			return Summary{Dir: d.Opt.Dir}, fmt.Errorf("measure the databases: %w", err)
		}
		d.sizes = sizes
	}
	if d.Opt.Baselines {
		d.say("baselines: copying each database with the tools users would otherwise use (same servers, same data, scratch copies dropped)...")
		baselines = d.Baselines(ctx, d.sizes)
	}
	if err := d.Migrate(ctx); err != nil {
		return Summary{Dir: d.Opt.Dir}, err
	}
	d.say("verifying every database through DNS with its ORIGINAL user and password...")
	problems := d.Verify(ctx)
	if ctx.Err() != nil {
		return Summary{Dir: d.Opt.Dir}, ctx.Err()
	}
	d.say("checking the invariants over the whole fleet (state table, every server, DNS, object store)...")
	t0 := time.Now()
	inv, ierr := d.CheckInvariants(ctx)
	d.invTook = time.Since(t0)
	if ctx.Err() != nil {
		return Summary{Dir: d.Opt.Dir}, ctx.Err()
	}
	s, err := d.Summarize(ctx, problems)
	s.Invariants, s.InvariantsErr = inv, ierr
	s.Baselines = baselines
	if err != nil {
		return s, err
	}
	s.Print(d.Opt.Out)
	return s, nil
}

func (d *Demo) isDown(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.down[id]
}

// setDown records that a fault test stopped process id on purpose (its
// exit is not an error), or that it runs again.
func (d *Demo) setDown(id string, down bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.down == nil {
		d.down = map[string]bool{}
	}
	if down {
		d.down[id] = true
	} else {
		delete(d.down, id)
	}
}

// KillScheduler ends the scheduler with SIGKILL; RestartScheduler starts
// it again with the same flags.
func (d *Demo) KillScheduler() {
	d.setDown("scheduler", true)
	d.Scheduler().Kill()
}

// RestartScheduler starts the scheduler again after KillScheduler.
func (d *Demo) RestartScheduler() error {
	if err := d.Scheduler().Restart(d.Env()); err != nil {
		return err
	}
	d.setDown("scheduler", false)
	return nil
}
