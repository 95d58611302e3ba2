//go:build !unix

package proc

import "os/exec"

// OwnProcessGroup does nothing where there are no process groups.
func OwnProcessGroup(*exec.Cmd) {}
