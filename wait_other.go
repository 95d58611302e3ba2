//go:build !linux

package molt

import (
	"time"

	"github.com/moltgo/molt/internal/handoff"
)

// waitExitedNoReap reports false where waitid(WNOWAIT) is not available:
// the waiter then reaps at once, and a killed group's ID could in theory
// have been reused in between.
func waitExitedNoReap(pid int) bool { return false }

// ackTaken reports nil where the kernel's view of the channel is not
// available: a successor that dies right after READY may then be
// acknowledged (see wait_linux.go).
func ackTaken(*handoff.Conn, time.Duration) error { return nil }
