package fleettest

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Proxy is a TCP proxy on its own loopback address in front of a server,
// for network faults without root: Pause holds every byte (connections stay
// open and silent, as behind a dead switch), Slow throttles, Cut resets
// every open connection. New connections are accepted in every mode; while
// paused they are silent too.
type Proxy struct {
	// Addr is host:port to connect to instead of the server's.
	Addr   string
	target string
	ln     net.Listener

	mu     sync.Mutex
	cond   *sync.Cond
	paused bool
	rate   int64 // bytes per second each way per connection; 0: full speed
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
	// Forwarded counts the bytes that went through, both ways.
	forwarded int64
}

// StartProxy listens on a free loopback address and forwards every
// connection to target. Close stops it.
func StartProxy(target string) (*Proxy, error) {
	host, release, err := allocHost(0)
	if err != nil {
		return nil, err
	}
	release() // the port is the kernel's choice: no clash to guard against
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, fmt.Errorf("proxy for %s: %w", target, err)
	}
	p := &Proxy{Addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.connect(c)
	}
}

// connect dials the target for an accepted connection and pipes both ways.
func (p *Proxy) connect(c net.Conn) {
	defer p.wg.Done()
	up, err := net.DialTimeout("tcp", p.target, 10*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	if !p.track(c, up) {
		return
	}
	p.wg.Add(2)
	go p.pipe(up, c)
	go p.pipe(c, up)
}

// track registers a connection pair; false once the proxy is closed.
func (p *Proxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		for _, c := range conns {
			_ = c.Close()
		}
		return false
	}
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
	return true
}

// pipe copies src to dst a chunk at a time, waiting while paused and
// pacing when slowed; the end of either side closes both.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	defer p.forget(dst, src)
	buf := make([]byte, 16<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			rate, ok := p.gate()
			if !ok {
				return
			}
			chunk := buf[:n]
			for len(chunk) > 0 {
				step := len(chunk)
				if rate > 0 {
					step = min(step, max(int(rate/10), 1))
				}
				p.mu.Lock()
				p.forwarded += int64(step)
				p.mu.Unlock()
				if _, werr := dst.Write(chunk[:step]); werr != nil {
					return
				}
				chunk = chunk[step:]
				if rate > 0 {
					time.Sleep(time.Duration(int64(step) * int64(time.Second) / rate))
				}
				if rate, ok = p.gate(); !ok {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// gate waits while the proxy is paused and returns the rate; false once
// the proxy is closed.
func (p *Proxy) gate() (int64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.paused && !p.closed {
		p.cond.Wait()
	}
	return p.rate, !p.closed
}

func (p *Proxy) forget(conns ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
		delete(p.conns, c)
	}
}

// Pause holds every byte from now on, both ways, on open and new
// connections; Resume lets them through again.
func (p *Proxy) Pause() { p.set(func() { p.paused = true }) }

// Resume ends Pause.
func (p *Proxy) Resume() { p.set(func() { p.paused = false }) }

// Slow limits every connection to bytesPerSecond each way (0: full speed).
func (p *Proxy) Slow(bytesPerSecond int64) { p.set(func() { p.rate = bytesPerSecond }) }

func (p *Proxy) set(f func()) {
	p.mu.Lock()
	f()
	p.mu.Unlock()
	p.cond.Broadcast()
}

// Cut resets every open connection (as a firewall dropping its state
// would); new connections go through. It returns how many were cut.
func (p *Proxy) Cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // RST, not FIN
		}
		_ = c.Close()
		n++
	}
	return n / 2
}

// Forwarded is how many bytes went through so far, both ways.
func (p *Proxy) Forwarded() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.forwarded
}

// Close stops listening and closes every connection.
func (p *Proxy) Close() error {
	err := p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.cond.Broadcast()
	p.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
