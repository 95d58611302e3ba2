package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/moltgo/molt/internal/reap"
)

// outsideRun is a client program not written here (wrk, h2load), started
// with its output captured in a temporary file.
type outsideRun struct {
	r   *reap.Reaper
	cmd *exec.Cmd
	out *os.File
}

// startOutside starts path with args, its standard output and error going
// to a temporary file. The reaper reaps it.
func startOutside(r *reap.Reaper, path string, args []string) (*outsideRun, error) {
	f, err := os.CreateTemp("", "drainbench-outside-*.txt")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := r.Start(cmd); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	return &outsideRun{r: r, cmd: cmd, out: f}, nil
}

// wait waits at most bound for the program to exit (killing it after
// that) and returns how it ended and what it printed. It removes the file.
func (o *outsideRun) wait(ctx context.Context, bound time.Duration) (status, output string) {
	defer os.Remove(o.out.Name())
	defer o.out.Close()
	wctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	status, err := o.r.WaitPID(wctx, o.cmd.Process.Pid)
	if err != nil {
		status = fmt.Sprintf("still running: %v", err)
		o.r.Signal(o.cmd.Process.Pid, syscall.SIGKILL) // not reaped yet, so the PID is still its own
	}
	b, _ := os.ReadFile(o.out.Name())
	return status, string(b)
}
