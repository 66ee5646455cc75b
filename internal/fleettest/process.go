package fleettest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Build compiles the package at path (relative to the test's directory,
// e.g. "." or "./testdata/fakeagent") once per test binary and returns the
// executable. Tests that run the built program as a real process test what
// users run, without the race detector's instrumentation. Main removes the
// binaries.
func Build(t testing.TB, path string) string {
	t.Helper()
	buildMu.Lock()
	b := built[path]
	if b == nil {
		b = &buildResult{}
		built[path] = b
	}
	buildMu.Unlock()
	b.once.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		}
		dir, err := os.MkdirTemp("", "fleettest-bin-")
		if err != nil {
			b.err = err
			return
		}
		b.dir = dir
		b.bin = filepath.Join(dir, filepath.Base(filepath.Clean(path)))
		if filepath.Clean(path) == "." {
			wd, _ := os.Getwd()
			b.bin = filepath.Join(dir, filepath.Base(wd))
		}
		if out, err := exec.Command(goTool, "build", "-o", b.bin, path).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %w\n%s", path, err, out)
		}
	})
	if b.err != nil {
		t.Fatalf("fleettest: %v", b.err)
	}
	return b.bin
}

type buildResult struct {
	once     sync.Once
	dir, bin string
	err      error
}

var (
	buildMu sync.Mutex
	built   = map[string]*buildResult{}
)

func removeBuilt() {
	buildMu.Lock()
	defer buildMu.Unlock()
	for _, b := range built {
		if b.dir != "" {
			_ = os.RemoveAll(b.dir)
		}
	}
	built = map[string]*buildResult{}
}

// Proc is a program a test started; it is killed at cleanup.
type Proc struct {
	Cmd            *exec.Cmd
	Stdout, Stderr *Output
	done           chan struct{}
	err            error
}

// Start runs bin with args and env (added to the test's environment).
func Start(t testing.TB, bin string, env []string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Cmd: exec.Command(bin, args...), Stdout: &Output{}, Stderr: &Output{}, done: make(chan struct{})}
	p.Cmd.Env = append(os.Environ(), env...)
	p.Cmd.Stdout, p.Cmd.Stderr = p.Stdout, p.Stderr
	if err := p.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.Cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.Cmd.Process.Kill()
		<-p.done
	})
	return p
}

// Pid is the process's id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Running reports whether the process has not exited yet.
func (p *Proc) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// ExitCode waits up to d for the process to exit and returns its code; the
// test fails if it is still running, with its stderr.
func (p *Proc) ExitCode(t testing.TB, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		t.Fatalf("process still running after %s\nstderr:\n%s", d, p.Stderr.String())
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

// Output collects a process's output while a test reads it.
type Output struct {
	mu  sync.Mutex
	buf []byte
}

var _ io.Writer = (*Output)(nil)

func (o *Output) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf = append(o.buf, b...)
	return len(b), nil
}

func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return string(o.buf)
}

// FreeAddr returns a loopback address with a port free right now, for a
// program under test to listen on.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Get fetches url and returns the body.
func Get(url string) (string, error) {
	resp, err := http.Get(url) //nolint:gosec // test helper, loopback URLs
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), err
}
