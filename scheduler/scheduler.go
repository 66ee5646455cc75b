package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/procid"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// Defaults for Config.
const (
	DefaultTick              = 10 * time.Second
	DefaultMaxPerSource      = 4
	DefaultMaxPerDestination = 8
	DefaultMaxAttempts       = 3
	DefaultWindow            = 15 * time.Minute
	DefaultMinSample         = 20
	DefaultWatchInterval     = 2 * time.Second
	// DefaultExtraCandidates: rows offered per source beyond its free slots,
	// so rows bound for a full destination can be skipped.
	DefaultExtraCandidates = 4
	// minLeaseTTL keeps the lease well above a slow tick.
	minLeaseTTL = 15 * time.Second
	// errorLogInterval: while the state database is unreachable, one log
	// line per interval.
	errorLogInterval = time.Minute
	// rowsMetricInterval: fleetmigrate_rows{status} needs a count of the
	// whole table (a quarter of a second at 800,000 rows on MariaDB), so it
	// is refreshed at most this often, with the alert gauges (stuck rows,
	// write-blocked databases, agents' heartbeats); the in-flight gauge is
	// exact at every tick.
	rowsMetricInterval = 30 * time.Second
	// wakeGap is the least time between ticks brought forward by wake-ups
	// (the figures in BENCHMARKS.md were measured with it).
	wakeGap = 50 * time.Millisecond
)

// Config configures a Scheduler. Zero values take the defaults above.
type Config struct {
	// MaxProcs is the number of migrations kept in flight (--max-procs).
	MaxProcs int
	// MaxPerSource and MaxPerDestination cap in-flight rows per host
	// (negative: no cap).
	MaxPerSource      int
	MaxPerDestination int
	Order             statemachine.PromoteOrder
	Tick              time.Duration
	// LeaseTTL defaults to three ticks (at least 15 s).
	LeaseTTL time.Duration
	// MaxAttempts is the attempt limit the rescuer applies.
	MaxAttempts int
	// MaxFailed trips the stop switch when this many rows are in a failed
	// status (0: off).
	MaxFailed int
	// MaxFailureRate trips the stop switch when failures ÷ (completed +
	// failed steps) within Window reaches it, over at least MinSample steps
	// (0: off).
	MaxFailureRate float64
	Window         time.Duration
	MinSample      int
	// WatchInterval is how often failures are checked (the trip reacts
	// within it) and the lease renewed when due.
	WatchInterval time.Duration
	// Holder names this scheduler in the lease, unique per process:
	// "host pid N (instance)".
	Holder string
	// Self is this process's identity, recorded in the lease; a lease held
	// by a process of this machine that Self can tell is gone is taken over
	// at once (zero: procid.Self()).
	Self procid.Identity
}

// Validate fills defaults and reports every bad value.
func (c *Config) Validate() error {
	var errs []string
	if c.MaxProcs <= 0 {
		errs = append(errs, fmt.Sprintf("--max-procs %d: want a positive number of migrations in flight", c.MaxProcs))
	}
	if c.MaxPerSource == 0 {
		c.MaxPerSource = DefaultMaxPerSource
	}
	if c.MaxPerDestination == 0 {
		c.MaxPerDestination = DefaultMaxPerDestination
	}
	if c.Order == "" {
		c.Order = statemachine.OrderPlan
	}
	if c.Order != statemachine.OrderPlan && c.Order != statemachine.OrderSize {
		errs = append(errs, fmt.Sprintf("--order %q: want plan or size", c.Order))
	}
	if c.Tick == 0 {
		c.Tick = DefaultTick
	}
	if c.Tick < 10*time.Millisecond {
		errs = append(errs, fmt.Sprintf("--tick %s: want at least 10ms", c.Tick))
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = max(3*c.Tick, minLeaseTTL)
	}
	if c.LeaseTTL < 2*c.Tick {
		errs = append(errs, fmt.Sprintf("lease %s: want at least two ticks (%s)", c.LeaseTTL, 2*c.Tick))
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.MaxAttempts < 1 || c.MaxAttempts > 100 {
		errs = append(errs, fmt.Sprintf("--max-attempts %d: want 1 to 100", c.MaxAttempts))
	}
	if c.MaxFailed < 0 {
		errs = append(errs, fmt.Sprintf("--max-failed %d: want 0 (off) or more", c.MaxFailed))
	}
	if c.MaxFailureRate < 0 || c.MaxFailureRate > 1 {
		errs = append(errs, fmt.Sprintf("--max-failure-rate %g: want a fraction from 0 (off) to 1, e.g. 0.2", c.MaxFailureRate))
	}
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.Window < time.Second {
		errs = append(errs, fmt.Sprintf("--window %s: want at least 1s", c.Window))
	}
	if c.MinSample == 0 {
		c.MinSample = DefaultMinSample
	}
	if c.MinSample < 1 {
		errs = append(errs, fmt.Sprintf("--min-sample %d: want at least 1", c.MinSample))
	}
	if c.WatchInterval == 0 {
		c.WatchInterval = min(DefaultWatchInterval, c.Tick)
	}
	if c.Holder == "" {
		errs = append(errs, "holder is required")
	}
	if c.Self == (procid.Identity{}) {
		c.Self = procid.Self()
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

func (c Config) caps() Caps {
	return Caps{PerSource: max(c.MaxPerSource, 0), PerDestination: max(c.MaxPerDestination, 0)}
}

// TrippedError: the scheduler set the stop switch because failures crossed
// a threshold.
type TrippedError struct{ Reason string }

func (e *TrippedError) Error() string { return "stop switch tripped: " + e.Reason }

// Scheduler keeps MaxProcs migrations in flight. One runs at a time, holding
// the scheduler lease.
type Scheduler struct {
	store statemachine.Store
	cfg   Config
	log   *slog.Logger
	m     *Metrics

	lastSource  string    // rotation point of the round-robin
	stopped     bool      // the stop switch was set at the last look
	resumedAt   time.Time // when this scheduler saw the switch cleared
	renewedAt   time.Time
	failingFrom time.Time // when the state database started failing
	lastErrLog  time.Time
	suppressed  int
	rowsAt      time.Time // when fleetmigrate_rows was last refreshed
}

// New validates cfg and returns a scheduler. m may be nil.
func New(store statemachine.Store, cfg Config, log *slog.Logger, m *Metrics) (*Scheduler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	return &Scheduler{store: store, cfg: cfg, log: log, m: m}, nil
}

// Config returns the validated configuration.
func (s *Scheduler) Config() Config { return s.cfg }

// Run takes the scheduler lease and keeps migrations in flight until ctx
// ends (then it releases the lease and returns nil: agents finish what is in
// flight), the stop switch trips (*TrippedError), or another scheduler holds
// or takes the lease (*statemachine.LeaseHeldError).
func (s *Scheduler) Run(ctx context.Context) error {
	if err := s.acquire(ctx); err != nil {
		return err
	}
	defer s.release(ctx)
	s.log.Info("scheduler started", "holder", s.cfg.Holder, "max_procs", s.cfg.MaxProcs,
		"max_per_source", s.cfg.MaxPerSource, "max_per_destination", s.cfg.MaxPerDestination,
		"order", s.cfg.Order, "tick", s.cfg.Tick.String(), "lease", s.cfg.LeaseTTL.String())
	if s.m != nil {
		s.m.MaxProcs.Set(float64(s.cfg.MaxProcs))
	}

	tick := time.NewTimer(0)
	defer tick.Stop()
	next := time.Now()
	// A store that announces freed slots (PostgreSQL LISTEN/NOTIFY) brings
	// the next tick forward, at most one tick per wakeGap.
	var wake <-chan struct{}
	if w, ok := s.store.(statemachine.Waker); ok {
		ch, unsubscribe := w.WakeScheduler()
		defer unsubscribe()
		wake = ch
	}
	gap := min(wakeGap, s.cfg.Tick)
	var lastTick time.Time
	watch := time.NewTicker(s.cfg.WatchInterval)
	defer watch.Stop()
	backoff := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
			if backoff > 0 {
				continue
			}
			if due := lastTick.Add(gap); due.Before(next) {
				next = due
				tick.Reset(max(time.Until(due), 0))
			}
		case <-tick.C:
			lastTick = time.Now()
			_, err := s.Tick(ctx)
			if ctx.Err() != nil {
				return nil
			}
			var held *statemachine.LeaseHeldError
			if errors.As(err, &held) {
				return err
			}
			if err != nil {
				backoff = min(max(2*backoff, time.Second), s.cfg.Tick)
				s.dbError(err, backoff)
				tick.Reset(backoff)
				next = time.Now().Add(backoff)
				continue
			}
			backoff = 0
			s.dbRecovered()
			tick.Reset(s.cfg.Tick)
			next = time.Now().Add(s.cfg.Tick)
		case <-watch.C:
			if err := s.watch(ctx); err != nil {
				var tripped *TrippedError
				var held *statemachine.LeaseHeldError
				if errors.As(err, &tripped) || errors.As(err, &held) {
					return err
				}
				if ctx.Err() == nil {
					s.dbError(err, s.cfg.WatchInterval)
				}
			}
		}
	}
}

// HeldError: another scheduler holds the lease and may be alive, so this
// one does not start. It unwraps to the store's *statemachine.LeaseHeldError.
type HeldError struct {
	Lease statemachine.Lease
	// Alive says what is known of the holder's process ("pid 812 still
	// runs", "it ran on machine ops-2, not this one").
	Alive string
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("the scheduler lease is held by %s since %s, until %s: %s", e.Lease.Holder,
		e.Lease.Since.UTC().Format(time.RFC3339), e.Lease.ExpiresAt.UTC().Format(time.RFC3339), e.Alive)
}

func (e *HeldError) Unwrap() error { return &statemachine.LeaseHeldError{Lease: e.Lease} }

// holderGone judges the process holding lease from this one (procid):
// gone only when that is certain; why says what is known either way.
func (s *Scheduler) holderGone(lease statemachine.Lease) (bool, string) {
	id, ok := procid.Parse(lease.Process)
	if !ok {
		return false, "its process cannot be checked from here (an earlier version's lease records none)"
	}
	return id.Gone(s.cfg.Self)
}

// claim is this scheduler's request for the lease.
func (s *Scheduler) claim() statemachine.LeaderClaim {
	return statemachine.LeaderClaim{Holder: s.cfg.Holder, Process: s.cfg.Self.String(), TTL: s.cfg.LeaseTTL, MaxProcs: s.cfg.MaxProcs}
}

// acquire takes the lease at start. A lease held by a scheduler of this
// machine whose process is gone (a crash: systemd restarts us) is taken
// over at once; one held by a process that may be alive refuses the start
// with a *HeldError.
func (s *Scheduler) acquire(ctx context.Context) error {
	c := s.claim()
	_, err := s.store.AcquireLeader(ctx, c)
	var held *statemachine.LeaseHeldError
	if errors.As(err, &held) {
		if gone, why := s.holderGone(held.Lease); gone {
			s.log.Warn("the scheduler lease is held by a scheduler of this machine that is gone; taking over at once",
				"previous", held.Lease.Holder, "why", why, "its_lease_until", held.Lease.ExpiresAt.UTC().Format(time.RFC3339))
			c.TakeOver = held.Lease.Holder
			_, err = s.store.AcquireLeader(ctx, c)
		}
		// Refused (another scheduler took it meanwhile, if the dead one's
		// was taken over): say what is known of the holder now.
		if errors.As(err, &held) {
			_, why := s.holderGone(held.Lease)
			return &HeldError{Lease: held.Lease, Alive: why}
		}
	}
	if err != nil {
		return err
	}
	s.renewedAt = time.Now()
	if s.m != nil {
		s.m.Leader.Set(1)
	}
	return nil
}

// release gives the lease up so a new scheduler can start at once. It uses
// its own short deadline: the run's context is usually cancelled by now.
func (s *Scheduler) release(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 500*time.Millisecond)
	defer cancel()
	if err := s.store.ReleaseLeader(ctx, s.cfg.Holder); err != nil {
		s.log.Warn("could not release the scheduler lease; it expires by itself", "err", err, "lease", s.cfg.LeaseTTL.String())
	}
	if s.m != nil {
		s.m.Leader.Set(0)
	}
}

// renew extends the lease; if it lapsed (the state database was away) and
// nobody took it, it is taken again; if somebody did, that is final.
func (s *Scheduler) renew(ctx context.Context) error {
	_, err := s.store.RenewLeader(ctx, s.cfg.Holder, s.cfg.LeaseTTL)
	if errors.Is(err, statemachine.ErrLeaseLost) {
		_, err = s.store.AcquireLeader(ctx, s.claim())
		var held *statemachine.LeaseHeldError
		if errors.As(err, &held) {
			if s.m != nil {
				s.m.Leader.Set(0)
			}
			return fmt.Errorf("lost the scheduler lease: %w", err)
		}
		if err == nil {
			s.log.Warn("scheduler lease had lapsed and was taken again", "holder", s.cfg.Holder)
		}
	}
	if err != nil {
		return err
	}
	s.renewedAt = time.Now()
	return nil
}

// TickResult says what one tick did.
type TickResult struct {
	Promoted int
	InFlight int
	Rescued  int
	Stopped  statemachine.StopSwitch
}

// Tick renews the lease, rescues expired rows, promotes up to MaxProcs −
// in-flight rows fairly, and refreshes the metrics.
func (s *Scheduler) Tick(ctx context.Context) (TickResult, error) {
	start := time.Now()
	var res TickResult
	if err := s.renew(ctx); err != nil {
		return res, err
	}
	rescued, err := s.store.Rescue(ctx, s.cfg.MaxAttempts)
	if err != nil {
		return res, err
	}
	res.Rescued = len(rescued)
	for _, r := range rescued {
		s.log.Warn("took back a row whose agent's lease expired", "row", r.ID, "from", r.From, "to", r.To, "owner", r.Owner)
	}
	req := statemachine.PromoteRequest{
		Holder: s.cfg.Holder, Actor: "scheduler " + s.cfg.Holder, MaxInFlight: s.cfg.MaxProcs,
		MaxPerSource: max(s.cfg.MaxPerSource, 0), MaxPerDestination: max(s.cfg.MaxPerDestination, 0),
		ExtraCandidates: DefaultExtraCandidates, Order: s.cfg.Order, After: s.lastSource,
	}
	after := s.lastSource
	pr, err := s.store.PromoteFair(ctx, req, func(st statemachine.PromoteState) []int64 {
		ids, last := Choose(st, s.cfg.caps(), after)
		after = last
		return ids
	})
	if err != nil {
		// Fenced out between renew and promote (ErrLeaseLost) or the state
		// database failed: the next tick's renew decides what follows.
		return res, err
	}
	if len(pr.Promoted) > 0 {
		s.lastSource = after
	}
	res.Promoted, res.InFlight, res.Stopped = len(pr.Promoted), pr.InFlight, pr.Stopped
	if err := s.noteStopSwitch(ctx, pr.Stopped); err != nil {
		return res, err
	}
	if res.Promoted > 0 {
		s.log.Info("promoted", "rows", res.Promoted, "in_flight", res.InFlight, "max_procs", s.cfg.MaxProcs)
	}
	if s.m != nil {
		// Read first, then set every gauge together, so a scrape sees one
		// tick's numbers.
		var counts map[statemachine.Status]int
		var health *healthReading
		if time.Since(s.rowsAt) >= rowsMetricInterval {
			if counts, err = s.store.Counts(ctx); err != nil {
				return res, err
			}
			if health, err = s.readHealth(ctx); err != nil {
				return res, err
			}
			s.rowsAt = time.Now()
		}
		s.m.Promoted.Add(float64(res.Promoted))
		s.m.Rescued.Add(float64(res.Rescued))
		s.m.InFlight.Set(float64(res.InFlight))
		s.m.StopSwitch.Set(boolGauge(res.Stopped.Set))
		if counts != nil {
			for _, st := range statemachine.Statuses {
				s.m.Rows.WithLabelValues(string(st)).Set(float64(counts[st]))
			}
		}
		if health != nil {
			s.m.LeaseExpired.Set(float64(health.LeaseExpired))
			s.m.WriteBlocked.Set(float64(health.WriteBlocked))
			s.m.WriteBlockedMax.Set(health.WriteBlockedMax.Seconds())
			s.m.AgentLastSeen.Reset()
			for _, a := range health.agents {
				s.m.AgentLastSeen.WithLabelValues(a.Host).Set(float64(a.LastSeen.Unix()))
			}
		}
		s.m.TickSeconds.Observe(time.Since(start).Seconds())
	}
	return res, nil
}

// healthReading is what the alert gauges show: stuck rows, write-blocked
// databases and the agents' heartbeats.
type healthReading struct {
	HealthCounts
	agents []statemachine.Agent
}

// readHealth reads the rows in flight (at most MaxProcs plus the failed
// ones) and the agent registry, with the rows' counts (every
// rowsMetricInterval).
func (s *Scheduler) readHealth(ctx context.Context) (*healthReading, error) {
	rows, err := s.store.List(ctx, statemachine.Filter{Statuses: statemachine.InFlightStatuses()})
	if err != nil {
		return nil, err
	}
	agents, err := s.store.Agents(ctx, 0)
	if err != nil {
		return nil, err
	}
	now, err := s.store.Now(ctx)
	if err != nil {
		return nil, err
	}
	return &healthReading{HealthCounts: Health(rows, now), agents: agents}, nil
}

// HealthCounts is what Health finds in the rows in flight.
type HealthCounts struct {
	LeaseExpired    int
	WriteBlocked    int
	WriteBlockedMax time.Duration
}

// Health counts, at now, rows in a working status whose lease expired and
// databases still write-blocked at their source.
func Health(rows []statemachine.Migration, now time.Time) HealthCounts {
	var h HealthCounts
	for _, m := range rows {
		if m.Status.Working() && !m.LeaseUntil.IsZero() && m.LeaseUntil.Before(now) {
			h.LeaseExpired++
		}
		if !m.BlockedAt.IsZero() && m.SwitchedAt.IsZero() && m.UnblockedAt.IsZero() {
			h.WriteBlocked++
			h.WriteBlockedMax = max(h.WriteBlockedMax, now.Sub(m.BlockedAt))
		}
	}
	return h
}

// noteStopSwitch logs changes of the stop switch and remembers when it was
// cleared (failures before that do not count toward the rate).
func (s *Scheduler) noteStopSwitch(ctx context.Context, sw statemachine.StopSwitch) error {
	switch {
	case sw.Set && !s.stopped:
		s.log.Warn("stop switch is set: promoting nothing until `migrate resume`",
			"by", sw.By, "since", sw.Since.Format(time.RFC3339), "reason", sw.Reason)
	case !sw.Set && s.stopped:
		now, err := s.store.Now(ctx)
		if err != nil {
			return err
		}
		s.resumedAt = now
		s.log.Info("stop switch cleared: promoting again")
	}
	s.stopped = sw.Set
	return nil
}

// watch runs every WatchInterval: it renews the lease when a third of it has
// passed and checks the failure thresholds.
func (s *Scheduler) watch(ctx context.Context) error {
	if time.Since(s.renewedAt) >= s.cfg.LeaseTTL/3 {
		if err := s.renew(ctx); err != nil {
			return err
		}
	}
	if s.stopped || (s.cfg.MaxFailed == 0 && s.cfg.MaxFailureRate == 0) {
		return nil
	}
	reason, err := s.CheckFailures(ctx)
	if err != nil || reason == "" {
		return err
	}
	sw, err := s.store.SetStop(ctx, "scheduler "+s.cfg.Holder+" (automatic)", reason)
	if err != nil {
		return fmt.Errorf("trip the stop switch (%s): %w", reason, err)
	}
	s.stopped = true
	if s.m != nil {
		s.m.StopSwitch.Set(1)
	}
	s.log.Error("stop switch tripped: promoting nothing until `migrate resume`", "reason", sw.Reason, "by", sw.By)
	return &TrippedError{Reason: sw.Reason}
}

// CheckFailures returns why the failure thresholds are crossed, or "".
func (s *Scheduler) CheckFailures(ctx context.Context) (string, error) {
	if s.cfg.MaxFailed > 0 {
		var failed []statemachine.Status
		for _, st := range statemachine.Steps {
			failed = append(failed, st.Failed)
		}
		n, err := s.store.CountStatuses(ctx, failed...)
		if err != nil {
			return "", err
		}
		if n >= s.cfg.MaxFailed {
			reason := fmt.Sprintf("%d rows are in a failed status (--max-failed %d)", n, s.cfg.MaxFailed)
			groups, err := s.store.FailedByError(ctx, 1)
			if err != nil {
				return "", err
			}
			if len(groups) > 0 {
				reason += fmt.Sprintf("; most common error (%d rows): %s", groups[0].Count, groups[0].Error)
			}
			return reason, nil
		}
	}
	if s.cfg.MaxFailureRate > 0 {
		window := s.cfg.Window
		if !s.resumedAt.IsZero() {
			now, err := s.store.Now(ctx)
			if err != nil {
				return "", err
			}
			window = min(window, now.Sub(s.resumedAt))
		}
		st, err := s.store.StepStats(ctx, window)
		if err != nil {
			return "", err
		}
		sample := st.Completions + st.Failures
		if sample >= s.cfg.MinSample && float64(st.Failures) >= s.cfg.MaxFailureRate*float64(sample) {
			return fmt.Sprintf("%d of the last %d steps failed within %s (%.0f%%, --max-failure-rate %g); most common error (%d times): %s",
				st.Failures, sample, s.cfg.Window, 100*float64(st.Failures)/float64(sample), s.cfg.MaxFailureRate, st.TopErrorCount, st.TopError), nil
		}
	}
	return "", nil
}

// dbError logs a failed tick at most once per minute, counting the rest.
func (s *Scheduler) dbError(err error, retry time.Duration) {
	if s.m != nil {
		s.m.TickErrors.Inc()
	}
	now := time.Now()
	if s.failingFrom.IsZero() {
		s.failingFrom = now
	}
	if now.Sub(s.lastErrLog) < errorLogInterval {
		s.suppressed++
		return
	}
	s.log.Error("state database unavailable; promoting nothing until it answers, retrying",
		"err", err, "failing_for", now.Sub(s.failingFrom).Round(time.Second).String(),
		"retry_in", retry.String(), "suppressed_errors", s.suppressed)
	s.lastErrLog, s.suppressed = now, 0
}

func (s *Scheduler) dbRecovered() {
	if s.failingFrom.IsZero() {
		return
	}
	s.log.Info("state database answers again", "was_failing_for", time.Since(s.failingFrom).Round(time.Second).String())
	s.failingFrom, s.lastErrLog, s.suppressed = time.Time{}, time.Time{}, 0
}
