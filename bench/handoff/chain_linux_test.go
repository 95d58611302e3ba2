//go:build linux

package handoff

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moltgo/molt/internal/reap"
	"golang.org/x/sys/unix"
)

// stepTimeout bounds every wait of the driver: generous, for -race on a
// loaded machine, and above the generations' own upgradeTimeout, so that
// they report a hung successor before the driver gives up on them.
const stepTimeout = 2 * time.Minute

// event is one report line of a generation.
type event struct {
	kind string // "ready", "addrs", "upgraded", "marks" or "fail"
	pid  int

	gen    int              // ready: the generation's number
	t0, t1 int64            // ready: Ready returned, TestMain entered; upgraded: Upgrade called, it returned
	count  int              // addrs: number of listeners
	digest string           // addrs: hash of their addresses in order
	first  string           // addrs: the first listener's address
	last   string           // addrs: the last listener's address
	msg    string           // fail: why
	at     map[string]int64 // marks: the moments of a hand-off (marks_linux_test.go)
}

func parseEvent(line string) event {
	kind, rest, _ := strings.Cut(line, " ")
	pidText, rest, _ := strings.Cut(rest, " ")
	ev := event{kind: kind}
	pid, err := strconv.Atoi(pidText)
	ev.pid = pid
	if err == nil {
		switch kind {
		case "ready":
			_, err = fmt.Sscan(rest, &ev.gen, &ev.t0, &ev.t1)
		case "upgraded":
			_, err = fmt.Sscan(rest, &ev.t0, &ev.t1)
		case "addrs":
			_, err = fmt.Sscan(rest, &ev.count, &ev.digest, &ev.first, &ev.last)
		case "marks":
			ev.at, err = parseMarks(rest)
		case "fail":
			ev.msg = rest
		default:
			err = errors.New("unknown kind")
		}
	}
	if err != nil {
		return event{kind: "fail", pid: pid, msg: fmt.Sprintf("malformed report %q: %v", line, err)}
	}
	return ev
}

// chain is the driver's view of a chain of generations of one system.
type chain struct {
	tb     testing.TB
	system string
	n      int
	r      *reap.Reaper

	lifeline   *os.File      // write end of every generation's stdin: closing it ends them all
	reports    *os.File      // read end of their stdout
	events     chan event    // parsed reports; closed when every generation has exited
	quit       chan struct{} // closed by cleanup: the reader stops forwarding
	readerDone chan struct{} // closed when the reader has ended

	servingPID int   // the generation that serves now
	first      event // generation 1's listeners, which every successor must hold
	serving    event // the serving generation's listeners
}

// upgradeResult is what the driver learnt from one upgrade.
type upgradeResult struct {
	handoff   time.Duration    // Upgrade called in the old generation → Ready returned in the new one
	successor time.Duration    // the part of handoff from the successor's TestMain to its Ready returned
	observed  time.Duration    // SIGHUP sent → the successor's ready report read
	marks     map[string]int64 // both generations' marks
}

// startChain starts generation 1 of system with n listeners and returns
// once it is ready, which is set-up: it takes the caller's time, not the
// benchmark's. profileDir, if not empty, is where generations write CPU
// profiles. The chain ends in tb's cleanup.
func startChain(tb testing.TB, system string, n int, profileDir string) *chain {
	tb.Helper()
	// The test process is a child subreaper: generations whose parent has
	// exited become its children, so it can wait for each one and know
	// that none is left.
	r, err := reap.New()
	if err != nil {
		tb.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		stdinR.Close()
		stdinW.Close()
		tb.Fatal(err)
	}
	env := []string{
		envSystem + "=" + system,
		envListeners + "=" + strconv.Itoa(n),
		envGeneration + "=1",
		envProfileDir + "=" + profileDir,
	}
	if _, ok := os.LookupEnv("GORACE"); !ok {
		// Under -race every process sleeps a second at exit by default,
		// and the driver waits for each generation's exit.
		env = append(env, "GORACE=atexit_sleep_ms=0")
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HANDOFF_BENCH_") {
			env = append(env, kv)
		}
	}
	cmd := &exec.Cmd{
		Path: exe,
		// TestMain takes the role from the environment; were it not to,
		// this binary would run no test.
		Args:   []string{exe, "-test.run=^$"},
		Env:    env,
		Stdin:  stdinR,
		Stdout: outW,
		Stderr: os.Stderr,
	}
	err = r.Start(cmd) // never cmd.Wait: the reaper reaps
	stdinR.Close()
	outW.Close()
	if err != nil {
		stdinW.Close()
		outR.Close()
		tb.Fatal(err)
	}
	c := &chain{
		tb: tb, system: system, n: n, r: r,
		lifeline: stdinW, reports: outR,
		events:     make(chan event, 16),
		quit:       make(chan struct{}),
		readerDone: make(chan struct{}),
		servingPID: cmd.Process.Pid,
	}
	go c.read()
	tb.Cleanup(c.cleanup)

	ready, err := c.next()
	if err == nil && (ready.kind != "ready" || ready.pid != c.servingPID) {
		err = fmt.Errorf("unexpected first report %+v", ready)
	}
	if err != nil {
		c.fatal(err)
	}
	// Generation 1 writes its listeners report right after its ready report.
	inv, err := c.next()
	if err == nil {
		err = c.checkInventory(inv, ready.pid)
	}
	if err != nil {
		c.fatal(err)
	}
	c.first, c.serving = inv, inv
	return c
}

// read forwards the generations' reports until every generation has
// exited (the pipe's last writer closed it).
func (c *chain) read() {
	defer close(c.readerDone)
	defer close(c.events)
	sc := bufio.NewScanner(c.reports)
	for sc.Scan() {
		select {
		case c.events <- parseEvent(sc.Text()):
		case <-c.quit:
		}
	}
}

// next returns the next report; a generation's failure is an error.
func (c *chain) next() (event, error) {
	t := time.NewTimer(stepTimeout)
	defer t.Stop()
	select {
	case ev, ok := <-c.events:
		switch {
		case !ok:
			return event{}, errors.New("every generation has exited")
		case ev.kind == "fail":
			return ev, fmt.Errorf("%s generation pid %d: %s", c.system, ev.pid, ev.msg)
		}
		return ev, nil
	case <-t.C:
		return event{}, fmt.Errorf("%s chain: no report within %v", c.system, stepTimeout)
	}
}

// checkInventory checks the listeners report ev of generation pid.
func (c *chain) checkInventory(ev event, pid int) error {
	switch {
	case ev.kind != "addrs" || ev.pid != pid:
		return fmt.Errorf("want the listeners of pid %d, got report %+v", pid, ev)
	case ev.count != c.n:
		return fmt.Errorf("pid %d holds %d listeners, want %d", pid, ev.count, c.n)
	case c.first.kind != "" && ev.digest != c.first.digest:
		return fmt.Errorf("pid %d holds other listeners (%s … %s) than generation 1 (%s … %s)",
			pid, ev.first, ev.last, c.first.first, c.first.last)
	}
	return nil
}

// upgrade has the serving generation upgrade and returns the times. It
// calls pause once it has read the successor's ready report, and resume
// when the old generation has exited and the successor's listeners were
// checked: a benchmark stops its timer in between.
func (c *chain) upgrade(pause, resume func()) upgradeResult {
	c.tb.Helper()
	old := c.servingPID
	var res upgradeResult
	// A connection waits in listener 0's backlog for the successor's first
	// accept (nobody else accepts): that moment is a mark.
	client, err := net.DialTimeout("tcp", c.serving.first, stepTimeout)
	if err != nil {
		c.fatal(fmt.Errorf("dial %s before the upgrade: %w", c.serving.first, err))
	}
	defer client.Close()
	sent := time.Now()
	if err := c.r.Signal(old, syscall.SIGHUP); err != nil {
		c.fatal(fmt.Errorf("SIGHUP to pid %d: %w", old, err))
	}
	// Five reports, in no fixed order but for the successor's marks and
	// listeners after its ready report and the old generation's marks
	// after its upgraded report: the old generation may report after the
	// new one is done.
	var ready, upgraded, inv, oldMarks, newMarks *event
	for ready == nil || upgraded == nil || inv == nil || oldMarks == nil || newMarks == nil {
		ev, err := c.next()
		switch {
		case err != nil:
			c.fatal(err)
		case ev.kind == "ready" && ready == nil && ev.pid != old:
			res.observed = time.Since(sent)
			pause()
			ready = &ev
		case ev.kind == "upgraded" && upgraded == nil && ev.pid == old:
			upgraded = &ev
		case ev.kind == "marks" && oldMarks == nil && upgraded != nil && ev.pid == old:
			oldMarks = &ev
		case ev.kind == "marks" && newMarks == nil && ready != nil && ev.pid == ready.pid:
			newMarks = &ev
		case ev.kind == "addrs" && inv == nil && ready != nil && ev.pid == ready.pid:
			if err := c.checkInventory(ev, ready.pid); err != nil {
				c.fatal(err)
			}
			inv = &ev
		default:
			c.fatal(fmt.Errorf("unexpected report %+v during the upgrade of pid %d", ev, old))
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	st, err := c.r.WaitPID(ctx, old)
	if err == nil && st != "exit status 0" {
		err = errors.New(st)
	}
	if err != nil {
		c.fatal(fmt.Errorf("generation pid %d after its upgrade: %w", old, err))
	}
	c.servingPID, c.serving = ready.pid, *inv
	res.handoff = time.Duration(ready.t0 - upgraded.t0)
	res.successor = time.Duration(ready.t0 - ready.t1)
	res.marks = make(map[string]int64)
	for _, at := range []map[string]int64{oldMarks.at, newMarks.at} {
		for k, v := range at {
			res.marks[k] = v
		}
	}
	resume()
	return res
}

// fatal ends the test or benchmark. A generation that ran out of
// descriptors met a limit of the machine, not a bug: that is a skip, which
// says what failed.
func (c *chain) fatal(err error) {
	c.tb.Helper()
	var rl unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &rl)
	msg := err.Error()
	// A fork/exec fails with EBADF when the child must first move the
	// descriptors it passes on above the highest one (Go's fork does, for
	// each one whose number is below its place in the child), and the
	// highest lands beyond RLIMIT_NOFILE: with N listeners and up to 2N
	// descriptors held, that takes up to 3N.
	forkLimit := strings.Contains(msg, "fork/exec") && strings.Contains(msg, syscall.EBADF.Error()) &&
		uint64(3*c.n) > rl.Cur
	if strings.Contains(msg, syscall.EMFILE.Error()) || forkLimit {
		c.tb.Skipf("%s with %d listeners needs more descriptors than RLIMIT_NOFILE allows (%d): %v",
			c.system, c.n, rl.Cur, err)
	}
	c.tb.Fatal(err)
}

// cleanup ends the chain. After a clean run the serving generation stops
// on SIGTERM, as in production, and must exit with status 0. Then the
// lifeline closes, which ends any generation still running (after a
// failure, perhaps a successor in the middle of its hand-off); anything
// still alive after that is killed and reported.
func (c *chain) cleanup() {
	close(c.quit)
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	if !c.tb.Failed() && !c.tb.Skipped() {
		err := c.r.Signal(c.servingPID, syscall.SIGTERM)
		st := ""
		if err == nil {
			st, err = c.r.WaitPID(ctx, c.servingPID)
		}
		if err == nil && st != "exit status 0" {
			err = errors.New(st)
		}
		if err != nil {
			c.tb.Errorf("stop the serving %s generation pid %d: %v", c.system, c.servingPID, err)
		}
	}
	c.lifeline.Close()
	if !c.r.WaitAllGone(ctx) {
		left := c.r.KillLeft(10 * time.Second)
		c.tb.Errorf("processes left behind, killed: %v", left)
	}
	// The report pipe ends with its last writer.
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-c.readerDone:
	case <-t.C:
		c.tb.Errorf("the report pipe is still open after every generation exited")
	}
	c.reports.Close()
}
