//go:build unix

package molt

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// successorSysProcAttr puts the successor in a process group of its own,
// so a failed one is killed together with whatever it started.
func successorSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// withOwnProcessGroup keeps the hook's attributes but insists on a process
// group of the successor's own.
func withOwnProcessGroup(a *syscall.SysProcAttr) *syscall.SysProcAttr {
	if a == nil {
		return successorSysProcAttr()
	}
	a.Setpgid, a.Pgid = true, 0
	return a
}

// killGroup kills the successor's process group, and the successor itself
// in case it left the group. The caller has not reaped it yet, so its PID
// (the group's ID) cannot have been reused.
func killGroup(pid int) {
	unix.Kill(-pid, unix.SIGKILL)
	unix.Kill(pid, unix.SIGKILL)
}
