//go:build unix

package molt

import (
	"time"

	"golang.org/x/sys/unix"
)

// takerHandle is the serving generation's handle on a taker: a successor
// it did not start, known by the PID its connection came from (the
// kernel's record at connect, SO_PEERCRED or LOCAL_PEERPID) and, on
// Linux, by a pidfd opened at once, so that a signal can never reach a
// process that took over a reused PID.
type takerHandle struct {
	pid   int
	pidfd int // -1 without one
}

func newTakerHandle(pid int) *takerHandle {
	return &takerHandle{pid: pid, pidfd: openPidfd(pid)}
}

// waitGone waits up to d for the taker to exit and reports whether it did.
// A taker whose PID is unknown (0: it runs in a PID namespace this one
// cannot see) is not waited for.
func (t *takerHandle) waitGone(d time.Duration) bool {
	if t.pid <= 0 {
		return false
	}
	if t.pidfd >= 0 {
		return pollPidfd(t.pidfd, d)
	}
	deadline := time.Now().Add(d)
	for {
		if unix.Kill(t.pid, 0) == unix.ESRCH {
			return true
		}
		if !time.Now().Before(deadline) {
			return false
		}
		// Not our child: there is nothing to wait on but its PID.
		time.Sleep(10 * time.Millisecond)
	}
}

// kill ends the taker (not its process group: the group is not ours).
// Without its PID nothing is sent: kill(0) would signal this process's
// own group.
func (t *takerHandle) kill() {
	if t.pid <= 0 {
		return
	}
	if t.pidfd >= 0 {
		pidfdKill(t.pidfd)
		return
	}
	unix.Kill(t.pid, unix.SIGKILL)
}

// close forgets the taker: it serves now, and nothing here will signal it.
func (t *takerHandle) close() {
	if t.pidfd >= 0 {
		unix.Close(t.pidfd)
		t.pidfd = -1
	}
}

func setCloseOnExec(fd int) { unix.CloseOnExec(fd) }
