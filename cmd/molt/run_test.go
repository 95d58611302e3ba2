//go:build linux

package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moltgo/molt/control"
	"github.com/moltgo/molt/internal/proctest"
	"github.com/moltgo/molt/internal/runchild"
)

// supervisor is a "molt run" process started by a test.
type supervisor struct {
	cmd      *exec.Cmd
	ev       *proctest.Events
	logs     *syncBuffer
	modeFile string
	exited   chan struct{}
	code     int
	prepare  func(*exec.Cmd) // changes the command before it starts
}

// prepareRun is set by a test for the next startRun only.
var prepareRun func(*exec.Cmd)

// startRun starts molt run with args (the program is this binary as
// runchild in mode), env added to its environment and attr as its
// SysProcAttr.
func startRun(t *testing.T, mode string, attr *syscall.SysProcAttr, env []string, args ...string) *supervisor {
	t.Helper()
	dir := proctest.ShortDir(t)
	s := &supervisor{logs: &syncBuffer{}, modeFile: filepath.Join(dir, "mode"), exited: make(chan struct{}), prepare: prepareRun}
	prepareRun = nil
	s.setMode(t, mode)
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	args = append(append([]string{"run"}, args...), "--", os.Args[0], runchild.Arg, mode)
	cmd := cliCommand(args...)
	cmd.Env = append(cmd.Env, runchild.EnvModeFile+"="+s.modeFile, "GORACE=atexit_sleep_ms=0")
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = outW, errW
	cmd.SysProcAttr = attr
	if s.prepare != nil {
		s.prepare(cmd)
	}
	s.cmd = cmd
	s.ev = proctest.NewEvents(outR)
	copied := make(chan struct{})
	go func() { io.Copy(s.logs, errR); close(copied) }()
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		if attr != nil && (errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL)) {
			t.Skipf("cannot start molt run in a new PID namespace: %v", err)
		}
		t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		s.code = cmd.ProcessState.ExitCode()
		close(s.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-s.exited
		s.ev.KillAll()
		<-copied
		outR.Close()
		errR.Close()
		if t.Failed() {
			t.Logf("molt run's log:\n%s", s.logs.String())
		}
	})
	return s
}

func (s *supervisor) setMode(t *testing.T, mode string) {
	t.Helper()
	if err := os.WriteFile(s.modeFile, []byte(mode), 0o600); err != nil {
		t.Fatal(err)
	}
}

// wait waits for molt run to exit and returns its exit status.
func (s *supervisor) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-s.exited:
		return s.code
	case <-time.After(proctest.Patience):
		t.Fatalf("molt run still running after %v", proctest.Patience)
	}
	return -1
}

// servedBy asks addr which pid serves, on a new connection.
func servedBy(t *testing.T, addr string) string {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(strings.TrimPrefix(string(b), "pid="))
}

func waitGone(t *testing.T, pid string) {
	t.Helper()
	n, err := strconv.Atoi(pid)
	if err != nil {
		t.Fatalf("pid %q: %v", pid, err)
	}
	proctest.WaitGone(t, n)
}

// fakeSystemd is a NOTIFY_SOCKET for molt run itself.
type fakeSystemd struct {
	c    *net.UnixConn
	path string
}

func newFakeSystemd(t *testing.T) *fakeSystemd {
	t.Helper()
	path := filepath.Join(proctest.ShortDir(t), "sd")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &fakeSystemd{c: c, path: path}
}

// next returns the next notification's assignments.
func (f *fakeSystemd) next(t *testing.T) map[string]string {
	t.Helper()
	f.c.SetReadDeadline(time.Now().Add(proctest.Patience))
	buf := make([]byte, 4096)
	n, err := f.c.Read(buf)
	if err != nil {
		t.Fatalf("no notification from molt run: %v", err)
	}
	m := map[string]string{}
	for line := range strings.SplitSeq(string(buf[:n]), "\n") {
		k, v, _ := strings.Cut(line, "=")
		m[k] = v
	}
	return m
}

// TestRunUpgrades drives molt run with the molt command, SIGHUP and a
// failing new instance, and checks what molt run tells systemd.
func TestRunUpgrades(t *testing.T) {
	sock := filepath.Join(proctest.ShortDir(t), "c.sock")
	sd := newFakeSystemd(t)
	s := startRun(t, runchild.Notify, nil, []string{"NOTIFY_SOCKET=" + sd.path},
		"--listen", "web=tcp://127.0.0.1:0", "--control", sock, "--grace", "2m")
	if m := sd.next(t); m["STATUS"] == "" {
		t.Errorf("first notification %v, want a STATUS", m)
	}
	if m := sd.next(t); m["READY"] != "1" || !strings.Contains(m["STATUS"], "generation 1") {
		t.Errorf("notification %v, want READY=1 and generation 1's status", m)
	}
	first := s.ev.Wait(t, "serving")
	if first["names"] != "web" {
		t.Errorf("instance got sockets %q, want web", first["names"])
	}
	st, err := (&control.Client{Path: sock}).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	addr := st.Listeners[0].Address
	if got := servedBy(t, addr); got != first["pid"] || strconv.Itoa(st.PID) != got {
		t.Fatalf("served by %s; status pid %d, instance %s", got, st.PID, first["pid"])
	}

	r := moltCLI(t, "upgrade", "-s", sock)
	m := upgradedLine.FindStringSubmatch(r.stdout)
	if r.code != exitOK || m == nil || m[2] != "2" || m[3] != first["pid"] {
		t.Fatalf("molt upgrade: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	second := s.ev.Wait(t, "serving")
	// The old instance accepts on the shared socket until it handles its
	// stop signal: ask once it is gone.
	waitGone(t, first["pid"])
	if second["pid"] != m[1] || servedBy(t, addr) != m[1] {
		t.Errorf("the new instance is %v; molt upgrade said pid %s", second, m[1])
	}
	if n := sd.next(t); n["RELOADING"] != "1" || n["MONOTONIC_USEC"] == "" {
		t.Errorf("notification %v, want RELOADING=1 with MONOTONIC_USEC", n)
	}
	if n := sd.next(t); n["READY"] != "1" || !strings.Contains(n["STATUS"], "generation 2") {
		t.Errorf("notification %v, want READY=1 and generation 2's status", n)
	}

	s.setMode(t, runchild.Fail)
	r = moltCLI(t, "upgrade", "-s", sock)
	if r.code != exitFailed || !strings.Contains(r.stderr, "failed during init") || !strings.Contains(r.stderr, "exit status 3") ||
		!strings.Contains(r.stderr, "pid "+second["pid"]+" (generation 2) goes on serving") {
		t.Errorf("molt upgrade to a failing program: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if got := servedBy(t, addr); got != second["pid"] {
		t.Errorf("after the failed upgrade served by %s, want %s", got, second["pid"])
	}
	sd.next(t) // RELOADING=1
	if n := sd.next(t); n["READY"] != "1" || !strings.Contains(n["STATUS"], "failed") {
		t.Errorf("notification %v, want READY=1 and a STATUS naming the failure", n)
	}

	s.setMode(t, runchild.Notify)
	s.cmd.Process.Signal(syscall.SIGHUP)
	third := s.ev.Wait(t, "serving")
	sd.next(t) // RELOADING=1
	if n := sd.next(t); n["READY"] != "1" || !strings.Contains(n["STATUS"], "generation 3") {
		t.Errorf("notification %v after SIGHUP, want READY=1 and generation 3's status", n)
	}
	waitGone(t, second["pid"])
	if got := servedBy(t, addr); got != third["pid"] {
		t.Errorf("after SIGHUP served by %s, want %s", got, third["pid"])
	}

	if r := moltCLI(t, "stop", "-s", sock); r.code != exitOK {
		t.Errorf("molt stop: exit %d, stderr %q", r.code, r.stderr)
	}
	if code := s.wait(t); code != 0 {
		t.Errorf("molt run exited with %d after molt stop, want 0", code)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket left behind: %v", err)
	}
}

// TestRunFirstInstanceFails: molt run exits with the program's status
// when the first instance cannot start.
func TestRunFirstInstanceFails(t *testing.T) {
	s := startRun(t, runchild.Fail, nil, nil, "--listen", "web=tcp://127.0.0.1:0")
	if code := s.wait(t); code != 3 {
		t.Errorf("molt run exited with %d, want the program's 3", code)
	}
	if !strings.Contains(s.logs.String(), "molt: run: supervise: the instance exited before it was ready: exit status 3") {
		t.Errorf("molt run's log does not say why:\n%s", s.logs.String())
	}
}

// TestRunPID1 runs molt run as process 1 of a new PID namespace, as in a
// container: it forwards signals to the program, reaps an orphan the
// program leaves, and exits with the program's status.
func TestRunPID1(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a PID namespace needs root")
	}
	s := startRun(t, runchild.Orphan, &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID},
		[]string{runchild.EnvExit + "=7"}, "--listen", "web=tcp://127.0.0.1:0")
	orphan := s.ev.Wait(t, "orphan")
	serving := s.ev.Wait(t, "serving")
	if serving["pid"] == "1" || serving["pid"] == "" {
		t.Fatalf("the program is pid %q in the namespace", serving["pid"])
	}
	// The orphan's parent exited without waiting for it, so it went to
	// process 1 of the namespace, molt run, which must reap it: its /proc
	// entry goes away only then.
	proctest.WaitUntil(t, "the orphan reaped", func() bool {
		_, err := os.Stat("/proc/" + orphan["pid"])
		return errors.Is(err, os.ErrNotExist)
	})
	for _, sig := range []syscall.Signal{syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGQUIT} {
		s.cmd.Process.Signal(sig)
		if ev := s.ev.Wait(t, "signal"); ev["signal"] != sig.String() {
			t.Errorf("forwarded %v, the program got %q", sig, ev["signal"])
		}
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	if ev := s.ev.Wait(t, "stopped"); ev["signal"] != syscall.SIGTERM.String() {
		t.Errorf("the program stopped on %q, want SIGTERM", ev["signal"])
	}
	if code := s.wait(t); code != 7 {
		t.Errorf("molt run exited with %d, want the program's 7", code)
	}
}

// TestRunMoltServicePID1: a service built with the molt library runs
// under molt run as PID 1 of a PID namespace, as the README says a molt
// service should in a container: molt upgrade starts its next version as
// a new instance, the old one drains and exits, and molt run, the
// container's process 1, serves on throughout. Needs root.
func TestRunMoltServicePID1(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a PID namespace needs root")
	}
	sock := filepath.Join(proctest.ShortDir(t), "c.sock")
	s := startRun(t, runchild.Molt, &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}, nil,
		"--control", sock, "--listen", "web=tcp://127.0.0.1:0")
	first := s.ev.Wait(t, "serving")
	st, err := (&control.Client{Path: sock}).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	addr := st.Listeners[0].Address
	for i := range 3 {
		r := moltCLI(t, "-s", sock, "upgrade")
		if r.code != exitOK {
			t.Fatalf("molt upgrade %d: exit %d, %q %q", i+1, r.code, r.stdout, r.stderr)
		}
		next := s.ev.Wait(t, "serving")
		if next["generation"] != "1" || next["pid"] == first["pid"] {
			t.Errorf("upgrade %d: the new instance is %v, want a new process in generation 1 of its own", i+1, next)
		}
		if stopped := s.ev.Wait(t, "stopped"); stopped["pid"] != first["pid"] {
			t.Errorf("upgrade %d: %v stopped, want the old instance %s", i+1, stopped, first["pid"])
		}
		if got := servedBy(t, addr); got != next["pid"] {
			t.Errorf("upgrade %d: served by %s, want %s", i+1, got, next["pid"])
		}
		first = next
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	if code := s.wait(t); code != 0 {
		t.Errorf("molt run exited with %d, want the service's 0", code)
	}
}

// TestRunActivated: molt run started by socket activation passes the
// sockets it got on to the program, names included. It is started the
// way it starts programs: through the shim, which sets LISTEN_PID.
func TestRunActivated(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sock := filepath.Join(proctest.ShortDir(t), "c.sock")
	prepareRun = func(cmd *exec.Cmd) {
		cmd.Args = append([]string{os.Args[0], os.Args[0]}, cmd.Args...) // the shim's argv: path, then argv
		cmd.Env = append(cmd.Env, "MOLT_RUN_EXEC=1", "LISTEN_FDS=1", "LISTEN_FDNAMES=public")
		cmd.ExtraFiles = []*os.File{f}
	}
	s := startRun(t, runchild.Notify, nil, nil, "--control", sock, "--listen", "web=tcp://127.0.0.1:0")
	ev := s.ev.Wait(t, "serving")
	if ev["names"] != "public,web" || ev["fds"] != "2" {
		t.Errorf("the program got %v, want the activated socket first, then --listen's", ev)
	}
	if got := servedBy(t, ln.Addr().String()); got != ev["pid"] {
		t.Errorf("the activated socket is served by %s, want %s", got, ev["pid"])
	}
	if r := moltCLI(t, "stop", "-s", sock); r.code != exitOK {
		t.Errorf("molt stop: exit %d, stderr %q", r.code, r.stderr)
	}
	if code := s.wait(t); code != 0 {
		t.Errorf("molt run exited with %d, want 0", code)
	}
}
