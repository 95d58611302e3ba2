package supervise_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/internal/proctest"
	"github.com/moltgo/molt/internal/runchild"
	"github.com/moltgo/molt/supervise"
)

func TestMain(m *testing.M) {
	supervise.ExecShim()
	runchild.Dispatch()
	os.Exit(m.Run())
}

// harness is a Supervisor of this test binary as runchild, in this
// process, with the children's event lines.
type harness struct {
	sup      *supervise.Supervisor
	ev       *proctest.Events
	modeFile string
	addr     string // the "web" socket's address
}

func newHarness(t *testing.T, mode string, tweak func(*supervise.Options)) *harness {
	t.Helper()
	dir := proctest.ShortDir(t)
	h := &harness{modeFile: filepath.Join(dir, "mode")}
	h.setMode(t, mode)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	h.ev = proctest.NewEvents(r)
	opts := supervise.Options{
		Program: os.Args[0],
		Args:    []string{runchild.Arg, mode},
		Env:     append(os.Environ(), runchild.EnvModeFile+"="+h.modeFile, "GORACE=atexit_sleep_ms=0"),
		Sockets: []supervise.Socket{{Name: "web", Network: "tcp", Address: "127.0.0.1:0"}},
		Grace:   proctest.Patience,
		Drain:   proctest.Patience,
		Stdout:  w,
	}
	if testing.Verbose() {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if tweak != nil {
		tweak(&opts)
	}
	h.sup, err = supervise.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.sup.Close(); w.Close(); h.ev.KillAll() })
	h.addr = h.sup.Status().Listeners[0].Address
	return h
}

func (h *harness) setMode(t *testing.T, mode string) {
	t.Helper()
	if err := os.WriteFile(h.modeFile, []byte(mode), 0o600); err != nil {
		t.Fatal(err)
	}
}

// get asks the web socket which pid serves, on a new connection.
func (h *harness) get(t *testing.T) int {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + h.addr + "/")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	pid, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(string(b), "pid=")))
	if err != nil {
		t.Fatalf("GET answered %q", b)
	}
	return pid
}

// upgrade upgrades and checks that the new instance serves alone once
// the old one is gone.
func (h *harness) upgrade(t *testing.T) (oldPID, newPID int) {
	t.Helper()
	oldPID = h.sup.Status().PID
	res, err := h.sup.Upgrade(context.Background(), 0)
	if err != nil {
		t.Fatalf("Upgrade: %v", err)
	}
	if res.PID != oldPID || res.SuccessorPID == oldPID || h.sup.Status().PID != res.SuccessorPID {
		t.Fatalf("Upgrade: result %+v, old pid %d, status pid %d", res, oldPID, h.sup.Status().PID)
	}
	proctest.WaitGone(t, oldPID)
	return oldPID, res.SuccessorPID
}

func start(t *testing.T, h *harness) int {
	t.Helper()
	if err := h.sup.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	pid := h.sup.Status().PID
	if got := h.get(t); got != pid {
		t.Fatalf("served by pid %d, want the instance %d", got, pid)
	}
	return pid
}

func stop(t *testing.T, h *harness, want int) {
	t.Helper()
	h.sup.Stop()
	<-h.sup.Done()
	if got := h.sup.ExitCode(); got != want {
		t.Errorf("ExitCode = %d, want %d", got, want)
	}
}

// TestReadyByNotify: instances say READY=1 on the supervisor's
// NOTIFY_SOCKET, get LISTEN_PID naming themselves (the runchild checks)
// and the sockets; an upgrade moves the service to a new instance.
func TestReadyByNotify(t *testing.T) {
	h := newHarness(t, runchild.Notify, nil)
	first := start(t, h)
	if ev := h.ev.Wait(t, "serving"); ev["pid"] != strconv.Itoa(first) || ev["names"] != "web" || ev["fds"] != "1" {
		t.Errorf("first instance: %v", ev)
	}
	_, second := h.upgrade(t)
	if got := h.get(t); got != second {
		t.Errorf("after the upgrade served by %d, want %d", got, second)
	}
	if st := h.sup.Status(); st.Generation != 2 || st.Upgrades != 1 || st.LastUpgrade == nil || !st.LastUpgrade.OK {
		t.Errorf("status after the upgrade: %+v", st)
	}
	stop(t, h, 0)
}

// TestReadyByProbe: programs that do not notify are probed, through the
// private socket of each new instance or through the shared socket.
func TestReadyByProbe(t *testing.T) {
	for _, probe := range []string{"http://instance/healthz", "tcp://instance", "shared-tcp"} {
		t.Run(probe, func(t *testing.T) {
			h := newHarness(t, runchild.Probe, func(o *supervise.Options) {
				p := probe
				if p == "shared-tcp" {
					// The shared socket's address is known only once it is
					// bound; port 0 would probe nothing: bind it first.
					ln, err := net.Listen("tcp", "127.0.0.1:0")
					if err != nil {
						t.Fatal(err)
					}
					p = "tcp://" + ln.Addr().String()
					o.Sockets[0].Address = ln.Addr().String()
					ln.Close()
				}
				pr, err := supervise.ParseProbe(p)
				if err != nil {
					t.Fatal(err)
				}
				o.Ready = pr
			})
			start(t, h)
			want := "web"
			if probe != "shared-tcp" {
				want = "web," + supervise.ProbeFDName
			}
			if ev := h.ev.Wait(t, "serving"); ev["names"] != want {
				t.Errorf("instance got %q, want %q", ev["names"], want)
			}
			_, second := h.upgrade(t)
			if got := h.get(t); got != second {
				t.Errorf("after the upgrade served by %d, want %d", got, second)
			}
			stop(t, h, 0)
		})
	}
}

// TestFailedUpgrade: a new instance that exits, or misses its grace, is
// killed and reaped; the old one serves on, and the result says why.
func TestFailedUpgrade(t *testing.T) {
	h := newHarness(t, runchild.Notify, func(o *supervise.Options) { o.Grace = 3 * time.Second })
	first := start(t, h)

	h.setMode(t, runchild.Fail)
	res, err := h.sup.Upgrade(context.Background(), 0)
	if !errors.Is(err, supervise.ErrExited) || res == nil || res.OK || res.ExitCode == nil || *res.ExitCode != 3 ||
		res.Stage != "init" || res.SuccessorPID == 0 || !strings.Contains(res.Reason, "exit status 3") {
		t.Fatalf("Upgrade to a failing instance: %+v, %v", res, err)
	}
	proctest.WaitGone(t, res.SuccessorPID)
	if got := h.get(t); got != first {
		t.Errorf("after the failed upgrade served by %d, want %d", got, first)
	}

	// Grace is 3 s here: the hanging instance never becomes ready, so this
	// waits for the grace by design, not for synchronisation.
	h.setMode(t, runchild.Hang)
	res, err = h.sup.Upgrade(context.Background(), 0)
	if !errors.Is(err, supervise.ErrGrace) || res == nil || res.SuccessorPID == 0 || res.ExitStatus != "signal: killed" {
		t.Fatalf("Upgrade to a hanging instance: %+v, %v", res, err)
	}
	proctest.WaitGone(t, res.SuccessorPID)
	if st := h.sup.Status(); st.PID != first || st.FailedUpgrades != 2 || st.Generation != 1 {
		t.Errorf("status after two failed upgrades: %+v", st)
	}
	if got := h.get(t); got != first {
		t.Errorf("after the failed upgrades served by %d, want %d", got, first)
	}

	h.setMode(t, runchild.Notify)
	h.upgrade(t)
	stop(t, h, 0)
}

// TestOneUpgradeAtATime: a second upgrade while one runs is refused with
// molt's in-progress error, and so is one naming another generation.
func TestOneUpgradeAtATime(t *testing.T) {
	h := newHarness(t, runchild.Notify, nil)
	start(t, h)
	if _, err := h.sup.Upgrade(context.Background(), 7); !errors.Is(err, molt.ErrGenerationChanged) {
		t.Errorf("Upgrade(if generation 7) = %v, want ErrGenerationChanged", err)
	}
	h.setMode(t, runchild.Hang)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := h.sup.Upgrade(ctx, 0); done <- err }()
	proctest.WaitUntil(t, "the upgrade to run", func() bool { return h.sup.Status().State == "upgrading" })
	if _, err := h.sup.Upgrade(context.Background(), 0); !errors.Is(err, molt.ErrUpgradeInProgress) {
		t.Errorf("second Upgrade = %v, want ErrUpgradeInProgress", err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Upgrade = %v", err)
	}
	h.setMode(t, runchild.Notify)
	h.upgrade(t)
	stop(t, h, 0)
}

// TestExitStatus: the supervisor ends with the serving instance's status,
// whether it was stopped or ended by itself.
func TestExitStatus(t *testing.T) {
	h := newHarness(t, runchild.Notify, func(o *supervise.Options) { o.Env = append(o.Env, runchild.EnvExit+"=7") })
	start(t, h)
	stop(t, h, 7)

	h = newHarness(t, runchild.Notify, nil)
	pid := start(t, h)
	syscall.Kill(pid, syscall.SIGKILL)
	<-h.sup.Done()
	if got := h.sup.ExitCode(); got != 128+9 {
		t.Errorf("ExitCode after SIGKILL = %d, want 137", got)
	}
}

// TestNoLeaks: the supervisor's descriptors and goroutines are flat over
// 200 upgrades.
func TestNoLeaks(t *testing.T) {
	n := 200
	if testing.Short() {
		n = 20
	}
	h := newHarness(t, runchild.Notify, nil)
	start(t, h)
	h.upgrade(t) // every lazily made thing exists now
	fds := proctest.CountFDs(t, os.Getpid(), proctest.AllFDs)
	goroutines := runtime.NumGoroutine()
	for range n {
		h.upgrade(t)
	}
	proctest.CheckFDs(t, "after the upgrades", os.Getpid(), proctest.AllFDs, fds)
	proctest.CheckGoroutines(t, "after the upgrades", goroutines)
	stop(t, h, 0)
}
