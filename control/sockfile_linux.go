package control

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// withCreationAttrs runs create, which binds a new socket file, on an OS
// thread of its own whose umask and file-system group no other thread
// shares, so that the file is created with mode and gid and never exists
// with others:
//
//   - unshare(CLONE_FS) gives the thread its own umask, set to let exactly
//     mode through (together with presetMode, which sets the socket's own
//     mode, the file gets mode whatever the process's umask);
//   - setfsgid, a per-thread call on Linux, makes gid the group of the
//     files the thread creates.
//
// Either may be refused (a seccomp filter that forbids unshare; setfsgid to
// a supplementary group without CAP_SETGID): then the file is created under
// the process's umask and group, never with more permissions than mode,
// and settle completes it through a descriptor.
//
// The thread is never handed back to the Go scheduler: it ends with its
// goroutine, taking its attributes with it.
func withCreationAttrs(mode os.FileMode, gid int, create func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // no Unlock: see above
		if unix.Unshare(unix.CLONE_FS) == nil {
			unix.Umask(int(0o777 &^ mode.Perm()))
		}
		if gid >= 0 {
			unix.Setfsgid(gid)
		}
		create()
	}()
	<-done
}

// settle gives the socket file name of d the permission bits of mode and
// the group gid (gid < 0: any), and returns what it found. created says
// that this process has just bound it; otherwise it was inherited, and
// recorded is the identity the chain's first generation recorded (zero if
// unknown).
//
// The file is opened with O_PATH|O_NOFOLLOW, so the descriptor is the file
// the name held at that instant, or a symbolic link itself, never a link's
// target. Only if the descriptor is the socket (for an inherited file: the
// socket with the recorded identity) are the mode and group changed, and
// through the descriptor: whatever the name holds by then is not touched.
// An inherited file that cannot be verified is left as it is
// (errNotVerified) if it differs.
func (d *socketDir) settle(name string, created bool, recorded fileID, mode os.FileMode, gid int) (socketFileState, error) {
	path := d.path + "/" + name
	fd, err := unix.Openat(d.fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return socketFileState{}, fmt.Errorf("control: socket file: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return socketFileState{}, fmt.Errorf("control: socket file: %w", &os.PathError{Op: "fstat", Path: path, Err: err})
	}
	if err := checkSocketFile(d, name, &st, created); err != nil {
		return socketFileState{}, err
	}
	s := stateOf(&st)
	if !s.needs(mode, gid) {
		return s, nil
	}
	if !created && (!recorded.known() || s.id != recorded) {
		return s, errNotVerified
	}
	if gid >= 0 && s.gid != gid {
		if err := unix.Fchownat(fd, "", -1, gid, unix.AT_EMPTY_PATH); err != nil {
			return s, fmt.Errorf("control: set the socket file's group: %w", &os.PathError{Op: "fchownat", Path: path, Err: err})
		}
		s.gid, s.changed = gid, true
	}
	if s.mode != mode.Perm() {
		if err := chmodPathFD(fd, mode); err != nil {
			return s, fmt.Errorf("control: set the socket file's mode: %w", &os.PathError{Op: "fchmodat", Path: path, Err: err})
		}
		s.mode, s.changed = mode.Perm(), true
	}
	return s, nil
}

func (id fileID) known() bool { return id != fileID{} }

// chmodPathFD changes the mode of the file an O_PATH descriptor refers to:
// with fchmodat2(AT_EMPTY_PATH) (Linux 6.6), else by chmod of
// /proc/self/fd/N, which the kernel resolves to the descriptor's own file,
// not by its name.
func chmodPathFD(fd int, mode os.FileMode) error {
	err := unix.Fchmodat(fd, "", uint32(mode.Perm()), unix.AT_EMPTY_PATH)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		err = unix.Chmod("/proc/self/fd/"+strconv.Itoa(fd), uint32(mode.Perm()))
	}
	return err
}
