//go:build unix && !linux

package control

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// withCreationAttrs runs create as it is: these systems have no per-thread
// umask or group, and changing the process's would change them for every
// goroutine creating files meanwhile. The file is bound with the
// process's umask and the directory's group (BSD semantics), and settle
// completes it at once.
func withCreationAttrs(_ os.FileMode, _ int, create func()) { create() }

// settle gives the socket file name of d the permission bits of mode and
// the group gid (gid < 0: any), and returns what it found; see the Linux
// version. A socket file cannot be opened here, so the changes go by name,
// relative to the checked directory and with AT_SYMLINK_NOFOLLOW, and only
// right after this process bound the file: in a directory nobody else may
// write to, or a sticky one, where nobody else may rename or remove it, the
// name still holds it, and a link would be changed itself, not its target.
// An inherited file is never changed (errNotVerified if it differs).
func (d *socketDir) settle(name string, created bool, _ fileID, mode os.FileMode, gid int) (socketFileState, error) {
	path := d.path + "/" + name
	var st unix.Stat_t
	if err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return socketFileState{}, fmt.Errorf("control: socket file: %w", &os.PathError{Op: "fstatat", Path: path, Err: err})
	}
	if err := checkSocketFile(d, name, &st, created); err != nil {
		return socketFileState{}, err
	}
	s := stateOf(&st)
	if !s.needs(mode, gid) {
		return s, nil
	}
	if !created {
		return s, errNotVerified
	}
	if gid >= 0 && s.gid != gid {
		if err := unix.Fchownat(d.fd, name, -1, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return s, fmt.Errorf("control: set the socket file's group: %w", &os.PathError{Op: "fchownat", Path: path, Err: err})
		}
		s.gid, s.changed = gid, true
	}
	if s.mode != mode.Perm() {
		if err := unix.Fchmodat(d.fd, name, uint32(mode.Perm()), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return s, fmt.Errorf("control: set the socket file's mode: %w", &os.PathError{Op: "fchmodat", Path: path, Err: err})
		}
		s.mode, s.changed = mode.Perm(), true
	}
	return s, nil
}
