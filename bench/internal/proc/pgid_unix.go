//go:build unix

package proc

import (
	"os/exec"
	"syscall"
)

// OwnProcessGroup puts cmd in a process group of its own, so that a
// Ctrl-C in the terminal reaches the driver only, which then stops the
// servers in order.
func OwnProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}
