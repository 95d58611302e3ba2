//go:build !linux

package systemd

// sameUnit: without systemd's control groups, every successor is.
func sameUnit(int) bool { return true }
