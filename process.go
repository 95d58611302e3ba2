package molt

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moltgo/molt/internal/handoff"
)

// The parent's handle on a successor process: how it is started (the
// executable found now, this process's arguments, directory and
// environment), waited for, killed with its process group and reaped.

// process is one started successor and the parent's end of its hand-off
// channel.
type process struct {
	cmd  *exec.Cmd // nil for a taker (takeover.go): a process this one did not start
	conn *handoff.Conn
	// taker is the handle on a successor that connected by itself; nil
	// for one this process started.
	taker *takerHandle
	// sendMu serialises the parent's writes on conn once the successor
	// serves (the ACK, then handed-over connections).
	sendMu sync.Mutex

	exited chan struct{} // closed when the process has exited (on Linux, before it is reaped)
	reapOK chan struct{} // closed when the waiter may reap it (its process group was dealt with)
	reaped chan struct{} // closed once reaped; waitErr is set then
	once   sync.Once     // closes reapOK
	// waitErr is what cmd.Wait returned; written by the waiter before it
	// closes reaped, read only after reaped is closed.
	waitErr error
	// sendErr is the first failed send after the upgrade; guarded by
	// sendMu.
	sendErr error
}

func (s *process) pid() int {
	if s.taker != nil {
		return s.taker.pid
	}
	return s.cmd.Process.Pid
}

// successorCommand builds the command for the next generation: the
// executable as found now, this process's arguments, start directory and
// environment (without molt's marker and systemd's LISTEN_* variables),
// then [Options.Command]'s changes.
func (u *Upgrader) successorCommand() (*exec.Cmd, error) {
	path, err := u.executable()
	if err != nil {
		return nil, err
	}
	cmd := &exec.Cmd{
		Path:        path,
		Args:        append([]string(nil), os.Args...),
		Dir:         u.successorDir(),
		Env:         successorEnv(os.Environ()),
		Stdin:       os.Stdin,
		Stdout:      os.Stdout,
		Stderr:      os.Stderr,
		SysProcAttr: successorSysProcAttr(),
	}
	if u.opts.Command != nil {
		if err := u.opts.Command(cmd); err != nil {
			return nil, fmt.Errorf("molt: Options.Command: %w", err)
		}
	}
	if cmd.Process != nil {
		return nil, errors.New("molt: Options.Command started the command itself")
	}
	if cmd.Dir != "" {
		// exec would report a missing directory as a missing binary.
		if fi, err := os.Stat(cmd.Dir); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("molt: the successor's working directory %s (set by Options.Command) cannot be used: %w", cmd.Dir, notDir(fi, err))
		}
	}
	// The successor's own process group, whatever the hook did with
	// SysProcAttr: a failed successor is killed with everything it started.
	cmd.SysProcAttr = withOwnProcessGroup(cmd.SysProcAttr)
	if cmd.WaitDelay == 0 {
		// A grandchild holding a stdout pipe the hook set must not keep a
		// failed successor unreaped (and the upgrade "in progress").
		cmd.WaitDelay = time.Second
	}
	return cmd, nil
}

// successorDir is the directory the successor starts in: this process's
// working directory at New, or, when that is gone (a deploy removed an old
// release's directory) or was never known, "/", with a warning naming it:
// exec would otherwise fail every upgrade with a misleading "no such file
// or directory" for the binary.
func (u *Upgrader) successorDir() string {
	if u.startDir == "" {
		u.log.Warn("molt: this process's working directory was unknown at start; the successor starts in /")
		return "/"
	}
	fi, err := os.Stat(u.startDir)
	if err == nil && fi.IsDir() {
		return u.startDir
	}
	u.log.Warn("molt: the working directory is gone; the successor starts in /",
		"dir", u.startDir, "err", notDir(fi, err))
	return "/"
}

// notDir is why a directory cannot be used: err, or, without one, that fi
// is not a directory.
func notDir(fi os.FileInfo, err error) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("%s is not a directory", fi.Name())
}

// executable finds the binary to start now. os.Args[0] names the file the
// operator chose (a symlink that a deploy may have switched, a path a new
// build replaced), so it wins when it is a path to an existing file, or a
// name found in PATH. Otherwise the kernel's record of this process's
// binary is used, which cannot follow a switched symlink.
func (u *Upgrader) executable() (string, error) {
	if u.argv0 != "" {
		if strings.ContainsRune(u.argv0, filepath.Separator) {
			if fi, err := os.Stat(u.argv0); err == nil && fi.Mode().IsRegular() {
				return u.argv0, nil
			}
		} else if p, err := exec.LookPath(u.argv0); err == nil {
			if abs, err := filepath.Abs(p); err == nil {
				return abs, nil
			}
		}
	}
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("molt: cannot find this program's executable: %w", err)
	}
	// Linux reports a replaced binary as "/path (deleted)"; the new file
	// at the path is the one to start.
	p = strings.TrimSuffix(p, " (deleted)")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("molt: executable %s: %w", p, err)
	}
	return p, nil
}

// successorEnv drops what must not reach the successor: molt's own marker
// (set anew for each successor) and systemd's socket activation variables
// (the sockets travel in the inventory; LISTEN_PID would not match).
func successorEnv(env []string) []string {
	return withoutVars(env, envHandoffFD, envCheck, "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
}

// withoutVars returns a copy of the environment env without the variables
// names.
func withoutVars(env []string, names ...string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if name, _, _ := strings.Cut(kv, "="); !slices.Contains(names, name) {
			out = append(out, kv)
		}
	}
	return out
}

// startSuccessor starts cmd with the child's end of a new hand-off channel
// and a goroutine that waits for it to exit. reapers counts those
// goroutines. hello is written to the channel before the process starts,
// so that the successor's New finds it there at once, whatever the parent
// is busy with after the fork.
func startSuccessor(cmd *exec.Cmd, reapers *sync.WaitGroup, hello handoff.Hello) (*process, error) {
	conn, childEnd, err := handoff.Pair()
	if err != nil {
		return nil, fmt.Errorf("molt: hand-off channel: %w", err)
	}
	// A few dozen bytes into an empty socket buffer: this never blocks.
	if err := conn.SendHello(hello); err != nil {
		conn.Close()
		childEnd.Close()
		return nil, fmt.Errorf("molt: hand-off channel: %w", err)
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, childEnd)
	cmd.Env = append(cmd.Env, envHandoffFD+"="+strconv.Itoa(2+len(cmd.ExtraFiles)))
	err = cmd.Start()
	childEnd.Close() // the child has its copy; ours would hide its exit
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("molt: start %s: %w", cmd.Path, err)
	}
	s := &process{
		cmd:    cmd,
		conn:   conn,
		exited: make(chan struct{}),
		reapOK: make(chan struct{}),
		reaped: make(chan struct{}),
	}
	reapers.Add(1)
	go s.wait(reapers)
	return s, nil
}

// wait is the successor's waiter. It ends when the process has exited and
// been reaped. Between the two it waits for reapOK: while the exited
// process is not reaped its PID, and so its process group ID, cannot be
// reused, which makes killing the group safe.
func (s *process) wait(reapers *sync.WaitGroup) {
	defer reapers.Done()
	if waitExitedNoReap(s.pid()) {
		close(s.exited)
		<-s.reapOK
		s.waitErr = s.cmd.Wait()
	} else {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}
	close(s.reaped)
}

// fail ends a failed upgrade: it gives the successor up to grace to exit
// by itself, then kills its process group, reaps it and closes the
// hand-off channel. If the process had exited on its own and preferExit is
// set, its exit status (an *exec.ExitError) replaces cause, which then only
// said that the channel ended. It returns the error for Upgrade.
func (s *process) fail(stage Stage, cause error, grace time.Duration, preferExit bool) error {
	if s.taker != nil {
		if preferExit {
			// No exit status to learn: what the end of the channel means.
			cause = fmt.Errorf("molt: the taker closed the takeover connection (it exited or gave up): %w", cause)
		}
		return s.failTaker(stage, cause, grace)
	}
	if grace > 0 {
		t := time.NewTimer(grace)
		select {
		case <-s.exited:
		case <-t.C:
		}
		t.Stop()
	}
	exitedAlone := isDone(s.exited)
	killGroup(s.pid())
	s.release()
	<-s.reaped
	s.conn.Close()
	if exitedAlone && preferExit {
		cause = s.waitErr
		if cause == nil {
			cause = errors.New("exited with status 0 before READY")
			if stage == StageProbation {
				cause = errors.New("exited with status 0")
			}
		}
	}
	return &ChildError{PID: s.pid(), Stage: stage, Err: cause, State: s.cmd.ProcessState}
}

// release lets the waiter of a successor that took over reap it whenever it
// exits; nothing kills it.
func (s *process) release() {
	s.once.Do(func() {
		close(s.reapOK)
		if s.taker != nil {
			s.taker.close() // it is not ours to kill any more
		}
	})
}
