//go:build !linux

package molt

// waitExitedNoReap reports false where waitid(WNOWAIT) is not available:
// the waiter then reaps at once, and a killed group's ID could in theory
// have been reused in between.
func waitExitedNoReap(pid int) bool { return false }

// warmProcessStart has nothing to prepare here (see process_linux.go).
func warmProcessStart() {}
