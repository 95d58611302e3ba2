//go:build unix

package handoff

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

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

// FromFD returns a Conn for the inherited descriptor fd, the child's end of
// the hand-off channel, after checking that it is one: an open, connected
// AF_UNIX SOCK_STREAM socket whose peer is unnamed (a socketpair end, not a
// socket connected to a listening path such as journald's stdout stream)
// and was created by the process parent, the one that started this
// process. A peer created by another process that still runs is refused;
// one whose creator is gone is accepted, since a parent that died after
// starting its successor leaves exactly that, with its inventory still in
// the socket's buffer. (Where the system does not tell a socket's peer
// process, that check is skipped.) Standard input, output and error (fd 0,
// 1 and 2) are refused before anything is asked of them.
//
// If a check fails, fd is left as it was: FromFD never reads, writes or
// closes a descriptor that may belong to someone else. On success the Conn
// works on a close-on-exec, non-blocking duplicate and fd is closed. It
// blocks only before refusing a peer's creator that still runs, up to a
// second, in case that is a parent in the middle of exiting.
//
// Errors name the descriptor and what it is instead, for example
// "handoff: fd 1 is standard output, never the hand-off channel",
// "handoff: fd 3 is not a socket (it is a regular file)", "handoff: fd 3
// is a datagram socket, not a stream socket" or "handoff: fd 3 is
// connected to /run/systemd/journal/stdout, not to its parent".
func FromFD(fd, parent int) (*Conn, error) {
	if err := checkChannel(fd, parent); err != nil {
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

// stdio names the descriptors a process is started with, which are never
// a hand-off channel: a stray MOLT_HANDOFF_FD=1 must not end the service's
// output (under journald, stdout is a Unix stream socket too).
var stdio = [...]string{"standard input", "standard output", "standard error"}

// checkChannel returns an error unless fd is a hand-off channel whose peer
// was created by parent (or by a process that is gone). It only asks the
// kernel about fd: it never reads, writes or closes it.
func checkChannel(fd, parent int) error {
	if fd >= 0 && fd < len(stdio) {
		return fmt.Errorf("handoff: fd %d is %s, never the hand-off channel", fd, stdio[fd])
	}
	if fd < 0 {
		return fmt.Errorf("handoff: fd %d is not open", fd)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		if errors.Is(err, unix.EBADF) {
			return fmt.Errorf("handoff: fd %d is not open", fd)
		}
		return fmt.Errorf("handoff: fd %d: %w", fd, os.NewSyscallError("fcntl", err))
	}
	if err := checkUnixStream(fd); err != nil {
		return err
	}
	switch sa, err := unix.Getpeername(fd); {
	case errors.Is(err, unix.ENOTCONN):
		// The peer end is closed already: a parent that died.
	case err != nil:
		return fmt.Errorf("handoff: fd %d: %w", fd, os.NewSyscallError("getpeername", err))
	default:
		// x/sys reports an unnamed peer as "@" (an empty abstract name).
		if ua, ok := sa.(*unix.SockaddrUnix); ok && ua.Name != "" && ua.Name != "@" {
			return fmt.Errorf("handoff: fd %d is connected to %s, not to its parent", fd, ua.Name)
		}
	}
	pid, err := peerPID(fd)
	if err != nil {
		return fmt.Errorf("handoff: fd %d: %w", fd, err)
	}
	if pid > 0 && pid != parent && !exitsSoon(pid) {
		return fmt.Errorf("handoff: fd %d belongs to process %d, not to the parent %d", fd, pid, parent)
	}
	return nil
}

// exitSettle is how long exitsSoon waits for a process to be gone.
const exitSettle = time.Second

// exitsSoon reports whether process pid is gone, or is gone within
// exitSettle. A parent that was killed has given its children to another
// process (getppid names the new one) a moment before the kernel marks it
// exited: a channel from it must not be refused in that moment. Only a
// channel that is about to be refused waits.
func exitsSoon(pid int) bool {
	deadline := time.Now().Add(exitSettle)
	for !processGone(pid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// processGone reports whether no process pid runs: it does not exist, or
// it has exited and waits to be reaped (a zombie cannot be the other end
// of anything).
func processGone(pid int) bool {
	if errors.Is(unix.Kill(pid, 0), unix.ESRCH) {
		return true
	}
	return isZombie(pid)
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
