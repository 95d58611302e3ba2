//go:build unix

package proctest

import (
	"syscall"
	"testing"
	"time"
)

// Gone reports whether process pid has exited. A zombie (exited, not yet
// reaped by whoever must reap it) counts as gone where the system shows
// zombies (Linux's /proc); elsewhere it counts as running until reaped.
func Gone(pid int) bool {
	if st, ok := procState(pid); ok {
		return st == 'Z'
	}
	return syscall.Kill(pid, 0) == syscall.ESRCH
}

// AwaitGone blocks until process pid is Gone or timeout has passed, and
// reports whether it is gone. On Linux it waits on a pidfd, woken by the
// exit itself; elsewhere it polls. It needs no testing.T, so that role
// processes can use it too.
func AwaitGone(pid int, timeout time.Duration) bool {
	if done, ok := awaitExit(pid, timeout); ok {
		return done
	}
	return Until(timeout, func() bool { return Gone(pid) })
}

// WaitGone waits up to Patience until process pid is Gone and reports an
// error (t.Errorf) if it is not; it returns whether it is.
func WaitGone(t testing.TB, pid int) bool {
	t.Helper()
	if !AwaitGone(pid, Patience) {
		t.Errorf("process %d still running after %v", pid, Patience)
		return false
	}
	return true
}
