package planfile_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/fleetmigrate/fleetmigrate/internal/ident"
	"github.com/fleetmigrate/fleetmigrate/internal/planfile"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// FuzzParse: whatever the file holds, Parse never panics; every line it
// accepts names a valid database of a known engine, a source other than
// its destination (an empty DNS name means no DNS step); a file with a bad line is refused with
// the lines that are bad.
func FuzzParse(f *testing.F) {
	f.Add(header + "mysql,shop,db1,db2,shop.db.example.test\n")
	f.Add(header + "postgres,\"a,\"\"b\",db1,db2,x.example.test\n# comment\nmysql,c,db1,db1,y.example.test\n")
	f.Add("\xef\xbb\xbf" + header + "MySQL , shop ,DB1,db2,shop.example.test\n")
	f.Add("dns_name,destination,source,database,engine\nx.example.test,b,a,d,postgres\n")
	f.Add(header + "mysql,\"unterminated\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, file string) {
		lines, err := planfile.Parse(strings.NewReader(file))
		var bad planfile.Errors
		if err != nil && errors.As(err, &bad) && len(bad) == 0 {
			t.Fatal("refused with no bad line")
		}
		for _, l := range lines {
			valid := ident.ValidatePostgres
			switch l.Engine {
			case statemachine.EngineMySQL:
				valid = ident.ValidateMySQL
			case statemachine.EnginePostgres:
			default:
				t.Fatalf("line %d: engine %q", l.Number, l.Engine)
			}
			if err := valid(l.DatabaseName); err != nil {
				t.Fatalf("line %d: accepted database %q: %v", l.Number, l.DatabaseName, err)
			}
			if l.Source == "" || l.Destination == "" || l.Source == l.Destination {
				t.Fatalf("line %d: accepted %+v", l.Number, l.Planned)
			}
		}
	})
}
