//go:build unix && !linux

package molt

import "time"

// openPidfd: this system has no pidfds.
func openPidfd(int) int { return -1 }

func pollPidfd(int, time.Duration) bool { return false }

func pidfdKill(int) {}
