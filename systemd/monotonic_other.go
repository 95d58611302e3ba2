//go:build !linux

package systemd

import (
	"fmt"
	"time"
)

// monotonicNow: MONOTONIC_USEC means systemd's clock, and systemd runs on
// Linux only.
func monotonicNow() (time.Duration, error) {
	return 0, fmt.Errorf("%w: RELOADING=1 needs MONOTONIC_USEC, which only Linux defines", ErrNotSupported)
}
