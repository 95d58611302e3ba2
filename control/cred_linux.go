package control

import (
	"os"

	"golang.org/x/sys/unix"
)

const credSupported = true

// peerCred returns the credentials the kernel recorded for the peer of the
// connected Unix socket fd when it connected (SO_PEERCRED).
func peerCred(fd int) (peer, error) {
	u, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return peer{-1, -1, -1}, os.NewSyscallError("getsockopt(SO_PEERCRED)", err)
	}
	return peer{pid: int(u.Pid), uid: int(u.Uid), gid: int(u.Gid)}, nil
}
