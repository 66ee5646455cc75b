package steps

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/postgres"
)

// streamCollector reports, at each scrape, the replication slots of ours on
// this host's PostgreSQL server: how much WAL each holds back and whether
// a subscriber consumes it. A slot nobody consumes keeps WAL until the disk
// fills; deploy/prometheus/alerts.yml alerts on it. The label is the
// slot's name (fleetmigrate_<row>): bounded by the rows syncing.
type streamCollector struct {
	c        *Postgres
	retained *prometheus.Desc
	active   *prometheus.Desc
	up       *prometheus.Desc
}

// Collector returns the collector of this host's stream slots.
func (c *Postgres) Collector() prometheus.Collector {
	return &streamCollector{
		c: c,
		retained: prometheus.NewDesc("fleetmigrate_stream_wal_retained_bytes",
			"WAL the source server keeps for a replication slot of an online migration (fleetmigrate_<row>).", []string{"slot"}, nil),
		active: prometheus.NewDesc("fleetmigrate_stream_slot_active",
			"1 while a subscriber consumes the slot, 0 when nobody does (it still holds WAL).", []string{"slot"}, nil),
		up: prometheus.NewDesc("fleetmigrate_stream_slots_scrape_ok",
			"1 if the slots of this host's PostgreSQL server could be read at this scrape.", nil, nil),
	}
}

func (s *streamCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.retained
	ch <- s.active
	ch <- s.up
}

func (s *streamCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	opt := s.c.Options
	srv0 := s.c.Server
	srv0.Host = s.c.Host
	srv, err := postgres.Open(ctx, srv0, opt)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(s.up, prometheus.GaugeValue, 0)
		return
	}
	defer func() { _ = srv.Close() }()
	slots, err := srv.Slots(ctx, engine.StreamPrefix)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(s.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(s.up, prometheus.GaugeValue, 1)
	for _, sl := range slots {
		if _, ours := engine.StreamRow(sl.Name); !ours {
			continue
		}
		ch <- prometheus.MustNewConstMetric(s.retained, prometheus.GaugeValue, float64(sl.Retained), sl.Name)
		active := 0.0
		if sl.Active {
			active = 1
		}
		ch <- prometheus.MustNewConstMetric(s.active, prometheus.GaugeValue, active, sl.Name)
	}
}
