package agent

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the agent's Prometheus series. Labels are closed sets (role,
// result, direction); never hosts or database names.
type Metrics struct {
	Polls       *prometheus.CounterVec
	Claims      *prometheus.CounterVec
	Wakeups     *prometheus.CounterVec
	StepSeconds *prometheus.HistogramVec
	JobsRunning *prometheus.GaugeVec
	Bytes       *prometheus.CounterVec
	StateErrors prometheus.Counter
	// PeerAskSeconds is how long a step waited for its peer asks' answers;
	// PeerAnswers counts the asks this agent answered.
	PeerAskSeconds *prometheus.HistogramVec
	PeerAnswers    *prometheus.CounterVec

	reg prometheus.Registerer
}

// Step results, the values of the result label.
const (
	resultDone      = "done"
	resultFailed    = "failed"
	resultReleased  = "released"
	resultLeaseLost = "lease_lost"
)

// NewMetrics creates the series and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Polls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetmigrate_agent_polls_total", Help: "Polls of the state table for work, by role.",
		}, []string{"role"}),
		Claims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetmigrate_agent_claims_total", Help: "Rows claimed, by role.",
		}, []string{"role"}),
		Wakeups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetmigrate_agent_wakeups_total", Help: "Polls started by a state-database notification (PostgreSQL LISTEN/NOTIFY) rather than the poll timer, by role.",
		}, []string{"role"}),
		StepSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fleetmigrate_agent_step_seconds", Help: "Duration of steps from claim to hand-on, by role and result.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10), // 10 ms to ~43 min
		}, []string{"role", "result"}),
		JobsRunning: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fleetmigrate_agent_jobs_in_flight", Help: "Steps running now, by role.",
		}, []string{"role"}),
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetmigrate_agent_bytes_total", Help: "Bytes moved by steps, by role and direction.",
		}, []string{"role", "direction"}),
		StateErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fleetmigrate_agent_state_db_errors_total", Help: "Failed calls to the state database.",
		}),
		PeerAskSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fleetmigrate_agent_peer_ask_seconds", Help: "How long steps waited for the answer of another host's agent to a peer ask, by action and outcome (done, refused: answered with an error, timeout).",
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 10), // 5 ms to ~19 s
		}, []string{"action", "outcome"}),
		PeerAnswers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetmigrate_agent_peer_answers_total", Help: "Peer asks this agent answered for another host's steps, by action and outcome (done, refused).",
		}, []string{"action", "outcome"}),
	}
	reg.MustRegister(m.Polls, m.Claims, m.Wakeups, m.StepSeconds, m.JobsRunning, m.Bytes, m.StateErrors, m.PeerAskSeconds, m.PeerAnswers)
	m.reg = reg
	return m
}

// MustRegister adds collectors of the agent's handlers (the engines' own
// gauges) to the agent's registry; without metrics it does nothing.
func (a *Agent) MustRegister(cs ...prometheus.Collector) {
	if a.metrics != nil && a.metrics.reg != nil {
		a.metrics.reg.MustRegister(cs...)
	}
}
