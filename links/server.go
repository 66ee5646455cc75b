package links

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/storage"
)

// PresignTTL is how long the presigned URL a valid link redirects to lives.
const PresignTTL = 10 * time.Minute

// Messages customers see. None says whether another database exists.
const (
	msgForged  = "This download link is not valid.\n"
	msgExpired = "This download link has expired. Ask your provider for a new one.\n"
	msgGone    = "This dump is no longer available.\n"
	msgBusy    = "Too many requests from your address; try again in a minute.\n"
)

// Rows is what the server reads of the state table.
type Rows interface {
	Get(ctx context.Context, id int64) (statemachine.Migration, error)
}

// Server answers GET /dumps/<token>.
type Server struct {
	Rows    Rows
	Objects storage.Store
	Secret  []byte
	// Now is the clock links expire by (time.Now when nil).
	Now func() time.Time
	// RatePerMinute limits requests per client address (0: no limit).
	RatePerMinute int
	Log           *slog.Logger

	mu       sync.Mutex
	limiters map[string]*clientLimiter
}

type clientLimiter struct {
	l    *rate.Limiter
	seen time.Time
}

// Handler returns the server's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/dumps/", s.serveDump)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	return mux
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// statusWriter remembers the status and size of a response for the log.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (s *Server) serveDump(rw http.ResponseWriter, r *http.Request) {
	start := time.Now()
	w := &statusWriter{ResponseWriter: rw}
	client := clientAddr(r)
	var row int64
	defer func() {
		// One line per request, never with the token.
		s.Log.Info("download request", "method", r.Method, "path", "/dumps/<token>", "status", w.status, "bytes", w.bytes,
			"took", time.Since(start).Round(time.Millisecond).String(), "client", client, "row", row, "user_agent", r.UserAgent())
	}()
	w.Header().Set("Cache-Control", "no-store")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "Method not allowed.\n", http.StatusMethodNotAllowed)
		return
	}
	if !s.allow(client) {
		w.Header().Set("Retry-After", "60")
		http.Error(w, msgBusy, http.StatusTooManyRequests)
		return
	}
	token := strings.TrimPrefix(r.URL.Path, "/dumps/")
	c, err := Verify(s.Secret, token, s.now())
	switch {
	case errors.Is(err, ErrForged):
		http.Error(w, msgForged, http.StatusForbidden)
		return
	case errors.Is(err, ErrExpired):
		row = c.Row
		http.Error(w, msgExpired, http.StatusGone)
		return
	}
	row = c.Row
	// The row must still point at exactly this dump: a link for one row
	// never reaches another row's dump, and a dump that retention deleted
	// or a newer dump replaced is gone.
	m, err := s.Rows.Get(r.Context(), c.Row)
	if err != nil || m.DumpURL == "" || m.DumpURL != s.Objects.URL(c.Key) {
		if err != nil && !errors.Is(err, statemachine.ErrNotFound) {
			s.Log.Error("download: read the row", "row", c.Row, "err", err)
			http.Error(w, "The service is unavailable; try again later.\n", http.StatusServiceUnavailable)
			return
		}
		http.Error(w, msgGone, http.StatusGone)
		return
	}
	name := Filename(m, c.Key)
	if p, ok := s.Objects.(storage.Presigner); ok {
		if _, err := s.Objects.Stat(r.Context(), c.Key); err != nil {
			s.gone(w, c, err)
			return
		}
		u, err := p.PresignGet(r.Context(), c.Key, PresignTTL, name)
		if err != nil {
			s.Log.Error("download: presign", "row", c.Row, "err", err)
			http.Error(w, "The service is unavailable; try again later.\n", http.StatusServiceUnavailable)
			return
		}
		http.Redirect(w, r, u, http.StatusFound)
		return
	}
	o, ok := s.Objects.(storage.Opener)
	if !ok {
		http.Error(w, msgGone, http.StatusGone)
		return
	}
	f, obj, err := o.Open(r.Context(), c.Key)
	if err != nil {
		s.gone(w, c, err)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/zstd")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
	// ServeContent sets Content-Length and answers Range and HEAD requests.
	http.ServeContent(w, r, name, obj.ModTime, f)
}

func (s *Server) gone(w http.ResponseWriter, c Claims, err error) {
	if !errors.Is(err, storage.ErrNotFound) {
		s.Log.Error("download: open the dump", "row", c.Row, "err", err)
		http.Error(w, "The service is unavailable; try again later.\n", http.StatusServiceUnavailable)
		return
	}
	http.Error(w, msgGone, http.StatusGone)
}

// Filename is the name a dump downloads as: <database>-<date>.<ext>, with
// characters that file systems dislike replaced.
func Filename(m statemachine.Migration, key string) string {
	ext, date := "sql.zst", m.ConsistencyPoint
	if ref, file, err := storage.ParseDumpKey(key); err == nil {
		ext, date = strings.TrimPrefix(file, "dump."), ref.ConsistencyPoint
	}
	base := strings.Map(func(r rune) rune {
		if r < 0x20 || strings.ContainsRune(`/\:*?"<>|`, r) {
			return '_'
		}
		return r
	}, m.DatabaseName)
	return fmt.Sprintf("%s-%s.%s", base, date.UTC().Format("2006-01-02"), ext)
}

// allow applies the per-client rate limit; idle clients are forgotten.
func (s *Server) allow(client string) bool {
	if s.RatePerMinute <= 0 {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.limiters == nil {
		s.limiters = map[string]*clientLimiter{}
	}
	if len(s.limiters) > 10000 {
		for k, v := range s.limiters {
			if now.Sub(v.seen) > 10*time.Minute {
				delete(s.limiters, k)
			}
		}
	}
	cl := s.limiters[client]
	if cl == nil {
		burst := max(s.RatePerMinute/6, 1)
		cl = &clientLimiter{l: rate.NewLimiter(rate.Every(time.Minute/time.Duration(s.RatePerMinute)), burst)}
		s.limiters[client] = cl
	}
	cl.seen = now
	return cl.l.Allow()
}

// clientAddr is the request's peer address (without the port).
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// URL is the public link for a token.
func URL(publicBase, token string) string {
	return strings.TrimRight(publicBase, "/") + "/dumps/" + token
}

// ParseTTL is strconv-free sugar for flags: "720h", "30d" (days).
func ParseTTL(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("ttl %q: want a number of days like 30d, or a duration like 720h", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("ttl %q: want a duration like 720h, or days like 30d", s)
	}
	return d, nil
}
