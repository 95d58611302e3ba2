//go:build !linux

package reap

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// SeesEveryProcess says whether the Reaper sees every descendant of the
// driver, including those its children start: not here, where only the
// processes it started are its children (Linux's child subreaper is what
// makes orphaned descendants the driver's).
const SeesEveryProcess = false

type platform struct {
	running map[int]*exec.Cmd // started and not reaped yet
}

func newReaper() (*Reaper, error) {
	return &Reaper{
		exited:   map[int]string{},
		changed:  make(chan struct{}),
		platform: platform{running: map[int]*exec.Cmd{}},
	}, nil
}

// start starts cmd and waits for it in a goroutine of its own.
func (r *Reaper) start(cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	pid := cmd.Process.Pid
	r.mu.Lock()
	r.running[pid] = cmd
	r.mu.Unlock()
	go func() {
		err := cmd.Wait()
		st := describeState(cmd.ProcessState)
		if cmd.ProcessState == nil {
			st = err.Error()
		}
		r.mu.Lock()
		delete(r.running, pid)
		r.exited[pid] = st
		r.notifyLocked()
		r.mu.Unlock()
	}()
	return nil
}

func (r *Reaper) allGoneLocked() bool { return len(r.running) == 0 }

// Signal sends sig to pid, unless the Reaper has reaped pid already
// (os.ErrProcessDone): that PID may belong to another process by now. A
// process the Reaper started is signalled through its os.Process, which
// knows when it was reaped; any other (a later generation) by its PID.
func (r *Reaper) Signal(pid int, sig syscall.Signal) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.exited[pid]; ok {
		return os.ErrProcessDone
	}
	if cmd, ok := r.running[pid]; ok {
		return cmd.Process.Signal(sig)
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Signal(sig)
}

// KillLeft kills every process the Reaper started that is still running,
// waits up to grace for them to be reaped and returns them, ordered by
// PID. It cannot see their descendants here.
func (r *Reaper) KillLeft(grace time.Duration) []Process {
	var left []Process
	r.mu.Lock()
	for pid, cmd := range r.running {
		left = append(left, Process{PID: pid, Command: strings.Join(cmd.Args, " ")})
		cmd.Process.Kill()
	}
	r.mu.Unlock()
	slices.SortFunc(left, func(a, b Process) int { return a.PID - b.PID })
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	r.WaitAllGone(ctx)
	return left
}

// describeState says how a reaped process ended, in the words of the Linux
// version.
func describeState(ps *os.ProcessState) string {
	if ps == nil {
		return ""
	}
	if ps.Exited() {
		return "exit status " + strconv.Itoa(ps.ExitCode())
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "killed by " + signalName(ws.Signal())
	}
	return ps.String()
}
