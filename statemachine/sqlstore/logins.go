package sqlstore

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // MariaDB's mysql_native_password hash is SHA1(SHA1(password)): the server's format, not our choice
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/fleetmigrate/fleetmigrate/internal/ident"
	"github.com/fleetmigrate/fleetmigrate/migrations"
)

// Per-agent logins (issue 33). Each agent logs in to the state database as
// its host's own login, recorded in agent_login; column privileges keep it
// to the columns its steps move and the triggers of migration 00011 to its
// host's rows. Logins not in agent_login are operators.

// AgentLogin is an agent's own login to the state database.
type AgentLogin struct {
	Login string `json:"login"`
	// Host is the host ID whose rows the login may move (as source or
	// destination) and whose registry entry it may write.
	Host string `json:"host"`
	// DNS: the login may also move rows in the DNS step's statuses.
	DNS bool `json:"dns"`
	// ClientHost is the MySQL/MariaDB account's host part ("%": from
	// anywhere); empty on PostgreSQL.
	ClientHost string    `json:"client_host,omitempty"`
	GrantedBy  string    `json:"granted_by"`
	GrantedAt  time.Time `json:"granted_at"`
}

// Account is how the login appears in the database's own statements.
func (l AgentLogin) Account() string {
	if l.ClientHost == "" {
		return l.Login
	}
	return l.Login + "@" + l.ClientHost
}

// AgentGrant asks for one agent login.
type AgentGrant struct {
	Host string
	// Login is the login's name; empty: DefaultLogin(Host).
	Login string
	DNS   bool
	// Password is the login's password: 16 to 128 printable ASCII
	// characters without spaces, quotes or backslashes (it goes into a DSN).
	Password string
	// ClientHost is the MySQL/MariaDB account's host part (default "%").
	ClientHost string
	// By names the operator in agent_login.
	By string
}

// Limits and forms of logins and passwords.
const (
	// MaxLoginLen is MySQL 8's limit on a user name (MariaDB allows 80,
	// PostgreSQL 63): a login that fits it fits everywhere.
	MaxLoginLen    = 32
	minPasswordLen = 16
	maxPasswordLen = 128
)

var (
	loginForm    = regexp.MustCompile(`^[a-z_][a-z0-9_.-]*$`)
	passwordForm = regexp.MustCompile(`^[!#-&(-\[\]-~]+$`) // printable ASCII but space, " ' \
)

// agentReads are the tables an agent login may read.
var agentReads = []string{"migration", "migration_event", "migration_record", "migration_ask", "migration_transition",
	"agent", "agent_login", "agent_transition", "control", "source_pause", "dns_ttl", migrations.VersionTable}

// agentUpdates are the migration columns an agent's steps move: never
// source, destination, dns_name, engine, database_name (Guarded); mode only
// from auto (the trigger).
var agentUpdates = []string{"status", "mode", "attempt", "owner", "lease_until", "fence", "dump_url", "dump_sha256", "dump_bytes",
	"consistency_point", "size_bytes", "blocked_at", "unblocked_at", "switched_at", "last_error", "updated_at"}

// askInserts are the columns of a peer ask its asker writes (the database
// sets the rest from the row); askAnswers those its answer writes.
var (
	askInserts = []string{"migration_id", "side", "action", "ref", "fence", "error", "answer"}
	askAnswers = []string{"answered_at", "error", "answer"}
)

// DefaultLogin is the login grant-agent gives host: "fm_" and the host ID
// when that is a plain lower-case name that fits; otherwise a readable
// prefix of it and 8 hex digits of its SHA-256, so that two host IDs never
// share a login.
func DefaultLogin(host string) string {
	clean := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_', r == '.', r == '-':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '_'
	}, host)
	if clean == host && len("fm_"+clean) <= MaxLoginLen {
		return "fm_" + clean
	}
	sum := sha256.Sum256([]byte(host))
	if len(clean) > MaxLoginLen-len("fm_")-9 {
		clean = clean[:MaxLoginLen-len("fm_")-9]
	}
	return "fm_" + clean + "_" + hex.EncodeToString(sum[:4])
}

// CheckPassword says what is wrong with an agent login's password.
func CheckPassword(pw string) error {
	switch {
	case len(pw) < minPasswordLen:
		return fmt.Errorf("the password has %d characters; an agent login's needs at least %d", len(pw), minPasswordLen)
	case len(pw) > maxPasswordLen:
		return fmt.Errorf("the password has %d characters, more than %d", len(pw), maxPasswordLen)
	case !passwordForm.MatchString(pw):
		return errors.New("the password may hold printable ASCII characters but spaces, quotes and backslashes (it goes into a DSN)")
	}
	return nil
}

// NewPassword returns a random password of 32 letters and digits.
func NewPassword() string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 32)
	for i := range b {
		b[i] = alphabet[randIntn(len(alphabet))]
	}
	return string(b)
}

func randIntn(n int) int {
	var b [1]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic(err) // crypto/rand never fails on Linux
		}
		if int(b[0]) < 256-256%n {
			return int(b[0]) % n
		}
	}
}

// Admin manages the agent logins of a state database, as an operator.
type Admin struct {
	db *sql.DB
	d  dialect
	// where the grants go, read once (place); an Admin serves one goroutine
	at *placeOf
}

// placeOf is where the state database's tables are and what serves them.
type placeOf struct {
	database, schema string // schema: PostgreSQL only
	mariadb          bool
}

// place reads, once per Admin, the database (and PostgreSQL schema) the
// grants name, and whether a MySQL server is MariaDB.
func (a *Admin) place(ctx context.Context) (placeOf, error) {
	if a.at != nil {
		return *a.at, nil
	}
	var p placeOf
	if a.d.pg() {
		if err := a.db.QueryRowContext(ctx, "SELECT current_database(), current_schema()").Scan(&p.database, &p.schema); err != nil {
			return p, fmt.Errorf("read the state database's name and schema: %w", err)
		}
	} else {
		var version string
		if err := a.db.QueryRowContext(ctx, "SELECT COALESCE(DATABASE(), ''), VERSION()").Scan(&p.database, &version); err != nil {
			return p, fmt.Errorf("read the state database's name and version: %w", err)
		}
		if p.database == "" {
			return p, errors.New("the state database DSN names no database")
		}
		p.mariadb = strings.Contains(strings.ToLower(version), "mariadb")
	}
	a.at = &p
	return p, nil
}

// NewAdmin manages the logins of the state database db (from Connect).
func NewAdmin(db *sql.DB, d migrations.Dialect) *Admin { return &Admin{db: db, d: dialect{name: d}} }

// AgentLogins lists the agent logins, by host.
func (a *Admin) AgentLogins(ctx context.Context) ([]AgentLogin, error) {
	return queryLogins(ctx, a.db, "ORDER BY host, login")
}

const loginColumns = "login, host, dns, client_host, granted_by, granted_at"

func queryLogins(ctx context.Context, q querier, tail string, args ...any) ([]AgentLogin, error) {
	rows, err := q.QueryContext(ctx, "SELECT "+loginColumns+" FROM agent_login "+tail, args...)
	if err != nil {
		return nil, fmt.Errorf("read the agent logins: %w", err)
	}
	defer rows.Close()
	var out []AgentLogin
	for rows.Next() {
		var l AgentLogin
		if err := rows.Scan(&l.Login, &l.Host, &l.DNS, &l.ClientHost, &l.GrantedBy, &l.GrantedAt); err != nil {
			return nil, fmt.Errorf("read the agent logins: %w", err)
		}
		l.GrantedAt = l.GrantedAt.UTC()
		out = append(out, l)
	}
	return out, rows.Err()
}

// GrantAgent creates g's login, or updates it (password, DNS rows, the
// grants) when it is already host's agent login: re-running it is how a
// password is rotated. It refuses a login that exists in the database but
// is not an agent login of this state database (an operator's, another
// tool's), and a login that is another host's. The agent_login row is
// written before any privilege is granted, so the login is never an
// unrestricted one, not even for a moment. It reports whether the login
// was created.
func (a *Admin) GrantAgent(ctx context.Context, g AgentGrant) (AgentLogin, bool, error) {
	if g.Login == "" {
		g.Login = DefaultLogin(g.Host)
	}
	if g.ClientHost == "" && !a.d.pg() {
		g.ClientHost = "%"
	}
	if a.d.pg() {
		g.ClientHost = ""
	}
	l := AgentLogin{Login: g.Login, Host: g.Host, DNS: g.DNS, ClientHost: g.ClientHost, GrantedBy: g.By}
	switch {
	case g.Host == "":
		return l, false, errors.New("grant an agent login: the host ID is empty")
	case len(g.Login) > MaxLoginLen || !loginForm.MatchString(g.Login):
		return l, false, fmt.Errorf("login %q: a login is at most %d lower-case letters, digits, '_', '.' and '-', starting with a letter or '_'", g.Login, MaxLoginLen)
	case strings.ContainsAny(g.ClientHost, "'\\\x00"):
		return l, false, fmt.Errorf("client host %q: no quotes or backslashes", g.ClientHost)
	}
	if err := CheckPassword(g.Password); err != nil {
		return l, false, fmt.Errorf("login %s: %w", g.Login, err)
	}
	known, err := queryLogins(ctx, a.db, a.d.q("WHERE login = ?"), g.Login)
	if err != nil {
		return l, false, err
	}
	if len(known) > 0 && known[0].Host != g.Host {
		return l, false, fmt.Errorf("login %s is already the agent login of host %s: revoke it first (migrate db revoke-agent %s) or choose another --login",
			g.Login, known[0].Host, known[0].Host)
	}
	if len(known) > 0 && known[0].ClientHost != g.ClientHost {
		return l, false, fmt.Errorf("login %s is the account %s: revoke it first to move it to %s@%s", g.Login, known[0].Account(), g.Login, g.ClientHost)
	}
	exists, err := a.loginExists(ctx, l)
	if err != nil {
		return l, false, err
	}
	if exists && len(known) == 0 {
		return l, false, fmt.Errorf("a login %s exists in the database and is not an agent login of this state database: "+
			"choose another --login (making an operator's login an agent's would take its rights)", l.Account())
	}
	// Known but gone (dropped by hand, or an earlier grant that failed
	// half-way): made again.
	create := !exists
	// The row first: from now on the triggers hold the login to host.
	if err := a.putLogin(ctx, l); err != nil {
		return l, false, err
	}
	stmts, err := a.accountStatements(ctx, l, g.Password, create)
	if err != nil {
		return l, false, err
	}
	grants, err := a.grantStatements(ctx, l)
	if err != nil {
		return l, false, err
	}
	for _, st := range append(stmts, grants...) {
		if _, err := a.db.ExecContext(ctx, st.sql); err != nil {
			return l, false, fmt.Errorf("login %s: %s: %w", l.Account(), st.what, err)
		}
	}
	got, err := queryLogins(ctx, a.db, a.d.q("WHERE login = ?"), g.Login)
	if err != nil || len(got) == 0 {
		return l, create, err
	}
	return got[0], create, nil
}

// PlannedHosts lists every source and destination host of the state
// table, sorted.
func (a *Admin) PlannedHosts(ctx context.Context) ([]string, error) {
	rows, err := a.db.QueryContext(ctx, "SELECT source FROM migration UNION SELECT destination FROM migration ORDER BY 1")
	if err != nil {
		return nil, fmt.Errorf("list the plan's hosts: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// RefreshGrants grants every agent login what this binary's schema needs
// (after an upgrade added a table or a column) and returns how many.
func (a *Admin) RefreshGrants(ctx context.Context) (int, error) {
	logins, err := a.AgentLogins(ctx)
	if err != nil {
		return 0, err
	}
	for _, l := range logins {
		grants, err := a.grantStatements(ctx, l)
		if err != nil {
			return 0, err
		}
		for _, st := range grants {
			if _, err := a.db.ExecContext(ctx, st.sql); err != nil {
				return 0, fmt.Errorf("login %s: %s: %w", l.Account(), st.what, err)
			}
		}
	}
	return len(logins), nil
}

// Revoked says what RevokeAgent did to one login.
type Revoked struct {
	AgentLogin
	// Sessions is how many of its open sessions were ended.
	Sessions int
	// Kept is why the login itself could not be dropped (it then stays in
	// agent_login, restricted and without privileges here).
	Kept string
}

// RevokeAgent takes the agent logins of hostOrLogin (a host ID or a login)
// out: their privileges, their open sessions, the logins themselves, then
// their agent_login rows. ErrNoSuchLogin when there is none.
func (a *Admin) RevokeAgent(ctx context.Context, hostOrLogin string) ([]Revoked, error) {
	logins, err := queryLogins(ctx, a.db, a.d.q("WHERE login = ? OR host = ? ORDER BY login"), hostOrLogin, hostOrLogin)
	if err != nil {
		return nil, err
	}
	if len(logins) == 0 {
		return nil, fmt.Errorf("%w: %q is neither a host with an agent login nor an agent login", ErrNoSuchLogin, hostOrLogin)
	}
	var out []Revoked
	for _, l := range logins {
		r := Revoked{AgentLogin: l}
		if a.d.pg() {
			if err := a.revokePG(ctx, l); err != nil {
				return out, err
			}
		}
		r.Sessions = a.endSessions(ctx, l)
		var drop string
		if a.d.pg() {
			drop = "DROP ROLE IF EXISTS " + ident.QuotePostgres(l.Login)
		} else {
			drop = "DROP USER IF EXISTS " + mysqlAccount(l)
		}
		if _, err := a.db.ExecContext(ctx, drop); err != nil {
			r.Kept = err.Error()
			out = append(out, r)
			continue
		}
		if _, err := a.db.ExecContext(ctx, a.d.q("DELETE FROM agent_login WHERE login = ?"), l.Login); err != nil {
			return out, fmt.Errorf("login %s: dropped, but its agent_login row stays: %w", l.Login, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// revokePG takes a PostgreSQL agent login's privileges here away (DROP ROLE
// refuses a role that still has some).
func (a *Admin) revokePG(ctx context.Context, l AgentLogin) error {
	at, err := a.place(ctx)
	if err != nil {
		return err
	}
	role := ident.QuotePostgres(l.Login)
	stmts := []string{"REVOKE CONNECT ON DATABASE " + ident.QuotePostgres(at.database) + " FROM " + role,
		"REVOKE USAGE ON SCHEMA " + ident.QuotePostgres(at.schema) + " FROM " + role}
	for _, t := range agentReads {
		stmts = append(stmts, "REVOKE ALL ON TABLE "+ident.QuotePostgres(t)+" FROM "+role)
	}
	stmts = append(stmts, "REVOKE ALL ON SEQUENCE migration_ask_id_seq FROM "+role)
	for _, st := range stmts {
		if _, err := a.db.ExecContext(ctx, st); err != nil && !undefinedObject(err) {
			return fmt.Errorf("login %s: %s: %w", l.Login, st, err)
		}
	}
	return nil
}

// ErrNoSuchLogin: revoke-agent found no login to revoke.
var ErrNoSuchLogin = errors.New("no such agent login")

// endSessions ends the login's open sessions, as far as the operator may,
// and returns how many it ended.
func (a *Admin) endSessions(ctx context.Context, l AgentLogin) int {
	if a.d.pg() {
		var n int
		_ = a.db.QueryRowContext(ctx, "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1) t", l.Login).Scan(&n)
		return n
	}
	ids, err := int64s(a.db.QueryContext(ctx, "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ?", l.Login))
	if err != nil {
		return 0
	}
	n := 0
	for _, id := range ids {
		if _, err := a.db.ExecContext(ctx, fmt.Sprintf("KILL CONNECTION %d", id)); err == nil {
			n++
		}
	}
	return n
}

func undefinedObject(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "42704" || pgErr.Code == "42P01")
}

// loginExists reports whether the database has a login (role, account) of
// that name.
func (a *Admin) loginExists(ctx context.Context, l AgentLogin) (bool, error) {
	var n int
	var err error
	if a.d.pg() {
		err = a.db.QueryRowContext(ctx, "SELECT count(*) FROM pg_roles WHERE rolname = $1", l.Login).Scan(&n)
	} else {
		err = a.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM mysql.user WHERE User = ? AND Host = ?", l.Login, l.ClientHost).Scan(&n)
	}
	if err != nil {
		return false, fmt.Errorf("login %s: is there one already? %w", l.Account(), err)
	}
	return n > 0, nil
}

func (a *Admin) putLogin(ctx context.Context, l AgentLogin) error {
	q := "INSERT INTO agent_login (login, host, dns, client_host, granted_by, granted_at) VALUES (?, ?, ?, ?, ?, CURRENT_TIMESTAMP)"
	if a.d.pg() {
		q += " ON CONFLICT (login) DO UPDATE SET dns = EXCLUDED.dns, granted_by = EXCLUDED.granted_by, granted_at = EXCLUDED.granted_at"
	} else {
		q += " ON DUPLICATE KEY UPDATE dns = VALUES(dns), granted_by = VALUES(granted_by), granted_at = VALUES(granted_at)"
	}
	if _, err := a.db.ExecContext(ctx, a.d.q(q), l.Login, l.Host, l.DNS, l.ClientHost, l.GrantedBy); err != nil {
		return fmt.Errorf("login %s: record it in agent_login: %w", l.Login, err)
	}
	return nil
}

type statement struct{ what, sql string }

// accountStatements create the login or set its password. The password
// never reaches the server in the clear: PostgreSQL gets a SCRAM-SHA-256
// verifier, MariaDB the mysql_native_password hash; MySQL 8, which takes
// neither for its default plugin, gets the password and keeps it out of its
// logs itself.
func (a *Admin) accountStatements(ctx context.Context, l AgentLogin, password string, create bool) ([]statement, error) {
	if a.d.pg() {
		v, err := scramVerifier(password)
		if err != nil {
			return nil, err
		}
		verb := "ALTER ROLE "
		if create {
			verb = "CREATE ROLE "
		}
		return []statement{{"create it or set its password",
			verb + ident.QuotePostgres(l.Login) + " LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT PASSWORD " + ident.QuotePostgresLiteral(v)}}, nil
	}
	at, err := a.place(ctx)
	if err != nil {
		return nil, err
	}
	auth := "IDENTIFIED BY '" + password + "'" // CheckPassword: no quote, no backslash
	if at.mariadb {
		auth = "IDENTIFIED BY PASSWORD '" + nativeHash(password) + "'"
	}
	verb := "ALTER USER "
	if create {
		verb = "CREATE USER "
	}
	return []statement{{"create it or set its password", verb + mysqlAccount(l) + " " + auth}}, nil
}

// grantStatements are the privileges of an agent login, all idempotent.
func (a *Admin) grantStatements(ctx context.Context, l AgentLogin) ([]statement, error) {
	at, err := a.place(ctx)
	if err != nil {
		return nil, err
	}
	var out []statement
	if a.d.pg() {
		role := ident.QuotePostgres(l.Login)
		out = append(out,
			statement{"grant CONNECT", "GRANT CONNECT ON DATABASE " + ident.QuotePostgres(at.database) + " TO " + role},
			statement{"grant USAGE on the schema", "GRANT USAGE ON SCHEMA " + ident.QuotePostgres(at.schema) + " TO " + role})
		for _, t := range agentReads {
			out = append(out, statement{"grant SELECT on " + t, "GRANT SELECT ON TABLE " + ident.QuotePostgres(t) + " TO " + role})
		}
		out = append(out,
			statement{"grant UPDATE on migration's step columns", "GRANT UPDATE (" + strings.Join(agentUpdates, ", ") + ") ON TABLE migration TO " + role},
			statement{"grant INSERT on migration_event", "GRANT INSERT ON TABLE migration_event TO " + role},
			statement{"grant INSERT, UPDATE on migration_record", "GRANT INSERT, UPDATE ON TABLE migration_record TO " + role},
			statement{"grant INSERT on migration_ask", "GRANT INSERT (" + strings.Join(askInserts, ", ") + ") ON TABLE migration_ask TO " + role},
			statement{"grant UPDATE on migration_ask's answer", "GRANT UPDATE (" + strings.Join(askAnswers, ", ") + ") ON TABLE migration_ask TO " + role},
			statement{"grant USAGE on migration_ask's ids", "GRANT USAGE ON SEQUENCE migration_ask_id_seq TO " + role},
			statement{"grant INSERT, UPDATE, DELETE on agent", "GRANT INSERT, UPDATE, DELETE ON TABLE agent TO " + role})
		return out, nil
	}
	db, acct := ident.QuoteMySQL(at.database), mysqlAccount(l)
	for _, t := range agentReads {
		out = append(out, statement{"grant SELECT on " + t, "GRANT SELECT ON " + db + "." + ident.QuoteMySQL(t) + " TO " + acct})
	}
	out = append(out,
		statement{"grant UPDATE on migration's step columns", "GRANT UPDATE (" + strings.Join(agentUpdates, ", ") + ") ON " + db + ".migration TO " + acct},
		statement{"grant INSERT on migration_event", "GRANT INSERT ON " + db + ".migration_event TO " + acct},
		statement{"grant INSERT, UPDATE on migration_record", "GRANT INSERT, UPDATE ON " + db + ".migration_record TO " + acct},
		statement{"grant INSERT on migration_ask", "GRANT INSERT (" + strings.Join(askInserts, ", ") + ") ON " + db + ".migration_ask TO " + acct},
		statement{"grant UPDATE on migration_ask's answer", "GRANT UPDATE (" + strings.Join(askAnswers, ", ") + ") ON " + db + ".migration_ask TO " + acct},
		statement{"grant INSERT, UPDATE, DELETE on agent", "GRANT INSERT, UPDATE, DELETE ON " + db + ".agent TO " + acct})
	return out, nil
}

// mysqlAccount is 'login'@'host' (both checked to hold no quote).
func mysqlAccount(l AgentLogin) string {
	h := l.ClientHost
	if h == "" {
		h = "%"
	}
	return "'" + l.Login + "'@'" + h + "'"
}

// scramVerifier is PostgreSQL's SCRAM-SHA-256 verifier of password (RFC
// 5802/7677, as libpq's PQencryptPasswordConn makes it): the server stores
// it as given and never sees the password. The password is printable ASCII
// (CheckPassword), which SASLprep leaves as it is.
func scramVerifier(password string) (string, error) {
	const iterations = 4096
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		return "", err
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	clientKey := mac(salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	server := mac(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iterations, b64(salt), b64(stored[:]), b64(server)), nil
}

// nativeHash is MariaDB's mysql_native_password hash of password.
func nativeHash(password string) string {
	first := sha1.Sum([]byte(password)) //nolint:gosec // the server's format
	second := sha1.Sum(first[:])        //nolint:gosec // the server's format
	return "*" + strings.ToUpper(hex.EncodeToString(second[:]))
}

// Login returns the store's own login's agent_login entry; ok is false for
// an operator's login (not in agent_login).
func (s *Store) Login(ctx context.Context) (AgentLogin, bool, error) {
	me := "current_user"
	if !s.d.pg() {
		me = "SUBSTRING_INDEX(USER(), '@', 1)"
	}
	ls, err := queryLogins(ctx, s.db, "WHERE login = "+me)
	if err != nil || len(ls) == 0 {
		return AgentLogin{}, false, err
	}
	return ls[0], true, nil
}

// refusedByLogin reports a refusal of the agent-login triggers or of the
// login's privileges.
func (d dialect) refusedByLogin(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "42501"
	}
	var myErr *mysql.MySQLError
	if errors.As(err, &myErr) {
		// 1142/1143: command or column denied; 1644: our triggers' SIGNAL
		return myErr.Number == 1142 || myErr.Number == 1143 || (myErr.Number == 1644 && strings.HasPrefix(myErr.Message, "fleetmigrate: "))
	}
	return false
}

// DSNWithLogin returns dsn (a state.dsn of driver) logging in as user with
// password instead: an agent login's DSN made from the operator's.
func DSNWithLogin(driver, dsn, user, password string) (string, error) {
	switch driver {
	case "mysql", "mariadb":
		mc, err := mysql.ParseDSN(dsn)
		if err != nil {
			return "", fmt.Errorf("not a valid MySQL DSN: %s", redactErr(err, dsn))
		}
		mc.User, mc.Passwd = user, password
		return mc.FormatDSN(), nil
	case "postgres", "postgresql":
		if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
			u, err := url.Parse(dsn)
			if err != nil {
				return "", errors.New("not a valid PostgreSQL URL")
			}
			u.User = url.UserPassword(user, password)
			return u.String(), nil
		}
		quote := func(s string) string { return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'" }
		return dsn + " user=" + quote(user) + " password=" + quote(password), nil
	}
	return "", fmt.Errorf("unknown state database driver %q", driver)
}
