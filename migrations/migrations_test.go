package migrations

import (
	"io/fs"
	"slices"
	"testing"

	"github.com/pressly/goose/v3"
)

// TestDialectsCarryTheSameVersions: a schema change made for one dialect
// only would leave the two stores apart.
func TestDialectsCarryTheSameVersions(t *testing.T) {
	versions := map[Dialect][]int64{}
	for _, d := range []Dialect{Postgres, MySQL} {
		sub, err := dialectFS(d)
		if err != nil {
			t.Fatal(err)
		}
		names, err := fs.Glob(sub, "*.sql")
		if err != nil || len(names) == 0 {
			t.Fatalf("%s: no migrations (%v)", d, err)
		}
		for _, n := range names {
			v, err := goose.NumericComponent(n)
			if err != nil {
				t.Fatalf("%s/%s: %v", d, n, err)
			}
			versions[d] = append(versions[d], v)
		}
		latest, err := Latest(d)
		if err != nil || latest != slices.Max(versions[d]) {
			t.Errorf("%s: Latest %d, %v", d, latest, err)
		}
	}
	if !slices.Equal(versions[Postgres], versions[MySQL]) {
		t.Errorf("postgres has versions %v, mysql %v", versions[Postgres], versions[MySQL])
	}
	if _, err := Latest("oracle"); err == nil {
		t.Error("unknown dialect accepted")
	}
}
