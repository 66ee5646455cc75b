package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Progress receives how a dump, import or verification advances; nil
// fields are not reported.
type Progress struct {
	// Bytes counts the dump's bytes written or read.
	Bytes *atomic.Int64
	// Tables is called after each table's checksum.
	Tables func(done, total int)
}

// ByteCounter is p.Bytes, nil-safe.
func (p *Progress) ByteCounter() *atomic.Int64 {
	if p == nil {
		return nil
	}
	return p.Bytes
}

// TableFunc is p.Tables, nil-safe.
func (p *Progress) TableFunc() func(int, int) {
	if p == nil {
		return nil
	}
	return p.Tables
}

// RunTool runs an engine's program (a dump or restore tool) with exactly
// env as its environment and stdout going to w; its exit status and the
// tail of its stderr make the error. Never a shell. stdin, when not nil, is
// copied to the program; if reading it fails (a corrupt or cut-off dump)
// the program is killed before it sees the end of its input, so that it
// cannot take a truncated input for a whole one.
func RunTool(ctx context.Context, tool string, args, env []string, w io.Writer, stdin io.Reader) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	name := filepath.Base(tool)
	cmd := exec.CommandContext(ctx, tool, args...)
	cmd.Env = env
	stderr := &TailBuffer{Max: 16 << 10}
	cmd.Stdout, cmd.Stderr = w, stderr
	cmd.WaitDelay = 10 * time.Second
	var in io.WriteCloser
	var err error
	if stdin != nil {
		if in, err = cmd.StdinPipe(); err != nil {
			return err
		}
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	var feedErr error
	if stdin != nil {
		_, feedErr = io.Copy(in, stdin)
		if feedErr != nil && !errors.Is(feedErr, os.ErrClosed) && !isBrokenPipe(feedErr) {
			cancel(feedErr) // kill before it sees a clean end of input
		} else {
			feedErr = nil
			_ = in.Close()
		}
	}
	err = cmd.Wait()
	if feedErr != nil {
		return fmt.Errorf("%s stopped: its input failed: %w", name, feedErr)
	}
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = "no message"
		}
		if ctx.Err() != nil && context.Cause(ctx) != nil {
			return fmt.Errorf("%s stopped: %w (%s)", name, context.Cause(ctx), msg)
		}
		return &ToolError{Tool: name, Err: err, Stderr: msg}
	}
	return nil
}

// ToolError is a tool that failed: its exit status and what it said.
type ToolError struct {
	Tool   string
	Err    error
	Stderr string
}

func (e *ToolError) Error() string { return fmt.Sprintf("%s failed (%v): %s", e.Tool, e.Err, e.Stderr) }
func (e *ToolError) Unwrap() error { return e.Err }

func isBrokenPipe(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "broken pipe") || strings.Contains(err.Error(), "file already closed"))
}

// TailBuffer keeps the last Max bytes written to it.
type TailBuffer struct {
	Max int
	mu  sync.Mutex
	b   []byte
}

func (t *TailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.Max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.Max:]...)
	}
	return len(p), nil
}

func (t *TailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// Bytes is a copy of what is kept.
func (t *TailBuffer) Bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return bytes.Clone(t.b)
}

// toolVersions caches each program's --version line by path.
var toolVersions sync.Map

// ToolVersion runs path --version once per process and returns its output.
func ToolVersion(ctx context.Context, path string) (string, error) {
	if v, ok := toolVersions.Load(path); ok {
		return v.(string), nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("run %s --version: %w", path, err)
	}
	v := strings.TrimSpace(string(out))
	toolVersions.Store(path, v)
	return v, nil
}

// CountingWriter counts the bytes written through it in N.
type CountingWriter struct {
	W io.Writer
	N *atomic.Int64
}

// CountWriter counts what is written to w in n (a new counter when nil).
func CountWriter(w io.Writer, n *atomic.Int64) *CountingWriter {
	if n == nil {
		n = new(atomic.Int64)
	}
	return &CountingWriter{W: w, N: n}
}

func (c *CountingWriter) Write(p []byte) (int, error) {
	n, err := c.W.Write(p)
	c.N.Add(int64(n))
	return n, err
}

// CountingReader counts the bytes read through it in N.
type CountingReader struct {
	R io.Reader
	N *atomic.Int64
}

// CountReader counts what is read from r in n (a new counter when nil).
func CountReader(r io.Reader, n *atomic.Int64) *CountingReader {
	if n == nil {
		n = new(atomic.Int64)
	}
	return &CountingReader{R: r, N: n}
}

func (c *CountingReader) Read(p []byte) (int, error) {
	n, err := c.R.Read(p)
	c.N.Add(int64(n))
	return n, err
}

// PartWriter is a dump's destination that wants to know where each part
// of a dump taken in parts begins (an import that loads the parts as they
// come: the schema before the rows, the rows over several sessions).
// StartPart is called before the part's first byte; a dump in one run is
// one part named "whole".
type PartWriter interface {
	io.Writer
	StartPart(name string) error
}

// PipeImport is an ImportWriter over a pipe: load reads the dump as it is
// written, in a goroutine of its own; it must fail when its reader fails.
func PipeImport(load func(r io.Reader) error) ImportWriter {
	pr, pw := io.Pipe()
	p := &pipeImport{pw: pw, done: make(chan struct{})}
	go func() {
		p.err = load(pr)
		pr.CloseWithError(fmt.Errorf("the import stopped reading: %w", p.err))
		close(p.done)
	}()
	return p
}

type pipeImport struct {
	pw   *io.PipeWriter
	done chan struct{}
	err  error // load's, once done is closed
}

func (p *pipeImport) Write(b []byte) (int, error) { return p.pw.Write(b) }

func (p *pipeImport) Finish(_ *Manifest, dumpErr error) error {
	if dumpErr != nil {
		p.pw.CloseWithError(dumpErr)
		<-p.done // the import fails of the dump's failure, the cause
		return dumpErr
	}
	_ = p.pw.Close()
	<-p.done
	return p.err
}
