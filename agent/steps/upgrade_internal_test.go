package steps

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"testing"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/mysql"
	"github.com/fleetmigrate/fleetmigrate/engine/postgres"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// Records that the agents of the version before the engine contract
// (f313bb7) wrote, as they wrote them (testdata/records-f313bb7.json was
// captured by running that version's steps): an agent of this version
// reads each, acts on it, and writes it back byte for byte the same, so a
// fleet upgraded in the middle of a night carries on the rows the old
// agents left mid-step (and an old agent still reads what a new one
// wrote).
func TestRecordsOfThePreviousVersion(t *testing.T) {
	body, err := os.ReadFile("testdata/records-f313bb7.json")
	if err != nil {
		t.Fatal(err)
	}
	var old map[string]json.RawMessage
	if err := json.Unmarshal(body, &old); err != nil {
		t.Fatal(err)
	}
	compact := func(b []byte) string {
		var out bytes.Buffer
		if err := json.Compact(&out, b); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	for _, c := range []struct {
		engine   string
		driver   engine.Driver
		block    []string // in force, then not
		imported string
		dropped  string
		describe string
	}{
		{"mysql", mysql.Driver{}, []string{"mysql block in force", "mysql block restored"}, "mysql import", "mysql import dropped", "1 accounts lose write privileges, 1 events disabled"},
		{"postgres", postgres.Driver{}, []string{"postgres block in force", "postgres closed"}, "postgres import", "postgres import dropped", `PUBLIC and 1 roles lose CONNECT, owner "app" replaced by "fleet admin"`},
	} {
		t.Run(c.engine, func(t *testing.T) {
			f := newFlow(t, "source", statemachine.RoleRollback)
			f.host.d = c.driver
			ctx := context.Background()
			for i, name := range c.block {
				f.store.records[recordBlock] = old[name]
				rec := f.blockRecord(t)
				if rec.Blocked != (i == 0) || rec.Access == nil || rec.Access.Describe() != c.describe {
					t.Fatalf("%s read as blocked %t, %v; want blocked %t, %q", name, rec.Blocked, rec.Access, i == 0, c.describe)
				}
				if err := f.job.PutRecord(ctx, recordBlock, rec); err != nil {
					t.Fatal(err)
				}
				if got, want := compact(f.store.records[recordBlock]), compact(old[name]); got != want {
					t.Errorf("%s written back as\n%s\nwant\n%s", name, got, want)
				}
			}
			f.store.records[recordImport] = old[c.imported]
			rec, err := f.host.importRecord(ctx, f.job)
			if err != nil || rec == nil {
				t.Fatalf("%s: %v, %v", c.imported, rec, err)
			}
			if err := f.job.PutRecord(ctx, recordImport, rec); err != nil {
				t.Fatal(err)
			}
			if got, want := compact(f.store.records[recordImport]), compact(old[c.imported]); got != want {
				t.Errorf("%s written back as\n%s\nwant\n%s", c.imported, got, want)
			}
			// Dropping it clears the record as the old version did.
			if err := f.host.dropImport(ctx, f.job, &fakeConn{d: f.driver, host: "destination"}, "a test"); err != nil {
				t.Fatal(err)
			}
			if got, want := compact(f.store.records[recordImport]), compact(old[c.dropped]); got != want {
				t.Errorf("the cleared import record is\n%s\nwant, as the old version wrote it,\n%s", got, want)
			}
		})
	}
}
