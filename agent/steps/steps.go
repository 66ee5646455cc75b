// Package steps are the agent's role handlers: the steps of a migration
// (dump, import, close, rollback in dump.go; sync and cutover in
// online.go; the DNS switch in dns.go), each written once over the engine
// contract (engine.Driver) and an engine's change stream (streams:
// online_mysql.go, online_postgres.go). They move the dump through the
// object store (storage) and keep the records that let any agent undo a
// step after a failure or a crash (docs/architecture.md).
//
// Records (statemachine.Store.PutRecord) written by the steps:
//
//	block   what blocking writes at the source changed (the engine's
//	        engine.Block, written before it changes it), and whether it is
//	        in force: Unblock, Recover and Rollback undo it from here
//	import  what the import created at the destination (the engine's
//	        engine.ImportRecord, written before it creates it): a failed
//	        attempt, Recover and Rollback drop exactly it
//	close   what closing the source changed
//	stream  what an online row's stream created, and what its cutover
//	        verified (the engine's own record, online.go)
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

// undoPatiently runs undo until it works, fails for good or the undo
// window (undoTimeout) ends, waiting longer between tries: the cleanup
// after a row's last attempt waits out a server that is restarting
// instead of leaving what the attempts created behind a failed row.
func undoPatiently(ctx context.Context, job *agent.Job, what string, undo func(context.Context) error) error {
	uctx, cancel := undoContext(ctx)
	defer cancel()
	start, wait := time.Now(), 500*time.Millisecond
	for tries := 1; ; tries++ {
		err := undo(uctx)
		switch {
		case err == nil:
			if tries > 1 {
				job.Log.Info(what+": done", "tries", tries, "took", time.Since(start).Round(time.Millisecond).String())
			}
			return nil
		case agent.IsPermanent(permanent(err)):
			return fmt.Errorf("%s: %w", what, err)
		case tries == 1:
			job.Log.Warn(what+" failed; trying again until it works", "err", err, "for_at_most", undoTimeout.String())
		}
		select {
		case <-uctx.Done():
			return fmt.Errorf("%s: still failing after %d tries in %s: %w", what, tries, time.Since(start).Round(time.Second), err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Second)
	}
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
	body, err := getSmall(ctx, st, key)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return engine.Permanentf("%s in %s is not valid: %v", key, st.Describe(), err)
	}
	return nil
}

// getSmall reads a small object (a manifest, secrets) whole.
func getSmall(ctx context.Context, st storage.Store, key string) ([]byte, error) {
	rc, _, err := st.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("read %s from %s: %w", key, st.Describe(), err)
	}
	defer rc.Close()
	body, err := io.ReadAll(io.LimitReader(rc, maxJSONObject))
	if err != nil {
		return nil, fmt.Errorf("read %s from %s: %w", key, st.Describe(), err)
	}
	return body, nil
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
	body, err := getSmall(ctx, st, objs.Manifest)
	if err != nil {
		return objs, nil, err
	}
	man, err := engine.DecodeManifest(body)
	if err != nil {
		return objs, nil, fmt.Errorf("%s in %s: %w", objs.Manifest, st.Describe(), err)
	}
	if man.Database != m.DatabaseName || man.Engine != string(m.Engine) {
		return objs, nil, engine.Permanentf("%s describes %s database %q, not the row's %s %q", objs.Manifest, man.Engine, man.Database, m.Engine, m.DatabaseName)
	}
	return objs, man, nil
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

// corruptOr explains a failed import: a corrupt dump may show as a broken
// stream before the digest check at its end, so after a failure that is
// not already permanent the stored dump is read whole again to tell a
// corrupt one (permanent) from a store that failed for a moment.
func corruptOr(ctx context.Context, st storage.Store, objs dumpObjects, sha, database string, err error) error {
	if errors.Is(err, engine.ErrPermanent) || ctx.Err() != nil {
		return err
	}
	if cerr := checkObject(ctx, st, objs.Dump, sha); cerr != nil {
		var dm *storage.DigestMismatchError
		if errors.As(cerr, &dm) {
			return fmt.Errorf("import %q: %w", database, cerr)
		}
	}
	return err
}

// lateWrites turns the close step's failed re-check of the source into
// its final word: a difference means writes slipped past the block after
// the consistency point and are not at the live destination.
func lateWrites(row *statemachine.Migration, err error) error {
	if errors.Is(err, engine.ErrPermanent) {
		// An online row's consistency point is its cutover, under the
		// block (the close's dump is taken later).
		point := "the consistency point (" + row.ConsistencyPoint.UTC().Format(time.RFC3339) + ")"
		if row.ConsistencyPoint.IsZero() {
			point = "the cutover (writes blocked since " + row.BlockedAt.UTC().Format(time.RFC3339) + ")"
		}
		return agent.Permanentf("writes reached the source after %s, so they are not at the destination, which is live since the DNS switch: %v. "+
			"The source was left as it is: find who wrote (administrators and superusers are not blocked), carry the changes to the destination, then close the source by hand",
			point, err)
	}
	return err
}

// recheck is the close step's re-check of the source against the dump's
// manifest, before the source is closed for good: the tables written since
// the dump (verifySince), or every table (verify) when full. A difference
// is the late-writes failure; a note says which tables were read and why.
func recheck(ctx context.Context, job *agent.Job, man *engine.Manifest, full bool,
	verify func(context.Context, *engine.Manifest, func(done, total int)) error,
	verifySince func(context.Context, *engine.Manifest, func(done, total int)) (int, string, error),
	progress func(done, total int),
) error {
	tables := len(man.Tables)
	read, why := tables, "the agent is set to (agent.full-recheck)"
	var err error
	if full {
		err = verify(ctx, man, progress)
	} else {
		read, why, err = verifySince(ctx, man, progress)
	}
	if err := lateWrites(&job.Row, err); err != nil {
		return err
	}
	switch {
	case why != "":
		job.Note(ctx, "source re-checked: all %d tables read again (%s): nothing written since the dump", tables, why)
	case read == 0:
		job.Note(ctx, "source re-checked by its change marks: none of its %d tables written since the dump, none read again", tables)
	default:
		job.Note(ctx, "source re-checked by its change marks: %d of %d tables written since the dump, read again: same contents as dumped", read, tables)
	}
	return nil
}

// switchedRefusal refuses a rollback at the source once DNS has moved.
func switchedRefusal(row *statemachine.Migration) error {
	if row.SwitchedAt.IsZero() {
		return nil
	}
	return agent.Permanentf("the DNS name %s was switched to the destination at %s and is not recorded as pointing back: "+
		"`migrate rollback --discard-destination-writes` points it back before the row comes here; nothing was changed",
		row.DNSName, row.SwitchedAt.UTC().Format(time.RFC3339))
}
