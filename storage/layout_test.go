package storage_test

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/fleetmigrate/fleetmigrate/storage"
	"github.com/fleetmigrate/fleetmigrate/storage/storagetest"
)

func TestNameEncodingRoundTrips(t *testing.T) {
	names := append([]string{"a", "A_b-c.d", "x" + strings.Repeat("y", 199), strings.Repeat("z", 201)}, storagetest.AwkwardNames...)
	for _, name := range names {
		enc := storage.EncodeName(name)
		dec, err := storage.DecodeName(enc)
		if err != nil || dec != name {
			t.Errorf("%q -> %q -> %q, %v", name, enc, dec, err)
		}
		for _, c := range strings.Split(enc, "/") {
			if len(c) > 255 || c == "" || c == "." || c == ".." || !utf8.ValidString(c) {
				t.Errorf("%q encodes to an unsafe component %q", name, c)
			}
		}
		if strings.Contains(name, "/") && !strings.HasPrefix(enc, "=") {
			t.Errorf("%q kept its slash", name)
		}
	}
	// The longest MySQL name in 3-byte characters splits into two components.
	if enc := storage.EncodeName(strings.Repeat("数", 64)); strings.Count(enc, "/") != 1 {
		t.Errorf("192-byte name encodes to %d components: %q", strings.Count(enc, "/")+1, enc)
	}
	for _, bad := range []string{"=!!", "=abc/def", "a/b", ".x"} {
		if _, err := storage.DecodeName(bad); err == nil {
			t.Errorf("decoded %q", bad)
		}
	}
}

func TestDumpKeys(t *testing.T) {
	cp := time.Date(2026, 11, 23, 21, 0, 0, 123456000, time.FixedZone("x", 3600))
	ref := storage.DumpRef{Engine: "postgres", Source: "pg-3.dc1", Database: strings.Repeat("ü", 31), ConsistencyPoint: cp}
	for _, key := range []string{ref.DumpKey("sql"), ref.ManifestKey(), ref.SecretsKey()} {
		if err := storage.ValidKey(key); err != nil {
			t.Fatal(err)
		}
		got, file, err := storage.ParseDumpKey(key)
		if err != nil || got.Database != ref.Database || got.Engine != "postgres" || got.Source != "pg-3.dc1" || !got.ConsistencyPoint.Equal(cp) {
			t.Fatalf("%s parsed as %+v %q, %v", key, got, file, err)
		}
	}
	if !strings.HasSuffix(ref.DumpKey("sql"), "/20261123T200000.123456Z/dump.sql.zst") {
		t.Errorf("dump key %s: the consistency point is not UTC in the key", ref.DumpKey("sql"))
	}
	for _, bad := range []string{"dumps/x", "other/mysql/h/db/20261123T200000.000000Z/dump.sql.zst", "dumps/mysql/h/db/yesterday/dump.sql.zst"} {
		if _, _, err := storage.ParseDumpKey(bad); err == nil {
			t.Errorf("parsed %q", bad)
		}
	}
}
