package dns

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// pool keeps TCP connections to one server open between exchanges: a
// connection per exchange would cost a handshake per update.
type pool struct {
	addr    string
	timeout time.Duration
	tsig    map[string]string
	idle    chan *mdns.Conn
	// slots bounds the connections open at once: a server limits its TCP
	// clients (BIND: tcp-clients 150) and times out the rest.
	slots chan struct{}
}

func newPool(addr string, size int, timeout time.Duration, tsig map[string]string) *pool {
	return &pool{addr: addr, timeout: timeout, tsig: tsig, idle: make(chan *mdns.Conn, size), slots: make(chan struct{}, size)}
}

// exchange sends m and reads the answer. A connection the server closed
// while idle is replaced once. A signed answer is verified against m's
// signature; it is returned even when verification fails.
func (p *pool) exchange(ctx context.Context, m *mdns.Msg) (*mdns.Msg, error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-p.slots }()
	for attempt := 0; ; attempt++ {
		var c *mdns.Conn
		reused := false
		select {
		case c = <-p.idle:
			reused = true
		default:
			d := net.Dialer{Timeout: p.timeout}
			nc, err := d.DialContext(ctx, "tcp", p.addr)
			if err != nil {
				return nil, err
			}
			c = &mdns.Conn{Conn: nc}
		}
		r, err := p.roundTrip(ctx, c, m)
		if err == nil {
			p.put(c)
			return r, nil
		}
		_ = c.Close()
		var ne net.Error
		timeout := errors.As(err, &ne) && ne.Timeout()
		if r == nil && reused && attempt == 0 && ctx.Err() == nil && !timeout {
			continue // the server closed it while idle
		}
		return r, err
	}
}

// roundTrip writes m on c and reads its answer. It signs and verifies
// itself: miekg/dns's Conn carries one request's MAC into the next
// request's signature (meant for zone transfers), which a server rejects
// (BADSIG) on a reused connection.
func (p *pool) roundTrip(ctx context.Context, c *mdns.Conn, m *mdns.Msg) (*mdns.Msg, error) {
	deadline := time.Now().Add(p.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := c.SetDeadline(deadline); err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	var out []byte
	var mac, secret string
	var err error
	if t := m.IsTsig(); t != nil {
		secret = p.tsig[t.Hdr.Name]
		out, mac, err = mdns.TsigGenerate(m, secret, "", false)
	} else {
		out, err = m.Pack()
	}
	if err != nil {
		return nil, err
	}
	if _, err := c.Write(out); err != nil {
		return nil, err
	}
	raw, err := c.ReadMsgHeader(nil)
	if err != nil {
		return nil, err
	}
	r := new(mdns.Msg)
	if err := r.Unpack(raw); err != nil {
		return nil, err
	}
	if r.Id != m.Id {
		return nil, mdns.ErrId
	}
	if t := r.IsTsig(); t != nil && secret != "" {
		return r, mdns.TsigVerify(raw, secret, mac, false)
	}
	return r, nil
}

func (p *pool) put(c *mdns.Conn) {
	select {
	case p.idle <- c:
	default:
		_ = c.Close()
	}
}

func (p *pool) close() {
	for {
		select {
		case c := <-p.idle:
			_ = c.Close()
		default:
			return
		}
	}
}

// pools holds a pool per server address.
type pools struct {
	mu      sync.Mutex
	m       map[string]*pool
	size    int
	timeout time.Duration
	tsig    map[string]string
}

func (ps *pools) get(addr string) *pool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	p, ok := ps.m[addr]
	if !ok {
		p = newPool(addr, ps.size, ps.timeout, ps.tsig)
		ps.m[addr] = p
	}
	return p
}

func (ps *pools) close() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, p := range ps.m {
		p.close()
	}
}
