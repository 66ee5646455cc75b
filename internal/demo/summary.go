package demo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// Summary is what the demo reports at the end.
type Summary struct {
	Databases int
	// Moved rows reached Done; Verified databases passed Check at their
	// destination.
	Moved, Verified int
	// NotDone lists rows that did not reach Done, with their status and error.
	NotDone  []string
	Problems []Problem
	// Blocked is each moved database's write downtime (switched_at -
	// blocked_at), sorted.
	Blocked []time.Duration
	// Bytes is the databases' size as the engines measured it; DumpBytes
	// what went through the object store (compressed).
	Bytes, DumpBytes int64
	// AgentCPU is the CPU time of the agents and the tools they ran during
	// the migration; PerDB each moved database's time from its dump's
	// claim to Done, sorted.
	AgentCPU time.Duration
	PerDB    []time.Duration
	// AgentPeakRSS is the largest peak resident memory of an agent.
	AgentPeakRSS int64
	// Baselines are the comparison tools' times (Options.Baselines).
	Baselines []Baseline
	// MeasuredBytes is the databases' size measured for the baselines (fresh
	// statistics; a row's size_bytes is the engine's estimate at dump time).
	MeasuredBytes                        int64
	Setup, Migration, Verification, Wall time.Duration
	Dir                                  string
}

// Failures counts rows not done and databases that failed verification.
func (s Summary) Failures() int { return len(s.NotDone) + len(s.Problems) }

// Percentile returns the p-th percentile (0..1) of the write-blocked times.
func (s Summary) Percentile(p float64) time.Duration { return percentile(s.Blocked, p) }

// percentile returns the p-th percentile (0..1) of sorted d.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(p*float64(len(d))+0.5) - 1
	return d[min(max(i, 0), len(d)-1)]
}

// Summarize reads the state table and combines it with the verification.
func (d *Demo) Summarize(ctx context.Context, problems []Problem) (Summary, error) {
	s := Summary{Databases: len(d.DBs), Problems: problems, Dir: d.Opt.Dir,
		Setup: d.setupTook, Migration: d.migEnd.Sub(d.migStart), Verification: d.verifyTook, Wall: time.Since(d.started)}
	rows, err := d.Store.List(ctx, statemachine.Filter{})
	if err != nil {
		return s, fmt.Errorf("read the state table: %w", err)
	}
	for _, m := range rows {
		if m.Status != statemachine.Done {
			s.NotDone = append(s.NotDone, fmt.Sprintf("row %d %s database %q: %s: %s", m.ID, m.Engine, m.DatabaseName, m.Status, m.LastError))
			continue
		}
		s.Moved++
		s.Bytes += m.SizeBytes
		s.DumpBytes += m.DumpBytes
		if !m.BlockedAt.IsZero() && !m.SwitchedAt.IsZero() {
			s.Blocked = append(s.Blocked, m.SwitchedAt.Sub(m.BlockedAt))
		}
		evs, err := d.Store.Events(ctx, m.ID)
		if err != nil {
			return s, fmt.Errorf("read the events of row %d: %w", m.ID, err)
		}
		for _, e := range evs {
			if e.From == statemachine.ToDump && e.To == statemachine.Dumping {
				s.PerDB = append(s.PerDB, m.UpdatedAt.Sub(e.At))
				break
			}
		}
	}
	slices.Sort(s.Blocked)
	slices.Sort(s.PerDB)
	s.AgentCPU = time.Duration((d.cpuEnd - d.cpuStart) * float64(time.Second))
	s.AgentPeakRSS = d.peakRSS
	for _, n := range d.sizes {
		s.MeasuredBytes += n
	}
	s.Verified = s.Databases - len(problems)
	return s, nil
}

// Print writes the summary for people.
func (s Summary) Print(w io.Writer) {
	fmt.Fprintf(w, "\n==== fleetmigrate demo: summary ====\n")
	fmt.Fprintf(w, "databases moved:    %d/%d (Done in the state table)\n", s.Moved, s.Databases)
	fmt.Fprintf(w, "verified:           %d/%d (name resolved at BIND to the destination, original user and password, content checksum as before, write accepted)\n", s.Verified, s.Databases)
	fmt.Fprintf(w, "wall time:          %s (setup %s, migration %s, verification %s)\n",
		s.Wall.Round(100*time.Millisecond), s.Setup.Round(100*time.Millisecond), s.Migration.Round(100*time.Millisecond), s.Verification.Round(100*time.Millisecond))
	if len(s.Blocked) > 0 {
		fmt.Fprintf(w, "write-blocked time: p50 %s, p95 %s, max %s (per database: blocked at the source until DNS pointed at the destination)\n",
			s.Percentile(0.50).Round(time.Millisecond), s.Percentile(0.95).Round(time.Millisecond), s.Blocked[len(s.Blocked)-1].Round(time.Millisecond))
	}
	if len(s.PerDB) > 0 {
		fmt.Fprintf(w, "per database:       claim of the dump to Done p50 %s, p95 %s; %.1f databases/s; agents and their tools %.0f ms CPU per database (%s in all)\n",
			percentile(s.PerDB, 0.5).Round(time.Millisecond), percentile(s.PerDB, 0.95).Round(time.Millisecond),
			float64(s.Moved)/s.Migration.Seconds(), float64(s.AgentCPU.Milliseconds())/float64(max(s.Moved, 1)), s.AgentCPU.Round(10*time.Millisecond))
	}
	rate := ""
	if s.Migration > 0 {
		rate = fmt.Sprintf(", %s/s", humanBytes(int64(float64(s.Bytes)/s.Migration.Seconds())))
	}
	fmt.Fprintf(w, "bytes moved:        %s of databases (%s compressed through the object store)%s\n", humanBytes(s.Bytes), humanBytes(s.DumpBytes), rate)
	if s.AgentPeakRSS > 0 {
		fmt.Fprintf(w, "agent memory:       peak resident %s (largest agent)\n", humanBytes(s.AgentPeakRSS))
	}
	if len(s.Baselines) > 0 && s.Migration > 0 {
		ours := float64(s.MeasuredBytes) / (1 << 20) / s.Migration.Seconds()
		fmt.Fprintf(w, "baselines:          (ours: %.1f MB/s end to end, blocked, dumped, stored, imported with accounts, verified, switched)\n", ours)
		for _, b := range s.Baselines {
			ratio := ""
			if b.MBps() > 0 {
				ratio = fmt.Sprintf("  ours = %.2f×", ours/b.MBps())
			}
			fmt.Fprintf(w, "  %-34s %8s %7.1f MB/s%s%s\n", b.Tool, b.Took.Round(10*time.Millisecond), b.MBps(), ratio, errSuffix(b.Err))
		}
	}
	fmt.Fprintf(w, "failures:           %d\n", s.Failures())
	for _, n := range s.NotDone {
		fmt.Fprintf(w, "  not done: %s\n", n)
	}
	for _, p := range s.Problems {
		fmt.Fprintf(w, "  wrong:    %s\n", p.Error())
	}
	fmt.Fprintf(w, "logs:               %s (agent-*.log, scheduler.log, migrate-commands.log; configuration *.yaml, secrets.env)\n", s.Dir)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
