package statemachine_test

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

var update = flag.Bool("update", false, "rewrite the diagram in docs/state-machine.md")

func TestEveryStatusReachableAndLeavable(t *testing.T) {
	in, out := map[statemachine.Status]bool{statemachine.Waiting: true}, map[statemachine.Status]bool{}
	for _, tr := range statemachine.Transitions() {
		if !tr.From.Valid() || !tr.To.Valid() {
			t.Errorf("transition %+v uses an unknown status", tr)
		}
		in[tr.To], out[tr.From] = true, true
	}
	for _, s := range statemachine.Statuses {
		if !in[s] {
			t.Errorf("status %q cannot be reached", s)
		}
		if !out[s] && !s.Terminal() {
			t.Errorf("status %q is a dead end but not terminal", s)
		}
		if out[s] && s.Terminal() {
			t.Errorf("terminal status %q has a way out", s)
		}
	}
}

func TestStepsAndOperatorActions(t *testing.T) {
	for _, st := range statemachine.Steps {
		if !st.Working.Working() || st.Queued.Working() || !st.Failed.Failed() {
			t.Errorf("step %s: statuses misclassified", st.Role)
		}
		if !statemachine.Allowed(st.Role, st.Queued, st.Working) || !statemachine.Allowed(statemachine.RoleRescuer, st.Working, st.Failed) {
			t.Errorf("step %s: claim or rescue not allowed", st.Role)
		}
		if statemachine.Allowed(st.Role, st.Queued, st.Next) {
			t.Errorf("step %s: can skip its working status", st.Role)
		}
	}
	if to, err := statemachine.OperatorTarget(statemachine.ActionRetry, statemachine.ImportFailed); err != nil || to != statemachine.ToImport {
		t.Errorf("retry Import failed: %s, %v", to, err)
	}
	if _, err := statemachine.OperatorTarget(statemachine.ActionRollback, statemachine.CloseFailed); err == nil ||
		!strings.Contains(err.Error(), "Dump failed, Import failed, DNS failed") {
		t.Errorf("rollback of Close failed: %v", err)
	}
	if statemachine.Waiting.InFlight() || !statemachine.DumpFailed.InFlight() || statemachine.Done.InFlight() {
		t.Error("InFlight misclassifies")
	}
	if next := (statemachine.Step{Next: statemachine.DNSToUpdate, NextWithoutDNS: statemachine.ToCloseSource}).NextStatus(""); next != statemachine.ToCloseSource {
		t.Errorf("no DNS name goes to %s", next)
	}
}

// TestDocsDiagram keeps docs/state-machine.md's diagram equal to the table.
func TestDocsDiagram(t *testing.T) {
	path := filepath.Join("..", "docs", "state-machine.md")
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "```mermaid\n", "```\n"
	i := strings.Index(string(doc), begin)
	j := strings.Index(string(doc[i+len(begin):]), end)
	if i < 0 || j < 0 {
		t.Fatalf("%s has no mermaid block", path)
	}
	got := string(doc[i+len(begin) : i+len(begin)+j])
	want := statemachine.Mermaid()
	if got == want {
		return
	}
	if *update {
		out := string(doc[:i+len(begin)]) + want + string(doc[i+len(begin)+j:])
		if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s is out of date with the transition table: run `go test ./statemachine -run TestDocsDiagram -update`", path)
}
