package fleettest

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ProcStat is what benchmarks read of a process from /proc/<pid>/stat:
// its parent, and its CPU seconds (own, and of its reaped children).
type ProcStat struct {
	PPID             int
	CPU, ChildrenCPU float64
}

// ReadProcStat reads /proc/<pid>/stat (Linux; USER_HZ is 100).
func ReadProcStat(pid int) (ProcStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ProcStat{}, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name may hold spaces
	if i < 0 || i+2 > len(s) {
		return ProcStat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 15 {
		return ProcStat{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	// f[1] ppid; f[11..14] utime stime cutime cstime, in clock ticks.
	ticks := func(k int) float64 {
		v, _ := strconv.ParseFloat(f[k], 64)
		return v / 100
	}
	ppid, _ := strconv.Atoi(f[1])
	return ProcStat{PPID: ppid, CPU: ticks(11) + ticks(12), ChildrenCPU: ticks(13) + ticks(14)}, nil
}

// TreeCPU is the CPU seconds of pid, of its reaped children and of its live
// children (PostgreSQL's backends are processes, MariaDB's threads).
func TreeCPU(pid int) float64 {
	total := 0.0
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := ReadProcStat(p)
		switch {
		case err != nil:
		case p == pid:
			total += st.CPU + st.ChildrenCPU
		case st.PPID == pid:
			total += st.CPU
		}
	}
	return total
}
