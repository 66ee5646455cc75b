// Package file is a storage.Store on a local directory: the single-machine
// default. Objects are files under the directory, named by their keys.
package file

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/fleetmigrate/fleetmigrate/storage"
)

// Permissions of what the store creates.
const (
	dirMode     = 0o750
	objectMode  = 0o640
	privateMode = 0o600
	// tempPrefix marks files being written; List skips them.
	tempPrefix = ".tmp-"
)

// Store is a directory of objects.
type Store struct {
	dir string
}

var (
	_ storage.Store   = (*Store)(nil)
	_ storage.Opener  = (*Store)(nil)
	_ storage.Janitor = (*Store)(nil)
)

// New returns a store on dir, creating it if needed.
func New(dir string) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, dirMode); err != nil {
		return nil, fmt.Errorf("dump directory %s: %w", abs, err)
	}
	return &Store{dir: abs}, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// Describe names the store for messages.
func (s *Store) Describe() string { return "directory " + s.dir }

func (s *Store) path(key string) (string, error) {
	if err := storage.ValidKey(key); err != nil {
		return "", err
	}
	return filepath.Join(s.dir, filepath.FromSlash(key)), nil
}

// Put writes r to a temporary file next to the final one, syncs it, and
// renames it into place: the final name only ever holds a whole object.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, opt storage.PutOptions) (storage.PutResult, error) {
	path, err := s.path(key)
	if err != nil {
		return storage.PutResult{}, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return storage.PutResult{}, s.wrap("create the directory of "+key, err)
	}
	tmp, err := os.CreateTemp(dir, tempPrefix+"*")
	if err != nil {
		return storage.PutResult{}, s.wrap("create a temporary file for "+key, err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	mode := os.FileMode(objectMode)
	if opt.Private {
		mode = privateMode
	}
	if err := tmp.Chmod(mode); err != nil {
		return storage.PutResult{}, s.wrap("set the mode of "+key, err)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), ctxReader{ctx, r})
	if err != nil {
		return storage.PutResult{}, s.wrap("write "+key, err)
	}
	if err := tmp.Sync(); err != nil {
		return storage.PutResult{}, s.wrap("sync "+key, err)
	}
	if err := tmp.Close(); err != nil {
		return storage.PutResult{}, s.wrap("close "+key, err)
	}
	if err := ctx.Err(); err != nil {
		return storage.PutResult{}, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return storage.PutResult{}, s.wrap("rename "+key+" into place", err)
	}
	done = true
	syncDir(dir)
	return storage.PutResult{Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// wrap names the store and what failed; a full disk says so.
func (s *Store) wrap(what string, err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%s: %s: the file system is full (%w); nothing was kept", s.Describe(), what, err)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%s: %s: %w", s.Describe(), what, err)
}

// ctxReader stops a copy when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// Get opens an object.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, storage.Object, error) {
	return s.Open(ctx, key)
}

// Open opens an object for random access.
func (s *Store) Open(_ context.Context, key string) (io.ReadSeekCloser, storage.Object, error) {
	path, err := s.path(key)
	if err != nil {
		return nil, storage.Object{}, err
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, storage.Object{}, fmt.Errorf("%s: %s: %w", s.Describe(), key, storage.ErrNotFound)
	}
	if err != nil {
		return nil, storage.Object{}, s.wrap("open "+key, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, storage.Object{}, s.wrap("stat "+key, err)
	}
	return f, storage.Object{Key: key, Size: st.Size(), ModTime: st.ModTime()}, nil
}

// Stat describes an object.
func (s *Store) Stat(_ context.Context, key string) (storage.Object, error) {
	path, err := s.path(key)
	if err != nil {
		return storage.Object{}, err
	}
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return storage.Object{}, fmt.Errorf("%s: %s: %w", s.Describe(), key, storage.ErrNotFound)
	}
	if err != nil {
		return storage.Object{}, s.wrap("stat "+key, err)
	}
	return storage.Object{Key: key, Size: st.Size(), ModTime: st.ModTime()}, nil
}

// Delete removes an object and the directories it leaves empty.
func (s *Store) Delete(_ context.Context, key string) error {
	path, err := s.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return s.wrap("delete "+key, err)
	}
	s.removeEmptyParents(path)
	return nil
}

// removeEmptyParents removes the directories a deletion left empty, up to
// the store's own.
func (s *Store) removeEmptyParents(path string) {
	for dir := filepath.Dir(path); dir != s.dir && strings.HasPrefix(dir, s.dir); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil { // not empty (or gone): stop
			break
		}
	}
}

// List walks the directory below the deepest one the prefix names, in key
// order, yielding as it goes.
func (s *Store) List(ctx context.Context, prefix string) iter.Seq2[storage.Object, error] {
	return func(yield func(storage.Object, error) bool) {
		s.walk(ctx, prefix, func(key string, info fs.FileInfo) bool {
			if strings.HasPrefix(info.Name(), tempPrefix) {
				return true
			}
			return yield(storage.Object{Key: key, Size: info.Size(), ModTime: info.ModTime()}, nil)
		}, func(err error) { yield(storage.Object{}, err) })
	}
}

// Pending yields the temporary files of puts that never finished (the
// writer was killed) below prefix: Key is the directory the put was
// writing in, ID the file's own key.
func (s *Store) Pending(ctx context.Context, prefix string) iter.Seq2[storage.Pending, error] {
	return func(yield func(storage.Pending, error) bool) {
		s.walk(ctx, prefix, func(key string, info fs.FileInfo) bool {
			if !strings.HasPrefix(info.Name(), tempPrefix) {
				return true
			}
			return yield(storage.Pending{Key: key[:len(key)-len(info.Name())], ID: key, Started: info.ModTime(), Size: info.Size()}, nil)
		}, func(err error) { yield(storage.Pending{}, err) })
	}
}

// Abort removes a temporary file Pending found.
func (s *Store) Abort(_ context.Context, p storage.Pending) error {
	path, err := s.path(p.ID)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(filepath.Base(path), tempPrefix) {
		return fmt.Errorf("%s: %s is not an unfinished upload", s.Describe(), p.ID)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return s.wrap("remove the unfinished upload "+p.ID, err)
	}
	s.removeEmptyParents(path)
	return nil
}

// walk calls fn with every regular file whose key starts with prefix, in
// key order, until fn returns false; a failure goes to fail.
func (s *Store) walk(ctx context.Context, prefix string, fn func(key string, info fs.FileInfo) bool, fail func(error)) {
	start := s.dir
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		start = filepath.Join(s.dir, filepath.FromSlash(prefix[:i]))
	}
	stop := errors.New("stop")
	err := walkSorted(start, func(path string, info fs.FileInfo) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(s.dir, path)
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		if !fn(key, info) {
			return stop
		}
		return nil
	})
	if err != nil && !errors.Is(err, stop) && !errors.Is(err, fs.ErrNotExist) {
		fail(s.wrap("list "+prefix, err))
	}
}

// walkSorted visits the regular files below dir in lexical order of their
// slash-separated paths, reading one directory at a time.
func walkSorted(dir string, fn func(path string, info fs.FileInfo) error) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	// "a/b" must come before "a-b/c" and "a/" before "a0": sort by the name
	// as it appears in keys, with a slash after directories.
	sort.Slice(entries, func(i, j int) bool { return sortName(entries[i]) < sortName(entries[j]) })
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		if e.IsDir() {
			if err := walkSorted(path, fn); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			continue
		}
		if !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted meanwhile
		}
		if err != nil {
			return err
		}
		if err := fn(path, info); err != nil {
			return err
		}
	}
	return nil
}

func sortName(e fs.DirEntry) string {
	if e.IsDir() {
		return e.Name() + "/"
	}
	return e.Name()
}

// URL is file://<dir>/<key>.
func (s *Store) URL(key string) string {
	return (&url.URL{Scheme: "file", Path: filepath.ToSlash(filepath.Join(s.dir, filepath.FromSlash(key)))}).String()
}

// Key is the inverse of URL.
func (s *Store) Key(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "file" {
		return "", fmt.Errorf("%q is not a file:// URL of %s", raw, s.Describe())
	}
	rel, err := filepath.Rel(s.dir, filepath.FromSlash(u.Path))
	if err != nil || strings.HasPrefix(rel, "..") {
		return "", fmt.Errorf("%q is not in %s", raw, s.Describe())
	}
	key := filepath.ToSlash(rel)
	return key, storage.ValidKey(key)
}
