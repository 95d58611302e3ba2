package peercred

import (
	"os"

	"golang.org/x/sys/unix"
)

// Supported reports whether Of works on this system.
const Supported = true

// Of returns the credentials the kernel recorded for the peer of the
// connected Unix socket fd when it connected (SO_PEERCRED).
func Of(fd int) (Cred, error) {
	u, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return unknown, os.NewSyscallError("getsockopt(SO_PEERCRED)", err)
	}
	return Cred{PID: int(u.Pid), UID: int(u.Uid), GID: int(u.Gid)}, nil
}
