// Package fleettest starts throwaway REAL servers for tests and the demo:
// MariaDB instances and PostgreSQL clusters, each on its own loopback address
// (127.42.x.y) and the same port, as fleet hosts are in production; a BIND9
// primary taking TSIG-signed dynamic updates; and a versitygw S3 server with
// a bucket.
//
// Two ways to get a server in a test:
//
//   - NewMariaDB(t) / NewPostgres(t) / NewBIND(t) / NewS3(t): a private
//     server, stopped in t.Cleanup.
//   - SharedMariaDB(t) / SharedPostgres(t): one server per test binary,
//     started on first use; the package's TestMain must call Main(m) so it is
//     stopped at the end.
//
// A server that cannot start fails the test with the reason and the tail of
// its log; only `go test -short` skips integration tests. When a test that
// used a server fails, the server's log tail is printed with the failure.
//
// Servers are started with Start* functions too, for programs such as the
// demo that are not tests; they are then stopped with Stop.
package fleettest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// StartTimeout bounds how long a server may take to become ready.
const StartTimeout = 60 * time.Second

// Main runs the package's tests, then stops the servers shared through
// Shared* helpers and runs cleanups. Call it from TestMain.
func Main(m *testing.M, cleanups ...func()) {
	code := m.Run()
	stopShared()
	removeBuilt()
	for _, c := range cleanups {
		c()
	}
	os.Exit(code)
}

// Integration marks t as an integration test: it is skipped with -short and
// runs (and fails when a server cannot start) otherwise.
func Integration(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test against real servers: skipped with -short")
	}
}

// server is what every harness server can do for the generic helpers.
type server interface {
	Stop() error
	LogTail(lines int) string
	describe() string
}

// attachLog prints srv's log tail when t fails.
func attachLog(t testing.TB, srv server) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log (last lines):\n%s", srv.describe(), srv.LogTail(25))
		}
	})
}

// startForTest starts a private server for t and stops it at cleanup.
func startForTest[S server](t testing.TB, start func(context.Context) (S, error)) S {
	t.Helper()
	Integration(t)
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	srv, err := start(ctx)
	if err != nil {
		t.Fatalf("fleettest: %v", err)
	}
	attachLog(t, srv)
	t.Cleanup(func() {
		if err := srv.Stop(); err != nil {
			t.Errorf("fleettest: stop %s: %v", srv.describe(), err)
		}
	})
	return srv
}

// shared servers, one per kind per test binary.
var (
	sharedMu  sync.Mutex
	sharedBy  = map[string]*sharedServer{}
	sharedAll []*sharedServer
)

type sharedServer struct {
	once sync.Once
	srv  server
	err  error
}

func shared[S server](t testing.TB, kind string, start func(context.Context) (S, error)) S {
	t.Helper()
	Integration(t)
	sharedMu.Lock()
	s := sharedBy[kind]
	if s == nil {
		s = &sharedServer{}
		sharedBy[kind] = s
		sharedAll = append(sharedAll, s)
	}
	sharedMu.Unlock()
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
		defer cancel()
		s.srv, s.err = start(ctx)
	})
	if s.err != nil {
		t.Fatalf("fleettest: shared %s: %v", kind, s.err)
	}
	attachLog(t, s.srv)
	return s.srv.(S)
}

func stopShared() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	for _, s := range sharedAll {
		if s.srv != nil {
			if err := s.srv.Stop(); err != nil {
				fmt.Fprintf(os.Stderr, "fleettest: stop %s: %v\n", s.srv.describe(), err)
			}
		}
	}
	sharedAll = nil
	sharedBy = map[string]*sharedServer{}
}

// ---- processes ----

// process is a server process we started and wait on.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

// restart starts a stopped process again with the same command, as the
// service manager of a real host would after an outage.
func (p *process) restart() (*process, error) {
	if !p.exited() {
		return nil, fmt.Errorf("%s is still running", p.name)
	}
	cmd := exec.Command(p.cmd.Path, p.cmd.Args[1:]...)
	cmd.Env, cmd.Dir = p.cmd.Env, p.cmd.Dir
	if p.cmd.SysProcAttr != nil {
		attr := *p.cmd.SysProcAttr
		cmd.SysProcAttr = &attr
	}
	return startProcess(p.name, p.logPath, cmd)
}

// startProcess starts cmd with its output appended to logPath. The process
// is killed if the test binary dies (parent-death signal), so an interrupted
// run leaves no servers behind.
func startProcess(name, logPath string, cmd *exec.Cmd) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true // a terminal's Ctrl-C goes to us, not straight to the servers
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	// Pdeathsig fires when the thread that forked exits; keep it alive while
	// forking (Go does not end threads of unlocked goroutines anyway).
	runtime.LockOSThread()
	err = cmd.Start()
	runtime.UnlockOSThread()
	if err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig, waits up to timeout, then kills.
func (p *process) stop(sig syscall.Signal, timeout time.Duration) error {
	if p.exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within %s after %s; killed", p.name, timeout, sig)
	}
}

// shutdown stops a server's process with sig (killing it after timeout),
// frees its address reservation and removes its directory. Safe to call
// twice: the second call does nothing.
func shutdown(p **process, sig syscall.Signal, timeout time.Duration, release func(), dir string) error {
	if *p == nil {
		return nil
	}
	err := (*p).stop(sig, timeout)
	*p = nil
	release()
	if rerr := removeDir(dir); err == nil {
		err = rerr
	}
	return err
}

// bringUp starts a server's stopped process again (after Down or Kill)
// and waits until ready answers: the Up of every server kind.
func bringUp(ctx context.Context, pp **process, ready func(context.Context) error) error {
	if *pp == nil {
		return errors.New("server is stopped for good")
	}
	proc, err := (*pp).restart()
	if err != nil {
		return err
	}
	*pp = proc
	return waitReady(ctx, proc, ready)
}

// pause stops the process (SIGSTOP) without ending it: its sockets stay
// open and unanswered, as a hung server's would; resume continues it.
func (p *process) pause() error {
	if p == nil || p.exited() {
		return errors.New("not running")
	}
	return syscall.Kill(-p.cmd.Process.Pid, syscall.SIGSTOP) // the group: PostgreSQL's backends too
}

func (p *process) resume() error {
	if p == nil || p.exited() {
		return errors.New("not running")
	}
	return syscall.Kill(-p.cmd.Process.Pid, syscall.SIGCONT)
}

// kill ends the process at once (SIGKILL), as a crash would.
func (p *process) kill() {
	if !p.exited() {
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// waitReady polls check until it succeeds, the process exits, or ctx ends.
func waitReady(ctx context.Context, p *process, check func(context.Context) error) error {
	var last error
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		last = check(cctx)
		cancel()
		if last == nil {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited during start-up (%w); log:\n%s", p.name, p.err, tailFile(p.logPath, 30))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w (last check: %w); log:\n%s", p.name, ctx.Err(), last, tailFile(p.logPath, 30))
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// run runs a set-up command and returns its combined output in the error.
func run(ctx context.Context, cmd *exec.Cmd) error {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// TailFile returns the last lines of the file at path (a note instead
// when it cannot be read): for a test's failure output.
func TailFile(path string, lines int) string { return tailFile(path, lines) }

func tailFile(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

// ---- tools ----

// findTool looks for a program on PATH, in /usr/sbin and in the repository's
// tool directory (.tools/bin, where deploy/dev/install-deps.sh puts what it
// builds).
func findTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	dirs := []string{"/usr/sbin", "/sbin"}
	if root, err := repoRoot(); err == nil {
		dirs = append([]string{filepath.Join(root, ".tools", "bin")}, dirs...)
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH, in .tools/bin or /usr/sbin: run `make deps` (deploy/dev/install-deps.sh)", name)
}

// repoRoot finds the module root from the working directory (tests run in
// their package directory) or from FLEETMIGRATE_ROOT.
func repoRoot() (string, error) {
	if r := os.Getenv("FLEETMIGRATE_ROOT"); r != "" {
		return r, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/fleetmigrate/fleetmigrate")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the fleetmigrate repository (set FLEETMIGRATE_ROOT)")
		}
		dir = parent
	}
}

// ---- loopback addresses ----

// lockDir holds one lock file per address in use, shared by every test
// process on the machine (go test runs packages in parallel).
func lockDir() (string, error) {
	d := filepath.Join(os.TempDir(), "fleettest-locks")
	if err := os.MkdirAll(d, 0o1777); err != nil {
		return "", err
	}
	_ = os.Chmod(d, 0o1777)
	return d, nil
}

// claimAddr takes an exclusive, process-lifetime lock on host:port if the
// port is also free there.
func claimAddr(host string, port int) (release func(), ok bool) {
	dir, err := lockDir()
	if err != nil {
		return nil, false
	}
	f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("%s_%d.lock", host, port)), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	addr := net.JoinHostPort(host, fmt.Sprint(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		f.Close()
		return nil, false
	}
	l.Close()
	if pc, err := net.ListenPacket("udp", addr); err == nil {
		pc.Close()
	} else {
		f.Close()
		return nil, false
	}
	return func() { f.Close() }, true
}

// allocHost returns a free loopback address 127.42.x.y for a server on port,
// locked until release is called. Every fleet host gets its own address and
// the same port, as in production.
func allocHost(port int) (host string, release func(), err error) {
	start := rand.IntN(250 * 250)
	for i := range 250 * 250 {
		n := (start + i) % (250 * 250)
		host = fmt.Sprintf("127.42.%d.%d", n/250, n%250+2)
		if release, ok := claimAddr(host, port); ok {
			return host, release, nil
		}
	}
	return "", nil, fmt.Errorf("no free loopback address for port %d", port)
}

// allocPort returns a free port on host, locked until release is called.
func allocPort(host string) (port int, release func(), err error) {
	for range 200 {
		port = 20000 + rand.IntN(30000)
		if release, ok := claimAddr(host, port); ok {
			return port, release, nil
		}
	}
	return 0, nil, fmt.Errorf("no free port on %s", host)
}

// keepDirs leaves server directories behind for inspection when set.
func keepDirs() bool { return os.Getenv("FLEETTEST_KEEP") != "" }

// removeDir removes a server's directory unless FLEETTEST_KEEP is set.
func removeDir(dir string) error {
	if keepDirs() {
		fmt.Fprintf(os.Stderr, "fleettest: keeping %s\n", dir)
		return nil
	}
	return os.RemoveAll(dir)
}

// Process is a program started by StartProcess, for programs that are not
// tests (the demo's agents and scheduler). Safe for concurrent use: a
// fault test restarts it while the demo watches it.
type Process struct {
	mu sync.Mutex
	p  *process
}

func (p *Process) cur() *process {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.p
}

// StartProcess starts cmd as the servers are started: its output appended
// to logPath, in its own process group (a terminal's Ctrl-C reaches the
// caller, which stops it in order), killed if the caller dies.
func StartProcess(name, logPath string, cmd *exec.Cmd) (*Process, error) {
	p, err := startProcess(name, logPath, cmd)
	if err != nil {
		return nil, err
	}
	return &Process{p: p}, nil
}

// Name is the name it was started with; LogPath its log.
func (p *Process) Name() string    { return p.cur().name }
func (p *Process) LogPath() string { return p.cur().logPath }

// PID is the process ID (benchmarks read its CPU time).
func (p *Process) PID() int { return p.cur().cmd.Process.Pid }

// Exited reports whether the program has ended.
func (p *Process) Exited() bool { return p.cur().exited() }

// ExitCode is the program's exit code once it exited, -1 before or when
// it was killed by a signal.
func (p *Process) ExitCode() int {
	c := p.cur()
	if !c.exited() {
		return -1
	}
	return c.cmd.ProcessState.ExitCode()
}

// Stop sends SIGTERM, waits up to timeout, then kills.
func (p *Process) Stop(timeout time.Duration) error { return p.cur().stop(syscall.SIGTERM, timeout) }

// Kill ends the program at once with SIGKILL, as a crash or an
// out-of-memory kill would: no graceful stop, nothing flushed, children
// (tools it ran) left to their parent-death signal.
func (p *Process) Kill() { p.cur().kill() }

// Restart starts the program again with the same command, environment and
// log after it exited (as systemd's Restart= would), with env replacing
// the environment when not nil (a rotated secret).
func (p *Process) Restart(env []string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if env != nil {
		p.p.cmd.Env = env
	}
	np, err := p.p.restart()
	if err != nil {
		return err
	}
	p.p = np
	return nil
}
