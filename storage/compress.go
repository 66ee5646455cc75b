package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
)

// ParseLevel maps a compression level name (fastest, default, better,
// best) to zstd's. Dumps default to fastest: they are written while the
// source is write-blocked.
func ParseLevel(name string) (zstd.EncoderLevel, error) {
	switch name {
	case "", "fastest":
		return zstd.SpeedFastest, nil
	case "default":
		return zstd.SpeedDefault, nil
	case "better":
		return zstd.SpeedBetterCompression, nil
	case "best":
		return zstd.SpeedBestCompression, nil
	}
	return 0, fmt.Errorf("compression level %q: want fastest, default, better or best", name)
}

// PutCompressed stores, zstd-compressed under key, what write writes. It
// streams: write runs in its own goroutine against the compressor, whose
// output flows through a pipe into st.Put, which hashes what it stores. If
// write fails, nothing is stored and its error is returned.
func PutCompressed(ctx context.Context, st Store, key string, level zstd.EncoderLevel, opt PutOptions, write func(w io.Writer) error) (PutResult, error) {
	pr, pw := io.Pipe()
	werr := make(chan error, 1)
	var writerFailed atomic.Bool
	go func() {
		enc, err := zstd.NewWriter(pw, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(2))
		if err == nil {
			err = write(enc)
			if cerr := enc.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			writerFailed.Store(true)
		}
		// nil ends the stream cleanly; an error makes Put fail and store nothing
		_ = pw.CloseWithError(err)
		werr <- err
	}()
	res, err := st.Put(ctx, key, pr, opt)
	// Whoever failed first is the cause: a store that went away makes the
	// writer fail too (a dump tool dies of a broken pipe), and that is not
	// what the operator needs to read.
	storeFirst := err != nil && !writerFailed.Load()
	if err != nil {
		_ = pr.CloseWithError(err) // unblock the writer
	}
	e := <-werr
	switch {
	case storeFirst && e != nil && !errors.Is(e, err):
		return PutResult{}, fmt.Errorf("%w (so the writer stopped: %s)", err, e.Error()) // not wrapped: a consequence, not a cause to classify
	case storeFirst:
		return PutResult{}, err
	case e != nil && !errors.Is(e, io.ErrClosedPipe):
		return PutResult{}, fmt.Errorf("write %s: %w", key, e)
	case err != nil:
		return PutResult{}, err
	}
	return res, nil
}

// DigestMismatchError: the bytes read do not have the SHA-256 recorded for
// them. Retrying does not help: the object is corrupt.
type DigestMismatchError struct {
	Key       string
	Want, Got string
}

func (e *DigestMismatchError) Error() string {
	return fmt.Sprintf("%s is corrupt: its SHA-256 is %s, but %s was recorded when it was stored", e.Key, e.Got, e.Want)
}

// VerifyingReader passes rc through and, at its end, checks that what was
// read has the SHA-256 want (lower-case hex): a mismatch is returned instead
// of io.EOF as a *DigestMismatchError.
func VerifyingReader(rc io.ReadCloser, key, want string) io.ReadCloser {
	return &verifying{rc: rc, h: sha256.New(), key: key, want: want}
}

type verifying struct {
	rc   io.ReadCloser
	h    hash.Hash
	key  string
	want string
	err  error
}

func (v *verifying) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.rc.Read(p)
	v.h.Write(p[:n])
	if errors.Is(err, io.EOF) {
		if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want {
			err = &DigestMismatchError{Key: v.key, Want: v.want, Got: got}
		}
		v.err = err
	}
	return n, err
}

func (v *verifying) Close() error { return v.rc.Close() }

// OpenDump opens a compressed dump for reading its decompressed contents,
// verifying the compressed bytes against want. The digest is checked when
// the stream ends: a reader that reaches io.EOF has read intact data; a
// corrupt object ends in a *DigestMismatchError instead (or in a
// decompression error, if the damage breaks the zstd framing first).
func OpenDump(ctx context.Context, st Store, key, want string) (io.ReadCloser, error) {
	rc, _, err := st.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	v := VerifyingReader(rc, key, want)
	dec, err := zstd.NewReader(v, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
	if err != nil {
		v.Close()
		return nil, fmt.Errorf("open %s: %w", key, err)
	}
	return &dumpReader{dec: dec, v: v}, nil
}

type dumpReader struct {
	dec *zstd.Decoder
	v   io.ReadCloser
}

func (d *dumpReader) Read(p []byte) (int, error) {
	n, err := d.dec.Read(p)
	if errors.Is(err, io.EOF) {
		// The decoder may stop before the last byte of the object: read the
		// rest so that the digest covers all of it.
		if _, derr := io.Copy(io.Discard, d.v); derr != nil {
			return n, derr
		}
	}
	return n, err
}

func (d *dumpReader) Close() error {
	d.dec.Close()
	return d.v.Close()
}
