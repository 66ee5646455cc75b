package demo

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
)

// startProc runs bin with its output in logPath (fleettest.StartProcess:
// own process group, dies with the demo).
func startProc(name, bin string, env []string, logPath string, args ...string) (*fleettest.Process, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	return fleettest.StartProcess(name, logPath, cmd)
}

// runTool runs a migrate command to completion; its output is logged to
// logPath and returned. A non-zero exit is an error with the output's tail.
func runTool(ctx context.Context, bin string, env []string, logPath string, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	if f, ferr := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); ferr == nil {
		fmt.Fprintf(f, "$ migrate %s\n%s\n", strings.Join(args, " "), out.String())
		f.Close()
	}
	if err != nil {
		if ctx.Err() != nil {
			return out.String(), ctx.Err()
		}
		return out.String(), fmt.Errorf("migrate %s: %w\n%s", strings.Join(args, " "), err, tail(out.String(), 15))
	}
	return out.String(), nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// agentsCPU is the CPU time (seconds) the agent processes used so far,
// with the tools they ran and reaped (mariadb-dump, pg_restore...).
func (d *Demo) agentsCPU() float64 {
	d.mu.Lock()
	total := d.killedCPU
	d.mu.Unlock()
	for _, p := range d.agents {
		if st, err := fleettest.ReadProcStat(p.PID()); err == nil {
			total += st.CPU + st.ChildrenCPU
		}
	}
	return total
}
