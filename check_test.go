//go:build unix

package molt_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/internal/proctest"
)

// startChecked creates generation 1 in the test process, opted in to the
// pre-flight check, serving "pid gen" on loopback; its successors play
// "serve" with the check *mode says (see roleCheck).
func startChecked(t *testing.T, mode *atomic.Value) (*molt.Upgrader, *proctest.Events, string) {
	t.Helper()
	ev, w := pipe(t)
	u, err := molt.New(molt.Options{
		Logger:       roleLogger(),
		ReadyTimeout: 30 * time.Second,
		Check:        func(context.Context) error { return nil },
		Command: func(cmd *exec.Cmd) error {
			return roleCommand("serve", "tcp 127.0.0.1:0", w, nil, envCheck+"="+mode.Load().(string))(cmd)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		u.Stop()
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strconv.Itoa(os.Getpid()) + " " + strconv.FormatUint(u.Generation(), 10)))
	})}
	served := make(chan struct{})
	go func() { srv.Serve(ln); close(served) }()
	go func() { // after an upgrade, only the successor accepts (a stop must reach it)
		<-u.Exit()
		srv.Close()
	}()
	t.Cleanup(func() {
		u.Stop()
		srv.Close()
		<-served
	})
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	return u, ev, "http://" + ln.Addr().String()
}

// checkFailure asserts that err is a failed check at StageCheck with the
// role's output and exit status 1.
func checkFailure(t *testing.T, what string, err error) {
	t.Helper()
	var ce *molt.ChildError
	var chk *molt.CheckError
	if !errors.As(err, &ce) || ce.Stage != molt.StageCheck || !errors.As(err, &chk) {
		t.Fatalf("%s = %v, want a *ChildError at stage check with a *CheckError", what, err)
	}
	for _, want := range []string{"loading /etc/svc.conf\n", "molt: check failed: /etc/svc.conf:3: listen: port 99999 out of range\n"} {
		if !strings.Contains(chk.Output, want) {
			t.Errorf("%s: the check's output %q lacks %q", what, chk.Output, want)
		}
	}
	if ce.State == nil || ce.State.ExitCode() != 1 || ce.PID == 0 {
		t.Errorf("%s: check pid %d ended as %v, want exit status 1", what, ce.PID, ce.State)
	}
	if msg := err.Error(); !strings.Contains(msg, "the new binary's check (pid "+strconv.Itoa(ce.PID)+") failed: exit status 1: ") ||
		!strings.Contains(msg, "port 99999 out of range") {
		t.Errorf("%s: message %q does not name the check, its status and its output", what, msg)
	}
	proctest.WaitGone(t, ce.PID)
}

// TestCheckFailsUpgrade: a new binary whose check fails is never started
// for real: Upgrade and Check return its output, this generation serves
// on, and once the check passes the upgrade goes through.
func TestCheckFailsUpgrade(t *testing.T) {
	fds := proctest.CountFDs(t, os.Getpid(), proctest.NoPidfds)
	var mode atomic.Value
	mode.Store("fail")
	u, ev, url := startChecked(t, &mode)

	checkFailure(t, "Check", u.Check(context.Background()))
	checkFailure(t, "Upgrade", u.Upgrade(context.Background()))
	if st := u.State(); st != molt.StateReady {
		t.Errorf("after the failed check the state is %v, want ready", st)
	}
	if last := u.Stats().LastUpgrade; last == nil || last.Err == nil || !strings.Contains(last.Err.Error(), "port 99999") {
		t.Errorf("the last upgrade recorded is %+v, want the failed check", last)
	}
	if body, err := httpGet(url); err != nil || body != strconv.Itoa(os.Getpid())+" 1" {
		t.Errorf("after the failed check: GET = %q, %v; want generation 1 serving", body, err)
	}

	mode.Store("pass")
	if err := u.Check(context.Background()); err != nil {
		t.Fatalf("Check with a passing check = %v", err)
	}
	if err := u.Upgrade(context.Background()); err != nil {
		t.Fatalf("Upgrade with a passing check = %v", err)
	}
	// The first event from any successor: no process was started for
	// real before this one, and the checks' output went to the checks.
	ready := ev.Wait(t, "ready")
	if ready["gen"] != "2" {
		t.Errorf("the first successor to be ready is %v, want generation 2", ready)
	}
	if _, err := httpPost("http://" + ready["addr"] + "/stop"); err != nil {
		t.Error(err)
	}
	u.Stop() // the successor's Stop waits for its parent to be gone
	pid, _ := strconv.Atoi(ready["pid"])
	proctest.WaitGone(t, pid)
	proctest.CheckFDs(t, "after Stop", os.Getpid(), proctest.NoPidfds, fds+2) // + the events pipe
}

// TestCheckTimeout: a check that does not end (or a binary without check
// support, which would serve instead) is killed when ctx ends.
func TestCheckTimeout(t *testing.T) {
	var mode atomic.Value
	mode.Store("hang")
	u, _, _ := startChecked(t, &mode)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := u.Check(ctx)
	var ce *molt.ChildError
	if !errors.As(err, &ce) || ce.Stage != molt.StageCheck || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Check of a hanging check = %v, want stage check, deadline exceeded", err)
	}
	proctest.WaitGone(t, ce.PID)
}

// TestCheckNotDefined: a binary that defines no check passes, and says so.
func TestCheckNotDefined(t *testing.T) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envRole+"=serve", "MOLT_CHECK=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "defines no check") {
		t.Errorf("a binary without a check, in check mode: %v, %q; want exit 0 and a notice", err, out)
	}
	cmd = exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envRole+"=serve", "MOLT_CHECK=1", envCheck+"=fail")
	out, err = cmd.CombinedOutput()
	if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "port 99999") {
		t.Errorf("a failing check run by hand: %v, %q; want exit status 1 and the error", err, out)
	}
}
