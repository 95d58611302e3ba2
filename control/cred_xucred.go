//go:build darwin || freebsd

package control

import (
	"os"

	"golang.org/x/sys/unix"
)

const credSupported = true

// peerCred returns the credentials the kernel recorded for the peer of the
// connected Unix socket fd (LOCAL_PEERCRED): its effective user ID and its
// first group, which is the effective group ID. The process ID comes from
// LOCAL_PEERPID where the system has it (macOS); -1 otherwise.
func peerCred(fd int) (peer, error) {
	x, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return peer{-1, -1, -1}, os.NewSyscallError("getsockopt(LOCAL_PEERCRED)", err)
	}
	p := peer{pid: peerPID(fd), uid: int(x.Uid), gid: -1}
	if x.Ngroups > 0 {
		p.gid = int(x.Groups[0])
	}
	return p, nil
}
