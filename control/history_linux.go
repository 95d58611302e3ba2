package control

import (
	"os"

	"golang.org/x/sys/unix"
)

// newHistoryFile returns an anonymous memory file for the upgrade history.
func newHistoryFile() (*os.File, error) {
	fd, err := unix.MemfdCreate("molt-control-history", unix.MFD_CLOEXEC)
	if err != nil {
		return newTempHistoryFile()
	}
	return os.NewFile(uintptr(fd), "molt-control-history"), nil
}
