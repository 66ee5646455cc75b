// Package storage keeps dumps: the Store interface every object store
// implements (storage/file for a directory, storage/s3 for S3 and
// S3-compatible servers), the layout of dump keys, zstd compression with a
// SHA-256 computed while streaming, and verification on read.
//
// A dump is the consistency point of a migration and a promise to the
// customer ("you can download it for a month"), so a Store never leaves a
// half-written object under a final name, and every reader checks the
// digest recorded on the row.
package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"time"
)

// Errors of every Store.
var (
	// ErrNotFound: no object under the key.
	ErrNotFound = errors.New("object not found")
	// ErrConfig: the store refused because of its configuration (wrong
	// credentials, missing bucket, no permission): retrying cannot help.
	ErrConfig = errors.New("object store configuration")
)

// Object describes a stored object.
type Object struct {
	Key     string
	Size    int64
	ModTime time.Time
}

// PutResult describes what Put stored.
type PutResult struct {
	Size int64
	// SHA256 is the lower-case hex SHA-256 of the bytes stored, computed
	// while they streamed through.
	SHA256 string
}

// PutOptions qualify an object.
type PutOptions struct {
	// Private marks an object holding secrets (password hashes): the
	// directory backend makes it readable by the owner only. On S3 every
	// object is private unless the bucket's policy says otherwise; see
	// docs/security.md.
	Private bool
	// ContentType is recorded where the backend can (S3).
	ContentType string
}

// Store is an object store holding dumps. Every method is safe for
// concurrent use.
type Store interface {
	// Put streams r to key and returns the size and SHA-256 of what was
	// stored. It never leaves a partial object under key: on any error or a
	// cancelled ctx, key holds what it held before (on S3 no multipart upload
	// is left pending). An existing object under key is replaced atomically.
	Put(ctx context.Context, key string, r io.Reader, opt PutOptions) (PutResult, error)
	// Get opens the object for reading; ErrNotFound if there is none. The
	// caller closes it, and checks its SHA-256 against the one recorded
	// (VerifyingReader, OpenDump).
	Get(ctx context.Context, key string) (io.ReadCloser, Object, error)
	// Stat describes the object; ErrNotFound if there is none.
	Stat(ctx context.Context, key string) (Object, error)
	// Delete removes the object. Deleting a missing object is no error.
	Delete(ctx context.Context, key string) error
	// List yields the objects whose keys start with prefix, in key order,
	// a page at a time from the backend (a bucket may hold millions). A
	// failure is yielded as an error and ends the listing.
	List(ctx context.Context, prefix string) iter.Seq2[Object, error]
	// URL is how rows record the object's location (file:///... or
	// s3://bucket/key).
	URL(key string) string
	// Key is the inverse of URL; an error if url is not in this store.
	Key(url string) (string, error)
	// Describe names the store for messages (never a secret).
	Describe() string
}

// Presigner is a Store that can hand out temporary direct download URLs
// (S3). The customer link server redirects to them.
type Presigner interface {
	// PresignGet returns a URL valid for ttl that downloads key with a
	// Content-Disposition naming filename.
	PresignGet(ctx context.Context, key string, ttl time.Duration, filename string) (string, error)
}

// Pending is an upload a writer started and never finished: a process
// killed mid-upload leaves one behind (S3 keeps, and bills, the parts of an
// incomplete multipart upload until it is aborted; the directory backend
// leaves a temporary file).
type Pending struct {
	// Key is the object the upload was writing (on the directory backend,
	// the directory it was writing in, with a trailing slash).
	Key string
	// ID names the upload to the backend (the multipart upload ID, or the
	// temporary file's name).
	ID string
	// Started is when the upload began (the directory backend: when its
	// file was last written).
	Started time.Time
	// Size is what it holds, where the backend says without extra requests
	// (the directory backend); 0 when unknown.
	Size int64
}

// Janitor is a Store that can list and remove what killed writers left
// behind. A Pending may belong to an upload still under way: callers decide
// by age and by what the state table says.
type Janitor interface {
	// Pending yields the unfinished uploads whose keys start with prefix.
	Pending(ctx context.Context, prefix string) iter.Seq2[Pending, error]
	// Abort removes one; aborting one already gone is no error.
	Abort(ctx context.Context, p Pending) error
}

// Opener is a Store whose objects can be opened for random access (the
// directory backend): the link server serves ranges from it.
type Opener interface {
	Open(ctx context.Context, key string) (io.ReadSeekCloser, Object, error)
}

// ValidKey checks that key is a relative, clean, slash-separated key with
// no empty, "." or ".." components: safe as a file path and as an S3 key.
func ValidKey(key string) error {
	if key == "" || len(key) > 1024 {
		return fmt.Errorf("invalid object key %q: empty or longer than 1024 bytes", key)
	}
	start := 0
	for i := 0; i <= len(key); i++ {
		if i == len(key) || key[i] == '/' {
			c := key[start:i]
			if c == "" || c == "." || c == ".." || len(c) > 255 {
				return fmt.Errorf("invalid object key %q: component %q", key, c)
			}
			start = i + 1
			continue
		}
		if key[i] < 0x20 || key[i] == 0x7f || key[i] == '\\' {
			return fmt.Errorf("invalid object key %q: control character or backslash", key)
		}
	}
	return nil
}
