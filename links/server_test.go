package links_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/statetest"
	"github.com/fleetmigrate/fleetmigrate/links"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/storage"
	"github.com/fleetmigrate/fleetmigrate/storage/file"
	"github.com/fleetmigrate/fleetmigrate/storage/s3"
)

func TestMain(m *testing.M) { fleettest.Main(m) }

var cp = time.Date(2026, 11, 23, 21, 0, 0, 0, time.UTC)

// doneRow plans a row for database name on host pair n, stores a real
// compressed dump for it, and walks it to Done.
func doneRow(t *testing.T, s statemachine.Store, objects storage.Store, n int, name string) (statemachine.Migration, string, []byte) {
	t.Helper()
	ctx := context.Background()
	src, dst := fmt.Sprintf("src-%d", n), fmt.Sprintf("dst-%d", n)
	if _, err := s.Plan(ctx, []statemachine.Planned{{Engine: statemachine.EngineMySQL, DatabaseName: name, Source: src, Destination: dst}}, "test", false); err != nil {
		t.Fatal(err)
	}
	rows, _ := s.List(ctx, statemachine.Filter{Source: src})
	if _, err := s.Promote(ctx, 1, "test"); err != nil {
		t.Fatal(err)
	}
	key := storage.DumpRef{Engine: "mysql", Source: src, Database: name, ConsistencyPoint: cp}.DumpKey("sql")
	level, _ := storage.ParseLevel("fastest")
	res, err := storage.PutCompressed(ctx, objects, key, level, storage.PutOptions{}, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "-- dump of %s\n%s", name, strings.Repeat("INSERT INTO t VALUES (1);\n", 5000))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	stored := readObject(t, objects, key)
	for _, st := range []struct {
		role statemachine.Role
		host string
		f    statemachine.Fields
	}{
		{statemachine.RoleDump, dst, statemachine.Fields{DumpURL: objects.URL(key), DumpSHA256: res.SHA256, DumpBytes: res.Size, ConsistencyPoint: cp}},
		{statemachine.RoleImport, dst, statemachine.Fields{}},
		{statemachine.RoleClose, src, statemachine.Fields{}},
	} {
		ms, err := s.Claim(ctx, statemachine.ClaimRequest{Role: st.role, Host: st.host, Owner: st.host + "/t", Limit: 1, Lease: time.Minute})
		if err != nil || len(ms) != 1 {
			t.Fatal(ms, err)
		}
		if err := s.Advance(ctx, &ms[0], st.f, ""); err != nil {
			t.Fatal(err)
		}
	}
	m, _ := s.Get(ctx, rows[0].ID)
	if m.Status != statemachine.Done {
		t.Fatalf("row not Done: %s", m.Status)
	}
	return m, key, stored
}

func readObject(t *testing.T, objects storage.Store, key string) []byte {
	t.Helper()
	rc, _, err := objects.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return b
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.now = t }

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// response is what a GET returned, read to the end.
type response struct {
	StatusCode int
	Header     http.Header
}

func get(t *testing.T, url string, header ...string) (response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{StatusCode: resp.StatusCode, Header: resp.Header}, b
}

func TestDownloadLinks(t *testing.T) {
	backends := []struct {
		name string
		open func(t *testing.T) storage.Store
	}{
		{"Directory", func(t *testing.T) storage.Store {
			s, err := file.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return s
		}},
		{"S3", func(t *testing.T) storage.Store {
			srv := fleettest.SharedS3(t)
			s, err := s3.New(context.Background(), s3.Config{Endpoint: srv.Endpoint, Region: srv.Region, Bucket: srv.NewBucket(t), PathStyle: true,
				AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			srvPG := fleettest.SharedPostgres(t)
			db := statetest.Upgraded(t, "postgres", srvPG.DSN(srvPG.NewDatabase(t)))
			s := db.Open(t)
			objects := b.open(t)
			rowA, keyA, bytesA := doneRow(t, s, objects, 0, "shop")
			rowB, keyB, _ := doneRow(t, s, objects, 1, "ünï côdé/blog")

			clk := &clock{now: cp.Add(time.Hour)}
			var logs syncBuf
			ls := &links.Server{Rows: s, Objects: objects, Secret: secret, Now: clk.Now, Log: slog.New(slog.NewTextHandler(&logs, nil))}
			hs := httptest.NewServer(ls.Handler())
			defer hs.Close()
			link := func(row int64, key string, ttl time.Duration) string {
				tok, err := links.Sign(secret, links.Claims{Row: row, Key: key, Expires: clk.Now().Add(ttl)})
				if err != nil {
					t.Fatal(err)
				}
				return links.URL(hs.URL, tok)
			}

			// A valid link downloads exactly the stored bytes.
			urlA := link(rowA.ID, keyA, 24*time.Hour)
			resp, body := get(t, urlA)
			if resp.StatusCode != 200 || !bytes.Equal(body, bytesA) {
				t.Fatalf("valid link: %d, %d bytes (want %d)", resp.StatusCode, len(body), len(bytesA))
			}
			if cd := resp.Header.Get("Content-Disposition"); b.name == "Directory" && !strings.Contains(cd, "filename=shop-2026-11-23.sql.zst") {
				t.Errorf("Content-Disposition %q", cd)
			}
			if b.name == "Directory" {
				if resp.Header.Get("Content-Length") != fmt.Sprint(len(bytesA)) {
					t.Errorf("Content-Length %q", resp.Header.Get("Content-Length"))
				}
				resp, body = get(t, urlA, "Range", "bytes=10-19")
				if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, bytesA[10:20]) {
					t.Errorf("range: %d %q", resp.StatusCode, body)
				}
			}
			// Row B's odd name downloads under a safe file name.
			resp, _ = get(t, link(rowB.ID, keyB, time.Hour))
			if resp.StatusCode != 200 {
				t.Fatalf("row B: %d", resp.StatusCode)
			}
			if b.name == "Directory" && !strings.Contains(resp.Header.Get("Content-Disposition"), "blog-2026-11-23.sql.zst") {
				t.Errorf("row B's Content-Disposition: %q", resp.Header.Get("Content-Disposition"))
			}

			// Tampered: 403.
			tampered := urlA[:len(urlA)-5] + "AAAAA"
			if resp, body := get(t, tampered); resp.StatusCode != 403 || !strings.Contains(string(body), "not valid") {
				t.Errorf("tampered: %d %q", resp.StatusCode, body)
			}
			// A link for row A cannot reach row B's dump, and says no more than
			// a link for a row that does not exist.
			_, gone := get(t, link(999999, keyA, time.Hour))
			if resp, body := get(t, link(rowA.ID, keyB, time.Hour)); resp.StatusCode != 410 || !bytes.Equal(body, gone) {
				t.Errorf("row A's link to row B's dump: %d %q (a missing row says %q)", resp.StatusCode, body, gone)
			}
			// Expired: 410.
			clk.Set(clk.Now().Add(25 * time.Hour))
			if resp, body := get(t, urlA); resp.StatusCode != 410 || !strings.Contains(string(body), "expired") {
				t.Errorf("expired: %d %q", resp.StatusCode, body)
			}
			// Deleted by retention: 410.
			fresh := link(rowA.ID, keyA, time.Hour)
			if ok, err := s.ExpireDump(context.Background(), rowA.ID, rowA.DumpURL, "gc", "retention"); err != nil || !ok {
				t.Fatal(ok, err)
			}
			if err := objects.Delete(context.Background(), keyA); err != nil {
				t.Fatal(err)
			}
			if resp, body := get(t, fresh); resp.StatusCode != 410 || !bytes.Equal(body, gone) {
				t.Errorf("after gc: %d %q", resp.StatusCode, body)
			}
			// The object vanishing under a row that still points at it: 410.
			keyB2 := keyB
			if err := objects.Delete(context.Background(), keyB2); err != nil {
				t.Fatal(err)
			}
			if resp, _ := get(t, link(rowB.ID, keyB, time.Hour)); resp.StatusCode != 410 {
				t.Errorf("deleted object: %d", resp.StatusCode)
			}
			if strings.Contains(logs.String(), urlA[len(hs.URL)+7:]) || !strings.Contains(logs.String(), "path=/dumps/<token>") {
				t.Errorf("access log shows tokens, or no requests:\n%s", logs.String())
			}
		})
	}
}

func TestRateLimit(t *testing.T) {
	ls := &links.Server{Secret: secret, RatePerMinute: 6, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	hs := httptest.NewServer(ls.Handler())
	defer hs.Close()
	if resp, _ := get(t, hs.URL+"/dumps/forged"); resp.StatusCode != 403 {
		t.Fatalf("first request: %d", resp.StatusCode)
	}
	resp, body := get(t, hs.URL+"/dumps/forged")
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "Too many") {
		t.Fatalf("second request at once: %d %q", resp.StatusCode, body)
	}
	req, _ := http.NewRequest(http.MethodPost, hs.URL+"/dumps/x", nil)
	r2, err := http.DefaultClient.Do(req)
	if err == nil {
		r2.Body.Close()
	}
	if err != nil || (r2.StatusCode != http.StatusMethodNotAllowed && r2.StatusCode != http.StatusTooManyRequests) {
		t.Fatalf("POST: %v %v", r2, err)
	}
}
