package proctest

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// procStat returns the fields of /proc/<pid>/stat after the command name:
// the state letter first, then the parent's PID, and so on.
func procStat(pid int) ([]string, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name may hold anything
	if i < 0 {
		return nil, false
	}
	f := strings.Fields(s[i+1:])
	return f, len(f) > 1 && len(f[0]) == 1
}

func procState(pid int) (byte, bool) {
	f, ok := procStat(pid)
	if !ok {
		return 0, false
	}
	return f[0][0], true
}

// State returns the state letter of process pid as /proc shows it ('R'
// running, 'S' sleeping, 'T' stopped, 'Z' zombie, ...), or 0 if it is
// gone.
func State(pid int) byte {
	st, _ := procState(pid)
	return st
}

// ChildrenOf returns the processes whose parent is pid, zombies included.
func ChildrenOf(pid int) map[int]bool {
	out := map[int]bool{}
	ds, _ := os.ReadDir("/proc")
	parent := strconv.Itoa(pid)
	for _, d := range ds {
		p, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		if f, ok := procStat(p); ok && f[1] == parent {
			out[p] = true
		}
	}
	return out
}

// NewChildren returns the children of this process that are not in
// before (an earlier ChildrenOf(os.Getpid())).
func NewChildren(before map[int]bool) []int {
	var out []int
	for p := range ChildrenOf(os.Getpid()) {
		if !before[p] {
			out = append(out, p)
		}
	}
	return out
}

// KillIfOurs SIGKILLs process pid if it still runs this test binary, for
// clean-up after a failed test; a PID reused meanwhile by another program
// is left alone.
func KillIfOurs(pid int) {
	exe, err1 := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	self, err2 := os.Executable()
	if err1 == nil && err2 == nil && strings.TrimSuffix(exe, " (deleted)") == strings.TrimSuffix(self, " (deleted)") {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// awaitExit waits on a pidfd until pid exits or timeout passes. ok is
// false if no pidfd could be had (a kernel before 5.3).
func awaitExit(pid int, timeout time.Duration) (done, ok bool) {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return true, true
	}
	if err != nil {
		return false, false
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return Gone(pid), true
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(min(left, time.Second)/time.Millisecond)+1)
		switch {
		case n > 0:
			return true, true
		case err != nil && err != unix.EINTR:
			return false, false
		}
	}
}
