package systemd

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// monotonicNow returns CLOCK_MONOTONIC, the clock of MONOTONIC_USEC.
func monotonicNow() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, os.NewSyscallError("clock_gettime", err)
	}
	return time.Duration(ts.Nano()), nil
}
