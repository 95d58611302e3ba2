package systemd

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// listenFDsStart is the first descriptor systemd passes (SD_LISTEN_FDS_START).
const listenFDsStart = 3

// maxListenFDs bounds LISTEN_FDS: far more than any socket unit and file
// descriptor store together pass, far fewer than would overflow anything.
const maxListenFDs = 1 << 16

// unknownFDName is the name of a passed descriptor when LISTEN_FDNAMES is
// not set, as sd_listen_fds_with_names(3) reports it.
const unknownFDName = "unknown"

// passedFD is one descriptor systemd passed, not yet claimed.
type passedFD struct {
	fd   int
	name string
}

// listenEnv is what the socket activation variables hold.
type listenEnv struct {
	pid, fds, names string
	hasNames        bool // LISTEN_FDNAMES is set (possibly empty)
}

// readListenEnv reads LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES and removes
// them from the environment, whatever they hold: they are meant for one
// process, and nothing this process starts may take them for its own.
func readListenEnv() listenEnv {
	var e listenEnv
	e.pid = os.Getenv("LISTEN_PID")
	e.fds = os.Getenv("LISTEN_FDS")
	e.names, e.hasNames = os.LookupEnv("LISTEN_FDNAMES")
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
	return e
}

// parse checks the variables as sd_listen_fds_with_names(3) defines them and
// returns the names of the descriptors passed to process self, which are
// numbered from 3 in that order; "unknown" names them all when
// LISTEN_FDNAMES is not set. It returns nil, nil when nothing was passed to
// self: LISTEN_PID unset (whatever the others say, as sd_listen_fds), or
// naming another process (a parent that did not remove the variables). Any value systemd would never set is an error
// wrapping [ErrInvalidEnv] that names the variable.
func (e listenEnv) parse(self int) ([]string, error) {
	if e.pid == "" {
		return nil, nil // as sd_listen_fds: without LISTEN_PID, nothing is known to be ours
	}
	pid, ok := parseDecimal(e.pid)
	if !ok || pid < 1 {
		return nil, fmt.Errorf("%w: LISTEN_PID=%q is not a process ID", ErrInvalidEnv, e.pid)
	}
	if pid != int64(self) {
		return nil, nil
	}
	if e.fds == "" {
		return nil, fmt.Errorf("%w: LISTEN_PID names this process but LISTEN_FDS is not set", ErrInvalidEnv)
	}
	n, ok := parseDecimal(e.fds)
	if !ok {
		return nil, fmt.Errorf("%w: LISTEN_FDS=%q is not a number of descriptors", ErrInvalidEnv, e.fds)
	}
	if n > maxListenFDs {
		return nil, fmt.Errorf("%w: LISTEN_FDS=%q: more than %d descriptors", ErrInvalidEnv, e.fds, maxListenFDs)
	}
	names := make([]string, n)
	if !e.hasNames {
		for i := range names {
			names[i] = unknownFDName
		}
		return names, nil
	}
	if n == 0 {
		if e.names != "" {
			return nil, fmt.Errorf("%w: LISTEN_FDNAMES=%q names descriptors but LISTEN_FDS=0", ErrInvalidEnv, e.names)
		}
		return names, nil
	}
	got := strings.Split(e.names, ":")
	if len(got) != len(names) {
		return nil, fmt.Errorf("%w: LISTEN_FDNAMES=%q has %d names for LISTEN_FDS=%d", ErrInvalidEnv, e.names, len(got), n)
	}
	for i, name := range got {
		if !validFDName(name) {
			return nil, fmt.Errorf("%w: LISTEN_FDNAMES=%q: name %d (%q) is not a descriptor name (1 to %d printable ASCII characters)",
				ErrInvalidEnv, e.names, i+1, name, maxFDName)
		}
	}
	copy(names, got)
	return names, nil
}

// parseDecimal parses a non-negative decimal number made of ASCII digits
// only: no sign, no spaces, no base prefix, as systemd writes them.
func parseDecimal(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil
}

// listenFDsFromEnv returns the descriptors systemd passed to this process
// (socket activation, or the file descriptor store handing back what a
// previous start stored), after removing the variables from the
// environment, checking that each descriptor is open and marking it
// close-on-exec. Nothing passed is not an error.
func listenFDsFromEnv() ([]passedFD, error) {
	names, err := readListenEnv().parse(os.Getpid())
	if err != nil || len(names) == 0 {
		return nil, err
	}
	return adoptPassed(names)
}
