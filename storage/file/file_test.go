package file_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/storage"
	"github.com/fleetmigrate/fleetmigrate/storage/file"
	"github.com/fleetmigrate/fleetmigrate/storage/storagetest"
)

func TestMain(m *testing.M) { fleettest.Main(m) }

func TestContract(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storagetest.Harness {
		dir := t.TempDir()
		s, err := file.New(dir)
		if err != nil {
			t.Fatal(err)
		}
		return storagetest.Harness{
			Store: s,
			Corrupt: func(t *testing.T, key string) {
				flipByte(t, filepath.Join(dir, filepath.FromSlash(key)))
			},
			Leftovers: func(t *testing.T) int { return countTemp(t, dir) },
			Abandon: func(t *testing.T, key string) {
				at := filepath.Join(dir, filepath.FromSlash(key))
				if err := os.MkdirAll(filepath.Dir(at), 0o750); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(filepath.Dir(at), ".tmp-123456"), []byte("half a dump"), 0o640); err != nil {
					t.Fatal(err)
				}
			},
		}
	})
}

func flipByte(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, 100); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, 100); err != nil {
		t.Fatal(err)
	}
}

func countTemp(t *testing.T, dir string) int {
	n := 0
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".tmp-") {
			n++
		}
		return nil
	})
	return n
}

func TestPrivateObjectsAreOwnerOnly(t *testing.T) {
	dir := t.TempDir()
	s, err := file.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.Put(ctx, "d/secrets.json", strings.NewReader("{}"), storage.PutOptions{Private: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "d/dump.sql.zst", strings.NewReader("x"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]os.FileMode{"d/secrets.json": 0o600, "d/dump.sql.zst": 0o640} {
		st, err := os.Stat(filepath.Join(dir, key))
		if err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, %v; want %v", key, st.Mode().Perm(), err, want)
		}
	}
	// Deleting the last object of a dump removes its directories.
	for _, k := range []string{"d/secrets.json", "d/dump.sql.zst"} {
		if err := s.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "d")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("empty directory left behind: %v", err)
	}
}

// TestFullDisk puts a dump on a 4 MiB file system: the put fails saying the
// disk is full, and no temporary file is left.
func TestFullDisk(t *testing.T) {
	fleettest.Integration(t)
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a 4 MiB tmpfs (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
	s, err := file.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Put(context.Background(), "dumps/big", strings.NewReader(strings.Repeat("x", 8<<20)), storage.PutOptions{})
	if err == nil || !strings.Contains(err.Error(), "the file system is full") || !strings.Contains(err.Error(), dir) {
		t.Fatalf("put on a full disk: %v", err)
	}
	if n := countTemp(t, dir); n != 0 {
		t.Fatalf("%d temporary files left on the full disk", n)
	}
	if _, err := s.Stat(context.Background(), "dumps/big"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("object after a failed put: %v", err)
	}
}

func BenchmarkPutCompressed(b *testing.B) {
	s, err := file.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	storagetest.BenchmarkPutCompressed(b, s)
}
