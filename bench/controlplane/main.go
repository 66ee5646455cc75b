// Command controlplane measures the control plane at fleet scale: a state
// table of N planned rows on a real PostgreSQL or MariaDB server (started by
// internal/fleettest), 1,081 real agent runtimes (780 source hosts with the
// dump, close and rollback roles, 300 destination hosts with import, one DNS
// host) with a zero-work handler, and the real scheduler. Every claim,
// lease, fence, transition and event is the one a real run makes; only the
// steps' work (dumping, importing, DNS) is skipped.
//
// What is simulated: the agents are goroutines in this one process, in
// --groups host groups; each group shares one state-database pool of
// --conns connections (and, on PostgreSQL, one LISTEN connection), where a
// real fleet has one process, one pool and one listener per host. Everything
// runs on this machine beside the state database.
//
// Usage (see BENCHMARKS.md):
//
//	go run ./bench/controlplane --engines postgres,mariadb --rows 100000,800000 --runs 3
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/fleetmigrate/fleetmigrate/agent"
	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/migrations"
	"github.com/fleetmigrate/fleetmigrate/scheduler"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/statemachine/sqlstore"
)

type options struct {
	engines   []string
	rows      []int
	runs      int
	warmup    time.Duration
	measure   time.Duration
	poll      time.Duration
	tick      time.Duration
	sources   int
	dests     int
	groups    int
	conns     int
	maxProcs  int
	wakeups   []bool
	resultDir string
	top       bool
}

func main() {
	var o options
	var engines, rows, wakeups string
	flag.StringVar(&engines, "engines", "postgres,mariadb", "state database engines to measure, comma-separated")
	flag.StringVar(&rows, "rows", "100000,800000", "planned rows in the state table, comma-separated sizes")
	flag.IntVar(&o.runs, "runs", 3, "runs per configuration (figures are medians with min–max)")
	flag.DurationVar(&o.warmup, "warmup", 10*time.Second, "time before measuring (every agent polled, steady flow)")
	flag.DurationVar(&o.measure, "measure", 30*time.Second, "measurement window")
	flag.DurationVar(&o.poll, "poll", time.Second, "agents' poll interval (jittered ±50%)")
	flag.DurationVar(&o.tick, "tick", time.Second, "scheduler tick")
	flag.IntVar(&o.sources, "sources", 780, "source hosts (one agent each: dump, close, rollback)")
	flag.IntVar(&o.dests, "destinations", 300, "destination hosts (one agent each: import)")
	flag.IntVar(&o.groups, "groups", 20, "simulated host groups, each sharing one state-database pool")
	flag.IntVar(&o.conns, "conns", 4, "state-database connections per host group")
	flag.IntVar(&o.maxProcs, "max-procs", 400, "scheduler --max-procs")
	flag.StringVar(&wakeups, "wakeups", "on,off", "PostgreSQL: with LISTEN/NOTIFY wake-ups (on), polling only (off), or both")
	flag.StringVar(&o.resultDir, "results", "bench/results", "directory for the raw results (JSON lines and the summary)")
	flag.BoolVar(&o.top, "top", false, "PostgreSQL: print the statements that took the most server time in each run (pg_stat_statements)")
	flag.Parse()
	o.engines = strings.Split(engines, ",")
	for _, r := range strings.Split(rows, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(r))
		if err != nil || n < 1000 {
			fatal(fmt.Errorf("--rows %q: want sizes of at least 1000", r))
		}
		o.rows = append(o.rows, n)
	}
	for _, w := range strings.Split(wakeups, ",") {
		switch strings.TrimSpace(w) {
		case "on":
			o.wakeups = append(o.wakeups, true)
		case "off":
			o.wakeups = append(o.wakeups, false)
		default:
			fatal(fmt.Errorf("--wakeups %q: want on, off or on,off", w))
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "controlplane:", err)
	os.Exit(1)
}

// server is a state database under measurement.
type server struct {
	engine string
	driver string
	pid    int
	dsn    func(db string) string
	create func(ctx context.Context, db string) error
	stop   func() error
}

func startServer(ctx context.Context, engine string) (*server, error) {
	switch engine {
	case "postgres":
		p, err := fleettest.StartPostgres(ctx, fleettest.PostgresConfig{Settings: map[string]string{
			"max_connections": "400", "shared_preload_libraries": "pg_stat_statements", "shared_buffers": "256MB",
		}})
		if err != nil {
			return nil, err
		}
		return &server{engine: engine, driver: "postgres", pid: p.PID(), dsn: p.DSN, stop: p.Stop,
			create: func(ctx context.Context, db string) error {
				return execOn(ctx, "pgx", p.DSN("postgres"), "CREATE DATABASE "+db)
			}}, nil
	case "mariadb":
		m, err := fleettest.StartMariaDB(ctx, fleettest.MariaDBConfig{Args: []string{"--max-connections=400", "--innodb-buffer-pool-size=512M"}})
		if err != nil {
			return nil, err
		}
		return &server{engine: engine, driver: "mysql", pid: m.PID(), dsn: m.DSN, stop: m.Stop,
			create: func(ctx context.Context, db string) error {
				return execOn(ctx, "mysql", m.DSN(""), "CREATE DATABASE "+db)
			}}, nil
	}
	return nil, fmt.Errorf("unknown engine %q: want postgres or mariadb", engine)
}

func execOn(ctx context.Context, driver, dsn string, stmts ...string) error {
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	for _, q := range stmts {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}

func run(ctx context.Context, o options) error {
	if err := os.MkdirAll(o.resultDir, 0o755); err != nil {
		return err
	}
	stamp := time.Now().UTC().Format("20060102-150405")
	raw, err := os.Create(filepath.Join(o.resultDir, "controlplane-"+stamp+".jsonl"))
	if err != nil {
		return err
	}
	defer raw.Close()
	fmt.Printf("control plane: %d source + %d destination agents + 1 DNS agent in %d host groups × %d connections, poll %s ±50%%, scheduler --max-procs %d --tick %s; %s warm-up, %s measured, %d run(s) each\n",
		o.sources, o.dests, o.groups, o.conns, o.poll, o.maxProcs, o.tick, o.warmup, o.measure, o.runs)
	fmt.Printf("machine: %s\n\n", machine())
	var all []result
	seq := 0
	for _, engine := range o.engines {
		srv, err := startServer(ctx, engine)
		if err != nil {
			return fmt.Errorf("start %s: %w", engine, err)
		}
		modes := o.wakeups
		if engine != "postgres" {
			modes = []bool{false}
		}
		for _, n := range o.rows {
			for _, wake := range modes {
				for i := range o.runs {
					seq++
					r, err := once(ctx, o, srv, n, wake, fmt.Sprintf("bench_%d", seq))
					if err != nil {
						_ = srv.stop()
						return fmt.Errorf("%s, %d rows, run %d: %w", engine, n, i+1, err)
					}
					r.Run = i + 1
					fmt.Println(r.line())
					all = append(all, r)
					b, _ := json.Marshal(r)
					fmt.Fprintln(raw, string(b))
				}
			}
		}
		if err := srv.stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop", engine, err)
		}
	}
	summary := summarize(o, all)
	fmt.Println()
	fmt.Print(summary)
	return os.WriteFile(filepath.Join(o.resultDir, "controlplane-"+stamp+".md"), []byte(summary), 0o644)
}

// result is one run's figures.
type result struct {
	Engine         string             `json:"engine"`
	Rows           int                `json:"rows"`
	Wakeups        bool               `json:"wakeups"`
	Run            int                `json:"run"`
	Agents         int                `json:"agents"`
	Seconds        float64            `json:"seconds"`
	Completed      int                `json:"completed"`
	PerSecond      float64            `json:"migrations_per_second"`
	ClaimP50ms     float64            `json:"claim_call_p50_ms"`
	ClaimP99ms     float64            `json:"claim_call_p99_ms"`
	Hops           map[string]hopStat `json:"hop_latency_ms"`
	QueriesPerSec  float64            `json:"state_db_queries_per_second"`
	TxPerSec       float64            `json:"state_db_transactions_per_second"`
	DBCPU          float64            `json:"state_db_cpu_cores"`
	BenchCPU       float64            `json:"agents_and_scheduler_cpu_cores"`
	TickMeanMs     float64            `json:"scheduler_tick_mean_ms"`
	Ticks          int                `json:"scheduler_ticks"`
	EventsChecked  int                `json:"rows_checked_for_events"`
	EventsMissing  int                `json:"rows_with_wrong_events"`
	MaxInFlightSet int                `json:"max_procs"`
}

type hopStat struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func (r result) mode() string {
	if r.Engine != "postgres" {
		return "polling"
	}
	if r.Wakeups {
		return "LISTEN/NOTIFY"
	}
	return "polling only"
}

func (r result) line() string {
	var hops []string
	for _, st := range queuedOrder {
		if h, ok := r.Hops[st]; ok {
			hops = append(hops, fmt.Sprintf("%s p50 %.0f p99 %.0f", st, h.P50, h.P99))
		}
	}
	return fmt.Sprintf("%-8s %4dk rows %-13s run %d: %6.1f migrations/s (%d in %.0fs), claim call p50 %.1f ms p99 %.1f ms, %5.0f queries/s, %5.0f tx/s, state DB %.2f cores, agents+scheduler %.2f cores, tick %.1f ms (%d), events ok %d/%d; hops (ms) %s",
		r.Engine, r.Rows/1000, r.mode(), r.Run, r.PerSecond, r.Completed, r.Seconds, r.ClaimP50ms, r.ClaimP99ms, r.QueriesPerSec, r.TxPerSec,
		r.DBCPU, r.BenchCPU, r.TickMeanMs, r.Ticks, r.EventsChecked-r.EventsMissing, r.EventsChecked, strings.Join(hops, ", "))
}

var queuedOrder = []string{string(statemachine.ToDump), string(statemachine.ToImport), string(statemachine.DNSToUpdate), string(statemachine.ToCloseSource)}

// zeroWork is a handler that does nothing and succeeds: the dump step
// returns the fields a dump records.
type zeroWork struct{}

func (zeroWork) Run(_ context.Context, job *agent.Job) (statemachine.Fields, error) {
	if job.Row.Status == statemachine.Dumping {
		return statemachine.Fields{DumpURL: "file:///bench/dump.sql.zst", DumpSHA256: strings.Repeat("ab", 32), DumpBytes: 1}, nil
	}
	return statemachine.Fields{}, nil
}
func (zeroWork) Recover(context.Context, *agent.Job) error { return nil }

// timedStore times the agents' claim calls; wakingStore adds the store's
// wake-ups (without it, agents and scheduler only poll).
type timedStore struct {
	statemachine.Store
	lat *latencies
}

func (s timedStore) Claim(ctx context.Context, req statemachine.ClaimRequest) ([]statemachine.Migration, error) {
	t := time.Now()
	ms, err := s.Store.Claim(ctx, req)
	s.lat.add(time.Since(t))
	return ms, err
}

type wakingStore struct {
	timedStore
	w statemachine.Waker
}

func (s wakingStore) Wake(role statemachine.Role, host string) (<-chan struct{}, func()) {
	return s.w.Wake(role, host)
}
func (s wakingStore) WakeScheduler() (<-chan struct{}, func()) { return s.w.WakeScheduler() }

type latencies struct {
	mu sync.Mutex
	d  []time.Duration
	on bool
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	if l.on {
		l.d = append(l.d, d)
	}
	l.mu.Unlock()
}

func (l *latencies) record(on bool) []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.on = on
	out := l.d
	l.d = nil
	return out
}

func seedSQL(driver string, n int) string {
	if driver == "postgres" {
		return fmt.Sprintf(`INSERT INTO migration (engine, database_name, source, destination, dns_name)
			SELECT 'mysql', 'cust_' || g, 'src-' || lpad((g %% 780)::text, 3, '0'), 'dst-' || lpad(((g / 780) %% 300)::text, 3, '0'),
			       'cust-' || g || '.db.example.test'
			FROM generate_series(0, %d) g`, n-1)
	}
	return fmt.Sprintf(`INSERT INTO migration (engine, database_name, source, destination, dns_name)
		SELECT 'mysql', CONCAT('cust_', seq), CONCAT('src-', LPAD(seq %% 780, 3, '0')), CONCAT('dst-', LPAD((seq DIV 780) %% 300, 3, '0')),
		       CONCAT('cust-', seq, '.db.example.test')
		FROM seq_0_to_%d`, n-1)
}

// once runs one measurement on a fresh state database of n rows.
func once(ctx context.Context, o options, srv *server, n int, wake bool, dbName string) (result, error) {
	r := result{Engine: srv.engine, Rows: n, Wakeups: wake, MaxInFlightSet: o.maxProcs}
	if err := srv.create(ctx, dbName); err != nil {
		return r, err
	}
	dsn := srv.dsn(dbName)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	admin, dialect, _, err := sqlstore.Connect(ctx, sqlstore.Config{Driver: srv.driver, DSN: dsn, Logger: quiet})
	if err != nil {
		return r, err
	}
	defer admin.Close()
	if _, err := migrations.Up(ctx, admin, dialect, quiet); err != nil {
		return r, fmt.Errorf("schema: %w", err)
	}
	// Seeding is not measured (planning is, in BENCHMARKS.md): the rows are
	// inserted server-side, without their "planned" events.
	if _, err := admin.ExecContext(ctx, seedSQL(srv.driver, n)); err != nil {
		return r, fmt.Errorf("seed: %w", err)
	}
	analyze := "ANALYZE TABLE migration"
	if srv.driver == "postgres" {
		analyze = "ANALYZE migration"
		if _, err := admin.ExecContext(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
			return r, err
		}
	}
	if _, err := admin.ExecContext(ctx, analyze); err != nil {
		return r, err
	}

	lat := &latencies{}
	var stores []*sqlstore.Store
	defer func() {
		for _, s := range stores {
			_ = s.Close()
		}
	}()
	wrap := func(s *sqlstore.Store) statemachine.Store {
		t := timedStore{Store: s, lat: lat}
		if wake {
			return wakingStore{timedStore: t, w: s}
		}
		return t
	}
	openStore := func(conns int) (*sqlstore.Store, error) {
		s, err := sqlstore.Open(ctx, sqlstore.Config{Driver: srv.driver, DSN: dsn, MaxOpenConns: conns, Logger: quiet})
		if err == nil {
			stores = append(stores, s)
		}
		return s, err
	}
	groups := make([]statemachine.Store, o.groups)
	for i := range groups {
		s, err := openStore(o.conns)
		if err != nil {
			return r, err
		}
		groups[i] = wrap(s)
	}
	type host struct {
		id    string
		roles []statemachine.Role
	}
	var hosts []host
	for i := range o.sources {
		hosts = append(hosts, host{fmt.Sprintf("src-%03d", i), []statemachine.Role{statemachine.RoleClose, statemachine.RoleRollback}})
	}
	for i := range o.dests {
		hosts = append(hosts, host{fmt.Sprintf("dst-%03d", i), []statemachine.Role{statemachine.RoleDump, statemachine.RoleImport}})
	}
	hosts = append(hosts, host{"dns", []statemachine.Role{statemachine.RoleDNS}})
	r.Agents = len(hosts)

	// The DNS host is one machine of its own: its own pool.
	dnsStore, err := openStore(o.conns)
	if err != nil {
		return r, err
	}
	agentsCtx, stopAgents := context.WithCancel(ctx)
	defer stopAgents()
	var wg sync.WaitGroup
	errs := make(chan error, len(hosts)+1)
	for i, h := range hosts {
		st := groups[i%o.groups]
		if h.id == "dns" {
			st = wrap(dnsStore)
		}
		a, err := agent.New(st, agent.Config{Host: h.id, Roles: h.roles, PollInterval: o.poll, ShutdownTimeout: 5 * time.Second,
			Version: "bench"}, quiet, nil)
		if err != nil {
			stopAgents()
			return r, err
		}
		for _, role := range h.roles {
			a.Handle(role, "", zeroWork{})
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Run(agentsCtx); err != nil {
				errs <- fmt.Errorf("agent %s: %w", h.id, err)
			}
		}()
	}
	schStore, err := openStore(4)
	if err != nil {
		stopAgents()
		return r, err
	}
	reg := prometheus.NewRegistry()
	sm := scheduler.NewMetrics(reg)
	sch, err := scheduler.New(wrap(schStore), scheduler.Config{MaxProcs: o.maxProcs, Tick: o.tick, Holder: "bench pid " + strconv.Itoa(os.Getpid())}, quiet, sm)
	if err != nil {
		stopAgents()
		return r, err
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := sch.Run(agentsCtx); err != nil {
			errs <- fmt.Errorf("scheduler: %w", err)
		}
	}()
	stopAll := func() {
		stopAgents()
		wg.Wait()
	}

	// wait lets the fleet run for d, unless an agent or the scheduler fails.
	wait := func(d time.Duration) error {
		select {
		case <-time.After(d):
			return nil
		case err := <-errs:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := wait(o.warmup); err != nil {
		stopAll()
		return r, err
	}
	s0, err := snapshot(ctx, admin, srv, sm)
	if err != nil {
		stopAll()
		return r, err
	}
	lat.record(true)
	if err := wait(o.measure); err != nil {
		stopAll()
		return r, err
	}
	s1, err := snapshot(ctx, admin, srv, sm)
	claims := lat.record(false)
	if o.top && srv.driver == "postgres" {
		printTop(ctx, admin)
	}
	stopAll()
	if err != nil {
		return r, err
	}
	secs := s1.at.Sub(s0.at).Seconds()
	r.Seconds = secs
	r.Completed = s1.done - s0.done
	r.PerSecond = float64(r.Completed) / secs
	r.QueriesPerSec = float64(s1.queries-s0.queries) / secs
	r.TxPerSec = float64(s1.tx-s0.tx) / secs
	r.DBCPU = (s1.dbCPU - s0.dbCPU) / secs
	r.BenchCPU = (s1.selfCPU - s0.selfCPU) / secs
	if ticks := s1.ticks - s0.ticks; ticks > 0 {
		r.Ticks = int(ticks)
		r.TickMeanMs = (s1.tickSum - s0.tickSum) / float64(ticks) * 1000
	}
	slices.Sort(claims)
	r.ClaimP50ms, r.ClaimP99ms = ms(pct(claims, 0.50)), ms(pct(claims, 0.99))
	r.Hops, r.EventsChecked, r.EventsMissing, err = hops(ctx, admin, srv.driver, s0.dbNow, s1.dbNow)
	return r, err
}

type snap struct {
	at             time.Time
	dbNow          time.Time
	done           int
	queries, tx    int64
	dbCPU, selfCPU float64
	ticks          uint64
	tickSum        float64
}

func snapshot(ctx context.Context, db *sql.DB, srv *server, sm *scheduler.Metrics) (snap, error) {
	s := snap{at: time.Now()}
	var err error
	if srv.driver == "postgres" {
		err = db.QueryRowContext(ctx, `SELECT now(), (SELECT count(*) FROM migration WHERE status = 'Done'),
			(SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())),
			(SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database())`).Scan(&s.dbNow, &s.done, &s.queries, &s.tx)
	} else {
		err = db.QueryRowContext(ctx, `SELECT UTC_TIMESTAMP(6), (SELECT count(*) FROM migration WHERE status = 'Done'),
			(SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'QUESTIONS'),
			(SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'COM_COMMIT')`).Scan(&s.dbNow, &s.done, &s.queries, &s.tx)
	}
	if err != nil {
		return s, fmt.Errorf("snapshot: %w", err)
	}
	s.dbCPU = fleettest.TreeCPU(srv.pid)
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		s.selfCPU = tv(ru.Utime) + tv(ru.Stime)
	}
	var m dto.Metric
	if err := sm.TickSeconds.Write(&m); err == nil && m.Histogram != nil {
		s.ticks, s.tickSum = m.Histogram.GetSampleCount(), m.Histogram.GetSampleSum()
	}
	return s, nil
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// hops reads the audit trail of the rows that reached Done within the
// window: for each claim, how long the row had waited in the queued status
// (the claim event's time minus the time of the event that queued it), and
// whether each row has exactly the events of a full run.
func hops(ctx context.Context, db *sql.DB, driver string, from, to time.Time) (map[string]hopStat, int, int, error) {
	p1, p2 := "?", "?"
	if driver == "postgres" {
		p1, p2 = "$1", "$2"
	}
	q := `SELECT e.migration_id, e.from_status, e.to_status, e.created_at FROM migration_event e JOIN migration m ON m.id = e.migration_id
		WHERE m.status = 'Done' AND m.updated_at >= ` + p1 + ` AND m.updated_at < ` + p2 + ` ORDER BY e.migration_id, e.id`
	rows, err := db.QueryContext(ctx, q, from, to)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("read events: %w", err)
	}
	defer rows.Close()
	want := []string{"Waiting>To dump", "To dump>Dumping", "Dumping>To import", "To import>Importing", "Importing>DNS to update",
		"DNS to update>Updating DNS", "Updating DNS>To close source", "To close source>Closing source", "Closing source>Done"}
	waits := map[string][]time.Duration{}
	checked, wrong := 0, 0
	var cur int64 = -1
	var seq []string
	var prevAt time.Time
	flush := func() {
		if cur >= 0 {
			checked++
			if !slices.Equal(seq, want) {
				wrong++
			}
		}
	}
	for rows.Next() {
		var id int64
		var fromSt, toSt string
		var at time.Time
		if err := rows.Scan(&id, &fromSt, &toSt, &at); err != nil {
			return nil, 0, 0, err
		}
		if id != cur {
			flush()
			cur, seq, prevAt = id, nil, time.Time{}
		}
		seq = append(seq, fromSt+">"+toSt)
		if slices.Contains(queuedOrder, fromSt) && !prevAt.IsZero() {
			waits[fromSt] = append(waits[fromSt], at.Sub(prevAt))
		}
		prevAt = at
	}
	flush()
	if err := rows.Err(); err != nil {
		return nil, 0, 0, err
	}
	out := map[string]hopStat{}
	for st, d := range waits {
		slices.Sort(d)
		out[st] = hopStat{N: len(d), P50: ms(pct(d, 0.5)), P99: ms(pct(d, 0.99)), Max: ms(d[len(d)-1])}
	}
	return out, checked, wrong, nil
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(p * float64(len(d)-1))
	return d[i]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func machine() string {
	cpu := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				cpu = strings.TrimSpace(l[strings.Index(l, ":")+1:])
				break
			}
		}
	}
	return fmt.Sprintf("%d cores (%s), %s", runtime.NumCPU(), cpu, runtime.Version())
}

// summarize writes the medians with min–max per configuration.
func summarize(o options, all []result) string {
	type key struct {
		engine string
		rows   int
		wake   bool
	}
	var keys []key
	by := map[key][]result{}
	for _, r := range all {
		k := key{r.Engine, r.Rows, r.Wakeups}
		if _, ok := by[k]; !ok {
			keys = append(keys, k)
		}
		by[k] = append(by[k], r)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Control plane, %d agents (%d groups × %d connections), poll %s, --max-procs %d, %s measured per run; median of %d run(s) [min–max]\n\n",
		o.sources+o.dests+1, o.groups, o.conns, o.poll, o.maxProcs, o.measure, o.runs)
	b.WriteString("| state DB | rows | wake-up | migrations/s | × reference (3.06/s) | claim call p50 / p99 ms | To import wait p50 / p99 ms | DNS to update wait p50 / p99 ms | queries/s | state-DB CPU (cores) | agents + scheduler CPU (cores) | tick mean ms | rows with every event |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, k := range keys {
		rs := by[k]
		f := func(get func(result) float64, prec int) string { return medRange(rs, get, prec) }
		hop := func(st string, p func(hopStat) float64) func(result) float64 {
			return func(r result) float64 { return p(r.Hops[st]) }
		}
		p50 := func(h hopStat) float64 { return h.P50 }
		p99 := func(h hopStat) float64 { return h.P99 }
		ok, checked := 0, 0
		for _, r := range rs {
			ok += r.EventsChecked - r.EventsMissing
			checked += r.EventsChecked
		}
		fmt.Fprintf(&b, "| %s | %dk | %s | %s | %s | %s / %s | %s / %s | %s / %s | %s | %s | %s | %s | %d / %d |\n",
			k.engine, k.rows/1000, rs[0].mode(),
			f(func(r result) float64 { return r.PerSecond }, 0),
			f(func(r result) float64 { return r.PerSecond / 3.06 }, 0),
			f(func(r result) float64 { return r.ClaimP50ms }, 1), f(func(r result) float64 { return r.ClaimP99ms }, 1),
			f(hop(string(statemachine.ToImport), p50), 0), f(hop(string(statemachine.ToImport), p99), 0),
			f(hop(string(statemachine.DNSToUpdate), p50), 0), f(hop(string(statemachine.DNSToUpdate), p99), 0),
			f(func(r result) float64 { return r.QueriesPerSec }, 0),
			f(func(r result) float64 { return r.DBCPU }, 2), f(func(r result) float64 { return r.BenchCPU }, 2),
			f(func(r result) float64 { return r.TickMeanMs }, 1), ok, checked)
	}
	return b.String()
}

func medRange(rs []result, get func(result) float64, prec int) string {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = get(r)
	}
	sort.Float64s(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	if len(v) == 1 {
		return strconv.FormatFloat(med, 'f', prec, 64)
	}
	return fmt.Sprintf("%s [%s–%s]", strconv.FormatFloat(med, 'f', prec, 64), strconv.FormatFloat(v[0], 'f', prec, 64), strconv.FormatFloat(v[len(v)-1], 'f', prec, 64))
}

// printTop prints the statements that cost the state database the most
// time, from pg_stat_statements (profiling the control plane).
func printTop(ctx context.Context, db *sql.DB) {
	rows, err := db.QueryContext(ctx, `SELECT calls, total_exec_time, mean_exec_time, left(regexp_replace(query, '\s+', ' ', 'g'), 160)
		FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		ORDER BY total_exec_time DESC LIMIT 12`)
	if err != nil {
		fmt.Println("top statements:", err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var calls int64
		var total, mean float64
		var q string
		if rows.Scan(&calls, &total, &mean, &q) == nil {
			fmt.Printf("  %8d calls %9.0f ms total %7.3f ms mean  %s\n", calls, total, mean, q)
		}
	}
	if err := rows.Err(); err != nil {
		fmt.Println("top statements:", err)
	}
}
