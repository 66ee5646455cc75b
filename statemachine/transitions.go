package statemachine

import (
	"fmt"
	"slices"
	"strings"
)

// Role is who acts on a row: one of the agent roles, the scheduler, the
// rescuer (which takes back rows whose lease expired) or an operator.
type Role string

// The roles. The agent roles are what `migrate-agent --roles` accepts.
const (
	RoleScheduler Role = "scheduler"
	RoleSync      Role = "sync"
	RoleCutover   Role = "cutover"
	RoleDump      Role = "dump"
	RoleImport    Role = "import"
	RoleDNS       Role = "dns"
	RoleClose     Role = "close"
	RoleRollback  Role = "rollback"
	RoleRescuer   Role = "rescuer"
	RoleOperator  Role = "operator"
)

// AgentRoles are the roles an agent can run, in pipeline order.
var AgentRoles = []Role{RoleSync, RoleCutover, RoleDump, RoleImport, RoleDNS, RoleClose, RoleRollback}

// HostSide says which host of a row an agent role works for.
type HostSide string

const (
	// SideSource: the agent on the row's source host claims it.
	SideSource HostSide = "source"
	// SideDestination: the agent on the row's destination host claims it.
	SideDestination HostSide = "destination"
	// SideAny: any agent with the role claims it (the DNS host serves all rows).
	SideAny HostSide = ""
)

// Step is one leased unit of work: an agent of Role claims a row in Queued
// (only rows whose Side host is the agent's host), moving it to Working; it
// then advances it to Next (NextWithoutDNS when the row has no DNS name and
// the field is set), fails it to Failed, or releases it back to Queued. The
// rescuer moves an expired Working row back to Queued, or to Failed once the
// attempt limit is reached.
type Step struct {
	Role           Role
	Side           HostSide
	Queued         Status
	Working        Status
	Next           Status
	NextWithoutDNS Status
	Failed         Status
	// Divert, when set, is the other way on: a handler that returns
	// Fields.Divert moves the row there instead of Next (the sync step of a
	// row in mode auto that cannot stream goes to the dump path).
	Divert      Status
	DivertLabel string
	// DivertWithoutDNS, when set, is Divert for a row without a DNS name.
	DivertWithoutDNS Status
}

// Steps is the pipeline, in order, followed by the rollback step.
var Steps = []Step{
	{Role: RoleSync, Side: SideDestination, Queued: ToSync, Working: Syncing, Next: ToCutOver, Failed: SyncFailed,
		Divert: ToDump, DivertLabel: "auto: dump instead"},
	// The cutover runs at the destination too (issue 33, part 4): it
	// changes only the destination's server; the block it needs at the
	// source is asked of the source's own agent (peer asks).
	{Role: RoleCutover, Side: SideDestination, Queued: ToCutOver, Working: CuttingOver, Next: DNSToUpdate, NextWithoutDNS: ToCloseSource, Failed: CutoverFailed,
		Divert: ToSync, DivertLabel: "writes restored, back to syncing"},
	// The dump step runs at the destination: it pulls the dump from the
	// source server, storing it and importing it at once (the import's
	// way on, Divert), or only storing it when the import could not be
	// done beside it (Next: the import step takes it from the store).
	{Role: RoleDump, Side: SideDestination, Queued: ToDump, Working: Dumping, Next: ToImport, Failed: DumpFailed,
		Divert: DNSToUpdate, DivertWithoutDNS: ToCloseSource, DivertLabel: "done, imported while dumping"},
	{Role: RoleImport, Side: SideDestination, Queued: ToImport, Working: Importing, Next: DNSToUpdate, NextWithoutDNS: ToCloseSource, Failed: ImportFailed},
	{Role: RoleDNS, Side: SideAny, Queued: DNSToUpdate, Working: UpdatingDNS, Next: ToCloseSource, Failed: DNSFailed},
	{Role: RoleClose, Side: SideSource, Queued: ToCloseSource, Working: ClosingSource, Next: Done, Failed: CloseFailed},
	{Role: RoleRollback, Side: SideSource, Queued: ToRollBack, Working: RollingBack, Next: RolledBack, Failed: RollbackFailed},
}

// StepFor returns the step an agent role performs.
func StepFor(r Role) (Step, bool) {
	for _, s := range Steps {
		if s.Role == r {
			return s, true
		}
	}
	return Step{}, false
}

func stepByWorking(s Status) (Step, bool) {
	for _, st := range Steps {
		if st.Working == s {
			return st, true
		}
	}
	return Step{}, false
}

// StepOf returns the step whose working status is s.
func StepOf(working Status) (Step, bool) { return stepByWorking(working) }

// NextStatus is where a successful step moves a row with the given DNS name.
func (s Step) NextStatus(dnsName string) Status {
	return s.next(dnsName, false)
}

// next is NextStatus, or Divert when divert is set and the step has one.
func (s Step) next(dnsName string, divert bool) Status {
	if divert && s.Divert != "" {
		if dnsName == "" && s.DivertWithoutDNS != "" {
			return s.DivertWithoutDNS
		}
		return s.Divert
	}
	if dnsName == "" && s.NextWithoutDNS != "" {
		return s.NextWithoutDNS
	}
	return s.Next
}

// Operator actions. Each is a set of allowed (from → to) moves.
const (
	ActionRetry    = "retry"
	ActionRollback = "rollback"
	ActionCancel   = "cancel"
)

// NextFor is where a successful step moves row m given what the handler
// returned.
func (s Step) NextFor(m *Migration, f Fields) Status { return s.next(m.DNSName, f.Divert) }

// RollbackFrom lists the failed statuses an operator may roll back.
var RollbackFrom = []Status{SyncFailed, CutoverFailed, DumpFailed, ImportFailed, DNSFailed}

// StopStreamFrom lists the statuses of an online row whose writes were never
// blocked but whose stream may exist: an operator's rollback or cancel
// sends them to ToRollBack, which tears the stream down. A Syncing row's
// step is fenced out (its claim is cleared) and stops.
var StopStreamFrom = []Status{ToSync, Syncing, ToCutOver}

// Transition is one allowed move of a row.
type Transition struct {
	Role Role
	From Status
	To   Status
	// Label names the move in the diagram and in the audit trail.
	Label string
}

// Transitions returns the transition table: every move any role may make.
// The state database holds the same (From, To) pairs in migration_transition
// and refuses any other status change with a trigger.
func Transitions() []Transition {
	out := []Transition{
		{Role: RoleScheduler, From: Waiting, To: ToDump, Label: "promote"},
		{Role: RoleScheduler, From: Waiting, To: ToSync, Label: "promote, online"},
	}
	for _, s := range Steps {
		out = append(out,
			Transition{Role: s.Role, From: s.Queued, To: s.Working, Label: "claim"},
			Transition{Role: s.Role, From: s.Working, To: s.Next, Label: "done"},
		)
		if s.NextWithoutDNS != "" {
			out = append(out, Transition{Role: s.Role, From: s.Working, To: s.NextWithoutDNS, Label: "done, no DNS name"})
		}
		if s.Divert != "" {
			out = append(out, Transition{Role: s.Role, From: s.Working, To: s.Divert, Label: s.DivertLabel})
		}
		if s.DivertWithoutDNS != "" {
			out = append(out, Transition{Role: s.Role, From: s.Working, To: s.DivertWithoutDNS, Label: s.DivertLabel + ", no DNS name"})
		}
		out = append(out,
			Transition{Role: s.Role, From: s.Working, To: s.Failed, Label: "fail"},
			Transition{Role: s.Role, From: s.Working, To: s.Queued, Label: "release"},
			Transition{Role: RoleRescuer, From: s.Working, To: s.Queued, Label: "lease expired or owner gone"},
			Transition{Role: RoleRescuer, From: s.Working, To: s.Failed, Label: "lease expired or owner gone, attempts used up"},
			Transition{Role: RoleOperator, From: s.Failed, To: s.Queued, Label: ActionRetry},
		)
	}
	for _, f := range RollbackFrom {
		out = append(out, Transition{Role: RoleOperator, From: f, To: ToRollBack, Label: ActionRollback})
	}
	for _, f := range StopStreamFrom {
		out = append(out,
			Transition{Role: RoleOperator, From: f, To: ToRollBack, Label: ActionRollback},
			Transition{Role: RoleOperator, From: f, To: ToRollBack, Label: ActionCancel})
	}
	out = append(out, Transition{Role: RoleOperator, From: Waiting, To: Cancelled, Label: ActionCancel})
	return out
}

// Allowed reports whether role may move a row from one status to another.
func Allowed(role Role, from, to Status) bool {
	for _, t := range Transitions() {
		if t.Role == role && t.From == from && t.To == to {
			return true
		}
	}
	return false
}

// StatusPair is a (from, to) pair of the transition table, whoever makes it.
type StatusPair struct{ From, To Status }

// Pairs returns the distinct (from, to) pairs of the transition table, sorted:
// what the state database's migration_transition table must hold.
func Pairs() []StatusPair {
	seen := map[StatusPair]bool{}
	var out []StatusPair
	for _, t := range Transitions() {
		p := StatusPair{t.From, t.To}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b StatusPair) int {
		if c := strings.Compare(string(a.From), string(b.From)); c != 0 {
			return c
		}
		return strings.Compare(string(a.To), string(b.To))
	})
	return out
}

// OperatorTarget returns the status an operator action moves a row in from
// to, or an error saying why the action does not apply.
func OperatorTarget(action string, from Status) (Status, error) {
	for _, t := range Transitions() {
		if t.Role == RoleOperator && t.Label == action && t.From == from {
			return t.To, nil
		}
	}
	var froms []string
	for _, t := range Transitions() {
		if t.Role == RoleOperator && t.Label == action {
			froms = append(froms, string(t.From))
		}
	}
	if len(froms) == 0 {
		return "", fmt.Errorf("unknown operator action %q", action)
	}
	return "", fmt.Errorf("cannot %s a row in status %q: %s applies only to %s", action, from, action, strings.Join(froms, ", "))
}

// Mermaid renders the transition table as a mermaid state diagram. The
// diagram in docs/state-machine.md is this output (a test keeps them equal).
func Mermaid() string {
	var b strings.Builder
	b.WriteString("stateDiagram-v2\n")
	ids := map[Status]string{}
	for _, s := range Statuses {
		id := strings.NewReplacer(" ", "").Replace(string(s))
		ids[s] = id
		fmt.Fprintf(&b, "    state \"%s\" as %s\n", s, id)
	}
	fmt.Fprintf(&b, "    [*] --> %s: plan\n", ids[Waiting])
	for _, t := range Transitions() {
		fmt.Fprintf(&b, "    %s --> %s: %s (%s)\n", ids[t.From], ids[t.To], t.Label, t.Role)
	}
	for _, s := range Statuses {
		if s.Terminal() {
			fmt.Fprintf(&b, "    %s --> [*]\n", ids[s])
		}
	}
	return b.String()
}
