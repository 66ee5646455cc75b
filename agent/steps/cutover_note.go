package steps

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// CutoverNote is the note a cutover writes on its row when it is done:
// where the time under the block went, phase by phase. Its text is for
// people (`migrate status --id N`); ParseCutoverNote reads it back for the
// demo's and the benchmarks' breakdown (issue 31).
type CutoverNote struct {
	// Total is the time from blocking writes to the end of the step (the
	// stream removed, the row about to move on).
	Total time.Duration
	// Block is how long blocking writes took (revoking, ending the
	// sessions: Ended of them).
	Block time.Duration
	Ended int
	// Position is the source's position the destination had to apply;
	// Checks how long the schema-change check and reading it took.
	Position string
	Checks   time.Duration
	// CatchUp is how long the destination took to apply Position.
	CatchUp time.Duration
	// Stop is how long stopping the stream took.
	Stop time.Duration
	// Summary says what the completion (what the stream does not carry)
	// and the verification did; Verify is how long they took.
	Summary string
	Verify  time.Duration
	// Removal is how long removing the stream took, beside Verify;
	// Deferred: it was left (stopped) for the close step to remove.
	Removal  time.Duration
	Deferred bool
}

func (n CutoverNote) String() string {
	ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	removal := fmt.Sprintf("stream removed meanwhile in %s", ms(n.Removal))
	if n.Deferred {
		removal = deferredRemoval
	}
	return fmt.Sprintf("cut over in %s under the block: writes blocked in %s (%d sessions ended); schema checked and position %s read in %s; "+
		"applied at the destination %s later; stream stopped in %s; %s, in %s; %s",
		ms(n.Total), ms(n.Block), n.Ended, n.Position, ms(n.Checks), ms(n.CatchUp), ms(n.Stop), n.Summary, ms(n.Verify), removal)
}

// deferredRemoval ends the note of a cutover that left its stopped stream
// for the close step to remove.
const deferredRemoval = "the stopped stream is removed once the row has moved on"

var cutoverNoteRx = regexp.MustCompile(`^cut over in (\S+) under the block: writes blocked in (\S+) \((\d+) sessions ended\); ` +
	`schema checked and position (.+) read in (\S+); applied at the destination (\S+) later; stream stopped in (\S+); (.*), in (\S+); (?:stream removed meanwhile in (\S+)|(` + deferredRemoval + `))$`)

// ParseCutoverNote reads a cutover's note (CutoverNote.String); false if s
// is not one.
func ParseCutoverNote(s string) (CutoverNote, bool) {
	m := cutoverNoteRx.FindStringSubmatch(s)
	if m == nil {
		return CutoverNote{}, false
	}
	n := CutoverNote{Position: m[4], Summary: m[8], Deferred: m[11] != ""}
	if n.Deferred {
		m[10] = "0s"
	}
	var err error
	for _, d := range []struct {
		dst *time.Duration
		s   string
	}{{&n.Total, m[1]}, {&n.Block, m[2]}, {&n.Checks, m[5]}, {&n.CatchUp, m[6]}, {&n.Stop, m[7]}, {&n.Verify, m[9]}, {&n.Removal, m[10]}} {
		if *d.dst, err = time.ParseDuration(d.s); err != nil {
			return CutoverNote{}, false
		}
	}
	if n.Ended, err = strconv.Atoi(m[3]); err != nil {
		return CutoverNote{}, false
	}
	return n, true
}

// phaseTimes times the parts of a step, for its note: each mark closes
// the part that began at the previous mark (the first at startPhases).
type phaseTimes struct {
	last  time.Time
	parts []string
}

func startPhases() *phaseTimes { return &phaseTimes{last: time.Now()} }

func (p *phaseTimes) mark(name string) {
	now := time.Now()
	p.parts = append(p.parts, fmt.Sprintf("%s %s", name, now.Sub(p.last).Round(time.Millisecond)))
	p.last = now
}

func (p *phaseTimes) String() string { return strings.Join(p.parts, ", ") }
