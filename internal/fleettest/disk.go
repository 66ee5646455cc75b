package fleettest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
)

// mountTmpfs mounts a tmpfs (1 GiB at most until capTmpfs) at dir, for a
// server whose disk is to fill up. It needs root; the error says so.
// umount unmounts it, lazily if it is still busy.
func mountTmpfs(ctx context.Context, dir string) (umount func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, "mount", "-t", "tmpfs", "-o", "size=1g,mode=0755", "tmpfs", dir).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mount a tmpfs at %s (needs root): %w: %s", dir, err, strings.TrimSpace(string(out)))
	}
	return func() {
		if exec.Command("umount", dir).Run() != nil {
			_ = exec.Command("umount", "-l", dir).Run()
		}
	}, nil
}

// capTmpfs shrinks the tmpfs at dir so that free bytes are left on it
// beyond what it holds now.
func capTmpfs(ctx context.Context, dir string, free int64) error {
	used, _, err := diskUsage(dir)
	if err != nil {
		return err
	}
	size := used + free
	if out, err := exec.CommandContext(ctx, "mount", "-o", fmt.Sprintf("remount,size=%d", size), dir).CombinedOutput(); err != nil {
		return fmt.Errorf("resize the tmpfs at %s to %d bytes: %w: %s", dir, size, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// diskUsage is how many bytes the file system at dir holds, and how many
// are free.
func diskUsage(dir string) (used, free int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Blocks-st.Bfree) * st.Bsize, int64(st.Bavail) * st.Bsize, nil
}

// DiskFree is how many bytes are free on the server's data directory's
// file system.
func (m *MariaDB) DiskFree() (int64, error) {
	_, free, err := diskUsage(m.dataDir())
	return free, err
}

// GrowDisk gives a size-capped data directory (MariaDBConfig.DiskFree)
// free bytes beyond what it holds now: an operator freeing space.
func (m *MariaDB) GrowDisk(ctx context.Context, free int64) error {
	return capTmpfs(ctx, m.dataDir(), free)
}
