package mysql

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestInterpolate: values become literals only at placeholders outside
// backquoted names (a name may hold '?' and doubled backquotes), quoted
// and escaped as the driver would; a value it cannot write, or a count
// that does not match, is refused.
func TestInterpolate(t *testing.T) {
	for _, c := range []struct {
		q    string
		args []any
		want string
		ok   bool
	}{
		{"INSERT INTO `d`.`t` (`a`, `b?`) VALUES (?, ?)", []any{int64(-5), []byte("x'y\\z\x00\n")},
			"INSERT INTO `d`.`t` (`a`, `b?`) VALUES (-5, _binary'x\\'y\\\\z\\0\\n')", true},
		{"UPDATE `we``ird ?` SET `c` = ? WHERE `k` <=> ? LIMIT 1", []any{nil, uint64(18446744073709551615)},
			"UPDATE `we``ird ?` SET `c` = NULL WHERE `k` <=> 18446744073709551615 LIMIT 1", true},
		{"SELECT ?, ?, ?", []any{"12.50", float32(0.1), 1.5e300}, "SELECT '12.50', 0.10000000149011612, 1.5e+300", true},
		{"SELECT ?", []any{"ü \"q\" \r \x1a"}, "SELECT 'ü \\\"q\\\" \\r \\Z'", true},
		{"SELECT ?", []any{time.Date(2026, 2, 3, 4, 5, 6, 123456000, time.UTC)}, "SELECT '2026-02-03 04:05:06.123456'", true},
		{"SELECT ?", []any{struct{}{}}, "", false},
		{"SELECT ?, ?", []any{int64(1)}, "", false},
		{"SELECT ?", []any{int64(1), int64(2)}, "", false},
	} {
		got, ok := interpolate(c.q, c.args)
		if ok != c.ok || ok && got != c.want {
			t.Errorf("interpolate(%q, %v) = %q, %v; want %q, %v", c.q, c.args, got, ok, c.want, c.ok)
		}
	}
}

// TestFailedCheck reads the op a failed check names.
func TestFailedCheck(t *testing.T) {
	if n := failedCheck(errors.New("Error 1644 (45000): " + checkMark + "17")); n != 17 {
		t.Errorf("op %d, want 17", n)
	}
	if n := failedCheck(errors.New("Error 1062 (23000): Duplicate entry")); n != -1 {
		t.Errorf("op %d for another error, want -1", n)
	}
}

// FuzzLiteral: any bytes written as a literal read back as the same bytes
// under MySQL's escapes, and no quote ends the literal early (a value
// cannot break out of its statement).
func FuzzLiteral(f *testing.F) {
	for _, s := range []string{"", "it's", `a\b`, "\x00\n\r\x1a\"'\\", "ü\xff\xfe", "'; DROP TABLE t; --"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, v := range []any{s, []byte(s)} {
			var b strings.Builder
			if !appendLiteral(&b, v) {
				t.Fatalf("%T %q not written", v, s)
			}
			lit, ok := strings.CutPrefix(b.String(), "_binary")
			if _, isBytes := v.([]byte); isBytes != ok {
				t.Fatalf("%T written as %q", v, b.String())
			}
			if len(lit) < 2 || lit[0] != '\'' || lit[len(lit)-1] != '\'' {
				t.Fatalf("%q: not one quoted literal: %q", s, lit)
			}
			got, rest, ok := unescape(lit[1:])
			if !ok || rest != "" || got != s {
				t.Fatalf("%q written as %q reads back as %q (rest %q, closed %v)", s, lit, got, rest, ok)
			}
		}
	})
}

// unescape reads a quoted literal's body as the server does (backslash
// escapes, ” for a quote) up to its closing quote, and returns what
// follows it.
func unescape(s string) (value, rest string, closed bool) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && i+1 < len(s):
			i++
			switch s[i] {
			case '0':
				b.WriteByte(0)
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 'Z':
				b.WriteByte(0x1a)
			default:
				b.WriteByte(s[i])
			}
		case c == '\'' && i+1 < len(s) && s[i+1] == '\'':
			b.WriteByte('\'')
			i++
		case c == '\'':
			return b.String(), s[i+1:], true
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), "", false
}
