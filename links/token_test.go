package links_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/links"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func TestTokens(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	c := links.Claims{Row: 42, Key: "dumps/mysql/db-1/shop/20261123T110000.000000Z/dump.sql.zst", Expires: now.Add(time.Hour)}
	tok, err := links.Sign(secret, c)
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(tok, "/+= ") {
		t.Errorf("token %q is not URL-safe", tok)
	}
	got, err := links.Verify(secret, tok, now)
	if err != nil || got.Row != 42 || got.Key != c.Key || !got.Expires.Equal(c.Expires) {
		t.Fatalf("verify: %+v, %v", got, err)
	}
	if _, err := links.Verify(secret, tok, now.Add(time.Hour)); !errors.Is(err, links.ErrExpired) {
		t.Errorf("at expiry: %v, want ErrExpired", err)
	}
	// Any change to the token, or another secret, is a forgery.
	for i := 3; i < len(tok); i += 7 {
		b := []byte(tok)
		b[i] ^= 1
		if _, err := links.Verify(secret, string(b), now); !errors.Is(err, links.ErrForged) {
			t.Fatalf("token changed at %d verified: %v", i, err)
		}
	}
	if _, err := links.Verify([]byte("another secret, just as long......"), tok, now); !errors.Is(err, links.ErrForged) {
		t.Error("verified with another secret")
	}
	for _, bad := range []string{"", "v1", "v1..", "v2." + tok[3:], tok + ".x", "garbage"} {
		if _, err := links.Verify(secret, bad, now); !errors.Is(err, links.ErrForged) {
			t.Errorf("%q: %v, want ErrForged", bad, err)
		}
	}
	if err := links.CheckSecret("short"); err == nil {
		t.Error("short secret accepted")
	}
}

func TestParseTTL(t *testing.T) {
	for in, want := range map[string]time.Duration{"720h": 720 * time.Hour, "30d": 720 * time.Hour, "90m": 90 * time.Minute} {
		if got, err := links.ParseTTL(in); err != nil || got != want {
			t.Errorf("%s: %s, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "0d", "-1h", "soon", "3w"} {
		if _, err := links.ParseTTL(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
