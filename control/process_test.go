//go:build unix

package control_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/moltgo/molt/internal/proctest"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/control"
)

// upgraderWithSuccessors is an Upgrader of this process whose successors
// play role with the control socket sock, reporting events on the
// returned reader.
func upgraderWithSuccessors(t *testing.T, role, sock string) (*molt.Upgrader, *proctest.Events) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	logs, err := os.Create(filepath.Join(t.TempDir(), "successors.log"))
	if err != nil {
		t.Fatal(err)
	}
	ev := proctest.NewEvents(r)
	t.Cleanup(func() {
		w.Close()
		ev.KillAll()
		r.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logs.Name())
			t.Logf("successors' stderr:\n%s", b)
		}
		logs.Close()
	})
	u := newUpgrader(t, molt.Options{
		ReadyTimeout: time.Minute,
		Command: func(cmd *exec.Cmd) error {
			cmd.Env = append(cmd.Env, envRole+"="+role, envSock+"="+sock)
			cmd.Stdout, cmd.Stderr = w, logs
			return nil
		},
	})
	return u, ev
}

// TestUpgradeByRequest upgrades this process to a successor through the
// control socket, then asks the successor for its status and stops it.
func TestUpgradeByRequest(t *testing.T) {
	sock := filepath.Join(proctest.ShortDir(t), "c.sock")
	u, ev := upgraderWithSuccessors(t, "service", sock)
	s := listen(t, u, sock, control.Options{})
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	c, ctx := client(t, sock)
	// As a service's main does: close the server as soon as Exit is
	// closed. The reply of the upgrade that closed it must still arrive.
	closed := make(chan error, 1)
	go func() { <-u.Exit(); closed <- s.Close() }()

	res, err := c.Upgrade(ctx)
	if err != nil {
		t.Fatalf("Upgrade: %v", err)
	}
	if !res.OK || res.PID != os.Getpid() || res.Generation != 1 || res.Successor() != 2 || res.SuccessorPID <= 0 || res.Duration <= 0 {
		t.Errorf("Upgrade = %+v, want ok from pid %d to a successor as generation 2", res, os.Getpid())
	}
	ready := ev.Wait(t, "ready")
	if ready["pid"] != strconv.Itoa(res.SuccessorPID) || ready["gen"] != "2" {
		t.Errorf("successor ready as %v, want pid %d gen 2", ready, res.SuccessorPID)
	}
	if r := u.Reason(); r != molt.Upgraded {
		t.Errorf("Reason = %v, want upgraded", r)
	}

	st, err := c.Status(ctx)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if st.PID != res.SuccessorPID || st.Generation != 2 || st.ParentPID != os.Getpid() || st.Upgrades != 1 || st.State != "ready" {
		t.Errorf("status = %+v, want the successor, generation 2, 1 upgrade", st)
	}
	if l := st.LastUpgrade; l == nil || !l.OK || l.SuccessorPID != res.SuccessorPID || l.PID != os.Getpid() || l.Duration <= 0 {
		t.Errorf("status.LastUpgrade = %+v, want the upgrade just done (the history crossed generations)", l)
	}
	if len(st.Listeners) != 1 || !st.Listeners[0].Control || !st.Listeners[0].Inherited {
		t.Errorf("status.Listeners = %+v, want the inherited control socket", st.Listeners)
	}
	if st := s.Status(); st.State != "draining" {
		t.Errorf("this generation's state = %s, want draining", st.State)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close after the upgrade = %v", err)
	}

	if err := c.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if got := ev.Wait(t, "exiting"); got["pid"] != strconv.Itoa(res.SuccessorPID) || got["reason"] != "stopped" {
		t.Errorf("exiting = %v, want the successor, stopped", got)
	}
	proctest.WaitGone(t, res.SuccessorPID)
	proctest.WaitUntil(t, "socket file removed by the successor's stop", func() bool {
		_, err := os.Lstat(sock)
		return errors.Is(err, os.ErrNotExist)
	})
}

// TestUpgradeFailureByRequest runs successors that exit during their start
// and checks that the reply carries the reason and that the service
// serves on, failure after failure.
func TestUpgradeFailureByRequest(t *testing.T) {
	sock := filepath.Join(proctest.ShortDir(t), "c.sock")
	u, _ := upgraderWithSuccessors(t, "fail-init", sock)
	listen(t, u, sock, control.Options{})
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	c, ctx := client(t, sock)
	for i := 1; i <= 2; i++ {
		_, err := c.Upgrade(ctx)
		var ce *control.Error
		if !errors.As(err, &ce) || !errors.Is(err, control.ErrUpgradeFailed) || ce.Upgrade == nil {
			t.Fatalf("Upgrade %d = %v, want an *Error with ErrUpgradeFailed and a result", i, err)
		}
		r := ce.Upgrade
		if r.OK || r.Stage != "init" || r.Reason != "exit status 3" || r.ExitCode == nil || *r.ExitCode != 3 ||
			r.ExitStatus != "exit status 3" || r.SuccessorPID <= 0 || !strings.Contains(ce.Message, "exit status 3") {
			t.Errorf("failed upgrade %d = %+v (message %q), want exit status 3 during init", i, r, ce.Message)
		}
		st, err := c.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.PID != os.Getpid() || st.State != "ready" || st.FailedUpgrades != i || st.LastUpgrade == nil || st.LastUpgrade.OK {
			t.Errorf("status after failure %d = %+v, want this process ready with %d failures", i, st, i)
		}
	}
}

// TestSignals drives a service process with SIGHUP (an upgrade) and
// SIGTERM (a graceful stop).
func TestSignals(t *testing.T) {
	sock := filepath.Join(proctest.ShortDir(t), "c.sock")
	svc := startService(t, "service", sock)
	first := svc.ev.Wait(t, "ready")
	pid1, _ := strconv.Atoi(first["pid"])

	syscall.Kill(pid1, syscall.SIGHUP)
	second := svc.ev.Wait(t, "ready")
	pid2, _ := strconv.Atoi(second["pid"])
	if second["gen"] != "2" {
		t.Fatalf("after SIGHUP: ready %v, want generation 2", second)
	}
	if got := svc.ev.Wait(t, "exiting"); got["pid"] != first["pid"] || got["reason"] != "upgraded" {
		t.Errorf("exiting = %v, want generation 1, upgraded", got)
	}
	if code := svc.wait(t); code != 0 {
		t.Errorf("generation 1 exit code = %d, want 0", code)
	}
	c, ctx := client(t, sock)
	if st, err := c.Status(ctx); err != nil || st.PID != pid2 || st.Generation != 2 {
		t.Errorf("status = %+v, %v; want generation 2 (pid %d)", st, err, pid2)
	}

	syscall.Kill(pid2, syscall.SIGTERM)
	if got := svc.ev.Wait(t, "exiting"); got["pid"] != second["pid"] || got["reason"] != "stopped" {
		t.Errorf("exiting = %v, want generation 2, stopped", got)
	}
	proctest.WaitGone(t, pid2)
	for _, want := range []string{`"msg":"control: signal","signal":"hangup","action":"upgrade"`, `"msg":"control: upgrade succeeded"`, `"signal":"terminated","action":"stop"`} {
		if !strings.Contains(svc.stderr.String(), want) {
			t.Errorf("the service's log lacks %s", want)
		}
	}
}

// TestSecondStopSignalForces: the first SIGTERM starts a drain that does
// not finish; the second forces the exit (SignalOptions.Force).
func TestSecondStopSignalForces(t *testing.T) {
	sock := filepath.Join(proctest.ShortDir(t), "c.sock")
	svc := startService(t, "service", sock, envHold+"=1")
	pid, _ := strconv.Atoi(svc.ev.Wait(t, "ready")["pid"])
	syscall.Kill(pid, syscall.SIGTERM)
	if got := svc.ev.Wait(t, "exiting"); got["reason"] != "stopped" {
		t.Fatalf("exiting = %v, want stopped", got)
	}
	syscall.Kill(pid, syscall.SIGTERM)
	svc.ev.Wait(t, "force")
	if code := svc.wait(t); code != 7 {
		t.Errorf("exit code after the second SIGTERM = %d, want 7 (Force)", code)
	}
}

// TestHandleSignalsOptions checks the signal lists, OnStop and Force in
// this process, with SIGUSR2 as the stop signal.
func TestHandleSignalsOptions(t *testing.T) {
	u := newUpgrader(t, molt.Options{})
	// os/signal starts one goroutine for good at its first use.
	warm := make(chan os.Signal, 1)
	signal.Notify(warm, syscall.SIGUSR2)
	signal.Stop(warm)
	goroutines := runtime.NumGoroutine()

	var stops, forces atomic.Int32
	stop := control.HandleSignals(u, control.SignalOptions{
		Upgrade: []os.Signal{}, // none: SIGHUP is not caught
		Stop:    []os.Signal{syscall.SIGUSR2},
		OnStop:  func() { stops.Add(1) },
		Force:   func(os.Signal) { forces.Add(1) },
	})
	defer stop()
	syscall.Kill(os.Getpid(), syscall.SIGUSR2)
	proctest.WaitUntil(t, "OnStop called", func() bool { return stops.Load() == 1 })
	for i := int32(1); i <= 2; i++ {
		syscall.Kill(os.Getpid(), syscall.SIGUSR2)
		proctest.WaitUntil(t, fmt.Sprintf("Force called %d times", i), func() bool { return forces.Load() == i })
	}
	if n := stops.Load(); n != 1 {
		t.Errorf("OnStop called %d times, want once", n)
	}
	stop()
	stop() // a second call is harmless
	if st := u.State(); st != molt.StateStarting {
		t.Errorf("State = %v, want starting: OnStop replaced Stop", st)
	}
	proctest.CheckGoroutines(t, "at the end", goroutines)
}

// TestMalformedFlood sends 1,000 malformed requests to a service process
// and checks that it still serves, with as many descriptors as before.
func TestMalformedFlood(t *testing.T) {
	sock := filepath.Join(proctest.ShortDir(t), "c.sock")
	svc := startService(t, "service", sock)
	pid, _ := strconv.Atoi(svc.ev.Wait(t, "ready")["pid"])
	before := proctest.CountFDs(t, pid, proctest.AllFDs)
	c, ctx := client(t, sock)
	if _, err := c.Status(ctx); err != nil {
		t.Fatal(err)
	}

	inputs := []struct {
		send string
		code control.Code // "" if no reply is expected (the client hangs up at once)
	}{
		{"garbage\n", control.CodeBadRequest},
		{`{"v":1,"op":"status"` + "\n", control.CodeBadRequest},
		{`{"v":9,"op":"status"}` + "\n", control.CodeBadVersion},
		{`{"v":1,"op":"format-disk"}` + "\n", control.CodeUnknownOp},
		{strings.Repeat("A", control.MaxRequestSize+1), control.CodeTooLarge},
		{`{"v":1,"op":"upg`, ""}, // half a request, then the client goes away
		{"", ""},                 // connect and hang up
	}
	const workers, each = 20, 50
	var wg sync.WaitGroup
	var mu sync.Mutex
	var problems []string
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range each {
				in := inputs[(w+i)%len(inputs)]
				send := in.send
				if i%10 == 9 { // random bytes, newline-terminated
					b := make([]byte, 1+rng.IntN(200))
					for j := range b {
						b[j] = byte(rng.IntN(256))
						if b[j] == '\n' {
							b[j] = 'x'
						}
					}
					send, in.code = string(b)+"\n", control.CodeBadRequest
				}
				if err := malformed(sock, send, in.code); err != nil {
					mu.Lock()
					problems = append(problems, err.Error())
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	for i, p := range problems {
		if i == 5 {
			t.Errorf("... and %d more", len(problems)-5)
			break
		}
		t.Error(p)
	}
	proctest.CheckFDsAtMost(t, "at the end", pid, proctest.AllFDs, before)
	st, err := c.Status(ctx)
	if err != nil || st.PID != pid || st.State != "ready" {
		t.Errorf("status after the flood = %+v, %v; want pid %d ready", st, err, pid)
	}
	if n := strings.Count(svc.stderr.String(), `"msg":"control: bad request"`) + strings.Count(svc.stderr.String(), `"msg":"control: request too large"`); n < 500 {
		t.Errorf("the service logged %d malformed requests, want most of 1,000", n)
	}
}

// malformed sends one malformed request on a new connection and checks the
// reply's code.
func malformed(sock, send string, want control.Code) error {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	if send != "" {
		if _, err := c.Write([]byte(send)); err != nil {
			return fmt.Errorf("write %q: %w", send, err)
		}
	}
	if want == "" {
		return nil
	}
	line := make([]byte, 0, 512)
	buf := make([]byte, 512)
	for !strings.Contains(string(line), "\n") {
		n, err := c.Read(buf)
		line = append(line, buf[:n]...)
		if err != nil {
			return fmt.Errorf("reply to %.40q: %w (got %q)", send, err, line)
		}
	}
	if !strings.Contains(string(line), `"code":"`+string(want)+`"`) {
		return fmt.Errorf("reply to %.40q = %s, want code %s", send, line, want)
	}
	return nil
}
