package mysql

import "testing"

func TestNamesDatabase(t *testing.T) {
	for _, c := range []struct {
		q, db string
		want  bool
	}{
		{"use `shop`; INSERT INTO t VALUES (1)", "shop", true},
		{"use `other`; INSERT INTO shop.t VALUES (1)", "shop", true},
		{"use `other`; INSERT INTO `shop`.`t` VALUES (1)", "shop", true},
		{"TRUNCATE `with space`.`customers`", "with space", true},
		{"use `back``tick`; DELETE FROM t", "back`tick", true},
		{"INSERT INTO (shop.t) VALUES (1)", "shop", true},
		{"REVOKE ALL PRIVILEGES ON `Café`.* FROM `user with space`@`%`", "with space", false},
		{"use `shopping`; INSERT INTO t VALUES (1)", "shop", false},
		{"use `other`; INSERT INTO myshop.t VALUES (1)", "shop", false},
		{"use `other`; INSERT INTO t VALUES ('shop.t')", "shop", true}, // inside a string: counted, a re-read only
		{"use `Shop`; INSERT INTO t VALUES (1)", "shop", true},         // lower_case_table_names: the same database
		{"SAVEPOINT x", "shop", false},
	} {
		if got := namesDatabase(c.q, c.db); got != c.want {
			t.Errorf("namesDatabase(%q, %q) = %v, want %v", c.q, c.db, got, c.want)
		}
	}
}
