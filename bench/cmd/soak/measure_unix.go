//go:build unix

package main

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// countFDs counts this process's open descriptors and, among them, the
// connected TCP sockets, and describes the others. Each candidate is
// checked with fcntl when it is classified, so one closed since the
// listing (the listing's own directory, a connection that ended) is not
// counted.
func countFDs() (total, conns int, own []string, err error) {
	fds, err := listFDs()
	if err != nil {
		return 0, 0, nil, err
	}
	for _, fd := range fds {
		open, conn, desc := classifyFD(fd)
		switch {
		case !open:
		case conn:
			total++
			conns++
		default:
			total++
			own = append(own, fmt.Sprintf("%d %s", fd, desc))
		}
	}
	return total, conns, own, nil
}

// classifyFD reports whether fd is open and whether it is a connected TCP
// socket (a stream socket with an IP address that does not listen), and
// describes it. The listener and the Unix hand-off channel are the
// process's own. Connections close all the time under the load: a
// descriptor found closed (EBADF) at any step was one that ended meanwhile,
// and is not counted.
func classifyFD(fd int) (open, tcpConn bool, desc string) {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		return false, false, ""
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	switch {
	case err == unix.EBADF:
		return false, false, ""
	case err != nil:
		return true, false, describeFile(fd) // not a socket
	}
	kind := "socket"
	switch typ {
	case unix.SOCK_STREAM:
		kind = "stream socket"
	case unix.SOCK_DGRAM:
		kind = "datagram socket"
	}
	sa, err := unix.Getsockname(fd)
	switch {
	case err == unix.EBADF:
		return false, false, ""
	case err != nil:
		return true, false, kind + " (" + err.Error() + ")"
	}
	switch sa.(type) {
	case *unix.SockaddrInet4, *unix.SockaddrInet6:
	case *unix.SockaddrUnix:
		return true, false, "unix " + kind
	default:
		return true, false, kind
	}
	if typ != unix.SOCK_STREAM {
		return true, false, "ip " + kind
	}
	listening, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	switch {
	case err == unix.EBADF:
		return false, false, ""
	case err != nil:
		return true, false, "tcp socket (" + err.Error() + ")"
	case listening != 0:
		return true, false, "tcp listener"
	}
	return true, true, "tcp connection"
}

// scanFDs lists the descriptors below the soft RLIMIT_NOFILE (at most
// 65536) that fcntl says are open: the portable way, where the process
// cannot list its descriptors in a file system.
func scanFDs() ([]int, error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return nil, fmt.Errorf("getrlimit(RLIMIT_NOFILE): %w", err)
	}
	n := min(lim.Cur, 1<<16)
	var fds []int
	for fd := range int(n) {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
			fds = append(fds, fd)
		}
	}
	return fds, nil
}
