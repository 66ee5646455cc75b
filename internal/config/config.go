// Package config loads fleetmigrate's one configuration file, shared by
// `migrate` and `migrate-agent`: YAML with kebab-case keys, strict (an unknown
// key is an error naming it and its line), ${ENV} expansion inside values for
// secrets, every default in New(). deploy/config.example.yaml documents every
// key; a test keeps it loadable and complete.
//
// Precedence, lowest first: defaults, the file, environment variables
// (FLEETMIGRATE_STATE_DSN, FLEETMIGRATE_STATE_DRIVER, LOG_LEVEL), flags.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fleetmigrate/fleetmigrate/dns"
)

// DefaultPath is read when no --config is given and FLEETMIGRATE_CONFIG is
// unset, if it exists.
const DefaultPath = "/etc/fleetmigrate/config.yaml"

// Config is the whole configuration.
type Config struct {
	// Host is this machine's host ID in the state table (the source and
	// destination columns). Default: the machine's hostname, lower-cased.
	Host     string   `yaml:"host"`
	State    State    `yaml:"state"`
	Log      Log      `yaml:"log"`
	Agent    Agent    `yaml:"agent"`
	Storage  Storage  `yaml:"storage"`
	Links    Links    `yaml:"links"`
	MySQL    MySQL    `yaml:"mysql"`
	Postgres Postgres `yaml:"postgres"`
	DNS      DNS      `yaml:"dns"`
	Online   Online   `yaml:"online"`
}

// Online configures online mode (docs/online.md): the plan's default mode
// and the sync and cutover steps of the agents.
type Online struct {
	// DefaultMode is the mode of plan lines that name none: dump, online
	// or auto. Default: dump (online rows need agents with the sync and
	// cutover roles, and sources with wal_level = logical).
	DefaultMode string `yaml:"default-mode"`
	// AutoMinMiB: a row in mode auto streams only if its database is at
	// least this large; smaller ones dump. Default: 0.
	AutoMinMiB int64 `yaml:"auto-min-mib"`
	// MaxLagMiB: the sync step hands a row to the cutover once its initial
	// copy is done and the stream is at most this far behind. Default: 1.
	MaxLagMiB int64 `yaml:"max-lag-mib"`
	// CutoverTimeout bounds how long writes stay blocked waiting for the
	// destination to catch up; then they are restored and the row goes
	// back to syncing. Default: 5s.
	CutoverTimeout time.Duration `yaml:"cutover-timeout"`
	// CutoverAttempts is how many timed-out cutovers a row gets before
	// Cutover failed. Default: 8.
	CutoverAttempts int `yaml:"cutover-attempts"`
	// CutoverBackoff is how long a row syncs after its first timed-out
	// cutover before the next; it doubles after each (at most 5m).
	// Default: 10s.
	CutoverBackoff time.Duration `yaml:"cutover-backoff"`
	// ConvergeWindow: a stream whose lag stayed above max-lag-mib and grew
	// over this whole window is reported as not converging (on the row, in
	// a metric). Default: 40s.
	ConvergeWindow time.Duration `yaml:"converge-window"`
	// ConvergeTimeout: a stream not converging this long fails its row
	// (after a timed-out cutover, one window is enough). 0: never.
	// Default: 30m.
	ConvergeTimeout time.Duration `yaml:"converge-timeout"`
	// LagInterval is how often a syncing row's lag is written on it.
	// Default: 5s.
	LagInterval time.Duration `yaml:"lag-interval"`
	// StallTimeout: a stream that makes no progress this long while it
	// syncs (its initial copy, or its apply while behind) is made again from
	// the start, twice, then the row fails. 0 turns the check off.
	// Default: 5m.
	StallTimeout time.Duration `yaml:"stall-timeout"`
}

// DNS is how the DNS agent (and migrate dns ... on the ops host) changes
// the records of the databases' names: RFC 2136 updates signed with a TSIG
// key, sent to each zone's primary.
type DNS struct {
	// Zones are the zones database names are in, with the primary that
	// takes updates and the secondaries that must show a change before it
	// counts.
	Zones []DNSZone `yaml:"zones"`
	// Server (host:port) is asked for the zone of names outside Zones (SOA
	// discovery) and then takes their updates. Empty: such names fail.
	Server string `yaml:"server"`
	// KeyFile is a BIND key file (tsig-keygen's output) holding the TSIG
	// key; or give KeyName and KeySecret (from the environment: ${...}).
	KeyFile      string `yaml:"key-file"`
	KeyName      string `yaml:"key-name"`
	KeySecret    string `yaml:"key-secret"`
	KeyAlgorithm string `yaml:"key-algorithm"`
	// Timeout bounds one exchange with a server. Default: 5s.
	Timeout time.Duration `yaml:"timeout"`
	// ConfirmTimeout bounds the wait for the secondaries to show a change.
	// Default: 60s.
	ConfirmTimeout time.Duration `yaml:"confirm-timeout"`
	// TTL of repointed records in seconds; 0 keeps the record's TTL.
	TTL int `yaml:"ttl"`
	// MaxBatch bounds the names changed in one UPDATE message. Default: 50.
	MaxBatch int `yaml:"max-batch"`
	// Targets gives hosts' DNS targets here instead of (and over) what
	// their agents publish (agent.dns-target): host ID -> addresses or
	// host name.
	Targets map[string]string `yaml:"targets"`
	// AllowedTargets are the networks (CIDRs, or single addresses) a
	// target an agent publishes must be in for the DNS step (and migrate
	// rollback) to point a name at it; targets above are allowed as they
	// are. Empty: only targets above (docs/security.md).
	AllowedTargets []string `yaml:"allowed-targets"`
	// Rate bounds migrate dns lower-ttl / restore-ttl, in updates per
	// second. Default: 200.
	Rate float64 `yaml:"rate"`
}

// DNSZone is one zone of the dns section.
type DNSZone struct {
	Name        string   `yaml:"name"`
	Primary     string   `yaml:"primary"`
	Secondaries []string `yaml:"secondaries"`
}

// Configured reports whether the dns section says where to send updates.
func (d DNS) Configured() bool { return len(d.Zones) > 0 || d.Server != "" }

// Postgres is this host's PostgreSQL cluster, as the agent reaches it for
// the steps of rows of engine postgres. An empty address means the host
// has none.
type Postgres struct {
	// Address is host:port (or a Unix socket directory) of the local
	// cluster.
	Address string `yaml:"address"`
	// AdvertiseAddress is how the other agents reach this cluster.
	// Default: Address.
	AdvertiseAddress string `yaml:"advertise-address"`
	// User and Password are the superuser role the engine uses at this
	// cluster (it creates roles with their password verifiers and changes
	// ownerships).
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	// PeerUser and PeerPassword are the role this agent reads other
	// hosts' clusters with (the destination reads its sources: dump,
	// checksums, logical replication), the same on every cluster of the
	// fleet: a read-only one (docs/security.md: LOGIN REPLICATION
	// BYPASSRLS, member of pg_read_all_data and pg_monitor) — every change
	// at a cluster is its own agent's. Default: User and Password (a
	// superuser at every peer).
	PeerUser     string `yaml:"peer-user"`
	PeerPassword string `yaml:"peer-password"`
	// BinDir holds pg_dump and pg_restore. Default:
	// /usr/lib/postgresql/<server major>/bin (or the oldest newer one).
	BinDir string `yaml:"bin-dir"`
	// SessionWait bounds the wait for ended sessions to go away. Default:
	// 30s.
	SessionWait time.Duration `yaml:"session-wait"`
	// TempDir holds the tools' 0600 password files and the spooled dumps
	// of parallel restores. Default: the system's temporary directory.
	TempDir string `yaml:"temp-dir"`
	// SSLMode and SSLRootCert: TLS to the cluster (and to peers), libpq's
	// sslmode and sslrootcert.
	SSLMode     string `yaml:"sslmode"`
	SSLRootCert string `yaml:"sslrootcert"`
	// ParallelAboveMiB is the database size above which the import
	// spools the dump and restores with Jobs workers. Default: 512.
	ParallelAboveMiB int64 `yaml:"parallel-above-mib"`
	// Jobs is the number of parallel restore workers and checksum
	// sessions. Default: 2.
	Jobs int `yaml:"jobs"`
}

// MySQL is this host's MySQL or MariaDB server, as the agent reaches it
// for the dump, import, close and rollback steps of rows of engine mysql.
// An empty address means the host has none: the agent then handles no
// such rows.
type MySQL struct {
	// Address is host:port (or a Unix socket path) of the local server.
	Address string `yaml:"address"`
	// AdvertiseAddress is how the other agents reach this server (the
	// source checks the destination before blocking writes; a rollback
	// drops the import here). Default: Address.
	AdvertiseAddress string `yaml:"advertise-address"`
	// User and Password are the administrator account the engine uses on
	// this server.
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	// PeerUser and PeerPassword are the account this agent reads other
	// hosts' servers with (the destination reads its sources: dump,
	// checksums, binary log), the same on every server of the fleet: a
	// read-only one (docs/security.md: SELECT, SHOW VIEW, TRIGGER, EVENT,
	// PROCESS, REPLICATION SLAVE, BINLOG MONITOR) — every change at a
	// server is its own agent's. Default: User and Password (an
	// administrator at every peer).
	PeerUser     string `yaml:"peer-user"`
	PeerPassword string `yaml:"peer-password"`
	// DumpTool and ClientTool are the paths of mariadb-dump/mysqldump and
	// mariadb/mysql. Default: the server family's tools on PATH.
	DumpTool   string `yaml:"dump-tool"`
	ClientTool string `yaml:"client-tool"`
	// SessionWait bounds the wait for ended sessions to go away when
	// writes are blocked or the source closed. Default: 30s.
	SessionWait time.Duration `yaml:"session-wait"`
	// TempDir holds the tools' short-lived 0600 credential files.
	// Default: the system's temporary directory.
	TempDir string `yaml:"temp-dir"`
	// Jobs is how many sessions load a dump's rows at once, and checksum
	// tables at once when verifying an import. 1: the client loads the
	// dump as one script. Default: 4.
	Jobs int `yaml:"jobs"`
	// ParallelAboveMiB: databases larger than this are dumped in parts and
	// loaded and verified over Jobs sessions; smaller ones as one script.
	// Default: 64 (0 too); negative: never.
	ParallelAboveMiB int64 `yaml:"parallel-above-mib"`
	// TLS is how every connection to a MySQL/MariaDB server uses TLS (the
	// engine's, the dump and client tools', the binary log's, to this
	// server and to peers): disabled, preferred (TLS when the server
	// offers it, unchecked), required (TLS, unchecked) or verify-identity
	// (TLS, the certificate from a CA of ca-file and for the address the
	// server is reached by). Default: preferred (docs/security.md).
	TLS string `yaml:"tls"`
	// CAFile is the PEM bundle of the CAs that sign the servers'
	// certificates, for verify-identity. Default: the system's CAs.
	CAFile string `yaml:"ca-file"`
}

// Storage is where dumps are kept.
type Storage struct {
	// Backend is file (a directory: the single-machine default) or s3.
	Backend string `yaml:"backend"`
	// Dir is the file backend's directory.
	Dir string `yaml:"dir"`
	S3  S3     `yaml:"s3"`
	// Compression is the zstd level of dumps: fastest, default, better, best.
	Compression string `yaml:"compression"`
	// Retention is how long dumps are kept (migrate gc's default).
	Retention time.Duration `yaml:"retention"`
}

// S3 configures the s3 backend.
type S3 struct {
	Endpoint       string `yaml:"endpoint"`
	PublicEndpoint string `yaml:"public-endpoint"`
	Region         string `yaml:"region"`
	Bucket         string `yaml:"bucket"`
	Prefix         string `yaml:"prefix"`
	PathStyle      bool   `yaml:"path-style"`
	AccessKey      string `yaml:"access-key"`
	SecretKey      string `yaml:"secret-key"`
	PartSizeMiB    int    `yaml:"part-size-mib"`
	Concurrency    int    `yaml:"concurrency"`
	SSE            string `yaml:"sse"`
	SSEKMSKeyID    string `yaml:"sse-kms-key-id"`
	MaxAttempts    int    `yaml:"max-attempts"`
	Checksums      bool   `yaml:"checksums"`
	CAFile         string `yaml:"ca-file"`
}

// Links configures customer download links and the server behind them.
type Links struct {
	// PublicBase is the base URL customers open (https://dumps.example.net).
	PublicBase string `yaml:"public-base"`
	// Secret signs link tokens (at least 32 bytes; from the environment).
	Secret string `yaml:"secret"`
	// DefaultTTL is how long a link from migrate dump-link works.
	DefaultTTL time.Duration `yaml:"default-ttl"`
	// Listen is the address of migrate serve.
	Listen string `yaml:"listen"`
	// RateLimit is requests per minute per client address.
	RateLimit int `yaml:"rate-limit"`
}

// Agent configures migrate-agent.
type Agent struct {
	// Roles this agent runs: sync, cutover, dump, import, close, rollback
	// on database servers; dns on the DNS host.
	Roles []string `yaml:"roles"`
	// PollInterval is the mean wait between polls when idle (±50% jitter).
	PollInterval time.Duration `yaml:"poll-interval"`
	// Lease is how long a claim holds without renewal (renewed every third).
	Lease             time.Duration `yaml:"lease"`
	HeartbeatInterval time.Duration `yaml:"heartbeat-interval"`
	// ShutdownTimeout is how long SIGTERM waits for running steps.
	ShutdownTimeout time.Duration `yaml:"shutdown-timeout"`
	// StopGrace is how long, once running steps are cancelled (after
	// shutdown-timeout, or at a second signal), they get to undo their
	// work and record their end; then the agent exits anyway, saying what
	// it left for its next start (which takes those rows back at once).
	StopGrace time.Duration `yaml:"stop-grace"`
	// MaxAttempts is the attempt limit for transient failures of a step.
	MaxAttempts int `yaml:"max-attempts"`
	// HangTimeout cancels a step whose database server has not answered a
	// probe on a connection of its own for this long (a hung server would
	// hold the step forever); the attempt fails transiently. 0: off.
	HangTimeout time.Duration `yaml:"hang-timeout"`
	// MaxJobs caps concurrent steps per role. The dump step runs at the
	// destination and imports as it dumps: "dump" is how many databases
	// this host takes in at once.
	MaxJobs map[string]int `yaml:"max-jobs"`
	// StoreFirst makes the dump step (at the destination) only store the
	// dump; the import step then takes it from the store, as before
	// version 0.9. Default false: the dump is imported as it is written,
	// beside the store (docs/storage.md, "The streaming hand-off").
	StoreFirst bool `yaml:"store-first"`
	// FullRecheck makes the close step read every table of the source
	// again; by default it reads only the tables the server's change
	// marks (PostgreSQL's statistics, MariaDB's binary log) say were
	// written since the dump.
	FullRecheck bool `yaml:"full-recheck"`
	// DNSTarget is what DNS names of databases on this host point to:
	// addresses (comma-separated A/AAAA) or a host name (CNAME).
	DNSTarget string `yaml:"dns-target"`
	// MetricsAddr serves /metrics and /healthz (empty: off).
	MetricsAddr string `yaml:"metrics-addr"`
}

// State says where the state database is.
type State struct {
	// Driver is postgres or mysql (MySQL 8 and MariaDB). Default: guessed
	// from the DSN's form.
	Driver string `yaml:"driver"`
	// DSN is a PostgreSQL URL / key=value string, or a go-sql-driver/mysql
	// DSN (user:password@tcp(host:port)/database). Put the password in the
	// environment: dsn: "postgres://fleet:${FLEET_DB_PASSWORD}@db/fleet".
	DSN string `yaml:"dsn"`
	// CAFile is the PEM bundle of the CAs that sign the state database
	// server's certificate: set, the connection is TLS with the
	// certificate and the server's name checked (MySQL: the only way to
	// trust a private CA; PostgreSQL: sslrootcert, sslmode verify-full
	// unless the DSN says otherwise). Default: the DSN decides.
	CAFile string `yaml:"ca-file"`
	// MaxOpenConns caps this process's connections to the state database.
	MaxOpenConns int `yaml:"max-open-conns"`
}

// Log configures log/slog output on stderr.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is json (for journald and log shippers), text, or auto: text
	// when stderr is a terminal, json otherwise.
	Format string `yaml:"format"`
}

// New returns the defaults.
func New() Config {
	host, _ := os.Hostname()
	return Config{
		Host:  strings.ToLower(host),
		State: State{MaxOpenConns: 8},
		Log:   Log{Level: "info", Format: "auto"},
		Agent: Agent{
			PollInterval: 60 * time.Second, Lease: 60 * time.Second, HeartbeatInterval: 30 * time.Second,
			ShutdownTimeout: 5 * time.Minute, StopGrace: 30 * time.Second, MaxAttempts: 3, HangTimeout: 5 * time.Minute,
			MaxJobs: map[string]int{"sync": 16, "cutover": 4, "dump": 2, "import": 2, "rollback": 2, "close": 8, "dns": 16},
		},
		Storage: Storage{
			Backend: "file", Dir: "/var/lib/fleetmigrate/dumps", Compression: "fastest", Retention: 30 * 24 * time.Hour,
			S3: S3{Region: "us-east-1", PartSizeMiB: 8, Concurrency: 4, MaxAttempts: 5},
		},
		Links:    Links{DefaultTTL: 30 * 24 * time.Hour, Listen: ":8080", RateLimit: 60},
		MySQL:    MySQL{User: "fleetmigrate", SessionWait: 30 * time.Second, Jobs: 4, ParallelAboveMiB: 64},
		Postgres: Postgres{User: "fleetmigrate", SessionWait: 30 * time.Second, ParallelAboveMiB: 512, Jobs: 2},
		DNS:      DNS{KeyAlgorithm: "hmac-sha256", Timeout: 5 * time.Second, ConfirmTimeout: 60 * time.Second, MaxBatch: 50, Rate: 200},
		Online: Online{DefaultMode: "dump", MaxLagMiB: 1, CutoverTimeout: 5 * time.Second, CutoverAttempts: 8,
			CutoverBackoff: 10 * time.Second, ConvergeWindow: 40 * time.Second, ConvergeTimeout: 30 * time.Minute, LagInterval: 5 * time.Second, StallTimeout: 5 * time.Minute},
	}
}

// Load reads the file at path over the defaults, then applies the
// environment. An empty path means FLEETMIGRATE_CONFIG, else DefaultPath if
// it exists, else defaults and environment only.
func Load(path string) (Config, error) {
	cfg := New()
	explicit := path != ""
	if path == "" {
		path = os.Getenv("FLEETMIGRATE_CONFIG")
		explicit = path != ""
	}
	if path == "" {
		if _, err := os.Stat(DefaultPath); err == nil {
			path = DefaultPath
		}
	}
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			if !explicit && errors.Is(err, os.ErrNotExist) {
				return cfg, cfg.applyEnv()
			}
			return cfg, fmt.Errorf("read config: %w", err)
		}
		defer f.Close()
		if err := decode(f, path, &cfg); err != nil {
			return cfg, err
		}
	}
	if err := cfg.applyEnv(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// Parse decodes YAML from r over the defaults (for tests and tools); name
// is used in messages.
func Parse(r io.Reader, name string) (Config, error) {
	cfg := New()
	err := decode(r, name, &cfg)
	return cfg, err
}

func decode(r io.Reader, name string, cfg *Config) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("read config %s: %w", name, err)
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil
	}
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		return fmt.Errorf("config %s: %s", name, cleanYAMLError(err))
	}
	if err := expandEnv(&root); err != nil {
		return fmt.Errorf("config %s: %w", name, err)
	}
	if err := checkKeys(&root, reflect.TypeOf(*cfg), ""); err != nil {
		return fmt.Errorf("config %s: %w", name, err)
	}
	if err := root.Decode(cfg); err != nil {
		return fmt.Errorf("config %s: %s", name, nameKeys(cleanYAMLError(err), keyLines(&root, "", map[int]string{})))
	}
	return nil
}

// keyLines maps the line of every scalar value to its dotted key
// (agent.poll-interval), for error messages.
func keyLines(n *yaml.Node, section string, lines map[int]string) map[int]string {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			keyLines(c, section, lines)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i].Value, n.Content[i+1]
			if section != "" {
				key = section + "." + key
			}
			if val.Kind == yaml.ScalarNode {
				lines[val.Line] = key
			}
			keyLines(val, key, lines)
		}
	}
	return lines
}

var errLine = regexp.MustCompile(`line (\d+): `)

// nameKeys puts the key in front of yaml's "line N: ..." messages:
// "agent.poll-interval (line 10): cannot unmarshal !!str `often` into
// time.Duration".
func nameKeys(msg string, lines map[int]string) string {
	return errLine.ReplaceAllStringFunc(msg, func(m string) string {
		n, _ := strconv.Atoi(errLine.FindStringSubmatch(m)[1])
		if key, ok := lines[n]; ok {
			return fmt.Sprintf("%s (line %d): ", key, n)
		}
		return m
	})
}

// checkKeys refuses keys that no field of t carries, naming the key, its
// section and its line in the file. (yaml.v3 applies KnownFields only when
// decoding a stream, which would lose the file's line numbers here.)
func checkKeys(n *yaml.Node, t reflect.Type, section string) error {
	for n.Kind == yaml.DocumentNode || n.Kind == yaml.AliasNode {
		if n.Kind == yaml.AliasNode {
			n = n.Alias
			continue
		}
		if len(n.Content) == 0 {
			return nil
		}
		n = n.Content[0]
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			f, ok := fieldByTag(t, key.Value)
			if !ok {
				if section == "" {
					return fmt.Errorf("line %d: unknown key %q", key.Line, key.Value)
				}
				return fmt.Errorf("line %d: unknown key %q in %s", key.Line, key.Value, section)
			}
			sub := key.Value
			if section != "" {
				sub = section + "." + key.Value
			}
			if err := checkKeys(val, f.Type, sub); err != nil {
				return err
			}
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for _, c := range n.Content {
			if err := checkKeys(c, t.Elem(), section); err != nil {
				return err
			}
		}
	}
	return nil
}

func fieldByTag(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); name == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

var envRef = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// cleanYAMLError rewrites yaml.v3's messages in the configuration's terms.
func cleanYAMLError(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:\n  ")
	return strings.ReplaceAll(msg, "\n  ", "; ")
}

// expandEnv replaces ${NAME} in every scalar value with the environment
// variable's value ($$ is a literal $). An unset variable is an error: a
// secret that silently became empty would fail much later and obscurely.
func expandEnv(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "$") {
		var missing []string
		n.Value = envRef.ReplaceAllStringFunc(n.Value, func(m string) string {
			if m == "$$" {
				return "$"
			}
			name := m[2 : len(m)-1]
			v, ok := os.LookupEnv(name)
			if !ok {
				missing = append(missing, name)
			}
			return v
		})
		if len(missing) > 0 {
			return fmt.Errorf("line %d: environment variable %s is not set", n.Line, strings.Join(missing, ", "))
		}
		// A value that came from the environment is a string, whatever it
		// looks like.
		if n.Tag == "" || n.Tag == "!!int" || n.Tag == "!!bool" || n.Tag == "!!float" {
			n.Tag = "!!str"
		}
	}
	for _, c := range n.Content {
		if err := expandEnv(c); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) applyEnv() error {
	if v := os.Getenv("FLEETMIGRATE_STATE_DSN"); v != "" {
		c.State.DSN = v
	}
	if v := os.Getenv("FLEETMIGRATE_STATE_DRIVER"); v != "" {
		c.State.Driver = v
	}
	if v := os.Getenv("LOG_LEVEL"); v != "" {
		c.Log.Level = v
	}
	return nil
}

// Validate checks values and fills what can be derived (the driver from the
// DSN). It reports every problem at once.
func (c *Config) Validate() error {
	var errs []string
	c.Host = strings.ToLower(strings.TrimSpace(c.Host))
	if c.Host == "" {
		errs = append(errs, "host is empty and the hostname is unknown: set host")
	}
	if c.State.Driver == "" {
		c.State.Driver = GuessDriver(c.State.DSN)
	}
	switch c.State.Driver {
	case "postgres", "mysql", "":
	case "postgresql":
		c.State.Driver = "postgres"
	case "mariadb":
		c.State.Driver = "mysql"
	default:
		errs = append(errs, fmt.Sprintf("state.driver %q: want postgres or mysql", c.State.Driver))
	}
	if c.State.MaxOpenConns < 1 {
		errs = append(errs, fmt.Sprintf("state.max-open-conns %d: want at least 1", c.State.MaxOpenConns))
	}
	if h := c.Agent.HangTimeout; h < 0 || h > 0 && h < 5*time.Second {
		errs = append(errs, fmt.Sprintf("agent.hang-timeout %s: want 0 (off) or at least 5s (a busy server may take seconds to answer)", h))
	}
	if o := c.Online; o.CutoverTimeout <= 0 || o.CutoverAttempts < 1 || o.LagInterval <= 0 || o.MaxLagMiB < 0 || o.AutoMinMiB < 0 {
		errs = append(errs, fmt.Sprintf("online: cutover-timeout %s, cutover-attempts %d, lag-interval %s, max-lag-mib %d, auto-min-mib %d: want durations and attempts above 0, sizes not below 0",
			o.CutoverTimeout, o.CutoverAttempts, o.LagInterval, o.MaxLagMiB, o.AutoMinMiB))
	}
	if o := c.Online; o.CutoverBackoff <= 0 || o.ConvergeWindow < 5*time.Second || o.ConvergeTimeout < 0 {
		errs = append(errs, fmt.Sprintf("online: cutover-backoff %s, converge-window %s, converge-timeout %s: want a backoff above 0, a window of at least 5s (the lag is read every second or so), a timeout not below 0 (0: never)",
			o.CutoverBackoff, o.ConvergeWindow, o.ConvergeTimeout))
	}
	if st := c.Online.StallTimeout; st < 0 || st > 0 && st < 10*time.Second {
		errs = append(errs, fmt.Sprintf("online.stall-timeout %s: want 0 (off) or at least 10s (a stream's progress is read every second or so)", st))
	}
	if _, err := ParseLevel(c.Log.Level); err != nil {
		errs = append(errs, err.Error())
	}
	if c.Log.Format != "json" && c.Log.Format != "text" && c.Log.Format != "auto" {
		errs = append(errs, fmt.Sprintf("log.format %q: want json, text or auto", c.Log.Format))
	}
	switch c.Storage.Backend {
	case "file":
		if c.Storage.Dir == "" {
			errs = append(errs, "storage.dir is empty")
		}
	case "s3":
		if c.Storage.S3.Bucket == "" {
			errs = append(errs, "storage.s3.bucket is empty")
		}
		if c.Storage.S3.PartSizeMiB < 5 {
			errs = append(errs, fmt.Sprintf("storage.s3.part-size-mib %d: S3 needs at least 5", c.Storage.S3.PartSizeMiB))
		}
	default:
		errs = append(errs, fmt.Sprintf("storage.backend %q: want file or s3", c.Storage.Backend))
	}
	switch c.Storage.Compression {
	case "fastest", "default", "better", "best":
	default:
		errs = append(errs, fmt.Sprintf("storage.compression %q: want fastest, default, better or best", c.Storage.Compression))
	}
	if c.Storage.Retention <= 0 {
		errs = append(errs, fmt.Sprintf("storage.retention %s: want a positive duration, e.g. 720h", c.Storage.Retention))
	}
	if c.MySQL.PeerUser != "" && c.MySQL.PeerUser == c.MySQL.User {
		errs = append(errs, "mysql.peer-user is mysql.user: give peers a read-only account of their own (docs/security.md), or leave peer-user out")
	}
	if c.Postgres.PeerUser != "" && c.Postgres.PeerUser == c.Postgres.User {
		errs = append(errs, "postgres.peer-user is postgres.user: give peers a read-only role of their own (docs/security.md), or leave peer-user out")
	}
	if c.MySQL.Address != "" && c.MySQL.User == "" {
		errs = append(errs, "mysql.user is empty")
	}
	if c.MySQL.SessionWait <= 0 {
		errs = append(errs, fmt.Sprintf("mysql.session-wait %s: want a positive duration, e.g. 30s", c.MySQL.SessionWait))
	}
	if c.MySQL.AdvertiseAddress == "" {
		c.MySQL.AdvertiseAddress = c.MySQL.Address
	}
	switch c.MySQL.TLS {
	case "":
		c.MySQL.TLS = "preferred"
	case "disabled", "preferred", "required", "verify-identity":
	default:
		errs = append(errs, fmt.Sprintf("mysql.tls %q: want disabled, preferred, required or verify-identity", c.MySQL.TLS))
	}
	if c.Postgres.Address != "" && c.Postgres.User == "" {
		errs = append(errs, "postgres.user is empty")
	}
	if c.Postgres.SessionWait <= 0 {
		errs = append(errs, fmt.Sprintf("postgres.session-wait %s: want a positive duration, e.g. 30s", c.Postgres.SessionWait))
	}
	if c.MySQL.Jobs < 1 {
		errs = append(errs, fmt.Sprintf("mysql.jobs %d: want 1 or more", c.MySQL.Jobs))
	}
	if c.Postgres.Jobs < 1 {
		errs = append(errs, fmt.Sprintf("postgres.jobs %d: want 1 or more", c.Postgres.Jobs))
	}
	if c.Postgres.AdvertiseAddress == "" {
		c.Postgres.AdvertiseAddress = c.Postgres.Address
	}
	if c.DNS.Timeout <= 0 || c.DNS.ConfirmTimeout <= 0 {
		errs = append(errs, "dns.timeout and dns.confirm-timeout: want positive durations, e.g. 5s")
	}
	if _, err := dns.ParseAllowed(c.DNS.AllowedTargets); err != nil {
		errs = append(errs, "dns."+err.Error())
	}
	if c.DNS.TTL < 0 || c.DNS.MaxBatch < 1 || c.DNS.MaxBatch > 200 || c.DNS.Rate <= 0 {
		errs = append(errs, fmt.Sprintf("dns: ttl %d, max-batch %d, rate %g: want ttl >= 0, max-batch 1-200, rate > 0", c.DNS.TTL, c.DNS.MaxBatch, c.DNS.Rate))
	}
	if c.DNS.Configured() && c.DNS.KeyFile == "" && (c.DNS.KeyName == "" || c.DNS.KeySecret == "") {
		errs = append(errs, "dns: no TSIG key: set dns.key-file (a BIND key file), or dns.key-name and dns.key-secret (${...} from the environment)")
	}
	if c.Links.DefaultTTL <= 0 {
		errs = append(errs, fmt.Sprintf("links.default-ttl %s: want a positive duration", c.Links.DefaultTTL))
	}
	if len(errs) > 0 {
		return errors.New("invalid configuration: " + strings.Join(errs, "; "))
	}
	return nil
}

// GuessDriver tells a PostgreSQL DSN from a MySQL one by its form.
func GuessDriver(dsn string) string {
	switch {
	case dsn == "":
		return ""
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"), strings.Contains(dsn, "host="), strings.Contains(dsn, "dbname="):
		return "postgres"
	case strings.Contains(dsn, "@tcp("), strings.Contains(dsn, "@unix("), strings.HasPrefix(dsn, "tcp("), strings.Contains(dsn, "@/"):
		return "mysql"
	}
	return ""
}

// ParseLevel parses a log level name.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("log.level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// Logger builds the process's logger on w (stderr) from the configuration.
func (c *Config) Logger(w io.Writer) *slog.Logger {
	level, _ := ParseLevel(c.Log.Level)
	opts := &slog.HandlerOptions{Level: level}
	if c.Log.Format == "text" || (c.Log.Format == "auto" && isTerminal(w)) {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
