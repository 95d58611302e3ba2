//go:build !linux

package main

import (
	"context"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// leftBehindChecked says whether this platform can tell which server
// processes outlived the demo: only Linux, where the driver is a child
// subreaper, can.
const leftBehindChecked = false

// reaper is the portable fallback: it reaps the first generation only;
// later generations are re-parented to init when their parent exits.
type reaper struct{}

func newReaper() (*reaper, error) { return &reaper{}, nil }

func (r *reaper) prepare(*exec.Cmd) {}

func (r *reaper) started(cmd *exec.Cmd) { go cmd.Wait() }

func (r *reaper) exitOf(int) (string, bool) { return "", false }

func (r *reaper) signal(pid int, sig syscall.Signal) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Signal(sig)
}

// waitGone cannot see the processes here; the driver waits for the
// servers' output to end instead.
func (r *reaper) waitGone(context.Context, time.Duration) []int { return nil }
