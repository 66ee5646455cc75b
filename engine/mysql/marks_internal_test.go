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

// TestMentionsDatabase: what the cutover's schema check reads as a possible
// change of db's schema: anything naming it, quoted or as a word.
func TestMentionsDatabase(t *testing.T) {
	for _, c := range []struct {
		q, db string
		want  bool
	}{
		{"use `shop`; ALTER TABLE t ADD c INT", "shop", true},
		{"use `other`; ALTER TABLE shop.t ADD c INT", "shop", true},
		{"DROP DATABASE shop", "shop", true},
		{"DROP DATABASE `shop`", "shop", true},
		{"ALTER DATABASE shop CHARACTER SET utf8mb4", "shop", true},
		{"ALTER DATABASE `with space` COLLATE utf8mb4_bin", "with space", true},
		{"use `other`; RENAME TABLE t TO `back``tick`.t", "back`tick", true},
		{"CREATE DATABASE `Café`", "café", true},
		{"use `other`; ALTER TABLE t ADD shop_id INT", "shop", false},
		{"DROP DATABASE shopping", "shop", false},
		{"use `myshop`; ALTER TABLE t ADD c INT", "shop", false},
		{"GRANT SELECT ON `other`.* TO `u`@`%`", "shop", false},
	} {
		if got := mentionsDatabase(c.q, c.db); got != c.want {
			t.Errorf("mentionsDatabase(%q, %q) = %v, want %v", c.q, c.db, got, c.want)
		}
	}
}

// TestSchemaStatement: the block's own statements (privileges, ALTER
// EVENT) and accounts' are not schema changes; DDL on tables, views,
// routines, triggers and CREATE or DROP EVENT is.
func TestSchemaStatement(t *testing.T) {
	for _, c := range []struct {
		q    string
		want bool
	}{
		{"REVOKE INSERT, UPDATE, DELETE ON `shop`.* FROM `u`@`%`", false},
		{"GRANT INSERT ON `shop`.* TO `u`@`%`", false},
		{"use `shop`; ALTER DEFINER=`root`@`localhost` EVENT `tick` DISABLE", false},
		{"ALTER EVENT `shop`.`tick` ENABLE", false},
		// As the log itself holds it (spaces around =), and odd accounts.
		{"ALTER DEFINER = `root`@`127.0.0.1` EVENT `shop`.`tick` DISABLE", false},
		{"ALTER DEFINER = `a b``c`@`%` EVENT `shop`.`tick` DISABLE", false},
		{"ALTER DEFINER='x y'@'h' EVENT `shop`.`tick` ENABLE", false},
		{"ALTER DEFINER=root@localhost EVENT `shop`.`tick` DISABLE", false},
		{"ALTER DEFINER = CURRENT_USER EVENT `shop`.`tick` DISABLE", false},
		{"ALTER DEFINER = `root`@`%` VIEW `shop`.v AS SELECT 1", true},
		{"ALTER TABLE `shop`.`event s` ADD c INT", true},
		{"use `shop`; CREATE OR REPLACE DEFINER=`root`@`%` EVENT e ON SCHEDULE EVERY 1 DAY DO SELECT 1", true},
		{"DROP EVENT `shop`.`e`", true},
		{"use `shop`; ALTER TABLE t ADD c INT", true},
		{"use `shop`; ANALYZE TABLE t", false},
		{"OPTIMIZE TABLE `shop`.t", false},
		{"use `shop`; TRUNCATE TABLE t", true},
		{"use `shop`; CREATE DEFINER=`root`@`%` TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.a = 1", true},
		{"use `shop`; CREATE OR REPLACE VIEW v AS SELECT 1", true},
		{"DROP DATABASE shop", true},
		{"use `other`; ALTER TABLE t ADD c INT", false},
	} {
		if got := schemaStatement(c.q, "shop"); got != c.want {
			t.Errorf("schemaStatement(%q) = %v, want %v", c.q, got, c.want)
		}
	}
}
