package control

import (
	"errors"
	"fmt"
	"os"
)

// The control socket's file. Whoever can write to the directory that holds
// it can replace the file between two system calls, so:
//
//   - Listen refuses a directory another user can write to, unless it is
//     sticky (then nobody but its owner, root and the file's owner can
//     rename or remove the file) and belongs to root or to this user;
//   - the file gets its mode and group as it is created
//     (withCreationAttrs, sockfile_linux.go);
//   - nothing ever changes the file by a path that could name something
//     else by then: a change goes through a descriptor of the file,
//     checked to be the socket (and, in a successor, the very socket its
//     chain created), or through a call that follows no symbolic link.
//
// Everything is done relative to one descriptor of the directory, checked
// once (socketDir), so a directory renamed or replaced meanwhile changes
// nothing.

// Mode bits of a directory that checkSocketDir reads.
const (
	modeSticky     = 0o1000
	modeGroupWrite = 0o020
	modeOtherWrite = 0o002
)

// checkSocketDir judges a socket directory by its mode and owner: it must
// belong to root or to euid, and nobody else may write to it unless it is
// sticky. A directory's group write bit counts as other users: its group
// may have members other than this user, and with POSIX ACLs that bit is
// the mask of every named user and group.
func checkSocketDir(path string, mode uint32, owner, euid int) error {
	const advice = "another user could replace the socket file with a link to any file between two system calls"
	if owner != 0 && owner != euid {
		return fmt.Errorf("control: socket directory %s belongs to uid %d: %s; use a directory that belongs to root or to this service's user (uid %d)",
			path, owner, advice, euid)
	}
	if mode&modeSticky != 0 {
		return nil // like /tmp: others may add files, but not rename or remove this one
	}
	var who string
	switch mode & (modeGroupWrite | modeOtherWrite) {
	case 0:
		return nil
	case modeGroupWrite:
		who = "its group"
	case modeOtherWrite:
		who = "other users"
	default:
		who = "its group and other users"
	}
	return fmt.Errorf("control: socket directory %s is writable by %s (%v): %s; remove that permission (chmod go-w %s) or use a sticky directory such as /tmp",
		path, who, dirMode(mode), advice, path)
}

func dirMode(mode uint32) os.FileMode {
	m := os.ModeDir | os.FileMode(mode&0o777)
	if mode&modeSticky != 0 {
		m |= os.ModeSticky
	}
	return m
}

// errNotVerified says that an inherited socket file was left as it is:
// it differs from the options, but could not be shown to be the file the
// chain created.
var errNotVerified = errors.New("not verified")

// socketFileState is what settle found.
type socketFileState struct {
	id      fileID
	mode    os.FileMode // permission bits
	gid     int
	changed bool // settle changed the mode or group
}

// needs reports whether the file differs from mode and gid (gid < 0: any).
func (st socketFileState) needs(mode os.FileMode, gid int) bool {
	return st.mode != mode.Perm() || (gid >= 0 && st.gid != gid)
}
