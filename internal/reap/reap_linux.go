package reap

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SeesEveryProcess says whether the Reaper sees every descendant of the
// driver, including those its children start: true on Linux, where the
// driver is a child subreaper.
const SeesEveryProcess = true

type platform struct {
	none bool // the last wait4 found no child at all, and none was started since
}

func newReaper() (*Reaper, error) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("reap: prctl(PR_SET_CHILD_SUBREAPER): %w", err)
	}
	r := &Reaper{exited: map[int]string{}, changed: make(chan struct{})}
	sigchld := make(chan os.Signal, 1)
	signal.Notify(sigchld, syscall.SIGCHLD)
	r.reap()    // so that none is right from the start
	go func() { // for the life of the process
		// SIGCHLD comes for every child that exits and for every zombie
		// re-parented to the driver; the ticker is only a safety net.
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-sigchld:
			case <-tick.C:
			}
			r.reap()
		}
	}()
	return r, nil
}

// start starts cmd with mu held: the child cannot be reaped before it is
// counted, and a child whose exec failed is reaped by os/exec itself.
func (r *Reaper) start(cmd *exec.Cmd) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	r.none = false
	return nil
}

// reap reaps every child that has exited, without blocking.
func (r *Reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil: // ECHILD: no child at all, living or not
			if !r.none {
				r.none = true
				r.notifyLocked()
			}
			return
		case pid <= 0: // children live, none has exited
			return
		}
		r.exited[pid] = describeStatus(ws)
		r.notifyLocked()
	}
}

func (r *Reaper) allGoneLocked() bool { return r.none }

// Signal sends sig to pid, unless the Reaper has reaped pid already
// (os.ErrProcessDone): that PID may belong to another process by now.
// Holding mu keeps pid from being reaped meanwhile. A descendant that its
// own parent reaped is not known here: signal only processes known to be
// alive or not yet reaped by the Reaper (such as the serving generation).
func (r *Reaper) Signal(pid int, sig syscall.Signal) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.exited[pid]; ok {
		return os.ErrProcessDone
	}
	return unix.Kill(pid, sig)
}

// KillLeft kills every living descendant of the driver with SIGKILL, waits
// up to grace for them to be reaped and returns them, ordered by PID.
func (r *Reaper) KillLeft(grace time.Duration) []Process {
	var left []Process
	r.mu.Lock()
	for _, pid := range descendants(os.Getpid()) {
		left = append(left, Process{PID: pid, Command: cmdline(pid)})
		kill(pid)
	}
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	r.WaitAllGone(ctx)
	return left
}

// kill kills pid with SIGKILL if it still descends from the driver. With a
// pidfd (Linux 5.3 and later) the check and the kill are about the same
// process, so a PID reused by an unrelated process is never killed.
// Without one, the driver's own children are still safe (mu is held, so
// they cannot be reaped and their PIDs reused), a deeper descendant's PID
// could be reused only within this instant.
func kill(pid int) {
	fd, err := unix.PidfdOpen(pid, 0)
	switch {
	case err == unix.ESRCH: // gone already
		return
	case err != nil:
		if isDescendant(pid, os.Getpid()) {
			unix.Kill(pid, unix.SIGKILL)
		}
		return
	}
	defer unix.Close(fd)
	if isDescendant(pid, os.Getpid()) {
		unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
	}
}

// descendants lists the living processes below root (zombies are gone:
// they wait to be reaped), from /proc, ordered by PID.
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

// isDescendant reports whether pid descends from root, following at most
// 64 parents.
func isDescendant(pid, root int) bool {
	for range 64 {
		ppid, _, ok := procStat(pid)
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

// describeStatus says how a reaped process ended.
func describeStatus(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return "exit status " + strconv.Itoa(ws.ExitStatus())
	case ws.Signaled():
		return "killed by " + signalName(ws.Signal())
	}
	return fmt.Sprintf("wait status %#x", uint32(ws))
}
