//go:build !linux

package control

import (
	"os"
	"syscall"
)

// presetMode does nothing: only Linux creates a socket file with the
// socket's own mode, and the BSDs refuse fchmod on a socket. The mode is
// set on the file right after the bind.
func presetMode(syscall.RawConn, os.FileMode) {}
