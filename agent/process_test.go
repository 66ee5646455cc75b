package agent_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// The process tests run agent/testdata/fakeagent: the migrate-agent command
// (internal/agentcmd) with fake handlers whose effects are files.
var (
	buildOnce sync.Once
	builtDir  string
	fakeBin   string
	buildErr  error
)

func fakeAgentBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		}
		if builtDir, buildErr = os.MkdirTemp("", "fakeagent-"); buildErr != nil {
			return
		}
		fakeBin = filepath.Join(builtDir, "fakeagent")
		if out, err := exec.Command(goTool, "build", "-o", fakeBin, "./testdata/fakeagent").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build fakeagent: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return fakeBin
}

func removeBuilt() {
	if builtDir != "" {
		_ = os.RemoveAll(builtDir)
	}
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

// syncBuffer collects a process's output while tests read it.
type syncBuffer = logBuffer

type proc struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
	err    error
}

// fakeAgent starts the fake agent for host with mode; dir receives the
// handler's effect files.
func fakeAgent(t *testing.T, db stateDB, dir, host, mode string, extra ...string) *proc {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "agent.yaml")
	body := "agent:\n  heartbeat-interval: 500ms\n  shutdown-timeout: 1s\nlog:\n  format: json\n"
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--config", cfg, "--host", host, "--roles", "dump", "--poll-interval", "100ms", "--lease", "2s"}, extra...)
	p := &proc{cmd: exec.Command(fakeAgentBinary(t), args...), stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), "FLEETMIGRATE_STATE_DSN="+db.dsn, "FLEETMIGRATE_STATE_DRIVER="+db.driver,
		"FAKEAGENT_MODE="+mode, "FAKEAGENT_DIR="+dir, "FAKEAGENT_SLEEP=1h")
	p.cmd.Stdout, p.cmd.Stderr = io.Discard, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *proc) exitCode(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("process still running after %s\n%s", within, p.stderr.String())
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatal(p.err)
	}
	return 0
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// TestKill9MidStep: the agent dies (SIGKILL) while a step has its effect in
// place. A restarted agent takes the host over at once, waits for the lease
// to expire, runs the handler's recovery (the effect is undone), takes the
// row back and redoes the step. The dead attempt's late "success" is refused
// by the fence.
func TestKill9MidStep(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		s := db.open(t)
		planOn(t, s, 1, 1, 1, false)
		dir := t.TempDir()
		first := fakeAgent(t, db, dir, "src-0", "block")
		if _, err := s.Promote(context.Background(), 1, "test"); err != nil {
			t.Fatal(err)
		}
		effect := filepath.Join(dir, "1.effect")
		waitFor(t, "the step to start", 10*time.Second, func() bool { return exists(effect) })
		claim, err := s.Get(context.Background(), 1)
		if err != nil || claim.Status != statemachine.Dumping || claim.Attempt != 1 {
			t.Fatalf("claimed row: %+v, %v", claim, err)
		}
		if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		first.exitCode(t, 5*time.Second)

		second := fakeAgent(t, db, dir, "src-0", "noop")
		waitFor(t, "the row to be redone", 20*time.Second, func() bool { return count(t, s, "WHERE status = 'To import'") == 1 })
		if !exists(filepath.Join(dir, "1.recovered")) || exists(effect) {
			t.Errorf("recovery: recovered %v, effect still there %v", exists(filepath.Join(dir, "1.recovered")), exists(effect))
		}
		ran, _ := os.ReadFile(filepath.Join(dir, "1.ran"))
		want := fmt.Sprintf("pid %d attempt 1\npid %d attempt 2\n", first.cmd.Process.Pid, second.cmd.Process.Pid)
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
		if !strings.Contains(second.stderr.String(), "taking over from a previous agent process") {
			t.Errorf("second agent did not say it took over:\n%s", second.stderr.String())
		}
	})
}

// TestSIGTERMWaitsThenCancels: SIGTERM with a step that does not finish:
// the agent waits the shutdown timeout, cancels the step (which undoes its
// effect), gives the row back to To dump and exits 0.
func TestSIGTERMWaitsThenCancels(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		s := db.open(t)
		planOn(t, s, 1, 1, 1, false)
		dir := t.TempDir()
		p := fakeAgent(t, db, dir, "src-0", "block")
		if _, err := s.Promote(context.Background(), 1, "test"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the step to start", 10*time.Second, func() bool { return exists(filepath.Join(dir, "1.effect")) })
		sent := time.Now()
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := p.exitCode(t, 10*time.Second); code != 0 {
			t.Fatalf("exit %d\n%s", code, p.stderr.String())
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
			if !strings.Contains(p.stderr.String(), want) {
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
	waitFor(t, "the retry message", 10*time.Second, func() bool { return strings.Contains(p.stderr.String(), "cannot start yet; retrying") })
	if !strings.Contains(p.stderr.String(), srv.Addr()) || !strings.Contains(p.stderr.String(), "connection refused") {
		t.Errorf("retry message does not name the server and the cause:\n%s", p.stderr.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := srv.Up(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the agent to start", 40*time.Second, func() bool { return strings.Contains(p.stderr.String(), "agent started") })
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.exitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func TestDuplicateHostRefused(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		s := db.open(t)
		first := fakeAgent(t, db, t.TempDir(), "src-0", "noop")
		waitFor(t, "registration", 10*time.Second, func() bool { _, ok, _ := s.AgentFor(context.Background(), "src-0"); return ok })
		second := fakeAgent(t, db, t.TempDir(), "src-0", "noop")
		if code := second.exitCode(t, 10*time.Second); code != 3 {
			t.Fatalf("second agent for src-0: exit %d, want 3\n%s", code, second.stderr.String())
		}
		want := fmt.Sprintf("host src-0 is already served by agent pid %d", first.cmd.Process.Pid)
		if !strings.Contains(second.stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, second.stderr.String())
		}
	})
}

func TestAgentMetrics(t *testing.T) {
	engines(t, func(t *testing.T, db stateDB) {
		s := db.open(t)
		planOn(t, s, 2, 1, 1, false)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		fakeAgent(t, db, t.TempDir(), "src-0", "noop", "--metrics-addr", addr)
		if _, err := s.Promote(context.Background(), 2, "test"); err != nil {
			t.Fatal(err)
		}
		var body string
		waitFor(t, "metrics of two steps", 10*time.Second, func() bool {
			resp, err := http.Get("http://" + addr + "/metrics")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			body = string(b)
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
		if strings.Contains(body, "db_0") || strings.Contains(body, `"src-0"`) {
			t.Error("/metrics carries database or host names")
		}
	})
}
