package dns

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"

	mdns "github.com/miekg/dns"
)

// Normalize returns name as the updater compares it: lower-case, fully
// qualified (one trailing dot). It refuses names that are not valid DNS
// names.
func Normalize(name string) (string, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	if n == "" || n == "." {
		return "", fmt.Errorf("DNS name %q is empty", name)
	}
	n = mdns.Fqdn(strings.TrimRight(n, "."))
	if _, ok := mdns.IsDomainName(n); !ok || strings.Contains(n, "..") {
		return "", fmt.Errorf("%q is not a valid DNS name", name)
	}
	return n, nil
}

// show prints a normalised name the way users write it: without the
// trailing dot.
func show(name string) string { return strings.TrimSuffix(name, ".") }

// Target is what a DNS name pointing at a host holds: the host's addresses
// (A and AAAA records, all of them) or one host name (a CNAME record).
type Target struct {
	// Addrs are sorted and unique.
	Addrs []netip.Addr
	// Host is the CNAME target, normalised.
	Host string
}

// ParseTarget reads a host's DNS target as agents publish it
// (agent.dns-target): comma-separated addresses, or one host name.
func ParseTarget(s string) (Target, error) {
	var t Target
	var names []string
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if a, err := netip.ParseAddr(part); err == nil {
			if a.Zone() != "" {
				return Target{}, fmt.Errorf("DNS target %q: address %s has a zone", s, part)
			}
			t.Addrs = append(t.Addrs, a.Unmap())
			continue
		}
		names = append(names, part)
	}
	switch {
	case len(names) == 0 && len(t.Addrs) == 0:
		return Target{}, fmt.Errorf("DNS target %q is empty", s)
	case len(names) > 0 && len(t.Addrs) > 0:
		return Target{}, fmt.Errorf("DNS target %q mixes addresses and host names: a name holds either addresses (A/AAAA) or one CNAME", s)
	case len(names) > 1:
		return Target{}, fmt.Errorf("DNS target %q names %d hosts: a CNAME points at one", s, len(names))
	case len(names) == 1:
		h, err := Normalize(names[0])
		if err != nil {
			return Target{}, fmt.Errorf("DNS target %q: %w", s, err)
		}
		t.Host = h
		return t, nil
	}
	slices.SortFunc(t.Addrs, func(a, b netip.Addr) int { return a.Compare(b) })
	t.Addrs = slices.Compact(t.Addrs)
	return t, nil
}

// Empty reports whether the target holds nothing.
func (t Target) Empty() bool { return len(t.Addrs) == 0 && t.Host == "" }

// Equal reports whether both hold the same records.
func (t Target) Equal(o Target) bool { return t.Host == o.Host && slices.Equal(t.Addrs, o.Addrs) }

func (t Target) String() string {
	if t.Host != "" {
		return show(t.Host)
	}
	if len(t.Addrs) == 0 {
		return "nothing (no A, AAAA or CNAME record)"
	}
	s := make([]string, len(t.Addrs))
	for i, a := range t.Addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

// Types are the record types the target consists of.
func (t Target) Types() []uint16 {
	if t.Host != "" {
		return []uint16{mdns.TypeCNAME}
	}
	var out []uint16
	for _, a := range t.Addrs {
		typ := mdns.TypeAAAA
		if a.Is4() {
			typ = mdns.TypeA
		}
		if !slices.Contains(out, typ) {
			out = append(out, typ)
		}
	}
	return out
}

// RRs returns the target's records at name (normalised) with ttl.
func (t Target) RRs(name string, ttl uint32) []mdns.RR {
	if t.Host != "" {
		return []mdns.RR{&mdns.CNAME{Hdr: hdr(name, mdns.TypeCNAME, mdns.ClassINET, ttl), Target: t.Host}}
	}
	out := make([]mdns.RR, 0, len(t.Addrs))
	for _, a := range t.Addrs {
		if a.Is4() {
			out = append(out, &mdns.A{Hdr: hdr(name, mdns.TypeA, mdns.ClassINET, ttl), A: a.AsSlice()})
		} else {
			out = append(out, &mdns.AAAA{Hdr: hdr(name, mdns.TypeAAAA, mdns.ClassINET, ttl), AAAA: a.AsSlice()})
		}
	}
	return out
}

func hdr(name string, typ, class uint16, ttl uint32) mdns.RR_Header {
	return mdns.RR_Header{Name: name, Rrtype: typ, Class: class, Ttl: ttl}
}

// targetTypes are the record types a database name may hold.
var targetTypes = []uint16{mdns.TypeA, mdns.TypeAAAA, mdns.TypeCNAME}

// targetOf collects what the records of name among rrs point to and
// their smallest TTL.
func targetOf(name string, rrs []mdns.RR) (Target, uint32) {
	var t Target
	var ttl uint32
	seen := false
	for _, rr := range rrs {
		h := rr.Header()
		if !strings.EqualFold(h.Name, name) {
			continue
		}
		switch r := rr.(type) {
		case *mdns.A:
			a, _ := netip.AddrFromSlice(r.A.To4())
			t.Addrs = append(t.Addrs, a)
		case *mdns.AAAA:
			a, _ := netip.AddrFromSlice(r.AAAA.To16())
			t.Addrs = append(t.Addrs, a.Unmap())
		case *mdns.CNAME:
			t.Host = strings.ToLower(r.Target)
		default:
			continue
		}
		if !seen || h.Ttl < ttl {
			ttl = h.Ttl
		}
		seen = true
	}
	slices.SortFunc(t.Addrs, func(a, b netip.Addr) int { return a.Compare(b) })
	t.Addrs = slices.Compact(t.Addrs)
	return t, ttl
}

// Key is a TSIG key. Its String never shows the secret.
type Key struct {
	// Name as the server knows it (key "migrate-key" { ... }).
	Name string
	// Algorithm: hmac-sha256 (default), hmac-sha384, hmac-sha512,
	// hmac-sha224, hmac-sha1, hmac-md5.
	Algorithm string
	// Secret is base64.
	Secret string
}

func (k Key) String() string { return fmt.Sprintf("TSIG key %q (%s)", show(k.Name), k.Algorithm) }

var algorithms = map[string]string{
	"hmac-sha256": mdns.HmacSHA256, "hmac-sha384": mdns.HmacSHA384, "hmac-sha512": mdns.HmacSHA512,
	"hmac-sha224": mdns.HmacSHA224, "hmac-sha1": mdns.HmacSHA1, "hmac-md5": mdns.HmacMD5,
}

// check validates the key and returns its algorithm's name on the wire.
func (k *Key) check() (string, error) {
	if k.Algorithm == "" {
		k.Algorithm = "hmac-sha256"
	}
	k.Algorithm = strings.ToLower(strings.TrimSuffix(k.Algorithm, "."))
	alg, ok := algorithms[k.Algorithm]
	if !ok {
		return "", fmt.Errorf("TSIG algorithm %q: want one of hmac-sha256, hmac-sha384, hmac-sha512, hmac-sha224, hmac-sha1, hmac-md5", k.Algorithm)
	}
	if strings.TrimSpace(k.Name) == "" {
		return "", fmt.Errorf("the TSIG key has no name")
	}
	name, err := Normalize(k.Name)
	if err != nil {
		return "", fmt.Errorf("TSIG key name: %w", err)
	}
	k.Name = name
	if k.Secret == "" {
		return "", fmt.Errorf("%s has no secret", k)
	}
	if _, err := base64.StdEncoding.DecodeString(k.Secret); err != nil {
		return "", fmt.Errorf("the secret of %s is not base64", k) // never the secret itself
	}
	return alg, nil
}

var keyStatement = regexp.MustCompile(`(?s)key\s+"?([^"\s{]+)"?\s*\{(.*?)\}\s*;`)
var keyField = regexp.MustCompile(`(?s)(algorithm|secret)\s+"?([^";\s]+)"?\s*;`)

// ParseKey reads a BIND key statement, as tsig-keygen writes it and
// named.conf includes it:
//
//	key "migrate-key" { algorithm hmac-sha256; secret "base64..."; };
func ParseKey(text string) (Key, error) {
	m := keyStatement.FindAllStringSubmatch(text, -1)
	if len(m) != 1 {
		return Key{}, fmt.Errorf("want exactly one key statement (key \"name\" { algorithm ...; secret \"...\"; };), found %d", len(m))
	}
	k := Key{Name: m[0][1]}
	for _, f := range keyField.FindAllStringSubmatch(m[0][2], -1) {
		if f[1] == "algorithm" {
			k.Algorithm = f[2]
		} else {
			k.Secret = f[2]
		}
	}
	if _, err := k.check(); err != nil {
		return Key{}, err
	}
	return k, nil
}

// ReadKeyFile reads a BIND key file (see ParseKey). The file should be
// readable by the agent only.
func ReadKeyFile(path string) (Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Key{}, fmt.Errorf("read the TSIG key file: %w", err)
	}
	k, err := ParseKey(string(b))
	if err != nil {
		return Key{}, fmt.Errorf("TSIG key file %s: %w", path, err)
	}
	return k, nil
}
