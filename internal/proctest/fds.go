package proctest

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// An FDFilter selects descriptors by what they are: the target of their
// /proc/<pid>/fd link, such as "socket:[4711]", "anon_inode:[pidfd]",
// "pipe:[12]" or "/dev/null".
type FDFilter func(link string) bool

var (
	// AllFDs counts every descriptor. It is the nil filter, and the only
	// one that works where links cannot be read (through /dev/fd).
	AllFDs FDFilter

	// NoPidfds leaves out pidfds. os/exec holds one for every child
	// process it started until that child is reaped, so a successor of an
	// earlier test that is still exiting shows in a baseline taken now
	// and leaves it later; a child a test leaks is caught by its process
	// checks instead.
	NoPidfds FDFilter = func(link string) bool { return link != "anon_inode:[pidfd]" }

	// Sockets counts sockets only.
	Sockets FDFilter = func(link string) bool { return strings.HasPrefix(link, "socket:") }
)

// CountFDs returns how many descriptors process pid has open that filter
// selects. It skips the test where they cannot be listed: it needs
// /proc/<pid>/fd, or for this process with AllFDs, /dev/fd.
func CountFDs(t testing.TB, pid int, filter FDFilter) int {
	t.Helper()
	return len(listFDs(t, pid, filter))
}

// listFDs returns the links of pid's descriptors that filter selects
// (unread links as "", with AllFDs).
func listFDs(t testing.TB, pid int, filter FDFilter) []string {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	entries, err := os.ReadDir(dir)
	if err != nil && pid == os.Getpid() && filter == nil {
		dir = "/dev/fd"
		entries, err = os.ReadDir(dir)
	}
	if err != nil {
		t.Skipf("cannot list the descriptors of process %d: %v", pid, err)
	}
	var links []string
	for _, e := range entries {
		link, err := os.Readlink(dir + "/" + e.Name())
		switch {
		case filter == nil:
			links = append(links, e.Name()+" "+link)
		case err != nil:
			// Closed between ReadDir and Readlink: not open any more.
		case filter(link):
			links = append(links, e.Name()+" "+link)
		}
	}
	return links
}

// CheckFDs waits up to Patience until process pid has exactly want open
// descriptors that filter selects, and reports an error (t.Errorf) listing
// them if it never has. when says at what point of the test, as in "after
// the failed upgrade". Exactly, because closing a descriptor that is not
// one's own is as much a bug as keeping one.
func CheckFDs(t testing.TB, when string, pid int, filter FDFilter, want int) {
	t.Helper()
	var got []string
	if !Until(Patience, func() bool { got = listFDs(t, pid, filter); return len(got) == want }) {
		t.Errorf("descriptors of process %d %s: %d, want %d:\n\t%s", pid, when, len(got), want, strings.Join(got, "\n\t"))
	}
}

// CheckFDsAtMost is CheckFDs for a bound: it waits until pid has at most
// limit descriptors that filter selects. It is for counts that other
// tests' processes and goroutines, ending meanwhile, may lower; a leak
// shows as more.
func CheckFDsAtMost(t testing.TB, when string, pid int, filter FDFilter, limit int) {
	t.Helper()
	var got []string
	if !Until(Patience, func() bool { got = listFDs(t, pid, filter); return len(got) <= limit }) {
		t.Errorf("descriptors of process %d %s: %d, want at most %d:\n\t%s", pid, when, len(got), limit, strings.Join(got, "\n\t"))
	}
}

// CheckGoroutines waits up to Patience until this process runs at most
// limit goroutines, and reports an error (t.Errorf) with their stacks if
// it never does. At most, because goroutines of earlier tests may end
// meanwhile; a leak shows as more.
func CheckGoroutines(t testing.TB, when string, limit int) {
	t.Helper()
	var got int
	if !Until(Patience, func() bool { got = runtime.NumGoroutine(); return got <= limit }) {
		t.Errorf("goroutines %s: %d, want at most %d:\n%s", when, got, limit, allStacks())
	}
}
