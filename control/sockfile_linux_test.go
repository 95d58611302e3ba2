package control

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCheckSocketDir(t *testing.T) {
	const me = 1000
	for _, tc := range []struct {
		mode  uint32
		owner int
		want  string // "" if accepted
	}{
		{0o755, me, ""},
		{0o700, 0, ""},
		{0o1777, 0, ""},  // /tmp
		{0o1770, me, ""}, // sticky, this user's
		{0o775, me, "writable by its group (drwxrwxr-x)"},
		{0o757, 0, "writable by other users"},
		{0o777, 0, "writable by its group and other users"},
		{0o755, 1001, "belongs to uid 1001"},
		{0o1777, 1001, "belongs to uid 1001"}, // sticky, but its owner may do anything in it
	} {
		err := checkSocketDir("/run/x", tc.mode, tc.owner, me)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("mode %#o owner %d: %v, want accepted", tc.mode, tc.owner, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("mode %#o owner %d: %v, want an error with %q", tc.mode, tc.owner, err, tc.want)
		}
	}
}

// TestCreationAttrs: a file created by withCreationAttrs gets exactly the
// mode and group asked for, whatever the process's umask, which stays as
// it was.
func TestCreationAttrs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: setfsgid to a group this process is not in")
	}
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	var err error
	withCreationAttrs(0o664, 4343, func() {
		var f *os.File
		if f, err = os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666); err == nil {
			f.Close()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o777 != 0o664 || st.Gid != 4343 {
		t.Errorf("file created with mode %#o group %d; want 0664, group 4343", st.Mode&0o777, st.Gid)
	}
	if now := syscall.Umask(0o077); now != 0o077 {
		t.Errorf("the process's umask is %#o after withCreationAttrs, want 077", now)
	}
	// And a socket, as Listen binds it: preset mode, then bind.
	sock := filepath.Join(dir, "s")
	withCreationAttrs(0o660, 4343, func() {
		lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error { presetMode(rc, 0o660); return nil }}
		var ln net.Listener
		if ln, err = lc.Listen(t.Context(), "unix", sock); err == nil {
			err = unix.Lstat(sock, &st) // before Close, which removes the file
			ln.Close()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o777 != 0o660 || st.Gid != 4343 {
		t.Errorf("socket created with mode %#o group %d; want 0660, group 4343", st.Mode&0o777, st.Gid)
	}
}

// TestSettle checks that settle changes only the socket it verified, and
// never what a link points to.
func TestSettle(t *testing.T) {
	base := t.TempDir()
	target := filepath.Join(base, "target")
	if err := os.WriteFile(target, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(target, 0o640); err != nil {
		t.Fatal(err)
	}
	dirPath := filepath.Join(base, "d")
	if err := os.Mkdir(dirPath, 0o755); err != nil {
		t.Fatal(err)
	}
	d, err := openSocketDir(dirPath)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	ln, err := net.Listen("unix", filepath.Join(dirPath, "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := os.Chmod(filepath.Join(dirPath, "s"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dirPath, "link")); err != nil {
		t.Fatal(err)
	}
	targetMode := func() uint32 {
		var st unix.Stat_t
		unix.Stat(target, &st)
		return st.Mode & 0o777
	}

	for _, created := range []bool{true, false} {
		if _, err := d.settle("link", created, fileID{}, 0o666, -1); err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Errorf("settle of a link (created %t) = %v, want it refused as not a socket", created, err)
		}
	}
	if m := targetMode(); m != 0o640 {
		t.Fatalf("settle changed the link's target to %#o", m)
	}

	// Inherited: changed only with the identity recorded at creation.
	st, err := d.settle("s", false, fileID{Dev: 1, Ino: 2}, 0o660, -1)
	if !errors.Is(err, errNotVerified) || st.mode != 0o600 {
		t.Errorf("settle of an inherited socket of another identity = %+v, %v; want it left at 0600, errNotVerified", st, err)
	}
	id := st.id
	if st, err = d.settle("s", false, id, 0o660, -1); err != nil || !st.changed || st.mode != 0o660 {
		t.Errorf("settle of the inherited socket = %+v, %v; want it changed to 0660", st, err)
	}
	if st, err = d.settle("s", true, fileID{}, 0o600, -1); err != nil || !st.changed || st.id != id {
		t.Errorf("settle of a created socket = %+v, %v; want it changed to 0600", st, err)
	}
	if fi, _ := os.Lstat(filepath.Join(dirPath, "s")); fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want 0600", fi.Mode().Perm())
	}
}

// TestChmodPathFD checks both ways of changing a file through an O_PATH
// descriptor: fchmodat2, and /proc/self/fd for kernels without it.
func TestChmodPathFD(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := chmodPathFD(fd, 0o640); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v after chmodPathFD, want 0640", fi.Mode().Perm())
	}
	// The fallback, as chmodPathFD takes it where fchmodat2 is missing.
	if err := unix.Chmod("/proc/self/fd/"+strconv.Itoa(fd), 0o604); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o604 {
		t.Errorf("mode %v after chmod of /proc/self/fd, want 0604", fi.Mode().Perm())
	}
}
