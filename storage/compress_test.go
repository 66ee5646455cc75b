package storage_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/fleetmigrate/fleetmigrate/storage"
)

// failingStore's Put reads a little, then fails as a store that went away.
type failingStore struct {
	storage.Store
	err error
}

func (f failingStore) Put(_ context.Context, _ string, r io.Reader, _ storage.PutOptions) (storage.PutResult, error) {
	_, _ = io.CopyN(io.Discard, r, 1<<16)
	return storage.PutResult{}, f.err
}

// When the store fails first, its error is the cause, not the writer's
// (a dump tool dies of the broken pipe: "Got errno 32 on write").
func TestPutCompressedBlamesWhoFailedFirst(t *testing.T) {
	refused := errors.New("dial tcp 10.0.0.9:443: connect: connection refused")
	_, err := storage.PutCompressed(context.Background(), failingStore{err: refused}, "dumps/x", zstd.SpeedFastest, storage.PutOptions{},
		func(w io.Writer) error {
			for {
				if _, err := w.Write([]byte(strings.Repeat("row ", 4096))); err != nil {
					return fmt.Errorf("mariadb-dump: Got errno 32 on write")
				}
			}
		})
	if !errors.Is(err, refused) || !strings.HasPrefix(err.Error(), refused.Error()) || !strings.Contains(err.Error(), "errno 32") {
		t.Fatalf("store failed first: %v", err)
	}

	// The writer failing first stays the cause.
	broken := errors.New("source server gone")
	_, err = storage.PutCompressed(context.Background(), failingStore{err: errors.New("unexpected EOF")}, "dumps/y", zstd.SpeedFastest, storage.PutOptions{},
		func(io.Writer) error { return broken })
	if !errors.Is(err, broken) {
		t.Fatalf("writer failed first: %v", err)
	}
}
