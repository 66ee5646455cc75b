package mysql

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

// parseAll reads every statement of a data part.
func parseAll(part string) ([]dataStatement, error) {
	p := newDataParser(strings.NewReader(part))
	var out []dataStatement
	for {
		st, err := p.next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, st)
	}
}

const partHead = `/*M!999999\- enable the sandbox mode */ 
-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)
--
/*!40101 SET NAMES utf8mb4 */;
/*!40103 SET TIME_ZONE='+00:00' */;

--
-- Dumping data for table ` + "`t`" + `
--

`

func TestDataParser(t *testing.T) {
	part := partHead +
		"INSERT INTO `t` VALUES\n(1,'a;\\nINSERT INTO x'),\n(2,NULL);\n" +
		"INSERT INTO `we``ird ü` VALUES (1,'--'),(2,'x');\n" +
		"/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n\n" +
		"-- Dump completed on 2026-11-24  4:25:38\n"
	got, err := parseAll(part)
	if err != nil {
		t.Fatal(err)
	}
	want := []dataStatement{
		{kind: stmtSession, sql: "/*!40101 SET NAMES utf8mb4 */"},
		{kind: stmtSession, sql: "/*!40103 SET TIME_ZONE='+00:00' */"},
		{kind: stmtInsert, sql: "INSERT INTO `t` VALUES\n(1,'a;\\nINSERT INTO x'),\n(2,NULL)", table: "t"},
		{kind: stmtInsert, sql: "INSERT INTO `we``ird ü` VALUES (1,'--'),(2,'x')", table: "we`ird ü"},
		{kind: stmtSession, sql: "/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d statements, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("statement %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	// Without a newline at the very end.
	if _, err := parseAll(strings.TrimSuffix(part, "\n")); err != nil {
		t.Errorf("no final newline: %v", err)
	}
	// A row longer than the reader's buffer.
	long := strings.Repeat("x", 3<<20)
	got, err = parseAll(partHead + "INSERT INTO `t` VALUES (1,'" + long + "');\n-- Dump completed\n")
	if err != nil || len(got) != 3 || len(got[2].sql) != len("INSERT INTO `t` VALUES (1,'')")+len(long) {
		t.Errorf("long row: %d statements, %v", len(got), err)
	}
}

func TestDataParserRefuses(t *testing.T) {
	for _, c := range []struct{ name, part, want string }{
		{"no trailer", partHead + "INSERT INTO `t` VALUES (1);\n", "trailer"},
		{"cut inside a statement", partHead + "INSERT INTO `t` VALUES\n(1),\n(2", "ends inside a statement"},
		{"cut inside a statement with a trailer-looking row", partHead + "INSERT INTO `t` VALUES\n(1),\n-- Dump completed\n", "ends inside a statement"},
		{"DDL", partHead + "DROP TABLE `t`;\n-- Dump completed\n", "does not run"},
		{"locks", partHead + "LOCK TABLES `t` WRITE;\n-- Dump completed\n", "does not run"},
		{"after the trailer", partHead + "-- Dump completed\nINSERT INTO `t` VALUES (1);\n", "after the dump tool's trailer"},
		{"empty", "", "trailer"},
	} {
		_, err := parseAll(c.part)
		if err == nil || !errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want a permanent error about %q", c.name, err, c.want)
		}
	}
}

func TestInsertTable(t *testing.T) {
	for stmt, want := range map[string]string{
		"INSERT INTO `t` VALUES (1)":        "t",
		"INSERT INTO `a``b` VALUES (1)":     "a`b",
		"INSERT INTO `` VALUES (1)":         "",
		"INSERT INTO t VALUES (1)":          "",
		"INSERT INTO `unterminated VALUES":  "",
		"INSERT INTO `ü 😀 ``x``` VALUES ()": "ü 😀 `x`",
	} {
		if got := insertTable(stmt); got != want {
			t.Errorf("insertTable(%q) = %q, want %q", stmt, got, want)
		}
	}
}

// FuzzDataParser: whatever a data part holds, the parser returns only
// INSERTs and session settings, or a permanent error; it never panics.
func FuzzDataParser(f *testing.F) {
	f.Add(partHead + "INSERT INTO `t` VALUES\n(1,'a;\\n'),\n(2,NULL);\n-- Dump completed on x\n")
	f.Add(partHead + "INSERT INTO `t` VALUES (1);\nDROP TABLE `t`;\n")
	f.Add("SET a=1;\n-- Dump completed\n\n")
	f.Add("INSERT INTO `t` VALUES (1)")
	f.Fuzz(func(t *testing.T, part string) {
		got, err := parseAll(part)
		if err != nil && !errors.Is(err, engine.ErrPermanent) {
			t.Fatalf("not a permanent error: %v", err)
		}
		for _, st := range got {
			switch st.kind {
			case stmtInsert:
				if !hasPrefixFold(st.sql, "INSERT INTO ") {
					t.Fatalf("an insert that is not one: %q", st.sql)
				}
			case stmtSession:
				if !hasPrefixFold(st.sql, "/*!") && !hasPrefixFold(st.sql, "SET ") {
					t.Fatalf("a session setting that is not one: %q", st.sql)
				}
			default:
				t.Fatalf("kind %d", st.kind)
			}
		}
	})
}

// FuzzInsertTable: the table name of an INSERT comes back from its quoted
// form, whatever it is.
func FuzzInsertTable(f *testing.F) {
	for _, s := range []string{"t", "a`b", "``", "ü 😀", "x VALUES (1)", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if name == "" {
			return
		}
		if got := insertTable("INSERT INTO " + ident.QuoteMySQL(name) + " VALUES (1)"); got != name {
			t.Fatalf("insertTable of %q gave %q", name, got)
		}
	})
}
