package demo

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/fleetmigrate/fleetmigrate/engine"
	myengine "github.com/fleetmigrate/fleetmigrate/engine/mysql"
	"github.com/fleetmigrate/fleetmigrate/engine/postgres"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
	"github.com/fleetmigrate/fleetmigrate/storage"
)

// The invariants every fault test ends with: whatever was killed, cut or
// corrupted, the fleet must hold them once it settled.
const (
	// InvRows: every planned database has exactly one row, in a valid
	// status whose columns agree with it (owner and lease while worked on,
	// none while queued; a dump and a block once dumped; a switch once
	// Done), and its last event leads to that status.
	InvRows = "rows consistent"
	// InvSources: every source database takes its users' writes, or its
	// row is in a status that explains why not (blocked, closed); and no
	// row that says "blocked" has a source that takes writes. Through DNS,
	// every name points where its row says.
	InvSources = "sources writable or explained"
	// InvDestinations: every database at a destination server is one a
	// row put there and still accounts for; every row past the import has
	// its database there.
	InvDestinations = "no unaccounted destination database"
	// InvDone: every Done row's database, reached through DNS with its
	// users' own credentials, has the checksum its source had before; the
	// others still have it at the source.
	InvDone = "content = source checksum"
	// InvStorage: every stored object belongs to a row; a row's dump is
	// there with its recorded size; dumps a row no longer refers to are
	// counted (migrate gc removes them).
	InvStorage = "no orphan object"
	// InvStreams: no replication slot, publication or subscription of ours
	// (fleetmigrate_<row>_<digest>) exists at any PostgreSQL server except
	// for a row that is syncing or cutting over.
	InvStreams = "no stream left behind"
)

// Invariants lists the checks in the order they run.
var Invariants = []string{InvRows, InvSources, InvDestinations, InvDone, InvStorage, InvStreams}

// online statuses before the cutover: nothing blocked, DNS untouched.
var onlineBefore = []statemachine.Status{statemachine.ToSync, statemachine.Syncing, statemachine.SyncFailed,
	statemachine.ToCutOver, statemachine.CutoverFailed}

// Violation is one broken invariant.
type Violation struct {
	Invariant string
	What      string
}

func (v Violation) String() string { return v.Invariant + ": " + v.What }

// InvariantReport is the result of CheckInvariants.
type InvariantReport struct {
	// Checked counts what each invariant looked at (rows, databases,
	// objects).
	Checked map[string]int
	// Violations: empty when the fleet is sound.
	Violations []Violation
	// Superseded counts stored dumps that no row refers to any more (an
	// earlier attempt's): not a violation, migrate gc deletes them.
	Superseded int
	// IncompleteUploads counts multipart uploads never completed nor
	// aborted (an agent killed mid-upload): they hold storage until
	// migrate gc or the bucket's lifecycle rule aborts them.
	IncompleteUploads int
	// Statuses counts the rows by status at the time of the check.
	Statuses map[statemachine.Status]int
}

// OK reports whether no invariant is broken.
func (r InvariantReport) OK() bool { return len(r.Violations) == 0 }

// Summary is one line: "5/5 invariants hold (12 rows, ...)" or the first
// violations.
func (r InvariantReport) Summary() string {
	if r.OK() {
		var parts []string
		for _, inv := range Invariants {
			parts = append(parts, fmt.Sprintf("%s: %d", inv, r.Checked[inv]))
		}
		s := fmt.Sprintf("all %d hold (%s)", len(Invariants), strings.Join(parts, ", "))
		if r.Superseded > 0 {
			s += fmt.Sprintf("; %d superseded dumps left to migrate gc", r.Superseded)
		}
		if r.IncompleteUploads > 0 {
			s += fmt.Sprintf("; %d incomplete multipart uploads left to migrate gc", r.IncompleteUploads)
		}
		return s
	}
	var out []string
	for _, v := range r.Violations {
		out = append(out, v.String())
	}
	return fmt.Sprintf("%d violations: %s", len(r.Violations), strings.Join(out, "; "))
}

// Source-side expectations by status.
var (
	// sourceWritable: the row says nothing is (or stays) blocked.
	sourceWritable = append([]statemachine.Status{statemachine.Waiting, statemachine.ToDump, statemachine.DumpFailed,
		statemachine.RolledBack, statemachine.Cancelled}, onlineBefore...)
	// sourceBlocked: the dump is taken; the source must not take writes
	// that the destination would never see.
	sourceBlocked = []statemachine.Status{statemachine.ToImport, statemachine.Importing, statemachine.ImportFailed,
		statemachine.DNSToUpdate, statemachine.UpdatingDNS, statemachine.DNSFailed,
		statemachine.ToCloseSource, statemachine.ClosingSource, statemachine.CloseFailed, statemachine.Done}
	// destinationHas: a verified import is there.
	destinationHas = []statemachine.Status{statemachine.DNSToUpdate, statemachine.UpdatingDNS, statemachine.DNSFailed,
		statemachine.ToCloseSource, statemachine.ClosingSource, statemachine.CloseFailed, statemachine.Done}
	// destinationMay: an import may be under way or being undone (the
	// dump step imports at the destination as it dumps).
	destinationMay = append([]statemachine.Status{statemachine.Dumping, statemachine.Importing, statemachine.ToRollBack, statemachine.RollingBack,
		statemachine.RollbackFailed, statemachine.CuttingOver}, onlineBefore...)
	// dnsAtSource: DNS has not been touched yet (or was put back).
	dnsAtSource = []statemachine.Status{statemachine.Waiting, statemachine.ToDump, statemachine.Dumping,
		statemachine.DumpFailed, statemachine.ToImport, statemachine.Importing, statemachine.ImportFailed,
		statemachine.DNSToUpdate, statemachine.RolledBack, statemachine.Cancelled, statemachine.CuttingOver,
		statemachine.ToSync, statemachine.Syncing, statemachine.SyncFailed, statemachine.ToCutOver, statemachine.CutoverFailed}
	// dnsAtDestination: DNS moved.
	dnsAtDestination = []statemachine.Status{statemachine.ToCloseSource, statemachine.ClosingSource,
		statemachine.CloseFailed, statemachine.Done}
)

// CheckInvariants checks every invariant over the whole fleet: the state
// table, every server, the DNS server and the object store. Run it once the
// fleet settled (Settled): rows still being worked on are checked only for
// what holds at any time. An error means a check could not run at all.
func (d *Demo) CheckInvariants(ctx context.Context) (InvariantReport, error) {
	r := InvariantReport{Checked: map[string]int{}, Statuses: map[statemachine.Status]int{}}
	rows, err := d.Store.List(ctx, statemachine.Filter{})
	if err != nil {
		return r, fmt.Errorf("invariants: list the rows: %w", err)
	}
	fail := func(inv, format string, args ...any) {
		r.Violations = append(r.Violations, Violation{Invariant: inv, What: fmt.Sprintf(format, args...)})
	}
	planned := map[dbKey]*Database{}
	for _, db := range d.DBs {
		planned[dbKey{db.Engine, db.Source, db.Name}] = db
	}
	ghosts := map[dbKey]*Database{}
	d.mu.Lock()
	for _, g := range d.ghosts {
		ghosts[dbKey{g.Engine, g.Source, g.Name}] = g
	}
	d.mu.Unlock()
	d.checkRows(ctx, rows, planned, ghosts, &r, fail)
	for _, m := range rows {
		if db := planned[keyOf(m)]; db != nil {
			d.checkDatabase(ctx, db, m, &r, fail)
		} else if g := ghosts[keyOf(m)]; g != nil {
			d.checkGhost(ctx, g, m, &r, fail)
		}
	}
	if err := d.checkDestinations(ctx, rows, &r, fail); err != nil {
		return r, err
	}
	if err := d.checkStorage(ctx, rows, &r, fail); err != nil {
		return r, err
	}
	if err := d.checkStreams(ctx, rows, &r, fail); err != nil {
		return r, err
	}
	return r, nil
}

// checkStreams lists the slots, publications and subscriptions of ours at
// every PostgreSQL server: each must belong to a row that streams.
func (d *Demo) checkStreams(ctx context.Context, rows []statemachine.Migration, r *InvariantReport, fail func(string, string, ...any)) error {
	byID := map[int64]statemachine.Migration{}
	for _, m := range rows {
		byID[m.ID] = m
	}
	for _, h := range d.Fleet.Hosts {
		names, err := d.streamObjects(ctx, h)
		if err != nil {
			fail(InvStreams, "cannot list the streams at %s: %v", h.ID, err)
			continue
		}
		for what, name := range names {
			r.Checked[InvStreams]++
			id, ok := engine.StreamRow(name)
			m, found := byID[id]
			switch {
			case !ok || !found || engine.StreamName(m.ID, m.DatabaseName) != name:
				fail(InvStreams, "%s at %s belongs to no row", what, h.ID)
			case !m.Status.Streams():
				fail(InvStreams, "%s at %s is left behind: row %s is %s", what, h.ID, m.String(), m.Status)
			}
		}
	}
	return nil
}

// streamObjects lists what of a stream is at a host's server, described,
// with the stream's name: PostgreSQL's slots, subscriptions and
// publications; MariaDB's stream records.
func (d *Demo) streamObjects(ctx context.Context, h *Host) (map[string]string, error) {
	names := map[string]string{}
	if h.my != nil {
		srv, err := myengine.Open(ctx, engine.Server{Host: h.ID, Address: h.Addr(), User: "root"}, myengine.Options{})
		if err != nil {
			return nil, err
		}
		defer func() { _ = srv.Close() }()
		recs, err := srv.StreamRecords(ctx, engine.StreamPrefix)
		for _, rec := range recs {
			names["stream record "+rec.Name] = rec.Name
		}
		return names, err
	}
	srv, err := postgres.Open(ctx, engine.Server{Host: h.ID, Address: h.Addr(), User: "postgres", Password: h.pg.Password}, postgres.Options{})
	if err != nil {
		return nil, err
	}
	defer func() { _ = srv.Close() }()
	slots, err := srv.Slots(ctx, engine.StreamPrefix)
	for _, sl := range slots {
		names["replication slot "+sl.Name] = sl.Name
	}
	subs, serr := srv.Subscriptions(ctx, engine.StreamPrefix)
	for n := range subs {
		names["subscription "+n] = n
	}
	pubs, perr := srv.Publications(ctx, engine.StreamPrefix)
	for n, db := range pubs {
		names[fmt.Sprintf("publication %s in %q", n, db)] = n
	}
	return names, errors.Join(err, serr, perr)
}

// dbKey is what makes a row unique: engine, source, database name.
type dbKey struct{ engine, source, name string }

func keyOf(m statemachine.Migration) dbKey { return dbKey{string(m.Engine), m.Source, m.DatabaseName} }

// saysBlocked reports whether the row says writes are blocked at its
// source now (blocked, and not restored since).
func saysBlocked(m statemachine.Migration) bool {
	return !m.BlockedAt.IsZero() && (m.UnblockedAt.IsZero() || !m.UnblockedAt.After(m.BlockedAt))
}

func (d *Demo) checkRows(ctx context.Context, rows []statemachine.Migration, planned, ghosts map[dbKey]*Database, r *InvariantReport, fail func(string, string, ...any)) {
	seen := map[*Database]int{}
	for _, m := range rows {
		r.Checked[InvRows]++
		r.Statuses[m.Status]++
		db := planned[keyOf(m)]
		if db == nil {
			db = ghosts[keyOf(m)]
		}
		if db == nil {
			fail(InvRows, "row %s was never planned", m.String())
		} else {
			seen[db]++
			if m.Destination != db.Destination || m.DNSName != db.DNSName {
				fail(InvRows, "row %s: destination %s, DNS name %q; the plan said %s, %q", m.String(), m.Destination, m.DNSName, db.Destination, db.DNSName)
			}
		}
		if !m.Status.Valid() {
			fail(InvRows, "row %s: status %q is not a status", m.String(), m.Status)
			continue
		}
		working := m.Owner != "" || !m.LeaseUntil.IsZero()
		if m.Status.Working() != working {
			fail(InvRows, "row %s: status %s with owner %q, lease until %v", m.String(), m.Status, m.Owner, m.LeaseUntil)
		}
		if slices.Contains(sourceBlocked, m.Status) {
			// an online row takes its dump at the close
			needsDump := m.Mode != statemachine.ModeOnline || m.Status == statemachine.Done
			if needsDump && (m.DumpURL == "" || m.DumpSHA256 == "" || m.DumpBytes <= 0 || m.ConsistencyPoint.IsZero()) {
				fail(InvRows, "row %s: %s without its dump (url %q, %d bytes)", m.String(), m.Status, m.DumpURL, m.DumpBytes)
			}
			if !saysBlocked(m) {
				fail(InvRows, "row %s: %s but the row does not say writes are blocked (blocked %v, unblocked %v)", m.String(), m.Status, m.BlockedAt, m.UnblockedAt)
			}
		}
		if m.Status == statemachine.Done && m.DNSName != "" && m.SwitchedAt.IsZero() {
			fail(InvRows, "row %s: Done without switched_at", m.String())
		}
		events, err := d.Store.Events(ctx, m.ID)
		switch {
		case err != nil:
			fail(InvRows, "row %s: read its events: %v", m.String(), err)
		case len(events) == 0 && m.Status != statemachine.Waiting:
			fail(InvRows, "row %s: %s with no event", m.String(), m.Status)
		case len(events) > 0 && events[len(events)-1].To != m.Status:
			fail(InvRows, "row %s: %s, but its last event leads to %s", m.String(), m.Status, events[len(events)-1].To)
		}
	}
	for _, db := range d.DBs {
		if n := seen[db]; n != 1 {
			fail(InvRows, "%s database %q on %s has %d rows", db.Engine, db.Name, db.Source, n)
		}
	}
	for _, g := range ghosts {
		if n := seen[g]; n != 1 {
			fail(InvRows, "%s database %q on %s (missing at the source) has %d rows", g.Engine, g.Name, g.Source, n)
		}
	}
}

// refused reports whether err is the server refusing (a login or a
// privilege: what a block or a close does), as opposed to not answering.
func refused(err error) bool {
	var my *mysql.MySQLError
	var pg *pgconn.PgError
	return errors.As(err, &my) || errors.As(err, &pg)
}

// checkDatabase checks one database's source (writes, DNS) and content.
func (d *Demo) checkDatabase(ctx context.Context, db *Database, m statemachine.Migration, r *InvariantReport, fail func(string, string, ...any)) {
	f := d.Fleet
	src, dst := f.Host(db.Source), f.Host(db.Destination)
	ip, err := Resolve(ctx, f.BIND.Addr, db.DNSName)
	switch {
	case err != nil:
		fail(InvSources, "row %s: %v", m.String(), err)
	case slices.Contains(dnsAtSource, m.Status) && ip != src.IP:
		fail(InvSources, "row %s is %s but %s points to %s, not the source %s", m.String(), m.Status, db.DNSName, ip, src.IP)
	case slices.Contains(dnsAtDestination, m.Status) && ip != dst.IP:
		fail(InvSources, "row %s is %s but %s points to %s, not the destination %s", m.String(), m.Status, db.DNSName, ip, dst.IP)
	}

	r.Checked[InvSources]++
	werr := ProbeWrite(ctx, db.Engine, src.Addr(), db.User, db.Password, db.Name)
	switch {
	case werr != nil && !refused(werr):
		fail(InvSources, "row %s: cannot reach the source to check it: %v", m.String(), werr)
	case werr == nil && slices.Contains(sourceBlocked, m.Status):
		fail(InvSources, "row %s is %s but the source takes writes (they would never reach the destination)", m.String(), m.Status)
	case werr != nil && slices.Contains(sourceWritable, m.Status):
		fail(InvSources, "row %s is %s but the source refuses its users' writes, unexplained: %v", m.String(), m.Status, werr)
	case werr != nil && !slices.Contains(sourceBlocked, m.Status) && !saysBlocked(m):
		fail(InvSources, "row %s is %s and does not say writes are blocked, but the source refuses them: %v", m.String(), m.Status, werr)
	}

	r.Checked[InvDone]++
	if m.Status == statemachine.Done {
		if _, err := Check(ctx, f, db, db.Destination, &db.Before); err != nil {
			fail(InvDone, "row %s: %v", m.String(), err)
		}
		return
	}
	// Not moved: the source still holds what it held (read by the
	// administrator: a PostgreSQL block also takes CONNECT from the users).
	got, err := readAdmin(ctx, src, db.Name)
	switch {
	case err != nil:
		fail(InvDone, "row %s: read the source: %v", m.String(), err)
	case got != db.Before:
		fail(InvDone, "row %s: the source now holds %s; before the migration %s", m.String(), got, db.Before)
	}
}

// checkDestinations lists the databases of every destination server.
func (d *Demo) checkDestinations(ctx context.Context, rows []statemachine.Migration, r *InvariantReport, fail func(string, string, ...any)) error {
	type key struct{ engine, host, name string }
	rowAt := map[key]statemachine.Migration{}
	for _, m := range rows {
		rowAt[key{string(m.Engine), m.Destination, m.DatabaseName}] = m
	}
	present := map[key]bool{}
	for _, h := range d.Fleet.Hosts {
		if h.Source {
			continue
		}
		names, err := listDatabases(ctx, h)
		if err != nil {
			return fmt.Errorf("invariants: list the databases of %s: %w", h.ID, err)
		}
		for _, name := range d.foreign[h.ID] {
			r.Checked[InvDestinations]++
			if !slices.Contains(names, name) {
				fail(InvDestinations, "%s lost database %q, which was there before the migration and no row owns", h.ID, name)
			}
		}
		for _, name := range names {
			r.Checked[InvDestinations]++
			k := key{h.Engine, h.ID, name}
			present[k] = true
			m, ok := rowAt[k]
			switch {
			case slices.Contains(d.foreign[h.ID], name):
				// not ours: it was there before
			case !ok:
				fail(InvDestinations, "%s has database %q, and no row puts it there", h.ID, name)
			case !slices.Contains(destinationHas, m.Status) && !slices.Contains(destinationMay, m.Status):
				fail(InvDestinations, "%s has database %q, but its row %s is %s (a failed or undone import must leave nothing)", h.ID, name, m.String(), m.Status)
			}
		}
	}
	for k, m := range rowAt {
		if slices.Contains(destinationHas, m.Status) && !present[k] {
			fail(InvDestinations, "row %s is %s but %s has no database %q", m.String(), m.Status, m.Destination, m.DatabaseName)
		}
	}
	return nil
}

// listDatabases lists the user databases of a server.
func listDatabases(ctx context.Context, h *Host) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var names []string
	switch h.Engine {
	case MySQL:
		db, err := sql.Open("mysql", h.RootDSN(""))
		if err != nil {
			return nil, err
		}
		defer db.Close()
		// The streams' position records are ours (checkStreams checks them).
		rs, err := db.QueryContext(ctx, "SELECT schema_name FROM information_schema.schemata WHERE schema_name NOT IN ('mysql','information_schema','performance_schema','sys', ?)", myengine.StreamsDatabase)
		if err != nil {
			return nil, err
		}
		defer rs.Close()
		for rs.Next() {
			var n string
			if err := rs.Scan(&n); err != nil {
				return nil, err
			}
			names = append(names, n)
		}
		return names, rs.Err()
	case Postgres:
		c, err := pgx.Connect(ctx, h.RootDSN("postgres"))
		if err != nil {
			return nil, err
		}
		defer c.Close(context.WithoutCancel(ctx))
		rs, err := c.Query(ctx, "SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres'")
		if err != nil {
			return nil, err
		}
		return pgx.CollectRows(rs, pgx.RowTo[string])
	}
	return nil, fmt.Errorf("unknown engine %q", h.Engine)
}

// checkStorage lists every object of the bucket.
func (d *Demo) checkStorage(ctx context.Context, rows []statemachine.Migration, r *InvariantReport, fail func(string, string, ...any)) error {
	f := d.Fleet
	sizes := map[string]int64{}
	p := s3.NewListObjectsV2Paginator(f.S3.Client(), &s3.ListObjectsV2Input{Bucket: aws.String(f.S3.Bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("invariants: list the bucket %s: %w", f.S3.Bucket, err)
		}
		for _, o := range page.Contents {
			sizes[aws.ToString(o.Key)] = aws.ToInt64(o.Size)
		}
	}
	current := map[string]bool{} // prefixes rows refer to
	rowOf := map[dbKey]statemachine.Migration{}
	for _, m := range rows {
		rowOf[keyOf(m)] = m
		if m.DumpURL == "" {
			continue
		}
		u, err := url.Parse(m.DumpURL)
		if err != nil || u.Scheme != "s3" || u.Host != f.S3.Bucket {
			fail(InvStorage, "row %s: dump_url %q is not an object of bucket %s", m.String(), m.DumpURL, f.S3.Bucket)
			continue
		}
		key := strings.TrimPrefix(u.Path, "/")
		ref, _, err := storage.ParseDumpKey(key)
		if err != nil {
			fail(InvStorage, "row %s: %v", m.String(), err)
			continue
		}
		current[ref.Prefix()] = true
		size, ok := sizes[key]
		// A row that still needs its dump must find it; one that failed or
		// ended may have lost it (a deleted object, gc, a lifecycle rule).
		needs := m.Status == statemachine.ToImport || m.Status == statemachine.Importing
		switch {
		case !ok && needs:
			fail(InvStorage, "row %s (%s) refers to %s, which is not in the bucket", m.String(), m.Status, key)
		case ok && size != m.DumpBytes:
			fail(InvStorage, "row %s: %s is %d bytes, the row says %d", m.String(), key, size, m.DumpBytes)
		}
		if _, ok := sizes[ref.ManifestKey()]; !ok && needs {
			fail(InvStorage, "row %s: its dump's manifest %s is not in the bucket", m.String(), ref.ManifestKey())
		}
	}
	superseded := map[string]bool{}
	for key := range sizes {
		r.Checked[InvStorage]++
		ref, _, err := storage.ParseDumpKey(key)
		if err != nil {
			fail(InvStorage, "object %s is not a dump's: %v", key, err)
			continue
		}
		if _, ok := rowOf[dbKey{ref.Engine, ref.Source, ref.Database}]; !ok {
			fail(InvStorage, "object %s belongs to no row", key)
			continue
		}
		if !current[ref.Prefix()] {
			superseded[ref.Prefix()] = true
		}
	}
	r.Superseded = len(superseded)
	ups, err := f.S3.Client().ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(f.S3.Bucket)})
	if err != nil {
		return fmt.Errorf("invariants: list the multipart uploads of %s: %w", f.S3.Bucket, err)
	}
	r.IncompleteUploads = len(ups.Uploads)
	return nil
}

// readAdmin checksums a database as the server's administrator.
func readAdmin(ctx context.Context, h *Host, database string) (Checksum, error) {
	if h.Engine == MySQL {
		return readMySQL(ctx, h.RootDSN(database))
	}
	return readPostgres(ctx, h.RootDSN(database))
}

// WroteAtSource tells the invariants that a test wrote to db at its source
// on purpose (a leaked write the close must find): what the source holds
// now is what a row that does not reach Done must have left there.
func (d *Demo) WroteAtSource(ctx context.Context, db *Database) error {
	sum, err := readAdmin(ctx, d.Fleet.Host(db.Source), db.Name)
	if err != nil {
		return fmt.Errorf("checksum %s database %q at %s: %w", db.Engine, db.Name, db.Source, err)
	}
	db.Before = sum
	return nil
}

// PlanGhost adds to the plan StartMigration loads a database that does not
// exist at its source (a typo in a plan, a database dropped since it was
// planned). Its row must fail at the dump, naming the database, without
// blocking or creating anything anywhere; CheckInvariants checks that.
func (d *Demo) PlanGhost(engine, source, destination, name string) error {
	if h := d.Fleet.Host(source); h == nil || h.Engine != engine || !h.Source {
		return fmt.Errorf("no %s source %q", engine, source)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ghosts = append(d.ghosts, &Database{Engine: engine, Name: name, Source: source, Destination: destination})
	return nil
}

// ghostStatuses are where a row of a database missing at its source may
// be: queued, or stopped at the dump.
var ghostStatuses = []statemachine.Status{statemachine.Waiting, statemachine.ToDump, statemachine.Dumping,
	statemachine.DumpFailed, statemachine.Cancelled}

// checkGhost checks a row of a database that does not exist at its source:
// it never got past the dump, says why, blocked nothing, and the database
// appeared at neither side (the destination is checkDestinations' part).
func (d *Demo) checkGhost(ctx context.Context, g *Database, m statemachine.Migration, r *InvariantReport, fail func(string, string, ...any)) {
	r.Checked[InvSources]++
	switch {
	case !slices.Contains(ghostStatuses, m.Status):
		fail(InvSources, "row %s of a database missing at its source is %s", m.String(), m.Status)
	case m.Status == statemachine.DumpFailed && !strings.Contains(m.LastError, "does not exist"):
		fail(InvSources, "row %s of a database missing at its source failed without saying so: %q", m.String(), m.LastError)
	case !m.BlockedAt.IsZero():
		fail(InvSources, "row %s of a database missing at its source recorded a write block", m.String())
	}
	names, err := listDatabases(ctx, d.Fleet.Host(g.Source))
	switch {
	case err != nil:
		fail(InvSources, "row %s: list the source's databases: %v", m.String(), err)
	case slices.Contains(names, g.Name):
		fail(InvSources, "row %s: database %q now exists at its source", m.String(), g.Name)
	}
}

// PlantForeign creates database name at host with a table and a row, as a
// database that was there before the migration and belongs to nobody in
// the plan: a row migrating a database of that name must refuse to touch
// it, and nothing may drop it (CheckInvariants checks it is still there).
func (d *Demo) PlantForeign(ctx context.Context, hostID, name string) error {
	h := d.Fleet.Host(hostID)
	if h == nil {
		return fmt.Errorf("no host %q", hostID)
	}
	switch h.Engine {
	case MySQL:
		db, err := sql.Open("mysql", h.RootDSN(""))
		if err != nil {
			return err
		}
		defer db.Close()
		q := ident.QuoteMySQL(name)
		for _, stmt := range []string{"CREATE DATABASE " + q, "CREATE TABLE " + q + ".theirs (id INT PRIMARY KEY)", "INSERT INTO " + q + ".theirs VALUES (1)"} {
			if _, err := db.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("plant %q at %s: %w", name, hostID, err)
			}
		}
	case Postgres:
		if err := execPG(ctx, h.RootDSN("postgres"), "CREATE DATABASE "+ident.QuotePostgres(name)); err != nil {
			return fmt.Errorf("plant %q at %s: %w", name, hostID, err)
		}
		if err := execPG(ctx, h.RootDSN(name), "CREATE TABLE theirs (id int PRIMARY KEY)", "INSERT INTO theirs VALUES (1)"); err != nil {
			return fmt.Errorf("plant %q at %s: %w", name, hostID, err)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.foreign == nil {
		d.foreign = map[string][]string{}
	}
	d.foreign[hostID] = append(d.foreign[hostID], name)
	return nil
}
