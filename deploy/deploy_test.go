// Package deploy_test checks the files in deploy/ against the tools that
// will load them and against the code: the systemd units pass
// `systemd-analyze verify` (and a security exposure bound), the alert rules
// pass `promtool check rules` and their own `promtool test rules`, and every
// metric the rules and the Grafana dashboard use is one the binaries
// export.
package deploy_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetmigrate/fleetmigrate/agent"
	"github.com/fleetmigrate/fleetmigrate/agent/steps"
	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/scheduler"
)

func TestMain(m *testing.M) { fleettest.Main(m) }

// tool finds a program that `make deps` installs; missing is a failure
// saying how to get it, never a skip.
func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	for _, dir := range []string{"", "/usr/bin", "/usr/sbin", "/bin"} {
		p := name
		if dir != "" {
			p = filepath.Join(dir, name)
		}
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Fatalf("%s is not installed: run `make deps` (Debian package %s)", name, pkg)
	return ""
}

func TestSystemdUnits(t *testing.T) {
	fleettest.Integration(t)
	t.Parallel()
	analyze := tool(t, "systemd-analyze", "systemd")
	// The units run /usr/local/bin/...: verify checks that the program
	// exists, so point them at freshly built binaries in a copy.
	bins := map[string]string{
		"migrate":       fleettest.Build(t, "../cmd/migrate"),
		"migrate-agent": fleettest.Build(t, "../cmd/migrate-agent"),
	}
	dir := t.TempDir()
	var units []string
	for _, name := range []string{"migrate-agent.service", "migrate-scheduler.service"} {
		body, err := os.ReadFile(filepath.Join("systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		s := string(body)
		for prog, bin := range bins {
			s = strings.ReplaceAll(s, "/usr/local/bin/"+prog+" ", bin+" ")
		}
		for _, l := range strings.Split(s, "\n") {
			if strings.HasPrefix(l, "ExecStart=/usr/local/bin/") {
				t.Fatalf("%s: an ExecStart the test does not know: %s", name, l)
			}
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		units = append(units, p)
		if !strings.Contains(s, "EnvironmentFile=") {
			t.Errorf("%s: secrets must come from an EnvironmentFile", name)
		}
	}
	// verify exits 0 on warnings (unknown keys, bad values): any output is
	// a failure.
	out, err := exec.Command(analyze, append([]string{"verify"}, units...)...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, u := range units {
		// Exposure is 0 (locked down) to 10 (unsafe); both units are
		// under 2.
		out, err := exec.Command(analyze, "security", "--offline=yes", "--threshold=20", u).CombinedOutput()
		if err != nil {
			t.Errorf("systemd-analyze security %s: exposure above 2.0 (%v)\n%s", filepath.Base(u), err, lastLines(string(out), 3))
		}
	}
}

func TestAlertRules(t *testing.T) {
	fleettest.Integration(t)
	t.Parallel()
	promtool := tool(t, "promtool", "prometheus")
	for _, args := range [][]string{{"check", "rules", "alerts.yaml"}, {"test", "rules", "alerts_test.yaml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	rules, err := os.ReadFile("prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// What issue 9 asks the rules to cover.
	for _, alert := range []string{"FleetmigrateStopSwitchTripped", "FleetmigrateFailedRowsRising", "FleetmigrateAgentSilent",
		"FleetmigrateRowStuck", "FleetmigrateWriteBlockedTooLong", "FleetmigrateStreamWALRetained", "FleetmigrateStreamSlotNotConsumed", "FleetmigrateStreamNotConverging"} {
		if !strings.Contains(string(rules), "alert: "+alert+"\n") {
			t.Errorf("alerts.yaml has no %s", alert)
		}
	}
}

// exported returns the names of the metrics the binaries register.
func exported(t *testing.T) []string {
	reg := prometheus.NewRegistry()
	scheduler.NewMetrics(reg)
	agent.NewMetrics(reg)
	reg.MustRegister((&steps.Postgres{}).Collector(), steps.StreamGauges("postgres"))
	ch := make(chan *prometheus.Desc, 100)
	go func() {
		reg.Describe(ch)
		close(ch)
	}()
	re := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	var names []string
	for d := range ch {
		if m := re.FindStringSubmatch(d.String()); m != nil {
			names = append(names, m[1])
		}
	}
	if len(names) < 10 {
		t.Fatalf("only %d metrics described: %v", len(names), names)
	}
	return names
}

// used returns the fleetmigrate_ metric names in text, without histogram
// suffixes.
func used(text string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`fleetmigrate_[a-z_]+`).FindAllString(text, -1) {
		for _, suf := range []string{"_bucket", "_count", "_sum"} {
			m = strings.TrimSuffix(m, suf)
		}
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out
}

func TestRulesAndDashboardUseExportedMetrics(t *testing.T) {
	t.Parallel()
	have := exported(t)
	rules, err := os.ReadFile("prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dash, err := os.ReadFile("grafana/fleetmigrate.json")
	if err != nil {
		t.Fatal(err)
	}
	var board struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(dash, &board); err != nil {
		t.Fatalf("grafana/fleetmigrate.json: %v", err)
	}
	var exprs []string
	titles := ""
	for _, p := range board.Panels {
		titles += p.Title + "\n"
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	// What the issue asks the dashboard to show.
	for _, want := range []string{"In flight", "Throughput", "Rows by status", "Step duration", "Write-blocked"} {
		if !strings.Contains(titles, want) {
			t.Errorf("the dashboard has no %q panel; panels:\n%s", want, titles)
		}
	}
	for file, text := range map[string]string{"alerts.yaml": string(rules), "fleetmigrate.json": strings.Join(exprs, "\n")} {
		for _, m := range used(text) {
			if !slices.Contains(have, m) {
				t.Errorf("%s uses %s, which no binary exports (exported: %v)", file, m, have)
			}
		}
	}
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}
