package agent_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// The process tests run agent/testdata/fakeagent: the migrate-agent command
// (internal/agentcmd) with fake handlers whose effects are files.

func hostname() string {
	h, _ := os.Hostname()
	return h
}

// fakeAgent starts the fake agent for host with mode; dir receives the
// handler's effect files.
func fakeAgent(t *testing.T, db stateDB, dir, host, mode string, extra ...string) *fleettest.Proc {
	t.Helper()
	return fakeAgentWith(t, db, dir, host, mode, "", extra...)
}

// fakeAgentWith is fakeAgent with more lines for the agent section of its
// configuration ("  max-attempts: 1\n").
func fakeAgentWith(t *testing.T, db stateDB, dir, host, mode, agentYAML string, extra ...string) *fleettest.Proc {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "agent.yaml")
	body := "agent:\n  heartbeat-interval: 500ms\n  shutdown-timeout: 1s\n" + agentYAML + "log:\n  format: json\n"
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--config", cfg, "--host", host, "--roles", "dump", "--poll-interval", "100ms", "--lease", "2s"}, extra...)
	env := append(db.Env(), "FAKEAGENT_MODE="+mode, "FAKEAGENT_DIR="+dir, "FAKEAGENT_SLEEP=1h")
	return fleettest.Start(t, fleettest.Build(t, "./testdata/fakeagent"), env, args...)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// TestKill9MidStep: the agent dies (SIGKILL) while a step has its effect in
// place. A restarted agent takes the host over at once and, knowing its
// predecessor's process is gone, does not wait for the row's lease (a
// minute): it runs the handler's recovery (the effect is undone), takes the
// row back and redoes the step within seconds. The dead attempt's late
// "success" is refused by the fence.
func TestKill9MidStep(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		s := db.Open(t)
		planOn(t, s, 1, 1, 1, false)
		dir := t.TempDir()
		first := fakeAgent(t, db, dir, "dst-0", "block", "--lease", "1m")
		if _, err := s.Promote(context.Background(), 1, "test"); err != nil {
			t.Fatal(err)
		}
		effect := filepath.Join(dir, "1.effect")
		waitFor(t, "the step to start", 10*time.Second, func() bool { return exists(effect) })
		claim, err := s.Get(context.Background(), 1)
		if err != nil || claim.Status != statemachine.Dumping || claim.Attempt != 1 {
			t.Fatalf("claimed row: %+v, %v", claim, err)
		}
		if err := first.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		first.ExitCode(t, 5*time.Second)

		restarted := time.Now()
		second := fakeAgent(t, db, dir, "dst-0", "noop", "--lease", "1m")
		waitFor(t, "the row to be redone", 20*time.Second, func() bool { return count(t, s, "WHERE status = 'To import'") == 1 })
		if took := time.Since(restarted); took > 5*time.Second {
			t.Errorf("the row was redone %s after the restart; its dead owner's lease (1 m) should not have been waited for", took.Round(time.Millisecond))
		}
		if !exists(filepath.Join(dir, "1.recovered")) || exists(effect) {
			t.Errorf("recovery: recovered %v, effect still there %v", exists(filepath.Join(dir, "1.recovered")), exists(effect))
		}
		ran, _ := os.ReadFile(filepath.Join(dir, "1.ran"))
		want := fmt.Sprintf("pid %d attempt 1\npid %d attempt 2\n", first.Pid(), second.Pid())
		if string(ran) != want {
			t.Errorf("runs:\n%s\nwant:\n%s", ran, want)
		}
		m, _ := s.Get(context.Background(), 1)
		if m.Fence != claim.Fence+1 {
			t.Errorf("row after the redo: fence %d, want %d (one more claim)", m.Fence, claim.Fence+1)
		}
		// The first attempt's late success is refused.
		late := claim
		if err := s.Advance(context.Background(), &late, statemachine.Fields{DumpURL: "x", DumpSHA256: strings.Repeat("f", 64), DumpBytes: 1}, "late"); !errors.Is(err, statemachine.ErrLeaseLost) {
			t.Fatalf("late success of the dead attempt: %v, want ErrLeaseLost", err)
		}
		for _, want := range []string{"taking over from a previous agent process", "its rows are taken back at once", fmt.Sprintf("no process has pid %d", first.Pid())} {
			if !strings.Contains(second.Stderr.String(), want) {
				t.Errorf("second agent's log lacks %q:\n%s", want, second.Stderr.String())
			}
		}
		evs, err := s.Events(context.Background(), 1)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(evs, func(e statemachine.Event) bool {
			return e.Actor == string(statemachine.RoleRescuer) && strings.Contains(e.Detail, claim.Owner+" is gone")
		}) {
			t.Errorf("no event says the dead owner %q was gone", claim.Owner)
		}
	})
}

// TestKill9AtLastAttempt: the agent dies at the row's last attempt; its
// restart recovers the row and, since the row now fails, abandons it (what
// the attempts left, a stream or an import, must not outlive the failure).
func TestKill9AtLastAttempt(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		s := db.Open(t)
		planOn(t, s, 1, 1, 1, false)
		dir := t.TempDir()
		first := fakeAgentWith(t, db, dir, "dst-0", "block", "  max-attempts: 1\n", "--lease", "1m")
		if _, err := s.Promote(context.Background(), 1, "test"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the step to start", 10*time.Second, func() bool { return exists(filepath.Join(dir, "1.effect")) })
		if err := first.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		first.ExitCode(t, 5*time.Second)
		fakeAgentWith(t, db, dir, "dst-0", "noop", "  max-attempts: 1\n", "--lease", "1m")
		waitFor(t, "the row to fail", 10*time.Second, func() bool { return count(t, s, "WHERE status = 'Dump failed'") == 1 })
		for _, f := range []string{"1.recovered", "1.abandoned"} {
			if !exists(filepath.Join(dir, f)) {
				t.Errorf("%s missing: the restarted agent did not run that on the row it failed", f)
			}
		}
	})
}

// TestSIGTERMWaitsThenCancels: SIGTERM with a step that does not finish:
// the agent waits the shutdown timeout, cancels the step (which undoes its
// effect), gives the row back to To dump and exits 0.
func TestSIGTERMWaitsThenCancels(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		s := db.Open(t)
		planOn(t, s, 1, 1, 1, false)
		dir := t.TempDir()
		p := fakeAgent(t, db, dir, "dst-0", "block")
		if _, err := s.Promote(context.Background(), 1, "test"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the step to start", 10*time.Second, func() bool { return exists(filepath.Join(dir, "1.effect")) })
		sent := time.Now()
		if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := p.ExitCode(t, 10*time.Second); code != 0 {
			t.Fatalf("exit %d\n%s", code, p.Stderr.String())
		}
		if took := time.Since(sent); took < time.Second || took > 4*time.Second {
			t.Errorf("stopped after %s; want the 1 s shutdown timeout and a little", took)
		}
		m, _ := s.Get(context.Background(), 1)
		if m.Status != statemachine.ToDump || !strings.Contains(m.LastError, "agent shutting down") {
			t.Errorf("row: %s %q", m.Status, m.LastError)
		}
		if !exists(filepath.Join(dir, "1.cleanup")) || exists(filepath.Join(dir, "1.effect")) {
			t.Error("the cancelled step did not undo its effect")
		}
		for _, want := range []string{"waiting for running steps", "shutdown timeout reached", "agent stopped"} {
			if !strings.Contains(p.Stderr.String(), want) {
				t.Errorf("log lacks %q", want)
			}
		}
	})
}

// TestUnreachableAtStart: the agent starts while the state database is
// down: it says so and retries with backoff, then starts when it answers.
func TestUnreachableAtStart(t *testing.T) {
	fleettest.Integration(t)
	t.Parallel()
	srv := fleettest.NewPostgres(t, fleettest.PostgresConfig{})
	db := upgraded(t, "postgres", srv.DSN(srv.NewDatabase(t)))
	if err := srv.Down(); err != nil {
		t.Fatal(err)
	}
	p := fakeAgent(t, db, t.TempDir(), "src-0", "noop")
	waitFor(t, "the retry message", 10*time.Second, func() bool { return strings.Contains(p.Stderr.String(), "cannot start yet; retrying") })
	if !strings.Contains(p.Stderr.String(), srv.Addr()) || !strings.Contains(p.Stderr.String(), "connection refused") {
		t.Errorf("retry message does not name the server and the cause:\n%s", p.Stderr.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := srv.Up(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the agent to start", 40*time.Second, func() bool { return strings.Contains(p.Stderr.String(), "agent started") })
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	if code := p.ExitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// TestSIGTERMWithStateDatabaseDown: the state database stops while a step
// runs, then the agent gets SIGTERM. The step is cancelled after the
// shutdown timeout and undoes its work, but its row's end cannot be
// recorded: the agent still exits within shutdown-timeout + stop-grace
// (not after three leases of retries), says which row it left, and keeps
// its registry entry, so that its next start, once the state database is
// back, takes that row back at once and finishes it.
func TestSIGTERMWithStateDatabaseDown(t *testing.T) {
	fleettest.Integration(t)
	t.Parallel()
	srv := fleettest.NewPostgres(t, fleettest.PostgresConfig{})
	db := upgraded(t, "postgres", srv.DSN(srv.NewDatabase(t)))
	s := db.Open(t)
	planOn(t, s, 1, 1, 1, false)
	dir := t.TempDir()
	const grace = "  stop-grace: 2s\n" // shutdown-timeout is 1 s
	p := fakeAgentWith(t, db, dir, "dst-0", "block", grace, "--lease", "1m")
	if _, err := s.Promote(context.Background(), 1, "test"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the step to start", 10*time.Second, func() bool { return exists(filepath.Join(dir, "1.effect")) })
	if err := srv.Down(); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.ExitCode(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.Stderr.String())
	}
	took := time.Since(sent)
	if took > 5*time.Second {
		t.Errorf("the agent stopped %s after SIGTERM; its bound is 1 s + 2 s", took.Round(time.Millisecond))
	}
	for _, want := range []string{"stopped before every step ended", `row 1 (\"db_0000\", dump step, Dumping)`, "takes them back at once"} {
		if !strings.Contains(p.Stderr.String(), want) {
			t.Errorf("the agent's log lacks %q:\n%s", want, p.Stderr.String())
		}
	}
	if !exists(filepath.Join(dir, "1.cleanup")) {
		t.Error("the cancelled step did not undo its effect")
	}
	t.Logf("stopped %s after SIGTERM with the state database down", took.Round(time.Millisecond))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := srv.Up(ctx); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	fakeAgentWith(t, db, dir, "dst-0", "noop", grace, "--lease", "1m")
	waitFor(t, "the row to be redone", 20*time.Second, func() bool { return count(t, s, "WHERE status = 'To import'") == 1 })
	if took := time.Since(restarted); took > 5*time.Second {
		t.Errorf("the row was redone %s after the restart; the stopped process's lease (1 m) should not have been waited for", took.Round(time.Millisecond))
	}
}

func TestDuplicateHostRefused(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		s := db.Open(t)
		first := fakeAgent(t, db, t.TempDir(), "src-0", "noop")
		waitFor(t, "registration", 10*time.Second, func() bool { _, ok, _ := s.AgentFor(context.Background(), "src-0"); return ok })
		second := fakeAgent(t, db, t.TempDir(), "src-0", "noop")
		if code := second.ExitCode(t, 10*time.Second); code != 3 {
			t.Fatalf("second agent for src-0: exit %d, want 3\n%s", code, second.Stderr.String())
		}
		want := fmt.Sprintf("host src-0 is already served by agent pid %d", first.Pid())
		if !strings.Contains(second.Stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, second.Stderr.String())
		}
	})
}

func TestAgentMetrics(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		s := db.Open(t)
		planOn(t, s, 2, 1, 1, false)
		addr := fleettest.FreeAddr(t)
		fakeAgent(t, db, t.TempDir(), "dst-0", "noop", "--metrics-addr", addr)
		if _, err := s.Promote(context.Background(), 2, "test"); err != nil {
			t.Fatal(err)
		}
		var body string
		waitFor(t, "metrics of two steps", 10*time.Second, func() bool {
			var err error
			if body, err = fleettest.Get("http://" + addr + "/metrics"); err != nil {
				return false
			}
			return strings.Contains(body, `fleetmigrate_agent_step_seconds_count{result="done",role="dump"} 2`)
		})
		for _, want := range []string{
			`fleetmigrate_agent_polls_total{role="dump"}`, `fleetmigrate_agent_claims_total{role="dump"} 2`,
			`fleetmigrate_agent_jobs_in_flight{role="dump"} 0`, `fleetmigrate_agent_bytes_total{direction="out",role="dump"} 2048`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
		if strings.Contains(body, "db_0") || strings.Contains(body, `"dst-0"`) {
			t.Error("/metrics carries database or host names")
		}
	})
}
