//go:build unix

package reap

import (
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// ownProcessGroup makes cmd the leader of a process group of its own,
// keeping whatever else its SysProcAttr asks for.
func ownProcessGroup(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
}

// signalName names sig as Linux's version does ("SIGTERM").
func signalName(sig syscall.Signal) string { return unix.SignalName(sig) }
