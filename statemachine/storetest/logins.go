package storetest

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// Per-agent logins (issue 33): with its own login, an agent may move only
// its host's rows, by its side's steps, through the columns those steps
// move, and write only its own registry entry — refused by the database,
// not by the store's code: most refusals below are raw SQL on the agent's
// own connection.

func testAgentPairsMatchSteps(t *testing.T, h Harness) {
	rows, err := h.DB.QueryContext(ctx(t), "SELECT side, from_status, to_status FROM agent_transition")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []statemachine.AgentPair
	for rows.Next() {
		var p statemachine.AgentPair
		if err := rows.Scan(&p.Side, &p.From, &p.To); err != nil {
			t.Fatal(err)
		}
		got = append(got, p)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got, func(a, b statemachine.AgentPair) int {
		return strings.Compare(string(a.Side)+"\x00"+string(a.From)+"\x00"+string(a.To), string(b.Side)+"\x00"+string(b.From)+"\x00"+string(b.To))
	})
	if want := statemachine.AgentPairs(); !slices.Equal(got, want) {
		t.Errorf("agent_transition differs from statemachine.AgentPairs(): add a schema migration\n table: %v\n  code: %v", got, want)
	}
	// Every agent pair is a transition of the table (or a write that keeps
	// the status): an agent login can never do what nobody may.
	all := statemachine.Pairs()
	for _, p := range got {
		if p.From != p.To && !slices.Contains(all, statemachine.StatusPair{From: p.From, To: p.To}) {
			t.Errorf("agent pair %v is not in the transition table", p)
		}
	}
}

// wantRefused fails t unless err is the database's refusal.
func wantRefused(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: the database allowed it", what)
		return
	}
	if msg := err.Error(); !strings.Contains(msg, "refused") && !strings.Contains(msg, "denied") {
		t.Errorf("%s: refused, but not by the database's rules: %v", what, err)
	}
}

// byName plans rows and returns them by database name.
func planByName(t *testing.T, h Harness, rows ...statemachine.Planned) map[string]statemachine.Migration {
	t.Helper()
	out := map[string]statemachine.Migration{}
	for _, m := range mustPlan(t, h.Store, rows) {
		out[m.DatabaseName] = m
	}
	return out
}

func row(name, source, dest, dnsName string, mode statemachine.Mode) statemachine.Planned {
	return statemachine.Planned{Engine: statemachine.EngineMySQL, DatabaseName: name, Source: source, Destination: dest, DNSName: dnsName, Mode: mode}
}

// claimAs claims one row for role on host through s and fails t otherwise.
func claimAs(t *testing.T, s statemachine.Store, role statemachine.Role, host string, lease time.Duration) statemachine.Migration {
	t.Helper()
	ms, err := s.Claim(ctx(t), statemachine.ClaimRequest{Role: role, Host: host, Owner: host + "/" + string(role), Limit: 1, Lease: lease})
	if err != nil || len(ms) != 1 {
		t.Fatalf("%s claims a %s row: %d rows, %v", host, role, len(ms), err)
	}
	return ms[0]
}

func advance(t *testing.T, s statemachine.Store, m *statemachine.Migration, f statemachine.Fields) {
	t.Helper()
	if err := s.Advance(ctx(t), m, f, "done"); err != nil {
		t.Fatalf("advance row %d from %s: %v", m.ID, m.Status, err)
	}
}

// testAgentLoginsWalkTheirRows: each host's own login moves its rows
// through every step of its side — sync and cutover, dump, import, DNS,
// close, its own crash recovery, notes, records, retries, its registry
// entry — so the restrictions cost the agents nothing they need.
func testAgentLoginsWalkTheirRows(t *testing.T, h Harness) {
	rows := planByName(t, h,
		row("dumped", "a", "b", "dumped.db.test", statemachine.ModeDump),
		row("synced", "a", "b", "synced.db.test", statemachine.ModeAuto),
		row("nodns", "b", "a", "", statemachine.ModeDump))
	if n, err := h.Store.Promote(ctx(t), 10, "scheduler"); err != nil || n != 3 {
		t.Fatalf("promote: %d, %v", n, err)
	}
	a, _ := h.AsAgent(t, "a", false)
	b, bdb := h.AsAgent(t, "b", false)
	d, _ := h.AsAgent(t, "dns-1", true)
	for _, reg := range []struct {
		s    statemachine.Store
		host string
	}{{a, "a"}, {b, "b"}, {d, "dns-1"}} {
		ag := statemachine.Agent{Host: reg.host, Roles: []statemachine.Role{statemachine.RoleDump}, Instance: "i-" + reg.host, DNSTarget: "10.0.0.1",
			Endpoints: map[statemachine.Engine]string{statemachine.EngineMySQL: "10.0.0.1:3306"}}
		if err := reg.s.RegisterAgent(ctx(t), ag, time.Minute, ""); err != nil {
			t.Fatalf("%s registers itself: %v", reg.host, err)
		}
		ag.Jobs = 2
		if err := reg.s.Heartbeat(ctx(t), ag); err != nil {
			t.Fatalf("%s's heartbeat: %v", reg.host, err)
		}
	}
	// b syncs the auto row and chooses the online path; a cuts it over.
	m := claimAs(t, b, statemachine.RoleSync, "b", time.Minute)
	if err := b.Progress(ctx(t), &m, "syncing: lag 1 MB"); err != nil {
		t.Fatal(err)
	}
	if err := b.PutRecord(ctx(t), &m, "stream", []byte(`{"slot":"x"}`)); err != nil {
		t.Fatalf("b writes its step record: %v", err)
	}
	// A record stays with its row, even between two rows of b's.
	_, err := bdb.ExecContext(ctx(t), h.Q("UPDATE migration_record SET migration_id = ? WHERE migration_id = ?"), rows["nodns"].ID, m.ID)
	wantRefused(t, "b moves its record to another of its rows", err)
	if _, err := b.Renew(ctx(t), &m, time.Minute); err != nil {
		t.Fatalf("b renews its lease: %v", err)
	}
	advance(t, b, &m, statemachine.Fields{Mode: statemachine.ModeOnline})
	// The cutover is the destination's: b asks a (the source) to block.
	m = claimAs(t, b, statemachine.RoleCutover, "b", time.Minute)
	if err := b.Record(ctx(t), &m, statemachine.Fields{Marks: []statemachine.Mark{statemachine.MarkBlocked}}, ""); err != nil {
		t.Fatalf("b records the block: %v", err)
	}
	ask, err := asks(t, b).Ask(ctx(t), &m, statemachine.SideSource, "block", "cutover-1")
	if err != nil {
		t.Fatalf("b asks a to block: %v", err)
	}
	if err := asks(t, a).AnswerAsk(ctx(t), ask, []byte(`{"applied":true}`), ""); err != nil {
		t.Fatalf("a answers: %v", err)
	}
	advance(t, b, &m, statemachine.Fields{})
	// b dumps and imports the dump row, with a retry on the way.
	m = claimAs(t, b, statemachine.RoleDump, "b", time.Minute)
	advance(t, b, &m, dumpFields(m.ID))
	m = claimAs(t, b, statemachine.RoleImport, "b", time.Minute)
	if err := b.NoteRetry(ctx(t), &m, "connection reset"); err != nil {
		t.Fatalf("b notes a retry: %v", err)
	}
	advance(t, b, &m, statemachine.Fields{})
	// a is the destination of the row without a DNS name.
	m = claimAs(t, a, statemachine.RoleDump, "a", time.Minute)
	advance(t, a, &m, dumpFields(m.ID))
	m = claimAs(t, a, statemachine.RoleImport, "a", time.Minute)
	if err := a.Fail(ctx(t), &m, statemachine.Fields{}, "disk full"); err != nil {
		t.Fatalf("a fails its import: %v", err)
	}
	if _, err := h.Store.Operate(ctx(t), m.ID, statemachine.ActionRetry, "op", ""); err != nil {
		t.Fatalf("the operator retries: %v", err)
	}
	m = claimAs(t, a, statemachine.RoleImport, "a", time.Minute)
	advance(t, a, &m, statemachine.Fields{})
	// The DNS host switches both names.
	for range 2 {
		m = claimAs(t, d, statemachine.RoleDNS, "", time.Minute)
		advance(t, d, &m, statemachine.Fields{Marks: []statemachine.Mark{statemachine.MarkSwitched}})
	}
	// a closes its two rows; one claim is taken back by a's own crash
	// recovery first.
	m = claimAs(t, a, statemachine.RoleClose, "a", time.Minute)
	if got, err := a.RescueHost(ctx(t), statemachine.RoleClose, "a", []string{m.Owner}, 5); err != nil || len(got) != 1 {
		t.Fatalf("a takes back its crashed predecessor's claim: %v, %v", got, err)
	}
	for range 2 {
		m = claimAs(t, a, statemachine.RoleClose, "a", time.Minute)
		advance(t, a, &m, dumpFields(m.ID))
	}
	m = claimAs(t, b, statemachine.RoleClose, "b", time.Minute)
	advance(t, b, &m, statemachine.Fields{})
	for name, r := range rows {
		wantStatus(t, h, r.ID, statemachine.Done)
		if ev, err := h.Store.Events(ctx(t), r.ID); err != nil || len(ev) < 6 {
			t.Errorf("%s: %d events, %v", name, len(ev), err)
		}
	}
	for _, s := range []statemachine.Store{a, b} {
		host := map[statemachine.Store]string{a: "a", b: "b"}[s]
		if err := s.Deregister(ctx(t), host, "i-"+host); err != nil {
			t.Errorf("%s deregisters: %v", host, err)
		}
	}
}

// testAgentLoginRefusedOtherRows: host a's login cannot touch a row whose
// source and destination are other hosts, nor take a step of the other
// side on its own rows; the rows are as they were.
func testAgentLoginRefusedOtherRows(t *testing.T, h Harness) {
	rows := planByName(t, h, row("theirs", "b", "c", "theirs.db.test", ""), row("mine", "a", "b", "mine.db.test", ""))
	mustPromote(t, h.Store, 2)
	theirs, mine := rows["theirs"], rows["mine"]
	a, adb := h.AsAgent(t, "a", false)
	_, err := a.Claim(ctx(t), statemachine.ClaimRequest{Role: statemachine.RoleDump, Host: "c", Owner: "a/evil", Limit: 5, Lease: time.Minute})
	wantRefused(t, "a claims c's dump", err)
	if err != nil && !errors.Is(err, statemachine.ErrNotPermitted) {
		t.Errorf("a claims c's dump: want ErrNotPermitted, got %v", err)
	}
	if err != nil && !strings.Contains(err.Error(), "from b to c") {
		t.Errorf("the refusal does not name the row's hosts: %v", err)
	}
	// a is mine's source: the dump is its destination's step.
	_, err = a.Claim(ctx(t), statemachine.ClaimRequest{Role: statemachine.RoleDump, Host: "b", Owner: "a/evil", Limit: 5, Lease: time.Minute})
	wantRefused(t, "a (the source) claims the destination's dump", err)
	q := h.Q
	_, err = adb.ExecContext(ctx(t), q("UPDATE migration SET last_error = 'hijacked' WHERE id = ?"), theirs.ID)
	wantRefused(t, "a writes last_error on b→c's row", err)
	_, err = adb.ExecContext(ctx(t), q("UPDATE migration SET status = 'Dumping', owner = 'a', lease_until = CURRENT_TIMESTAMP, fence = fence + 1 WHERE id = ?"), theirs.ID)
	wantRefused(t, "a claims b→c's row by hand", err)
	_, err = adb.ExecContext(ctx(t), q("INSERT INTO migration_event (migration_id, from_status, to_status, actor, detail) VALUES (?, 'To dump', 'Dumping', 'b/agent', 'forged')"), theirs.ID)
	wantRefused(t, "a writes an event on b→c's row", err)
	_, err = adb.ExecContext(ctx(t), q("INSERT INTO migration_record (migration_id, kind, body, owner, fence, updated_at) VALUES (?, 'grants', '{}', 'a', 1, CURRENT_TIMESTAMP)"), theirs.ID)
	wantRefused(t, "a writes a step record of b→c's row", err)
	// A temporary table cannot stand in for agent_login (PostgreSQL lets
	// any login create one; MySQL does not give ours the privilege).
	if _, err := adb.ExecContext(ctx(t), "CREATE TEMPORARY TABLE agent_login (login VARCHAR(80), host VARCHAR(255), dns BOOLEAN)"); err == nil {
		if _, err := adb.ExecContext(ctx(t), "INSERT INTO agent_login VALUES ('nobody', 'nowhere', false)"); err != nil {
			t.Fatal(err)
		}
		_, err = adb.ExecContext(ctx(t), q("UPDATE migration SET last_error = 'hijacked' WHERE id = ?"), theirs.ID)
		wantRefused(t, "a writes b→c's row behind a temporary agent_login", err)
	}
	// Nor can the login turn the guards off, on either dialect (each of
	// these fails: not the owner, not a superuser, or not the syntax).
	conn, err := adb.Conn(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, st := range []string{"SET session_replication_role = replica", "ALTER TABLE migration DISABLE TRIGGER ALL",
		"DROP TRIGGER migration_guard_agent ON migration", "DROP TRIGGER migration_guard_agent"} {
		if _, err := conn.ExecContext(ctx(t), st); err == nil {
			t.Errorf("a's login may %s", st)
		}
	}
	_, err = conn.ExecContext(ctx(t), q("UPDATE migration SET last_error = 'hijacked' WHERE id = ?"), theirs.ID)
	wantRefused(t, "a writes b→c's row after trying to turn the guards off", err)
	for _, m := range []statemachine.Migration{theirs, mine} {
		r := wantStatus(t, h, m.ID, statemachine.ToDump)
		if r.Owner.Valid || r.LastErr.Valid || r.Fence != 0 {
			t.Errorf("row %d changed: %+v", m.ID, r)
		}
	}
	var n int
	if err := h.DB.QueryRowContext(ctx(t), "SELECT COUNT(*) FROM migration_record").Scan(&n); err != nil || n != 0 {
		t.Errorf("%d step records, %v", n, err)
	}
	if pairs := eventPairs(t, h, theirs.ID); len(pairs) != 2 { // the plan and the promotion
		t.Errorf("events of b→c's row: %v", pairs)
	}
}

// testAgentLoginRefusedColumnsAndSteps: on its own row, host a's login
// cannot redirect it (source, destination, dns_name, engine,
// database_name), change its mode, make an operator's move or another
// side's step.
func testAgentLoginRefusedColumnsAndSteps(t *testing.T, h Harness) {
	rows := planByName(t, h, row("mine", "b", "a", "mine.db.test", statemachine.ModeDump))
	mustPromote(t, h.Store, 1)
	mine := rows["mine"]
	a, adb := h.AsAgent(t, "a", false)
	d, ddb := h.AsAgent(t, "dns-1", true)
	m := claimAs(t, a, statemachine.RoleDump, "a", time.Minute)
	for _, set := range []string{"destination = 'evil'", "source = 'evil'", "dns_name = 'evil.db.test'", "engine = 'postgres'",
		"database_name = 'other'", "mode = 'online'"} {
		_, err := adb.ExecContext(ctx(t), h.Q("UPDATE migration SET "+set+" WHERE id = ?"), mine.ID)
		wantRefused(t, "a sets "+set+" on its own row", err)
	}
	var src, dst, dnsName, engine, name, mode string
	if err := h.DB.QueryRowContext(ctx(t), h.Q("SELECT source, destination, dns_name, engine, database_name, mode FROM migration WHERE id = ?"), mine.ID).
		Scan(&src, &dst, &dnsName, &engine, &name, &mode); err != nil {
		t.Fatal(err)
	}
	if src != "b" || dst != "a" || dnsName != "mine.db.test" || engine != "mysql" || name != "mine" || mode != "dump" {
		t.Errorf("the row changed: %s → %s, %s, %s, %s, %s", src, dst, dnsName, engine, name, mode)
	}
	advance(t, a, &m, dumpFields(m.ID))
	m = claimAs(t, a, statemachine.RoleImport, "a", time.Minute)
	if err := a.Fail(ctx(t), &m, statemachine.Fields{}, "disk full"); err != nil {
		t.Fatal(err)
	}
	// The operator's moves are not an agent's.
	_, err := a.Operate(ctx(t), mine.ID, statemachine.ActionRetry, "a", "")
	wantRefused(t, "a retries its failed import", err)
	_, err = a.Operate(ctx(t), mine.ID, statemachine.ActionRollback, "a", "")
	wantRefused(t, "a rolls its row back", err)
	wantStatus(t, h, mine.ID, statemachine.ImportFailed)
	if _, err := h.Store.Operate(ctx(t), mine.ID, statemachine.ActionRetry, "op", ""); err != nil {
		t.Fatal(err)
	}
	m = claimAs(t, a, statemachine.RoleImport, "a", time.Minute)
	advance(t, a, &m, statemachine.Fields{})
	// DNS is the DNS host's step, not the destination's.
	_, err = a.Claim(ctx(t), statemachine.ClaimRequest{Role: statemachine.RoleDNS, Owner: "a/dns", Limit: 1, Lease: time.Minute})
	wantRefused(t, "a (no DNS rows) claims the DNS step", err)
	_, err = adb.ExecContext(ctx(t), h.Q("UPDATE migration SET status = 'Updating DNS', owner = 'a', lease_until = CURRENT_TIMESTAMP WHERE id = ?"), mine.ID)
	wantRefused(t, "a moves its row into Updating DNS by hand", err)
	wantStatus(t, h, mine.ID, statemachine.DNSToUpdate)
	m = claimAs(t, d, statemachine.RoleDNS, "", time.Minute)
	_, err = ddb.ExecContext(ctx(t), h.Q("UPDATE migration SET dns_name = 'evil.db.test' WHERE id = ?"), mine.ID)
	wantRefused(t, "the DNS host renames the row it holds", err)
	advance(t, d, &m, statemachine.Fields{Marks: []statemachine.Mark{statemachine.MarkSwitched}})
	// The close is the source's (b): neither the destination nor the DNS
	// host may take it.
	_, err = a.Claim(ctx(t), statemachine.ClaimRequest{Role: statemachine.RoleClose, Host: "b", Owner: "a/close", Limit: 1, Lease: time.Minute})
	wantRefused(t, "a (the destination) claims the source's close", err)
	_, err = ddb.ExecContext(ctx(t), h.Q("UPDATE migration SET status = 'Closing source', owner = 'dns', lease_until = CURRENT_TIMESTAMP WHERE id = ?"), mine.ID)
	wantRefused(t, "the DNS host claims the close by hand", err)
	wantStatus(t, h, mine.ID, statemachine.ToCloseSource)
}

// testAgentLoginRefusedRegistry: host a's login publishes only its own
// address and DNS target.
func testAgentLoginRefusedRegistry(t *testing.T, h Harness) {
	theirs := statemachine.Agent{Host: "b", Roles: []statemachine.Role{statemachine.RoleImport}, Instance: "i-b", DNSTarget: "10.0.0.2"}
	if err := h.Store.RegisterAgent(ctx(t), theirs, time.Minute, ""); err != nil {
		t.Fatal(err)
	}
	a, adb := h.AsAgent(t, "a", false)
	evil := theirs
	evil.Instance, evil.DNSTarget = "i-evil", "10.6.6.6"
	wantRefused(t, "a takes over b's registry entry", a.RegisterAgent(ctx(t), evil, time.Minute, "i-b"))
	wantRefused(t, "a registers host c", a.RegisterAgent(ctx(t), statemachine.Agent{Host: "c", Roles: theirs.Roles, Instance: "i-c", DNSTarget: "10.6.6.6"}, time.Minute, ""))
	for _, st := range []string{"UPDATE agent SET dns_target = '10.6.6.6', address = '10.6.6.6:9100' WHERE host = 'b'",
		"DELETE FROM agent WHERE host = 'b'"} {
		_, err := adb.ExecContext(ctx(t), st)
		wantRefused(t, "a: "+st, err)
	}
	mine := statemachine.Agent{Host: "a", Roles: theirs.Roles, Instance: "i-a", DNSTarget: "10.0.0.1"}
	if err := a.RegisterAgent(ctx(t), mine, time.Minute, ""); err != nil {
		t.Fatalf("a registers itself: %v", err)
	}
	_, err := adb.ExecContext(ctx(t), "UPDATE agent SET host = 'b' WHERE host = 'a'")
	wantRefused(t, "a renames its entry to b's", err)
	got, ok, err := h.Store.AgentFor(ctx(t), "b")
	if err != nil || !ok || got.Instance != "i-b" || got.DNSTarget != "10.0.0.2" || got.Address != "" {
		t.Errorf("b's entry changed: %+v, %v, %v", got, ok, err)
	}
	// The database records which login wrote each entry.
	if mineGot, _, err := h.Store.AgentFor(ctx(t), "a"); err != nil || !strings.HasPrefix(mineGot.Login, "fm_") || got.Login == "" || got.Login == mineGot.Login {
		t.Errorf("logins of the entries: a's %q (%v), b's (by an operator) %q", mineGot.Login, err, got.Login)
	}
	if _, ok, _ := h.Store.AgentFor(ctx(t), "c"); ok {
		t.Error("a registered host c")
	}
}

// testAgentLoginRefusedOperatorTables: plans, deletions, switches, the
// scheduler's lease and the logins themselves are the operators'.
func testAgentLoginRefusedOperatorTables(t *testing.T, h Harness) {
	mustPlan(t, h.Store, planned(1, "a", "b"))
	a, adb := h.AsAgent(t, "a", false)
	_, err := a.Plan(ctx(t), []statemachine.Planned{row("new", "a", "c", "", "")}, "a", false)
	wantRefused(t, "a plans a row", err)
	_, err = a.Promote(ctx(t), 1, "a")
	wantRefused(t, "a promotes a row", err)
	_, err = a.SetStop(ctx(t), "a", "evil")
	wantRefused(t, "a sets the stop switch", err)
	_, err = a.PauseSource(ctx(t), "b", "a", "evil")
	wantRefused(t, "a pauses a source", err)
	_, err = a.AcquireLeader(ctx(t), statemachine.LeaderClaim{Holder: "a", TTL: time.Minute})
	wantRefused(t, "a takes the scheduler lease", err)
	for _, st := range []string{
		"DELETE FROM migration",
		"DELETE FROM migration_event",
		"UPDATE agent_login SET dns = TRUE, host = 'b'",
		"INSERT INTO agent_login (login, host, dns) VALUES ('fm_other', 'b', TRUE)",
		"INSERT INTO agent_transition (side, from_status, to_status) VALUES ('source', 'Waiting', 'To dump')",
		"DELETE FROM migration_transition",
	} {
		_, err := adb.ExecContext(ctx(t), st)
		wantRefused(t, "a: "+st, err)
	}
	if n := countRows(t, h, "WHERE status = 'Waiting'"); n != 1 {
		t.Errorf("%d Waiting rows, want the 1 planned", n)
	}
	if sw, err := h.Store.StopSwitch(ctx(t)); err != nil || sw.Set {
		t.Errorf("stop switch: %+v, %v", sw, err)
	}
	var logins int
	if err := h.DB.QueryRowContext(ctx(t), "SELECT COUNT(*) FROM agent_login WHERE dns = TRUE").Scan(&logins); err != nil || logins != 0 {
		t.Errorf("%d DNS logins, %v", logins, err)
	}
}
