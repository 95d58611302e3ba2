//go:build unix

package control

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// socketDir is an open directory that holds a control socket.
type socketDir struct {
	fd   int
	path string
}

// openSocketDir opens the directory path and checks that no other user
// can replace the files in it.
func openSocketDir(path string) (*socketDir, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("control: socket directory: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("control: socket directory: %w", &os.PathError{Op: "fstat", Path: path, Err: err})
	}
	if err := checkSocketDir(path, uint32(st.Mode), int(st.Uid), os.Geteuid()); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &socketDir{fd: fd, path: path}, nil
}

func (d *socketDir) close() { unix.Close(d.fd) }

func stateOf(st *unix.Stat_t) socketFileState {
	return socketFileState{
		id:   fileID{Dev: uint64(st.Dev), Ino: uint64(st.Ino)},
		mode: os.FileMode(st.Mode & 0o777),
		gid:  int(st.Gid),
	}
}

// checkSocketFile checks what a descriptor or a no-follow stat shows under
// name: a socket, and, if it was just created, one of this user's.
func checkSocketFile(d *socketDir, name string, st *unix.Stat_t, created bool) error {
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("control: %s/%s is not a socket (mode %#o): it was replaced", d.path, name, st.Mode)
	}
	if created && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("control: %s/%s belongs to uid %d, not to this process (uid %d): it was replaced", d.path, name, st.Uid, os.Geteuid())
	}
	return nil
}
