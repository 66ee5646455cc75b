// Package links gives customers a download link for their database's dump
// that works for the whole retention period (S3 presigned URLs live at most
// seven days): a token signed with HMAC-SHA256 that states the row, the
// object key and the expiry, and a server that checks it and hands out a
// fresh short-lived presigned URL (S3) or streams the file (directory).
package links

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// MinSecretLen is the shortest signing secret accepted.
const MinSecretLen = 32

// tokenVersion prefixes every token; a new format gets a new version.
const tokenVersion = "v1"

// Errors of Verify.
var (
	// ErrForged: the token is malformed or its signature does not match.
	ErrForged = errors.New("link is not valid")
	// ErrExpired: the signature matches but the link has expired.
	ErrExpired = errors.New("link has expired")
)

// Claims are what a link states.
type Claims struct {
	Row     int64     `json:"r"`
	Key     string    `json:"k"`
	Expires time.Time `json:"e"`
}

// CheckSecret refuses a secret too short to sign with.
func CheckSecret(secret string) error {
	if len(secret) < MinSecretLen {
		return fmt.Errorf("links.secret is %d bytes long; links need a secret of at least %d bytes (e.g. `openssl rand -hex 32`)", len(secret), MinSecretLen)
	}
	return nil
}

// Sign returns the token for c: v1.<payload>.<signature>, URL-safe. A key
// that is not valid UTF-8 is refused: JSON would carry it altered, and the
// link would name another object.
func Sign(secret []byte, c Claims) (string, error) {
	if !utf8.ValidString(c.Key) {
		return "", fmt.Errorf("link to %q: the object key is not valid UTF-8", c.Key)
	}
	c.Expires = c.Expires.UTC().Truncate(time.Second)
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	body := tokenVersion + "." + base64.RawURLEncoding.EncodeToString(payload)
	return body + "." + base64.RawURLEncoding.EncodeToString(mac(secret, body)), nil
}

// Verify checks a token's signature, then its expiry against now.
func Verify(secret []byte, token string, now time.Time) (Claims, error) {
	var c Claims
	i := strings.LastIndexByte(token, '.')
	if i < 0 || !strings.HasPrefix(token, tokenVersion+".") {
		return c, ErrForged
	}
	body := token[:i]
	sig, err := base64.RawURLEncoding.DecodeString(token[i+1:])
	if err != nil || !hmac.Equal(sig, mac(secret, body)) {
		return c, ErrForged
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(body, tokenVersion+"."))
	if err != nil || json.Unmarshal(payload, &c) != nil || c.Row <= 0 || c.Key == "" {
		return Claims{}, ErrForged
	}
	if !now.Before(c.Expires) {
		return c, ErrExpired
	}
	return c, nil
}

func mac(secret []byte, body string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(body))
	return m.Sum(nil)
}
