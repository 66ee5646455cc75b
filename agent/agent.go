package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/procid"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// Defaults for Config.
const (
	DefaultPollInterval      = 60 * time.Second
	DefaultLease             = 60 * time.Second
	DefaultHeartbeatInterval = 30 * time.Second
	DefaultShutdownTimeout   = 5 * time.Minute
	DefaultStopGrace         = 30 * time.Second
	DefaultMaxAttempts       = 3
	DefaultProgressInterval  = 10 * time.Second
	DefaultRetryBase         = 2 * time.Second
	DefaultRetryMax          = 2 * time.Minute
	// jitter spreads each poll interval uniformly over ±50%.
	jitter = 0.5
	// errorLogInterval: while the state database fails, one log line per
	// interval and role.
	errorLogInterval = time.Minute
)

// DefaultMaxJobs is how many steps of each role run at once: dumps and
// imports load the local database server, DNS updates and closes hardly.
// A sync step holds its slot while its row syncs: those are the streams a
// destination follows at once.
var DefaultMaxJobs = map[statemachine.Role]int{
	statemachine.RoleSync: 16, statemachine.RoleCutover: 4,
	statemachine.RoleDump: 2, statemachine.RoleImport: 2, statemachine.RoleRollback: 2,
	statemachine.RoleClose: 8, statemachine.RoleDNS: 16,
}

// Config configures an Agent. Zero values take the defaults above.
type Config struct {
	// Host is the host ID this agent serves (the source and destination
	// columns of its rows).
	Host  string
	Roles []statemachine.Role
	// PollInterval is the mean time between polls when there is no work;
	// each interval is drawn uniformly from ±50% around it.
	PollInterval time.Duration
	// Lease is how long a claim holds without renewal; it is renewed every
	// third of it while a step runs.
	Lease             time.Duration
	HeartbeatInterval time.Duration
	// ShutdownTimeout is how long a graceful stop waits for running steps
	// before cancelling them.
	ShutdownTimeout time.Duration
	// StopGrace bounds the rest of a stop: once running steps are
	// cancelled (after ShutdownTimeout, or by CancelSteps), how long they
	// get to undo their work and record their end before Run returns
	// anyway (a state database or server that does not answer must not
	// hold the process). A stop takes at most ShutdownTimeout + StopGrace.
	StopGrace time.Duration
	// MaxJobs caps concurrent steps per role (DefaultMaxJobs for missing roles).
	MaxJobs map[statemachine.Role]int
	// MaxAttempts is the attempt limit for transient failures.
	MaxAttempts int
	// ProgressInterval is the least time between progress notes of a step.
	ProgressInterval time.Duration
	// RetryBase and RetryMax bound the exponential backoff between retries.
	RetryBase, RetryMax time.Duration
	// Version, DNSTarget, Address and Endpoints are published in the agent
	// registry. Endpoints say how other agents reach this host's database
	// servers, by engine (the source checks the destination through them,
	// and rollback drops an import there).
	Version   string
	DNSTarget string
	Address   string
	Endpoints map[statemachine.Engine]string
	// AskTimeout bounds how long a step waits for a peer's agent to answer
	// its ask (DefaultAskTimeout).
	AskTimeout time.Duration
}

// Validate fills defaults and reports bad values.
func (c *Config) Validate() error {
	var errs []string
	c.Host = strings.ToLower(strings.TrimSpace(c.Host))
	if c.Host == "" {
		errs = append(errs, "the host ID is empty: set host in the configuration or --host")
	}
	if len(c.Roles) == 0 {
		errs = append(errs, "no roles: give --roles (dump, import, close, rollback; dns on the DNS host)")
	}
	for _, r := range c.Roles {
		if !slices.Contains(statemachine.AgentRoles, r) {
			errs = append(errs, fmt.Sprintf("unknown role %q", r))
		}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.PollInterval, DefaultPollInterval)
	def(&c.Lease, DefaultLease)
	def(&c.HeartbeatInterval, DefaultHeartbeatInterval)
	def(&c.ShutdownTimeout, DefaultShutdownTimeout)
	def(&c.StopGrace, DefaultStopGrace)
	def(&c.ProgressInterval, DefaultProgressInterval)
	def(&c.RetryBase, DefaultRetryBase)
	def(&c.RetryMax, DefaultRetryMax)
	def(&c.AskTimeout, DefaultAskTimeout)
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	for name, d := range map[string]time.Duration{"poll interval": c.PollInterval, "lease": c.Lease, "heartbeat interval": c.HeartbeatInterval,
		"shutdown timeout": c.ShutdownTimeout, "stop grace": c.StopGrace, "retry backoff": c.RetryBase} {
		if d <= 0 {
			errs = append(errs, fmt.Sprintf("%s %s: want a positive duration", name, d))
		}
	}
	if c.Lease > 0 && c.Lease < 3*time.Millisecond {
		errs = append(errs, "lease: want at least 3ms")
	}
	if c.MaxAttempts < 1 {
		errs = append(errs, fmt.Sprintf("max attempts %d: want at least 1", c.MaxAttempts))
	}
	jobs := map[statemachine.Role]int{}
	for _, r := range c.Roles {
		n, ok := c.MaxJobs[r]
		if !ok {
			n = DefaultMaxJobs[r]
		}
		if n < 1 {
			errs = append(errs, fmt.Sprintf("max jobs for %s: %d, want at least 1", r, n))
		}
		jobs[r] = n
	}
	c.MaxJobs = jobs
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// Agent is one migrate-agent process: it serves one host ID with its roles.
type Agent struct {
	store    statemachine.Store
	cfg      Config
	log      *slog.Logger
	metrics  *Metrics
	handlers map[statemachine.Role]map[statemachine.Engine]Handler

	instance string
	self     procid.Identity
	owner    string // written into claimed rows: "host/pid N (instance)"
	started  time.Time
	// gone are the owners of this host's rows that are certainly dead
	// (the process this one replaced after a crash): their rows are taken
	// back at once instead of after their lease.
	gone []string

	mu        sync.Mutex
	running   map[statemachine.Role]int
	current   map[int64]string           // the rows of running steps, described
	recovered map[statemachine.Role]bool // no rows of a dead process left
	warned    map[string]bool
	hardStop  func(cause error) // cancels every running step
	cancelled chan struct{}     // closed when running steps are cancelled
	jobs      sync.WaitGroup
	lastError map[string]time.Time
	services  []service
	answers   map[string]AskHandler // by action/engine
}

// service is a background loop of the agent (Service).
type service struct {
	name string
	run  func(ctx context.Context, log *slog.Logger)
}

// New returns an agent for store with cfg; register handlers before Run.
func New(store statemachine.Store, cfg Config, log *slog.Logger, m *Metrics) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	self := procid.Self()
	instance := hex.EncodeToString(b)
	a := &Agent{
		store: store, cfg: cfg, log: log.With("host", cfg.Host), metrics: m,
		handlers: map[statemachine.Role]map[statemachine.Engine]Handler{},
		instance: instance, self: self,
		owner:   ownerName(cfg.Host, self.PID, instance),
		running: map[statemachine.Role]int{}, current: map[int64]string{}, recovered: map[statemachine.Role]bool{}, warned: map[string]bool{},
		lastError: map[string]time.Time{}, cancelled: make(chan struct{}),
	}
	return a, nil
}

// Service registers a background loop that runs while the agent runs
// (register before Run): run is called once with a context that ends when
// the agent stops (before its steps drain) and must return then.
func (a *Agent) Service(name string, run func(ctx context.Context, log *slog.Logger)) {
	a.services = append(a.services, service{name, run})
}

// Handle registers the handler of role for rows of engine ("" for every
// engine, as the DNS step does).
func (a *Agent) Handle(role statemachine.Role, engine statemachine.Engine, h Handler) {
	if a.handlers[role] == nil {
		a.handlers[role] = map[statemachine.Engine]Handler{}
	}
	a.handlers[role][engine] = h
}

func (a *Agent) handler(role statemachine.Role, engine statemachine.Engine) (Handler, bool) {
	if h, ok := a.handlers[role][engine]; ok {
		return h, true
	}
	h, ok := a.handlers[role][""]
	return h, ok
}

// engines lists the engines role has handlers for; nil means all.
func (a *Agent) engines(role statemachine.Role) []statemachine.Engine {
	if _, any := a.handlers[role][""]; any {
		return nil
	}
	var out []statemachine.Engine
	for e := range a.handlers[role] {
		out = append(out, e)
	}
	slices.Sort(out)
	return out
}

// Store is the state store the agent works with.
func (a *Agent) Store() statemachine.Store { return a.store }

// Host is the host ID the agent serves.
func (a *Agent) Host() string { return a.cfg.Host }

// Owner is what this agent writes into the rows it claims.
func (a *Agent) Owner() string { return a.owner }

// Run registers the agent for its host ID, recovers rows an earlier process
// left behind, then polls, claims and works until ctx ends. Then it stops
// claiming, waits up to ShutdownTimeout for running steps, cancels the rest
// (their rows go back to their queued status) and deregisters. The stop
// takes at most ShutdownTimeout + StopGrace (StopGrace after CancelSteps):
// steps that have not ended by then are left as a crash would leave them,
// with the registry entry, so that the next start takes their rows back at
// once; Run says which.
//
// It returns a *statemachine.AgentHeldError if another live process serves
// the host, and an error if one takes the host over while this one runs.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.register(ctx); err != nil {
		return err
	}
	a.log.Info("agent started", "roles", roleList(a.cfg.Roles), "instance", a.instance, "owner", a.owner,
		"poll_interval", a.cfg.PollInterval.String(), "lease", a.cfg.Lease.String(), "max_jobs", fmt.Sprint(a.cfg.MaxJobs))

	jobsCtx, hardStop := context.WithCancelCause(context.WithoutCancel(ctx))
	var once sync.Once
	a.mu.Lock()
	a.hardStop = func(cause error) {
		hardStop(cause)
		once.Do(func() { close(a.cancelled) })
	}
	a.mu.Unlock()
	defer hardStop(nil)

	hbCtx, stopHB := context.WithCancel(context.WithoutCancel(ctx))
	takenOver := make(chan error, 1)
	go func() { takenOver <- a.heartbeatLoop(hbCtx) }()

	pollCtx, stopPolling := context.WithCancel(ctx)
	var services sync.WaitGroup
	for _, sv := range a.services {
		services.Go(func() { sv.run(pollCtx, a.log.With("service", sv.name)) })
	}
	// Peers' asks are answered until the steps have drained: a peer's step
	// may wait on this host's answer to undo its work.
	askCtx, stopAnswering := context.WithCancel(jobsCtx)
	var answering sync.WaitGroup
	answering.Go(func() { a.answerLoop(askCtx) })
	var pollers sync.WaitGroup
	for _, role := range a.cfg.Roles {
		pollers.Add(1)
		go func() {
			defer pollers.Done()
			a.pollLoop(pollCtx, jobsCtx, role)
		}()
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-takenOver:
		a.log.Error("another agent process took this host over; stopping at once", "err", runErr)
		a.cancelSteps(errTakenOver)
	}
	stopping := time.Now()
	stopped := make(chan struct{})
	go func() {
		stopPolling()
		pollers.Wait()
		services.Wait()
		a.drain()
		close(stopped)
	}()
	left := a.waitStopped(stopping, stopped)
	stopAnswering()
	answering.Wait()
	stopHB()
	if runErr == nil {
		runErr = <-takenOver
	}
	switch {
	case len(left) > 0:
		// As after a crash: the registry entry stays, so that the next
		// start knows this process is gone and takes these rows back at
		// once (recovering them: writes blocked by a step are restored).
		a.log.Warn("stopped before every step ended: their undo or their last write did not finish within the stop grace "+
			"(a server or the state database not answering). Their rows keep this process's claim: the next start of this agent "+
			"takes them back at once and recovers them; otherwise the scheduler does when their lease expires",
			"rows", strings.Join(left, "; "), "stop_took", time.Since(stopping).Round(time.Millisecond).String(),
			"shutdown_timeout", a.cfg.ShutdownTimeout.String(), "stop_grace", a.cfg.StopGrace.String())
	case runErr == nil:
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if err := a.store.Deregister(dctx, a.cfg.Host, a.instance); err != nil {
			a.log.Warn("could not remove this agent from the registry; its entry goes stale by itself", "err", err)
		}
	}
	a.log.Info("agent stopped", "stop_took", time.Since(stopping).Round(time.Millisecond).String())
	return runErr
}

// CancelSteps cancels every running step now (a second signal during a
// graceful stop): their handlers undo their work and the rows go back to
// their queued status.
func (a *Agent) CancelSteps() { a.cancelSteps(errShutdown) }

func (a *Agent) cancelSteps(cause error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.hardStop != nil {
		a.hardStop(cause)
	}
}

var (
	errShutdown  = errors.New("agent shutting down")
	errTakenOver = errors.New("another agent process took this host over")
	errLeaseLost = errors.New("lease lost")
)

// drain waits up to ShutdownTimeout for running steps, then cancels them
// and waits for them to end.
func (a *Agent) drain() {
	done := make(chan struct{})
	go func() { a.jobs.Wait(); close(done) }()
	if n := a.runningTotal(); n > 0 {
		a.log.Info("waiting for running steps before stopping", "steps", n, "timeout", a.cfg.ShutdownTimeout.String())
	}
	select {
	case <-done:
		return
	case <-a.cancelled:
	case <-time.After(a.cfg.ShutdownTimeout):
		a.log.Warn("shutdown timeout reached: cancelling running steps; their rows go back to their queued status",
			"steps", a.runningTotal(), "timeout", a.cfg.ShutdownTimeout.String())
		a.CancelSteps()
	}
	<-done
}

// waitStopped waits for the stop sequence (stopped) within its bound:
// ShutdownTimeout + StopGrace from since, or StopGrace from the moment
// the running steps were cancelled, whichever comes first. It returns the
// rows of the steps still running when the bound passed (none: stopped).
func (a *Agent) waitStopped(since time.Time, stopped <-chan struct{}) []string {
	bound := time.NewTimer(a.cfg.ShutdownTimeout + a.cfg.StopGrace)
	defer bound.Stop()
	cancelled := a.cancelled
	for {
		select {
		case <-stopped:
			return nil
		case <-cancelled:
			cancelled = nil
			if rest := time.Until(since.Add(a.cfg.ShutdownTimeout + a.cfg.StopGrace)); rest > a.cfg.StopGrace {
				bound.Reset(a.cfg.StopGrace)
			}
			continue
		case <-bound.C:
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		left := make([]string, 0, len(a.current))
		for _, id := range slices.Sorted(maps.Keys(a.current)) {
			left = append(left, a.current[id])
		}
		if len(left) == 0 {
			left = []string{"no step, but the stop did not finish (a poll's recovery or a service)"}
		}
		return left
	}
}

func (a *Agent) runningTotal() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, v := range a.running {
		n += v
	}
	return n
}

func (a *Agent) registration() statemachine.Agent {
	return statemachine.Agent{
		Host: a.cfg.Host, Roles: a.cfg.Roles, Version: a.cfg.Version, DNSTarget: a.cfg.DNSTarget, Address: a.cfg.Address,
		Endpoints: a.cfg.Endpoints, PID: a.self.PID, Machine: a.self.Machine, Process: a.self.String(), Instance: a.instance,
		Jobs: a.runningTotal(), StartedAt: a.started,
	}
}

// ownerName is what a process writes into the rows it claims: the host,
// its pid, and the start of its instance ID, which tells apart two
// processes with one pid (a container's agent is pid 1 every time).
func ownerName(host string, pid int, instance string) string {
	return fmt.Sprintf("%s/pid %d (%s)", host, pid, instance[:min(8, len(instance))])
}

// register takes the host ID. A fresh entry of another process is refused,
// unless that process ran on this machine and is certainly gone (a restart
// after a crash): it is taken over at once, and so are the rows it held
// (Agent.gone).
func (a *Agent) register(ctx context.Context) error {
	a.started = time.Now()
	stale := 2*a.cfg.HeartbeatInterval + 10*time.Second
	takeOver := ""
	cur, ok, err := a.store.AgentFor(ctx, a.cfg.Host)
	if err != nil {
		return err
	}
	if ok && cur.Instance != a.instance {
		if id, known := procid.Parse(cur.Process); known {
			if gone, why := id.Gone(a.self); gone {
				a.log.Info("taking over from a previous agent process of this machine that is gone; its rows are taken back at once",
					"previous_pid", cur.PID, "previous_instance", cur.Instance, "why", why)
				takeOver = cur.Instance
				a.gone = []string{ownerName(a.cfg.Host, cur.PID, cur.Instance)}
			}
		} else if cur.Machine == a.self.Machine && !processAlive(cur.PID) {
			// An earlier version's entry records no identity: its pid alone
			// says it is gone; its rows wait out their lease.
			a.log.Info("taking over from a previous agent process of this machine that is gone", "previous_pid", cur.PID, "previous_instance", cur.Instance)
			takeOver = cur.Instance
		}
	}
	return a.store.RegisterAgent(ctx, a.registration(), stale, takeOver)
}

// processAlive reports whether a process with pid exists on this machine.
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// heartbeatLoop refreshes the registry entry; it returns when ctx ends
// (nil) or another process has taken the host over (an error).
func (a *Agent) heartbeatLoop(ctx context.Context) error {
	t := time.NewTicker(a.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		err := a.store.Heartbeat(ctx, a.registration())
		switch {
		case errors.Is(err, statemachine.ErrLeaseLost):
			return err
		case err != nil && ctx.Err() == nil:
			a.stateError("heartbeat", err)
		case err == nil:
			a.stateOK("heartbeat")
		}
	}
}

// stateError logs a state database failure at most once a minute per kind.
func (a *Agent) stateError(kind string, err error) {
	if a.metrics != nil {
		a.metrics.StateErrors.Inc()
	}
	a.mu.Lock()
	last := a.lastError[kind]
	due := time.Since(last) >= errorLogInterval
	if due {
		a.lastError[kind] = time.Now()
	}
	a.mu.Unlock()
	if due {
		a.log.Error("state database call failed; retrying with backoff", "call", kind, "err", err)
	}
}

func (a *Agent) stateOK(kind string) {
	a.mu.Lock()
	last := a.lastError[kind]
	delete(a.lastError, kind)
	a.mu.Unlock()
	if !last.IsZero() {
		a.log.Info("state database answers again", "call", kind)
	}
}

// Jittered returns the next poll delay: interval spread uniformly over ±50%.
func Jittered(interval time.Duration, r *mrand.Rand) time.Duration {
	f := 1 - jitter + 2*jitter*r.Float64()
	return time.Duration(float64(interval) * f)
}

// FirstPoll returns the delay of an agent's first poll: uniform over half
// an interval, so agents restarted together do not poll in step.
func FirstPoll(interval time.Duration, r *mrand.Rand) time.Duration {
	return time.Duration(float64(interval) * jitter * r.Float64())
}

func roleList(rs []statemachine.Role) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = string(r)
	}
	return strings.Join(s, ",")
}
