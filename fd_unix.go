//go:build unix

package molt

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const platformSupported = true

// errClosedHandle marks a handle whose descriptor could not be reached
// because its owner closed it.
var errClosedHandle = errors.New("molt: handle is closed")

// dupFD duplicates h's descriptor (close-on-exec) through SyscallConn, never
// through (*os.File).Fd, which would switch a socket to blocking mode in
// every process that shares it.
func dupFD(h liveHandle) (int, error) {
	rc, err := h.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("%w: %w", errClosedHandle, err)
	}
	nfd, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, fmt.Errorf("%w: %w", errClosedHandle, err)
	}
	if derr != nil {
		return -1, os.NewSyscallError("fcntl(F_DUPFD_CLOEXEC)", derr)
	}
	return nfd, nil
}

func closeFD(fd int) { unix.Close(fd) }

// statSocketFile returns the identity of the socket file at path.
func statSocketFile(path string) (fileID, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return fileID{}, &os.PathError{Op: "lstat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fileID{}, fmt.Errorf("molt: %s is not a socket", path)
	}
	return fileID{dev: uint64(st.Dev), ino: uint64(st.Ino)}, nil
}

// removeSocketFileIfSame removes path if it is still the socket file with
// identity id (or, with id unknown, if it is a socket file at all). A path
// already gone is not an error.
func removeSocketFileIfSame(path string, id fileID) (bool, error) {
	now, err := statSocketFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if id.known() && now != id {
		return false, nil // another process bound a new socket there
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	return true, nil
}

// isStaleSocket reports whether path is a socket file that nothing accepts
// on: connecting is refused. A file that is not a socket, or one whose
// server answers or is merely slow, is not stale.
func isStaleSocket(network, path string) bool {
	if _, err := statSocketFile(path); err != nil {
		return false
	}
	c, err := net.DialTimeout(network, path, time.Second)
	if err == nil {
		c.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}
