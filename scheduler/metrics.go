package scheduler

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// Metrics are the scheduler's Prometheus series. Labels are closed sets
// (status), except the agent registry's host IDs (one series per agent,
// as an exporter has one per instance); never database names.
type Metrics struct {
	// LeaseExpired: rows in a working status whose claim expired and that
	// the rescue could not take back (their attempts are used up, or the
	// rescue failed): stuck until someone looks.
	LeaseExpired prometheus.Gauge
	// WriteBlocked and WriteBlockedMax: databases write-blocked at their
	// source right now (not switched, not unblocked), and the longest.
	WriteBlocked    prometheus.Gauge
	WriteBlockedMax prometheus.Gauge
	// AgentLastSeen is each registered agent's last heartbeat (Unix
	// seconds), by host ID. An agent that stops cleanly deregisters and
	// its series goes.
	AgentLastSeen *prometheus.GaugeVec

	Rows        *prometheus.GaugeVec
	InFlight    prometheus.Gauge
	MaxProcs    prometheus.Gauge
	Promoted    prometheus.Counter
	Rescued     prometheus.Counter
	StopSwitch  prometheus.Gauge
	Leader      prometheus.Gauge
	TickSeconds prometheus.Histogram
	TickErrors  prometheus.Counter
}

// NewMetrics creates the series and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Rows: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fleetmigrate_rows", Help: "Rows of the state table by status.",
		}, []string{"status"}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fleetmigrate_in_flight", Help: "Rows in flight: every status but Waiting, Done, Cancelled and Rolled back (failed rows included).",
		}),
		MaxProcs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fleetmigrate_max_procs", Help: "The scheduler's --max-procs.",
		}),
		Promoted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fleetmigrate_promoted_total", Help: "Rows promoted from Waiting to To dump by this scheduler.",
		}),
		Rescued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fleetmigrate_rescued_total", Help: "Rows taken back from agents whose lease expired.",
		}),
		StopSwitch: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fleetmigrate_stop_switch", Help: "1 while the stop switch is set.",
		}),
		Leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fleetmigrate_scheduler_leader", Help: "1 while this scheduler holds the scheduler lease.",
		}),
		TickSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "fleetmigrate_scheduler_tick_seconds", Help: "Duration of a scheduler tick (renew, rescue, promote, count).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		TickErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fleetmigrate_scheduler_tick_errors_total", Help: "Ticks that failed (the state database was unreachable or refused).",
		}),
	}
	m.LeaseExpired = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "fleetmigrate_rows_lease_expired", Help: "Rows in a working status whose claim expired and were not taken back (attempts used up): stuck.",
	})
	m.WriteBlocked = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "fleetmigrate_write_blocked_rows", Help: "Databases write-blocked at their source now (DNS not switched, writes not restored).",
	})
	m.WriteBlockedMax = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "fleetmigrate_write_blocked_max_seconds", Help: "How long the longest write-blocked database has been blocked (0: none).",
	})
	m.AgentLastSeen = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "fleetmigrate_agent_last_seen_timestamp_seconds", Help: "Last heartbeat of each registered agent (Unix time), by host ID.",
	}, []string{"host"})
	reg.MustRegister(m.LeaseExpired, m.WriteBlocked, m.WriteBlockedMax, m.AgentLastSeen)
	reg.MustRegister(m.Rows, m.InFlight, m.MaxProcs, m.Promoted, m.Rescued, m.StopSwitch, m.Leader, m.TickSeconds, m.TickErrors)
	for _, st := range statemachine.Statuses {
		m.Rows.WithLabelValues(string(st))
	}
	return m
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
