package links_test

import (
	"errors"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/fleetmigrate/fleetmigrate/links"
)

// FuzzVerify: no token verifies unless it is one Sign made with the same
// secret; a signed token verifies to the claims signed; nothing panics.
func FuzzVerify(f *testing.F) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	good, err := links.Sign(secret, links.Claims{Row: 7, Key: "dumps/a b/ü.sql.zst", Expires: now.Add(time.Hour)})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{good, good + "x", "v1..", "v1.e30.", "v2." + good[3:], "", ".", good[:len(good)-1]} {
		f.Add(s, int64(7), "k")
	}
	f.Fuzz(func(t *testing.T, token string, row int64, key string) {
		c, err := links.Verify(secret, token, now)
		if err == nil && token != good {
			// Only a token signed with the secret verifies; the fuzzer
			// cannot forge an HMAC-SHA256, so any other success is a bug.
			t.Fatalf("token %q verified: %+v", token, c)
		}
		if err != nil && !errors.Is(err, links.ErrForged) && !errors.Is(err, links.ErrExpired) {
			t.Fatalf("token %q: unexpected error %v", token, err)
		}
		if row <= 0 || key == "" {
			return
		}
		want := links.Claims{Row: row, Key: key, Expires: now.Add(time.Minute)}
		signed, err := links.Sign(secret, want)
		if !utf8.ValidString(key) {
			if err == nil {
				t.Fatalf("signed a key that is not UTF-8: %q", key)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		got, err := links.Verify(secret, signed, now)
		if err != nil || got.Row != row || got.Key != key || !got.Expires.Equal(want.Expires) {
			t.Fatalf("signed %+v, verified %+v, %v", want, got, err)
		}
		if _, err := links.Verify([]byte("another secret of thirty-two bytes!!"), signed, now); !errors.Is(err, links.ErrForged) {
			t.Fatalf("verified with another secret: %v", err)
		}
	})
}
