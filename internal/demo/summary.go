package demo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/fleetmigrate/fleetmigrate/agent/steps"
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
	// Modes counts the moved rows by the mode they moved in; BlockedByMode
	// is Blocked by mode.
	Modes         map[statemachine.Mode]int
	BlockedByMode map[statemachine.Mode][]time.Duration
	// Writers is what the live writers saw (Options.Writers).
	Writers WriterReport
	// SyncMBps is each online row's sync rate: its size over the time
	// from the sync step's claim to To cut over (preparation, initial copy,
	// catching up, verification while streaming), sorted.
	SyncMBps []float64
	// BlockedPhases splits each dump-mode row's write-blocked window into
	// the phases of blockedPhaseNames (sorted durations per phase).
	BlockedPhases map[string][]time.Duration
	// Invariants is the fault suite's invariant check over the fleet after
	// the run (InvariantsErr: it could not run; InvariantsTook: its time).
	Invariants     InvariantReport
	InvariantsErr  error
	InvariantsTook time.Duration
	// TLS is what the database servers counted of the run's connections:
	// every session must have used TLS.
	TLS TLSCount
	// Peers is what the MariaDB servers counted of the read-only peer
	// account, and the peer asks answered: the account must change
	// nothing and be refused nothing.
	Peers PeerCount
	// Logins is what the state database logged of the agents' logins:
	// each its host's own, nothing refused.
	Logins LoginCount
	// Kills are the processes killed and restarted during the migration
	// (Options.Kills), with how long their rows waited.
	Kills []Kill
	// Cutovers splits, by engine, each online row's write-blocked window
	// into the phases of cutoverPhaseNames (read from its cutover's note
	// and events; sorted durations per phase); CatchUpMisses counts the
	// cutovers whose catch-up timed out (writes restored, back to
	// syncing), by engine, over every row.
	Cutovers      map[statemachine.Engine]map[string][]time.Duration
	CatchUpMisses map[statemachine.Engine]int
	// BlockedByEngine is Blocked by engine.
	BlockedByEngine map[statemachine.Engine][]time.Duration
}

// cutoverPhaseNames are the parts of an online row's write-blocked window,
// in order: the whole cutover under the block, then its parts (blocking
// writes; the schema check and reading the position; the destination
// applying it; stopping the stream; completing and verifying the
// destination), then from the cutover's end to DNS pointing at the
// destination.
var cutoverPhaseNames = []string{"cutover", "block", "checks", "catch-up", "stream stop", "completion + verification", "DNS hand-off"}

// cutoverPhases reads an online row's cutover phases from its events; ok
// is false when its cutover note or hand-off is missing.
func cutoverPhases(m statemachine.Migration, evs []statemachine.Event) ([]time.Duration, bool) {
	if m.Mode != statemachine.ModeOnline || m.SwitchedAt.IsZero() {
		return nil, false
	}
	var note steps.CutoverNote
	var noted, handed bool
	var handoff time.Duration
	for _, e := range evs {
		if e.From == statemachine.CuttingOver && e.To == statemachine.CuttingOver {
			if n, ok := steps.ParseCutoverNote(e.Detail); ok {
				note, noted = n, true
			}
		}
		if e.From == statemachine.CuttingOver && (e.To == statemachine.DNSToUpdate || e.To == statemachine.ToCloseSource) {
			handoff, handed = m.SwitchedAt.Sub(e.At), true
		}
	}
	if !noted || !handed {
		return nil, false
	}
	return []time.Duration{note.Total, note.Block, note.Checks, note.CatchUp, note.Stop, note.Verify, handoff}, true
}

// blockedPhaseNames are the parts of a dump-mode row's write-blocked
// window, in order: from the block's mark to the source's agent's answer
// that it blocked (the peer ask's hand-off: blocked_at is marked before
// the destination asks, so this counts the hand-off's whole time, of which
// the writes were blocked only the part after the source's agent applied
// it); from there to the dump stored whole (the import running beside it); from there to the row leaving the import (the
// import's tail, verification; a retry from the store when the import
// beside the dump failed); waiting for the DNS agent's claim; the DNS
// update and its confirmation.
var blockedPhaseNames = []string{"source's agent blocks", "dump ∥ import", "import tail + verify", "waiting for DNS agent", "DNS update"}

// blockedPhases splits m's write-blocked window by its events; ok is
// false when an event is missing (an online row, a row without DNS).
func blockedPhases(m statemachine.Migration, evs []statemachine.Event) ([]time.Duration, bool) {
	if m.Mode != statemachine.ModeDump || m.BlockedAt.IsZero() || m.SwitchedAt.IsZero() {
		return nil, false
	}
	var blocked, dumped, imported, claimed time.Time
	for _, e := range evs {
		switch {
		case e.From == statemachine.Dumping && e.To == statemachine.Dumping && strings.HasPrefix(e.Detail, "writes blocked"):
			blocked = e.At
		case e.From == statemachine.Dumping && e.To == statemachine.Dumping && strings.HasPrefix(e.Detail, "dumped "):
			dumped = e.At
		case e.To == statemachine.DNSToUpdate && (e.From == statemachine.Dumping || e.From == statemachine.Importing):
			imported = e.At
		case e.From == statemachine.DNSToUpdate && e.To == statemachine.UpdatingDNS:
			claimed = e.At
		}
	}
	if dumped.IsZero() || imported.IsZero() || claimed.IsZero() {
		return nil, false
	}
	if blocked.IsZero() || blocked.Before(m.BlockedAt) {
		blocked = m.BlockedAt // a retried row's earlier attempt
	}
	return []time.Duration{blocked.Sub(m.BlockedAt), dumped.Sub(blocked), imported.Sub(dumped), claimed.Sub(imported), m.SwitchedAt.Sub(claimed)}, true
}

// Failures counts rows not done, databases that failed verification,
// writers whose writes went missing, broken invariants (one if the check
// could not run) and kills that did not happen.
func (s Summary) Failures() int {
	n := len(s.NotDone) + len(s.Problems) + len(s.Writers.Problems) + len(s.Invariants.Violations)
	if s.InvariantsErr != nil {
		n++
	}
	if (s.TLS.Servers > 0 || s.TLS.PGServers > 0) && !s.TLS.OK() {
		n++
	}
	if len(s.Logins.Logins) > 0 && !s.Logins.OK() {
		n++
	}
	if (s.Peers.Servers > 0 || s.Peers.PGServers > 0) && !s.Peers.OK() {
		n++
	}
	for _, k := range s.Kills {
		if k.Err != nil {
			n++
		}
	}
	return n
}

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
		evs, err := d.Store.Events(ctx, m.ID)
		if err != nil {
			return s, fmt.Errorf("read the events of row %d: %w", m.ID, err)
		}
		for _, e := range evs {
			if e.From == statemachine.CuttingOver && e.To == statemachine.CuttingOver && strings.HasPrefix(e.Detail, "catch-up timed out") {
				if s.CatchUpMisses == nil {
					s.CatchUpMisses = map[statemachine.Engine]int{}
				}
				s.CatchUpMisses[m.Engine]++
			}
		}
		if m.Status != statemachine.Done {
			s.NotDone = append(s.NotDone, fmt.Sprintf("row %d %s database %q: %s: %s", m.ID, m.Engine, m.DatabaseName, m.Status, m.LastError))
			continue
		}
		s.Moved++
		if s.Modes == nil {
			s.Modes = map[statemachine.Mode]int{}
		}
		s.Modes[m.Mode]++
		s.Bytes += m.SizeBytes
		s.DumpBytes += m.DumpBytes
		if !m.BlockedAt.IsZero() && !m.SwitchedAt.IsZero() {
			s.Blocked = append(s.Blocked, m.SwitchedAt.Sub(m.BlockedAt))
			if s.BlockedByMode == nil {
				s.BlockedByMode = map[statemachine.Mode][]time.Duration{}
			}
			s.BlockedByMode[m.Mode] = append(s.BlockedByMode[m.Mode], m.SwitchedAt.Sub(m.BlockedAt))
			if s.BlockedByEngine == nil {
				s.BlockedByEngine = map[statemachine.Engine][]time.Duration{}
			}
			s.BlockedByEngine[m.Engine] = append(s.BlockedByEngine[m.Engine], m.SwitchedAt.Sub(m.BlockedAt))
		}
		if ph, ok := cutoverPhases(m, evs); ok {
			if s.Cutovers == nil {
				s.Cutovers = map[statemachine.Engine]map[string][]time.Duration{}
			}
			if s.Cutovers[m.Engine] == nil {
				s.Cutovers[m.Engine] = map[string][]time.Duration{}
			}
			for i, name := range cutoverPhaseNames {
				s.Cutovers[m.Engine][name] = append(s.Cutovers[m.Engine][name], ph[i])
			}
		}
		if ph, ok := blockedPhases(m, evs); ok {
			if s.BlockedPhases == nil {
				s.BlockedPhases = map[string][]time.Duration{}
			}
			for i, name := range blockedPhaseNames {
				s.BlockedPhases[name] = append(s.BlockedPhases[name], ph[i])
			}
		}
		var syncStart time.Time
		for _, e := range evs {
			if e.From == statemachine.ToSync && e.To == statemachine.Syncing {
				syncStart = e.At
			}
			if e.From == statemachine.Syncing && e.To == statemachine.ToCutOver && !syncStart.IsZero() && m.SizeBytes > 0 {
				s.SyncMBps = append(s.SyncMBps, float64(m.SizeBytes)/(1<<20)/e.At.Sub(syncStart).Seconds())
				syncStart = time.Time{}
			}
		}
		for _, e := range evs {
			if (e.From == statemachine.ToDump && e.To == statemachine.Dumping) || (e.From == statemachine.ToSync && e.To == statemachine.Syncing) {
				s.PerDB = append(s.PerDB, m.UpdatedAt.Sub(e.At))
				break
			}
		}
	}
	slices.Sort(s.Blocked)
	slices.Sort(s.PerDB)
	for _, b := range s.BlockedByMode {
		slices.Sort(b)
	}
	for _, b := range s.BlockedByEngine {
		slices.Sort(b)
	}
	slices.Sort(s.SyncMBps)
	for _, b := range s.BlockedPhases {
		slices.Sort(b)
	}
	for _, byPhase := range s.Cutovers {
		for _, b := range byPhase {
			slices.Sort(b)
		}
	}
	s.AgentCPU = time.Duration((d.cpuEnd - d.cpuStart) * float64(time.Second))
	s.AgentPeakRSS = d.peakRSS
	for _, n := range d.sizes {
		s.MeasuredBytes += n
	}
	s.Verified = s.Databases - len(problems)
	s.Writers = d.checkWriters(ctx)
	s.InvariantsTook = d.invTook
	s.TLS = d.countTLS(ctx)
	s.Peers = d.countPeers(ctx)
	s.Logins = d.countLogins()
	s.Kills, err = d.Kills(ctx)
	return s, err
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
	if n := len(s.BlockedPhases[blockedPhaseNames[0]]); n > 0 {
		fmt.Fprintf(w, "write-blocked, by phase (dump mode, %d rows, p50 / p95):", n)
		for i, name := range blockedPhaseNames {
			b := s.BlockedPhases[name]
			sep := ";"
			if i == 0 {
				sep = ""
			}
			fmt.Fprintf(w, "%s %s %s / %s", sep, name, percentile(b, 0.5).Round(time.Millisecond), percentile(b, 0.95).Round(time.Millisecond))
		}
		fmt.Fprintln(w)
	}
	if len(s.BlockedByEngine) > 1 {
		fmt.Fprintf(w, "write-blocked, by engine:")
		for i, eng := range []statemachine.Engine{statemachine.EngineMySQL, statemachine.EnginePostgres} {
			b := s.BlockedByEngine[eng]
			sep := ";"
			if i == 0 {
				sep = ""
			}
			fmt.Fprintf(w, "%s %s (%d) p50 %s, p95 %s, max %s", sep, eng, len(b), percentile(b, 0.5).Round(time.Millisecond),
				percentile(b, 0.95).Round(time.Millisecond), percentile(b, 1).Round(time.Millisecond))
		}
		fmt.Fprintln(w)
	}
	for _, eng := range []statemachine.Engine{statemachine.EngineMySQL, statemachine.EnginePostgres} {
		byPhase := s.Cutovers[eng]
		if len(byPhase) == 0 {
			continue
		}
		p := func(name string) string {
			b := byPhase[name]
			return fmt.Sprintf("%s %s / %s", name, percentile(b, 0.5).Round(time.Millisecond), percentile(b, 0.95).Round(time.Millisecond))
		}
		last := len(cutoverPhaseNames) - 1
		parts := make([]string, 0, last-1)
		for _, name := range cutoverPhaseNames[1:last] {
			parts = append(parts, p(name))
		}
		fmt.Fprintf(w, "cutover, %s (%d online rows, p50 / p95): %s under the block (%s); then %s; catch-ups timed out: %d\n",
			eng, len(byPhase[cutoverPhaseNames[0]]), p(cutoverPhaseNames[0]), strings.Join(parts, ", "), p(cutoverPhaseNames[last]), s.CatchUpMisses[eng])
	}
	if len(s.Modes) > 0 {
		fmt.Fprintf(w, "modes:              %d online, %d dump", s.Modes[statemachine.ModeOnline], s.Modes[statemachine.ModeDump])
		for _, mode := range []statemachine.Mode{statemachine.ModeOnline, statemachine.ModeDump} {
			if b := s.BlockedByMode[mode]; len(b) > 0 && len(s.BlockedByMode) > 1 {
				fmt.Fprintf(w, "; %s write-blocked p50 %s, p95 %s, max %s", mode, percentile(b, 0.5).Round(time.Millisecond), percentile(b, 0.95).Round(time.Millisecond), b[len(b)-1].Round(time.Millisecond))
			}
		}
		fmt.Fprintln(w)
	}
	if n := len(s.SyncMBps); n > 0 {
		fmt.Fprintf(w, "online sync:        %d streams, %.1f MB/s median (min %.1f, max %.1f): database size over the sync step (prepare, initial copy, catch up, verify while streaming)\n",
			n, s.SyncMBps[n/2], s.SyncMBps[0], s.SyncMBps[n-1])
	}
	if s.Writers.Writers > 0 {
		wr := s.Writers
		fmt.Fprintf(w, "live writers:       %d writers through DNS with their own users: %d writes acknowledged, %d missing at the destination, %d accepted at the source after the block",
			wr.Writers, wr.Acked, wr.Missing, wr.LateAtSource)
		if wr.Unanswered > 0 {
			fmt.Fprintf(w, " (%d more committed without an answer: their session ended after the commit; each found by its retry)", wr.Unanswered)
		}
		if len(wr.Windows) > 0 {
			fmt.Fprintf(w, "; window seen (first refused write to first write at the destination) p50 %s, max %s",
				percentile(wr.Windows, 0.5).Round(time.Millisecond), wr.Windows[len(wr.Windows)-1].Round(time.Millisecond))
		}
		for _, mode := range []statemachine.Mode{statemachine.ModeOnline, statemachine.ModeDump} {
			if win := wr.ByMode[mode]; len(win) > 0 {
				fmt.Fprintf(w, "; %s: %d writers, p50 %s, max %s", mode, len(win), percentile(win, 0.5).Round(time.Millisecond), win[len(win)-1].Round(time.Millisecond))
			}
		}
		fmt.Fprintln(w)
	}
	if len(s.PerDB) > 0 {
		fmt.Fprintf(w, "per database:       claim of the dump (or sync) to Done p50 %s, p95 %s; %.1f databases/s; agents and their tools %.0f ms CPU per database (%s in all)\n",
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
	printKills(w, s.Kills)
	switch {
	case s.InvariantsErr != nil:
		fmt.Fprintf(w, "invariants:         could not be checked: %v\n", s.InvariantsErr)
	case s.Invariants.OK() && s.Invariants.Checked != nil:
		fmt.Fprintf(w, "invariants:         %s, in %s\n", s.Invariants.Summary(), s.InvariantsTook.Round(100*time.Millisecond))
	case s.Invariants.Checked != nil:
		fmt.Fprintf(w, "invariants:         %d BROKEN (listed below), in %s\n", len(s.Invariants.Violations), s.InvariantsTook.Round(100*time.Millisecond))
	}
	s.TLS.print(w)
	if s.Peers.Servers > 0 || s.Peers.PGServers > 0 || s.Peers.Err != nil {
		s.Peers.print(w)
	}
	if len(s.Logins.Logins) > 0 {
		s.Logins.print(w)
	}
	fmt.Fprintf(w, "failures:           %d\n", s.Failures())
	for _, n := range s.NotDone {
		fmt.Fprintf(w, "  not done: %s\n", n)
	}
	for _, p := range s.Problems {
		fmt.Fprintf(w, "  wrong:    %s\n", p.Error())
	}
	for _, p := range s.Writers.Problems {
		fmt.Fprintf(w, "  writer:   %s\n", p)
	}
	for _, v := range s.Invariants.Violations {
		fmt.Fprintf(w, "  broken:   %s\n", v)
	}
	fmt.Fprintf(w, "logs:               %s (agent-*.log, scheduler.log, migrate-commands.log; configuration *.yaml, secrets.env)\n", s.Dir)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
