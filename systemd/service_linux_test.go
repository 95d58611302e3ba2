package systemd_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/systemd"
)

// The roles below are successors started by a test process that plays
// generation 1 under a fake systemd (fake_linux_test.go).
func init() {
	roles["successor"] = roleSuccessor
	roles["fail-init"] = roleFailInit
}

const envFakeFDStore = "MOLT_SD_TEST_FDSTORE" // "1": the successor uses Options.FDStore

func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("pid", os.Getpid())
}

// roleSuccessor takes over the "http" socket, becomes ready, and drains
// and stops on SIGTERM.
func roleSuccessor() int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	upg, err := molt.New(molt.Options{ReadyTimeout: 20 * time.Second, Logger: testLogger()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "successor:", err)
		return 1
	}
	defer upg.Stop()
	svc, err := systemd.Attach(upg, systemd.Options{FDStore: os.Getenv(envFakeFDStore) == "1", Logger: testLogger()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "successor:", err)
		return 1
	}
	defer svc.Close()
	ln, err := svc.Listen("http", "tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "successor:", err)
		return 1
	}
	defer ln.Close()
	if err := upg.Ready(); err != nil {
		fmt.Fprintln(os.Stderr, "successor:", err)
		return 1
	}
	<-sigs
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := svc.Draining(ctx)
	done()
	return 0
}

// roleFailInit fails before Ready, as a successor with a bad configuration.
func roleFailInit() int {
	upg, err := molt.New(molt.Options{ReadyTimeout: 20 * time.Second, Logger: testLogger()})
	if err != nil {
		return 1
	}
	if _, err := systemd.Attach(upg, systemd.Options{}); err != nil {
		return 1
	}
	fmt.Fprintln(os.Stderr, "fail-init: configuration error (on purpose)")
	os.Exit(3) // no Stop: as a crash
	return 3
}

// checkGoroutines fails the test if goroutines are left when it ends.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if after := runtime.NumGoroutine(); after > before {
			buf := make([]byte, 1<<16)
			t.Errorf("goroutines: %d before, %d after\n%s", before, after, buf[:runtime.Stack(buf, true)])
		}
	})
}

// testUpgrader makes this test process generation 1, with successors that
// play role.
func testUpgrader(t *testing.T, role string, env ...string) *molt.Upgrader {
	t.Helper()
	roleEnv := useRole(t, role)
	upg, err := molt.New(molt.Options{
		ReadyTimeout: 20 * time.Second,
		Command: func(cmd *exec.Cmd) error {
			cmd.Env = append(append(cmd.Env, roleEnv), env...)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(upg.Stop)
	return upg
}

// waitGone waits until process pid has exited and been reaped.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for unix.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still there", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAttachUpgrade follows one upgrade as systemd sees it: generation 1
// is announced with its PID, stores its new socket, pings the watchdog;
// the upgrade reloads; the hand-over names the successor in one datagram
// from the old main process, followed by a barrier; from then on only the
// successor speaks — its pings, and STOPPING=1 when it stops.
func TestAttachUpgrade(t *testing.T) {
	checkFDs(t)
	checkGoroutines(t)
	fake := newFakeSystemd(t, false)
	self := os.Getpid()
	t.Setenv("WATCHDOG_USEC", "300000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(self))

	upg := testUpgrader(t, "successor", envFakeFDStore+"=1")
	svc, err := systemd.Attach(upg, systemd.Options{FDStore: true})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	ln, err := svc.Listen("http", "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Listen("http", "tcp", "127.0.0.1:0"); !errors.Is(err, systemd.ErrClaimed) {
		t.Errorf("second Listen(http) = %v, want ErrClaimed", err)
	}
	if err := svc.Notify(context.Background(), systemd.Status("x")); err != nil {
		t.Errorf("Notify by generation 1 before Ready = %v, want nil (it is the main process)", err)
	}
	if err := upg.Ready(); err != nil {
		t.Fatal(err)
	}

	ready, before := fake.nextMatching("READY=1")
	if ready.pid != self || !ready.has("MAINPID="+strconv.Itoa(self), "STATUS=") {
		t.Errorf("ready: %v, want MAINPID=%d READY=1 STATUS from pid %d", ready, self, self)
	}
	var stored bool
	for _, m := range before {
		stored = stored || m.has("FDSTORE=1", "FDNAME=http") && m.fds == 1 && m.pid == self
	}
	if !stored {
		t.Errorf("no FDSTORE=1 FDNAME=http before READY=1: %v", before)
	}
	if ping, _ := fake.nextMatching("WATCHDOG=1"); ping.pid != self {
		t.Errorf("watchdog ping %v, want from pid %d", ping, self)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := upg.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	succ := upg.Stats().LastUpgrade.SuccessorPID

	reloading, _ := fake.nextMatching("RELOADING=1", "STATUS=")
	handover, between := fake.nextMatching("MAINPID=" + strconv.Itoa(succ))
	barrier := fake.next()
	if reloading.pid != self || !reloading.has("MONOTONIC_USEC=") {
		t.Errorf("reloading: %v, want RELOADING=1 with MONOTONIC_USEC from pid %d", reloading, self)
	}
	if handover.pid != self || !handover.has("READY=1", "RELOADING=1", "MONOTONIC_USEC=", "STATUS=") ||
		!strings.Contains(handover.get("STATUS"), fmt.Sprintf("pid %d", succ)) {
		t.Errorf("hand-over: %v, want MAINPID=%d with READY=1 and a STATUS, in one datagram from pid %d", handover, succ, self)
	}
	for _, m := range between {
		if m.pid != self || !m.has("WATCHDOG=1") {
			t.Errorf("between RELOADING and the hand-over: %v", m)
		}
	}
	if barrier.pid != self || strings.Join(barrier.vars, " ") != "BARRIER=1" || barrier.fds != 1 {
		t.Errorf("after the hand-over: %v, want BARRIER=1 from pid %d", barrier, self)
	}
	if ping, _ := fake.nextMatching("WATCHDOG=1"); ping.pid != succ {
		t.Errorf("watchdog ping after the hand-over %v, want from the successor %d", ping, succ)
	}

	// The old generation drains and stops; it says nothing any more.
	if err := svc.Notify(ctx, systemd.Status("x")); !errors.Is(err, systemd.ErrNotMain) {
		t.Errorf("Notify after the hand-over = %v, want ErrNotMain", err)
	}
	done := svc.Draining(ctx)
	done()
	ln.Close()
	upg.Stop()
	svc.Close()
	n, err := systemd.NewNotifier()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Barrier(ctx); err != nil { // everything this process sent is queued before it
		t.Fatal(err)
	}
	for {
		m := fake.next()
		if m.pid == self && m.has("BARRIER=1") {
			break
		}
		if m.pid != succ {
			t.Errorf("after the hand-over, from %d: %v", m.pid, m)
		}
	}

	// The successor is the service now: it stops with STOPPING=1.
	if err := unix.Kill(succ, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	stopping, _ := fake.nextMatching("STOPPING=1")
	if stopping.pid != succ || stopping.has("EXTEND_TIMEOUT_USEC=") {
		t.Errorf("stopping: %v, want STOPPING=1 from %d and no EXTEND_TIMEOUT_USEC (not asked for)", stopping, succ)
	}
	waitGone(t, succ)
	if got := fake.storedFiles(); len(got) != 1 {
		t.Errorf("%d descriptors stored, want 1 (the successor inherited the socket and stores nothing)", len(got))
	}
}

// TestDrainingStopTimeout: by default Draining sends STOPPING=1 and no
// extension, so that TimeoutStopSec= bounds the stop; with
// Options.ExtendStopTimeout it extends the timeout until done.
func TestDrainingStopTimeout(t *testing.T) {
	for _, extend := range []bool{false, true} {
		t.Run(fmt.Sprintf("extend=%t", extend), func(t *testing.T) {
			checkGoroutines(t)
			fake := newFakeSystemd(t, true)
			self := os.Getpid()
			upg, err := molt.New(molt.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer upg.Stop()
			svc, err := systemd.Attach(upg, systemd.Options{ExtendStopTimeout: extend})
			if err != nil {
				t.Fatal(err)
			}
			defer svc.Close()
			if err := upg.Ready(); err != nil {
				t.Fatal(err)
			}
			if ready, _ := fake.nextMatching("READY=1"); ready.pid != self {
				t.Fatalf("ready: %v", ready)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			done := svc.Draining(ctx)
			stopping := fake.next()
			if stopping.pid != self || !stopping.has("STOPPING=1", "STATUS=stopping: draining") {
				t.Errorf("draining: %v, want STOPPING=1 and the status from %d", stopping, self)
			}
			if got := stopping.has("EXTEND_TIMEOUT_USEC=30000000"); got != extend {
				t.Errorf("draining: %v; EXTEND_TIMEOUT_USEC=30000000 sent: %t, want %t", stopping, got, extend)
			}
			if !extend && stopping.has("EXTEND_TIMEOUT_USEC=") {
				t.Errorf("draining: %v, want no extension by default", stopping)
			}
			// A second call sends no second STOPPING=1; with the option,
			// only the extension.
			done2 := svc.Draining(ctx)
			done()
			done()
			done2()
			upg.Stop()
			n, err := systemd.NewNotifier()
			if err != nil {
				t.Fatal(err)
			}
			if err := n.Barrier(ctx); err != nil {
				t.Fatal(err)
			}
			for {
				m := fake.next()
				if m.has("BARRIER=1") {
					break
				}
				if m.has("STOPPING=1") || !extend && m.has("EXTEND_TIMEOUT_USEC=") {
					t.Errorf("after the first Draining: %v", m)
				}
			}
		})
	}
}

// TestAttachFailedUpgrade: a successor that fails leaves generation 1
// serving; systemd's reload ends with READY=1 and the reason in STATUS.
func TestAttachFailedUpgrade(t *testing.T) {
	checkFDs(t)
	checkGoroutines(t)
	fake := newFakeSystemd(t, true)
	self := os.Getpid()
	upg := testUpgrader(t, "fail-init")
	svc, err := systemd.Attach(upg, systemd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	ln, err := svc.Listen("http", "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := upg.Ready(); err != nil {
		t.Fatal(err)
	}
	fake.nextMatching("READY=1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = upg.Upgrade(ctx)
	var ce *molt.ChildError
	if !errors.As(err, &ce) {
		t.Fatalf("Upgrade = %v, want a *molt.ChildError", err)
	}
	fake.nextMatching("RELOADING=1")
	m := fake.next()
	if m.pid != self || !m.has("READY=1", "RELOADING=1") || !strings.Contains(m.get("STATUS"), "upgrade failed") ||
		!strings.Contains(m.get("STATUS"), "exit status 3") || m.has("MAINPID=") {
		t.Errorf("after the failed upgrade: %v, want READY=1 and the reason (exit status 3) in STATUS from pid %d", m, self)
	}
	if err := svc.Notify(ctx, systemd.Status("still here")); err != nil {
		t.Errorf("Notify after a failed upgrade = %v, want nil (still the main process)", err)
	}
	fake.next()
	upg.Stop()
	if m := fake.next(); m.pid != self || !m.has("STOPPING=1") {
		t.Errorf("at Stop: %v, want STOPPING=1 from pid %d", m, self)
	}
}

// Outside systemd the Service sends nothing and the sockets are the
// Upgrader's.
func TestAttachOutsideSystemd(t *testing.T) {
	checkFDs(t)
	checkGoroutines(t)
	t.Setenv("NOTIFY_SOCKET", "")
	os.Unsetenv("NOTIFY_SOCKET")
	upg, err := molt.New(molt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer upg.Stop()
	svc, err := systemd.Attach(upg, systemd.Options{FDStore: true})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	ln, err := svc.Listen("http", "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := svc.Listener("nope"); !errors.Is(err, systemd.ErrNotFound) {
		t.Errorf("Listener(nope) = %v, want ErrNotFound", err)
	}
	if _, err := svc.PacketConn("nope"); !errors.Is(err, systemd.ErrNotFound) {
		t.Errorf("PacketConn(nope) = %v, want ErrNotFound", err)
	}
	if _, err := svc.Listen("bad:name", "tcp", "127.0.0.1:0"); !errors.Is(err, systemd.ErrInvalidMessage) {
		t.Errorf("Listen(bad:name) = %v, want ErrInvalidMessage", err)
	}
	if err := upg.Ready(); err != nil {
		t.Fatal(err)
	}
	if err := svc.Notify(context.Background(), systemd.Ready); !errors.Is(err, systemd.ErrNoNotifySocket) {
		t.Errorf("Notify = %v, want ErrNoNotifySocket", err)
	}
	svc.Draining(context.Background())()
	st := upg.Stats()
	if len(st.Inventory) != 1 || st.Inventory[0].Name != "systemd/http" || st.Inventory[0].Kind != "listener" {
		t.Errorf("inventory %+v, want the listener systemd/http", st.Inventory)
	}
}

// Bad variables of systemd's stop Attach with a clear error.
func TestAttachBadEnv(t *testing.T) {
	checkFDs(t)
	self := strconv.Itoa(os.Getpid())
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"LISTEN_FDS=abc", map[string]string{"LISTEN_PID": self, "LISTEN_FDS": "abc"}, "LISTEN_FDS"},
		{"LISTEN_PID=x", map[string]string{"LISTEN_PID": "x", "LISTEN_FDS": "1"}, "LISTEN_PID"},
		{"name count", map[string]string{"LISTEN_PID": self, "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a"}, "LISTEN_FDNAMES"},
		{"WATCHDOG_USEC=soon", map[string]string{"WATCHDOG_USEC": "soon"}, "WATCHDOG_USEC"},
		{"NOTIFY_SOCKET relative", map[string]string{"NOTIFY_SOCKET": "notify"}, "NOTIFY_SOCKET"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("NOTIFY_SOCKET", "")
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			upg, err := molt.New(molt.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer upg.Stop()
			svc, err := systemd.Attach(upg, systemd.Options{})
			if !errors.Is(err, systemd.ErrInvalidEnv) || !strings.Contains(err.Error(), tc.want) || svc != nil {
				t.Errorf("Attach = %v, %v; want ErrInvalidEnv naming %s", svc, err, tc.want)
			}
			if strings.HasPrefix(tc.want, "LISTEN") {
				for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
					if _, ok := os.LookupEnv(v); ok {
						t.Errorf("%s left in the environment", v)
					}
				}
			}
		})
	}
}

// Attach after Ready is refused: the Service would have missed READY.
func TestAttachAfterReady(t *testing.T) {
	upg, err := molt.New(molt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer upg.Stop()
	if err := upg.Ready(); err != nil {
		t.Fatal(err)
	}
	if _, err := systemd.Attach(upg, systemd.Options{}); err == nil {
		t.Error("Attach after Ready = nil, want an error")
	}
}

// listenerFile returns a descriptor of ln's socket for a child process.
func listenerFile(t *testing.T, ln net.Listener) *os.File {
	t.Helper()
	f, err := ln.(interface{ File() (*os.File, error) }).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
