//go:build unix

package molt_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/internal/proctest"
	"golang.org/x/sys/unix"
)

func init() {
	roles["claim-many"] = roleClaimMany
	roles["stop-while-claiming"] = roleStopWhileClaiming
	roles["fail-inventory-hang"] = roleFailInventoryHang
}

const (
	// envListenerCount is how many listeners roleClaimMany claims: all at
	// "127.0.0.1:0", but the last at envLastAddr if that is set.
	envListenerCount = "MOLT_TEST_LISTENERS"
	// envLastAddr is an address roleClaimMany claims before all others.
	envLastAddr = "MOLT_TEST_LAST_ADDR"
)

// roleClaimMany claims MOLT_TEST_LISTENERS listeners at 127.0.0.1:0 (in
// inventory order), the one at MOLT_TEST_LAST_ADDR first if set, reports
// their ports, becomes ready, and stops once its parent is gone.
func roleClaimMany() int {
	u := mustNew(roleOptions())
	n, _ := strconv.Atoi(os.Getenv(envListenerCount))
	if last := os.Getenv(envLastAddr); last != "" {
		proctest.Say("claiming-last pid=%d", os.Getpid())
		ln, err := u.Listen("tcp", last)
		if err != nil {
			proctest.Say("listen-error err=%q", err.Error())
			return 15
		}
		proctest.Say("claimed-last addr=%s", ln.Addr())
		n--
	}
	ports := make([]string, n)
	for i := range ports {
		ln, err := u.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			proctest.Say("listen-error err=%q", err.Error())
			return 15
		}
		_, ports[i], _ = net.SplitHostPort(ln.Addr().String())
	}
	if err := u.Ready(); err != nil {
		proctest.Say("ready-error err=%q", err.Error())
		return 12
	}
	proctest.Say("claimed count=%d ports=%s", n, strings.Join(ports, ","))
	u.WaitForParent(context.Background())
	u.Stop()
	proctest.Say("stopped pid=%d", os.Getpid())
	return 0
}

// TestCloseDuringHandoff closes listeners while an upgrade sends the
// inventory in batches: one already sent, one not yet, and a file behind
// molt's back. The upgrade succeeds; the successor still gets every
// listener the upgrade began with, under its port, as if the inventory had
// been copied at once; the parent keeps no descriptor of either
// afterwards.
func TestCloseDuringHandoff(t *testing.T) {
	n := 2*molt.SendBatch + 1 // three batches
	ev, w := pipe(t)
	base := proctest.CountFDs(t, os.Getpid(), proctest.AllFDs)
	u := newUpgrader(t, molt.Options{
		Command: roleCommand("claim-many", "", w, nil, envListenerCount+"="+strconv.Itoa(n)),
	})
	lns := make([]net.Listener, n)
	ports := make([]string, n)
	for i := range lns {
		ln, err := u.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[i] = ln
		_, ports[i], _ = net.SplitHostPort(ln.Addr().String())
	}
	// A file, which File gives out as it is: its user may close it
	// behind molt's back.
	state, err := os.CreateTemp(t.TempDir(), "state")
	if err != nil {
		t.Fatal(err)
	}
	if err := u.AddFile("state", state); err != nil {
		t.Fatal(err)
	}
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	sent, unsent := lns[0], lns[n-1]
	var closeErrs []error
	batches := 0
	molt.SetTestHookBatchSent(func(int, int) {
		batches++
		if batches == 1 {
			closeErrs = append(closeErrs, sent.Close(), unsent.Close(), state.Close())
		}
	})
	t.Cleanup(func() { molt.SetTestHookBatchSent(nil) })
	sockets := proctest.CountFDs(t, os.Getpid(), proctest.Sockets)

	if err := u.Upgrade(context.Background()); err != nil {
		t.Fatalf("Upgrade = %v", err)
	}
	for _, err := range closeErrs {
		if err != nil {
			t.Errorf("Close during the hand-off = %v", err)
		}
	}
	if batches != 3 {
		t.Errorf("inventory of %d entries and a file went in %d batches, want 3", n, batches)
	}
	got := ev.Wait(t, "claimed")
	if got["count"] != strconv.Itoa(n) || got["ports"] != strings.Join(ports, ",") {
		t.Errorf("successor claimed %s listeners, want %d: %s", got["count"], n, portsDiff(got["ports"], ports))
	}
	// Two listeners fewer, and no duplicate kept for the hand-off; the
	// channel to the successor stays open until Stop.
	if got, want := proctest.CountFDs(t, os.Getpid(), proctest.Sockets), sockets-2+1; got != want {
		t.Errorf("%d sockets after the upgrade, want %d (%d before, two listeners closed, the hand-off channel)", got, want, sockets)
	}
	// The successor serves the closed listeners' ports.
	for _, p := range []string{ports[0], ports[n-1]} {
		c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", p))
		if err != nil {
			t.Errorf("port %s after the upgrade: %v", p, err)
			continue
		}
		c.Close()
	}
	for _, ln := range lns[1 : n-1] {
		ln.Close()
	}
	// Stop ends the successor (its parent is gone); once it is reaped,
	// this process holds what it held before the test.
	u.Stop()
	ev.Wait(t, "stopped")
	proctest.CheckFDs(t, "once the successor exited", os.Getpid(), proctest.AllFDs, base)
}

// TestListenWaitsForInventory holds the hand-off after its first batch
// while the successor asks for the last entry: its Listen waits for that
// entry to arrive and returns the inherited socket, not a new one.
func TestListenWaitsForInventory(t *testing.T) {
	n := 2*molt.SendBatch + 1
	ev, w := pipe(t)
	base := proctest.CountFDs(t, os.Getpid(), proctest.AllFDs)
	u := newUpgrader(t, molt.Options{
		Command: roleCommand("claim-many", "", w, nil, envListenerCount+"="+strconv.Itoa(n), envLastAddr+"=127.0.0.2:0"),
	})
	ports := make([]string, n-1)
	for i := range ports {
		ln, err := u.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		_, ports[i], _ = net.SplitHostPort(ln.Addr().String())
	}
	last, err := u.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	batches := 0
	molt.SetTestHookBatchSent(func(int, int) {
		if batches++; batches == 1 {
			// The successor has 200 of 401 entries and asks for the last.
			ev.Wait(t, "claiming-last")
		}
	})
	t.Cleanup(func() { molt.SetTestHookBatchSent(nil) })

	if err := u.Upgrade(context.Background()); err != nil {
		t.Fatalf("Upgrade = %v", err)
	}
	if got := ev.Wait(t, "claimed-last"); got["addr"] != last.Addr().String() {
		t.Errorf("successor's listener at 127.0.0.2:0 is %s, want the inherited %s", got["addr"], last.Addr())
	}
	if got := ev.Wait(t, "claimed"); got["ports"] != strings.Join(ports, ",") {
		t.Errorf("successor's other listeners: %s", portsDiff(got["ports"], ports))
	}
	u.Stop()
	ev.Wait(t, "stopped")
	proctest.CheckFDs(t, "once the successor exited", os.Getpid(), proctest.AllFDs, base)
}

// portsDiff describes how a reported list of ports differs from want.
func portsDiff(got string, want []string) string {
	g := strings.Split(got, ",")
	for i := range min(len(g), len(want)) {
		if g[i] != want[i] {
			return fmt.Sprintf("port %d of %d is %s, want %s", i, len(want), g[i], want[i])
		}
	}
	return fmt.Sprintf("%d ports, want %d", len(g), len(want))
}

// roleStopWhileClaiming asks for the entry at MOLT_TEST_LAST_ADDR and, on
// a line on standard input, calls Stop meanwhile; it reports what Listen
// returned.
func roleStopWhileClaiming() int {
	u := mustNew(roleOptions())
	go func() {
		bufio.NewReader(os.Stdin).ReadString('\n')
		u.Stop()
	}()
	proctest.Say("claiming-last pid=%d", os.Getpid())
	ln, err := u.Listen("tcp", os.Getenv(envLastAddr))
	if err == nil {
		ln.Close()
	}
	proctest.Say("listen-result stopped=%t err=%q", errors.Is(err, molt.ErrStopped), fmt.Sprint(err))
	u.Stop()
	return 0
}

// TestStopWhileListenWaits stops a successor whose Listen waits for an
// entry still in transit: Listen returns ErrStopped, and the parent, still
// sending, fails the upgrade with the successor's own words and serves on.
func TestStopWhileListenWaits(t *testing.T) {
	n := 2*molt.SendBatch + 1
	ev, w := pipe(t)
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdinR.Close(); stdinW.Close() })
	u := newUpgrader(t, molt.Options{
		Command: roleCommand("stop-while-claiming", "", w, stdinR, envLastAddr+"=127.0.0.2:0"),
	})
	for range n - 1 {
		if _, err := u.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	last, err := u.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	var result map[string]string
	batches := 0
	molt.SetTestHookBatchSent(func(int, int) {
		if batches++; batches == 1 {
			ev.Wait(t, "claiming-last")
			fmt.Fprintln(stdinW, "stop")
			result = ev.Wait(t, "listen-result")
		}
	})
	t.Cleanup(func() { molt.SetTestHookBatchSent(nil) })

	err = u.Upgrade(context.Background())
	t.Logf("Upgrade: %v", err)
	if result["stopped"] != "true" {
		t.Errorf("Listen in a successor stopped while it waited returned %s, want ErrStopped", result["err"])
	}
	var re *molt.ReportedError
	if !errors.As(err, &re) || !strings.Contains(re.Reason, "Stop") {
		t.Errorf("Upgrade = %v, want the successor's report that it stopped", err)
	}
	if got := u.State(); got != molt.StateReady {
		t.Errorf("State after the failed upgrade = %v, want ready", got)
	}
	c, err := net.Dial("tcp", last.Addr().String())
	if err != nil {
		t.Fatalf("parent's listener after the failed upgrade: %v", err)
	}
	c.Close()
}

// roleFailInventoryHang cannot take the inventory (RLIMIT_NOFILE 40, so a
// batch of descriptors arrives truncated), reports what File returned, and
// then hangs without reading, as a wedged successor would, until killed.
func roleFailInventoryHang() int {
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: 40, Max: 40}); err != nil {
		proctest.Say("setrlimit-error err=%q", err.Error())
		return 16
	}
	u := mustNew(roleOptions())
	_, err := u.File("f0" + strings.Repeat("x", 300))
	proctest.Say("claimed err=%q", fmt.Sprint(err))
	select {}
}

// TestFailedSuccessorStopsTheSend: a successor whose inventory failed
// stops reading while the parent still has thousands of entries to send,
// more than the socket holds (long names: 600 kB of metadata). The parent must not wait out ReadyTimeout
// on a blocked send (holding a batch of its handles): it reads the
// successor's FAILED, stops sending and reports the successor's reason.
func TestFailedSuccessorStopsTheSend(t *testing.T) {
	const files = 2000
	pad := strings.Repeat("x", 300)
	ev, w := pipe(t)
	u := newUpgrader(t, molt.Options{
		ReadyTimeout: 10 * time.Minute, // far beyond the test's own deadline: a blocked send would show
		Command:      roleCommand("fail-inventory-hang", "", w, nil),
	})
	for i := range files {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		if err := u.AddFile("f"+strconv.Itoa(i)+pad, f); err != nil {
			t.Fatal(err)
		}
	}
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	err := u.Upgrade(context.Background())
	var re *molt.ReportedError
	if !errors.As(err, &re) || !strings.Contains(re.Reason, "MSG_CTRUNC") {
		t.Fatalf("Upgrade = %v, want the successor's report naming MSG_CTRUNC", err)
	}
	if got := ev.Wait(t, "claimed"); !strings.Contains(got["err"], "MSG_CTRUNC") {
		t.Errorf("successor's File = %s, want the transfer's error", got["err"])
	}
	if got := u.State(); got != molt.StateReady {
		t.Errorf("State after the failed upgrade = %v, want ready", got)
	}
}
