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
// row refers to any more (orphans, superseded by a newer dump) go too.
func runGC(ctx context.Context, e *env, args []string) error {
	fs, cf := newFlags(e, "gc", "gc [--older-than 720h] [--execute]")
	olderThan := fs.Duration("older-than", 0, "delete dumps whose consistency point is older than this (default: storage.retention)")
	execute := fs.Bool("execute", false, "delete; without it, only list what would be deleted")
	if err := parseFlags(fs, args); err != nil {
		return err
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
	if failed > 0 {
		return fmt.Errorf("%d deletions failed (see above)", failed)
	}
	return nil
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
