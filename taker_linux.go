package molt

import (
	"time"

	"golang.org/x/sys/unix"
)

// openPidfd opens a pidfd for pid (Linux 5.3 and later); -1 without one.
func openPidfd(pid int) int {
	if pid <= 0 {
		return -1
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1
	}
	unix.CloseOnExec(fd)
	return fd
}

// pollPidfd waits up to d for the process of pidfd to exit.
func pollPidfd(pidfd int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		ms := int(time.Until(deadline).Milliseconds())
		n, err := unix.Poll(fds, max(ms, 0))
		switch {
		case err == unix.EINTR && time.Now().Before(deadline):
			continue
		case err != nil:
			return false
		}
		return n > 0
	}
}

// pidfdKill sends SIGKILL through pidfd.
func pidfdKill(pidfd int) { unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0) }
