//go:build unix

package main

import "golang.org/x/sys/unix"

// processGone reports whether no process pid exists any more, not even a
// zombie waiting to be reaped (signal 0 reaches a zombie).
func processGone(pid int) bool {
	return unix.Kill(pid, 0) == unix.ESRCH
}
