// Command fleetdemo is `make demo`: it starts a local fleet of real servers
// on loopback addresses, seeds databases, migrates them with the real
// migrate and migrate-agent binaries and proves that every database is
// where its users will look for it. Ctrl-C stops everything it started.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/fleetmigrate/fleetmigrate/internal/demo"
)

func main() {
	dbs := flag.Int("dbs", 300, "databases to seed and migrate (every fifth is PostgreSQL)")
	maxProcs := flag.Int("max-procs", 40, "the scheduler's --max-procs")
	maxMiB := flag.Int64("max-mib", 50, "size of the largest databases (MiB)")
	bin := flag.String("bin", "bin", "directory of the built migrate and migrate-agent")
	dir := flag.String("dir", "", "where logs and configuration go (default .demo/run-<time>)")
	sizeMiB := flag.Int64("size-mib", 0, "make every database about this size (MiB)")
	baselines := flag.Bool("baselines", false, "before migrating, copy each database with mariadb-dump, mydumper/myloader, pg_dump, pgcopydb and report their speed beside ours (for a few large databases)")
	plain := flag.Bool("plain-names", false, "no awkward database and user names (mydumper 0.10 cannot take non-ASCII names)")
	tiny := flag.Bool("tiny", false, "every database one small table of 10 rows (the per-database fixed cost benchmark)")
	engine := flag.String("engine", "", "make every database mysql or postgres (default: every fifth postgres)")
	dumpJobs := flag.Int("dump-jobs", 0, "the agents' max-jobs.dump: databases each destination takes in at once, each dumped from its source and imported as it comes (0: the shipped default, 2)")
	mysqlJobs := flag.Int("mysql-jobs", 0, "the agents' mysql.jobs: sessions loading a dump's rows and checksumming at once (0: the default, 4)")
	timeout := flag.Duration("timeout", 60*time.Minute, "give up on the migration after this long")
	mode := flag.String("mode", "", "the plan's mode column for every row: dump, online or auto (MySQL rows given online are planned auto); default: no column, the configuration's default (dump)")
	writers := flag.Int("writers", 0, "run a live writer for this many databases: it inserts numbered rows through the database's DNS name with its own user and password during the migration; the summary reports acknowledged writes, those missing at the destination (must be 0) and the write-blocked window each writer saw")
	writerRate := flag.Float64("writer-rate", 20, "inserts per second of each writer")
	hotRows := flag.Int("hot-rows", 0, "give each writer's database a table of this many rows that the writer updates at random keys, one update with each insert (a table the customer writes all the time)")
	hosts := flag.Int("hosts", 0, "source and destination hosts per engine (0: three a side for the main engine, one for the other); 1 puts every database of an engine on one source")
	kills := flag.Int("kill", 0, "kill this many processes with kill -9 during the migration, spread over it, each restarted at once as systemd would: every third the scheduler, the others an agent holding rows of a step (a different step each time); the summary says how long their rows waited")
	flag.Parse()
	if *hosts < 0 {
		fmt.Fprintf(os.Stderr, "fleetdemo: --hosts %d: want 0 (the default) or more\n", *hosts)
		os.Exit(2)
	}
	if *engine != "" && *engine != demo.MySQL && *engine != demo.Postgres {
		fmt.Fprintf(os.Stderr, "fleetdemo: --engine %q: want mysql or postgres\n", *engine)
		os.Exit(2)
	}
	switch *mode {
	case "", "dump", "online", "auto":
	default:
		fmt.Fprintf(os.Stderr, "fleetdemo: --mode %q: want dump, online or auto\n", *mode)
		os.Exit(2)
	}
	if *dir == "" {
		*dir = filepath.Join(".demo", "run-"+time.Now().Format("20060102-150405"))
	}
	abs, err := filepath.Abs(*dir)
	if err == nil {
		*dir = abs
	}
	if b, err := filepath.Abs(*bin); err == nil {
		*bin = b
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		fmt.Fprintln(os.Stderr, "\ninterrupted: stopping the agents, the scheduler and every server this demo started...")
		cancel()
		<-sigs
		fmt.Fprintln(os.Stderr, "second interrupt: exiting now; the servers die with this process")
		os.Exit(130)
	}()
	sum, err := demo.Run(ctx, demo.Options{
		Layout:     demo.Layout{DBs: *dbs, MaxBytes: *maxMiB << 20, Seed: 1, Tiny: *tiny, Engine: *engine, SizeBytes: *sizeMiB << 20, PlainNames: *plain},
		Baselines:  *baselines,
		MySQLJobs:  *mysqlJobs,
		DumpJobs:   *dumpJobs,
		MaxProcs:   *maxProcs,
		Dir:        *dir,
		MigrateBin: filepath.Join(*bin, "migrate"),
		AgentBin:   filepath.Join(*bin, "migrate-agent"),
		Out:        os.Stdout,
		Redraw:     isTerminal(os.Stdout),
		Timeout:    *timeout,
		Mode:       *mode,
		Writers:    *writers,
		WriterRate: *writerRate,
		HotRows:    *hotRows,
		Kills:      *kills,
		Size:       demo.FleetSize{MySQLSources: *hosts, MySQLDestinations: *hosts, PostgresSources: *hosts, PostgresDestinations: *hosts},
	})
	switch {
	case ctx.Err() != nil:
		fmt.Fprintln(os.Stderr, "demo interrupted; everything it started is stopped")
		os.Exit(130)
	case err != nil:
		fmt.Fprintf(os.Stderr, "demo failed: %v\nlogs: %s\n", err, *dir)
		os.Exit(1)
	case sum.Failures() > 0:
		fmt.Fprintf(os.Stderr, "demo finished with %d failures\n", sum.Failures())
		os.Exit(1)
	}
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
