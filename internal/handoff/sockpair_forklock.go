//go:build unix && !(dragonfly || freebsd || illumos || linux || netbsd || openbsd)

package handoff

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// socketpair returns a connected pair of close-on-exec Unix stream sockets.
// These systems (Darwin, AIX, Solaris) have no SOCK_CLOEXEC, so the flag is
// set afterwards while holding syscall.ForkLock, which keeps a concurrent
// fork in os/exec from inheriting the descriptors in between.
func socketpair() ([2]int, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		return fds, os.NewSyscallError("socketpair", err)
	}
	unix.CloseOnExec(fds[0])
	unix.CloseOnExec(fds[1])
	return fds, nil
}
