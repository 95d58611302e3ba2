//go:build unix

package control_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/moltgo/molt/internal/proctest"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/control"
)

func newUpgrader(t *testing.T, opts molt.Options) *molt.Upgrader {
	t.Helper()
	u, err := molt.New(opts)
	if err != nil {
		t.Fatalf("molt.New: %v", err)
	}
	t.Cleanup(u.Stop)
	return u
}

func listen(t *testing.T, u *molt.Upgrader, path string, opts control.Options) *control.Server {
	t.Helper()
	s, err := control.Listen(u, path, opts)
	if err != nil {
		t.Fatalf("control.Listen: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// readyServer is an Upgrader of this process, ready, with a control
// socket; it returns the socket's path.
func readyServer(t *testing.T, opts control.Options) (*molt.Upgrader, *control.Server, string) {
	t.Helper()
	u := newUpgrader(t, molt.Options{})
	sock := filepath.Join(proctest.ShortDir(t), "c.sock")
	s := listen(t, u, sock, opts)
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	return u, s, sock
}

// rawConn is a connection speaking the protocol by hand.
type rawConn struct {
	net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, sock string) *rawConn {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(time.Minute))
	return &rawConn{c, bufio.NewReader(c)}
}

// reply reads one reply line.
func (c *rawConn) reply(t *testing.T) control.Reply {
	t.Helper()
	line, err := c.r.ReadBytes('\n')
	if err != nil {
		t.Fatalf("reading a reply: %v (got %q)", err, line)
	}
	var rep control.Reply
	if err := json.Unmarshal(line, &rep); err != nil {
		t.Fatalf("reply %q: %v", line, err)
	}
	return rep
}

func TestStatus(t *testing.T) {
	u, s, sock := readyServer(t, control.Options{})
	tcp, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	tcpAddr := tcp.Addr().String()

	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket file mode = %v, want a socket with 0600", fi.Mode())
	}
	if s.Path() != sock {
		t.Errorf("Path() = %q, want %q", s.Path(), sock)
	}

	c, ctx := client(t, sock)
	rep, err := c.Do(ctx, control.OpStatus)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Code != control.CodeOK || rep.V != control.Version || rep.PID != os.Getpid() || rep.Generation != 1 {
		t.Errorf("status reply = %+v, want ok from pid %d generation 1", rep, os.Getpid())
	}
	st := rep.Status
	if st == nil {
		t.Fatal("status reply without a status")
	}
	if st.PID != os.Getpid() || st.ParentPID != 0 || st.Generation != 1 || st.State != "ready" ||
		st.Upgrades != 0 || st.FailedUpgrades != 0 || st.LastUpgrade != nil || st.Uptime <= 0 {
		t.Errorf("status = %+v, want generation 1, ready, no upgrades", st)
	}
	want := []control.Listener{
		{Kind: "listener", Network: "unix", Address: sock, Control: true},
		// the port the kernel chose for the ":0" listener
		{Kind: "listener", Network: "tcp4", Address: tcpAddr},
	}
	if len(st.Listeners) != len(want) {
		t.Fatalf("listeners = %+v, want %+v", st.Listeners, want)
	}
	for i := range want {
		if st.Listeners[i] != want[i] {
			t.Errorf("listener %d = %+v, want %+v", i, st.Listeners[i], want[i])
		}
	}
}

func TestNoAnswerBeforeReady(t *testing.T) {
	u := newUpgrader(t, molt.Options{})
	sock := filepath.Join(proctest.ShortDir(t), "c.sock")
	listen(t, u, sock, control.Options{})

	c := &control.Client{Path: sock}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := c.Status(ctx); !errors.Is(err, control.ErrNoReply) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Status before Ready = %v, want ErrNoReply and DeadlineExceeded", err)
	}
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	c2, ctx2 := client(t, sock)
	if st, err := c2.Status(ctx2); err != nil || st.State != "ready" {
		t.Fatalf("Status after Ready = %+v, %v; want ready", st, err)
	}
}

func TestBadInput(t *testing.T) {
	_, _, sock := readyServer(t, control.Options{})
	tests := []struct {
		name  string
		send  string
		code  control.Code
		alive bool // the connection still answers afterwards
	}{
		{"not JSON", "hello\n", control.CodeBadRequest, true},
		{"binary", "\x00\x01\xff\xfe\n", control.CodeBadRequest, true},
		{"JSON array", "[1,2]\n", control.CodeBadRequest, true},
		{"truncated object", `{"v":1,"op":` + "\n", control.CodeBadRequest, true},
		{"no version", `{"op":"status"}` + "\n", control.CodeBadRequest, true},
		{"future version", `{"v":2,"op":"status"}` + "\n", control.CodeBadVersion, true},
		{"unknown op", `{"v":1,"op":"reboot"}` + "\n", control.CodeUnknownOp, true},
		{"too large", strings.Repeat("x", control.MaxRequestSize+100), control.CodeTooLarge, false},
		{"too large JSON", `{"v":1,"op":"status","pad":"` + strings.Repeat("x", control.MaxRequestSize) + `"}` + "\n", control.CodeTooLarge, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, sock)
			if _, err := c.Write([]byte(tc.send)); err != nil {
				t.Fatal(err)
			}
			rep := c.reply(t)
			if rep.OK || rep.Code != tc.code || rep.Error == "" || rep.V != control.Version {
				t.Errorf("reply to %q = %+v, want code %s with an error", tc.name, rep, tc.code)
			}
			c.Write([]byte(`{"v":1,"op":"status"}` + "\n"))
			if !tc.alive {
				if line, err := c.r.ReadBytes('\n'); err == nil {
					t.Errorf("connection still answers after %s: %q", tc.name, line)
				}
				return
			}
			if rep := c.reply(t); rep.Code != control.CodeOK || rep.Status == nil {
				t.Errorf("status after %s = %+v, want ok", tc.name, rep)
			}
		})
	}
	t.Run("blank lines and a last request without newline", func(t *testing.T) {
		c := dialRaw(t, sock)
		c.Write([]byte("\n\r\n  \n" + `{"v":1,"op":"status"}`))
		c.Conn.(*net.UnixConn).CloseWrite()
		if rep := c.reply(t); rep.Code != control.CodeOK {
			t.Errorf("reply = %+v, want ok", rep)
		}
	})
	t.Run("pipelined", func(t *testing.T) {
		c := dialRaw(t, sock)
		c.Write([]byte(`{"v":1,"op":"status"}` + "\nnope\n" + `{"v":1,"op":"status"}` + "\n"))
		for i, want := range []control.Code{control.CodeOK, control.CodeBadRequest, control.CodeOK} {
			if rep := c.reply(t); rep.Code != want {
				t.Errorf("reply %d = %s, want %s", i, rep.Code, want)
			}
		}
	})
}

func TestBusy(t *testing.T) {
	_, _, sock := readyServer(t, control.Options{})
	// Fill the server with connections that each got an answer (so they
	// are being served), then one more.
	for i := range 64 {
		c := dialRaw(t, sock)
		c.Write([]byte(`{"v":1,"op":"status"}` + "\n"))
		if rep := c.reply(t); rep.Code != control.CodeOK {
			t.Fatalf("connection %d: %+v", i, rep)
		}
	}
	c := dialRaw(t, sock)
	if rep := c.reply(t); rep.Code != control.CodeBusy {
		t.Errorf("connection 65 got %+v, want busy", rep)
	}
}

func TestModeAndGroup(t *testing.T) {
	u := newUpgrader(t, molt.Options{})
	dir := proctest.ShortDir(t)
	sock := filepath.Join(dir, "c.sock")
	gid := os.Getegid()
	if gid == 0 {
		gid = 4343 // root may give the file any group: one it is not in shows the group was set
	}
	listen(t, u, sock, control.Options{Mode: 0o660, Group: strconv.Itoa(gid)})
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Errorf("mode = %v, want 0660", fi.Mode().Perm())
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Gid) != gid {
		t.Errorf("group = %d, want %d", st.Gid, gid)
	}

	for _, opts := range []control.Options{
		{Mode: os.ModeSetuid | 0o600},
		{Group: "no-such-group-molt-test"},
	} {
		if s, err := control.Listen(u, filepath.Join(dir, "x.sock"), opts); err == nil {
			s.Close()
			t.Errorf("Listen with %+v succeeded, want an error", opts)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "x.sock")); err == nil {
		t.Error("a failed Listen left its socket file behind")
	}
}

// TestUnsafeDirectoryRefused: Listen refuses a socket directory in which
// another user could replace the file, and accepts a sticky one.
func TestUnsafeDirectoryRefused(t *testing.T) {
	u := newUpgrader(t, molt.Options{})
	base := proctest.ShortDir(t)
	for _, tc := range []struct {
		mode uint32
		want string // "" if accepted
	}{
		{0o700, ""},
		{0o755, ""},
		{0o775, "is writable by its group"},
		{0o757, "is writable by other users"},
		{0o1777, ""},
	} {
		dir := filepath.Join(base, strconv.FormatUint(uint64(tc.mode), 8))
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Chmod(dir, tc.mode); err != nil {
			t.Fatal(err)
		}
		s, err := control.Listen(u, filepath.Join(dir, "c.sock"), control.Options{})
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("mode %#o: Listen = %v, want it accepted", tc.mode, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("mode %#o: Listen = %v, want an error saying it %s", tc.mode, err, tc.want)
		}
		if err == nil {
			s.Close()
		}
	}
}

// TestDuplicateKeysRefused sends requests that different JSON readers
// read differently: none may run an upgrade.
func TestDuplicateKeysRefused(t *testing.T) {
	var started atomic.Int32
	u := newUpgrader(t, molt.Options{Command: func(*exec.Cmd) error {
		started.Add(1)
		return errors.New("no successor in this test")
	}})
	sock := filepath.Join(proctest.ShortDir(t), "c.sock")
	listen(t, u, sock, control.Options{})
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	c := dialRaw(t, sock)
	for _, req := range []string{
		`{"v":1,"op":"status","op":"upgrade"}`,
		`{"v":1,"op":"status","\u006fp":"upgrade"}`,
		`{"v":1,"op":"status","OP":"upgrade"}`,
		`{"v":1,"Op":"upgrade"}`,
		`{"v":1,"op":"status","id":1}`,
	} {
		if _, err := c.Write([]byte(req + "\n")); err != nil {
			t.Fatal(err)
		}
		if rep := c.reply(t); rep.Code != control.CodeBadRequest || rep.Error == "" {
			t.Errorf("reply to %s = %+v, want bad_request", req, rep)
		}
	}
	if n := started.Load(); n != 0 || u.Stats().LastUpgrade != nil {
		t.Errorf("%d upgrades started (last %+v), want none", n, u.Stats().LastUpgrade)
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	sock := filepath.Join(proctest.ShortDir(t), "c.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // a crashed run: the file stays, nobody serves it

	u := newUpgrader(t, molt.Options{})
	listen(t, u, sock, control.Options{})
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	c, ctx := client(t, sock)
	if _, err := c.Status(ctx); err != nil {
		t.Fatalf("Status on the replaced socket: %v", err)
	}
}

func TestLiveSocketKept(t *testing.T) {
	sock := filepath.Join(proctest.ShortDir(t), "c.sock")
	other, err := net.Listen("unix", sock) // another live process serves the path
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	u := newUpgrader(t, molt.Options{})
	if s, err := control.Listen(u, sock, control.Options{}); err == nil {
		s.Close()
		t.Fatal("Listen on a served path succeeded")
	} else if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("Listen on a served path = %v, want EADDRINUSE", err)
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("the other server's socket is gone: %v", err)
	}
	c.Close()
}

func TestStopRequest(t *testing.T) {
	u, s, sock := readyServer(t, control.Options{})
	c, ctx := client(t, sock)
	rep, err := c.Do(ctx, control.OpStop)
	if err != nil || rep.Code != control.CodeOK || rep.PID != os.Getpid() {
		t.Fatalf("stop = %+v, %v; want ok from this process", rep, err)
	}
	select {
	case <-u.Exit():
	case <-time.After(time.Minute):
		t.Fatal("Exit not closed a minute after the stop request")
	}
	if r := u.Reason(); r != molt.Stopped {
		t.Errorf("Reason = %v, want stopped", r)
	}
	proctest.WaitUntil(t, "socket file removed after the stop", func() bool {
		_, err := os.Lstat(sock)
		return errors.Is(err, os.ErrNotExist)
	})
	if err := s.Close(); err != nil {
		t.Errorf("Close after the stop = %v", err)
	}
	if _, err := c.Status(ctx); !errors.Is(err, control.ErrUnreachable) {
		t.Errorf("Status after the stop = %v, want ErrUnreachable", err)
	}
}

func TestOnStop(t *testing.T) {
	var calls atomic.Int32
	u, _, sock := readyServer(t, control.Options{OnStop: func() { calls.Add(1) }})
	c, ctx := client(t, sock)
	for range 3 {
		if err := c.Stop(ctx); err != nil {
			t.Fatal(err)
		}
	}
	proctest.WaitUntil(t, "OnStop called", func() bool { return calls.Load() > 0 })
	if n := calls.Load(); n != 1 {
		t.Errorf("OnStop called %d times, want once", n)
	}
	if st := u.State(); st != molt.StateReady {
		t.Errorf("State = %v after a stop handled by OnStop, want ready", st)
	}
}

// TestCloseLeaks serves requests, leaves connections open and checks that
// Close and Stop give back every descriptor and goroutine.
func TestCloseLeaks(t *testing.T) {
	fds, goroutines := proctest.CountFDs(t, os.Getpid(), proctest.AllFDs), runtime.NumGoroutine()

	u, err := molt.New(molt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(proctest.ShortDir(t), "c.sock")
	s, err := control.Listen(u, sock, control.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	c := &control.Client{Path: sock}
	for range 10 {
		if _, err := c.Status(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	var open []net.Conn
	for range 5 { // idle connections the server must close
		conn, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, conn)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	for _, conn := range open {
		conn.SetReadDeadline(time.Now().Add(time.Minute))
		if n, err := conn.Read(make([]byte, 1)); err == nil {
			t.Errorf("connection still open after Close (read %d bytes)", n)
		}
		conn.Close()
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after Close: %v, want it removed", err)
	}
	u.Stop()
	proctest.CheckFDsAtMost(t, "at the end", os.Getpid(), proctest.AllFDs, fds)
	proctest.CheckGoroutines(t, "at the end", goroutines)
}

// BenchmarkClientStatus measures one status request: connect, request,
// reply, close.
func BenchmarkClientStatus(b *testing.B) {
	u, err := molt.New(molt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer u.Stop()
	dir, err := os.MkdirTemp("", "mc")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	s, err := control.Listen(u, filepath.Join(dir, "c.sock"), control.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if err := u.Ready(); err != nil {
		b.Fatal(err)
	}
	c := &control.Client{Path: s.Path()}
	for b.Loop() {
		if _, err := c.Status(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}
