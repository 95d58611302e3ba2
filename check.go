package molt

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// The pre-flight check: before an upgrade hands anything over, the new
// binary is started once more in check mode (envCheck in its
// environment), where its New runs [Options.Check] and exits, 0 or not.
// A failure aborts the upgrade before the successor is started for real.

// envCheck marks a process started to run its pre-flight check.
const envCheck = "MOLT_CHECK"

// MaxCheckOutput is how much of a check's output (standard output and
// standard error together) is kept, in bytes; the rest is dropped and
// the kept output says so.
const MaxCheckOutput = 16 << 10

// CheckError is the cause in a [*ChildError] at [StageCheck]: the new
// binary's pre-flight check failed, or did not finish in time.
type CheckError struct {
	// Output is what the check wrote, standard output and standard error
	// together, at most [MaxCheckOutput] bytes.
	Output string
	// Err is how it ended: an *exec.ExitError, [ErrReadyTimeout], or
	// the context's error.
	Err error
}

func (e *CheckError) Error() string {
	out := strings.Join(strings.Fields(strings.ReplaceAll(e.Output, "\n", " | ")), " ")
	out = strings.TrimSuffix(out, " |")
	if out == "" {
		return e.Err.Error()
	}
	const max = 512
	if len(out) > max {
		out = out[:max] + "..."
	}
	return fmt.Sprintf("%v: %s", e.Err, out)
}

func (e *CheckError) Unwrap() error { return e.Err }

// runCheckMode is New in a process started to check itself: it runs
// check and returns the exit status.
func runCheckMode(check func(context.Context) error, timeout time.Duration) int {
	if check == nil {
		fmt.Fprintln(os.Stderr, "molt: this binary defines no check (Options.Check is nil): nothing to check")
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := check(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "molt: check failed: %v\n", err)
		return 1
	}
	return 0
}

// Check runs the pre-flight check of the binary [Upgrader.Upgrade] would
// start now, with the same command ([Options.Command] is called for it
// too), without upgrading: the binary is started with molt's check marker
// in its environment, so that its [New] runs its [Options.Check] and exits.
// It returns nil if the check exited 0, and otherwise a [*ChildError] at
// [StageCheck] whose cause is a [*CheckError] with the check's output. The
// check must end within [Options.ReadyTimeout] and ctx; if not, it is
// killed with its process group. A binary built without molt's check
// support does not exit on its own: it is killed then, and the check
// fails. Upgrade runs the check by itself when this process sets
// [Options.Check]. Check changes nothing and may run at any time.
func (u *Upgrader) Check(ctx context.Context) error {
	start := time.Now()
	out, pid, err := u.runCheck(ctx)
	if err != nil {
		u.log.Error("molt: check failed", "check_pid", pid, "duration", time.Since(start), "err", err)
		return err
	}
	u.log.Info("molt: check passed", "check_pid", pid, "duration", time.Since(start), "output", strings.TrimSpace(out))
	return nil
}

// runCheck starts the check and waits for it; it returns the output, the
// check's PID (0 if it did not start) and the error for Check.
func (u *Upgrader) runCheck(ctx context.Context) (string, int, error) {
	cmd, err := u.successorCommand()
	if err != nil {
		return "", 0, &ChildError{Stage: StageCheck, Err: err}
	}
	cmd.Env = checkEnv(cmd.Env)
	var out boundedBuffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, &out, &out
	if err := cmd.Start(); err != nil {
		return "", 0, &ChildError{Stage: StageCheck, Err: err}
	}
	pid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }() // ends when the check is reaped
	timer := time.NewTimer(u.opts.readyTimeout())
	defer timer.Stop()
	var cause error
	select {
	case err = <-done:
	case <-timer.C:
		cause = ErrReadyTimeout
	case <-ctx.Done():
		cause = context.Cause(ctx)
	}
	if cause != nil {
		killGroup(pid)
		<-done
		err = cause
	} else if err == nil {
		killGroup(pid) // what the check started must not outlive it
		return out.String(), pid, nil
	}
	return out.String(), pid, &ChildError{PID: pid, Stage: StageCheck, Err: &CheckError{Output: out.String(), Err: err}, State: cmd.ProcessState}
}

// checkEnv is the successor's environment for a check: with the check
// marker, and without NOTIFY_SOCKET, so that nothing the check runs can
// speak for the service to systemd.
func checkEnv(env []string) []string {
	return append(withoutVars(env, "NOTIFY_SOCKET", envCheck), envCheck+"=1")
}

// boundedBuffer keeps the first MaxCheckOutput bytes written to it, and
// notes that it dropped the rest. The check's two streams write to it
// from exec's copying goroutines.
type boundedBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	dropped int
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	room := MaxCheckOutput - b.buf.Len()
	if room < len(p) {
		b.dropped += len(p) - max(room, 0)
		b.buf.Write(p[:max(room, 0)])
		return len(p), nil
	}
	b.buf.Write(p)
	return len(p), nil
}

func (b *boundedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dropped > 0 {
		return fmt.Sprintf("%s\n[molt: %d more bytes of output dropped]\n", b.buf.String(), b.dropped)
	}
	return b.buf.String()
}
