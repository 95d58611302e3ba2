package systemd_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moltgo/molt/systemd"
)

// openFDs counts this process's open descriptors.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// checkFDs fails the test if the descriptor count differs from before
// when the test ends (after the other cleanups, which run first).
func checkFDs(t *testing.T) {
	t.Helper()
	before := openFDs(t)
	t.Cleanup(func() {
		// The runtime may still be closing a descriptor of a finished
		// goroutine; give it a moment, bounded.
		deadline := time.Now().Add(5 * time.Second)
		for openFDs(t) != before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if after := openFDs(t); after != before {
			t.Errorf("open descriptors: %d before, %d after", before, after)
		}
	})
}

func monotonicUsec(t *testing.T) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Nano() / 1000
}

func TestNotify(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		t.Run(fmt.Sprintf("abstract=%t", abstract), func(t *testing.T) {
			checkFDs(t)
			fake := newFakeSystemd(t, abstract)
			if abstract != strings.HasPrefix(os.Getenv("NOTIFY_SOCKET"), "@") {
				t.Fatalf("NOTIFY_SOCKET=%q", os.Getenv("NOTIFY_SOCKET"))
			}
			n, err := systemd.NewNotifier()
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if err := n.Notify(ctx, systemd.MainPID(os.Getpid()), systemd.Ready, systemd.Status("serving\non :8080")); err != nil {
				t.Fatal(err)
			}
			got := fake.next()
			want := []string{"MAINPID=" + strconv.Itoa(os.Getpid()), "READY=1", "STATUS=serving on :8080"}
			if got.pid != os.Getpid() || strings.Join(got.vars, "\n") != strings.Join(want, "\n") || got.fds != 0 {
				t.Errorf("received %v, want pid %d: %q", got, os.Getpid(), want)
			}

			before := monotonicUsec(t)
			if err := n.Notify(ctx, systemd.Reloading, systemd.ExtendTimeout(1500*time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			after := monotonicUsec(t)
			got = fake.next()
			mono, err := strconv.ParseInt(got.get("MONOTONIC_USEC"), 10, 64)
			if len(got.vars) != 3 || got.vars[0] != "RELOADING=1" || err != nil || mono < before || mono > after ||
				got.get("EXTEND_TIMEOUT_USEC") != "1500000" {
				t.Errorf("received %v, want RELOADING=1, MONOTONIC_USEC in [%d, %d], EXTEND_TIMEOUT_USEC=1500000", got, before, after)
			}

			if err := n.Notify(ctx, systemd.Stopping, systemd.WatchdogPing); err != nil {
				t.Fatal(err)
			}
			if got := fake.next(); !got.has("STOPPING=1", "WATCHDOG=1") {
				t.Errorf("received %v", got)
			}
		})
	}
}

func TestNotifyInvalid(t *testing.T) {
	checkFDs(t)
	fake := newFakeSystemd(t, false)
	n, err := systemd.NewNotifier()
	if err != nil {
		t.Fatal(err)
	}
	long := make([]systemd.Assignment, 5)
	for i := range long {
		long[i] = systemd.Status(strings.Repeat("x", 2000))
	}
	for _, tc := range []struct {
		name string
		a    []systemd.Assignment
	}{
		{"MainPID(0)", []systemd.Assignment{systemd.Ready, systemd.MainPID(0)}},
		{"MainPID(-1)", []systemd.Assignment{systemd.MainPID(-1)}},
		{"ExtendTimeout(0)", []systemd.Assignment{systemd.ExtendTimeout(0)}},
		{"zero Assignment", []systemd.Assignment{{}}},
		{"longer than 4096 bytes", long},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := n.Notify(context.Background(), tc.a...); !errors.Is(err, systemd.ErrInvalidMessage) {
				t.Errorf("Notify(%v) = %v, want ErrInvalidMessage", tc.a, err)
			}
		})
	}
	// Nothing invalid was sent: the next datagram is this one.
	if err := n.Notify(context.Background(), systemd.Ready); err != nil {
		t.Fatal(err)
	}
	if got := fake.next(); strings.Join(got.vars, " ") != "READY=1" {
		t.Errorf("received %v, want READY=1 only", got)
	}
	if err := n.Notify(context.Background()); err != nil {
		t.Errorf("Notify() = %v, want nil", err)
	}
}

func TestNewNotifierEnv(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  error
	}{
		{"", systemd.ErrNoNotifySocket},
		{"run/notify", systemd.ErrInvalidEnv},
		{"vsock:2:1234", systemd.ErrInvalidEnv},
		{"@", systemd.ErrInvalidEnv},
		{"/" + strings.Repeat("x", 120), systemd.ErrInvalidEnv},
		{"/run/systemd/notify", nil},
		{"@abstract", nil},
	} {
		t.Run(tc.value, func(t *testing.T) {
			t.Setenv("NOTIFY_SOCKET", tc.value)
			n, err := systemd.NewNotifier()
			if !errors.Is(err, tc.want) || (err == nil) != (n != nil) {
				t.Errorf("NewNotifier() with NOTIFY_SOCKET=%q = %v, %v; want %v", tc.value, n, err, tc.want)
			}
			if err == nil && n.String() != tc.value {
				t.Errorf("Notifier.String() = %q, want %q", n.String(), tc.value)
			}
		})
	}
}

func TestNotifyNobodyListening(t *testing.T) {
	checkFDs(t)
	dir := t.TempDir()
	t.Setenv("NOTIFY_SOCKET", dir+"/none")
	n, err := systemd.NewNotifier()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Notify(context.Background(), systemd.Ready); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("Notify to a missing socket = %v, want an error naming it", err)
	}
}

// A full queue on systemd's side blocks Notify until ctx ends.
func TestNotifyFullQueue(t *testing.T) {
	checkFDs(t)
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: dir + "/notify", Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close() // nobody reads
	t.Setenv("NOTIFY_SOCKET", dir+"/notify")
	n, err := systemd.NewNotifier()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10_000 {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := n.Notify(ctx, systemd.WatchdogPing)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			t.Logf("blocked after %d datagrams, returned %v", i, err)
			return
		}
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
	}
	t.Fatal("the queue never filled")
}

func TestBarrier(t *testing.T) {
	checkFDs(t)
	fake := newFakeSystemd(t, false)
	n, err := systemd.NewNotifier()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.Barrier(ctx); err != nil {
		t.Fatalf("Barrier: %v", err)
	}
	if got := fake.next(); strings.Join(got.vars, " ") != "BARRIER=1" || got.fds != 1 || got.pid != os.Getpid() {
		t.Errorf("received %v, want BARRIER=1 with one descriptor", got)
	}
}

// A manager that never closes the barrier's pipe leaves Barrier waiting
// until ctx ends.
func TestBarrierTimeout(t *testing.T) {
	checkFDs(t)
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: dir + "/notify", Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", dir+"/notify")
	n, err := systemd.NewNotifier()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := n.Barrier(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Barrier = %v, want context.DeadlineExceeded", err)
	}
	c.Close() // drops the queued datagram and the pipe end in it
}

func TestStore(t *testing.T) {
	checkFDs(t)
	fake := newFakeSystemd(t, true)
	n, err := systemd.NewNotifier()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx := context.Background()
	if err := n.Store(ctx, "http", ln.(*net.TCPListener)); err != nil {
		t.Fatal(err)
	}
	got := fake.next()
	if strings.Join(got.vars, " ") != "FDSTORE=1 FDNAME=http" || got.fds != 1 {
		t.Fatalf("received %v, want FDSTORE=1 FDNAME=http with one descriptor", got)
	}
	stored := fake.storedFiles()
	if len(stored) != 1 || !sameSocketAs(t, stored[0], ln.(*net.TCPListener)) {
		t.Errorf("the stored descriptor is not the listener's socket")
	}
	if !nonBlocking(t, ln.(*net.TCPListener)) {
		t.Errorf("Store switched the listener to blocking mode")
	}
	if err := n.RemoveStored(ctx, "http"); err != nil {
		t.Fatal(err)
	}
	if got := fake.next(); strings.Join(got.vars, " ") != "FDSTOREREMOVE=1 FDNAME=http" || got.fds != 0 {
		t.Errorf("received %v, want FDSTOREREMOVE=1 FDNAME=http", got)
	}
	for _, name := range []string{"", "a:b", "tab\there", strings.Repeat("x", 256), "é"} {
		if err := n.Store(ctx, name, ln.(*net.TCPListener)); !errors.Is(err, systemd.ErrInvalidMessage) {
			t.Errorf("Store(%q) = %v, want ErrInvalidMessage", name, err)
		}
		if err := n.RemoveStored(ctx, name); !errors.Is(err, systemd.ErrInvalidMessage) {
			t.Errorf("RemoveStored(%q) = %v, want ErrInvalidMessage", name, err)
		}
	}
}

// sameSocketAs reports whether f and c are descriptors of one socket.
func sameSocketAs(t *testing.T, f *os.File, c syscall.Conn) bool {
	t.Helper()
	var a, b unix.Stat_t
	if err := unix.Fstat(int(fdOf(t, f)), &a); err != nil {
		t.Fatal(err)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(fd uintptr) { err = unix.Fstat(int(fd), &b) })
	if err != nil {
		t.Fatal(err)
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// nonBlocking reports whether c's descriptor has O_NONBLOCK.
func nonBlocking(t *testing.T, c syscall.Conn) bool {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var flags int
	rc.Control(func(fd uintptr) { flags, err = unix.FcntlInt(fd, unix.F_GETFL, 0) })
	if err != nil {
		t.Fatal(err)
	}
	return flags&unix.O_NONBLOCK != 0
}

func fdOf(t *testing.T, f *os.File) uintptr {
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var out uintptr
	rc.Control(func(fd uintptr) { out = fd })
	return out
}
