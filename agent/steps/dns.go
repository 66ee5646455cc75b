package steps

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/fleetmigrate/fleetmigrate/agent"
	"github.com/fleetmigrate/fleetmigrate/dns"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// DNS is the DNS step, run by the agent on the DNS host for rows of every
// engine: it repoints the row's dns_name from the source host's target to
// the destination's, only if the name still holds the source's, and
// confirms the answer at the zone's servers.
type DNS struct {
	Updater *dns.Updater
	// Targets gives hosts' DNS targets over what their agents publish.
	Targets map[string]string
	// Allowed are the networks a published target must be in for a name
	// to be pointed at it (dns.allowed-targets): an agent's word alone
	// never moves a customer's name (dns.Targets.Vouched).
	Allowed []netip.Prefix
}

// Register adds the DNS handler (all engines).
func (d *DNS) Register(a *agent.Agent) { a.Handle(statemachine.RoleDNS, "", &dnsStep{d}) }

type dnsStep struct{ d *DNS }

// targets returns what the row's name must hold before (the source's
// target) and after (the destination's).
func (h *dnsStep) targets(ctx context.Context, job *agent.Job) (from, to dns.Target, err error) {
	row := &job.Row
	tg := dns.Targets{Config: h.d.Targets, Lookup: job.AgentOf, Allowed: h.d.Allowed}
	if from, err = tg.Of(ctx, row.Source); err == nil {
		to, err = tg.Vouched(ctx, row.Destination)
	}
	if errors.Is(err, dns.ErrNotAllowed) {
		return from, to, agent.Permanentf("DNS name %s not repointed, nothing was changed in DNS: %w", row.DNSName, err)
	}
	if errors.Is(err, dns.ErrNoTarget) {
		return from, to, agent.Permanent(err)
	}
	if err == nil && from.Equal(to) {
		err = agent.Permanentf("the source %s and the destination %s have the same DNS target (%s): nothing to repoint", row.Source, row.Destination, from)
	}
	return from, to, err
}

func (h *dnsStep) Run(ctx context.Context, job *agent.Job) (statemachine.Fields, error) {
	row := &job.Row
	if row.DNSName == "" {
		return statemachine.Fields{}, agent.Permanentf("row %d has no DNS name: it should have gone from Importing straight to To close source", row.ID)
	}
	from, to, err := h.targets(ctx, job)
	if err != nil {
		return statemachine.Fields{}, err
	}
	u := h.d.Updater
	res, err := u.Repoint(ctx, row.DNSName, from, to)
	if err != nil {
		return statemachine.Fields{}, h.failed(ctx, job, from, to, err)
	}
	if row.SwitchedAt.IsZero() {
		detail := fmt.Sprintf("DNS name %s now points at the destination %s (%s; was %s), TTL %d, at %s", row.DNSName, row.Destination, to, from, res.TTL, res.Zone.Primary)
		if !res.Changed {
			detail = fmt.Sprintf("DNS name %s already pointed at the destination %s (%s)", row.DNSName, row.Destination, to)
		}
		if err := job.Record(ctx, statemachine.Fields{Marks: []statemachine.Mark{statemachine.MarkSwitched}}, detail); err != nil {
			return statemachine.Fields{}, err
		}
	}
	if err := u.Confirm(ctx, row.DNSName, to); err != nil {
		var mm *dns.MismatchError
		if errors.As(err, &mm) {
			return statemachine.Fields{}, agent.Permanentf("after the update %v: someone changed it meanwhile; the name is recorded as switched", err)
		}
		return statemachine.Fields{}, err
	}
	if n := len(res.Zone.Secondaries); n > 0 {
		job.Note(ctx, "%s -> %s confirmed at the primary and %d secondaries", row.DNSName, to, n)
	}
	return statemachine.Fields{}, nil
}

// failed explains a failed repoint. A refused prerequisite is final; a
// failure whose outcome is unknown (no answer) is looked into: if the
// update landed, the switch is recorded before the step is retried.
func (h *dnsStep) failed(ctx context.Context, job *agent.Job, from, to dns.Target, err error) error {
	row := &job.Row
	var mm *dns.MismatchError
	if errors.As(err, &mm) {
		return agent.Permanentf("%v (the source %s's target); it should now point to %s (the destination %s's). Nothing was changed: "+
			"find out who changed the record, then retry or roll back", err, row.Source, to, row.Destination)
	}
	if !dns.IsTransient(err) {
		return agent.Permanent(err)
	}
	uctx, cancel := undoContext(ctx)
	defer cancel()
	if rec, lerr := h.d.Updater.Lookup(uctx, row.DNSName); lerr == nil && rec.Target.Equal(to) && row.SwitchedAt.IsZero() {
		if rerr := job.Record(uctx, statemachine.Fields{Marks: []statemachine.Mark{statemachine.MarkSwitched}},
			fmt.Sprintf("DNS name %s points at the destination %s (%s): the update landed although its answer was lost", row.DNSName, row.Destination, to)); rerr != nil {
			job.Log.Error("could not record the DNS switch", "err", rerr)
		}
	}
	return err
}

// Recover has nothing to undo: an update either landed (the retry finds
// the name at the destination and records it) or did not.
func (h *dnsStep) Recover(context.Context, *agent.Job) error { return nil }
