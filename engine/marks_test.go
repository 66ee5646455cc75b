package engine

import (
	"slices"
	"strings"
	"testing"
)

func TestMarksChanged(t *testing.T) {
	base := &Marks{Epoch: "e1", Schema: "s1", Tables: map[string]string{"a": "1", "b": "2", "c": Unknown}}
	with := func(f func(m *Marks)) *Marks {
		m := &Marks{Epoch: base.Epoch, Schema: base.Schema, Tables: map[string]string{}}
		for k, v := range base.Tables {
			m.Tables[k] = v
		}
		f(m)
		return m
	}
	for _, c := range []struct {
		name   string
		was    *Marks
		now    *Marks
		tables []string
		all    string // a word of the reason, "" when the marks compare
	}{
		{"unchanged: only the unknown one", base, with(func(*Marks) {}), []string{"c"}, ""},
		{"one written", base, with(func(m *Marks) { m.Tables["b"] = "3" }), []string{"b", "c"}, ""},
		{"one dropped, one created", base, with(func(m *Marks) { delete(m.Tables, "a"); m.Tables["d"] = "1" }), []string{"a", "c", "d"}, ""},
		{"restart", base, with(func(m *Marks) { m.Epoch = "e2" }), nil, "started again"},
		{"schema", base, with(func(m *Marks) { m.Schema = "s2" }), nil, "schema"},
		{"none at the dump", nil, base, nil, "no change marks"},
		{"none now", base, nil, nil, "no change marks"},
	} {
		tables, all := c.was.Changed(c.now)
		if !slices.Equal(tables, c.tables) {
			t.Errorf("%s: tables %q, want %q", c.name, tables, c.tables)
		}
		if (all == "") != (c.all == "") || !strings.Contains(all, c.all) {
			t.Errorf("%s: all %q, want one saying %q", c.name, all, c.all)
		}
	}
}
