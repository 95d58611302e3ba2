//go:build !linux

package main

import (
	"context"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// seesEveryProcess says whether the reaper knows about every process the
// driver's children start: not here, where only Linux's child subreaper
// makes orphaned generations the driver's children.
const seesEveryProcess = false

// reaper is the portable fallback: it waits for the driver's own children
// only (generation 1 of each server chain, and wrk); later generations are
// re-parented to init. The driver then relies on the servers' output pipe
// ending to know that they are gone.
type reaper struct {
	mu      sync.Mutex
	exited  map[int]string
	changed chan struct{}
}

func newReaper() (*reaper, error) {
	return &reaper{exited: map[int]string{}, changed: make(chan struct{})}, nil
}

func (r *reaper) start(cmd *exec.Cmd) error {
	ownProcessGroup(cmd)
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

func (r *reaper) signal(pid int, sig syscall.Signal) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Signal(sig)
}

func (r *reaper) waitPID(ctx context.Context, pid int) (string, error) {
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

func (r *reaper) waitAllGone(context.Context) bool { return true }

func (r *reaper) killLeft(time.Duration) []string { return nil }
