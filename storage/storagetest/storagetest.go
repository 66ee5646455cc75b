// Package storagetest is the contract suite every storage.Store runs: the
// directory backend and S3 on a real server (versitygw).
package storagetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/storage"
)

// Harness is one backend under test, with a fresh, empty store.
type Harness struct {
	Store storage.Store
	// Corrupt flips one byte of the stored object, on the server's disk.
	Corrupt func(t *testing.T, key string)
	// Leftovers counts what a failed or cancelled Put left behind:
	// temporary files, pending multipart uploads.
	Leftovers func(t *testing.T) int
	// Abandon leaves an unfinished upload of key with some data in it, as
	// a writer killed mid-put would (S3: a multipart upload with one part;
	// a directory: a temporary file).
	Abandon func(t *testing.T, key string)
}

// Factory returns a fresh harness for t.
type Factory func(t *testing.T) Harness

// Run runs the suite.
func Run(t *testing.T, f Factory) {
	tests := []struct {
		name string
		fn   func(t *testing.T, h Harness)
	}{
		{"PutGetStatListDelete", testBasics},
		{"Put300MBWithBoundedMemory", testLargeBoundedMemory},
		{"CancelledPutLeavesNothing", testCancel},
		{"ReplaceIsAllOrNothing", testReplace},
		{"CorruptionIsDetected", testCorruption},
		{"CompressedDumpRoundTrip", testCompressed},
		{"AwkwardDatabaseNamesRoundTrip", testAwkwardKeys},
		{"ListPagesAndStops", testListMany},
		{"AbandonedUploadIsPendingUntilAborted", testAbandoned},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, f(t))
		})
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return c
}

func readAll(t *testing.T, s storage.Store, key string) []byte {
	t.Helper()
	rc, _, err := s.Get(ctx(t), key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return b
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func testBasics(t *testing.T, h Harness) {
	s := h.Store
	body := []byte("-- dump of shop\nCREATE TABLE t (v int);\n")
	res, err := s.Put(ctx(t), "a/b/one.sql", bytes.NewReader(body), storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Size != int64(len(body)) || res.SHA256 != sum(body) {
		t.Fatalf("put returned %+v, want size %d sha %s", res, len(body), sum(body))
	}
	if got := readAll(t, s, "a/b/one.sql"); !bytes.Equal(got, body) {
		t.Fatalf("read back %q", got)
	}
	st, err := s.Stat(ctx(t), "a/b/one.sql")
	if err != nil || st.Size != int64(len(body)) || st.ModTime.IsZero() {
		t.Fatalf("stat: %+v, %v", st, err)
	}
	if _, err := s.Put(ctx(t), "a/b/two.sql", strings.NewReader("2"), storage.PutOptions{Private: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx(t), "a/c.sql", strings.NewReader("3"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for o, err := range s.List(ctx(t), "a/b/") {
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, o.Key)
	}
	if fmt.Sprint(keys) != "[a/b/one.sql a/b/two.sql]" {
		t.Fatalf("list a/b/: %v", keys)
	}
	if k, err := s.Key(s.URL("a/b/one.sql")); err != nil || k != "a/b/one.sql" {
		t.Fatalf("Key(URL(k)) = %q, %v", k, err)
	}
	if _, err := s.Key("s3://someone-else/x"); err == nil {
		t.Error("Key accepted a URL of another store")
	}
	if err := s.Delete(ctx(t), "a/b/one.sql"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx(t), "a/b/one.sql"); err != nil {
		t.Fatalf("deleting a missing object: %v", err)
	}
	if _, _, err := s.Get(ctx(t), "a/b/one.sql"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("get after delete: %v, want ErrNotFound", err)
	}
	if _, err := s.Stat(ctx(t), "nothing/here"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("stat of a missing object: %v, want ErrNotFound", err)
	}
	for _, bad := range []string{"", "../etc/passwd", "/abs", "a//b", "a/./b", "a/\x00"} {
		if _, err := s.Put(ctx(t), bad, strings.NewReader("x"), storage.PutOptions{}); err == nil {
			t.Errorf("put accepted key %q", bad)
		}
	}
}

// stream is a deterministic pseudo-random byte stream of n bytes that
// hashes what it produces, independently of the store.
type stream struct {
	rng  *rand.ChaCha8
	left int64
	sha  interface {
		Write([]byte) (int, error)
		Sum([]byte) []byte
	}
}

func newStream(seed byte, n int64) *stream {
	var s [32]byte
	s[0] = seed
	return &stream{rng: rand.NewChaCha8(s), left: n, sha: sha256.New()}
}

func (s *stream) Read(p []byte) (int, error) {
	if s.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	n, _ := s.rng.Read(p)
	_, _ = s.sha.Write(p[:n])
	s.left -= int64(n)
	return n, nil
}

func (s *stream) digest() string { return hex.EncodeToString(s.sha.Sum(nil)) }

// heapPeak samples the heap while fn runs and returns the peak growth over
// the heap before it.
func heapPeak(fn func()) uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			if m.HeapAlloc > base && m.HeapAlloc-base > peak.Load() {
				peak.Store(m.HeapAlloc - base)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	fn()
	close(stop)
	wg.Wait()
	return peak.Load()
}

// LargeSize is the size of the bounded-memory test's stream.
const LargeSize = 300 << 20

// MaxHeapGrowth is the bound the test holds a 300 MB put to: the target is
// about 64 MiB (parts × concurrency); the test allows room for the garbage
// collector's pacing but fails if the stream is buffered whole.
const MaxHeapGrowth = 128 << 20

func testLargeBoundedMemory(t *testing.T, h Harness) {
	src := newStream(7, LargeSize)
	var res storage.PutResult
	var err error
	peak := heapPeak(func() { res, err = h.Store.Put(ctx(t), "big/300mb.bin", src, storage.PutOptions{}) })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: put 300 MiB with peak heap growth %.1f MiB", h.Store.Describe(), float64(peak)/(1<<20))
	if peak > MaxHeapGrowth {
		t.Errorf("heap grew %d MiB during a 300 MiB put; want at most %d MiB", peak>>20, MaxHeapGrowth>>20)
	}
	if res.Size != LargeSize || res.SHA256 != src.digest() {
		t.Fatalf("put returned %+v; the stream had %d bytes, sha %s", res, LargeSize, src.digest())
	}
	// Read back: byte for byte against the regenerated stream, and hashed.
	rc, _, err := h.Store.Get(ctx(t), "big/300mb.bin")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	want := newStream(7, LargeSize)
	got, exp := make([]byte, 1<<20), make([]byte, 1<<20)
	hash := sha256.New()
	var off int64
	for {
		n, rerr := io.ReadFull(rc, got)
		if n > 0 {
			if _, err := io.ReadFull(want, exp[:n]); err != nil {
				t.Fatalf("stored object is longer than the stream (at %d)", off)
			}
			if !bytes.Equal(got[:n], exp[:n]) {
				t.Fatalf("byte mismatch in the MiB at offset %d", off)
			}
			hash.Write(got[:n])
			off += int64(n)
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			t.Fatal(rerr)
		}
	}
	if off != LargeSize || hex.EncodeToString(hash.Sum(nil)) != res.SHA256 {
		t.Fatalf("read back %d bytes, sha %x; want %d, %s", off, hash.Sum(nil), LargeSize, res.SHA256)
	}
}

// stallingReader yields n bytes, then blocks until ctx ends.
type stallingReader struct {
	ctx  context.Context
	r    io.Reader
	left int64
	at   chan struct{}
}

func (s *stallingReader) Read(p []byte) (int, error) {
	if s.left <= 0 {
		if s.at != nil {
			close(s.at)
			s.at = nil
		}
		<-s.ctx.Done()
		return 0, s.ctx.Err()
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	n, err := s.r.Read(p)
	s.left -= int64(n)
	return n, err
}

func testCancel(t *testing.T, h Harness) {
	c, cancel := context.WithCancel(ctx(t))
	reached := make(chan struct{})
	go func() {
		<-reached
		time.Sleep(100 * time.Millisecond) // let parts be in flight
		cancel()
	}()
	_, err := h.Store.Put(c, "cancelled/dump.zst", &stallingReader{ctx: c, r: newStream(1, 1<<40), left: 40 << 20, at: reached}, storage.PutOptions{})
	if err == nil {
		t.Fatal("a cancelled put succeeded")
	}
	if _, err := h.Store.Stat(ctx(t), "cancelled/dump.zst"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("after a cancelled put: stat %v, want ErrNotFound", err)
	}
	if n := h.Leftovers(t); n != 0 {
		t.Fatalf("a cancelled put left %d partial uploads or temporary files behind", n)
	}
	// A reader that fails is the same.
	_, err = h.Store.Put(ctx(t), "failed/dump.zst", io.MultiReader(newStream(2, 12<<20), iotestErr{}), storage.PutOptions{})
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("put from a failing reader: %v", err)
	}
	if _, err := h.Store.Stat(ctx(t), "failed/dump.zst"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("after a failed put: stat %v, want ErrNotFound", err)
	}
	if n := h.Leftovers(t); n != 0 {
		t.Fatalf("a failed put left %d partial uploads or temporary files behind", n)
	}
}

type iotestErr struct{}

func (iotestErr) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func testAbandoned(t *testing.T, h Harness) {
	j, ok := h.Store.(storage.Janitor)
	if !ok {
		t.Fatalf("%s cannot list unfinished uploads (storage.Janitor)", h.Store.Describe())
	}
	pending := func(prefix string) []storage.Pending {
		var ps []storage.Pending
		for p, err := range j.Pending(ctx(t), prefix) {
			if err != nil {
				t.Fatal(err)
			}
			ps = append(ps, p)
		}
		return ps
	}
	const key = "dumps/killed/dump.sql.zst"
	if _, err := h.Store.Put(ctx(t), "dumps/finished/dump.sql.zst", strings.NewReader("whole"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Minute)
	h.Abandon(t, key)
	if ps := pending("other/"); len(ps) != 0 {
		t.Fatalf("pending under another prefix: %+v", ps)
	}
	ps := pending("dumps/")
	if len(ps) != 1 || !strings.HasPrefix(key, ps[0].Key) || ps[0].Key == "" || ps[0].ID == "" || ps[0].Started.Before(before) {
		t.Fatalf("pending uploads after a killed put of %s: %+v", key, ps)
	}
	for o, err := range h.Store.List(ctx(t), "dumps/") {
		if err != nil || o.Key != "dumps/finished/dump.sql.zst" {
			t.Fatalf("List shows %+v %v: an unfinished upload is not an object", o, err)
		}
	}
	if err := j.Abort(ctx(t), ps[0]); err != nil {
		t.Fatal(err)
	}
	if err := j.Abort(ctx(t), ps[0]); err != nil {
		t.Fatalf("aborting an upload already aborted: %v", err)
	}
	if left := pending("dumps/"); len(left) != 0 || h.Leftovers(t) != 0 {
		t.Fatalf("after Abort: %+v pending, %d leftovers", left, h.Leftovers(t))
	}
	if got := readAll(t, h.Store, "dumps/finished/dump.sql.zst"); string(got) != "whole" {
		t.Fatalf("the finished object next to it: %q", got)
	}
}

func testReplace(t *testing.T, h Harness) {
	first := bytes.Repeat([]byte("first "), 1000)
	if _, err := h.Store.Put(ctx(t), "r/dump", bytes.NewReader(first), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := h.Store.Put(ctx(t), "r/dump", io.MultiReader(newStream(3, 9<<20), iotestErr{}), storage.PutOptions{})
	if err == nil {
		t.Fatal("failing replacement succeeded")
	}
	if got := readAll(t, h.Store, "r/dump"); !bytes.Equal(got, first) {
		t.Fatalf("a failed replacement changed the object (%d bytes)", len(got))
	}
	second := []byte("second")
	if _, err := h.Store.Put(ctx(t), "r/dump", bytes.NewReader(second), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, h.Store, "r/dump"); !bytes.Equal(got, second) {
		t.Fatalf("replacement: %q", got)
	}
}

func testCorruption(t *testing.T, h Harness) {
	body := bytes.Repeat([]byte("INSERT INTO t VALUES (42);\n"), 4000)
	res, err := h.Store.Put(ctx(t), "c/dump.sql", bytes.NewReader(body), storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h.Corrupt(t, "c/dump.sql")
	rc, _, err := h.Store.Get(ctx(t), "c/dump.sql")
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(storage.VerifyingReader(rc, "c/dump.sql", res.SHA256))
	rc.Close()
	var mm *storage.DigestMismatchError
	if !errors.As(err, &mm) || mm.Want != res.SHA256 || mm.Got == res.SHA256 ||
		!strings.Contains(err.Error(), res.SHA256) || !strings.Contains(err.Error(), mm.Got) {
		t.Fatalf("reading a corrupted object: %v; want a DigestMismatchError naming both digests", err)
	}
	// Intact objects pass.
	good, _ := h.Store.Put(ctx(t), "c/good.sql", bytes.NewReader(body), storage.PutOptions{})
	rc, _, _ = h.Store.Get(ctx(t), "c/good.sql")
	defer rc.Close()
	if _, err := io.ReadAll(storage.VerifyingReader(rc, "c/good.sql", good.SHA256)); err != nil {
		t.Fatalf("reading an intact object: %v", err)
	}
}

func testCompressed(t *testing.T, h Harness) {
	ref := storage.DumpRef{Engine: "mysql", Source: "db-1", Database: "shop", ConsistencyPoint: time.Date(2026, 11, 23, 21, 0, 0, 123456000, time.UTC)}
	key := ref.DumpKey("sql")
	src := newStream(5, 20<<20)
	plain := sha256.New()
	level, _ := storage.ParseLevel("fastest")
	res, err := storage.PutCompressed(ctx(t), h.Store, key, level, storage.PutOptions{ContentType: "application/zstd"}, func(w io.Writer) error {
		_, err := io.Copy(w, io.TeeReader(src, plain))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := h.Store.Stat(ctx(t), key); err != nil || st.Size != res.Size {
		t.Fatalf("stat: %+v, %v; put said %d bytes", st, err, res.Size)
	}
	rc, err := storage.OpenDump(ctx(t), h.Store, key, res.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	back := sha256.New()
	n, err := io.Copy(back, rc)
	rc.Close()
	if err != nil || n != 20<<20 || !bytes.Equal(back.Sum(nil), plain.Sum(nil)) {
		t.Fatalf("decompressed %d bytes (%v); want the 20 MiB written back intact", n, err)
	}
	// A wrong recorded digest is caught at the end of the stream.
	rc, err = storage.OpenDump(ctx(t), h.Store, key, strings.Repeat("0", 64))
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, rc)
	rc.Close()
	var mm *storage.DigestMismatchError
	if !errors.As(err, &mm) {
		t.Fatalf("dump read against the wrong digest: %v", err)
	}
	// A writer that fails stores nothing.
	_, err = storage.PutCompressed(ctx(t), h.Store, "c2/dump.sql.zst", level, storage.PutOptions{}, func(w io.Writer) error {
		if _, err := io.Copy(w, newStream(6, 6<<20)); err != nil {
			return err
		}
		return errors.New("mariadb-dump exited with status 2")
	})
	if err == nil || !strings.Contains(err.Error(), "exited with status 2") {
		t.Fatalf("failing writer: %v", err)
	}
	if _, err := h.Store.Stat(ctx(t), "c2/dump.sql.zst"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("a failed dump was stored: %v", err)
	}
	if n := h.Leftovers(t); n != 0 {
		t.Fatalf("a failed dump left %d partial uploads or temporary files behind", n)
	}
}

// AwkwardNames are legal database names that stress key encoding.
var AwkwardNames = []string{
	"shop", "Shop", "back`tick", `double"quote`, "single'quote", "with space", "100%_like",
	"ünïcødé_数据库", "slash/inside", `back\slash`, "..", ".hidden", "-dash", "=looks-encoded",
	"trailing space ", strings.Repeat("é", 64), strings.Repeat("数", 64), strings.Repeat("x", 63), "nul-free\ttab",
}

func testAwkwardKeys(t *testing.T, h Harness) {
	cp := time.Date(2026, 11, 23, 21, 30, 0, 0, time.UTC)
	want := map[string]bool{}
	for _, name := range AwkwardNames {
		ref := storage.DumpRef{Engine: "mysql", Source: "db-9.dc1", Database: name, ConsistencyPoint: cp}
		key := ref.DumpKey("sql")
		if _, err := h.Store.Put(ctx(t), key, strings.NewReader(name), storage.PutOptions{}); err != nil {
			t.Fatalf("put the dump of %q at %q: %v", name, key, err)
		}
		want[name] = true
	}
	seen := 0
	for o, err := range h.Store.List(ctx(t), "dumps/mysql/db-9.dc1/") {
		if err != nil {
			t.Fatal(err)
		}
		ref, file, err := storage.ParseDumpKey(o.Key)
		if err != nil || file != "dump.sql.zst" || !ref.ConsistencyPoint.Equal(cp) || !want[ref.Database] {
			t.Fatalf("key %q parsed as %+v %q, %v", o.Key, ref, file, err)
		}
		if got := readAll(t, h.Store, o.Key); string(got) != ref.Database {
			t.Fatalf("object %q holds %q, its key says %q", o.Key, got, ref.Database)
		}
		seen++
	}
	if seen != len(AwkwardNames) {
		t.Fatalf("listed %d dumps, put %d", seen, len(AwkwardNames))
	}
}

func testListMany(t *testing.T, h Harness) {
	const n = 2100 // more than two S3 pages
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_, err := h.Store.Put(ctx(t), fmt.Sprintf("many/%05d", i), strings.NewReader("x"), storage.PutOptions{})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	i := 0
	for o, err := range h.Store.List(ctx(t), "many/") {
		if err != nil {
			t.Fatal(err)
		}
		if o.Key != fmt.Sprintf("many/%05d", i) {
			t.Fatalf("object %d is %q: not in key order", i, o.Key)
		}
		i++
	}
	if i != n {
		t.Fatalf("listed %d of %d", i, n)
	}
	// Stopping early is allowed.
	i = 0
	for _, err := range h.Store.List(ctx(t), "many/") {
		if err != nil {
			t.Fatal(err)
		}
		if i++; i == 10 {
			break
		}
	}
}

// BenchmarkPutCompressed measures storing a dump: 256 MiB of SQL-like text
// (rows of varied ids, dates, names, e-mail addresses, amounts),
// zstd-compressed (fastest) and hashed on the way into st. It reports the
// input rate, the compression ratio and the peak heap growth.
func BenchmarkPutCompressed(b *testing.B, st storage.Store) {
	const size = 256 << 20
	pool := sqlLines(20000)
	level, _ := storage.ParseLevel("fastest")
	var peak uint64
	var stored int64
	b.SetBytes(size)
	b.ResetTimer()
	for i := range b.N {
		p := heapPeak(func() {
			res, err := storage.PutCompressed(context.Background(), st, fmt.Sprintf("bench/%d.sql.zst", i), level, storage.PutOptions{}, func(w io.Writer) error {
				rng := rand.New(rand.NewPCG(uint64(i), 1))
				buf := make([]byte, 0, 1<<20)
				for written := 0; written < size; {
					buf = buf[:0]
					for len(buf) < cap(buf)-256 {
						buf = append(buf, pool[rng.IntN(len(pool))]...)
					}
					n := min(len(buf), size-written)
					if _, err := w.Write(buf[:n]); err != nil {
						return err
					}
					written += n
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			stored = res.Size
		})
		peak = max(peak, p)
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
	b.ReportMetric(float64(size)/float64(stored), "ratio")
}

// sqlLines makes n varied INSERT lines, like a customer table's dump.
func sqlLines(n int) [][]byte {
	rng := rand.New(rand.NewPCG(42, 42))
	first := []string{"Jane", "John", "Ana", "Jürgen", "Li", "Fatima", "Olu", "Sven", "Priya", "Marco"}
	last := []string{"Roe", "Doe", "Silva", "Müller", "Wang", "Haddad", "Okafor", "Berg", "Iyer", "Rossi"}
	word := func(k int) string {
		b := make([]byte, k)
		for i := range b {
			b[i] = byte('a' + rng.IntN(26))
		}
		return string(b)
	}
	out := make([][]byte, n)
	for i := range out {
		f, l := first[rng.IntN(len(first))], last[rng.IntN(len(last))]
		out[i] = fmt.Appendf(nil, "INSERT INTO `orders` VALUES (%d,'2026-%02d-%02d %02d:%02d:%02d','%s %s','%s.%s@%s.example',%d.%02d,'%s','%s');\n",
			rng.IntN(1e9), 1+rng.IntN(12), 1+rng.IntN(28), rng.IntN(24), rng.IntN(60), rng.IntN(60), f, l,
			strings.ToLower(f), word(5), word(7), rng.IntN(10000), rng.IntN(100), []string{"new", "paid", "shipped", "returned"}[rng.IntN(4)], word(12))
	}
	return out
}
