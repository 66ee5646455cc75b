// Package steps are the agent's role handlers for the database engines:
// they run an engine's operations (engine/mysql) for a claimed row, move the
// dump through the object store (storage), and keep the records that let
// any agent undo a step after a failure or a crash.
//
// Records (statemachine.Store.PutRecord) written by the steps:
//
//	block   what blocking writes at the source changed (written before it
//	        changes it), and whether it is in force: Unblock, Recover and
//	        Rollback undo it from here
//	import  what the import created at the destination (written before it
//	        creates it): a failed attempt, Recover and Rollback drop exactly it
//	close   what closing the source changed
package steps

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"sync/atomic"
	"time"

	"github.com/fleetmigrate/fleetmigrate/agent"
	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/storage"
)

// Record kinds.
const (
	recordBlock  = "block"
	recordImport = "import"
	recordClose  = "close"
)

// undoTimeout bounds undoing a step's effects after it failed or was
// cancelled (the step's own context may be gone by then).
const undoTimeout = 2 * time.Minute

// maxJSONObject bounds a manifest or secrets object read from the store.
const maxJSONObject = 64 << 20

// permanent maps the engine's and the store's permanent failures to the
// agent's: the row fails at once instead of being retried.
func permanent(err error) error {
	if err == nil || agent.IsPermanent(err) {
		return err
	}
	var dm *storage.DigestMismatchError
	if errors.Is(err, engine.ErrPermanent) || errors.As(err, &dm) || errors.Is(err, storage.ErrNotFound) {
		return agent.Permanent(err)
	}
	return err
}

// undoContext is for undoing after a failure: it outlives ctx's
// cancellation, bounded by undoTimeout.
func undoContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
}

// putJSON stores v as an indented JSON object.
func putJSON(ctx context.Context, st storage.Store, key string, v any, private bool) error {
	body, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	if _, err := st.Put(ctx, key, bytes.NewReader(append(body, '\n')), storage.PutOptions{Private: private, ContentType: "application/json"}); err != nil {
		return fmt.Errorf("store %s in %s: %w", key, st.Describe(), err)
	}
	return nil
}

// getJSON reads the JSON object at key into v.
func getJSON(ctx context.Context, st storage.Store, key string, v any) error {
	rc, _, err := st.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("read %s from %s: %w", key, st.Describe(), err)
	}
	defer rc.Close()
	body, err := io.ReadAll(io.LimitReader(rc, maxJSONObject))
	if err != nil {
		return fmt.Errorf("read %s from %s: %w", key, st.Describe(), err)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return engine.Permanentf("%s in %s is not valid: %v", key, st.Describe(), err)
	}
	return nil
}

// dumpObjects locates a row's dump and the objects stored beside it.
type dumpObjects struct {
	Dump, Manifest, Secrets string
}

func objectsOf(st storage.Store, m *statemachine.Migration) (dumpObjects, error) {
	if m.DumpURL == "" || m.DumpSHA256 == "" {
		return dumpObjects{}, engine.Permanentf("row %d has no dump recorded", m.ID)
	}
	key, err := st.Key(m.DumpURL)
	if err != nil {
		return dumpObjects{}, engine.Permanentf("the dump of row %d, %s: %v", m.ID, m.DumpURL, err)
	}
	dir := path.Dir(key) + "/"
	return dumpObjects{Dump: key, Manifest: dir + storage.ManifestFile, Secrets: dir + storage.SecretsFile}, nil
}

// readManifest reads the manifest stored beside a row's dump and checks
// that it describes the row's database.
func readManifest(ctx context.Context, st storage.Store, m *statemachine.Migration) (dumpObjects, *engine.Manifest, error) {
	objs, err := objectsOf(st, m)
	if err != nil {
		return objs, nil, err
	}
	var man engine.Manifest
	if err := getJSON(ctx, st, objs.Manifest, &man); err != nil {
		return objs, nil, err
	}
	if man.Database != m.DatabaseName || man.Engine != string(m.Engine) {
		return objs, nil, engine.Permanentf("%s describes %s database %q, not the row's %s %q", objs.Manifest, man.Engine, man.Database, m.Engine, m.DatabaseName)
	}
	if man.FormatVersion > engine.ManifestVersion {
		return objs, nil, engine.Permanentf("%s has format %d; this agent reads up to %d: upgrade it", objs.Manifest, man.FormatVersion, engine.ManifestVersion)
	}
	return objs, &man, nil
}

// checkObject reads a stored dump whole and compares its SHA-256 with the
// one recorded: after a read failure it tells a corrupt dump (permanent)
// from a store that failed for a moment (transient).
func checkObject(ctx context.Context, st storage.Store, key, want string) error {
	rc, _, err := st.Get(ctx, key)
	if err != nil {
		return err
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return &storage.DigestMismatchError{Key: key, Want: want, Got: got}
	}
	return nil
}

// reporter turns a step's running counters into progress notes on the row
// until stopped.
type reporter struct {
	bytes  atomic.Int64
	done   atomic.Int64
	total  atomic.Int64
	stop   chan struct{}
	wait   chan struct{}
	format func(bytes, done, total int64) string
}

func report(ctx context.Context, job *agent.Job, every time.Duration, format func(bytes, done, total int64) string) *reporter {
	r := &reporter{stop: make(chan struct{}), wait: make(chan struct{}), format: format}
	go func() {
		defer close(r.wait)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-r.stop:
				return
			case <-t.C:
				job.Progress(ctx, "%s", r.format(r.bytes.Load(), r.done.Load(), r.total.Load()))
			}
		}
	}()
	return r
}

func (r *reporter) tables(done, total int) {
	r.done.Store(int64(done))
	r.total.Store(int64(total))
}

func (r *reporter) Stop() {
	close(r.stop)
	<-r.wait
}

// mb formats a byte count for notes.
func mb(n int64) string {
	switch {
	case n >= 10<<30:
		return fmt.Sprintf("%.0f GB", float64(n)/(1<<30))
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.0f MB", float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%d kB", (n+1023)/1024)
	}
}
