// Package proctest holds what molt's multi-process tests share, so that
// each helper exists once, with one meaning:
//
//   - Roles: a test binary that plays its own child processes ([Dispatch]),
//     and the event lines those processes print for the test to read
//     ([Say], [Events]). A role reports with Say ("event ready pid=12
//     gen=2"); the test reads with [Events.Wait], which keeps events of
//     other names for later calls, since processes of several generations
//     report in no fixed order.
//   - Processes: whether one has exited ([Gone]), waiting until it has
//     ([AwaitGone], [WaitGone]), its state ([State]), a process's children
//     ([ChildrenOf], [NewChildren]) and clean-up ([KillIfOurs]).
//   - Leaks: counting a process's descriptors by kind ([CountFDs] with an
//     [FDFilter]) and checking that descriptors and goroutines came back
//     to a baseline ([CheckFDs], [CheckFDsAtMost], [CheckGoroutines]).
//   - Waiting: one bounded poll for conditions outside the test's control
//     ([Until], [WaitUntil], all bounded by [Patience]), and a way to prove
//     that a goroutine is blocked in a call before the test unblocks it
//     ([GoroutineID], [WaitBlocked]) instead of sleeping.
package proctest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Dispatch runs the role named by the environment variable envRole, if it
// is set, and exits with the role's status; otherwise it returns. Call it
// first in TestMain. An unknown role exits with status 2.
func Dispatch(envRole string, roles map[string]func() int) {
	name := os.Getenv(envRole)
	if name == "" {
		return
	}
	role, ok := roles[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown test role %q\n", name)
		os.Exit(2)
	}
	os.Exit(role())
}

// Say prints one event line on standard output: "event " and the format.
func Say(format string, args ...any) {
	fmt.Printf("event "+format+"\n", args...)
}

// Events reads the event lines of role processes.
type Events struct {
	lines   chan string
	backlog []string // read but not asked for yet; used by the test goroutine only

	mu   sync.Mutex
	pids []int // every process that reported a pid: killed by KillAll
}

// NewEvents reads event lines from r until every writer has closed it.
func NewEvents(r io.Reader) *Events {
	ev := &Events{lines: make(chan string, 256)}
	go func() {
		defer close(ev.lines)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), "event ")
			if !ok {
				continue
			}
			if _, f := ParseEvent(line); f["pid"] != "" {
				pid, _ := strconv.Atoi(f["pid"])
				ev.mu.Lock()
				ev.pids = append(ev.pids, pid)
				ev.mu.Unlock()
			}
			ev.lines <- line
		}
	}()
	return ev
}

// Wait returns the fields of the first event called name not returned
// yet, and fails the test if none comes within Patience or the role
// processes are gone.
func (ev *Events) Wait(t testing.TB, name string) map[string]string {
	t.Helper()
	for i, line := range ev.backlog {
		if n, fields := ParseEvent(line); n == name {
			ev.backlog = append(ev.backlog[:i], ev.backlog[i+1:]...)
			return fields
		}
	}
	deadline := time.NewTimer(Patience)
	defer deadline.Stop()
	for {
		select {
		case line, ok := <-ev.lines:
			if !ok {
				t.Fatalf("no %q event: the role processes are gone (other events: %q)", name, ev.backlog)
			}
			if n, fields := ParseEvent(line); n == name {
				return fields
			}
			ev.backlog = append(ev.backlog, line)
		case <-deadline.C:
			t.Fatalf("no %q event within %v (other events: %q)", name, Patience, ev.backlog)
		}
	}
}

// KillAll kills every process that reported a pid, for clean-up.
func (ev *Events) KillAll() {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	for _, pid := range ev.pids {
		if p, err := os.FindProcess(pid); err == nil && pid > 0 {
			p.Kill()
		}
	}
}

// ParseEvent splits `name k=v k2="quoted value"` into the name and fields.
func ParseEvent(line string) (string, map[string]string) {
	name, rest, _ := strings.Cut(line, " ")
	m := map[string]string{}
	for rest = strings.TrimSpace(rest); rest != ""; rest = strings.TrimSpace(rest) {
		k, v, _ := strings.Cut(rest, "=")
		rest = ""
		if q, err := strconv.QuotedPrefix(v); err == nil {
			rest = v[len(q):]
			v, _ = strconv.Unquote(q)
		} else if i := strings.IndexByte(v, ' '); i >= 0 {
			v, rest = v[:i], v[i:]
		}
		m[k] = v
	}
	return name, m
}

// ShortDir returns a new directory with a short path, removed at cleanup:
// a Unix socket path must fit in about 100 bytes, which t.TempDir's often
// do not.
func ShortDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "mt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}
