package procid

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestStringParse(t *testing.T) {
	self := Self()
	if self.Machine == "" || self.PID != os.Getpid() || self.Start == 0 {
		t.Fatalf("Self() = %+v: want the host name, this pid and a start time", self)
	}
	got, ok := Parse(self.String())
	if !ok || got != self {
		t.Fatalf("Parse(%q) = %+v, %v; want %+v", self.String(), got, ok, self)
	}
	bare := Identity{Machine: "db-7", PID: 42}
	if got, ok := Parse(bare.String()); !ok || got != bare {
		t.Fatalf("unknown fields: Parse(%q) = %+v, %v", bare.String(), got, ok)
	}
	for _, bad := range []string{"", "db-7", "db-7 - - x 1", "db-7 - - 0 1", "- - - 5 1", "a b c 1 2 3"} {
		if _, ok := Parse(bad); ok {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

// child starts a process that lives until the test ends or it is killed,
// and returns it with its identity.
func child(t *testing.T) (*exec.Cmd, Identity) {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	id, err := Of(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return cmd, id
}

type goneCase struct {
	name string
	id   Identity
	gone bool
	why  string
}

func TestGone(t *testing.T) {
	self := Self()
	cmd, live := child(t)

	cases := []goneCase{
		{"LiveProcess", live, false, "still runs"},
		{"PidReused", Identity{self.Machine, self.Namespace, self.Boot, live.PID, live.Start + 1}, true, "another process now"},
		{"OtherMachine", Identity{"elsewhere", self.Namespace, self.Boot, 1, 1}, false, "not this one"},
		{"OtherNamespace", Identity{self.Machine, "pid:[1]", self.Boot, live.PID, 1}, false, "another pid namespace"},
		{"NoStartRecorded", Identity{self.Machine, self.Namespace, self.Boot, live.PID, 0}, false, "no start time was recorded"},
	}
	if self.Boot != "" {
		// With the boot ID known, this process is told from an earlier
		// boot's one that had its pid and start time.
		cases = append(cases,
			goneCase{"ItSelf", self, false, "still runs"},
			goneCase{"Rebooted", Identity{self.Machine, self.Namespace, "another-boot", live.PID, live.Start}, true, "rebooted"})
	}
	// An earlier boot's process that had this very pid and start time:
	// with the boot ID unknown, only "it is not me" tells it apart.
	earlier := self
	earlier.Boot = ""
	cases = append(cases, goneCase{"EarlierBootSamePid", earlier, true, "rebooted"})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			gone, why := c.id.Gone(self)
			if gone != c.gone || !strings.Contains(why, c.why) {
				t.Errorf("Gone(%s) = %v, %q; want %v, %q", c.id, gone, why, c.gone, c.why)
			}
		})
	}

	t.Run("Killed", func(t *testing.T) {
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		gone, why := live.Gone(self)
		if !gone || !strings.Contains(why, "no process has pid") {
			t.Errorf("a killed process: Gone = %v, %q", gone, why)
		}
	})
}

func TestStartTicksOddCommandName(t *testing.T) {
	dir := t.TempDir()
	old := procRoot
	procRoot = dir
	t.Cleanup(func() { procRoot = old })
	if err := os.MkdirAll(filepath.Join(dir, "77"), 0o700); err != nil {
		t.Fatal(err)
	}
	// A command name with spaces and parentheses: "a) (b c".
	stat := "77 (a) (b c) S 1 77 77 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 200 18446744073709551615\n"
	if err := os.WriteFile(filepath.Join(dir, "77", "stat"), []byte(stat), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := startTicks(77); err != nil || got != 98765 {
		t.Fatalf("startTicks = %d, %v; want 98765", got, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "77", "stat"), []byte("77 (x) S 1 2"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := startTicks(77); err == nil {
		t.Fatal("a short stat line was accepted")
	}
}
