package statemachine

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Engine is the database engine of a migration row.
type Engine string

// The engines, as stored in the state table.
const (
	EngineMySQL    Engine = "mysql"
	EnginePostgres Engine = "postgres"
)

// Engines lists the known engines.
var Engines = []Engine{EngineMySQL, EnginePostgres}

// Migration is one row of the state table: one database's migration.
// Zero values stand for NULL (no owner, not blocked yet, size unknown...).
type Migration struct {
	ID               int64     `json:"id"`
	Engine           Engine    `json:"engine"`
	DatabaseName     string    `json:"database_name"`
	Source           string    `json:"source"`
	Destination      string    `json:"destination"`
	DNSName          string    `json:"dns_name"`
	Status           Status    `json:"status"`
	Mode             Mode      `json:"mode"`
	Attempt          int       `json:"attempt"`
	Owner            string    `json:"owner,omitempty"`
	LeaseUntil       time.Time `json:"lease_until,omitzero"`
	Fence            int64     `json:"fence"`
	DumpURL          string    `json:"dump_url,omitempty"`
	DumpSHA256       string    `json:"dump_sha256,omitempty"`
	DumpBytes        int64     `json:"dump_bytes,omitempty"`
	ConsistencyPoint time.Time `json:"consistency_point,omitzero"`
	SizeBytes        int64     `json:"size_bytes,omitempty"`
	BlockedAt        time.Time `json:"blocked_at,omitzero"`
	UnblockedAt      time.Time `json:"unblocked_at,omitzero"`
	SwitchedAt       time.Time `json:"switched_at,omitzero"`
	LastError        string    `json:"last_error,omitempty"`
	CreatedAt        time.Time `json:"created_at"`
	UpdatedAt        time.Time `json:"updated_at"`
}

// String names the row for logs and messages.
func (m *Migration) String() string {
	return fmt.Sprintf("#%d %s %q on %s", m.ID, m.Engine, m.DatabaseName, m.Source)
}

// Planned is one row to insert with Store.Plan.
type Planned struct {
	Engine       Engine
	DatabaseName string
	Source       string
	Destination  string
	DNSName      string
	SizeBytes    int64
	// Mode is the row's mode; empty: dump.
	Mode Mode
}

// PlanConflict says why planned row Index (into the slice given to Plan)
// cannot be inserted next to the rows already in the table.
type PlanConflict struct {
	Index  int
	Reason string
}

// PlanConflictsError is returned by Store.Plan when rows conflict with the
// table; nothing was inserted.
type PlanConflictsError struct{ Conflicts []PlanConflict }

func (e *PlanConflictsError) Error() string {
	return fmt.Sprintf("%d planned rows conflict with the state table; nothing was inserted", len(e.Conflicts))
}

// Mark sets one of the row's timestamps from the state database's clock.
type Mark int

const (
	// MarkBlocked: writes are now blocked at the source. Sets blocked_at and
	// clears unblocked_at (a retry blocks again).
	MarkBlocked Mark = iota + 1
	// MarkUnblocked: writes were restored at the source.
	MarkUnblocked
	// MarkSwitched: the DNS name now points at the destination.
	MarkSwitched
	// MarkUnswitched: the DNS name points at the source again (rollback).
	MarkUnswitched
)

// Fields are the columns a worker records on its row. Zero values leave a
// column unchanged.
type Fields struct {
	SizeBytes int64
	// DumpURL, DumpSHA256 and DumpBytes are recorded together.
	DumpURL          string
	DumpSHA256       string
	DumpBytes        int64
	ConsistencyPoint time.Time
	Marks            []Mark
	// Mode records the mode a row in mode auto was given (dump or online).
	Mode Mode
	// Divert, on Advance, moves the row to its step's Divert status instead
	// of the next one.
	Divert bool
}

// IsZero reports whether f changes nothing.
func (f Fields) IsZero() bool {
	return f.SizeBytes == 0 && f.DumpURL == "" && f.DumpSHA256 == "" && f.DumpBytes == 0 &&
		f.ConsistencyPoint.IsZero() && len(f.Marks) == 0 && f.Mode == "" && !f.Divert
}

// ClaimRequest asks for up to Limit rows for one agent role on one host.
type ClaimRequest struct {
	Role Role
	// Host is the agent's host ID; ignored for roles that serve any host (dns).
	Host string
	// Engines, when not empty, limits the claim to rows of these engines
	// (those the agent has a handler for).
	Engines []Engine
	// Owner identifies the claiming agent process in the row and the events
	// ("db-17/pid 4242").
	Owner string
	Limit int
	// Lease is how long the claim holds without renewal.
	Lease time.Duration
}

// Rescued is a row the rescuer took back from an agent whose lease expired.
type Rescued struct {
	ID       int64
	From, To Status
	Owner    string
}

// Event is one entry of a row's audit trail: a transition (From != To) or a
// progress note from the worker holding it (From == To).
type Event struct {
	ID          int64     `json:"id"`
	MigrationID int64     `json:"migration_id"`
	From        Status    `json:"from"`
	To          Status    `json:"to"`
	Actor       string    `json:"actor"`
	Detail      string    `json:"detail,omitempty"`
	At          time.Time `json:"at"`
}

// StopSwitch is the persisted "promote nothing more" switch.
type StopSwitch struct {
	Set    bool      `json:"set"`
	By     string    `json:"by,omitempty"`
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since,omitzero"`
}

// Lease is a named lease in the control table (the scheduler's leadership).
type Lease struct {
	Holder    string    `json:"holder"`
	Since     time.Time `json:"since"`
	ExpiresAt time.Time `json:"expires_at"`
	// MaxProcs is the holding scheduler's --max-procs (0: not given).
	MaxProcs int `json:"max_procs,omitempty"`
	// Process identifies the holding process (internal/procid's form; ""
	// when an earlier version holds it): a restarted scheduler of the same
	// machine can tell that it is gone.
	Process string `json:"process,omitempty"`
}

// LeaderClaim asks for the scheduler lease (Store.AcquireLeader).
type LeaderClaim struct {
	// Holder names the scheduler, unique per process:
	// "ops-1 pid 812 (3fa9c1d2)".
	Holder string
	// Process is the holder's process identity, recorded in the lease.
	Process  string
	TTL      time.Duration
	MaxProcs int
	// TakeOver is a holder whose process the caller knows is gone (a
	// crashed predecessor of its machine): its lease is taken at once,
	// expired or not.
	TakeOver string
}

// PromoteOrder orders the candidates within one source host.
type PromoteOrder string

// The orders.
const (
	// OrderPlan: plan order (id).
	OrderPlan PromoteOrder = "plan"
	// OrderSize: smallest first (unknown sizes last), to show progress early.
	OrderSize PromoteOrder = "size"
)

// Candidate is a Waiting row the scheduler may promote.
type Candidate struct {
	ID          int64
	Source      string
	Destination string
	SizeBytes   int64
}

// PromoteRequest asks for one fenced, fair promotion.
type PromoteRequest struct {
	// Holder must hold the unexpired scheduler lease; otherwise nothing is
	// promoted and ErrLeaseLost is returned. This fences a scheduler that
	// lost its lease (paused, partitioned) from promoting.
	Holder string
	Actor  string
	// MaxInFlight is --max-procs: promote at most MaxInFlight − in-flight.
	MaxInFlight int
	// MaxPerSource caps in-flight rows per source host (0: no cap): sources
	// at their cap get no candidates.
	MaxPerSource int
	// MaxPerDestination caps in-flight rows per destination host (0: no
	// cap): rows bound for a destination at its cap are not offered, so
	// candidates reach past them.
	MaxPerDestination int
	// ExtraCandidates is how many more Waiting rows than a source's free
	// slots to offer, so that rows bound for a full destination can be
	// skipped.
	ExtraCandidates int
	Order           PromoteOrder
	// After is the source served last by the previous promotion: the
	// round-robin (SourceOrder) continues after it.
	After string
}

// PromoteState is what the chooser sees in one round, read inside the
// promotion's transaction: nothing in it can change until the transaction
// ends. Counts include the rows promoted by earlier rounds.
type PromoteState struct {
	InFlight              int
	InFlightBySource      map[string]int
	InFlightByDestination map[string]int
	// Candidates lists, for the eligible sources (not paused, below their
	// cap, with Waiting rows) that come first in SourceOrder, their next
	// Waiting rows in the requested order. Later rounds offer the next ones.
	Candidates map[string][]Candidate
	// Budget is MaxInFlight − InFlight: the chooser may return at most this
	// many ids.
	Budget int
}

// PromoteResult says what one promotion did.
type PromoteResult struct {
	// Promoted are the rows moved to ToDump.
	Promoted []Candidate
	// InFlight is the in-flight count after the promotion.
	InFlight int
	// Stopped is set when the stop switch prevented any promotion.
	Stopped StopSwitch
}

// SourcePause is a source host the scheduler promotes nothing from.
type SourcePause struct {
	Host   string    `json:"host"`
	By     string    `json:"by"`
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since"`
}

// StepStats counts the steps that ended within a time window.
type StepStats struct {
	// Completions: steps that succeeded (a working status moved on).
	Completions int
	// Failures: steps that ended in a failed status.
	Failures int
	// TopError is the most frequent failure message in the window, and
	// TopErrorCount how often it occurred.
	TopError      string
	TopErrorCount int
}

// ErrorGroup is a failure message and how many failed rows carry it.
type ErrorGroup struct {
	Error string `json:"error"`
	Count int    `json:"count"`
}

// RowNote is a row and one of its events' detail.
type RowNote struct {
	ID       int64     `json:"id"`
	Database string    `json:"database"`
	Detail   string    `json:"detail"`
	At       time.Time `json:"at"`
}

// NotConvergingNote starts the sync step's note on a stream whose lag
// keeps growing (and every lag note while that lasts, in lower case).
const NotConvergingNote = "syncing: NOT CONVERGING"

// Agent is an agent's entry in the registry, refreshed by its heartbeat.
// One agent process serves a host ID at a time: the entry is a lease on the
// host ID held by the process's Instance.
type Agent struct {
	Host    string `json:"host"`
	Roles   []Role `json:"roles"`
	Version string `json:"version,omitempty"`
	// DNSTarget is what a DNS name pointing at this host holds: addresses
	// (A/AAAA, comma-separated) or a host name (CNAME).
	DNSTarget string `json:"dns_target,omitempty"`
	Address   string `json:"address,omitempty"`
	PID       int    `json:"pid,omitempty"`
	// Machine is the hostname of the machine the process runs on.
	Machine string `json:"machine,omitempty"`
	// Instance is the process's random ID.
	Instance string `json:"instance"`
	// Process identifies the process (internal/procid's form; "" when an
	// earlier version registered): a restarted agent of the same machine
	// can tell that it is gone.
	Process string `json:"process,omitempty"`
	// Endpoints are how other agents reach this host's database servers,
	// by engine ("mysql": "10.0.0.7:3306").
	Endpoints map[Engine]string `json:"endpoints,omitempty"`
	// Login is the state-database login that last wrote the entry, as
	// the database records it (read only).
	Login string `json:"login,omitempty"`
	// Jobs is how many steps the agent runs now.
	Jobs      int       `json:"jobs"`
	StartedAt time.Time `json:"started_at"`
	LastSeen  time.Time `json:"last_seen"`
}

// TTLRecord is what migrate dns lower-ttl recorded about a name.
type TTLRecord struct {
	// Name is normalised, without the trailing dot.
	Name        string
	OriginalTTL uint32
	LoweredTTL  uint32
	LoweredAt   time.Time
	LoweredBy   string
	// RestoredAt is zero until restore-ttl put the original back.
	RestoredAt time.Time
}

// AgentHeldError: another live agent process serves the host ID.
type AgentHeldError struct{ Agent Agent }

func (e *AgentHeldError) Error() string {
	return fmt.Sprintf("host %s is already served by agent pid %d on machine %s (instance %s, started %s, last heartbeat %s)",
		e.Agent.Host, e.Agent.PID, e.Agent.Machine, e.Agent.Instance,
		e.Agent.StartedAt.UTC().Format(time.RFC3339), e.Agent.LastSeen.UTC().Format(time.RFC3339))
}

// Filter selects rows for Store.List. Zero fields do not filter.
type Filter struct {
	Statuses     []Status
	Source       string
	Destination  string
	DatabaseName string
	// AfterID pages: only rows with a larger id.
	AfterID int64
	Limit   int
}

// Store persists the state table. Every method is safe for concurrent use by
// many goroutines and many processes; every status change is one
// compare-and-set UPDATE whose affected-row count decides, recorded in the
// row's events in the same transaction. Times come from the state database's
// clock, which all agents share.
type Store interface {
	// Plan inserts rows in Waiting, all or none. Rows that conflict with the
	// table (same database on the same source; a destination that already
	// receives a database of that name; a DNS name in use by an unfinished
	// row) are refused with a *PlanConflictsError naming each. With dryRun,
	// conflicts are checked and nothing is inserted.
	Plan(ctx context.Context, rows []Planned, actor string, dryRun bool) (inserted int, err error)

	// Get returns one row, or ErrNotFound.
	Get(ctx context.Context, id int64) (Migration, error)
	// List returns rows matching f in id order.
	List(ctx context.Context, f Filter) ([]Migration, error)

	// Claim moves up to req.Limit rows from the role's queued status to its
	// working status for req.Host, in plan order, setting owner, lease_until,
	// attempt+1 and fence+1. Concurrent claimers never get the same row.
	Claim(ctx context.Context, req ClaimRequest) ([]Migration, error)
	// Renew extends the lease of a claimed row and returns the new expiry.
	// It returns ErrLeaseLost if the row is no longer held by m (owner,
	// fence, status) or the lease has already expired.
	Renew(ctx context.Context, m *Migration, lease time.Duration) (time.Time, error)
	// Advance moves a claimed row to its step's next status, recording f and
	// clearing owner, lease, attempt and last_error. ErrLeaseLost if the
	// claim is no longer m's.
	Advance(ctx context.Context, m *Migration, f Fields, detail string) error
	// Fail moves a claimed row to its step's failed status with reason as
	// last_error, recording f. ErrLeaseLost if the claim is no longer m's.
	Fail(ctx context.Context, m *Migration, f Fields, reason string) error
	// Release gives a claimed row back to its step's queued status (another
	// agent, or the same one later, may claim it), with reason as last_error.
	Release(ctx context.Context, m *Migration, f Fields, reason string) error
	// Record writes f on a claimed row without changing its status: it is
	// how a worker says "writes are blocked now" before blocking them.
	Record(ctx context.Context, m *Migration, f Fields, detail string) error
	// Progress adds a progress note to a claimed row's events.
	Progress(ctx context.Context, m *Migration, detail string) error
	// NoteRetry records that the holder retries the step after a transient
	// error: attempt+1 and last_error, keeping the claim. ErrLeaseLost if the
	// claim is no longer m's.
	NoteRetry(ctx context.Context, m *Migration, reason string) error
	// PutRecord stores body (JSON) as the row's record of kind, replacing
	// an earlier one: what a step changes outside the state database,
	// written before it changes it, so that a later step or another agent
	// can undo it. Only the claim m may write (ErrLeaseLost otherwise).
	// kind is lower-case letters, digits, '-' and '_', at most 32.
	PutRecord(ctx context.Context, m *Migration, kind string, body []byte) error
	// GetRecord returns the row's record of kind; ok is false if there is
	// none.
	GetRecord(ctx context.Context, id int64, kind string) (body []byte, ok bool, err error)

	// Rescue takes back rows whose lease expired: to the queued status, or to
	// the failed status once attempt has reached maxAttempts.
	Rescue(ctx context.Context, maxAttempts int) ([]Rescued, error)
	// RescueHost is Rescue limited to one role's rows on one host (the
	// agent's own crash recovery); rows whose owner is one of gone
	// (processes the caller knows have ended: its crashed predecessor) are
	// taken back whether their lease expired or not.
	RescueHost(ctx context.Context, role Role, host string, gone []string, maxAttempts int) ([]Rescued, error)
	// Operate applies an operator action (ActionRetry, ActionRollback,
	// ActionCancel) to one row and returns it as it is now.
	Operate(ctx context.Context, id int64, action, actor, detail string) (Migration, error)

	// Counts returns the number of rows in each status (statuses without rows
	// are absent).
	Counts(ctx context.Context) (map[Status]int, error)
	// Promote moves up to limit Waiting rows to ToDump in plan order and
	// returns how many moved: plain promotion without lease, caps or stop
	// switch, for tests and tools. The scheduler uses PromoteFair.
	Promote(ctx context.Context, limit int, actor string) (int, error)
	// PromoteFair is the scheduler's promotion, in one transaction that
	// serialises every promoter: it checks req.Holder's lease and the stop
	// switch, counts the rows in flight, then in rounds gathers candidates,
	// lets choose pick at most Budget of them and moves those to ToDump,
	// until the budget is spent or a round picks nothing. In-flight never
	// exceeds req.MaxInFlight, whatever races.
	PromoteFair(ctx context.Context, req PromoteRequest, choose func(PromoteState) []int64) (PromoteResult, error)
	// CountStatuses returns how many rows are in any of statuses.
	CountStatuses(ctx context.Context, statuses ...Status) (int, error)

	// PauseSource stops promotions from a source host (idempotent: the first
	// pause stays) and returns the pause.
	PauseSource(ctx context.Context, host, by, reason string) (SourcePause, error)
	// ResumeSource lifts a pause and reports whether there was one.
	ResumeSource(ctx context.Context, host string) (bool, error)
	// PausedSources lists the paused source hosts.
	PausedSources(ctx context.Context) ([]SourcePause, error)

	// StepStats counts step completions and failures recorded within the
	// last window, from the audit trail.
	StepStats(ctx context.Context, window time.Duration) (StepStats, error)
	// FailedByError groups the rows in a failed status by last_error, most
	// common first, at most limit groups.
	FailedByError(ctx context.Context, limit int) ([]ErrorGroup, error)
	// DoneWithin counts rows that reached Done within the last window.
	DoneWithin(ctx context.Context, window time.Duration) (int, error)
	// NotConverging lists, at most limit, the syncing rows whose latest
	// event says their stream is not converging (NotConvergingNote, any
	// case), with that event.
	NotConverging(ctx context.Context, limit int) ([]RowNote, error)

	// StopSwitch reads the stop switch.
	StopSwitch(ctx context.Context) (StopSwitch, error)
	// SetStop sets the stop switch. If it is already set it is left as it is
	// (the first reason stays) and returned.
	SetStop(ctx context.Context, by, reason string) (StopSwitch, error)
	// ClearStop clears the stop switch; clearing a clear switch is no error.
	ClearStop(ctx context.Context, by string) error

	// AcquireLeader takes the scheduler lease for c.Holder, or renews it if
	// c.Holder has it, recording its --max-procs (0: none) and process. If
	// another holder's lease has not expired, and that holder is not
	// c.TakeOver, it returns a *LeaseHeldError naming that holder.
	AcquireLeader(ctx context.Context, c LeaderClaim) (Lease, error)
	// RenewLeader extends holder's lease; ErrLeaseLost if it is not holder's
	// or has expired.
	RenewLeader(ctx context.Context, holder string, ttl time.Duration) (Lease, error)
	// ReleaseLeader gives the lease up if holder has it.
	ReleaseLeader(ctx context.Context, holder string) error
	// Leader returns the current lease, if any holder's lease is unexpired.
	Leader(ctx context.Context) (Lease, bool, error)

	// RegisterAgent makes a.Instance the agent serving a.Host: it succeeds
	// when nobody serves the host, a.Instance already does, the holder's last
	// heartbeat is older than staleAfter, or the holder is takeOver (an
	// instance the caller knows is dead). Otherwise *AgentHeldError.
	RegisterAgent(ctx context.Context, a Agent, staleAfter time.Duration, takeOver string) error
	// Heartbeat refreshes a.Instance's entry for a.Host; ErrLeaseLost if
	// another instance has taken the host over.
	Heartbeat(ctx context.Context, a Agent) error
	// AgentFor returns the entry for a host ID, if any.
	AgentFor(ctx context.Context, host string) (Agent, bool, error)
	// Deregister removes instance's entry for host (a clean shutdown).
	Deregister(ctx context.Context, host, instance string) error
	// Agents lists agents seen within the last seenWithin (all when zero).
	Agents(ctx context.Context, seenWithin time.Duration) ([]Agent, error)

	// ExpireDump clears dump_url on a finished row (Done, Rolled back,
	// Cancelled) whose dump_url is url, after retention deleted that dump,
	// recording detail in its events. It reports whether it did.
	ExpireDump(ctx context.Context, id int64, url, actor, detail string) (bool, error)

	// Events returns a row's audit trail, oldest first.
	Events(ctx context.Context, id int64) ([]Event, error)

	// Unswitch clears switched_at of an unclaimed row in a status an
	// operator may roll back from, once its DNS name points at the source
	// again (migrate rollback points it back first), with an event.
	// ErrConflict if the row is claimed or in another status.
	Unswitch(ctx context.Context, id int64, actor, detail string) error

	// SaveTTL records that name's TTL is being lowered from original to
	// lowered, before it is: a name already lowered and not restored keeps
	// its first record (the original TTL survives re-runs); a restored one
	// starts a new record. It returns the record as stored.
	SaveTTL(ctx context.Context, name string, original, lowered uint32, by string) (TTLRecord, error)
	// TTLRecords returns the records of the names that have one.
	TTLRecords(ctx context.Context, names []string) (map[string]TTLRecord, error)
	// MarkTTLRestored records that name's original TTL is back.
	MarkTTLRestored(ctx context.Context, name string) error

	// Now returns the state database's clock (or the pinned test clock).
	Now(ctx context.Context) (time.Time, error)

	Close() error
}

// Errors returned by stores.
var (
	// ErrNotFound: no row with that id.
	ErrNotFound = errors.New("no such migration row")
	// ErrLeaseLost: the caller's claim or lease is no longer valid: the row was
	// rescued, re-claimed, or moved by someone else. The caller must stop
	// working on it and must not touch the row again.
	ErrLeaseLost = errors.New("lease lost")
	// ErrConflict: the row was not in the status the action expected.
	ErrConflict = errors.New("row changed meanwhile")
	// ErrSchemaOutdated: the state database's schema is older than this
	// binary; run `migrate db upgrade`.
	ErrSchemaOutdated = errors.New("state database schema is outdated")
	// ErrInvalidTransition: the transition table does not allow the move.
	ErrInvalidTransition = errors.New("transition not allowed")
	// ErrNotPermitted: the state database refused the store's login the
	// change (an agent's login may change only its host's rows, the
	// columns its steps move, and its own registry entry).
	ErrNotPermitted = errors.New("not permitted to this login")
)

// LeaseHeldError says who holds a lease that the caller wanted.
type LeaseHeldError struct{ Lease Lease }

func (e *LeaseHeldError) Error() string {
	return fmt.Sprintf("scheduler lease is held by %s since %s (expires %s)",
		e.Lease.Holder, e.Lease.Since.UTC().Format(time.RFC3339), e.Lease.ExpiresAt.UTC().Format(time.RFC3339))
}

// TransitionError is an ErrInvalidTransition with the details.
type TransitionError struct {
	Role     Role
	From, To Status
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("%s may not move a row from %q to %q", e.Role, e.From, e.To)
}

func (e *TransitionError) Unwrap() error { return ErrInvalidTransition }

// Waker is implemented by stores that can tell waiting agents at once that
// rows may have become claimable (PostgreSQL: LISTEN/NOTIFY). Polling stays
// the fallback: a wake-up may be lost (connection drop) or spurious.
type Waker interface {
	// Wake returns a channel that receives (coalesced, never blocking the
	// store) when rows may have entered role's queued status for host (any
	// host for roles that serve every host, like dns), and a function that
	// ends the subscription.
	Wake(role Role, host string) (<-chan struct{}, func())
	// WakeScheduler is Wake for the scheduler: it receives when rows may
	// have left flight (a slot freed).
	WakeScheduler() (<-chan struct{}, func())
}
