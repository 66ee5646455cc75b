// Package planfile reads the fleet plan that `migrate plan --file` takes: a
// CSV file with a header naming the columns engine, database, source,
// destination and dns_name, and optionally mode (any order). Every line is validated and every bad
// line reported with its number before anything is planned.
package planfile

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	"github.com/fleetmigrate/fleetmigrate/internal/ident"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// Columns are the header's required column names.
var Columns = []string{"engine", "database", "source", "destination", "dns_name"}

// Optional are the columns a header may name besides Columns: mode (dump,
// online or auto; an empty field or no column takes the configured default).
var Optional = []string{"mode"}

// Line is one valid line of the file.
type Line struct {
	// Number is the line's number in the file (1 is the header).
	Number int
	statemachine.Planned
}

// LineError is one bad line and everything wrong with it.
type LineError struct {
	Number   int
	Problems []string
}

func (e LineError) Error() string {
	return fmt.Sprintf("line %d: %s", e.Number, strings.Join(e.Problems, "; "))
}

// Errors is every bad line of a file.
type Errors []LineError

func (e Errors) Error() string {
	return fmt.Sprintf("%d bad lines", len(e))
}

// Parse reads and validates the whole file. It returns the valid lines and,
// if any line is bad, an Errors listing each bad line (the valid lines are
// then for information only: the plan must not be applied). A file that is
// not a readable CSV with the right header returns a plain error.
func Parse(r io.Reader) ([]Line, error) {
	raw, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	raw = bytes.TrimPrefix(raw, []byte("\xef\xbb\xbf")) // a spreadsheet's BOM
	cr := csv.NewReader(bytes.NewReader(raw))
	cr.FieldsPerRecord = -1
	cr.Comment = '#'
	cr.ReuseRecord = true

	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, errors.New("the file is empty: it needs a header line (" + strings.Join(Columns, ",") + ") and one line per database")
	}
	if err != nil {
		return nil, fmt.Errorf("read the header: %w", err)
	}
	col, err := headerIndex(header)
	if err != nil {
		line, _ := cr.FieldPos(0)
		return nil, fmt.Errorf("line %d: %w", line, err)
	}

	var (
		lines []Line
		bad   Errors
		v     = newValidator()
	)
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				bad = append(bad, LineError{Number: pe.StartLine, Problems: []string{"not valid CSV: " + pe.Err.Error() + " (reading stopped here)"}})
				break
			}
			return nil, err
		}
		number, _ := cr.FieldPos(0)
		if len(rec) != len(col) {
			bad = append(bad, LineError{Number: number, Problems: []string{fmt.Sprintf("has %d fields, the header has %d", len(rec), len(col))}})
			continue
		}
		field := func(name string) string {
			if i, ok := col[name]; ok {
				return rec[i]
			}
			return ""
		}
		l, problems := v.line(number, field("engine"), field("database"), field("source"), field("destination"), field("dns_name"))
		problems = append(problems, lineMode(&l, field("mode"))...)
		if len(problems) > 0 {
			bad = append(bad, LineError{Number: number, Problems: problems})
			continue
		}
		lines = append(lines, l)
	}
	if len(lines) == 0 && len(bad) == 0 {
		return nil, errors.New("the file has a header but no databases")
	}
	if len(bad) > 0 {
		return lines, bad
	}
	return lines, nil
}

func headerIndex(header []string) (map[string]int, error) {
	col := map[string]int{}
	for i, h := range header {
		name := strings.ToLower(strings.TrimSpace(h))
		if !slices.Contains(Columns, name) && !slices.Contains(Optional, name) {
			if i == 0 && !slices.ContainsFunc(header, func(s string) bool { return slices.Contains(Columns, strings.ToLower(strings.TrimSpace(s))) }) {
				return nil, fmt.Errorf("no header: the first line must name the columns, e.g. %s", strings.Join(Columns, ","))
			}
			return nil, fmt.Errorf("unknown column %q in the header (want %s, and optionally %s)", h, strings.Join(Columns, ", "), strings.Join(Optional, ", "))
		}
		if _, dup := col[name]; dup {
			return nil, fmt.Errorf("column %q appears twice in the header", name)
		}
		col[name] = i
	}
	var missing []string
	for _, c := range Columns {
		if _, ok := col[c]; !ok {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("the header lacks column(s) %s (want %s)", strings.Join(missing, ", "), strings.Join(Columns, ", "))
	}
	return col, nil
}

var (
	hostID   = regexp.MustCompile(`^[a-z0-9]([a-z0-9._:-]{0,253}[a-z0-9])?$`)
	dnsLabel = regexp.MustCompile(`^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$`)
)

// validator checks lines and remembers what earlier lines claimed, to find
// duplicates within the file.
type validator struct {
	bySource map[[3]string]int // source, engine, database → line
	byDest   map[[3]string]int // destination, engine, database → line
	byDNS    map[string]int
}

func newValidator() *validator {
	return &validator{bySource: map[[3]string]int{}, byDest: map[[3]string]int{}, byDNS: map[string]int{}}
}

func (v *validator) line(number int, engine, database, source, dest, dnsName string) (Line, []string) {
	var problems []string
	l := Line{Number: number}

	eng, err := ParseEngine(engine)
	if err != nil {
		problems = append(problems, err.Error())
	}
	l.Engine = eng

	// The database name is taken byte for byte: spaces and quotes are legal.
	l.DatabaseName = database
	switch {
	case database == "":
		problems = append(problems, "database is empty")
	case eng == statemachine.EngineMySQL:
		if err := ident.ValidateMySQL(database); err != nil {
			problems = append(problems, fmt.Sprintf("database %q: %v", database, err))
		}
	case eng == statemachine.EnginePostgres:
		if err := ident.ValidatePostgres(database); err != nil {
			problems = append(problems, fmt.Sprintf("database %q: %v", database, err))
		}
	}

	l.Source, l.Destination = normHost(source), normHost(dest)
	for _, h := range []struct{ what, raw, norm string }{{"source", source, l.Source}, {"destination", dest, l.Destination}} {
		switch {
		case h.norm == "":
			problems = append(problems, h.what+" is empty")
		case !hostID.MatchString(h.norm):
			problems = append(problems, fmt.Sprintf("%s %q is not a host ID (letters, digits, '.', '-', '_', ':', at most 255)", h.what, h.raw))
		}
	}
	if l.Source != "" && l.Source == l.Destination {
		problems = append(problems, fmt.Sprintf("source and destination are both %q", l.Source))
	}

	l.DNSName = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(dnsName)), ".")
	if l.DNSName != "" {
		if err := validDNSName(l.DNSName); err != nil {
			problems = append(problems, fmt.Sprintf("dns_name %q: %v", dnsName, err))
		}
	}
	if len(problems) > 0 {
		return l, problems
	}

	srcKey := [3]string{l.Source, string(l.Engine), l.DatabaseName}
	dstKey := [3]string{l.Destination, string(l.Engine), l.DatabaseName}
	if prev, ok := v.bySource[srcKey]; ok {
		problems = append(problems, fmt.Sprintf("database %q on %s is already on line %d", l.DatabaseName, l.Source, prev))
	} else if prev, ok := v.byDest[dstKey]; ok {
		problems = append(problems, fmt.Sprintf("destination %s would receive a database %q twice (also line %d)", l.Destination, l.DatabaseName, prev))
	} else {
		v.bySource[srcKey], v.byDest[dstKey] = number, number
	}
	if l.DNSName != "" {
		if prev, ok := v.byDNS[l.DNSName]; ok {
			problems = append(problems, fmt.Sprintf("dns_name %s is also on line %d: moving one database would repoint the other's name", l.DNSName, prev))
		} else {
			v.byDNS[l.DNSName] = number
		}
	}
	return l, problems
}

// lineMode reads a line's mode field into l: empty leaves the mode to the
// configured default.
func lineMode(l *Line, field string) []string {
	if strings.TrimSpace(field) == "" {
		return nil
	}
	m, err := statemachine.ParseMode(field)
	if err != nil {
		return []string{err.Error()}
	}
	l.Mode = m
	return nil
}

// ParseEngine accepts mysql (and mariadb) and postgres (and postgresql, pg).
func ParseEngine(s string) (statemachine.Engine, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "mysql", "mariadb":
		return statemachine.EngineMySQL, nil
	case "postgres", "postgresql", "pg":
		return statemachine.EnginePostgres, nil
	case "":
		return "", errors.New("engine is empty (want mysql or postgres)")
	default:
		return "", fmt.Errorf("unknown engine %q (want mysql or postgres)", s)
	}
}

func normHost(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

func validDNSName(name string) error {
	if len(name) > 253 {
		return fmt.Errorf("%d characters long, at most 253", len(name))
	}
	labels := strings.Split(name, ".")
	if len(labels) < 2 {
		return errors.New("not a fully qualified name (it needs a zone, e.g. shop.db.example.com)")
	}
	for _, l := range labels {
		if !dnsLabel.MatchString(l) {
			return fmt.Errorf("label %q is not valid (letters, digits, '-', '_', 1 to 63 characters, no leading or trailing '-')", l)
		}
	}
	return nil
}
