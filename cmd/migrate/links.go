package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/storeopen"
	"github.com/fleetmigrate/fleetmigrate/links"
	"github.com/fleetmigrate/fleetmigrate/storage"
)

// runDumpLink: `migrate dump-link --id N [--ttl 720h]` prints a link the
// customer can download the row's dump with, until the TTL ends.
func runDumpLink(ctx context.Context, e *env, args []string) error {
	fs, cf := newFlags(e, "dump-link", "dump-link --id N [--ttl 720h]")
	id := fs.Int64("id", 0, "the row whose dump to link (required)")
	ttlFlag := fs.String("ttl", "", "how long the link works, e.g. 720h or 30d (default: links.default-ttl)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *id <= 0 {
		return usagef("migrate dump-link --id 1234", "--id is required")
	}
	var ttl time.Duration
	if *ttlFlag != "" {
		d, err := links.ParseTTL(*ttlFlag)
		if err != nil {
			return usagef("migrate dump-link --id 1234 --ttl 30d", "%v", err)
		}
		ttl = d
	}
	store, cfg, err := openStore(ctx, e, cf)
	if err != nil {
		return err
	}
	defer store.Close()
	if ttl == 0 {
		ttl = cfg.Links.DefaultTTL
	}
	if err := links.CheckSecret(cfg.Links.Secret); err != nil {
		return err
	}
	if cfg.Links.PublicBase == "" {
		return errors.New("links.public-base is empty: set the URL customers reach `migrate serve` at")
	}
	m, err := store.Get(ctx, *id)
	if err != nil {
		return err
	}
	if m.DumpURL == "" {
		if m.DumpSHA256 != "" {
			return fmt.Errorf("row %d: its dump was deleted by retention", m.ID)
		}
		return fmt.Errorf("row %d has no dump yet (status %s)", m.ID, m.Status)
	}
	objects, err := storeopen.Open(ctx, cfg.Storage)
	if err != nil {
		return err
	}
	key, err := objects.Key(m.DumpURL)
	if err != nil {
		return fmt.Errorf("row %d: %w", m.ID, err)
	}
	now, err := store.Now(ctx)
	if err != nil {
		return err
	}
	expires := now.Add(ttl)
	token, err := links.Sign([]byte(cfg.Links.Secret), links.Claims{Row: m.ID, Key: key, Expires: expires})
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, links.URL(cfg.Links.PublicBase, token))
	fmt.Fprintf(e.stderr, "row %d, %s database %s: %s, valid until %s\n", m.ID, m.Engine, displayName(m.DatabaseName),
		links.Filename(m, key), expires.UTC().Format(time.RFC3339))
	if ref, _, err := storage.ParseDumpKey(key); err == nil {
		if gone := ref.ConsistencyPoint.Add(cfg.Storage.Retention); expires.After(gone) {
			fmt.Fprintf(e.stderr, "note: retention deletes this dump around %s; the link stops working then\n", gone.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// runServe: `migrate serve [--listen :8080]` answers download links.
func runServe(ctx context.Context, e *env, args []string) error {
	fs, cf := newFlags(e, "serve", "serve [--listen :8080]")
	listen := fs.String("listen", "", "address to listen on (default: links.listen)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	store, cfg, err := openStore(ctx, e, cf)
	if err != nil {
		return err
	}
	defer store.Close()
	if err := links.CheckSecret(cfg.Links.Secret); err != nil {
		return err
	}
	objects, err := storeopen.Open(ctx, cfg.Storage)
	if err != nil {
		return err
	}
	addr := cfg.Links.Listen
	if *listen != "" {
		addr = *listen
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	log := cfg.Logger(e.stderr)
	srv := &links.Server{Rows: store, Objects: objects, Secret: []byte(cfg.Links.Secret), RatePerMinute: cfg.Links.RateLimit, Log: log}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	log.Info("serving download links", "listen", l.Addr().String(), "store", objects.Describe())
	fmt.Fprintf(e.stdout, "serving download links on %s\n", l.Addr())
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return hs.Shutdown(sctx)
}
