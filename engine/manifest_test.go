package engine

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

const goodManifest = `{"format_version":1,"engine":"mysql","database":"shop ü","tables":[{"name":"t","rows":3,"checksum":"12"}],` +
	`"dump_parts":[{"name":"schema","bytes":10},{"name":"data","bytes":0}],"future_field":true}`

func TestDecodeManifest(t *testing.T) {
	m, err := DecodeManifest([]byte(goodManifest))
	if err != nil || m.Database != "shop ü" || len(m.Tables) != 1 || len(m.DumpParts) != 2 {
		t.Fatalf("good manifest: %+v, %v", m, err)
	}
	for _, c := range []struct{ name, json, want string }{
		{"not JSON", `{"format_version":1,`, "not valid JSON"},
		{"a list", `[1,2]`, "not valid JSON"},
		{"no version", `{"engine":"mysql","database":"d"}`, "no format_version"},
		{"newer", `{"format_version":99,"engine":"mysql","database":"d"}`, "upgrade"},
		{"engine", `{"format_version":1,"engine":"oracle","database":"d"}`, "neither mysql nor postgres"},
		{"no database", `{"format_version":1,"engine":"postgres"}`, "no database"},
		{"negative rows", `{"format_version":1,"engine":"mysql","database":"d","tables":[{"name":"t","rows":-1}]}`, "-1 rows"},
		{"nameless table", `{"format_version":1,"engine":"mysql","database":"d","tables":[{"rows":1}]}`, `name ""`},
		{"negative part", `{"format_version":1,"engine":"mysql","database":"d","dump_parts":[{"name":"data","bytes":-5}]}`, "-5 bytes"},
		{"wrong type", `{"format_version":"1","engine":"mysql","database":"d"}`, "not valid JSON"},
	} {
		_, err := DecodeManifest([]byte(c.json))
		if !errors.Is(err, ErrPermanent) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want a permanent error about %q", c.name, err, c.want)
		}
	}
}

// FuzzDecodeManifest: any bytes decode to a manifest that passes its
// checks, or to a permanent error; never a panic. What decodes encodes to
// JSON that decodes again to the same encoding.
func FuzzDecodeManifest(f *testing.F) {
	f.Add([]byte(goodManifest))
	f.Add([]byte(`{"format_version":1,"engine":"postgres","database":"d","postgres":{"owner":"o"},"sequences":[{"name":"s","last_value":""}]}`))
	f.Add([]byte(`{"format_version":1,"engine":"mysql","database":"d","definers":{"a@b":["view v"]},"consistency_point":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeManifest(data)
		if err != nil {
			if !errors.Is(err, ErrPermanent) {
				t.Fatalf("not a permanent error: %v", err)
			}
			return
		}
		if m.Database == "" || (m.Engine != "mysql" && m.Engine != "postgres") {
			t.Fatalf("accepted %+v", m)
		}
		once, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		m2, err := DecodeManifest(once)
		if err != nil {
			t.Fatalf("its own encoding does not decode: %v", err)
		}
		twice, _ := json.Marshal(m2)
		if string(once) != string(twice) {
			t.Fatalf("encoding not stable:\n%s\n%s", once, twice)
		}
	})
}
