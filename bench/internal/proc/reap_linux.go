package proc

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

// SeesEveryProcess says whether the Reaper knows about every process the
// driver's children start (true where it is a child subreaper).
const SeesEveryProcess = true

// Reaper makes the driver a child subreaper (Linux re-parents every
// orphaned descendant to it) and reaps all of its children with wait4(-1):
// the server generations, whose parents exit before them, and wrk. Nothing
// else may wait for them (never exec.Cmd.Wait). When wait4 fails with
// ECHILD, no descendant is left at all, because every living descendant of
// a subreaper has a chain of living ancestors up to it.
type Reaper struct {
	mu      sync.Mutex // held around every wait4 and every kill, so a PID is never reused under us
	exited  map[int]string
	none    bool          // the last wait4 found no child at all
	changed chan struct{} // closed and replaced on every change
}

func NewReaper() (*Reaper, error) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", err)
	}
	r := &Reaper{exited: map[int]string{}, changed: make(chan struct{})}
	sigchld := make(chan os.Signal, 1)
	signal.Notify(sigchld, syscall.SIGCHLD)
	go func() { // for the life of the process
		tick := time.NewTicker(100 * time.Millisecond) // in case signals were coalesced
		defer tick.Stop()
		for {
			r.reap()
			select {
			case <-sigchld:
			case <-tick.C:
			}
		}
	}()
	return r, nil
}

// start starts cmd in a process group of its own.
func (r *Reaper) Start(cmd *exec.Cmd) error {
	OwnProcessGroup(cmd)
	r.mu.Lock()
	defer r.mu.Unlock()
	err := cmd.Start()
	if err == nil {
		r.none = false
	}
	return err
}

func (r *Reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil: // ECHILD
			if !r.none {
				r.none = true
				r.notifyLocked()
			}
			return
		case pid <= 0:
			return
		}
		r.exited[pid] = describeStatus(ws)
		r.notifyLocked()
	}
}

func (r *Reaper) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// signal sends sig to pid unless the driver has reaped pid already.
func (r *Reaper) Signal(pid int, sig syscall.Signal) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.exited[pid]; ok {
		return os.ErrProcessDone
	}
	return unix.Kill(pid, sig)
}

// waitPID waits until the driver reaped pid, one of its children, and
// says how it ended.
func (r *Reaper) WaitPID(ctx context.Context, pid int) (string, error) {
	for {
		r.mu.Lock()
		st, ok := r.exited[pid]
		changed := r.changed
		r.mu.Unlock()
		if ok {
			return st, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return "", context.Cause(ctx)
		}
	}
}

// waitAllGone waits until no descendant of the driver is left, and reports
// whether that happened before ctx ended.
func (r *Reaper) WaitAllGone(ctx context.Context) bool {
	for {
		r.mu.Lock()
		none, changed := r.none, r.changed
		r.mu.Unlock()
		if none {
			return true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		}
	}
}

// killLeft kills every living descendant of the driver with SIGKILL,
// waits up to grace for them to be reaped and returns them, each with its
// command line.
func (r *Reaper) KillLeft(grace time.Duration) []string {
	var left []string
	r.mu.Lock()
	for _, pid := range descendants(os.Getpid()) {
		left = append(left, fmt.Sprintf("pid %d (%s)", pid, cmdline(pid)))
		// mu is held, so the driver's own children cannot be reaped and
		// their PIDs reused meanwhile; a deeper descendant's PID could only
		// be reused within this instant.
		unix.Kill(pid, unix.SIGKILL)
	}
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	r.WaitAllGone(ctx)
	return left
}

// descendants lists the living processes below root, from /proc.
func descendants(root int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, state, ok := procStat(pid); ok && state != "Z" {
			children[ppid] = append(children[ppid], pid)
		}
	}
	var out []int
	for queue := []int{root}; len(queue) > 0; queue = queue[1:] {
		out = append(out, children[queue[0]]...)
		queue = append(queue, children[queue[0]]...)
	}
	slices.Sort(out)
	return out
}

// procStat reads the state and the parent of pid from /proc/PID/stat.
func procStat(pid int) (ppid int, state string, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, "", false
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, "", false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, "", false
	}
	ppid, err = strconv.Atoi(f[1])
	return ppid, f[0], err == nil
}

func cmdline(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

func describeStatus(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return "exit status " + strconv.Itoa(ws.ExitStatus())
	case ws.Signaled():
		return "killed by " + unix.SignalName(ws.Signal())
	}
	return fmt.Sprintf("wait status %#x", uint32(ws))
}
