package dns

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
)

// Zone is a DNS zone the updater changes names in.
type Zone struct {
	// Name is the zone's apex, normalised.
	Name string
	// Primary is host:port of the server that takes updates.
	Primary string
	// Secondaries are host:port of servers that must show a change before
	// it counts as done.
	Secondaries []string
}

// Config configures an Updater.
type Config struct {
	// Zones are the zones names may be in, with their servers.
	Zones []Zone
	// Server (host:port) is asked for the zone of a name outside Zones by
	// SOA discovery, and then takes its updates. Empty: names outside
	// Zones are refused.
	Server string
	Key    Key
	// Timeout bounds one exchange with a server. Default 5 s.
	Timeout time.Duration
	// ConfirmTimeout bounds the wait for the secondaries to show a change.
	// Default 60 s.
	ConfirmTimeout time.Duration
	// ConfirmInterval is the wait between polls of a secondary. Default
	// 250 ms.
	ConfirmInterval time.Duration
	// TTL of repointed records; 0 keeps the TTL the record had.
	TTL uint32
	// MaxBatch bounds how many names' changes for one zone go in one
	// UPDATE message when several are waiting (1: no batching). Default
	// 50, at most 200.
	MaxBatch int
	// Conns is how many updates are in flight per zone; twice as many
	// connections per server are open at most. Default 4.
	Conns int
	// Clock is the time put in TSIG signatures (tests simulate skew).
	// Default time.Now.
	Clock func() time.Time
}

// Updater changes the records of database names with TSIG-signed RFC 2136
// updates that carry, as a prerequisite, what the record must hold for the
// change to apply. It is safe for concurrent use: concurrent changes to
// the same zone share UPDATE messages (up to Config.MaxBatch).
type Updater struct {
	cfg   Config
	key   Key
	alg   string
	pools *pools

	mu sync.Mutex
	// discovered caches SOA discovery by the parent domain of a name: a
	// child zone delegated for one single name below that parent would be
	// missed (names share their parent's zone).
	discovered map[string]Zone
	batchers   map[string]*batcher
	closed     chan struct{}
	closeOnce  sync.Once
	workers    sync.WaitGroup

	messages, changes atomic.Int64
}

// Stats counts what the updater sent.
type Stats struct {
	// Messages is UPDATE messages sent; Changes the names' changes they
	// carried (more changes than messages: batching).
	Messages, Changes int64
}

// Stats returns the counts so far.
func (u *Updater) Stats() Stats { return Stats{Messages: u.messages.Load(), Changes: u.changes.Load()} }

// New checks cfg and returns an Updater. Close it when done.
func New(cfg Config) (*Updater, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.ConfirmTimeout <= 0 {
		cfg.ConfirmTimeout = 60 * time.Second
	}
	if cfg.ConfirmInterval <= 0 {
		cfg.ConfirmInterval = 250 * time.Millisecond
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 50
	}
	cfg.MaxBatch = min(cfg.MaxBatch, 200)
	if cfg.Conns <= 0 {
		cfg.Conns = 4
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	key := cfg.Key
	alg, err := key.check()
	if err != nil {
		return nil, err
	}
	if len(cfg.Zones) == 0 && cfg.Server == "" {
		return nil, errors.New("no zones and no server: list the zones with their primary, or name a server for SOA discovery")
	}
	zones := make([]Zone, 0, len(cfg.Zones))
	for _, z := range cfg.Zones {
		n, err := Normalize(z.Name)
		if err != nil {
			return nil, fmt.Errorf("zone: %w", err)
		}
		if z.Primary == "" {
			z.Primary = cfg.Server
		}
		if z.Primary == "" {
			return nil, fmt.Errorf("zone %s has no primary", show(n))
		}
		z.Name = n
		zones = append(zones, z)
	}
	// longest first: the most specific zone wins
	slices.SortFunc(zones, func(a, b Zone) int { return len(b.Name) - len(a.Name) })
	cfg.Zones = zones
	return &Updater{
		cfg: cfg, key: key, alg: alg,
		pools:      &pools{m: map[string]*pool{}, size: 2 * cfg.Conns, timeout: cfg.Timeout, tsig: map[string]string{key.Name: key.Secret}},
		discovered: map[string]Zone{}, batchers: map[string]*batcher{}, closed: make(chan struct{}),
	}, nil
}

// Close stops the batchers and closes the connections.
func (u *Updater) Close() {
	u.closeOnce.Do(func() {
		close(u.closed)
		u.workers.Wait()
		u.pools.close()
	})
}

// Key is the key the updater signs with.
func (u *Updater) Key() Key { return u.key }

// ZoneOf returns the zone name is in: the most specific configured zone,
// else the one the server names in its SOA answer.
func (u *Updater) ZoneOf(ctx context.Context, name string) (Zone, error) {
	n, err := Normalize(name)
	if err != nil {
		return Zone{}, &Error{Op: "zone", Name: name, Rcode: -1, Msg: err.Error()}
	}
	for _, z := range u.cfg.Zones {
		if n == z.Name || strings.HasSuffix(n, "."+z.Name) {
			return z, nil
		}
	}
	if u.cfg.Server == "" {
		names := make([]string, len(u.cfg.Zones))
		for i, z := range u.cfg.Zones {
			names[i] = show(z.Name)
		}
		return Zone{}, &Error{Op: "zone", Name: show(n), Rcode: -1,
			Msg: fmt.Sprintf("name %s is outside every configured zone (%s): add its zone to dns.zones or set dns.server for SOA discovery", show(n), strings.Join(names, ", "))}
	}
	parent := n
	if i := strings.IndexByte(n, '.'); i >= 0 && i < len(n)-1 {
		parent = n[i+1:]
	}
	u.mu.Lock()
	z, ok := u.discovered[parent]
	u.mu.Unlock()
	if ok {
		return z, nil
	}
	m := new(mdns.Msg)
	m.SetQuestion(n, mdns.TypeSOA)
	m.RecursionDesired = false
	r, err := u.pools.get(u.cfg.Server).exchange(ctx, m)
	if err != nil {
		return Zone{}, netError("SOA discovery", n, u.cfg.Server, err)
	}
	if r.Rcode == mdns.RcodeRefused || r.Rcode == mdns.RcodeNotAuth {
		return Zone{}, &Error{Op: "zone", Name: show(n), Server: u.cfg.Server, Rcode: r.Rcode,
			Msg: fmt.Sprintf("zone not served: %s serves no zone holding %s (%s)", u.cfg.Server, show(n), mdns.RcodeToString[r.Rcode])}
	}
	for _, rr := range slices.Concat(r.Answer, r.Ns) {
		if soa, ok := rr.(*mdns.SOA); ok {
			z = Zone{Name: strings.ToLower(soa.Hdr.Name), Primary: u.cfg.Server}
			u.mu.Lock()
			u.discovered[parent] = z
			u.mu.Unlock()
			return z, nil
		}
	}
	return Zone{}, &Error{Op: "zone", Name: show(n), Server: u.cfg.Server, Rcode: r.Rcode,
		Msg: fmt.Sprintf("zone not served: %s answered %s for the SOA of %s without naming a zone", u.cfg.Server, mdns.RcodeToString[r.Rcode], show(n))}
}

// Record is what a name holds at a server.
type Record struct {
	Name   string
	Zone   Zone
	Target Target
	// TTL is the smallest TTL of the target's records.
	TTL uint32
	// Others are the types of the name's other records (TXT, MX...): a
	// CNAME cannot join them.
	Others []string
}

// Lookup returns what name holds at its zone's primary.
func (u *Updater) Lookup(ctx context.Context, name string) (Record, error) {
	z, err := u.ZoneOf(ctx, name)
	if err != nil {
		return Record{}, err
	}
	n, _ := Normalize(name)
	return u.lookupAt(ctx, z, z.Primary, n)
}

// lookupAt asks server (authoritative for z) what n holds: one ANY query
// over TCP, or a query per type if the server answers ANY minimally
// (RFC 8482).
func (u *Updater) lookupAt(ctx context.Context, z Zone, server, n string) (Record, error) {
	rec := Record{Name: n, Zone: z}
	answer, err := u.query(ctx, z, server, n, mdns.TypeANY)
	if err != nil {
		return rec, err
	}
	for _, rr := range answer {
		if h, ok := rr.(*mdns.HINFO); ok && h.Cpu == "RFC8482" {
			answer = nil
			for _, t := range targetTypes {
				a, err := u.query(ctx, z, server, n, t)
				if err != nil {
					return rec, err
				}
				answer = append(answer, a...)
			}
			break
		}
	}
	rec.Target, rec.TTL = targetOf(n, answer)
	for _, rr := range answer {
		h := rr.Header()
		if !strings.EqualFold(h.Name, n) || slices.Contains(targetTypes, h.Rrtype) {
			continue
		}
		switch h.Rrtype {
		case mdns.TypeRRSIG, mdns.TypeNSEC, mdns.TypeNSEC3, mdns.TypeHINFO:
			continue
		}
		if t := mdns.TypeToString[h.Rrtype]; !slices.Contains(rec.Others, t) {
			rec.Others = append(rec.Others, t)
		}
	}
	return rec, nil
}

func (u *Updater) query(ctx context.Context, z Zone, server, n string, qtype uint16) ([]mdns.RR, error) {
	m := new(mdns.Msg)
	m.SetQuestion(n, qtype)
	m.RecursionDesired = false
	r, err := u.pools.get(server).exchange(ctx, m)
	if err != nil {
		return nil, netError("query", n, server, err)
	}
	switch r.Rcode {
	case mdns.RcodeSuccess:
		return r.Answer, nil
	case mdns.RcodeNameError:
		return nil, nil
	}
	return nil, u.rcodeError("query", n, z, server, r)
}

// Result is the outcome of a change to one name.
type Result struct {
	Name string
	Zone Zone
	// Changed is false when the name already held what was asked.
	Changed bool
	// Before is what the name held; TTL the TTL it has now.
	Before Record
	TTL    uint32
}

// Repoint makes name hold to instead of from, only if it holds exactly
// from: the prerequisite travels in the UPDATE, so a change made by
// someone else meanwhile is never overwritten. A name that already holds
// to is left alone (Changed false): retries are safe. A name holding
// anything else is a *MismatchError and is not changed. The TTL is kept
// unless Config.TTL is set.
func (u *Updater) Repoint(ctx context.Context, name string, from, to Target) (Result, error) {
	if from.Empty() || to.Empty() {
		return Result{}, errors.New("repoint: empty target")
	}
	return u.change(ctx, name, from, to, func(rec Record) uint32 {
		if u.cfg.TTL > 0 {
			return u.cfg.TTL
		}
		return rec.TTL
	})
}

// SetTTL gives name's records ttl, only if it holds exactly holds. The
// result's Before.TTL is the TTL it had.
func (u *Updater) SetTTL(ctx context.Context, name string, holds Target, ttl uint32) (Result, error) {
	if holds.Empty() {
		return Result{}, errors.New("set TTL: empty target")
	}
	return u.change(ctx, name, holds, holds, func(Record) uint32 { return ttl })
}

func (u *Updater) change(ctx context.Context, name string, from, to Target, ttlOf func(Record) uint32) (Result, error) {
	z, err := u.ZoneOf(ctx, name)
	if err != nil {
		return Result{}, err
	}
	n, _ := Normalize(name)
	res := Result{Name: n, Zone: z}
	rec, err := u.lookupAt(ctx, z, z.Primary, n)
	if err != nil {
		return res, err
	}
	res.Before, res.TTL = rec, rec.TTL
	ttl := ttlOf(rec)
	if rec.Target.Equal(to) && rec.TTL == ttl {
		return res, nil // already done
	}
	if !rec.Target.Equal(from) {
		if rec.Target.Equal(to) && !from.Equal(to) {
			return res, nil // repointed already; its TTL is its own business now
		}
		return res, &MismatchError{Name: n, Have: rec.Target, Expected: from}
	}
	if to.Host != "" && len(rec.Others) > 0 {
		// the server would drop the A/AAAA records and ignore the CNAME
		// (RFC 2136 3.4.2.2), leaving the name pointing nowhere
		return res, &Error{Op: "update", Name: show(n), Zone: show(z.Name), Server: z.Primary, Rcode: -1,
			Msg: fmt.Sprintf("cannot make %s a CNAME to %s: it also holds %s records, and a CNAME cannot coexist with other data; nothing was changed (point the destination's dns-target at addresses, or move those records)",
				show(n), to, strings.Join(rec.Others, ", "))}
	}
	o := &op{ctx: ctx, name: n, prereq: prerequisite(n, from), update: replacement(n, from, to, ttl), done: make(chan error, 1)}
	err = u.submit(ctx, z, o)
	var de *Error
	if errors.As(err, &de) && prereqFailed(de.Rcode) {
		// changed between the lookup and the update: say what it holds now
		now, lerr := u.lookupAt(ctx, z, z.Primary, n)
		if lerr != nil {
			return res, fmt.Errorf("%w (and reading it back: %w)", err, lerr)
		}
		return res, &MismatchError{Name: n, Have: now.Target, Expected: from}
	}
	if err != nil {
		return res, err
	}
	res.Changed, res.TTL = true, ttl
	return res, nil
}

// prerequisite: n holds exactly from among A, AAAA and CNAME (RFC 2136
// 2.4.2 "RRset exists (value dependent)" for its types, 2.4.3 "RRset
// does not exist" for the others).
func prerequisite(n string, from Target) []mdns.RR {
	out := from.RRs(n, 0)
	has := from.Types()
	for _, t := range targetTypes {
		if !slices.Contains(has, t) {
			out = append(out, &mdns.ANY{Hdr: hdr(n, t, mdns.ClassNONE, 0)})
		}
	}
	return out
}

// replacement deletes from's RRsets and adds to's records with ttl.
func replacement(n string, from, to Target, ttl uint32) []mdns.RR {
	var out []mdns.RR
	for _, t := range from.Types() {
		out = append(out, &mdns.ANY{Hdr: hdr(n, t, mdns.ClassANY, 0)})
	}
	return append(out, to.RRs(n, ttl)...)
}

// Confirm checks that name holds want at the zone's primary, then waits
// (up to Config.ConfirmTimeout) for every secondary to reach the
// primary's SOA serial and show want too.
func (u *Updater) Confirm(ctx context.Context, name string, want Target) error {
	z, err := u.ZoneOf(ctx, name)
	if err != nil {
		return err
	}
	n, _ := Normalize(name)
	rec, err := u.lookupAt(ctx, z, z.Primary, n)
	if err != nil {
		return err
	}
	if !rec.Target.Equal(want) {
		return &MismatchError{Name: n, Have: rec.Target, Expected: want}
	}
	if len(z.Secondaries) == 0 {
		return nil
	}
	serial, err := u.serial(ctx, z, z.Primary)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, u.cfg.ConfirmTimeout)
	defer cancel()
	errs := make([]error, len(z.Secondaries))
	var wg sync.WaitGroup
	for i, sec := range z.Secondaries {
		wg.Go(func() { errs[i] = u.confirmAt(ctx, z, sec, n, want, serial) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (u *Updater) confirmAt(ctx context.Context, z Zone, server, n string, want Target, serial uint32) error {
	t := time.NewTicker(u.cfg.ConfirmInterval)
	defer t.Stop()
	var last string
	for {
		s, err := u.serial(ctx, z, server)
		switch {
		case err != nil:
			last = err.Error()
		case int32(s-serial) < 0:
			last = fmt.Sprintf("it is at SOA serial %d, the primary at %d", s, serial)
		default:
			rec, err := u.lookupAt(ctx, z, server, n)
			if err == nil && rec.Target.Equal(want) {
				return nil
			}
			if err != nil {
				last = err.Error()
			} else {
				last = fmt.Sprintf("at serial %d it answers %s", s, rec.Target)
			}
		}
		select {
		case <-ctx.Done():
			return &Error{Op: "confirm", Name: show(n), Zone: show(z.Name), Server: server, Rcode: -1, Transient: true,
				Msg: fmt.Sprintf("secondary %s does not show %s -> %s after %s: %s", server, show(n), want, u.cfg.ConfirmTimeout, last)}
		case <-t.C:
		}
	}
}

func (u *Updater) serial(ctx context.Context, z Zone, server string) (uint32, error) {
	answer, err := u.query(ctx, z, server, z.Name, mdns.TypeSOA)
	if err != nil {
		return 0, err
	}
	for _, rr := range answer {
		if soa, ok := rr.(*mdns.SOA); ok {
			return soa.Serial, nil
		}
	}
	return 0, &Error{Op: "query", Name: show(z.Name), Server: server, Rcode: -1, Msg: fmt.Sprintf("%s has no SOA for zone %s: it does not serve the zone", server, show(z.Name))}
}

// op is one name's change waiting for its UPDATE message.
type op struct {
	ctx            context.Context
	name           string
	prereq, update []mdns.RR
	done           chan error
}

// batcher sends a zone's changes: each of Conns workers takes what is
// waiting (up to MaxBatch) and sends it as one message. Nothing waits for
// a batch to fill: under load batches form by themselves, when idle a
// change goes alone at once.
type batcher struct {
	u     *Updater
	zone  Zone
	queue chan *op
}

func (u *Updater) submit(ctx context.Context, z Zone, o *op) error {
	u.mu.Lock()
	b, ok := u.batchers[z.Name]
	if !ok {
		b = &batcher{u: u, zone: z, queue: make(chan *op)}
		u.batchers[z.Name] = b
		for range u.cfg.Conns {
			u.workers.Go(b.run)
		}
	}
	u.mu.Unlock()
	select {
	case b.queue <- o:
	case <-ctx.Done():
		return ctx.Err()
	case <-u.closed:
		return errors.New("the DNS updater is closed")
	}
	select {
	case err := <-o.done:
		return err
	case <-ctx.Done():
		return &Error{Op: "update", Name: show(o.name), Zone: show(z.Name), Server: z.Primary, Rcode: -1, Transient: true,
			Msg: fmt.Sprintf("update of %s: stopped waiting for the answer of %s; it may have been applied", show(o.name), z.Primary), Err: ctx.Err()}
	}
}

func (b *batcher) run() {
	for {
		var batch []*op
		select {
		case o := <-b.queue:
			batch = append(batch, o)
		case <-b.u.closed:
			return
		}
	fill:
		for len(batch) < b.u.cfg.MaxBatch {
			select {
			case o := <-b.queue:
				batch = append(batch, o)
			default:
				break fill
			}
		}
		live := batch[:0]
		for _, o := range batch {
			if err := o.ctx.Err(); err != nil {
				o.done <- err // given up before it was sent
				continue
			}
			live = append(live, o)
		}
		b.u.changes.Add(int64(len(live)))
		b.send(live)
	}
}

func (b *batcher) send(batch []*op) {
	switch len(batch) {
	case 0:
		return
	case 1:
		o := batch[0]
		o.done <- b.u.update(o.ctx, b.zone, o.name, o.prereq, o.update)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*b.u.cfg.Timeout)
	defer cancel()
	var prereq, update []mdns.RR
	for _, o := range batch {
		prereq = append(prereq, o.prereq...)
		update = append(update, o.update...)
	}
	err := b.u.update(ctx, b.zone, fmt.Sprintf("%d names (%s...)", len(batch), show(batch[0].name)), prereq, update)
	var de *Error
	if errors.As(err, &de) && prereqFailed(de.Rcode) {
		// one name's prerequisite failed, and with it the message: send
		// each alone to find which
		for _, o := range batch {
			o.done <- b.u.update(o.ctx, b.zone, o.name, o.prereq, o.update)
		}
		return
	}
	for _, o := range batch {
		o.done <- err
	}
}

// update sends one signed UPDATE for zone z.
func (u *Updater) update(ctx context.Context, z Zone, what string, prereq, update []mdns.RR) error {
	m := new(mdns.Msg)
	m.SetUpdate(z.Name)
	m.Answer = prereq
	m.Ns = update
	m.SetTsig(u.key.Name, u.alg, 300, u.cfg.Clock().Unix())
	u.messages.Add(1)
	r, err := u.pools.get(z.Primary).exchange(ctx, m)
	if r != nil && (r.Rcode != mdns.RcodeSuccess || (r.IsTsig() != nil && r.IsTsig().Error != 0)) {
		return u.rcodeError("update", what, z, z.Primary, r)
	}
	if err != nil {
		if r != nil {
			return &Error{Op: "update", Name: what, Zone: show(z.Name), Server: z.Primary, Rcode: r.Rcode, Transient: true,
				Msg: fmt.Sprintf("update of %s: the answer of %s failed TSIG verification; the update may have been applied", what, z.Primary), Err: err}
		}
		return netError("update", what, z.Primary, err)
	}
	return nil
}

// Check asks each configured zone's primary and secondaries for the
// zone's SOA, the primary with a signed query (the server checks the key
// as it would an update's), and describes what it found: for a preflight
// before the night.
func (u *Updater) Check(ctx context.Context) ([]string, error) {
	var out []string
	for _, z := range u.cfg.Zones {
		m := new(mdns.Msg)
		m.SetQuestion(z.Name, mdns.TypeSOA)
		m.RecursionDesired = false
		m.SetTsig(u.key.Name, u.alg, 300, u.cfg.Clock().Unix())
		r, err := u.pools.get(z.Primary).exchange(ctx, m)
		if r != nil && (r.Rcode != mdns.RcodeSuccess || (r.IsTsig() != nil && r.IsTsig().Error != 0)) {
			return out, u.rcodeError("signed query", z.Name, z, z.Primary, r)
		}
		if err != nil {
			return out, netError("signed query", z.Name, z.Primary, err)
		}
		serial, err := u.serial(ctx, z, z.Primary)
		if err != nil {
			return out, err
		}
		line := fmt.Sprintf("zone %s: primary %s at serial %d accepts %s", show(z.Name), z.Primary, serial, u.key)
		for _, sec := range z.Secondaries {
			s, err := u.serial(ctx, z, sec)
			if err != nil {
				line += fmt.Sprintf("; secondary %s: %v", sec, err)
				continue
			}
			line += fmt.Sprintf("; secondary %s at serial %d", sec, s)
		}
		out = append(out, line)
	}
	return out, nil
}
