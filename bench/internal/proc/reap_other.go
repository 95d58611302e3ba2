//go:build !linux

package proc

import (
	"context"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// SeesEveryProcess says whether the Reaper knows about every process the
// driver's children start: not here, where only Linux's child subreaper
// makes orphaned generations the driver's children.
const SeesEveryProcess = false

// Reaper is the portable fallback: it waits for the driver's own children
// only (generation 1 of each server chain, and wrk); later generations are
// re-parented to init. The driver then relies on the servers' output pipe
// ending to know that they are gone.
type Reaper struct {
	mu      sync.Mutex
	exited  map[int]string
	changed chan struct{}
}

func NewReaper() (*Reaper, error) {
	return &Reaper{exited: map[int]string{}, changed: make(chan struct{})}, nil
}

func (r *Reaper) Start(cmd *exec.Cmd) error {
	OwnProcessGroup(cmd)
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() {
		err := cmd.Wait()
		st := "exit status 0"
		if err != nil {
			st = err.Error()
		}
		r.mu.Lock()
		r.exited[cmd.Process.Pid] = st
		close(r.changed)
		r.changed = make(chan struct{})
		r.mu.Unlock()
	}()
	return nil
}

func (r *Reaper) Signal(pid int, sig syscall.Signal) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Signal(sig)
}

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

func (r *Reaper) WaitAllGone(context.Context) bool { return true }

func (r *Reaper) KillLeft(time.Duration) []string { return nil }
