//go:build linux

package molt_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/drain"
	"github.com/moltgo/molt/internal/proctest"
)

// The harness of the fault-injection suite (faults_cases_test.go): the
// world each fault runs in — the role processes' events, the load and
// the prober (faults_load_test.go), generation 1 in the test process —
// and the checks every fault ends with: no failed request, the right
// processes served, nothing leaked, nothing left behind.

// harness is one fault's world: the role processes' event pipe, the load,
// the prober, what must be torn down, and the baseline for the leak checks.
type harness struct {
	t        *testing.T
	ev       *proctest.Events
	w        *os.File // role processes' standard output
	fds      int      // open descriptors at the start, pidfds left out (see proctest.NoPidfds)
	routines int      // goroutines at the start
	children map[int]bool

	ld *faultLoad
	pr *prober
	tg target

	mu        sync.Mutex
	pids      map[int]bool // every process of the fault; all must be gone at the end
	teardown  []func()
	during    []string // failed probes during the fault
	duringOK  int
	checked   bool
	killed    int       // the process the test SIGKILLed, if any
	dead      time.Time // when it was reaped
	lossLimit int       // most requests the kill may take with it

	faultFrom, faultTo time.Time // the fault's window: from its start until the upgrade ended or a successor served
	sentFrom, sentTo   int       // requests answered or failed when the window opened and closed
}

// beginFault and endFault mark the fault's window, to count the requests
// completed in it.
func (h *harness) beginFault() {
	h.faultFrom, h.sentFrom = time.Now(), h.ld.snapshot().sent
}

func (h *harness) endFault() {
	h.faultTo, h.sentTo = time.Now(), h.ld.snapshot().sent
}

// outcome is what a fault's run must have observed, for the checks and
// the matrix.
type outcome struct {
	upgrade string // the upgrade's outcome, for the matrix
	// servedBy is every process that answered a request or a probe, in
	// the order of its first answer; no other process may have answered.
	servedBy []server
	// last is the process that answered last, if not the last of
	// servedBy.
	last int
}

// server is a process that serves in a fault, and its part in it.
type server struct {
	role string // "parent", "successor", ...
	pid  int
}

func (s server) String() string { return fmt.Sprintf("%s (pid %d)", s.role, s.pid) }

func newHarness(t *testing.T) *harness {
	ev, w := pipe(t)
	h := &harness{t: t, ev: ev, w: w, pids: map[int]bool{}}
	h.children = proctest.ChildrenOf(os.Getpid())
	h.fds, h.routines = proctest.CountFDs(t, os.Getpid(), proctest.NoPidfds), runtime.NumGoroutine()
	t.Cleanup(func() { // after a t.Fatal: stop what runs, kill what is ours
		if h.checked {
			return
		}
		h.stopLoad()
		h.runTeardown()
		for pid := range h.pids {
			proctest.KillIfOurs(pid)
		}
	})
	return h
}

func (h *harness) addPID(pid int) {
	if pid > 0 {
		h.mu.Lock()
		h.pids[pid] = true
		h.mu.Unlock()
	}
}

// wait waits for the next event called name and remembers the processes
// it names.
func (h *harness) wait(name string) map[string]string {
	h.t.Helper()
	f := h.ev.Wait(h.t, name)
	for _, k := range []string{"pid", "grandchild", "successor"} {
		if p, err := strconv.Atoi(f[k]); err == nil {
			h.addPID(p)
		}
	}
	return f
}

func (h *harness) onTeardown(f func()) {
	h.mu.Lock()
	h.teardown = append(h.teardown, f)
	h.mu.Unlock()
}

func (h *harness) runTeardown() {
	h.mu.Lock()
	fs := h.teardown
	h.teardown = nil
	h.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

// startLoad starts the load (2 clients of each kind) and the prober
// against tg, and waits until every kind was answered 20 times.
func (h *harness) startLoad(tg target) {
	h.t.Helper()
	h.startLoadBounded(tg, maxReqsPerClient, maxLoadDuration)
}

// startLoadBounded is startLoad with other bounds, for a fault that lasts
// longer than most.
func (h *harness) startLoadBounded(tg target, maxReqs int, maxDur time.Duration) {
	h.t.Helper()
	h.tg = tg
	h.ld = startFaultLoadBounded(tg, 2, maxReqs, maxDur)
	h.pr = startProber(tg)
	h.ld.waitMore(h.t, loadStats{okByPID: map[int]int{}}, 0, 20)
}

func (h *harness) stopLoad() (loadStats, []reqResult, []reqResult) {
	var (
		st    loadStats
		fails []reqResult
		pr    []reqResult
	)
	if h.ld != nil {
		st, fails = h.ld.finish()
	}
	if h.pr != nil {
		pr = h.pr.finish()
	}
	return st, fails, pr
}

// probe checks that a new connection to the service is answered, by pid
// if not 0. Phase "during" records instead of failing (it may run in an
// observer).
func (h *harness) probe(phase string, pid int) {
	r := probeOnce(h.tg)
	msg := ""
	switch {
	case r.err != nil:
		msg = fmt.Sprintf("probe %s the fault: %v", phase, r.err)
	case pid != 0 && r.pid != pid:
		msg = fmt.Sprintf("probe %s the fault answered by pid %d, want %d", phase, r.pid, pid)
	}
	if phase == "during" {
		h.mu.Lock()
		if msg != "" {
			h.during = append(h.during, msg)
		} else {
			h.duringOK++
		}
		h.mu.Unlock()
		return
	}
	if msg != "" {
		h.t.Error(msg)
	}
}

// markKilled records that the test SIGKILLed pid, reaped at dead, and how many
// requests it may take with it: at most one in flight per client and the
// prober, and one more per keep-alive client whose pooled connection the
// dead process owned.
func (h *harness) markKilled(pid int, dead time.Time) {
	h.killed, h.dead = pid, dead
	h.lossLimit = 2*h.ld.clients + 1
}

// check is the common end of every fault: stop the load, classify its
// failures, assert, log the matrix row, tear down, check for leaks.
func (h *harness) check(name string, out outcome) {
	t := h.t
	t.Helper()
	h.checked = true
	st, fails, probes := h.stopLoad()
	loads, bad := countLosses(fails, h.killed, h.dead)
	probeLoss, badProbes := countLosses(probes, h.killed, h.dead)
	n, ok, gap, slowest := probeSummary(probes)
	lost := loads[lossInFlight] + loads[lossDeadConn] + probeLoss[lossInFlight] + probeLoss[lossDeadConn]

	if len(bad) > 0 {
		t.Errorf("%d failed requests (refused %d, other %d):%s", len(bad), loads[lossRefused], loads[lossOther], describeFailures(bad, 10))
	}
	if len(badProbes) > 0 {
		t.Errorf("%d failed probes (refused %d, other %d):%s", len(badProbes), probeLoss[lossRefused], probeLoss[lossOther], describeFailures(badProbes, 10))
	}
	if lost > h.lossLimit {
		t.Errorf("%d requests lost with the killed process %d, want at most %d (one per client in flight, one per keep-alive connection)", lost, h.killed, h.lossLimit)
	}
	if st.ok == 0 || ok == 0 {
		t.Errorf("no answers: %d requests ok, %d probes ok", st.ok, ok)
	}
	checkServers(t, out, st.answers, probes)
	h.mu.Lock()
	during, duringOK := h.during, h.duringOK
	h.mu.Unlock()
	for _, m := range during {
		t.Error(m)
	}
	if duringOK == 0 {
		t.Errorf("no probe succeeded during the fault")
	}
	kinds := make([]string, 0, numKinds)
	for k := range numKinds {
		kinds = append(kinds, fmt.Sprintf("%d", st.okKind[k]))
	}
	failed := fmt.Sprintf("%d", len(fails))
	if h.killed != 0 {
		failed = fmt.Sprintf("%d (in flight in killed pid: %d, on its dead keep-alive conns: %d, other: %d, refused: %d)",
			len(fails), loads[lossInFlight], loads[lossDeadConn], loads[lossOther], loads[lossRefused])
	}
	if h.killed != 0 && lost > 0 {
		var gone []reqResult
		for _, r := range append(fails, probes...) {
			if c := classify(r, h.killed, h.dead); c == lossInFlight || c == lossDeadConn {
				gone = append(gone, r)
			}
		}
		t.Logf("lost with pid %d (reaped at %s):%s", h.killed, h.dead.Format("15:04:05.000000"), describeFailures(gone, 20))
	}
	if h.faultTo.IsZero() {
		t.Errorf("fault window not marked")
	}
	t.Logf("MATRIX | %s | %s | %s | sent %d (ok GET/POST/close %s), %d in the fault's %v | failed %s | probes %d/%d ok, lost %d, during-probes %d ok, max gap %v, slowest %v",
		name, out.upgrade, describeServers(out), st.sent, strings.Join(kinds, "/"), h.sentTo-h.sentFrom, h.faultTo.Sub(h.faultFrom).Round(time.Millisecond), failed, ok, n,
		probeLoss[lossInFlight]+probeLoss[lossDeadConn], duringOK, gap.Round(time.Millisecond), slowest.Round(time.Millisecond))

	h.runTeardown()

	// No process left behind: every process of the fault is gone, and the
	// test process has no child it did not have before.
	for pid := range h.pids {
		proctest.WaitGone(t, pid)
	}
	var left []int
	if !proctest.Until(proctest.Patience, func() bool { left = proctest.NewChildren(h.children); return len(left) == 0 }) {
		t.Errorf("processes left behind: children %v of the test process", left)
	}
	proctest.CheckFDs(t, "after the fault", os.Getpid(), proctest.NoPidfds, h.fds)
	proctest.CheckGoroutines(t, "after the fault", h.routines)
}

// describeServers says who served, for the matrix.
func describeServers(out outcome) string {
	var b strings.Builder
	for i, s := range out.servedBy {
		if i > 0 {
			b.WriteString(", then ")
		}
		b.WriteString(s.String())
	}
	if out.last != 0 && (len(out.servedBy) == 0 || out.last != out.servedBy[len(out.servedBy)-1].pid) {
		fmt.Fprintf(&b, "; last pid %d", out.last)
	}
	return b.String()
}

// checkServers checks who answered the load and the probes against out:
// exactly the processes of out.servedBy, first answering in that order,
// and out.last (or the last of servedBy) answering last.
func checkServers(t *testing.T, out outcome, load map[int]answerSpan, probes []reqResult) {
	t.Helper()
	answered := maps.Clone(load)
	for _, r := range probes {
		if r.err == nil {
			answered[r.pid] = answered[r.pid].add(r.end)
		}
	}
	got := slices.Collect(maps.Keys(answered))
	slices.SortFunc(got, func(a, b int) int { return answered[a].first.Compare(answered[b].first) })
	want := make([]int, len(out.servedBy))
	for i, s := range out.servedBy {
		want[i] = s.pid
	}
	if !slices.Equal(got, want) {
		t.Errorf("answered by pids %v (in the order of their first answer), want %v", got, out.servedBy)
	}
	last, wantLast := 0, out.last
	for pid, a := range answered {
		if last == 0 || a.last.After(answered[last].last) {
			last = pid
		}
	}
	if wantLast == 0 && len(want) > 0 {
		wantLast = want[len(want)-1]
	}
	if last != wantLast {
		t.Errorf("the last answer came from pid %d, want %d", last, wantLast)
	}
}

// inproc is generation 1 inside the test process: an Upgrader serving
// HTTP on one listener, drained with package drain after an upgrade.
type inproc struct {
	u      *molt.Upgrader
	srv    *drain.HTTPServer
	hs     *http.Server
	ln     net.Listener
	tg     target
	listen string        // "network address" as requested: what successors listen on
	served chan struct{} // Serve returned
	pid    int

	mu      sync.Mutex
	next    func(*exec.Cmd) error // the next successor's command hook
	onEvent func(molt.Event)      // called for each event of the Upgrader
	// onCommit is called between a successor's READY and the ACK, with
	// its PID (see molt.Upgrader.OnCommit).
	onCommit func(pid int)
	started  int // EventUpgradeStarted seen
	drained  bool
}

// startInProc creates generation 1 in the test process on network/addr,
// calls add (if set) before Ready, and serves. Command hooks are set per
// upgrade with setNext.
func (h *harness) startInProc(opts molt.Options, network, addr string, add func(*molt.Upgrader)) *inproc {
	t := h.t
	t.Helper()
	ip := &inproc{served: make(chan struct{}), pid: os.Getpid()}
	if opts.Logger == nil {
		opts.Logger = roleLogger()
	}
	opts.Command = func(cmd *exec.Cmd) error {
		ip.mu.Lock()
		next := ip.next
		ip.mu.Unlock()
		return next(cmd)
	}
	u, err := molt.New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ip.u = u
	h.onTeardown(ip.close)
	u.Observe(func(e molt.Event) {
		ip.mu.Lock()
		f := ip.onEvent
		if e.Kind == molt.EventUpgradeStarted {
			ip.started++
		}
		ip.mu.Unlock()
		if e.SuccessorPID != 0 {
			h.addPID(e.SuccessorPID)
		}
		if f != nil {
			f(e)
		}
	})
	u.OnCommit(func(_ context.Context, pid int) {
		h.addPID(pid)
		ip.mu.Lock()
		f := ip.onCommit
		ip.mu.Unlock()
		if f != nil {
			f(pid)
		}
	})
	ln, err := u.Listen(network, addr)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	if add != nil {
		add(u)
	}
	ip.ln, ip.tg, ip.listen = ln, target{network, ln.Addr().String()}, network+" "+addr
	ip.hs = &http.Server{Handler: faultHandler(u, nil)}
	ip.srv = drain.NewHTTPServer(ip.hs)
	go func() { ip.srv.Serve(ln); close(ip.served) }()
	if err := u.Ready(); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	// Probe during every upgrade, from the observer: after a failed
	// successor was reaped, and between a successor's READY and the ACK.
	ip.onEvent = func(e molt.Event) {
		if e.Kind == molt.EventUpgradeFailed {
			h.probe("during", ip.pid)
		}
	}
	ip.onCommit = func(int) { h.probe("during", ip.pid) }
	return ip
}

// role makes the next successor play the fault role with fault, on the
// service's address, with more environment.
func (ip *inproc) role(h *harness, fault string, env ...string) {
	ip.roleWith(h, fault, nil, env...)
}

// roleWith is role with stdin as the successor's standard input.
func (ip *inproc) roleWith(h *harness, fault string, stdin *os.File, env ...string) {
	env = append(env, envFault+"="+fault)
	ip.setNext(roleCommand("fault", ip.listen, h.w, stdin, env...))
}

func (ip *inproc) setNext(f func(*exec.Cmd) error) {
	ip.mu.Lock()
	ip.next = f
	ip.mu.Unlock()
}

func (ip *inproc) setOnCommit(f func(pid int)) {
	ip.mu.Lock()
	ip.onCommit = f
	ip.mu.Unlock()
}

// takeOver finishes generation 1 after a successful upgrade as a service
// does: drain, then Stop.
func (ip *inproc) takeOver(t *testing.T) {
	t.Helper()
	select {
	case <-ip.u.Exit():
	default:
		t.Fatal("Exit not closed after a successful upgrade")
	}
	if got := ip.u.Reason(); got != molt.Upgraded {
		t.Errorf("Reason = %v, want upgraded", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ip.srv.Drain(ctx); err != nil {
		t.Errorf("Drain: %v", err)
	}
	ip.u.Stop()
	<-ip.served
	ip.mu.Lock()
	ip.drained = true
	ip.mu.Unlock()
}

func (ip *inproc) close() {
	ip.mu.Lock()
	drained := ip.drained
	ip.mu.Unlock()
	if !drained {
		ip.hs.Close()
		<-ip.served
	}
	ip.u.Stop()
}

// upgrade runs one upgrade and checks that a failed one left generation 1
// serving as before: the successor reaped, the state ready, the listener
// still non-blocking (the successor's copy of the socket shares its file
// status flags, and a blocking accept would stall generation 1's poller).
func (ip *inproc) upgrade(t *testing.T) error {
	t.Helper()
	err := ip.u.Upgrade(context.Background())
	if err != nil {
		var ce *molt.ChildError
		if errors.As(err, &ce) && ce.PID != 0 && ce.State == nil {
			t.Errorf("Upgrade returned before successor %d was reaped", ce.PID)
		}
		if got := ip.u.State(); got != molt.StateReady {
			t.Errorf("State after the failed upgrade = %v, want ready", got)
		}
		if !nonBlocking(t, ip.ln) {
			t.Errorf("generation 1's listener is in blocking mode after the failed upgrade")
		}
	}
	return err
}

// stopService stops a successor that serves tg with POST /stop and waits
// until it has exited.
func (h *harness) stopService(tg target, pid int) {
	h.t.Helper()
	c := &http.Client{Timeout: reqTimeout, Transport: tg.transport(false)}
	resp, err := c.Post(tg.url("/stop"), "text/plain", nil)
	if err != nil {
		h.t.Errorf("POST /stop to pid %d: %v", pid, err)
		proctest.KillIfOurs(pid)
		return
	}
	resp.Body.Close()
	for range 8 { // a parent killed late may have said "exit" too
		if h.wait("exit")["pid"] == strconv.Itoa(pid) {
			break
		}
	}
	proctest.WaitGone(h.t, pid)
}

// signalled reports whether err is a ChildError whose successor was
// killed by sig.
func signalled(err error, sig syscall.Signal) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return -1
	}
	return ee.ExitCode()
}

func stageOf(err error) molt.Stage {
	var ce *molt.ChildError
	if errors.As(err, &ce) {
		return ce.Stage
	}
	return 0
}
