package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// leftBehindChecked says whether this platform can tell which server
// processes outlived the demo.
const leftBehindChecked = true

// reaper makes the driver a child subreaper and reaps its children: the
// first generation, and every later one whose parent exited before it
// (Linux re-parents it to the nearest living subreaper). Because every
// living descendant of a subreaper has a chain of living ancestors up to
// it, wait4 failing with ECHILD means that all of them are gone.
//
// Processes are reaped only with mu held, so a PID the reaper has not
// recorded as reaped cannot have been reused while mu is held.
type reaper struct {
	mu      sync.Mutex
	starts  int            // processes started by the driver
	goneAt  int            // the value of starts when wait4 last failed with ECHILD
	reaped  map[int]string // reaped PID → how it ended
	changed chan struct{}  // closed and replaced on every change
	kick    chan struct{}  // wakes the loop when a process was started
}

func newReaper() (*reaper, error) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", err)
	}
	r := &reaper{
		goneAt:  -1,
		reaped:  map[int]string{},
		changed: make(chan struct{}),
		kick:    make(chan struct{}, 1),
	}
	sigchld := make(chan os.Signal, 1)
	signal.Notify(sigchld, unix.SIGCHLD)
	go r.loop(sigchld)
	return r, nil
}

// prepare puts the first generation in a process group of its own, as molt
// does for its successors: a Ctrl-C in the terminal reaches the driver
// only, which then stops the servers in order.
func (r *reaper) prepare(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// started records that cmd was started; the loop reaps it (never cmd.Wait).
func (r *reaper) started(*exec.Cmd) {
	r.mu.Lock()
	r.starts++
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// loop reaps the driver's children for the life of the process: on every
// SIGCHLD (sent for a child that exits, and for a zombie re-parented to
// the driver), when a process was started, and every quarter second in
// case a signal was coalesced.
func (r *reaper) loop(sigchld <-chan os.Signal) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		r.reapAll()
		select {
		case <-sigchld:
		case <-r.kick:
		case <-tick.C:
		}
	}
}

// reapAll reaps every child that has exited, without blocking.
func (r *reaper) reapAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil: // ECHILD: no child at all, living or not
			if r.goneAt != r.starts {
				r.goneAt = r.starts
				r.notifyLocked()
			}
			return
		case pid <= 0: // children live, none has exited
			return
		}
		r.reaped[pid] = describeWait(ws)
		r.notifyLocked()
	}
}

func (r *reaper) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// allGone reports whether every process the driver started has exited and
// been reaped, together with all their descendants.
func (r *reaper) allGone() (bool, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.starts > 0 && r.goneAt == r.starts, r.changed
}

// exitOf says how pid ended, if the driver reaped it.
func (r *reaper) exitOf(pid int) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.reaped[pid]
	return s, ok
}

// signal sends sig to pid, the newest server generation. A PID the driver
// reaped is not signalled, since it may have been reused; holding mu keeps
// the driver from reaping it meanwhile. (A generation that died and was
// reaped by its own parent, a generation still draining, is not known
// here; the driver only signals the generation that serves.)
func (r *reaper) signal(pid int, sig syscall.Signal) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.reaped[pid]; ok {
		return os.ErrProcessDone
	}
	return unix.Kill(pid, sig)
}

// waitGone waits until every descendant of the driver is gone or ctx ends.
// Then it kills whatever is still alive with SIGKILL, reaps it (for up to
// grace) and returns the PIDs it had to kill, sorted.
func (r *reaper) waitGone(ctx context.Context, grace time.Duration) []int {
	if r.waitAll(ctx) {
		return nil
	}
	left := descendants(os.Getpid())
	for _, pid := range left {
		killIfDescendant(pid)
	}
	kctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	r.waitAll(kctx)
	return left
}

func (r *reaper) waitAll(ctx context.Context) bool {
	for {
		gone, changed := r.allGone()
		if gone {
			return true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		}
	}
}

// descendants lists the processes below root, from /proc.
func descendants(root int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, ok := parentOf(pid); ok {
			children[ppid] = append(children[ppid], pid)
		}
	}
	var out []int
	queue := []int{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		out = append(out, children[p]...)
		queue = append(queue, children[p]...)
	}
	slices.Sort(out)
	return out
}

// parentOf reads pid's parent from /proc/PID/stat.
func parentOf(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// "pid (comm) state ppid ...": comm may contain spaces and parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	return ppid, err == nil
}

// killIfDescendant kills pid with SIGKILL through a pidfd, after checking
// that the process the pidfd refers to still descends from the driver, so
// that a PID reused by an unrelated process is never killed.
func killIfDescendant(pid int) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return // already gone
	}
	defer unix.Close(fd)
	if !isDescendant(pid, os.Getpid()) {
		return
	}
	unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
}

func isDescendant(pid, root int) bool {
	for range 64 {
		ppid, ok := parentOf(pid)
		switch {
		case ok && ppid == root:
			return true
		case !ok || ppid <= 1:
			return false
		}
		pid = ppid
	}
	return false
}

// describeWait says how a reaped process ended.
func describeWait(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return "exit status " + strconv.Itoa(ws.ExitStatus())
	case ws.Signaled():
		return "killed by " + unix.SignalName(ws.Signal())
	}
	return fmt.Sprintf("wait status %#x", uint32(ws))
}
