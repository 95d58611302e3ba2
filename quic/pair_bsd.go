//go:build unix && !linux

package quic

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// seqpacketPair makes the pair under the fork lock, as package net does
// where socketpair takes no SOCK_CLOEXEC, so that no process started
// meanwhile inherits it.
func seqpacketPair() ([2]int, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET, 0)
	if err == nil {
		unix.CloseOnExec(fds[0])
		unix.CloseOnExec(fds[1])
	}
	return fds, err
}

// msgNoSignal: not every BSD has MSG_NOSIGNAL; the Go runtime ignores the
// SIGPIPE of a send on a socket.
const msgNoSignal = 0
