//go:build unix

package molt

import "golang.org/x/sys/unix"

// signalZero reports whether process pid exists, as kill(pid, 0) sees it:
// a process of another user (EPERM) exists too. A zombie counts as
// running, and a PID reused by another process is not noticed.
func signalZero(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := unix.Kill(pid, 0)
	return err == nil || err == unix.EPERM
}
