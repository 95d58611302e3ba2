package handoff

import (
	"os"

	"golang.org/x/sys/unix"
)

// peerPID returns the process ID the kernel recorded for the peer of the
// Unix socket fd (LOCAL_PEERPID): for a socketpair, the process that
// created the pair.
func peerPID(fd int) (int, error) {
	pid, err := unix.GetsockoptInt(fd, unix.SOL_LOCAL, unix.LOCAL_PEERPID)
	if err != nil {
		return -1, os.NewSyscallError("getsockopt(LOCAL_PEERPID)", err)
	}
	return pid, nil
}

// isZombie is not known here without sysctl: a zombie peer counts as a
// running one, and its successor is refused until it is reaped.
func isZombie(int) bool { return false }
