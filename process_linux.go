package molt

import (
	"os"

	"golang.org/x/sys/unix"
)

// warmProcessStart makes the os package's one-time check of pidfd
// support happen now, in the background, instead of inside the first
// os/exec Start of this process, which is an upgrade's exec: that check
// starts and reaps a process of its own (clone with CLONE_PIDFD), and
// every generation's one upgrade paid it, measured at 0.1-0.2 ms of the
// parent's part before the exec returns. os.FindProcess runs the same
// check.
func warmProcessStart() {
	if p, err := os.FindProcess(os.Getpid()); err == nil {
		p.Release()
	}
}

// waitExitedNoReap blocks until the process has exited, leaving it
// unreaped (waitid with WNOWAIT), and reports true; see successor.wait.
func waitExitedNoReap(pid int) bool {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return err == nil
		}
	}
}
