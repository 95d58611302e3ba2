package control

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// presetMode sets the mode of a Unix socket before it is bound: Linux
// creates the socket file with the socket's own mode (minus the umask, which
// withCreationAttrs sets to match), so the file never exists with wider
// permissions. Errors are ignored: settle checks the file after the bind
// and completes it through a descriptor.
func presetMode(rc syscall.RawConn, mode os.FileMode) {
	rc.Control(func(fd uintptr) { unix.Fchmod(int(fd), uint32(mode.Perm())) })
}
