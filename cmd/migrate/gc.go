package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/storeopen"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/storage"
)

// minRetention guards against deleting dumps that migrations in flight
// still need.
const minRetention = time.Hour

// defaultUploadAge is how old an unfinished upload must be before gc
// aborts it: far longer than any dump takes to upload.
const defaultUploadAge = 24 * time.Hour

// dumpGroup is the objects of one dump (dump, manifest, secrets).
type dumpGroup struct {
	ref     storage.DumpRef
	objects []storage.Object
}

func (g dumpGroup) size() int64 {
	var n int64
	for _, o := range g.objects {
		n += o.Size
	}
	return n
}

// runGC: `migrate gc [--older-than 720h] [--execute]` lists, or deletes,
// dumps whose consistency point is older than the retention, and clears
// dump_url on their rows. Dumps of rows still in flight are kept; dumps no
// row refers to any more (orphans, superseded by a newer dump) go too. Then
// it aborts the unfinished uploads a killed agent left behind, and removes
// the online streams' slots, subscriptions and publications (ours by name,
// fleetmigrate_<row>_<digest>) whose row no longer streams.
func runGC(ctx context.Context, e *env, args []string) error {
	fs, cf := newFlags(e, "gc", "gc [--older-than 720h] [--uploads-older-than 24h] [--skip-streams] [--execute]")
	olderThan := fs.Duration("older-than", 0, "delete dumps whose consistency point is older than this (default: storage.retention)")
	uploadAge := fs.Duration("uploads-older-than", defaultUploadAge, "abort unfinished uploads (incomplete multipart uploads, temporary files) started longer ago than this")
	execute := fs.Bool("execute", false, "delete; without it, only list what would be deleted")
	skipStreams := fs.Bool("skip-streams", false, "do not look for what online streams left of rows that no longer stream (PostgreSQL slots, subscriptions and publications, as postgres.user; MariaDB stream records, as mysql.user; on the servers of the agent registry)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *uploadAge < minRetention {
		return usagef("migrate gc --uploads-older-than 24h", "--uploads-older-than %s: an upload younger than %s may still be under way", *uploadAge, minRetention)
	}
	store, cfg, err := openStore(ctx, e, cf)
	if err != nil {
		return err
	}
	defer store.Close()
	age := cfg.Storage.Retention
	if *olderThan != 0 {
		age = *olderThan
	}
	if age < minRetention {
		return usagef("migrate gc --older-than 720h", "--older-than %s: dumps younger than %s may still be needed by migrations in flight", age, minRetention)
	}
	objects, err := storeopen.Open(ctx, cfg.Storage)
	if err != nil {
		return err
	}
	now, err := store.Now(ctx)
	if err != nil {
		return err
	}
	cutoff := now.Add(-age)
	verb := "would delete"
	if *execute {
		verb = "delete"
	}
	var deleted, kept, unknown, failed int
	var bytes int64
	handle := func(g dumpGroup) {
		if !g.ref.ConsistencyPoint.Before(cutoff) {
			return
		}
		row, why := gcRow(ctx, store, objects, g)
		if row != nil && !row.Status.Terminal() {
			kept++
			fmt.Fprintf(e.stdout, "keep   %s: row %d is %s and still needs it\n", g.ref.Prefix(), row.ID, row.Status)
			return
		}
		fmt.Fprintf(e.stdout, "%s %s (%d objects, %s): %s\n", verb, g.ref.Prefix(), len(g.objects), humanBytes(g.size()), why)
		if !*execute {
			deleted++
			bytes += g.size()
			return
		}
		if row != nil {
			// The row stops pointing at the dump first: a link or an import
			// never sees a row whose dump is half deleted.
			if _, err := store.ExpireDump(ctx, row.ID, row.DumpURL, actor(cfg),
				fmt.Sprintf("dump deleted by retention (consistency point %s, older than %s)", g.ref.ConsistencyPoint.Format(time.RFC3339), age)); err != nil {
				failed++
				fmt.Fprintf(e.stderr, "%s: not deleted: %v\n", g.ref.Prefix(), err)
				return
			}
		}
		for _, o := range g.objects {
			if err := objects.Delete(ctx, o.Key); err != nil {
				failed++
				fmt.Fprintf(e.stderr, "%s: %v\n", o.Key, err)
				return
			}
		}
		deleted++
		bytes += g.size()
	}
	var cur *dumpGroup
	for o, err := range objects.List(ctx, storage.DumpsPrefix) {
		if err != nil {
			return err
		}
		ref, _, perr := storage.ParseDumpKey(o.Key)
		if perr != nil {
			unknown++
			fmt.Fprintf(e.stderr, "left alone: %s is not in the dump layout\n", o.Key)
			continue
		}
		if cur != nil && cur.ref.Prefix() != ref.Prefix() {
			handle(*cur)
			cur = nil
		}
		if cur == nil {
			cur = &dumpGroup{ref: ref}
		}
		cur.objects = append(cur.objects, o)
	}
	if cur != nil {
		handle(*cur)
	}
	summary := fmt.Sprintf("%s %d dumps (%s) older than %s", verb, deleted, humanBytes(bytes), age)
	if !*execute {
		summary = "dry run: " + summary + "; add --execute to delete them"
	}
	fmt.Fprintf(e.stdout, "%s; kept %d still needed; %d objects outside the layout left alone\n", summary, kept, unknown)
	if j, ok := objects.(storage.Janitor); ok {
		failed += gcUploads(ctx, e, store, j, now.Add(-*uploadAge), *execute)
	}
	if !*skipStreams {
		failed += gcStreams(ctx, e, store, cfg, *execute)
	}
	if failed > 0 {
		return fmt.Errorf("%d deletions failed (see above)", failed)
	}
	return nil
}

// gcUploads aborts the unfinished uploads under dumps/ started before
// cutoff, except those of a row that is dumping now (a very long upload),
// and returns how many aborts failed.
func gcUploads(ctx context.Context, e *env, store statemachine.Store, j storage.Janitor, cutoff time.Time, execute bool) int {
	verb := "would abort"
	if execute {
		verb = "abort"
	}
	var aborted, kept, failed int
	var bytes int64
	for p, err := range j.Pending(ctx, storage.DumpsPrefix) {
		if err != nil {
			fmt.Fprintf(e.stderr, "unfinished uploads: %v\n", err)
			return failed + 1
		}
		if !p.Started.Before(cutoff) {
			continue
		}
		if ref, _, err := storage.ParseDumpKey(p.Key); err == nil && dumpingNow(ctx, store, ref) {
			kept++
			fmt.Fprintf(e.stdout, "keep   unfinished upload of %s: its row is Dumping\n", p.Key)
			continue
		}
		fmt.Fprintf(e.stdout, "%s unfinished upload of %s (started %s)\n", verb, p.Key, p.Started.UTC().Format(time.RFC3339))
		if execute {
			if err := j.Abort(ctx, p); err != nil {
				failed++
				fmt.Fprintf(e.stderr, "%s: %v\n", p.Key, err)
				continue
			}
		}
		aborted++
		bytes += p.Size
	}
	summary := fmt.Sprintf("%s %d unfinished uploads started before %s", verb, aborted, cutoff.UTC().Format(time.RFC3339))
	if bytes > 0 {
		summary += fmt.Sprintf(" (%s)", humanBytes(bytes))
	}
	fmt.Fprintf(e.stdout, "%s; kept %d of rows dumping now\n", summary, kept)
	return failed
}

// dumpingNow says whether a row of the dump's database is Dumping (an
// upload that old may still be under way); a failed lookup says yes.
func dumpingNow(ctx context.Context, store statemachine.Store, ref storage.DumpRef) bool {
	rows, err := store.List(ctx, statemachine.Filter{Source: ref.Source, DatabaseName: ref.Database})
	if err != nil {
		return true
	}
	for _, m := range rows {
		if string(m.Engine) == ref.Engine && m.Status == statemachine.Dumping {
			return true
		}
	}
	return false
}

// gcRow finds the row whose dump_url is the group's dump, and says what
// the group is to it.
func gcRow(ctx context.Context, store statemachine.Store, objects storage.Store, g dumpGroup) (*statemachine.Migration, string) {
	rows, err := store.List(ctx, statemachine.Filter{Source: g.ref.Source, DatabaseName: g.ref.Database})
	if err != nil {
		return nil, "row lookup failed: " + err.Error()
	}
	for _, m := range rows {
		if string(m.Engine) != g.ref.Engine {
			continue
		}
		for _, o := range g.objects {
			if strings.HasPrefix(o.Key[len(g.ref.Prefix()):], "dump.") && m.DumpURL == objects.URL(o.Key) {
				return &m, fmt.Sprintf("row %d, %s", m.ID, m.Status)
			}
		}
		return nil, fmt.Sprintf("superseded: row %d has a newer dump", m.ID)
	}
	return nil, "orphan: no row refers to it"
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
