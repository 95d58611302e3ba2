//go:build linux

package molt_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/internal/proctest"
)

// The fault-injection suite: every fault of an upgrade we know, each with
// real processes and under loopback load (faults_load_test.go), each
// asserting the upgrade's outcome, that no request failed (or, where a
// process is SIGKILLed, that only requests inside that process were lost
// and nothing was ever refused), which processes served, that a process
// served before, during and after the fault, and that neither the test
// process leaks descriptors or goroutines nor any process is left behind
// (faults_harness_test.go).
//
// Most faults run with generation 1 inside the test process (so Upgrade's
// error can be inspected with errors.Is and errors.As) and its successor as
// the "fault" role (faults_role_test.go); the parent-SIGKILL faults run
// generation 1 as a role process too.

// TestFaults injects every fault of an upgrade under load. Each subtest
// logs a "MATRIX |" line with its outcome and its numbers.
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process fault injection under load")
	}
	// Warm up what the process creates once (the network poller), so that
	// the first fault's descriptor baseline holds for the rest.
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		ln.Close()
	}

	tests := []struct {
		name string
		run  func(t *testing.T, h *harness) outcome
	}{
		{"successor crashes before reading the inventory", successorCrashesBeforeNew},
		{"successor crashes mid-inventory", successorCrashesMidInventory},
		{"successor crashes before READY", successorCrashesBeforeReady},
		{"successor crashes right after READY", successorCrashesAfterReady},
		{"successor serving before READY crashes", successorServingCrashes},
		{"parent SIGKILLed before the successor reads the inventory", parentKilled("before-new", "pause-before-new")},
		{"parent SIGKILLed mid-inventory", parentKilled("mid-inventory", "pause-mid-inventory", envFaultFiles+"=300")},
		{"parent SIGKILLed before READY", parentKilled("before-ready", "pause-before-ready")},
		{"parent SIGKILLed after READY before ACK", parentKilled("after-ready", "", envFaultParent+"=block-before-ack")},
		{"parent SIGKILLed after ACK", parentKilled("after-ack", "")},
		{"successor SIGSTOPped, timed out, then a later upgrade succeeds", successorStoppedTimesOut},
		{"binary missing", binaryMissing},
		{"binary not executable", binaryNotExecutable},
		{"binary replaced by a script that exits 1", binaryExits1},
		{"stale Unix socket files", staleSocketFiles},
		{"PID file directory unwritable", pidFileUnwritable},
		{"RLIMIT_NOFILE too low for the inventory", nofileTooLow},
		{"50 concurrent upgrade requests", concurrentUpgrades},
		{"successor exits during its probation: rolled back", successorFailsProbation("exit-in-probation", "exiting")},
		{"successor asks to be rolled back during its probation", successorFailsProbation("rollback-in-probation", "rolling-back")},
		{"a process started by someone else takes over, then 20 takeovers alternate", takeoverSucceeds},
		{"taker crashes mid-inventory", takerFailsWith("crash-mid-inventory", 30*time.Second, 300, takerCrashedMidInventory)},
		{"taker crashes before READY", takerFails("crash-before-ready", 30*time.Second, wantStage(molt.StageInit, "the taker closed the takeover connection"))},
		{"taker crashes right after READY", takerFails("crash-after-ready", 30*time.Second, wantStage(molt.StageInit, ""))},
		{"taker hangs in init: killed at the ReadyTimeout", takerFails("hang-in-init", 3*time.Second, takerHung)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			out := tc.run(t, h)
			h.check(tc.name, out)
		})
	}
}

// The shapes of faults.

// successorFails is a fault in which the successor of generation 1 (in the
// test process) fails: run makes it fail and returns Upgrade's error; want
// checks it. Generation 1 must serve throughout, and alone, and no request
// may fail.
func successorFails(run func(t *testing.T, h *harness, ip *inproc) error, want func(t *testing.T, err error)) func(*testing.T, *harness) outcome {
	return successorFailsWith(molt.Options{ReadyTimeout: 30 * time.Second}, nil, run, want)
}

// successorFailsWith is successorFails with generation 1's options, and
// add to fill its inventory before Ready.
func successorFailsWith(opts molt.Options, add func(*molt.Upgrader), run func(t *testing.T, h *harness, ip *inproc) error,
	want func(t *testing.T, err error)) func(*testing.T, *harness) outcome {
	return func(t *testing.T, h *harness) outcome {
		ip := h.startInProc(opts, "tcp", "127.0.0.1:0", add)
		h.startLoad(ip.tg)
		h.probe("before", ip.pid)
		h.beginFault()
		err := run(t, h, ip)
		h.endFault()
		var ce *molt.ChildError
		if !errors.As(err, &ce) {
			t.Fatalf("Upgrade = %v (%T), want a *molt.ChildError", err, err)
		}
		t.Logf("Upgrade: %v", err)
		want(t, err)
		h.probe("after", ip.pid)
		h.ld.waitMore(t, h.ld.snapshot(), ip.pid, 20)
		return outcome{upgrade: fmt.Sprintf("fails at stage %v: %v", ce.Stage, ce.Err), servedBy: []server{{"parent", ip.pid}}}
	}
}

// parentKilled is a fault in which generation 1 (a role process) is
// SIGKILLed at step while its successor plays next: the successor must
// still receive everything, know its parent, and serve alone; nothing may
// be refused, and only requests inside the killed process may be lost.
func parentKilled(step, next string, env ...string) func(*testing.T, *harness) outcome {
	return func(t *testing.T, h *harness) outcome {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), envRole+"=fault", envAddr+"=tcp 127.0.0.1:0", envFaultNext+"="+next)
		cmd.Env = append(cmd.Env, env...)
		cmd.Stdout, cmd.Stderr = h.w, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		gen1 := cmd.Process.Pid
		h.addPID(gen1)
		reaped := false
		h.onTeardown(func() {
			if !reaped {
				cmd.Process.Kill()
				cmd.Wait()
			}
		})
		h.wait("initialising")
		ready := h.wait("ready")
		tg := target{"tcp", ready["addr"]}
		h.startLoad(tg)
		h.probe("before", gen1)

		h.beginFault()
		cmd.Process.Signal(syscall.SIGHUP) // gen 1 upgrades
		var (
			succ int
			init map[string]string // the successor's "initialising"
		)
		switch step {
		case "before-ready", "before-new", "mid-inventory":
			f := h.wait("paused")
			if f["step"] != step {
				t.Fatalf("successor paused at %s, want %s", f["step"], step)
			}
			succ, _ = strconv.Atoi(f["pid"])
			if step == "mid-inventory" && f["received"] == f["total"] {
				t.Fatalf("successor paused after %s of %s entries, want between batches", f["received"], f["total"])
			}
		case "after-ready":
			f := h.wait("acking")
			succ, _ = strconv.Atoi(f["successor"])
		case "after-ack":
			init = h.wait("initialising")
			f := h.wait("ready")
			succ, _ = strconv.Atoi(f["pid"])
		}
		switch step {
		case "before-ready": // both serve now
			h.probe("during", 0)
		case "before-new", "mid-inventory", "after-ready": // only gen 1 serves
			h.probe("during", gen1)
		}
		cmd.Process.Kill()
		cmd.Wait()
		reaped = true
		h.markKilled(gen1, time.Now())
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Errorf("generation 1 ended with %v, want killed by SIGKILL", cmd.ProcessState)
		}

		// At once, while the successor may still be receiving or
		// initialising: the connection waits in the listening socket's
		// queue, which never closed.
		h.probe("during", succ)
		if step != "after-ack" {
			init = h.wait("initialising")
			files := atoiEnv(env, envFaultFiles)
			if init["pid"] != strconv.Itoa(succ) || init["inherited"] != strconv.Itoa(1+files) || init["files"] != strconv.Itoa(files) {
				t.Errorf("successor %s inherited %s entries and claimed %s files, want %d and %d (successor %d)",
					init["pid"], init["inherited"], init["files"], 1+files, files, succ)
			}
			// Its Ready returned nil (the role reports "ready-error" otherwise).
			if f := h.wait("ready"); f["pid"] != strconv.Itoa(succ) {
				t.Errorf("ready from pid %s, want the successor %d", f["pid"], succ)
			}
		}
		if init["pid"] != strconv.Itoa(succ) || init["parent"] != strconv.Itoa(gen1) {
			t.Errorf("successor %s reported ParentPID %s, want %d (successor %d)", init["pid"], init["parent"], gen1, succ)
		}
		h.endFault()
		h.probe("after", succ)
		h.ld.waitMore(t, h.ld.snapshot(), succ, 20)
		h.onTeardown(func() { h.stopService(tg, succ) })
		return outcome{
			upgrade:  fmt.Sprintf("parent %s at %s; successor's Ready returned nil, it serves alone", cmd.ProcessState, step),
			servedBy: []server{{"parent", gen1}, {"orphaned successor", succ}},
		}
	}
}

// The faults.

var successorCrashesBeforeNew = successorFails(func(t *testing.T, h *harness, ip *inproc) error {
	ip.role(h, "crash-before-new")
	return ip.upgrade(t)
}, func(t *testing.T, err error) {
	if !signalled(err, syscall.SIGKILL) || (stageOf(err) != molt.StageHandoff && stageOf(err) != molt.StageInit) {
		t.Errorf("Upgrade = %v, want SIGKILL at stage hand-off or init", err)
	}
})

var successorCrashesMidInventory = successorFailsWith(molt.Options{ReadyTimeout: 30 * time.Second}, addFiles(300), func(t *testing.T, h *harness, ip *inproc) error {
	ip.role(h, "crash-mid-inventory", envFaultFiles+"=300")
	err := ip.upgrade(t)
	if f := h.wait("crashing"); f["step"] != "mid-inventory" || f["received"] != "200" || f["total"] != "301" {
		t.Errorf("successor crashed at %v, want mid-inventory after 200 of 301 entries", f)
	}
	return err
}, func(t *testing.T, err error) {
	if !signalled(err, syscall.SIGKILL) || (stageOf(err) != molt.StageHandoff && stageOf(err) != molt.StageInit) {
		t.Errorf("Upgrade = %v, want SIGKILL at stage hand-off or init", err)
	}
})

var successorCrashesBeforeReady = successorFails(func(t *testing.T, h *harness, ip *inproc) error {
	ip.role(h, "crash-before-ready")
	return ip.upgrade(t)
}, func(t *testing.T, err error) {
	if !signalled(err, syscall.SIGKILL) || stageOf(err) != molt.StageInit || !strings.Contains(err.Error(), "signal: killed") {
		t.Errorf("Upgrade = %v, want SIGKILL (\"signal: killed\") at stage init", err)
	}
})

// successorCrashesAfterReady: the successor dies between READY and the
// ACK. Upgrade may see READY first (the commit hook runs for that
// successor and waits for its death; the ACK is then written into a dead
// process and fails) or the exit first; either way the upgrade must fail with the successor's
// death as cause, and generation 1 must serve on. Five times, to meet
// both orders.
func successorCrashesAfterReady(t *testing.T, h *harness) outcome {
	var (
		mu        sync.Mutex
		committed []int // the successors the commit hook ran for, this upgrade
		acked     int   // upgrades in which READY was read before the exit
	)
	out := successorFails(func(t *testing.T, h *harness, ip *inproc) error {
		ip.role(h, "crash-after-ready")
		ip.setOnCommit(func(pid int) {
			mu.Lock()
			committed = append(committed, pid)
			mu.Unlock()
			// The ACK follows this hook: once the successor is dead it
			// cannot read it. Without the wait, a parent that noticed
			// READY at once could ACK before the successor's SIGKILL
			// took effect, and a successor that read the ACK has taken
			// over (correctly: the upgrade then succeeds).
			proctest.AwaitGone(pid, proctest.Patience)
		})
		var err error
		for i := range 5 {
			err = ip.upgrade(t)
			var ce *molt.ChildError
			if !errors.As(err, &ce) || !signalled(err, syscall.SIGKILL) || ce.Stage != molt.StageInit {
				t.Errorf("Upgrade #%d = %v, want SIGKILL at stage init", i+1, err)
				continue
			}
			mu.Lock()
			if len(committed) > 1 || (len(committed) == 1 && committed[0] != ce.PID) {
				t.Errorf("Upgrade #%d: commit hook ran for %v, want at most once, for the successor %d", i+1, committed, ce.PID)
			}
			if len(committed) > 0 {
				acked++
			}
			committed = nil
			mu.Unlock()
		}
		return err
	}, func(t *testing.T, err error) {
		if !signalled(err, syscall.SIGKILL) || stageOf(err) != molt.StageInit {
			t.Errorf("Upgrade = %v, want SIGKILL at stage init", err)
		}
	})(t, h)
	out.upgrade += fmt.Sprintf(" (READY read before the exit in %d of 5 upgrades)", acked)
	return out
}

// successorServingCrashes: the successor serves before Ready (README's
// pattern: Serve, then Ready) and crashes; what it had accepted died with
// it.
func successorServingCrashes(t *testing.T, h *harness) outcome {
	ip := h.startInProc(molt.Options{}, "tcp", "127.0.0.1:0", nil)
	h.startLoad(ip.tg)
	h.probe("before", ip.pid)
	ip.role(h, "serve-then-crash")
	h.beginFault()
	err := ip.upgrade(t)
	h.endFault()
	var ce *molt.ChildError
	if !errors.As(err, &ce) || !signalled(err, syscall.SIGKILL) {
		t.Fatalf("Upgrade = %v, want a ChildError for SIGKILL", err)
	}
	h.markKilled(ce.PID, time.Now())
	f := h.wait("crashing")
	if n, _ := strconv.Atoi(f["served"]); f["pid"] != strconv.Itoa(ce.PID) || n < 20 {
		t.Errorf("successor %s crashed after serving %s requests, want successor %d after 20 or more", f["pid"], f["served"], ce.PID)
	}
	h.probe("after", ip.pid)
	h.ld.waitMore(t, h.ld.snapshot(), ip.pid, 20)
	return outcome{
		upgrade:  fmt.Sprintf("fails at stage %v: %v (successor had served %s requests)", ce.Stage, ce.Err, f["served"]),
		servedBy: []server{{"parent", ip.pid}, {"successor", ce.PID}},
		last:     ip.pid,
	}
}

// successorStoppedTimesOut: a successor stopped from outside (as an
// operator or a debugger would) times out, is killed with its process
// group and reaped; a later upgrade succeeds.
func successorStoppedTimesOut(t *testing.T, h *harness) outcome {
	const timeout = 3 * time.Second
	ip := h.startInProc(molt.Options{ReadyTimeout: timeout}, "tcp", "127.0.0.1:0", nil)
	h.startLoad(ip.tg)
	h.probe("before", ip.pid)
	ip.role(h, "hang-in-init")
	h.beginFault()
	result := make(chan error, 1)
	began := time.Now()
	go func() { result <- ip.upgrade(t) }()
	f := h.wait("hanging")
	pid, _ := strconv.Atoi(f["pid"])
	gc, _ := strconv.Atoi(f["grandchild"])
	// The signal is sent again until the process shows as stopped: a
	// SIGSTOP a Go process sent itself was seen lost (kill returned at
	// once, no thread stopped) in about one run in thirty.
	stopped := proctest.Until(time.Minute, func() bool {
		if proctest.State(pid) == 'T' {
			return true
		}
		unix.Kill(pid, unix.SIGSTOP)
		return proctest.State(pid) == 'T'
	})
	if !stopped {
		t.Errorf("successor %d in state %q, want stopped (T)", pid, proctest.State(pid))
	}
	h.probe("during", ip.pid) // the successor is stopped; gen 1 serves
	err := <-result
	took := time.Since(began)
	h.endFault()
	var ce *molt.ChildError
	if !errors.As(err, &ce) || !errors.Is(err, molt.ErrReadyTimeout) || ce.PID != pid || ce.State == nil {
		t.Fatalf("Upgrade = %v, want a ChildError with ErrReadyTimeout for the reaped successor %d", err, pid)
	}
	if took < timeout {
		t.Errorf("Upgrade timed out after %v, before ReadyTimeout (%v)", took, timeout)
	}
	if ws, ok := ce.State.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("stopped successor's state = %v, want killed by SIGKILL", ce.State)
	}
	proctest.WaitGone(t, gc) // killed with its process group
	h.probe("after", ip.pid)
	h.ld.waitMore(t, h.ld.snapshot(), ip.pid, 20)

	ip.role(h, "")
	if err := ip.upgrade(t); err != nil {
		t.Fatalf("later Upgrade = %v, want nil", err)
	}
	r := h.wait("ready")
	succ, _ := strconv.Atoi(r["pid"])
	ip.takeOver(t)
	h.probe("after", succ)
	h.ld.waitMore(t, h.ld.snapshot(), succ, 20)
	h.onTeardown(func() { h.stopService(ip.tg, succ) })
	return outcome{
		upgrade:  fmt.Sprintf("1st fails after %v: %v; 2nd succeeds", took.Round(time.Millisecond), ce.Err),
		servedBy: []server{{"parent", ip.pid}, {"2nd successor", succ}},
	}
}

var binaryMissing = successorFails(func(t *testing.T, h *harness, ip *inproc) error {
	ip.setNext(binary(filepath.Join(t.TempDir(), "missing")))
	return ip.upgrade(t)
}, func(t *testing.T, err error) {
	if !errors.Is(err, fs.ErrNotExist) || stageOf(err) != molt.StageStart || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("Upgrade = %v, want fs.ErrNotExist (\"no such file\") at stage start", err)
	}
})

var binaryNotExecutable = successorFails(func(t *testing.T, h *harness, ip *inproc) error {
	path := filepath.Join(t.TempDir(), "svc")
	if err := os.WriteFile(path, []byte("#!/bin/sh\nexit 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ip.setNext(binary(path))
	return ip.upgrade(t)
}, func(t *testing.T, err error) {
	if !errors.Is(err, fs.ErrPermission) || stageOf(err) != molt.StageStart || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("Upgrade = %v, want fs.ErrPermission (\"permission denied\") at stage start", err)
	}
})

// binaryExits1: a program that does not speak molt exits before it reads
// the inventory; its exit status is the reason, at stage init, as it
// would be had it read the inventory first.
var binaryExits1 = successorFails(func(t *testing.T, h *harness, ip *inproc) error {
	path := filepath.Join(t.TempDir(), "svc")
	if err := os.WriteFile(path, []byte("#!/bin/sh\necho 'svc: config invalid' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ip.setNext(binary(path))
	return ip.upgrade(t)
}, func(t *testing.T, err error) {
	if exitCode(err) != 1 || stageOf(err) != molt.StageInit || !strings.Contains(err.Error(), "exit status 1") {
		t.Errorf("Upgrade = %v, want exit status 1 at stage init", err)
	}
})

// staleSocketFiles: generation 1 binds over a stale socket file; a
// successor that claimed the socket and crashed removes no file; one that
// binds a second socket over another stale file takes over, and removes
// both files when it stops.
func staleSocketFiles(t *testing.T, h *harness) outcome {
	dir := proctest.ShortDir(t)
	path, extra := filepath.Join(dir, "svc.sock"), filepath.Join(dir, "admin.sock")
	staleSocket(t, path)
	staleSocket(t, extra)
	ip := h.startInProc(molt.Options{}, "unix", path, nil) // binds over the stale file
	h.startLoad(ip.tg)
	h.probe("before", ip.pid)

	h.beginFault()
	ip.role(h, "crash-before-ready")
	err := ip.upgrade(t)
	if !signalled(err, syscall.SIGKILL) {
		t.Errorf("Upgrade = %v, want SIGKILL", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("socket file after the failed successor: %v", err)
	}
	h.probe("after", ip.pid)

	ip.role(h, "", envFaultExtra+"=unix "+extra)
	if err := ip.upgrade(t); err != nil {
		t.Fatalf("Upgrade = %v, want nil", err)
	}
	succ, _ := strconv.Atoi(h.wait("ready")["pid"])
	ip.takeOver(t)
	h.endFault()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("socket file after generation 1 stopped: %v, want it kept for the successor", err)
	}
	h.probe("after", succ)
	if r := probeOnce(target{"unix", extra}); r.err != nil || r.pid != succ {
		t.Errorf("second socket: pid %d, %v; want the successor %d", r.pid, r.err, succ)
	}
	h.ld.waitMore(t, h.ld.snapshot(), succ, 20)
	h.onTeardown(func() {
		h.stopService(ip.tg, succ)
		for _, p := range []string{path, extra} {
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s after the successor stopped: %v, want it removed", p, err)
			}
		}
	})
	return outcome{upgrade: fmt.Sprintf("1st fails: %v; 2nd succeeds", err), servedBy: []server{{"parent", ip.pid}, {"2nd successor", succ}}}
}

// pidFileUnwritable: the successor cannot write the PID file; it says so
// itself, and the PID file still names generation 1.
func pidFileUnwritable(t *testing.T, h *harness) outcome {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "svc.pid")
	out := successorFailsWith(molt.Options{PIDFile: pidFile}, nil, func(t *testing.T, h *harness, ip *inproc) error {
		h.onTeardown(unwritableDir(t, dir)) // undone before generation 1 stops
		ip.role(h, "", envFaultPIDFile+"="+pidFile)
		err := ip.upgrade(t)
		if f := h.wait("ready-error"); !strings.Contains(f["err"], pidFile) {
			t.Errorf("successor's Ready error = %q, want it to name %s", f["err"], pidFile)
		}
		return err
	}, func(t *testing.T, err error) {
		// The successor's own words, not its exit status: the caller
		// learns which file and which OS error.
		var re *molt.ReportedError
		if !errors.As(err, &re) {
			re = &molt.ReportedError{}
		}
		osErr := strings.Contains(re.Reason, "permission denied") || strings.Contains(re.Reason, "operation not permitted")
		if !strings.Contains(re.Reason, pidFile) || !osErr || stageOf(err) != molt.StageInit {
			t.Errorf("Upgrade = %v, want the successor's report naming %s and the OS error, at stage init", err, pidFile)
		}
	})(t, h)
	if b, err := os.ReadFile(pidFile); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("PID file = %q, %v; want it to name generation 1 (%d)", b, err, os.Getpid())
	}
	return out
}

// nofileTooLow: an inventory larger than the successor's RLIMIT_NOFILE
// fails the hand-off with the successor's own reason.
var nofileTooLow = successorFailsWith(molt.Options{ReadyTimeout: 30 * time.Second}, addFiles(64), func(t *testing.T, h *harness, ip *inproc) error {
	ip.role(h, "low-nofile")
	return ip.upgrade(t)
}, func(t *testing.T, err error) {
	var re *molt.ReportedError
	if !errors.As(err, &re) || !strings.Contains(re.Reason, "MSG_CTRUNC") || stageOf(err) != molt.StageInit {
		t.Errorf("Upgrade = %v, want the successor's report naming MSG_CTRUNC at stage init", err)
	}
})

// concurrentUpgrades: of 50 simultaneous Upgrade calls exactly one starts
// a successor; the others get ErrUpgradeInProgress while it runs.
func concurrentUpgrades(t *testing.T, h *harness) outcome {
	ip := h.startInProc(molt.Options{}, "tcp", "127.0.0.1:0", nil)
	h.startLoad(ip.tg)
	h.probe("before", ip.pid)
	release, releaseW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer release.Close()
	defer releaseW.Close()
	ip.roleWith(h, "release", release)
	const n = 50
	start := make(chan struct{})
	results := make(chan error, n)
	for range n {
		go func() { <-start; results <- ip.u.Upgrade(context.Background()) }()
	}
	h.beginFault()
	close(start)
	inProgress := 0
	for range n - 1 {
		if err := <-results; errors.Is(err, molt.ErrUpgradeInProgress) {
			inProgress++
		} else {
			t.Errorf("concurrent Upgrade = %v, want ErrUpgradeInProgress", err)
		}
	}
	succ, _ := strconv.Atoi(h.wait("initialising")["pid"])
	if got := ip.u.State(); got != molt.StateUpgrading {
		t.Errorf("State during the upgrade = %v, want upgrading", got)
	}
	h.probe("during", ip.pid)
	fmt.Fprintln(releaseW, "go")
	if err := <-results; err != nil {
		t.Fatalf("the one Upgrade that ran = %v, want nil", err)
	}
	ip.mu.Lock()
	started := ip.started
	ip.mu.Unlock()
	if started != 1 {
		t.Errorf("%d upgrades started, want 1", started)
	}
	if got, _ := strconv.Atoi(h.wait("ready")["pid"]); got != succ {
		t.Errorf("ready successor %d, want the one started (%d)", got, succ)
	}
	ip.takeOver(t)
	h.endFault()
	h.probe("after", succ)
	h.ld.waitMore(t, h.ld.snapshot(), succ, 20)
	h.onTeardown(func() { h.stopService(ip.tg, succ) })
	return outcome{
		upgrade:  fmt.Sprintf("1 succeeds, %d get ErrUpgradeInProgress, %d successor started", inProgress, started),
		servedBy: []server{{"parent", ip.pid}, {"successor", succ}},
	}
}

// Fixtures.

// addFiles adds n files ("f0"...) to the inventory of generation 1.
func addFiles(n int) func(*molt.Upgrader) {
	return func(u *molt.Upgrader) {
		for i := range n {
			f, err := os.Open(os.DevNull)
			if err == nil {
				u.AddFile("f"+strconv.Itoa(i), f)
			}
		}
	}
}

// binary makes the successor the executable at path.
func binary(path string) func(*exec.Cmd) error {
	return func(cmd *exec.Cmd) error {
		cmd.Path, cmd.Args = path, []string{path}
		cmd.Stdout = nil
		return nil
	}
}

// atoiEnv returns the number env sets name to, or 0.
func atoiEnv(env []string, name string) int {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// fsImmutableFL is FS_IMMUTABLE_FL of <linux/fs.h>: no new names in a
// directory that has it, even for root.
const fsImmutableFL = 0x10

// unwritableDir makes dir refuse new files, even to root (chmod, then the
// immutable attribute), and returns a function that undoes it; it skips the
// test if neither works.
func unwritableDir(t *testing.T, dir string) func() {
	t.Helper()
	writable := func() bool {
		f, err := os.CreateTemp(dir, "probe")
		if err != nil {
			return false
		}
		f.Close()
		os.Remove(f.Name())
		return true
	}
	os.Chmod(dir, 0o555)
	undo := func() { os.Chmod(dir, 0o755) }
	if !writable() {
		return undo
	}
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	flags, err := unix.IoctlGetUint32(int(d.Fd()), unix.FS_IOC_GETFLAGS)
	if err == nil {
		err = unix.IoctlSetPointerInt(int(d.Fd()), unix.FS_IOC_SETFLAGS, int(flags|fsImmutableFL))
	}
	if err != nil || writable() {
		undo()
		t.Skipf("cannot make %s unwritable for this user (chmod, immutable attribute: %v)", dir, err)
	}
	return func() {
		if d, err := os.Open(dir); err == nil {
			unix.IoctlSetPointerInt(int(d.Fd()), unix.FS_IOC_SETFLAGS, int(flags))
			d.Close()
		}
		undo()
	}
}

// staleSocket leaves a socket file at path that nothing serves, as a
// crashed process does.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
}

// successorFailsProbation: generation 1 keeps its successor on probation;
// the successor takes over, serves, then fails as fault says (and reports
// it with the event said). Generation 1 accepts again at once on the same
// sockets: nothing is refused, only what the successor had accepted dies
// with it. A later successor passes its probation, and generation 1 then
// drains as without one.
func successorFailsProbation(fault, said string) func(*testing.T, *harness) outcome {
	return func(t *testing.T, h *harness) outcome {
		const probation = 5 * time.Second // far longer than the successor lives
		ip := h.startInProc(molt.Options{ReadyTimeout: 30 * time.Second, Probation: probation}, "tcp", "127.0.0.1:0", nil)
		h.startLoad(ip.tg)
		h.probe("before", ip.pid)
		ip.role(h, fault)
		h.beginFault()
		err := ip.upgrade(t)
		h.endFault()
		var ce *molt.ChildError
		if !errors.As(err, &ce) || !errors.Is(err, molt.ErrRolledBack) || ce.Stage != molt.StageProbation {
			t.Fatalf("Upgrade = %v, want a rollback: a ChildError at stage probation", err)
		}
		h.markKilled(ce.PID, time.Now())
		ready := h.wait("ready")
		f := h.wait(said)
		if n, _ := strconv.Atoi(f["served"]); ready["pid"] != strconv.Itoa(ce.PID) || f["pid"] != ready["pid"] || n < 20 {
			t.Errorf("successor %s (ready as %s) failed after serving %s requests, want successor %d after 20 or more", f["pid"], ready["pid"], f["served"], ce.PID)
		}
		switch fault {
		case "exit-in-probation":
			if exitCode(err) != 3 {
				t.Errorf("Upgrade = %v, want the successor's exit status 3", err)
			}
		case "rollback-in-probation":
			var re *molt.ReportedError
			if !errors.As(err, &re) || re.Reason != "health check failed" || !signalled(err, syscall.SIGKILL) && ce.State == nil {
				t.Errorf("Upgrade = %v, want the reported reason \"health check failed\"", err)
			}
			if f["err"] != "<nil>" {
				t.Errorf("RollBack in the successor = %s, want nil", f["err"])
			}
		}
		if !strings.HasPrefix(err.Error(), fmt.Sprintf("molt: rolled back: successor pid %d during probation: ", ce.PID)) {
			t.Errorf("Upgrade's error says %q, want it to begin \"molt: rolled back: successor pid %d during probation: \"", err, ce.PID)
		}
		h.probe("after", ip.pid)
		h.ld.waitMore(t, h.ld.snapshot(), ip.pid, 20)

		// The next successor passes its probation. The commit hooks run
		// at its end, when the successor serves alone.
		ip.role(h, "")
		ip.setOnCommit(func(pid int) { h.probe("during", pid) })
		began := time.Now()
		if err := ip.upgrade(t); err != nil {
			t.Fatalf("later Upgrade = %v, want nil", err)
		}
		if took := time.Since(began); took < probation {
			t.Errorf("later Upgrade returned after %v, before its probation (%v) ended", took, probation)
		}
		r := h.wait("ready")
		succ, _ := strconv.Atoi(r["pid"])
		ip.takeOver(t)
		h.probe("after", succ)
		h.ld.waitMore(t, h.ld.snapshot(), succ, 20)
		h.onTeardown(func() { h.stopService(ip.tg, succ) })
		return outcome{
			upgrade:  fmt.Sprintf("1st rolled back: %v; 2nd passes its probation", ce.Err),
			servedBy: []server{{"parent", ip.pid}, {"successor", ce.PID}, {"2nd successor", succ}},
		}
	}
}
