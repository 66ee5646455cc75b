package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

const (
	controlStop      = "stop"
	controlScheduler = "scheduler"
)

// StopSwitch reads the stop switch.
func (s *Store) StopSwitch(ctx context.Context) (statemachine.StopSwitch, error) {
	return s.stopSwitch(ctx, s.db)
}

func (s *Store) stopSwitch(ctx context.Context, q rowQuerier) (statemachine.StopSwitch, error) {
	var sw statemachine.StopSwitch
	err := q.QueryRowContext(ctx, s.d.q("SELECT holder, reason, since FROM control WHERE name = ?"), controlStop).
		Scan(&sw.By, &sw.Reason, &sw.Since)
	if errors.Is(err, sql.ErrNoRows) {
		return statemachine.StopSwitch{}, nil
	}
	if err != nil {
		return sw, fmt.Errorf("read the stop switch: %w", err)
	}
	sw.Set, sw.Since = true, sw.Since.UTC()
	return sw, nil
}

// SetStop sets the stop switch unless it is set already.
func (s *Store) SetStop(ctx context.Context, by, reason string) (statemachine.StopSwitch, error) {
	pre, post := s.d.insertIgnore()
	if _, err := s.db.ExecContext(ctx, s.d.q(pre+" control (name, holder, reason, since) VALUES (?, ?, ?, "+s.d.now()+")"+post),
		controlStop, truncate(by, 250), truncate(reason, 4000), s.nowArg()); err != nil {
		return statemachine.StopSwitch{}, fmt.Errorf("set the stop switch: %w", err)
	}
	return s.StopSwitch(ctx)
}

// ClearStop clears the stop switch.
func (s *Store) ClearStop(ctx context.Context, by string) error {
	if _, err := s.db.ExecContext(ctx, s.d.q("DELETE FROM control WHERE name = ?"), controlStop); err != nil {
		return fmt.Errorf("clear the stop switch: %w", err)
	}
	return nil
}

// AcquireLeader takes or renews the scheduler lease. Two statements, each a
// compare-and-set: insert the lease if there is none; otherwise take it over
// only if it is ours, expired, or held by c.TakeOver (a holder the caller
// knows is dead). The affected-row counts decide.
func (s *Store) AcquireLeader(ctx context.Context, c statemachine.LeaderClaim) (statemachine.Lease, error) {
	if c.Holder == "" || c.TTL <= 0 {
		return statemachine.Lease{}, errors.New("acquire scheduler lease: holder and a positive ttl are required")
	}
	var l statemachine.Lease
	err := s.retried(ctx, func() error {
		var err error
		l, err = s.acquireLeader(ctx, c)
		return err
	})
	return l, err
}

func (s *Store) acquireLeader(ctx context.Context, c statemachine.LeaderClaim) (statemachine.Lease, error) {
	pre, post := s.d.insertIgnore()
	var procs any
	if c.MaxProcs > 0 {
		procs = c.MaxProcs
	}
	res, err := s.db.ExecContext(ctx, s.d.q(pre+" control (name, holder, reason, since, expires_at, max_procs, process) VALUES (?, ?, '', "+
		s.d.now()+", "+s.d.plusMicros(s.d.now())+", ?, ?)"+post),
		controlScheduler, c.Holder, s.nowArg(), s.nowArg(), c.TTL.Microseconds(), procs, c.Process)
	if err != nil {
		return statemachine.Lease{}, fmt.Errorf("acquire scheduler lease: %w", err)
	}
	won, _ := res.RowsAffected()
	if won != 1 {
		// `since` is assigned first: MySQL evaluates SET left to right with
		// the new values, PostgreSQL with the old ones; this order means the
		// same in both. An empty TakeOver matches no holder (holders are
		// never empty).
		res, err = s.db.ExecContext(ctx, s.d.q("UPDATE control SET since = CASE WHEN holder = ? THEN since ELSE "+s.d.now()+" END, "+
			"holder = ?, expires_at = "+s.d.plusMicros(s.d.now())+", max_procs = ?, process = ?"+
			" WHERE name = ? AND (holder = ? OR holder = ? OR expires_at < "+s.d.now()+")"),
			c.Holder, s.nowArg(), c.Holder, s.nowArg(), c.TTL.Microseconds(), procs, c.Process, controlScheduler, c.Holder, c.TakeOver, s.nowArg())
		if err != nil {
			return statemachine.Lease{}, fmt.Errorf("acquire scheduler lease: %w", err)
		}
		won, _ = res.RowsAffected()
	}
	l, ok, err := s.readLease(ctx)
	if err != nil {
		return l, fmt.Errorf("acquire scheduler lease: %w", err)
	}
	if won != 1 || !ok || l.Holder != c.Holder {
		return l, &statemachine.LeaseHeldError{Lease: l}
	}
	return l, nil
}

// RenewLeader extends holder's unexpired lease.
func (s *Store) RenewLeader(ctx context.Context, holder string, ttl time.Duration) (statemachine.Lease, error) {
	res, err := s.db.ExecContext(ctx, s.d.q("UPDATE control SET expires_at = "+s.d.plusMicros(s.d.now())+
		" WHERE name = ? AND holder = ? AND expires_at >= "+s.d.now()),
		s.nowArg(), ttl.Microseconds(), controlScheduler, holder, s.nowArg())
	if err != nil {
		return statemachine.Lease{}, fmt.Errorf("renew scheduler lease: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return statemachine.Lease{}, fmt.Errorf("renew scheduler lease of %s: %w", holder, statemachine.ErrLeaseLost)
	}
	l, _, err := s.readLease(ctx)
	return l, err
}

// ReleaseLeader gives the lease up if holder has it.
func (s *Store) ReleaseLeader(ctx context.Context, holder string) error {
	if _, err := s.db.ExecContext(ctx, s.d.q("DELETE FROM control WHERE name = ? AND holder = ?"), controlScheduler, holder); err != nil {
		return fmt.Errorf("release scheduler lease: %w", err)
	}
	return nil
}

// Leader returns the unexpired scheduler lease, if any.
func (s *Store) Leader(ctx context.Context) (statemachine.Lease, bool, error) {
	l, ok, err := s.readLease(ctx)
	if err != nil || !ok {
		return l, ok, err
	}
	now, err := s.Now(ctx)
	if err != nil {
		return l, false, err
	}
	if l.ExpiresAt.Before(now) {
		return l, false, nil
	}
	return l, true, nil
}

// readLease reads the scheduler lease row, expired or not.
func (s *Store) readLease(ctx context.Context) (statemachine.Lease, bool, error) {
	var l statemachine.Lease
	var procs sql.NullInt64
	err := s.db.QueryRowContext(ctx, s.d.q("SELECT holder, since, expires_at, max_procs, process FROM control WHERE name = ?"), controlScheduler).
		Scan(&l.Holder, &l.Since, &l.ExpiresAt, &procs, &l.Process)
	if errors.Is(err, sql.ErrNoRows) {
		return l, false, nil
	}
	if err != nil {
		return l, false, fmt.Errorf("read scheduler lease: %w", err)
	}
	l.Since, l.ExpiresAt, l.MaxProcs = l.Since.UTC(), l.ExpiresAt.UTC(), int(procs.Int64)
	return l, true, nil
}

// rolesKey is the canonical form of a role list: sorted, comma-separated.
func rolesKey(roles []statemachine.Role) string {
	rs := make([]string, len(roles))
	for i, r := range roles {
		rs[i] = string(r)
	}
	slices.Sort(rs)
	return strings.Join(slices.Compact(rs), ",")
}

const agentColumns = "host, roles, version, dns_target, address, endpoints, pid, machine, process, instance, jobs, started_at, last_seen"

// RegisterAgent makes a.Instance the agent serving a.Host. Two statements,
// each a compare-and-set: insert the entry if there is none; otherwise take
// it over only if it is ours, stale, or held by the named dead instance.
func (s *Store) RegisterAgent(ctx context.Context, a statemachine.Agent, staleAfter time.Duration, takeOver string) error {
	if a.Host == "" || a.Instance == "" || len(a.Roles) == 0 {
		return errors.New("register agent: host, instance and roles are required")
	}
	started := a.StartedAt
	if started.IsZero() {
		started = time.Now()
	}
	endpoints, err := endpointsJSON(a.Endpoints)
	if err != nil {
		return err
	}
	pre, post := s.d.insertIgnore()
	res, err := s.db.ExecContext(ctx, s.d.q(pre+" agent ("+agentColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "+s.d.now()+")"+post),
		a.Host, rolesKey(a.Roles), a.Version, a.DNSTarget, a.Address, endpoints, a.PID, a.Machine, a.Process, a.Instance, a.Jobs, started.UTC(), s.nowArg())
	if err != nil {
		return fmt.Errorf("register agent for %s: %w", a.Host, err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return nil
	}
	res, err = s.db.ExecContext(ctx, s.d.q("UPDATE agent SET roles = ?, version = ?, dns_target = ?, address = ?, endpoints = ?, pid = ?, machine = ?, "+
		"process = ?, instance = ?, jobs = ?, started_at = ?, last_seen = "+s.d.now()+
		" WHERE host = ? AND (instance = ? OR instance = ? OR last_seen < "+s.d.plusMicros(s.d.now())+")"),
		rolesKey(a.Roles), a.Version, a.DNSTarget, a.Address, endpoints, a.PID, a.Machine, a.Process, a.Instance, a.Jobs, started.UTC(), s.nowArg(),
		a.Host, a.Instance, takeOver, s.nowArg(), -staleAfter.Microseconds())
	if err != nil {
		return fmt.Errorf("register agent for %s: %w", a.Host, err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return nil
	}
	holder, ok, err := s.AgentFor(ctx, a.Host)
	if err != nil {
		return err
	}
	if !ok { // deregistered meanwhile: try again from the start
		return s.RegisterAgent(ctx, a, staleAfter, takeOver)
	}
	return &statemachine.AgentHeldError{Agent: holder}
}

// endpointsJSON is how endpoints are stored: a JSON object, or "".
func endpointsJSON(e map[statemachine.Engine]string) (string, error) {
	if len(e) == 0 {
		return "", nil
	}
	b, err := json.Marshal(e)
	if err != nil {
		return "", err
	}
	if len(b) > 2048 {
		return "", fmt.Errorf("agent endpoints take %d bytes, more than 2048", len(b))
	}
	return string(b), nil
}

// Heartbeat refreshes a.Instance's entry.
func (s *Store) Heartbeat(ctx context.Context, a statemachine.Agent) error {
	endpoints, err := endpointsJSON(a.Endpoints)
	if err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx, s.d.q("UPDATE agent SET roles = ?, version = ?, dns_target = ?, address = ?, endpoints = ?, jobs = ?, last_seen = "+
		s.d.now()+" WHERE host = ? AND instance = ?"),
		rolesKey(a.Roles), a.Version, a.DNSTarget, a.Address, endpoints, a.Jobs, s.nowArg(), a.Host, a.Instance)
	if err != nil {
		return fmt.Errorf("heartbeat of %s: %w", a.Host, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("heartbeat of %s: another agent process serves this host now: %w", a.Host, statemachine.ErrLeaseLost)
	}
	return nil
}

// AgentFor returns the entry for a host ID.
func (s *Store) AgentFor(ctx context.Context, host string) (statemachine.Agent, bool, error) {
	as, err := s.queryAgents(ctx, "WHERE host = ?", host)
	if err != nil || len(as) == 0 {
		return statemachine.Agent{}, false, err
	}
	return as[0], true, nil
}

// Deregister removes instance's entry for host.
func (s *Store) Deregister(ctx context.Context, host, instance string) error {
	if _, err := s.db.ExecContext(ctx, s.d.q("DELETE FROM agent WHERE host = ? AND instance = ?"), host, instance); err != nil {
		return fmt.Errorf("deregister agent %s: %w", host, err)
	}
	return nil
}

// Agents lists agents seen within seenWithin (all when zero), by host.
func (s *Store) Agents(ctx context.Context, seenWithin time.Duration) ([]statemachine.Agent, error) {
	if seenWithin > 0 {
		return s.queryAgents(ctx, "WHERE last_seen >= "+s.d.plusMicros(s.d.now()), s.nowArg(), -seenWithin.Microseconds())
	}
	return s.queryAgents(ctx, "")
}

func (s *Store) queryAgents(ctx context.Context, where string, args ...any) ([]statemachine.Agent, error) {
	rows, err := s.db.QueryContext(ctx, s.d.q("SELECT "+agentColumns+", login FROM agent "+where+" ORDER BY host"), args...)
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	defer rows.Close()
	var out []statemachine.Agent
	for rows.Next() {
		var a statemachine.Agent
		var roles, endpoints string
		if err := rows.Scan(&a.Host, &roles, &a.Version, &a.DNSTarget, &a.Address, &endpoints, &a.PID, &a.Machine, &a.Process, &a.Instance, &a.Jobs, &a.StartedAt, &a.LastSeen, &a.Login); err != nil {
			return nil, err
		}
		if endpoints != "" {
			if err := json.Unmarshal([]byte(endpoints), &a.Endpoints); err != nil {
				return nil, fmt.Errorf("agent %s: endpoints %q: %w", a.Host, endpoints, err)
			}
		}
		for _, r := range strings.Split(roles, ",") {
			a.Roles = append(a.Roles, statemachine.Role(r))
		}
		a.StartedAt, a.LastSeen = a.StartedAt.UTC(), a.LastSeen.UTC()
		out = append(out, a)
	}
	return out, rows.Err()
}

// PauseSource stops promotions from a source host.
func (s *Store) PauseSource(ctx context.Context, host, by, reason string) (statemachine.SourcePause, error) {
	if host == "" {
		return statemachine.SourcePause{}, errors.New("pause source: host is required")
	}
	pre, post := s.d.insertIgnore()
	if _, err := s.db.ExecContext(ctx, s.d.q(pre+" source_pause (host, paused_by, reason, since) VALUES (?, ?, ?, "+s.d.now()+")"+post),
		host, truncate(by, 250), truncate(reason, 4000), s.nowArg()); err != nil {
		return statemachine.SourcePause{}, fmt.Errorf("pause source %s: %w", host, err)
	}
	ps, err := s.PausedSources(ctx)
	if err != nil {
		return statemachine.SourcePause{}, err
	}
	for _, p := range ps {
		if p.Host == host {
			return p, nil
		}
	}
	return statemachine.SourcePause{}, fmt.Errorf("pause source %s: the pause vanished (resumed meanwhile?)", host)
}

// ResumeSource lifts a pause.
func (s *Store) ResumeSource(ctx context.Context, host string) (bool, error) {
	res, err := s.db.ExecContext(ctx, s.d.q("DELETE FROM source_pause WHERE host = ?"), host)
	if err != nil {
		return false, fmt.Errorf("resume source %s: %w", host, err)
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// PausedSources lists the paused source hosts.
func (s *Store) PausedSources(ctx context.Context) ([]statemachine.SourcePause, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT host, paused_by, reason, since FROM source_pause ORDER BY host")
	if err != nil {
		return nil, fmt.Errorf("list paused sources: %w", err)
	}
	defer rows.Close()
	var out []statemachine.SourcePause
	for rows.Next() {
		var p statemachine.SourcePause
		if err := rows.Scan(&p.Host, &p.By, &p.Reason, &p.Since); err != nil {
			return nil, err
		}
		p.Since = p.Since.UTC()
		out = append(out, p)
	}
	return out, rows.Err()
}

func (s *Store) pausedHosts(ctx context.Context, q querier) (map[string]bool, error) {
	rows, err := q.QueryContext(ctx, "SELECT host FROM source_pause")
	if err != nil {
		return nil, fmt.Errorf("read paused sources: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			return nil, err
		}
		out[h] = true
	}
	return out, rows.Err()
}
