package handoff

import (
	"bytes"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// peerPID returns the process ID the kernel recorded for the peer of the
// Unix socket fd (SO_PEERCRED): for a socketpair, the process that created
// the pair. It is the ID in this process's PID namespace.
func peerPID(fd int) (int, error) {
	u, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return -1, os.NewSyscallError("getsockopt(SO_PEERCRED)", err)
	}
	return int(u.Pid), nil
}

// isZombie reports whether process pid has exited and waits to be reaped,
// from the state field of /proc/PID/stat (the first after the command,
// which is in parentheses and may itself hold spaces and parentheses).
func isZombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	return b[i+2] == 'Z' || b[i+2] == 'X'
}
