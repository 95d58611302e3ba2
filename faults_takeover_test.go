//go:build linux

package molt_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/internal/proctest"
)

// Takeovers under load (TestFaults): a process the serving generation did
// not start connects to its takeover socket. It is the test's child, not
// generation 1's (which is the test process too, but never forked it).

// taker is one process started to take over, and its reaped end.
type taker struct {
	pid  int
	done chan error // its exit, once reaped
	exit error      // what done gave, once takerFails read it
}

// startTaker starts the fault role with fault as a taker from the
// takeover socket sock, on listen; it offers sock in turn.
func startTaker(t *testing.T, h *harness, listen, sock, fault string, env ...string) *taker {
	t.Helper()
	return startTakerFrom(t, h, os.Args[0], nil, listen, sock, fault, env...)
}

// startTakerFrom is startTaker with the executable bin and, if not nil,
// stdin as its standard input.
func startTakerFrom(t *testing.T, h *harness, bin string, stdin *os.File, listen, sock, fault string, env ...string) *taker {
	t.Helper()
	cmd := exec.Command(bin)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	cmd.Env = append(os.Environ(), envRole+"=fault", envAddr+"="+listen, envFault+"="+fault,
		"MOLT_TAKEOVER_FROM="+sock, envTakeoverSock+"="+sock)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = h.w, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tk := &taker{pid: cmd.Process.Pid, done: make(chan error, 1)}
	h.addPID(tk.pid)
	go func() { tk.done <- cmd.Wait() }() // ends when it exits; the test reaps its own child
	return tk
}

// takeoverEvents records generation 1's upgrade events: a takeover is not
// a call the test makes, so its result arrives as an event.
func takeoverEvents(ip *inproc) <-chan molt.Event {
	ch := make(chan molt.Event, 16)
	ip.mu.Lock()
	prev := ip.onEvent
	ip.onEvent = func(e molt.Event) {
		if prev != nil {
			prev(e)
		}
		if e.Kind == molt.EventUpgraded || e.Kind == molt.EventUpgradeFailed {
			ch <- e
		}
	}
	ip.mu.Unlock()
	return ch
}

func awaitEvent(t *testing.T, ch <-chan molt.Event) molt.Event {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(2 * time.Minute):
		t.Fatal("no upgrade event from generation 1 within 2m")
	}
	return molt.Event{}
}

// takeoverSucceeds: a taker takes over under load; generation 1 drains;
// then 20 takeovers alternate between two binaries (the test binary and a
// copy of it, the copy with a second listener it does not use), each from
// the one before.
func takeoverSucceeds(t *testing.T, h *harness) outcome {
	sock := filepath.Join(proctest.ShortDir(t), "takeover.sock")
	ip := h.startInProc(molt.Options{ReadyTimeout: 30 * time.Second, TakeoverSocket: sock}, "tcp", "127.0.0.1:0", nil)
	events := takeoverEvents(ip)
	// 21 takeovers under load outlast the usual bounds on a busy machine
	// (120,000 requests in 80 s in one CI run): still bounded, wider.
	h.startLoadBounded(ip.tg, 200000, 5*time.Minute)
	h.probe("before", ip.pid)
	h.beginFault()
	tk := startTaker(t, h, ip.listen, sock, "")
	e := awaitEvent(t, events)
	h.endFault()
	if e.Kind != molt.EventUpgraded || e.SuccessorPID != tk.pid {
		t.Fatalf("generation 1's takeover event: %+v, want upgraded to pid %d", e, tk.pid)
	}
	r := h.wait("ready")
	if r["pid"] != strconv.Itoa(tk.pid) || r["gen"] != "2" {
		t.Errorf("taker ready as %v, want pid %d generation 2", r, tk.pid)
	}
	ip.takeOver(t)
	h.ld.waitMore(t, h.ld.snapshot(), tk.pid, 20)

	servers := []server{{"parent", ip.pid}, {"taker", tk.pid}}
	other := filepath.Join(t.TempDir(), "other.test")
	copyExecutable(t, os.Args[0], other)
	prev := tk
	const n = 20
	for i := range n {
		bin, env := os.Args[0], []string(nil)
		if i%2 == 0 {
			bin, env = other, append(env, envFaultExtra+"=tcp 127.0.0.1:0")
		}
		next := startTakerFrom(t, h, bin, nil, ip.listen, sock, "", env...)
		r := h.wait("ready")
		if r["pid"] != strconv.Itoa(next.pid) || r["gen"] != strconv.Itoa(i+3) {
			t.Fatalf("takeover %d: ready %v, want pid %d generation %d", i+1, r, next.pid, i+3)
		}
		if x := h.wait("exit"); x["pid"] != strconv.Itoa(prev.pid) || x["reason"] != "upgraded" {
			t.Fatalf("takeover %d: %v exited, want pid %d after an upgrade", i+1, x, prev.pid)
		}
		if err := <-prev.done; err != nil {
			t.Errorf("takeover %d: the generation taken over from exited with %v, want 0", i+1, err)
		}
		h.ld.waitMore(t, h.ld.snapshot(), next.pid, 5)
		servers = append(servers, server{fmt.Sprintf("taker %d", i+1), next.pid})
		prev = next
	}
	h.onTeardown(func() {
		h.stopService(ip.tg, prev.pid)
		<-prev.done
	})
	return outcome{upgrade: fmt.Sprintf("taken over, then %d takeovers in a row", n), servedBy: servers}
}

// takerFails: a taker that fails at a step of its takeover leaves
// generation 1 serving; the failure is generation 1's event and the
// taker's own error.
func takerFails(fault string, readyTimeout time.Duration, check func(t *testing.T, h *harness, err error, tk *taker)) func(*testing.T, *harness) outcome {
	return takerFailsWith(fault, readyTimeout, 0, check)
}

// takerFailsWith is takerFails with files more entries in the inventory
// (which the taker claims).
func takerFailsWith(fault string, readyTimeout time.Duration, files int, check func(t *testing.T, h *harness, err error, tk *taker)) func(*testing.T, *harness) outcome {
	return func(t *testing.T, h *harness) outcome {
		sock := filepath.Join(proctest.ShortDir(t), "takeover.sock")
		var add func(*molt.Upgrader)
		if files > 0 {
			add = addFiles(files)
		}
		ip := h.startInProc(molt.Options{ReadyTimeout: readyTimeout, TakeoverSocket: sock}, "tcp", "127.0.0.1:0", add)
		events := takeoverEvents(ip)
		if fault == "crash-after-ready" {
			// As for a forked successor (successorCrashesAfterReady): the
			// ACK follows the commit hooks, and a taker that is dead by
			// then cannot read it. Without the wait the ACK could reach
			// it before its SIGKILL took effect, and it would have taken
			// over (correctly: the takeover then succeeds).
			ip.setOnCommit(func(pid int) { proctest.AwaitGone(pid, proctest.Patience) })
		}
		h.startLoad(ip.tg)
		h.probe("before", ip.pid)
		h.beginFault()
		tk := startTaker(t, h, ip.listen, sock, fault, envFaultFiles+"="+strconv.Itoa(files))
		e := awaitEvent(t, events)
		h.endFault()
		var ce *molt.ChildError
		if e.Kind != molt.EventUpgradeFailed || !errors.As(e.Err, &ce) || ce.PID != tk.pid {
			t.Fatalf("generation 1's takeover event: %+v, want a failure of taker %d", e, tk.pid)
		}
		t.Logf("takeover failed: %v", e.Err)
		select {
		case tk.exit = <-tk.done:
		case <-time.After(time.Minute):
			t.Fatalf("taker %d still runs a minute after its takeover failed", tk.pid)
		}
		check(t, h, e.Err, tk)
		if st := ip.u.State(); st != molt.StateReady {
			t.Errorf("generation 1 is %v after the failed takeover, want ready", st)
		}
		h.probe("after", ip.pid)
		h.ld.waitMore(t, h.ld.snapshot(), ip.pid, 20)
		return outcome{upgrade: fmt.Sprintf("taker fails at stage %v: %v", ce.Stage, ce.Err), servedBy: []server{{"parent", ip.pid}}}
	}
}

func wantStage(stage molt.Stage, says string) func(*testing.T, *harness, error, *taker) {
	return func(t *testing.T, _ *harness, err error, _ *taker) {
		var ce *molt.ChildError
		if !errors.As(err, &ce) || ce.Stage != stage || !strings.Contains(err.Error(), says) {
			t.Errorf("takeover failure %v, want stage %v saying %q", err, stage, says)
		}
	}
}

// takerCrashedMidInventory: the taker died with part of the inventory.
func takerCrashedMidInventory(t *testing.T, h *harness, err error, tk *taker) {
	if f := h.wait("crashing"); f["step"] != "mid-inventory" || f["received"] != "200" || f["total"] != "302" {
		t.Errorf("taker crashed at %v, want mid-inventory after 200 of 302 entries", f)
	}
	if st := stageOf(err); st != molt.StageHandoff && st != molt.StageInit {
		t.Errorf("takeover failure %v, want stage hand-off or init", err)
	}
}

// takerHung: the hung taker was killed at the ReadyTimeout, but not its
// process group, which is not generation 1's: the test ends the
// grandchild it started.
func takerHung(t *testing.T, h *harness, err error, tk *taker) {
	wantStage(molt.StageInit, "not ready before the timeout")(t, h, err, tk)
	if !signalled(&molt.ChildError{Err: tk.exit}, syscall.SIGKILL) {
		t.Errorf("the hung taker ended with %v, want SIGKILL", tk.exit)
	}
	gc, _ := strconv.Atoi(h.wait("hanging")["grandchild"])
	proctest.KillIfOurs(gc)
	syscall.Kill(gc, syscall.SIGKILL)
}

// TestTakeoverOneAtATime: a takeover while an upgrade runs is refused
// with ErrUpgradeInProgress, and an upgrade while a takeover runs too.
func TestTakeoverOneAtATime(t *testing.T) {
	h := newHarness(t)
	sock := filepath.Join(proctest.ShortDir(t), "takeover.sock")
	ip := h.startInProc(molt.Options{ReadyTimeout: time.Minute, TakeoverSocket: sock}, "tcp", "127.0.0.1:0", nil)
	events := takeoverEvents(ip)

	// A forked successor that waits for a line before Ready holds the
	// upgrade; a taker meanwhile is refused.
	rf, wf, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	defer wf.Close()
	ip.roleWith(h, "release", rf)
	upgraded := make(chan error, 1)
	go func() { upgraded <- ip.u.Upgrade(context.Background()) }()
	h.wait("initialising")
	tk := startTaker(t, h, ip.listen, sock, "")
	if r := h.wait("new-error"); !strings.Contains(r["err"], "upgrade in progress") {
		t.Errorf("a taker during an upgrade: New failed with %q, want ErrUpgradeInProgress's message", r["err"])
	}
	<-tk.done
	wf.WriteString("go\n")
	if err := <-upgraded; err != nil {
		t.Fatalf("the held upgrade = %v, want nil", err)
	}
	<-events
	succ, _ := strconv.Atoi(h.wait("ready")["pid"])
	ip.takeOver(t)

	h.stopService(ip.tg, succ)

	// The other way round, with a new generation 1 in this process: a
	// taker that waits for a line before Ready holds the takeover, and an
	// upgrade meanwhile is refused.
	sock2 := filepath.Join(proctest.ShortDir(t), "takeover2.sock")
	u, err := molt.New(molt.Options{Logger: roleLogger(), ReadyTimeout: time.Minute, TakeoverSocket: sock2})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Stop()
	ln, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	rt, wt, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	defer wt.Close()
	held := startTakerFrom(t, h, os.Args[0], rt, "tcp 127.0.0.1:0", sock2, "release") // as generation 1 asked: a :0 listener is claimed by that address
	h.wait("initialising")                                                            // it has the inventory: the takeover runs
	if err := u.Upgrade(context.Background()); !errors.Is(err, molt.ErrUpgradeInProgress) {
		t.Errorf("Upgrade during a takeover = %v, want ErrUpgradeInProgress", err)
	}
	wt.WriteString("go\n")
	if r := h.wait("ready"); r["pid"] != strconv.Itoa(held.pid) {
		t.Errorf("after the release %v is ready, want the taker %d", r, held.pid)
	}
	<-u.Exit()
	u.Stop()
	h.stopService(target{"tcp", ln.Addr().String()}, held.pid)
	<-held.done
	h.checked = true // not a fault of the matrix: no load to check
}

// TestTakeoverRefusedToOtherUser runs a taker as nobody against a
// takeover socket any user may connect to: the peer-credential check
// refuses it, with the reason on both sides. Needs root.
func TestTakeoverRefusedToOtherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a taker as another user")
	}
	dir, err := os.MkdirTemp("", "mtake")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "molt.test")
	copyExecutable(t, os.Args[0], bin)
	sock := filepath.Join(dir, "takeover.sock")
	ev, w := pipe(t)
	u, err := molt.New(molt.Options{Logger: roleLogger(), TakeoverSocket: sock})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Stop()
	if _, err := u.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sock, 0o666); err != nil { // the file lets anyone connect: the credentials decide
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), envRole+"=fault", envAddr+"=tcp 127.0.0.1:0", "MOLT_TAKEOVER_FROM="+sock)
	cmd.Stdout, cmd.Stderr = w, os.Stderr
	cmd.SysProcAttr = nobody(t)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := ev.Wait(t, "new-error")
	cmd.Wait()
	if want := "molt: takeover refused: peer uid 65534 is not allowed (only uid 0 and root)"; !strings.Contains(r["err"], want) {
		t.Errorf("the taker's New failed with %q, want it to contain %q", r["err"], want)
	}
	if st := u.Stats(); u.State() != molt.StateReady || st.LastUpgrade != nil {
		t.Errorf("after the refusal: state %v, last upgrade %+v; want ready, no upgrade", u.State(), st.LastUpgrade)
	}
}

// copyExecutable copies the test binary to dst, executable by everyone.
func copyExecutable(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// nobody runs a command as uid and gid 65534.
func nobody(t *testing.T) *syscall.SysProcAttr {
	t.Helper()
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
}
