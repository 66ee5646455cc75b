// Package procid names a running process well enough that a later process
// of the same machine can tell, for sure, that it is gone: a restarted
// scheduler or agent takes over at once from a predecessor that crashed,
// instead of waiting out its lease.
//
// A pid alone does not do: pids are reused, and a machine that rebooted
// hands out the same small pids again (in a container, the agent is pid 1
// every time). An Identity adds what tells two processes with one pid apart:
// the kernel's boot ID, the process's start time (clock ticks since boot,
// /proc/<pid>/stat field 22) and its pid namespace.
//
// Gone answers only what it can know: a process on another machine, or in
// another pid namespace, is never "gone" to it — the caller then waits for
// the lease, as before.
package procid

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Identity names one process. Its String form is stored in the state
// database (the scheduler lease, the agent registry); Parse reads it back.
type Identity struct {
	// Machine is the host name.
	Machine string
	// Namespace is the pid namespace ("pid:[4026531836]"); "" when it
	// cannot be read.
	Namespace string
	// Boot is the kernel's boot ID; "" when it cannot be read (systemd's
	// ProcSubset=pid hides /proc/sys).
	Boot string
	PID  int
	// Start is the process's start time in clock ticks since boot; 0 when
	// unknown.
	Start uint64
}

// The files read, variables so that tests can point them elsewhere.
var (
	procRoot = "/proc"
	bootFile = "/proc/sys/kernel/random/boot_id"
)

// Self returns the identity of the running process.
func Self() Identity {
	host, _ := os.Hostname()
	id := Identity{Machine: host, PID: os.Getpid()}
	id.Namespace, _ = os.Readlink(procRoot + "/self/ns/pid")
	if b, err := os.ReadFile(bootFile); err == nil {
		id.Boot = strings.TrimSpace(string(b))
	}
	id.Start, _ = startTicks(id.PID)
	return id
}

// Of returns the identity of process pid of this machine, as that
// process's own Self would have it.
func Of(pid int) (Identity, error) {
	id := Self()
	id.PID = pid
	var err error
	if id.Start, err = startTicks(pid); err != nil {
		return Identity{}, fmt.Errorf("process %d: %w", pid, err)
	}
	return id, nil
}

// String is the stored form: space-separated fields, "-" for an unknown
// one (host names and namespace links hold no spaces).
func (id Identity) String() string {
	f := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	return fmt.Sprintf("%s %s %s %d %d", f(id.Machine), f(id.Namespace), f(id.Boot), id.PID, id.Start)
}

// Parse reads what String wrote; ok is false for "" (a row written by a
// version that did not record it) or anything else it cannot read.
func Parse(s string) (Identity, bool) {
	parts := strings.Fields(s)
	if len(parts) != 5 {
		return Identity{}, false
	}
	u := func(s string) string {
		if s == "-" {
			return ""
		}
		return s
	}
	pid, err1 := strconv.Atoi(parts[3])
	start, err2 := strconv.ParseUint(parts[4], 10, 64)
	if err1 != nil || err2 != nil || pid <= 0 || parts[0] == "-" {
		return Identity{}, false
	}
	return Identity{Machine: parts[0], Namespace: u(parts[1]), Boot: u(parts[2]), PID: pid, Start: start}, true
}

// Gone reports whether the process id names has certainly ended, judged
// from self (Self()), with why. It is false whenever that cannot be known
// from here: another machine, another pid namespace, or a process with
// that pid and start time running now.
func (id Identity) Gone(self Identity) (bool, string) {
	switch {
	case id.Machine != self.Machine:
		return false, fmt.Sprintf("it ran on machine %s, not this one (%s)", id.Machine, self.Machine)
	case id.Namespace != self.Namespace:
		// Two containers of one machine may share a host name; their
		// pids mean nothing to each other.
		return false, fmt.Sprintf("it ran in another pid namespace (%s, this one is %s)", orUnknown(id.Namespace), orUnknown(self.Namespace))
	case id.Boot != "" && self.Boot != "" && id.Boot != self.Boot:
		return true, "the machine has rebooted since"
	}
	start, err := startTicks(id.PID)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return true, fmt.Sprintf("no process has pid %d", id.PID)
	case err != nil:
		// /proc unreadable: ask the kernel whether the pid exists.
		if kerr := syscall.Kill(id.PID, 0); errors.Is(kerr, syscall.ESRCH) {
			return true, fmt.Sprintf("no process has pid %d", id.PID)
		}
		return false, fmt.Sprintf("pid %d exists and its start time cannot be read (%v)", id.PID, err)
	case id.Start != 0 && start != id.Start:
		return true, fmt.Sprintf("pid %d is another process now (started at tick %d, not %d)", id.PID, start, id.Start)
	case id.PID == self.PID && start == self.Start && (id.Boot == "" || self.Boot == ""):
		// This very pid and start time, but not this process (the caller
		// asks about a process it knows is not itself): one of an earlier
		// boot that began exactly as this one did.
		return true, "the machine has rebooted since (this process now has its pid and start time)"
	case id.Start == 0:
		return false, fmt.Sprintf("pid %d runs and no start time was recorded to tell it apart", id.PID)
	}
	return false, fmt.Sprintf("pid %d still runs", id.PID)
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// startTicks reads field 22 (starttime) of /proc/<pid>/stat. The second
// field, the command name, is in parentheses and may hold spaces and
// parentheses itself: the fields are counted after its last ')'.
func startTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("%s/%d/stat", procRoot, pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fields := strings.Fields(s[i+1:])
	// fields[0] is field 3 (state): starttime, field 22, is fields[19].
	if len(fields) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields)+2)
	}
	return strconv.ParseUint(fields[19], 10, 64)
}
