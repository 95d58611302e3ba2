//go:build darwin || freebsd

package peercred

import (
	"os"

	"golang.org/x/sys/unix"
)

// Supported reports whether Of works on this system.
const Supported = true

// Of returns the credentials the kernel recorded for the peer of the
// connected Unix socket fd (LOCAL_PEERCRED): its effective user ID and its
// first group, which is the effective group ID. The process ID comes from
// LOCAL_PEERPID where the system has it (macOS); -1 otherwise.
func Of(fd int) (Cred, error) {
	x, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return unknown, os.NewSyscallError("getsockopt(LOCAL_PEERCRED)", err)
	}
	p := Cred{PID: peerPID(fd), UID: int(x.Uid), GID: -1}
	if x.Ngroups > 0 {
		p.GID = int(x.Groups[0])
	}
	return p, nil
}
