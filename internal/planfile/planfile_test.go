package planfile_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/fleetmigrate/fleetmigrate/internal/planfile"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

const header = "engine,database,source,destination,dns_name\n"

func parseErrs(t *testing.T, body string) ([]planfile.Line, planfile.Errors) {
	t.Helper()
	lines, err := planfile.Parse(strings.NewReader(body))
	var bad planfile.Errors
	if err != nil && !errors.As(err, &bad) {
		t.Fatalf("not a per-line error: %v", err)
	}
	return lines, bad
}

func TestBadLines(t *testing.T) {
	cases := []struct {
		name, line, want string
	}{
		{"unknown engine", "oracle,shop,db1,db2,", `unknown engine "oracle"`},
		{"empty engine", ",shop,db1,db2,", "engine is empty"},
		{"source is destination", "mysql,shop,db1,DB1,", `source and destination are both "db1"`},
		{"empty database", "mysql,,db1,db2,", "database is empty"},
		{"postgres name over 63 bytes", "postgres," + strings.Repeat("p", 64) + ",db1,db2,", "at most 63"},
		{"postgres name over 63 bytes in unicode", "postgres," + strings.Repeat("é", 32) + ",db1,db2,", "64 bytes"},
		{"mysql name over 64 characters", "mysql," + strings.Repeat("m", 65) + ",db1,db2,", "at most 64"},
		{"mysql name ending in a space", "mysql,\"shop \",db1,db2,", "ends with a space"},
		{"mysql name with emoji", "mysql,shop😀,db1,db2,", "Basic Multilingual Plane"},
		{"bad host", "mysql,shop,db 1,db2,", `source "db 1" is not a host ID`},
		{"empty destination", "mysql,shop,db1,,", "destination is empty"},
		{"bad dns name", "mysql,shop,db1,db2,-bad.example.test", "label"},
		{"single-label dns name", "mysql,shop,db1,db2,shop", "not a fully qualified name"},
		{"too few fields", "mysql,shop,db1", "has 3 fields, the header has 5"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, bad := parseErrs(t, header+"mysql,fine,db1,db2,fine.example.test\n"+tc.line+"\n")
			if len(bad) != 1 || bad[0].Number != 3 || !strings.Contains(bad[0].Error(), tc.want) {
				t.Fatalf("got %v, want line 3 to say %q", bad, tc.want)
			}
		})
	}
}

func TestDuplicatesWithinFile(t *testing.T) {
	body := header +
		"mysql,shop,db1,db2,shop.example.test\n" + // 2
		"mysql,shop,db1,db3,\n" + // 3: same database, same source
		"mysql,shop,db9,db2,\n" + // 4: destination db2 receives shop twice
		"mysql,blog,db1,db2,shop.example.test\n" + // 5: DNS name reused
		"postgres,shop,db1,db2,\n" + // 6: fine, other engine
		"mysql,Shop,db1,db2,\n" // 7: fine, names are case-sensitive
	lines, bad := parseErrs(t, body)
	var nums []int
	for _, b := range bad {
		nums = append(nums, b.Number)
	}
	if !slices.Equal(nums, []int{3, 4, 5}) {
		t.Fatalf("bad lines %v, want [3 4 5]: %v", nums, bad)
	}
	for i, want := range []string{"already on line 2", "twice (also line 2)", "also on line 2"} {
		if !strings.Contains(bad[i].Error(), want) {
			t.Errorf("line %d: %v, want %q", bad[i].Number, bad[i], want)
		}
	}
	if len(lines) != 3 {
		t.Errorf("%d valid lines, want 3", len(lines))
	}
}

func TestThreeBadAmongHundred(t *testing.T) {
	var b strings.Builder
	b.WriteString(header)
	badAt := map[int]bool{17: true, 58: true, 101: true} // file line numbers
	for line := 2; line <= 101; line++ {
		switch {
		case !badAt[line]:
			fmt.Fprintf(&b, "mysql,db_%d,src,dst,db-%d.example.test\n", line, line)
		case line == 17:
			b.WriteString("oracle,x,src,dst,\n")
		case line == 58:
			b.WriteString("mysql,y,src,src,\n")
		default:
			b.WriteString("postgres," + strings.Repeat("z", 70) + ",src,dst,\n")
		}
	}
	lines, bad := parseErrs(t, b.String())
	var nums []int
	for _, e := range bad {
		nums = append(nums, e.Number)
	}
	if !slices.Equal(nums, []int{17, 58, 101}) {
		t.Fatalf("bad lines %v, want [17 58 101]", nums)
	}
	if len(lines) != 97 {
		t.Fatalf("%d good lines, want 97", len(lines))
	}
}

func TestFormats(t *testing.T) {
	t.Run("CRLF, BOM, comments, reordered header, quoted newline", func(t *testing.T) {
		body := "\xef\xbb\xbfsource,engine,database,dns_name,destination\r\n" +
			"# staging servers first\r\n" +
			"DB1,MariaDB,\"we\"\"ird,\nname\",Shop.Example.Test.,db2\r\n" +
			"db1,postgresql,\"trailing \",,db2\r\n" +
			"db1,mysql,after,,db3\r\n"
		lines, err := planfile.Parse(strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		want := []planfile.Line{
			{Number: 3, Planned: statemachine.Planned{Engine: "mysql", DatabaseName: "we\"ird,\nname", Source: "db1", Destination: "db2", DNSName: "shop.example.test"}},
			{Number: 5, Planned: statemachine.Planned{Engine: "postgres", DatabaseName: "trailing ", Source: "db1", Destination: "db2"}},
			{Number: 6, Planned: statemachine.Planned{Engine: "mysql", DatabaseName: "after", Source: "db1", Destination: "db3"}},
		}
		if !slices.Equal(lines, want) {
			t.Fatalf("got  %+v\nwant %+v", lines, want)
		}
	})
	for _, tc := range []struct{ name, body, want string }{
		{"no header", "mysql,shop,db1,db2,\n", "no header"},
		{"header missing a column", "engine,database,source,destination\nmysql,a,b,c\n", "lacks column(s) dns_name"},
		{"unknown column", header[:len(header)-1] + ",size\nmysql,a,b,c,,1\n", `unknown column "size"`},
		{"duplicate column", "engine,engine,database,source,destination,dns_name\n", "appears twice"},
		{"empty file", "", "empty"},
		{"header only", header, "no databases"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := planfile.Parse(strings.NewReader(tc.body))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	t.Run("broken quoting stops with the line", func(t *testing.T) {
		_, bad := parseErrs(t, header+"mysql,ok,db1,db2,\nmysql,\"open,db1,db2,\n")
		if len(bad) != 1 || bad[0].Number != 3 || !strings.Contains(bad[0].Error(), "not valid CSV") {
			t.Fatalf("%v", bad)
		}
	})
}

func TestModeColumn(t *testing.T) {
	in := "engine,database,source,destination,dns_name,mode\n" +
		"postgres,a,s1,d1,,online\n" +
		"postgres,b,s1,d1,, AUTO \n" +
		"mysql,c,s1,d1,,dump\n" +
		"mysql,d,s1,d1,,\n"
	lines, err := planfile.Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []statemachine.Mode{statemachine.ModeOnline, statemachine.ModeAuto, statemachine.ModeDump, ""}
	for i, l := range lines {
		if l.Mode != want[i] {
			t.Errorf("line %d: mode %q, want %q", l.Number, l.Mode, want[i])
		}
	}
	bad := "engine,database,source,destination,dns_name,mode\nmysql,x,s1,d1,,online\npostgres,y,s1,d1,,fast\n"
	_, err = planfile.Parse(strings.NewReader(bad))
	var errs planfile.Errors
	if !errors.As(err, &errs) || len(errs) != 1 || !strings.Contains(errs[0].Error(), `line 3`) || !strings.Contains(errs[0].Error(), `unknown mode "fast"`) {
		t.Errorf("bad modes: %v", err)
	}
	// A file without the column loads as before.
	old, err := planfile.Parse(strings.NewReader("engine,database,source,destination,dns_name\npostgres,a,s1,d1,\n"))
	if err != nil || len(old) != 1 || old[0].Mode != "" {
		t.Errorf("old file: %+v, %v", old, err)
	}
}
