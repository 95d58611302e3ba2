//go:build unix

package molt_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
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

	"golang.org/x/sys/unix"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/internal/handoff"
)

// nonBlocking reports whether the listener's socket is in O_NONBLOCK mode.
func nonBlocking(t *testing.T, ln net.Listener) bool {
	t.Helper()
	rc, err := ln.(syscall.Conn).SyscallConn()
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

// serveHere serves "pid gen" on ln from this test process until cleanup.
func serveHere(t *testing.T, u *molt.Upgrader, ln net.Listener) string {
	t.Helper()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d %d", os.Getpid(), u.Generation())
	})}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return "http://" + ln.Addr().String() + "/"
}

func newUpgrader(t *testing.T, opts molt.Options) *molt.Upgrader {
	t.Helper()
	u, err := molt.New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(u.Stop)
	return u
}

// TestUpgradeFailures runs successors that fail in the ways a successor
// under molt gives up by itself (the faults of a successor that crashes,
// hangs or cannot be started are TestFaults') and checks that the parent
// reports why, keeps serving on a non-blocking listener, and leaks neither
// descriptors nor goroutines.
func TestUpgradeFailures(t *testing.T) {
	if testing.Short() && runtime.GOOS != "linux" {
		t.Skip("multi-process test")
	}
	tests := []struct {
		name    string
		role    string
		network string
		check   func(t *testing.T, err error, ev *proctest.Events)
	}{{
		name: "exits non-zero in init", role: "exit-init", network: "tcp",
		check: func(t *testing.T, err error, _ *proctest.Events) {
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 3 {
				t.Errorf("Upgrade = %v, want an *exec.ExitError with code 3", err)
			}
		},
	}, {
		name: "calls Stop before Ready", role: "stop-before-ready", network: "unix",
		check: func(t *testing.T, err error, ev *proctest.Events) {
			var re *molt.ReportedError
			if !errors.As(err, &re) || !strings.Contains(re.Reason, "Stop before Ready") {
				t.Errorf("Upgrade = %v, want a ReportedError about Stop before Ready", err)
			}
			if got := ev.Wait(t, "stopped")["file-exists"]; got != "true" {
				t.Errorf("socket file exists after the successor's Stop = %s, want true", got)
			}
		},
	}, {
		name: "speaks another protocol version", role: "bad-peer", network: "tcp",
		check: func(t *testing.T, err error, _ *proctest.Events) {
			if err == nil || !strings.Contains(err.Error(), "version 9") {
				t.Errorf("Upgrade = %v, want an error naming protocol version 9", err)
			}
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev, w := pipe(t)
			addr := "127.0.0.1:0"
			if tc.network == "unix" {
				addr = filepath.Join(t.TempDir(), "s.sock")
			}
			u := newUpgrader(t, molt.Options{Command: roleCommand(tc.role, tc.network+" "+addr, w, nil)})
			ln, err := u.Listen(tc.network, addr)
			if err != nil {
				t.Fatal(err)
			}
			url := serveHere(t, u, ln)
			client := http.DefaultClient
			if tc.network == "unix" {
				url = "http://unix/"
				client = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, "unix", addr)
				}}}
				defer client.CloseIdleConnections()
			}
			if err := u.Ready(); err != nil {
				t.Fatal(err)
			}
			fds, goroutines := proctest.CountFDs(t, os.Getpid(), proctest.AllFDs), runtime.NumGoroutine()

			err = u.Upgrade(context.Background())
			var ce *molt.ChildError
			if !errors.As(err, &ce) {
				t.Fatalf("Upgrade = %v (%T), want a *molt.ChildError", err, err)
			}
			t.Logf("Upgrade: %v", err)
			tc.check(t, err, ev)
			if ce.State == nil {
				t.Errorf("ChildError.State = nil, want the reaped successor's state")
			}
			if got := u.State(); got != molt.StateReady {
				t.Errorf("State after a failed upgrade = %v, want ready", got)
			}
			if !nonBlocking(t, ln) {
				t.Errorf("parent's listener is in blocking mode after a successor started")
			}
			resp, err := client.Get(url)
			if err != nil {
				t.Fatalf("parent does not serve after the failed upgrade: %v", err)
			}
			resp.Body.Close()
			client.CloseIdleConnections()
			proctest.CheckFDs(t, "after the failed upgrade", os.Getpid(), proctest.AllFDs, fds)
			proctest.CheckGoroutines(t, "after the failed upgrade", goroutines)
		})
	}
}

// TestExitRightAfterReady: a successor that exits as soon as Ready
// returned has taken over (it said READY); the parent reports success,
// closes Exit with reason Upgraded and reaps it.
func TestExitRightAfterReady(t *testing.T) {
	_, w := pipe(t)
	u := newUpgrader(t, molt.Options{Command: roleCommand("exit-after-ready", "tcp 127.0.0.1:0", w, nil)})
	if _, err := u.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	if err := u.Upgrade(context.Background()); err != nil {
		t.Fatalf("Upgrade = %v, want nil", err)
	}
	select {
	case <-u.Exit():
	default:
		t.Fatal("Exit not closed after a successful upgrade")
	}
	if got := u.Reason(); got != molt.Upgraded {
		t.Errorf("Reason = %v, want upgraded", got)
	}
	if err := u.Upgrade(context.Background()); !errors.Is(err, molt.ErrUpgraded) {
		t.Errorf("second Upgrade = %v, want ErrUpgraded", err)
	}
	if _, err := u.Listen("tcp", "127.0.0.1:0"); !errors.Is(err, molt.ErrUpgraded) {
		t.Errorf("Listen after the upgrade = %v, want ErrUpgraded", err)
	}
}

// TestChainedUpgrades upgrades a service three times in a row under load,
// each time as soon as the previous successor is ready: each generation
// serves on the same kernel-chosen port and no request fails.
func TestChainedUpgrades(t *testing.T) {
	ev, w := pipe(t)
	gen1 := startRole(t, "serve", "serve", w)
	ready := ev.Wait(t, "ready")
	base := "http://" + ready["addr"] + "/"
	pids := []string{ready["pid"]}

	ld := startLoad(base, 4, 100000)
	for gen := 2; gen <= 4; gen++ {
		// Until it closes its listener, the generation that just handed
		// over may accept the request and answer, rightly, that it was
		// upgraded already: the request then goes again, to the successor.
		out, err := httpPost(base + "upgrade")
		for try := 0; err != nil && strings.Contains(err.Error(), molt.ErrUpgraded.Error()) && try < 100; try++ {
			out, err = httpPost(base + "upgrade")
		}
		if err != nil {
			t.Fatalf("upgrade to generation %d: %v (%s)", gen, err, out)
		}
		r := ev.Wait(t, "ready")
		if r["gen"] != strconv.Itoa(gen) || r["addr"] != ready["addr"] {
			t.Errorf("generation %s on %s, want %d on %s", r["gen"], r["addr"], gen, ready["addr"])
		}
		pids = append(pids, r["pid"])
	}
	ok, failed, errs := ld.finish()
	t.Logf("load during 3 upgrades: %d ok, %d failed %v", ok, failed, errs)
	if failed != 0 || ok == 0 {
		t.Errorf("requests during upgrades: %d ok, %d failed, want >0 ok and 0 failed: %v", ok, failed, errs)
	}
	body, err := httpGet(base)
	if err != nil || !strings.HasPrefix(body, pids[3]+" 4") {
		t.Errorf("GET after 3 upgrades = %q, %v; want generation 4 (pid %s)", body, err, pids[3])
	}
	if _, err := httpPost(base + "stop"); err != nil {
		t.Fatal(err)
	}
	gen1.Wait()
	for _, p := range pids {
		pid, _ := strconv.Atoi(p)
		proctest.WaitGone(t, pid)
	}
}

// TestSuccessorStartsClean: a process the successor starts inherits no
// molt marker and no socket, and its own New starts generation 1.
func TestSuccessorStartsClean(t *testing.T) {
	ev, w := pipe(t)
	u := newUpgrader(t, molt.Options{Command: roleCommand("spawn-clean", "tcp 127.0.0.1:0", w, nil)})
	if _, err := u.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	go u.Upgrade(context.Background())
	c := ev.Wait(t, "clean")
	if c["marker"] != "false" || c["sockets"] != "0" || c["gen"] != "1" || c["err"] != "<nil>" {
		t.Errorf("grandchild saw marker=%s sockets=%s gen=%s err=%s, want false 0 1 <nil>",
			c["marker"], c["sockets"], c["gen"], c["err"])
	}
	if s := ev.Wait(t, "spawned"); s["err"] != "<nil>" {
		t.Errorf("grandchild run: %s", s["err"])
	}
}

// startRole starts the test binary as a first generation playing role,
// with its successors playing next; it is killed at cleanup if still there.
func startRole(t *testing.T, role, next string, stdout *os.File) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envRole+"="+role, envNextRole+"="+next, envAddr+"=tcp 127.0.0.1:0")
	cmd.Stdout = stdout
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	t.Cleanup(func() {
		once.Do(func() {
			if cmd.ProcessState == nil {
				cmd.Process.Kill()
				cmd.Wait()
			}
		})
	})
	return cmd
}

// TestInheritEveryKind hands over TCP (":0"), Unix, UDP and Unix datagram
// sockets, a named listener and a file; the successor gets each back under
// the same address or name, the Unix listener it did not claim is closed and
// its socket file removed, and socket files change hands cleanly.
func TestInheritEveryKind(t *testing.T) {
	ev, w := pipe(t)
	dir := t.TempDir()
	unixPath, gramPath, unclaimed := filepath.Join(dir, "s.sock"), filepath.Join(dir, "g.sock"), filepath.Join(dir, "old.sock")
	pidFile := filepath.Join(dir, "svc.pid")
	u := newUpgrader(t, molt.Options{
		PIDFile: pidFile,
		Command: roleCommand("inventory", "", w, nil, "MOLT_TEST_UNIX="+unixPath,
			"MOLT_TEST_GRAM="+gramPath, "MOLT_TEST_PIDFILE="+pidFile),
	})
	tcp, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Listen("unix", unixPath); err != nil {
		t.Fatal(err)
	}
	udp, err := u.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.ListenPacket("unixgram", gramPath); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Listen("unix", unclaimed); err != nil {
		t.Fatal(err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	admin, err := u.AddListener("admin", raw)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(dir, "state")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("hello")
	f.Seek(0, 0)
	if err := u.AddFile("state", f); err != nil {
		t.Fatal(err)
	}
	client, err := net.Dial("tcp", admin.Addr().String()) // a connection the successor continues
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := raw.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.AddConn("conn", server); err != nil {
		t.Fatal(err)
	}
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	if err := u.Upgrade(context.Background()); err != nil {
		t.Fatalf("Upgrade = %v", err)
	}
	got := ev.Wait(t, "inventory")
	want := map[string]string{
		"gen": "2", "tcp": tcp.Addr().String(), "unix": unixPath, "udp": udp.LocalAddr().String(),
		"gram": gramPath, "admin": admin.Addr().String(), "state": "hello",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("successor's %s = %q, want %q", k, got[k], v)
		}
	}
	if _, err := os.Stat(unclaimed); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("unclaimed socket file after the successor's Ready: %v, want it removed", err)
	}
	if b, _ := os.ReadFile(pidFile); strings.TrimSpace(string(b)) == strconv.Itoa(os.Getpid()) {
		t.Errorf("PID file still names the parent after the upgrade")
	}

	client.SetReadDeadline(time.Now().Add(time.Minute))
	b := make([]byte, len("continued"))
	if _, err := io.ReadFull(client, b); err != nil || string(b) != "continued" {
		t.Errorf("read on the handed-over connection = %q, %v; want \"continued\"", b, err)
	}

	// The parent drains: its own closes and Stop leave the successor's files.
	tcp.Close()
	u.Stop()
	for _, p := range []string{unixPath, gramPath, pidFile} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s after the parent stopped: %v, want it kept for the successor", p, err)
		}
	}
	for _, addr := range []struct{ network, addr string }{{"tcp", want["tcp"]}, {"unix", unixPath}, {"tcp", want["admin"]}} {
		c, err := net.Dial(addr.network, addr.addr)
		if err != nil {
			t.Errorf("dial %s %s after the parent stopped: %v", addr.network, addr.addr, err)
			continue
		}
		b := make([]byte, 2)
		if _, err := c.Read(b); err != nil || string(b) != "hi" {
			t.Errorf("read from the successor on %s = %q, %v; want hi", addr.addr, b, err)
		}
		c.Close()
	}
	// The successor saw its parent go, stopped for good, and removed its files.
	ev.Wait(t, "stopped")
	for _, p := range []string{unixPath, gramPath, pidFile} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after the successor stopped: %v, want it removed", p, err)
		}
	}
}

// TestNewRejectsBadParent: a successor whose parent speaks another protocol
// version, or sends a malformed frame, fails New with a clear error and
// tells the parent why.
func TestNewRejectsBadParent(t *testing.T) {
	tests := []struct {
		name  string
		frame []byte
		want  string
	}{
		{"version 9", []byte{0, 0, 0, 2, 9, 1}, "version 9"},
		{"malformed hello", []byte{0, 0, 0, 4, 1, 1, 0xff, 0xff}, "malformed"},
		{"inventory first", []byte{0, 0, 0, 3, 1, 2, 0}, "malformed"},
		// A counter at its end would announce generation 0 next.
		{"generation 2^64-1", handoff.AppendFrame(nil, handoff.TypeHello,
			handoff.Hello{Generation: math.MaxUint64, ParentPID: os.Getpid()}.Marshal()), "more than 4294967296"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0) // no SOCK_CLOEXEC on darwin; tests start processes one at a time
			if err != nil {
				t.Fatal(err)
			}
			parentFile, childEnd := os.NewFile(uintptr(fds[0]), "parent"), os.NewFile(uintptr(fds[1]), "child")
			nc, err := net.FileConn(parentFile)
			parentFile.Close()
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			ev, w := pipe(t)
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), envRole+"=new-only", "MOLT_HANDOFF_FD=3")
			cmd.ExtraFiles = []*os.File{childEnd}
			cmd.Stdout, cmd.Stderr = w, os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			childEnd.Close()
			if _, err := nc.Write(tc.frame); err != nil {
				t.Fatal(err)
			}
			got := ev.Wait(t, "new")["err"]
			if !strings.Contains(got, tc.want) {
				t.Errorf("successor's New error = %q, want it to mention %q", got, tc.want)
			}
			nc.SetDeadline(time.Now().Add(time.Minute))
			m, err := handoff.NewConn(nc.(*net.UnixConn)).RecvMessage()
			if err != nil || m.Type != handoff.TypeFailed || !strings.Contains(m.Reason, tc.want) {
				t.Errorf("parent received %v %q, %v; want FAILED mentioning %q", m.Type, m.Reason, err, tc.want)
			}
			if err := cmd.Wait(); err == nil {
				t.Errorf("successor exited 0 after New failed")
			}
		})
	}
}

// TestUpgradeInterrupted: a cancelled context or a Stop ends an upgrade at
// once; the hanging successor and its process group are killed.
func TestUpgradeInterrupted(t *testing.T) {
	for _, how := range []string{"context", "stop"} {
		t.Run(how, func(t *testing.T) {
			ev, w := pipe(t)
			u := newUpgrader(t, molt.Options{Command: roleCommand("hang", "tcp 127.0.0.1:0", w, nil)})
			if _, err := u.Listen("tcp", "127.0.0.1:0"); err != nil {
				t.Fatal(err)
			}
			if err := u.Ready(); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			result := make(chan error, 1)
			go func() { result <- u.Upgrade(ctx) }()
			gc, _ := strconv.Atoi(ev.Wait(t, "grandchild")["pid"])
			want := context.Canceled
			if how == "context" {
				cancel()
			} else {
				want = molt.ErrStopped
				u.Stop() // returns only after the upgrade ended
			}
			err := <-result
			if !errors.Is(err, want) {
				t.Errorf("Upgrade = %v, want %v", err, want)
			}
			var ce *molt.ChildError
			if errors.As(err, &ce) && ce.State == nil {
				t.Errorf("successor not reaped when Upgrade returned")
			}
			proctest.WaitGone(t, gc)
		})
	}
}

// TestEventsAndStats: observers see every transition in order, and Stats
// reflects the inventory and the last upgrade.
func TestEventsAndStats(t *testing.T) {
	_, w := pipe(t)
	role := "exit-init"
	u := newUpgrader(t, molt.Options{Command: func(cmd *exec.Cmd) error {
		return roleCommand(role, "tcp 127.0.0.1:0", w, nil)(cmd)
	}})
	var (
		mu     sync.Mutex
		events []molt.Event
	)
	var committed atomic.Int64
	removeCommit := u.OnCommit(func(ctx context.Context, pid int) {
		if st := u.Stats().State; st != molt.StateUpgrading {
			t.Errorf("commit hook ran in state %v, want it before the commit", st)
		}
		if _, ok := ctx.Deadline(); !ok || pid == 0 {
			t.Errorf("commit hook got a context without deadline or pid %d", pid)
		}
		committed.Add(1)
	})
	remove := u.Observe(func(e molt.Event) {
		if e.To != u.Stats().State {
			t.Errorf("event %v (%v → %v) delivered in state %v", e.Kind, e.From, e.To, u.Stats().State)
		}
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	})
	if _, err := u.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	failErr := u.Upgrade(context.Background())
	if failErr == nil {
		t.Fatal("Upgrade with a failing successor succeeded")
	}
	st := u.Stats()
	if st.FailedUpgrades != 1 || st.LastUpgrade == nil || st.LastUpgrade.Err == nil || st.LastUpgrade.SuccessorPID == 0 {
		t.Errorf("Stats after a failed upgrade = %+v, want 1 failure with its error and successor PID", st)
	}
	if len(st.Inventory) != 1 || st.Inventory[0].Kind != "listener" || st.Inventory[0].Addr != "127.0.0.1:0" || st.Inventory[0].Inherited {
		t.Errorf("Stats.Inventory = %+v, want one new listener on 127.0.0.1:0", st.Inventory)
	}
	role = "exit-after-ready"
	if err := u.Upgrade(context.Background()); err != nil {
		t.Fatal(err)
	}
	u.Stop()
	remove()
	removeCommit()
	if n := committed.Load(); n != 1 {
		t.Errorf("commit hook ran %d times, want once (for the successor that said READY)", n)
	}

	var kinds []string
	for _, e := range events {
		kinds = append(kinds, e.Kind.String())
		if e.PID != os.Getpid() || e.Generation != 1 {
			t.Errorf("event %v from pid %d generation %d, want %d and 1", e.Kind, e.PID, e.Generation, os.Getpid())
		}
	}
	want := "ready upgrade-started upgrade-failed upgrade-started upgraded stopping stopped"
	if got := strings.Join(kinds, " "); got != want {
		t.Errorf("events = %s\nwant     %s", got, want)
	}
	if e := events[2]; e.Err == nil || e.SuccessorPID == 0 || e.Duration <= 0 {
		t.Errorf("upgrade-failed event = %+v, want its error, successor PID and duration", e)
	}
	if e := events[4]; e.Err != nil || e.SuccessorPID == 0 {
		t.Errorf("upgraded event = %+v, want no error and the successor PID", e)
	}
}

// TestUpgradeWorkingDirGone: a deploy that removed the directory the
// service was started in does not break every later upgrade with a
// misleading "no such file or directory" for the binary: the successor
// starts in "/" and a warning names the directory.
func TestUpgradeWorkingDirGone(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "release-41")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	ev, w := pipe(t)
	var logs syncBuffer
	u := newUpgrader(t, molt.Options{
		Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
		Command: roleCommand("exit-after-ready", "tcp 127.0.0.1:0", w, nil),
	})
	if _, err := u.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := u.Upgrade(context.Background()); err != nil {
		t.Fatalf("Upgrade with the working directory removed = %v, want nil", err)
	}
	if got := ev.Wait(t, "exiting"); got["dir"] != "/" {
		t.Errorf("successor's working directory = %q (%s), want /", got["dir"], got["err"])
	}
	if l := logs.String(); !strings.Contains(l, "working directory is gone") || !strings.Contains(l, dir) {
		t.Errorf("log does not warn about the removed directory %s:\n%s", dir, l)
	}
}

// syncBuffer collects log output; safe for a logger and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
