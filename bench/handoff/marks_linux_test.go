//go:build linux

package handoff

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Marks are the moments of one hand-off that a generation can see from
// where it runs, read from the shared CLOCK_MONOTONIC (now). A generation
// notes them in memory while it hands off and reports them in one "marks"
// line afterwards, so that reporting costs the measured hand-off nothing.
// The driver subtracts them into phases (phases). A system that cannot
// see a moment (tableflip hides its exec and its parent's read of the
// ready byte) leaves it out, and the phases that need it are not reported
// for that system.
const (
	markStart     = "start"     // old: Upgrade called
	markStarted   = "started"   // old: the successor's exec succeeded (fork/exec returned)
	markReadySeen = "readyseen" // old: the successor's ready message read (molt: the commit hook)
	markAckSent   = "acksent"   // old: molt only: the commit hook ran, the ACK is next
	markEntered   = "entered"   // new: TestMain entered: the runtime has started
	markNew       = "new"       // new: the library's New returned (molt: HELLO read)
	markClaimed   = "claimed"   // new: every listener made from its inherited socket
	markReadyCall = "readycall" // new: Ready called
	markReady     = "ready"     // new: Ready returned
	markAccept    = "accept"    // new: the first connection accepted (on listener 0)
)

// marks is one generation's record, safe for concurrent use (the first
// accept is noted by its own goroutine).
type marks struct {
	mu sync.Mutex
	at map[string]int64

	// acceptFirst asks listening to accept once on the first listener.
	acceptFirst bool
	accepted    <-chan struct{} // closed after that accept; nil if none
}

func newMarks() *marks { return &marks{at: make(map[string]int64)} }

// note records name at now, once: the first note of a name counts.
func (m *marks) note(name string) {
	t := now()
	m.mu.Lock()
	if _, ok := m.at[name]; !ok {
		m.at[name] = t
	}
	m.mu.Unlock()
}

// set records name at t.
func (m *marks) set(name string, t int64) {
	m.mu.Lock()
	m.at[name] = t
	m.mu.Unlock()
}

// get returns the moment noted for name.
func (m *marks) get(name string) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.at[name]
}

// line is the report: "marks PID name=t name=t …".
func (m *marks) line(pid int) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	names := make([]string, 0, len(m.at))
	for k := range m.at {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	fmt.Fprintf(&b, "marks %d", pid)
	for _, k := range names {
		fmt.Fprintf(&b, " %s=%d", k, m.at[k])
	}
	return b.String()
}

func parseMarks(rest string) (map[string]int64, error) {
	at := make(map[string]int64)
	for f := range strings.FieldsSeq(rest) {
		k, v, ok := strings.Cut(f, "=")
		t, err := strconv.ParseInt(v, 10, 64)
		if !ok || err != nil {
			return nil, fmt.Errorf("mark %q is not name=nanoseconds", f)
		}
		at[k] = t
	}
	return at, nil
}

// listening is called with each listener a generation makes, i its index
// among the addresses. On listener 0 of a successor it accepts one
// connection in its own goroutine and notes when: the driver dials
// listener 0 before each upgrade, and nobody else accepts, so this first
// accept is the earliest moment the successor could serve a client.
func (m *marks) listening(i int, ln net.Listener) {
	if i != 0 || !m.acceptFirst {
		return
	}
	done := make(chan struct{})
	m.accepted = done
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		m.note(markAccept)
		c.Close()
	}()
}

// awaitAccept waits, at most timeout, for the accept that listening
// started.
func (m *marks) awaitAccept(timeout time.Duration) {
	if m.accepted == nil {
		return
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-m.accepted:
	case <-t.C:
	}
}

// A phase is the time between two marks, averaged over a benchmark's
// upgrades.
type phase struct {
	metric   string // the benchmark metric's unit
	from, to string
}

// phases, in the order a hand-off goes through them. start→entered is
// fork/exec and the runtime's start together, for the systems that do not
// show the exec on its own. "new" includes the generation's own set-up
// before it (signal handlers), the same for every system; exec has no
// library, so its "new" is only that. Only molt has an ACK.
var phases = []phase{
	{"fork-exec-ns/op", markStart, markStarted},
	{"runtime-start-ns/op", markStarted, markEntered},
	{"to-main-ns/op", markStart, markEntered},
	{"new-ns/op", markEntered, markNew},
	{"claim-ns/op", markNew, markClaimed},
	{"ready-msg-ns/op", markReadyCall, markReadySeen},
	{"ack-ns/op", markAckSent, markReady},
	{"first-accept-ns/op", markStart, markAccept},
}

// phaseSums adds up the phases of many upgrades.
type phaseSums struct {
	sum   map[string]time.Duration
	count map[string]int
}

func newPhaseSums() *phaseSums {
	return &phaseSums{sum: make(map[string]time.Duration), count: make(map[string]int)}
}

// add adds the phases of one upgrade whose marks (old and new generation
// together) are at.
func (s *phaseSums) add(at map[string]int64) {
	for _, p := range phases {
		from, ok1 := at[p.from]
		to, ok2 := at[p.to]
		if ok1 && ok2 {
			s.sum[p.metric] += time.Duration(to - from)
			s.count[p.metric]++
		}
	}
}

// report calls metric for each phase seen, with its mean in nanoseconds.
func (s *phaseSums) report(metric func(n float64, unit string)) {
	for _, p := range phases {
		if n := s.count[p.metric]; n > 0 {
			metric(float64(s.sum[p.metric].Nanoseconds())/float64(n), p.metric)
		}
	}
}
