package storage

import (
	"encoding/base64"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// DumpsPrefix is where every dump lives.
const DumpsPrefix = "dumps/"

// Object file names within a dump's directory.
const (
	ManifestFile = "manifest.json"
	// SecretsFile holds the users' password hashes, apart from the manifest
	// (see docs/security.md), stored Private.
	SecretsFile = "secrets.json"
)

// cpLayout is the consistency point in keys: UTC, sortable, no colons.
const cpLayout = "20060102T150405.000000Z"

// DumpRef names one dump: the database, where it came from, and its
// consistency point. Its keys are
//
//	dumps/<engine>/<source>/<database>/<consistency point>/dump.<ext>.zst
//	dumps/<engine>/<source>/<database>/<consistency point>/manifest.json
//	dumps/<engine>/<source>/<database>/<consistency point>/secrets.json
//
// with the database name encoded by EncodeName.
type DumpRef struct {
	Engine           string
	Source           string
	Database         string
	ConsistencyPoint time.Time
}

// Prefix is the dump's directory, ending in "/".
func (r DumpRef) Prefix() string {
	return DumpsPrefix + r.Engine + "/" + r.Source + "/" + EncodeName(r.Database) + "/" +
		r.ConsistencyPoint.UTC().Format(cpLayout) + "/"
}

// DumpKey is the key of the compressed dump; ext is the dump format
// ("sql" for a SQL script).
func (r DumpRef) DumpKey(ext string) string { return r.Prefix() + "dump." + ext + ".zst" }

// ManifestKey is the key of the dump's manifest.
func (r DumpRef) ManifestKey() string { return r.Prefix() + ManifestFile }

// SecretsKey is the key of the dump's secrets (password hashes).
func (r DumpRef) SecretsKey() string { return r.Prefix() + SecretsFile }

// ParseDumpKey splits a key of the dump layout into its DumpRef and file
// name. The database may span several components (long encoded names), so
// the key is read from both ends.
func ParseDumpKey(key string) (DumpRef, string, error) {
	parts := strings.Split(key, "/")
	if len(parts) < 6 || parts[0]+"/" != DumpsPrefix {
		return DumpRef{}, "", fmt.Errorf("%q is not a dump key (dumps/<engine>/<source>/<database>/<time>/<file>)", key)
	}
	cp, err := time.Parse(cpLayout, parts[len(parts)-2])
	if err != nil {
		return DumpRef{}, "", fmt.Errorf("%q is not a dump key: consistency point %q: %w", key, parts[len(parts)-2], err)
	}
	db, err := DecodeName(strings.Join(parts[3:len(parts)-2], "/"))
	if err != nil {
		return DumpRef{}, "", fmt.Errorf("%q is not a dump key: %w", key, err)
	}
	return DumpRef{Engine: parts[1], Source: parts[2], Database: db, ConsistencyPoint: cp}, parts[len(parts)-1], nil
}

var plainName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}$`)

// encodedChunk bounds one path component of an encoded name (file systems
// allow 255 bytes; a 64-character MySQL name is up to 192 bytes of UTF-8,
// 256 characters of base64).
const encodedChunk = 200

// EncodeName maps a database name to one or more key components that are
// safe as file names and S3 keys, and reversible: names of letters, digits,
// '_', '.' and '-' (not starting with '.' or '-') stay as they are; any
// other name becomes '=' and its base64url form, split into components of
// at most 200 characters, each starting with '='.
func EncodeName(name string) string {
	if plainName.MatchString(name) {
		return name
	}
	enc := base64.RawURLEncoding.EncodeToString([]byte(name))
	var parts []string
	for len(enc) > encodedChunk {
		parts = append(parts, "="+enc[:encodedChunk])
		enc = enc[encodedChunk:]
	}
	return strings.Join(append(parts, "="+enc), "/")
}

// DecodeName is the inverse of EncodeName.
func DecodeName(enc string) (string, error) {
	if !strings.HasPrefix(enc, "=") {
		if !plainName.MatchString(enc) {
			return "", fmt.Errorf("database component %q is neither a plain name nor an encoded one", enc)
		}
		return enc, nil
	}
	var b strings.Builder
	for _, part := range strings.Split(enc, "/") {
		if !strings.HasPrefix(part, "=") {
			return "", fmt.Errorf("encoded database name %q: component %q lacks its '='", enc, part)
		}
		b.WriteString(part[1:])
	}
	raw, err := base64.RawURLEncoding.DecodeString(b.String())
	if err != nil {
		return "", fmt.Errorf("encoded database name %q: %w", enc, err)
	}
	return string(raw), nil
}
