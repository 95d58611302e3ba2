//go:build unix

package molt_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/internal/proctest"
)

func TestOneUpgraderPerProcess(t *testing.T) {
	u := newUpgrader(t, molt.Options{})
	if _, err := molt.New(molt.Options{}); !errors.Is(err, molt.ErrExists) {
		t.Fatalf("second New = %v, want ErrExists", err)
	}
	u.Stop()
	u2, err := molt.New(molt.Options{})
	if err != nil {
		t.Fatalf("New after Stop = %v, want nil", err)
	}
	u2.Stop()
}

func TestGenerationOne(t *testing.T) {
	u := newUpgrader(t, molt.Options{})
	if u.Generation() != 1 || u.HasParent() || u.ParentPID() != 0 {
		t.Errorf("Generation, HasParent, ParentPID = %d, %t, %d; want 1, false, 0", u.Generation(), u.HasParent(), u.ParentPID())
	}
	if err := u.WaitForParent(context.Background()); err != nil {
		t.Errorf("WaitForParent without a parent = %v, want nil", err)
	}
	if got := u.State(); got != molt.StateStarting {
		t.Errorf("State = %v, want starting", got)
	}
}

func TestStateErrors(t *testing.T) {
	u := newUpgrader(t, molt.Options{})
	ctx := context.Background()
	if err := u.Upgrade(ctx); !errors.Is(err, molt.ErrNotReady) {
		t.Errorf("Upgrade before Ready = %v, want ErrNotReady", err)
	}
	for i := range 2 {
		if err := u.Ready(); err != nil {
			t.Errorf("Ready #%d = %v, want nil", i+1, err)
		}
	}
	if got := u.State(); got != molt.StateReady {
		t.Errorf("State = %v, want ready", got)
	}
	u.Stop()
	u.Stop()
	select {
	case <-u.Exit():
	default:
		t.Error("Exit not closed after Stop")
	}
	if got := u.Reason(); got != molt.Stopped {
		t.Errorf("Reason = %v, want stopped", got)
	}
	if err := u.Upgrade(ctx); !errors.Is(err, molt.ErrStopped) {
		t.Errorf("Upgrade after Stop = %v, want ErrStopped", err)
	}
	if err := u.Ready(); !errors.Is(err, molt.ErrStopped) {
		t.Errorf("Ready after Stop = %v, want ErrStopped", err)
	}
	if _, err := u.Listen("tcp", "127.0.0.1:0"); !errors.Is(err, molt.ErrStopped) {
		t.Errorf("Listen after Stop = %v, want ErrStopped", err)
	}
}

// TestCloseReleasesPort: closing a listener from molt really closes the
// port; nothing keeps accepting into nowhere.
func TestCloseReleasesPort(t *testing.T) {
	u := newUpgrader(t, molt.Options{})
	fds := proctest.CountFDs(t, os.Getpid(), proctest.AllFDs)
	ln, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatalf("Dial %s after Close succeeded, want connection refused", addr)
	}
	if got := proctest.CountFDs(t, os.Getpid(), proctest.AllFDs); got != fds {
		t.Errorf("open descriptors after Listen+Close = %d, want %d", got, fds)
	}
	ln2, err := u.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("Listen on the released address: %v", err)
	}
	ln2.Close()
}

func TestUnixSocketFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.sock")
	u := newUpgrader(t, molt.Options{})

	ln, err := u.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after Close: %v, want it removed", err)
	}

	// A stale socket file (its server crashed) is replaced.
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	if _, err := u.Listen("unix", path); err != nil {
		t.Fatalf("Listen over a stale socket file: %v", err)
	}
	// A live one is not.
	if _, err := u.Listen("unix", path); err == nil {
		t.Fatal("second Listen on a served socket path succeeded")
	}
	// Nor is a file that is not a socket.
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, []byte("keep"), 0o600)
	if _, err := u.Listen("unix", plain); err == nil {
		t.Fatal("Listen over a regular file succeeded")
	}
	if b, _ := os.ReadFile(plain); string(b) != "keep" {
		t.Errorf("regular file content = %q, want it untouched", b)
	}

	u.Stop()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after Stop: %v, want it removed", err)
	}
}

func TestPIDFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "svc.pid")
	u := newUpgrader(t, molt.Options{PIDFile: path})
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Fatalf("PID file = %q, %v; want %d", b, err, os.Getpid())
	}
	u.Stop()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("PID file after Stop: %v, want it removed", err)
	}
}

func TestPIDFileUnwritable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing-dir", "svc.pid")
	u := newUpgrader(t, molt.Options{PIDFile: path})
	err := u.Ready()
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Ready with an unwritable PID file = %v, want an error naming %s", err, path)
	}
	if got := u.State(); got != molt.StateStarting {
		t.Errorf("State after the failed Ready = %v, want starting", got)
	}
}

func TestNamedEntries(t *testing.T) {
	u := newUpgrader(t, molt.Options{})
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := u.AddListener("admin", raw)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := u.Listener("admin"); err != nil || got != ln {
		t.Errorf("Listener(admin) = %v, %v; want the added listener", got, err)
	}
	other, _ := net.Listen("tcp", "127.0.0.1:0")
	defer other.Close()
	if _, err := u.AddListener("admin", other); !errors.Is(err, molt.ErrNameInUse) {
		t.Errorf("AddListener with a used name = %v, want ErrNameInUse", err)
	}
	if _, err := u.Listener("missing"); !errors.Is(err, molt.ErrNotFound) {
		t.Errorf("Listener(missing) = %v, want ErrNotFound", err)
	}
	if _, err := u.AddListener("tls", tls.NewListener(other, &tls.Config{})); err == nil {
		t.Error("AddListener of a listener without a descriptor succeeded")
	}
	f, err := os.CreateTemp(t.TempDir(), "state")
	if err != nil {
		t.Fatal(err)
	}
	if err := u.AddFile("state", f); err != nil {
		t.Fatal(err)
	}
	if got, err := u.File("state"); err != nil || got != f {
		t.Errorf("File(state) = %v, %v; want the added file", got, err)
	}
	u.Stop()
	if _, err := f.Write([]byte("x")); !errors.Is(err, os.ErrClosed) {
		t.Errorf("write to a file after Stop = %v, want os.ErrClosed (Stop closes the inventory)", err)
	}
}

// TestNewBadEnvironment: a broken hand-off marker gives New a clear error
// naming it, never a crash, and leaves the process free to try again.
func TestNewBadEnvironment(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "plain")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	regular, err := dupFile(f)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		value, want string
	}{
		{"abc", "MOLT_HANDOFF_FD"},
		{"-1", "MOLT_HANDOFF_FD"},
		{"987", "not open"},
		{strconv.Itoa(regular), "not a socket"},
	}
	for _, tc := range tests {
		t.Setenv("MOLT_HANDOFF_FD", tc.value)
		u, err := molt.New(molt.Options{})
		if err == nil {
			u.Stop()
			t.Errorf("New with MOLT_HANDOFF_FD=%s succeeded, want an error", tc.value)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New with MOLT_HANDOFF_FD=%s = %q, want it to mention %q", tc.value, err, tc.want)
		}
		if _, ok := os.LookupEnv("MOLT_HANDOFF_FD"); ok {
			t.Errorf("MOLT_HANDOFF_FD still set after New")
		}
	}
	u := newUpgrader(t, molt.Options{})
	u.Stop()
}

// dupFile returns a new descriptor for f's open file.
func dupFile(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd := -1
	rc.Control(func(fd uintptr) { nfd, err = syscall.Dup(int(fd)) })
	return nfd, err
}

// TestAddedUnixListenerKeepsItsFile: a Unix listener added by hand (from a
// systemd .socket unit, say) keeps its socket file through Close and Stop.
func TestAddedUnixListenerKeepsItsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "activated.sock")
	raw, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	u := newUpgrader(t, molt.Options{})
	ln, err := u.AddListener("web", raw)
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	u.Stop()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("socket file of an added listener after Close and Stop: %v, want it kept", err)
	}
}
