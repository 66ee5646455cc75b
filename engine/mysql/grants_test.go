package mysql

import (
	"slices"
	"strings"
	"testing"
)

func TestParseGrant(t *testing.T) {
	cases := []struct {
		line string
		want grant
	}{
		{"GRANT USAGE ON *.* TO `cu`@`%` IDENTIFIED BY PASSWORD '*2B60'",
			grant{Privs: "USAGE", DB: "*", Table: "*", Target: "*.*", Grantee: "`cu`@`%`"}},
		{"GRANT ALL PRIVILEGES ON `sh\\_op`.* TO `cu`@`%`",
			grant{Privs: "ALL PRIVILEGES", DB: `sh\_op`, Table: "*", Target: "`sh\\_op`.*", Grantee: "`cu`@`%`"}},
		{"GRANT SELECT, INSERT ON `sh\\_%`.* TO `cu`@`%` WITH GRANT OPTION",
			grant{Privs: "SELECT, INSERT", DB: `sh\_%`, Table: "*", Target: "`sh\\_%`.*", Grantee: "`cu`@`%`", GrantOption: true}},
		{"GRANT SELECT (`b ON c`, `a`), UPDATE (`a`) ON `sh_op`.`t x` TO `cu`@`127.0.0.9`",
			grant{Privs: "SELECT (`b ON c`, `a`), UPDATE (`a`)", DB: "sh_op", Table: "t x", Target: "`sh_op`.`t x`", Grantee: "`cu`@`127.0.0.9`"}},
		{"GRANT EXECUTE ON PROCEDURE `sh_op`.`p` TO `cu`@`127.0.0.9`",
			grant{Privs: "EXECUTE", Kind: "PROCEDURE", DB: "sh_op", Table: "p", Target: "PROCEDURE `sh_op`.`p`", Grantee: "`cu`@`127.0.0.9`"}},
		{"GRANT ALL PRIVILEGES ON `we``ird TO x`.* TO `a``b @ c`@`host ON x`",
			grant{Privs: "ALL PRIVILEGES", DB: "we`ird TO x", Table: "*", Target: "`we``ird TO x`.*", Grantee: "`a``b @ c`@`host ON x`"}},
		{"GRANT `role one` TO `u`@`%`", grant{Privs: "`role one`", Grantee: "`u`@`%`", Other: true}},
		{"GRANT PROXY ON ''@'%' TO 'root'@'localhost' WITH GRANT OPTION",
			grant{Privs: "PROXY", Target: "''@'%'", Grantee: "'root'@'localhost'", Other: true}},
	}
	for _, c := range cases {
		got, err := parseGrant(c.line)
		if err != nil {
			t.Errorf("%s: %v", c.line, err)
			continue
		}
		if got != c.want {
			t.Errorf("%s:\n got %+v\nwant %+v", c.line, got, c.want)
		}
	}
	for _, bad := range []string{"REVOKE x", "GRANT SELECT ON `db TO `u`@`%`", "GRANT SELECT ON db TO u"} {
		if _, err := parseGrant(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	// Secrets never reach an error message.
	if _, err := parseGrant("GRANT X ON `unterminated TO `u`@`%` IDENTIFIED BY PASSWORD '*SECRET'"); err == nil || strings.Contains(err.Error(), "SECRET") {
		t.Errorf("error leaks the hash or is missing: %v", err)
	}
}

func TestLikeMatch(t *testing.T) {
	cases := []struct {
		p, s string
		fold bool
		want bool
	}{
		{`shop`, "shop", false, true},
		{`shop`, "Shop", false, false},
		{`shop`, "Shop", true, true},
		{`sh_p`, "shop", false, true},
		{`sh\_p`, "shop", false, false},
		{`sh\_p`, "sh_p", false, true},
		{`cust\_%`, "cust_1", false, true},
		{`cust\_%`, "cust_", false, true},
		{`cust\_%`, "custx1", false, false},
		{`%`, "", false, true},
		{`a%b%c`, "aXXbYYc", false, true},
		{`a%b%c`, "aXXbYY", false, false},
		{`_`, "ü", false, true},
		{`ü\%`, "ü%", false, true},
		{`back\\slash`, `back\slash`, false, true},
	}
	for _, c := range cases {
		if got := likeMatch(c.p, c.s, c.fold); got != c.want {
			t.Errorf("%q LIKE %q (fold %v) = %v, want %v", c.s, c.p, c.fold, got, c.want)
		}
	}
	for _, name := range []string{"shop_1", "100%", `back\slash`, "we`ird", "ünïcødé_%", strings.Repeat("ä", 64)} {
		if !likeMatch(escapeLike(name), name, false) || !exactPattern(escapeLike(name), name) {
			t.Errorf("escaped %q does not match itself exactly", name)
		}
	}
	if likeMatch(escapeLike("shop_1"), "shopX1", false) {
		t.Error("escaped underscore matched another character")
	}
}

func TestPlanAccountBlockAndUndo(t *testing.T) {
	acct := Account{User: "cu", Host: "%", Lines: []string{
		"GRANT USAGE ON *.* TO `cu`@`%` IDENTIFIED <redacted>",
		"GRANT ALL PRIVILEGES ON `shop`.* TO `cu`@`%` WITH GRANT OPTION",
		"GRANT SELECT, INSERT ON `cust\\_%`.* TO `cu`@`%`",
		"GRANT SELECT ON `reports`.* TO `cu`@`%`",
		"GRANT SELECT (`a`), UPDATE (`a`) ON `shop`.`t` TO `cu`@`%`",
		"GRANT EXECUTE ON PROCEDURE `shop`.`p` TO `cu`@`%`",
	}}
	// shop does not match cust\_%: only the exact lines are touched.
	others := func(p string) ([]string, error) { return nil, nil }
	c, err := planAccount("shop", acct, false, true, others)
	if err != nil {
		t.Fatal(err)
	}
	wantApply := []string{
		"REVOKE ALL PRIVILEGES ON `shop`.* FROM `cu`@`%`",
		"REVOKE GRANT OPTION ON `shop`.* FROM `cu`@`%`",
		"GRANT SELECT, SHOW VIEW ON `shop`.* TO `cu`@`%`",
		"REVOKE SELECT (`a`), UPDATE (`a`) ON `shop`.`t` FROM `cu`@`%`",
		"GRANT SELECT (`a`) ON `shop`.`t` TO `cu`@`%`",
		"REVOKE EXECUTE ON PROCEDURE `shop`.`p` FROM `cu`@`%`",
	}
	if !slices.Equal(c.Apply, wantApply) {
		t.Errorf("apply:\n%s\nwant:\n%s", strings.Join(c.Apply, "\n"), strings.Join(wantApply, "\n"))
	}
	wantUndo := []string{
		"REVOKE SELECT, SHOW VIEW ON `shop`.* FROM `cu`@`%`",
		"REVOKE SELECT (`a`) ON `shop`.`t` FROM `cu`@`%`",
		"GRANT ALL PRIVILEGES ON `shop`.* TO `cu`@`%` WITH GRANT OPTION",
		"GRANT SELECT, INSERT ON `cust\\_%`.* TO `cu`@`%`",
		"GRANT SELECT ON `reports`.* TO `cu`@`%`",
		"GRANT SELECT (`a`), UPDATE (`a`) ON `shop`.`t` TO `cu`@`%`",
		"GRANT EXECUTE ON PROCEDURE `shop`.`p` TO `cu`@`%`",
	}
	if !slices.Equal(c.Undo, wantUndo) {
		t.Errorf("undo:\n%s\nwant:\n%s", strings.Join(c.Undo, "\n"), strings.Join(wantUndo, "\n"))
	}

	// cust_7 is reached through the wildcard: the wildcard goes, the other
	// databases it matched get exact grants, cust_7 keeps SELECT.
	others = func(p string) ([]string, error) {
		if p != `cust\_%` {
			t.Errorf("others asked for %q", p)
		}
		return []string{"cust_8", "cust_%9"}, nil
	}
	c, err = planAccount("cust_7", acct, false, true, others)
	if err != nil {
		t.Fatal(err)
	}
	wantApply = []string{
		"REVOKE SELECT, INSERT ON `cust\\_%`.* FROM `cu`@`%`",
		"GRANT SELECT, INSERT ON `cust\\_8`.* TO `cu`@`%`",
		"GRANT SELECT, INSERT ON `cust\\_\\%9`.* TO `cu`@`%`",
		"GRANT SELECT ON `cust\\_7`.* TO `cu`@`%`",
	}
	if !slices.Equal(c.Apply, wantApply) {
		t.Errorf("wildcard apply:\n%s\nwant:\n%s", strings.Join(c.Apply, "\n"), strings.Join(wantApply, "\n"))
	}
	if !slices.Contains(c.Undo, "REVOKE SELECT, INSERT ON `cust\\_8`.* FROM `cu`@`%`") ||
		c.Undo[len(c.Undo)-1] != "GRANT EXECUTE ON PROCEDURE `shop`.`p` TO `cu`@`%`" {
		t.Errorf("wildcard undo: %q", c.Undo)
	}

	// A database the account may only read is not touched by a block, but
	// a close takes the reading away too.
	c, err = planAccount("reports", acct, false, true, others)
	if err != nil || len(c.Apply) != 0 {
		t.Errorf("block of a read-only account: %q, %v", c.Apply, err)
	}
	c, err = planAccount("reports", acct, false, false, others)
	if err != nil || !slices.Equal(c.Apply, []string{"REVOKE SELECT ON `reports`.* FROM `cu`@`%`"}) || len(c.Undo) != 0 {
		t.Errorf("close: %q, undo %q, %v", c.Apply, c.Undo, err)
	}
}

func TestOptionValue(t *testing.T) {
	cases := map[string]string{
		"plain":          `"plain"`,
		`with "quote"`:   `"with \"quote\""`,
		`back\slash#x y`: `"back\\slash#x y"`,
		"new\nline\ttab": `"new\nline\ttab"`,
	}
	for in, want := range cases {
		if got := optionValue(in); got != want {
			t.Errorf("optionValue(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestAuthClauseAndVersion(t *testing.T) {
	a := authClause("CREATE USER `u`@`%` IDENTIFIED BY PASSWORD '*AB' REQUIRE SSL WITH MAX_QUERIES_PER_HOUR 5 PASSWORD EXPIRE NEVER", "u", "%")
	if a != "IDENTIFIED BY PASSWORD '*AB'" {
		t.Errorf("auth clause %q", a)
	}
	a = authClause("CREATE USER `u`@`%` IDENTIFIED VIA mysql_native_password USING '*B6' OR unix_socket", "u", "%")
	if a != "IDENTIFIED VIA mysql_native_password USING '*B6' OR unix_socket" {
		t.Errorf("auth clause %q", a)
	}
	if f, v := parseVersion("10.11.19-MariaDB-0+deb12u1"); f != MariaDB || v != [3]int{10, 11, 19} {
		t.Errorf("MariaDB version: %s %v", f, v)
	}
	if f, v := parseVersion("8.0.36"); f != MySQL || v != [3]int{8, 0, 36} {
		t.Errorf("MySQL version: %s %v", f, v)
	}
	var acct Account
	acct.CreateUser = "CREATE USER `u`@`%` IDENTIFIED VIA ed25519 USING 'x' OR unix_socket"
	got := viaPlugin.FindAllStringSubmatch(acct.CreateUser, -1)
	if len(got) != 2 || got[0][1] != "ed25519" || got[1][1] != "unix_socket" {
		t.Errorf("plugins %q", got)
	}
}
