//go:build unix

package systemd

import (
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// adoptPassed marks the descriptors systemd passed close-on-exec, as
// sd_listen_fds does, so that processes this one starts inherit none, and
// checks that each is open.
func adoptPassed(names []string) ([]passedFD, error) {
	for i := range names {
		unix.CloseOnExec(listenFDsStart + i)
	}
	out := make([]passedFD, len(names))
	for i, name := range names {
		fd := listenFDsStart + i
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			return nil, fmt.Errorf("%w: LISTEN_FDS=%d but descriptor %d (%q) is not open: %w",
				ErrInvalidEnv, len(names), fd, name, os.NewSyscallError("fcntl", err))
		}
		out[i] = passedFD{fd: fd, name: name}
	}
	return out, nil
}

// sockInfo reports the socket type of f's descriptor and whether it
// listens, through SyscallConn (never Fd).
func sockInfo(f *os.File) (typ int, listening bool, err error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, false, err
	}
	var typErr, accErr error
	acc := 0
	cerr := rc.Control(func(fd uintptr) {
		typ, typErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE)
		if typErr == nil {
			acc, accErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		}
	})
	switch {
	case cerr != nil:
		return 0, false, cerr
	case errors.Is(typErr, unix.ENOTSOCK):
		return 0, false, errors.New("not a socket")
	case typErr != nil:
		return 0, false, os.NewSyscallError("getsockopt(SO_TYPE)", typErr)
	case accErr != nil:
		return 0, false, os.NewSyscallError("getsockopt(SO_ACCEPTCONN)", accErr)
	}
	return typ, acc != 0, nil
}

func typeName(typ int, listening bool) string {
	s := fmt.Sprintf("type-%d", typ)
	switch typ {
	case unix.SOCK_STREAM:
		s = "stream"
	case unix.SOCK_DGRAM:
		s = "datagram"
	case unix.SOCK_SEQPACKET:
		s = "seqpacket"
	}
	if listening {
		return "listening " + s + " socket"
	}
	if typ == unix.SOCK_DGRAM {
		return s + " socket"
	}
	return "connected " + s + " socket"
}

// openListener makes a listener of its own (a duplicate) from f, which must
// be a listening stream or seqpacket socket. f stays open.
func openListener(f *os.File, name string) (net.Listener, error) {
	typ, listening, err := sockInfo(f)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrWrongType, name, err)
	}
	if typ != unix.SOCK_STREAM && typ != unix.SOCK_SEQPACKET || !listening {
		return nil, fmt.Errorf("%w: %q is a %s, not a listening socket (Accept=yes is not supported)",
			ErrWrongType, name, typeName(typ, listening))
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("systemd: socket %q: %w", name, err)
	}
	if ul, ok := ln.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false) // the socket file is systemd's, or another generation's
	}
	return ln, nil
}

// openPacketConn makes a packet socket of its own (a duplicate) from f,
// which must be a datagram socket. f stays open.
func openPacketConn(f *os.File, name string) (net.PacketConn, error) {
	typ, listening, err := sockInfo(f)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrWrongType, name, err)
	}
	if typ != unix.SOCK_DGRAM {
		return nil, fmt.Errorf("%w: %q is a %s, not a datagram socket", ErrWrongType, name, typeName(typ, listening))
	}
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return nil, fmt.Errorf("systemd: socket %q: %w", name, err)
	}
	return pc, nil
}

// sameSocket reports whether two descriptors refer to the same socket
// (systemd passes the same socket twice when it is both a socket unit's and
// in the file descriptor store under one name).
func sameSocket(a, b int) bool {
	var sa, sb unix.Stat_t
	if unix.Fstat(a, &sa) != nil || unix.Fstat(b, &sb) != nil {
		return false
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}
