package supervise

import (
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// reaper reaps every child of the process: the instances, whose ends it
// reports, and orphans re-parented to this process (it is a child
// subreaper, or process 1), which it only counts. It is process-wide, as
// wait4(-1) is.
type reaper struct {
	mu         sync.Mutex // held around each start and each reap: a PID is never reused under it
	waiters    map[int]*instance
	orphans    uint64
	subreaper  bool
	subreapErr error
}

var theReaper = sync.OnceValue(func() *reaper {
	r := &reaper{waiters: map[int]*instance{}}
	if os.Getpid() != 1 {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			r.subreapErr = os.NewSyscallError("prctl(PR_SET_CHILD_SUBREAPER)", err)
		} else {
			r.subreaper = true
		}
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGCHLD)
	go func() { // for the life of the process
		for range ch {
			r.reap()
		}
	}()
	r.reap()
	return r
})

// start runs fork (which returns the new child's PID) with mu held and
// books the child as inst, so it cannot be reaped before it is known.
func (r *reaper) start(inst *instance, fork func() (int, error)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := fork()
	if err != nil {
		return err
	}
	inst.pid = pid
	r.waiters[pid] = inst
	return nil
}

// reap reaps every child that has exited, without blocking.
func (r *reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		inst, ok := r.waiters[pid]
		if !ok {
			r.orphans++
			continue
		}
		delete(r.waiters, pid)
		// Whatever the instance left in its process group goes with it.
		// The group's ID stays reserved while a member lives, so this
		// reaches the instance's processes only.
		unix.Kill(-pid, unix.SIGKILL)
		inst.reaped(ws)
	}
}

// signal sends sig to inst's process (group, if group) unless inst was
// reaped already: its PID may name another process by now.
func (r *reaper) signal(inst *instance, sig syscall.Signal, group bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.waiters[inst.pid]; !ok || r.waiters[inst.pid] != inst {
		return os.ErrProcessDone
	}
	pid := inst.pid
	if group {
		pid = -pid
	}
	return unix.Kill(pid, sig)
}

// orphansReaped returns how many processes other than instances were
// reaped.
func (r *reaper) orphansReaped() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.orphans
}
