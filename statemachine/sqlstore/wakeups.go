package sqlstore

import (
	"context"
	"crypto/md5" //nolint:gosec // channel names, not security: the trigger uses PostgreSQL's md5()
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	"github.com/fleetmigrate/fleetmigrate/migrations"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// Wake-ups on PostgreSQL: the trigger of migrations/postgres/00007 sends a
// NOTIFY when a row enters a queued status (on the claiming host's channel)
// or leaves flight (on the scheduler's). One listening connection per Store
// serves every subscriber of the process; it is opened on the first
// subscription and re-opened with backoff when it drops (subscribers are
// woken then: notifications may have been missed meanwhile).

const schedulerChannel = "fm_scheduler"

// wakeChannel is the NOTIFY channel of role's queued rows for host.
func wakeChannel(role statemachine.Role, host string) string {
	step, ok := statemachine.StepFor(role)
	if !ok {
		return ""
	}
	if step.Side == statemachine.SideAny {
		return "fm_dns"
	}
	return hostChannel(host)
}

// hostChannel is the NOTIFY channel of host's agents.
func hostChannel(host string) string {
	sum := md5.Sum([]byte(host)) //nolint:gosec // see the import
	return "fm_" + hex.EncodeToString(sum[:])
}

type wakeSub struct {
	ch     chan struct{}
	status string // payload to match; "" matches any
	armed  bool   // its channel is listened on (it was woken once then)
}

type waker struct {
	dsn string
	log *slog.Logger

	mu      sync.Mutex
	subs    map[string]map[*wakeSub]struct{} // channel → subscribers
	changed chan struct{}
	cancel  context.CancelFunc
	done    chan struct{}
}

// Wake implements statemachine.Waker. On MySQL/MariaDB, which have no
// notifications, the channel never receives (agents poll).
func (s *Store) Wake(role statemachine.Role, host string) (<-chan struct{}, func()) {
	step, ok := statemachine.StepFor(role)
	if !ok || s.d.name != migrations.Postgres {
		return nil, func() {}
	}
	return s.subscribe(wakeChannel(role, host), string(step.Queued))
}

// WakeScheduler implements statemachine.Waker.
func (s *Store) WakeScheduler() (<-chan struct{}, func()) {
	if s.d.name != migrations.Postgres {
		return nil, func() {}
	}
	return s.subscribe(schedulerChannel, "")
}

func (s *Store) subscribe(channel, status string) (<-chan struct{}, func()) {
	s.wakeOnce.Do(func() {
		s.waker = &waker{dsn: s.dsn, log: s.log, subs: map[string]map[*wakeSub]struct{}{}, changed: make(chan struct{}, 1)}
	})
	w := s.waker
	sub := &wakeSub{ch: make(chan struct{}, 1), status: status}
	w.mu.Lock()
	if w.subs[channel] == nil {
		w.subs[channel] = map[*wakeSub]struct{}{}
	}
	w.subs[channel][sub] = struct{}{}
	if w.cancel == nil {
		ctx, cancel := context.WithCancel(context.Background())
		w.cancel, w.done = cancel, make(chan struct{})
		go w.run(ctx)
	}
	w.mu.Unlock()
	w.poke()
	return sub.ch, func() {
		w.mu.Lock()
		delete(w.subs[channel], sub)
		if len(w.subs[channel]) == 0 {
			delete(w.subs, channel)
		}
		w.mu.Unlock()
		w.poke()
	}
}

// poke tells the listening loop that the set of channels changed.
func (w *waker) poke() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

func (w *waker) close() {
	w.mu.Lock()
	cancel, done := w.cancel, w.done
	w.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (w *waker) dispatch(channel, payload string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for sub := range w.subs[channel] {
		if sub.status == "" || sub.status == payload {
			select {
			case sub.ch <- struct{}{}:
			default:
			}
		}
	}
}

// wakeAll wakes every subscriber (all: after a connection was lost, when
// notifications may have been missed) or those whose channel has just
// become listened on: rows may have been queued before.
func (w *waker) wakeAll(all bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, subs := range w.subs {
		for sub := range subs {
			if all || !sub.armed {
				sub.armed = true
				select {
				case sub.ch <- struct{}{}:
				default:
				}
			}
		}
	}
}

func (w *waker) channels() map[string]bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]bool, len(w.subs))
	for ch := range w.subs {
		out[ch] = true
	}
	return out
}

// run keeps one connection listening on the subscribed channels until ctx
// ends.
func (w *waker) run(ctx context.Context) {
	defer close(w.done)
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		err := w.listen(ctx)
		if ctx.Err() != nil {
			return
		}
		backoff = min(max(2*backoff, 500*time.Millisecond), 30*time.Second)
		w.log.Warn("state database notifications interrupted; agents poll meanwhile", "err", err, "retry_in", backoff.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
	}
}

func (w *waker) listen(ctx context.Context) error {
	cfg, err := pgconn.ParseConfig(w.dsn)
	if err != nil {
		return err
	}
	cfg.OnNotification = func(_ *pgconn.PgConn, n *pgconn.Notification) { w.dispatch(n.Channel, n.Payload) }
	// Interrupting a wait must not send a cancel request, which could land
	// on the next LISTEN: a deadline on the socket only.
	cfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: c.Conn()}
	}
	cctx, cancel := context.WithTimeout(ctx, DefaultConnectTimeout)
	conn, err := pgconn.ConnectConfig(cctx, cfg)
	cancel()
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	// Anything may have happened while nobody listened.
	defer w.wakeAll(true)
	listening := map[string]bool{}
	for {
		want := w.channels()
		for ch := range want {
			if !listening[ch] {
				if err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()).Close(); err != nil {
					return err
				}
				listening[ch] = true
			}
		}
		for ch := range listening {
			if !want[ch] {
				if err := conn.Exec(ctx, "UNLISTEN "+pgx.Identifier{ch}.Sanitize()).Close(); err != nil {
					return err
				}
				delete(listening, ch)
			}
		}
		w.wakeAll(false)
		wctx, stop := context.WithCancel(ctx)
		go func() {
			select {
			case <-w.changed:
				stop()
			case <-wctx.Done():
			}
		}()
		err := conn.WaitForNotification(wctx)
		interrupted := wctx.Err() != nil
		stop()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err == nil:
		case interrupted && !conn.IsClosed():
			// the channel set changed: LISTEN/UNLISTEN, then wait again
		default:
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !conn.IsClosed() {
				continue
			}
			return err
		}
	}
}
