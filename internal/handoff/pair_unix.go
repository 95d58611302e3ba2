//go:build unix

package handoff

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Pair creates a connected pair of Unix stream sockets for one upgrade. The
// parent end is returned as a Conn; the child end as a blocking *os.File,
// meant for exec.Cmd.ExtraFiles, which the caller closes once the child has
// started. Both ends are close-on-exec (exec.Cmd clears the flag on the copy
// it passes to the child). It does not block. On error nothing is left open.
func Pair() (parent *Conn, child *os.File, err error) {
	fds, err := socketpair()
	if err != nil {
		return nil, nil, fmt.Errorf("handoff: %w", err)
	}
	pf := os.NewFile(uintptr(fds[0]), "handoff-parent")
	fc, err := net.FileConn(pf) // duplicates the descriptor, non-blocking
	pf.Close()
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("handoff: %w", err)
	}
	uc, ok := fc.(*net.UnixConn)
	if !ok {
		fc.Close()
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("handoff: socketpair gave a %T, not a *net.UnixConn", fc)
	}
	return NewConn(uc), os.NewFile(uintptr(fds[1]), "handoff-child"), nil
}

// FromFD returns a Conn for the inherited descriptor fd, which must be an
// open, connected AF_UNIX SOCK_STREAM socket (in the child: the end that the
// parent passed in ExtraFiles). It takes ownership of fd and closes it
// whether it succeeds or not (the Conn works on a close-on-exec duplicate),
// except when fd is not open at all. It does not block.
//
// Errors name the descriptor and what it is instead, for example
// "handoff: fd 3 is not open", "handoff: fd 3 is not a socket (it is a
// regular file)", "handoff: fd 3 is a datagram socket, not a stream socket"
// or "handoff: fd 3 is an IPv4 socket, not a Unix domain socket".
func FromFD(fd int) (*Conn, error) {
	if fd < 0 {
		return nil, fmt.Errorf("handoff: fd %d is not open", fd)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		if errors.Is(err, unix.EBADF) {
			return nil, fmt.Errorf("handoff: fd %d is not open", fd)
		}
		unix.Close(fd)
		return nil, fmt.Errorf("handoff: fd %d: %w", fd, os.NewSyscallError("fcntl", err))
	}
	if err := checkUnixStream(fd); err != nil {
		unix.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "handoff-fd-"+strconv.Itoa(fd))
	fc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("handoff: fd %d: %w", fd, err)
	}
	uc, ok := fc.(*net.UnixConn)
	if !ok {
		fc.Close()
		return nil, fmt.Errorf("handoff: fd %d is a %T, not a Unix stream socket", fd, fc)
	}
	return NewConn(uc), nil
}

// checkUnixStream returns an error unless fd is an AF_UNIX SOCK_STREAM socket.
func checkUnixStream(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("handoff: fd %d: %w", fd, os.NewSyscallError("fstat", err))
	}
	if typ := uint32(st.Mode) & unix.S_IFMT; typ != unix.S_IFSOCK {
		return fmt.Errorf("handoff: fd %d is not a socket (it is %s)", fd, fileType(typ))
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fmt.Errorf("handoff: fd %d: %w", fd, os.NewSyscallError("getsockopt", err))
	}
	if typ != unix.SOCK_STREAM {
		return fmt.Errorf("handoff: fd %d is %s socket, not a stream socket", fd, socketType(typ))
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fmt.Errorf("handoff: fd %d: %w", fd, os.NewSyscallError("getsockname", err))
	}
	if _, ok := sa.(*unix.SockaddrUnix); !ok {
		return fmt.Errorf("handoff: fd %d is %s socket, not a Unix domain socket", fd, family(sa))
	}
	return nil
}

func fileType(typ uint32) string {
	switch typ {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFIFO:
		return "a pipe"
	case unix.S_IFLNK:
		return "a symbolic link"
	}
	return fmt.Sprintf("file type %#o", typ)
}

func socketType(typ int) string {
	switch typ {
	case unix.SOCK_DGRAM:
		return "a datagram"
	case unix.SOCK_SEQPACKET:
		return "a seqpacket"
	case unix.SOCK_RAW:
		return "a raw"
	}
	return "a type " + strconv.Itoa(typ)
}

func family(sa unix.Sockaddr) string {
	switch sa.(type) {
	case *unix.SockaddrInet4:
		return "an IPv4"
	case *unix.SockaddrInet6:
		return "an IPv6"
	case nil:
		return "an unnamed"
	}
	return "a " + strings.TrimPrefix(fmt.Sprintf("%T", sa), "*unix.Sockaddr")
}
