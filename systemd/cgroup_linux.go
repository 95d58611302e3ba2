package systemd

import (
	"bytes"
	"os"
	"strconv"
)

// sameUnit reports whether process pid is in this process's control
// group, and so, under systemd, in the same unit: a successor that is not
// cannot become this unit's main process (a taker started by another
// unit). A process whose group cannot be read counts as the same, which
// keeps the hand-over of a forked successor as it always was.
func sameUnit(pid int) bool {
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return true
	}
	other, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return true
	}
	return bytes.Equal(self, other)
}
