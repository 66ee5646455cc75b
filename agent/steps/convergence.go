package steps

import (
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// A stream converges when the destination applies at least what the source
// writes: its lag comes down to Online.MaxLagBytes and the row is handed to
// the cutover. One that does not (a customer writing faster than the
// destination applies, a destination starved of CPU or I/O) would sync
// forever. convergence judges the lag a sync step samples: not converging
// when, over a whole window (Online.ConvergeWindow), the lag never came
// down to MaxLagBytes, its floor rose (the lowest lag of the window's
// second half above that of its first) and it grew by an eighth of
// MaxLagBytes and a tenth of where it started. It says so on the row (a "syncing: NOT CONVERGING"
// note), in a gauge and an alert; after Online.ConvergeTimeout of it the
// row stops syncing (docs/online.md: an auto row moves in dump mode, an
// online row fails).

// lagSample is one reading of a stream.
type lagSample struct {
	at         time.Time
	lag        int64
	rows, txns int64 // applied so far (-1: the engine does not say)
}

// convergence is one sync step's judge of its stream.
type convergence struct {
	window time.Duration
	maxLag int64
	// samples cover the last window (and one before it).
	samples []lagSample
	// since: not converging since then (zero: converging, or not known).
	since time.Time
	// verdict describes the last judgment that found it not converging.
	verdict string
}

// add records a sample and judges the window it ends: changed reports a
// change of verdict (notConverging then says which way).
func (c *convergence) add(s lagSample) (notConverging, changed bool) {
	c.samples = append(c.samples, s)
	// Keep one sample at or before the window's start.
	for len(c.samples) > 2 && s.at.Sub(c.samples[1].at) >= c.window {
		c.samples = c.samples[1:]
	}
	was := !c.since.IsZero()
	first := c.samples[0]
	span := s.at.Sub(first.at)
	now := false
	if span >= c.window {
		now = true
		// Above the hand-on lag all along, and its floor rising: the
		// lowest lag of the window's second half above that of its first
		// half, and the lag grown by an eighth of the hand-on lag and a
		// tenth of where it started (noise around a steady lag is not a
		// trend).
		mid := first.at.Add(span / 2)
		floor1, floor2 := int64(math.MaxInt64), int64(math.MaxInt64)
		for _, x := range c.samples {
			if x.lag <= c.maxLag {
				now = false
			}
			if x.at.Before(mid) {
				floor1 = min(floor1, x.lag)
			} else {
				floor2 = min(floor2, x.lag)
			}
		}
		if grew := s.lag - first.lag; grew < c.maxLag/8 || grew < first.lag/10 || floor2 <= floor1 {
			now = false
		}
	}
	switch {
	case now && !was:
		c.since = s.at
	case !now && was && (span >= c.window || s.lag <= c.maxLag):
		c.since = time.Time{}
	case !now:
		// Not a full window yet: keep the verdict as it was.
		now = was
	}
	if now {
		c.verdict = c.describe()
	}
	return now, now != was
}

// describe says what the window shows: how the lag grew and what the
// destination applied.
func (c *convergence) describe() string {
	first, last := c.samples[0], c.samples[len(c.samples)-1]
	span := last.at.Sub(first.at)
	secs := span.Seconds()
	if secs <= 0 {
		return ""
	}
	d := fmt.Sprintf("lag grew from %s to %s in %s (+%s/s)", mb(first.lag), mb(last.lag), span.Round(time.Second), mb(int64(float64(last.lag-first.lag)/secs)))
	if first.rows >= 0 && last.rows >= first.rows {
		d += fmt.Sprintf("; the destination applies %.0f rows/s in %.0f source transactions/s", float64(last.rows-first.rows)/secs, float64(last.txns-first.txns)/secs)
	}
	return d
}

// reported says whether the stream is judged not converging now.
func (c *convergence) reported() bool { return !c.since.IsZero() }

// notConvergingFor is how long the stream has not been converging (0: it
// converges).
func (c *convergence) notConvergingFor(now time.Time) time.Duration {
	if c.since.IsZero() {
		return 0
	}
	return now.Sub(c.since)
}

// streamGauges count an engine's streams of this agent that are syncing
// and those of them not converging (deploy/prometheus/alerts.yaml alerts
// on the latter).
type streamGauges struct {
	syncing, notConverging atomic.Int64
	syncingDesc, ncDesc    *prometheus.Desc
}

func newStreamGauges(engineName string) *streamGauges {
	labels := prometheus.Labels{"engine": engineName}
	return &streamGauges{
		syncingDesc: prometheus.NewDesc("fleetmigrate_streams_syncing",
			"Online rows whose sync step runs on this agent (the destination's), by engine.", nil, labels),
		ncDesc: prometheus.NewDesc("fleetmigrate_streams_not_converging",
			"Of those, streams whose lag grew over the whole convergence window (online.converge-window): the destination applies less than the source writes.", nil, labels),
	}
}

func (g *streamGauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- g.syncingDesc
	ch <- g.ncDesc
}

func (g *streamGauges) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(g.syncingDesc, prometheus.GaugeValue, float64(g.syncing.Load()))
	ch <- prometheus.MustNewConstMetric(g.ncDesc, prometheus.GaugeValue, float64(g.notConverging.Load()))
}

// StreamGauges returns a collector of an engine's stream gauges (as
// Register adds them), for what describes the metrics the agent exports.
func StreamGauges(engineName string) prometheus.Collector { return newStreamGauges(engineName) }
