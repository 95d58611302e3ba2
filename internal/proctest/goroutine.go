package proctest

import (
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// GoroutineID returns the calling goroutine's ID, as stack dumps show it.
func GoroutineID() int {
	buf := make([]byte, 128)
	buf = buf[:runtime.Stack(buf, false)]
	if gs := parseStacks(string(buf)); len(gs) == 1 {
		return gs[0].id
	}
	panic(fmt.Sprintf("proctest: no goroutine ID in %q", buf))
}

// WaitBlocked waits until goroutine id (see GoroutineID) is blocked —
// parked or in a system call, not running or runnable — inside a function
// whose name contains fn (such as "(*Conn).RecvMessage"), and returns its
// state as the runtime names it ("IO wait", "chan receive", "syscall",
// ...). It fails the test (t.Fatalf) if the goroutine ends first, or does
// not block there within Patience.
//
// It lets a test prove that a call was blocked when something else
// unblocked it, where a sleep before the unblocking would pass just as
// well if the call had never blocked.
func WaitBlocked(t testing.TB, id int, fn string) string {
	t.Helper()
	var (
		g     goroutine
		found bool
	)
	blocked := Until(Patience, func() bool {
		g, found = findGoroutine(id)
		return !found || (g.state != "running" && g.state != "runnable" && strings.Contains(g.stack, fn))
	})
	switch {
	case !found:
		t.Fatalf("goroutine %d ended before it blocked in %s", id, fn)
	case !blocked:
		t.Fatalf("goroutine %d did not block in %s within %v:\n%s", id, fn, Patience, g.stack)
	}
	return g.state
}

// allStacks returns the stacks of every goroutine, as a panic prints them.
func allStacks() string {
	buf := make([]byte, 64<<10)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}

// goroutine is one goroutine of a stack dump.
type goroutine struct {
	id    int
	state string // "running", "IO wait", "chan receive", ...
	stack string // its whole block, header included
}

// findGoroutine returns goroutine id's entry in a dump of every stack.
func findGoroutine(id int) (goroutine, bool) {
	for _, g := range parseStacks(allStacks()) {
		if g.id == id {
			return g, true
		}
	}
	return goroutine{}, false
}

// parseStacks splits a dump of runtime.Stack into its goroutines. Each
// block starts with a header such as "goroutine 7 [IO wait, 2 minutes]:".
func parseStacks(dump string) []goroutine {
	var gs []goroutine
	for block := range strings.SplitSeq(dump, "\n\n") {
		header, _, _ := strings.Cut(block, "\n")
		rest, ok := strings.CutPrefix(header, "goroutine ")
		if !ok {
			continue
		}
		idText, rest, _ := strings.Cut(rest, " ")
		id, err := strconv.Atoi(idText)
		from, to := strings.IndexByte(rest, '['), strings.LastIndexByte(rest, ']')
		if err != nil || from < 0 || to < from {
			continue
		}
		state, _, _ := strings.Cut(rest[from+1:to], ",")
		gs = append(gs, goroutine{id: id, state: state, stack: block})
	}
	return gs
}
