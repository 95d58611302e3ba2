package molt

import (
	"errors"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// processStart returns a token of process pid's start, and whether pid is
// running (a zombie is not: it no longer serves or holds anything but its
// PID). On Linux the token is the start time in clock ticks since boot,
// field 22 of /proc/<pid>/stat: a later process with the same PID started
// later, so the token tells the two apart. Where /proc cannot be read
// (mounted with hidepid, say), it falls back to kill(pid, 0) and a token
// of 0: unknown.
func processStart(pid int) (start uint64, running bool) {
	if pid <= 0 {
		return 0, false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false
	}
	if err != nil {
		return 0, signalZero(pid)
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name may hold anything, ')' included
	if i < 0 {
		return 0, signalZero(pid)
	}
	// After the name: state (field 3), ..., starttime (field 22).
	f := strings.Fields(s[i+1:])
	if len(f) < 20 || len(f[0]) != 1 {
		return 0, signalZero(pid)
	}
	if st := f[0][0]; st == 'Z' || st == 'X' {
		return 0, false
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, signalZero(pid)
	}
	return start, true
}
