//go:build dragonfly || freebsd || illumos || linux || netbsd || openbsd

package handoff

import (
	"os"

	"golang.org/x/sys/unix"
)

// socketpair returns a connected pair of close-on-exec Unix stream sockets,
// created close-on-exec atomically.
func socketpair() ([2]int, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fds, os.NewSyscallError("socketpair", err)
	}
	return fds, nil
}
