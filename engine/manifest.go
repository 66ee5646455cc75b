package engine

import "encoding/json"

// DecodeManifest reads a stored manifest and checks what an import relies
// on before it trusts it: a format this code reads, a known engine, a
// database name, tables with names and row counts that can be, dump parts
// with sizes that can be. Unknown fields are ignored (a newer agent may add
// some). Every refusal is permanent: the stored manifest does not change.
func DecodeManifest(data []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, Permanentf("the manifest is not valid JSON for a manifest: %v", err)
	}
	switch {
	case m.FormatVersion < 1:
		return nil, Permanentf("the manifest has no format_version (or %d)", m.FormatVersion)
	case m.FormatVersion > ManifestVersion:
		return nil, Permanentf("the manifest has format %d; this agent reads up to %d: upgrade it", m.FormatVersion, ManifestVersion)
	case m.Engine != "mysql" && m.Engine != "postgres":
		return nil, Permanentf("the manifest names engine %q, neither mysql nor postgres", m.Engine)
	case m.Database == "":
		return nil, Permanentf("the manifest names no database")
	}
	for i, t := range m.Tables {
		if t.Name == "" || t.Rows < 0 {
			return nil, Permanentf("the manifest's table %d has name %q and %d rows", i+1, t.Name, t.Rows)
		}
	}
	for i, p := range m.DumpParts {
		if p.Name == "" || p.Bytes < 0 {
			return nil, Permanentf("the manifest's dump part %d has name %q and %d bytes", i+1, p.Name, p.Bytes)
		}
	}
	return &m, nil
}
