//go:build !unix

package reap

import (
	"os/exec"
	"syscall"
)

// ownProcessGroup does nothing where there are no process groups.
func ownProcessGroup(*exec.Cmd) {}

// signalName names sig.
func signalName(sig syscall.Signal) string { return sig.String() }
