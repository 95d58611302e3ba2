package reap

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
)

// Reaper starts child processes and reaps them; see the package
// documentation for which processes it sees.
type Reaper struct {
	mu      sync.Mutex     // held around every reap and every signal, so that a PID is never reused under it
	exited  map[int]string // reaped PID → how it ended ("exit status 0", "killed by SIGKILL")
	changed chan struct{}  // closed and replaced on every change
	platform
}

// Process is a process that [Reaper.KillLeft] killed.
type Process struct {
	PID     int
	Command string // its command line, as far as it is known
}

func (p Process) String() string { return fmt.Sprintf("pid %d (%s)", p.PID, p.Command) }

var theReaper = sync.OnceValues(newReaper)

// New returns the process's Reaper, setting it up on the first call; every
// call returns the same one. On Linux it makes the process a child
// subreaper, and fails if that fails.
func New() (*Reaper, error) { return theReaper() }

// Start starts cmd in a process group of its own (so that a Ctrl-C in the
// terminal reaches the driver only, which then stops its children in
// order); the Reaper reaps it. Since nothing may call cmd.Wait, cmd's
// Stdin, Stdout and Stderr must be nil or *os.File, and cmd must not come
// from exec.CommandContext: what os/exec does for those in Wait would
// never happen.
func (r *Reaper) Start(cmd *exec.Cmd) error {
	for _, s := range []any{cmd.Stdin, cmd.Stdout, cmd.Stderr} {
		switch s.(type) {
		case nil, *os.File:
		default:
			return fmt.Errorf("reap: start %s: a standard stream is a %T, not an *os.File: it would need exec.Cmd.Wait", cmd.Path, s)
		}
	}
	if cmd.Cancel != nil {
		return fmt.Errorf("reap: start %s: made by exec.CommandContext, whose cancellation needs exec.Cmd.Wait", cmd.Path)
	}
	ownProcessGroup(cmd)
	return r.start(cmd)
}

// Status says how pid ended, if the Reaper has reaped it.
func (r *Reaper) Status(pid int) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, ok := r.exited[pid]
	return st, ok
}

// WaitPID waits until the Reaper has reaped pid and says how it ended, or
// returns ctx's cause. pid must be a process the Reaper will reap: one it
// started or, where [SeesEveryProcess], any descendant whose own parent
// does not wait for it.
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

// WaitAllGone waits until every process the Reaper sees is gone (where
// [SeesEveryProcess], every descendant of the driver; elsewhere the
// processes it started) and reports whether that happened before ctx
// ended.
func (r *Reaper) WaitAllGone(ctx context.Context) bool {
	for {
		r.mu.Lock()
		gone, changed := r.allGoneLocked(), r.changed
		r.mu.Unlock()
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

func (r *Reaper) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}
