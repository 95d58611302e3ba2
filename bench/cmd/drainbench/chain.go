package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/moltgo/molt/bench/internal/eventlog"
	"github.com/moltgo/molt/internal/reap"
)

const (
	// firstReadyWait bounds the start of generation 1, upgradeWait one
	// upgrade (the server's own bound is serverReadyTimeout).
	firstReadyWait = 30 * time.Second
	upgradeWait    = serverReadyTimeout + 10*time.Second
	// stopWait bounds the stop of a chain: the last generation's drain
	// (serverDrainTimeout) and every older one still draining.
	stopWait = serverDrainTimeout + 5*time.Second
	// acceptWait bounds the wait for a successor's first accept after its
	// ready event (the wrk phase's server has no load before wrk starts).
	acceptWait = 2 * time.Second
	// killGrace is how long killed processes get to be reaped.
	killGrace = 5 * time.Second
)

// chain is one server of one system: generation 1, started by the driver,
// and its successors, all printing on one pipe.
type chain struct {
	sys    system
	reaper *reap.Reaper
	events *eventlog.Log[serverEvent]
	env    []string    // the environment of the processes the driver starts
	out    *os.File    // the pipe's write end, kept while the driver may start processes
	first  int         // generation 1's PID
	cur    serverEvent // the ready event of the generation serving now
	old    int         // the PID of the generation replaced last (0: none)
	dir    string      // the takeover socket's directory, removed at stop (takeover only)
}

// upgradeResult is one upgrade the driver asked for.
type upgradeResult struct {
	n       int
	from    uint64        // the generation asked to upgrade
	fromPID int           // its PID
	trigger time.Time     // SIGHUP sent (or, for the systems the driver replaces, the replacement began)
	handoff time.Duration // trigger → the successor's Ready returned (its ready event)
	// firstAccept is trigger → the successor accepted its first connection
	// (its accept event), which may come before its Ready returned; 0 if
	// it was not seen.
	firstAccept time.Duration
	// phases are molt's hand-off, phase by phase (phases.go); nil for the
	// other systems.
	phases map[string]time.Duration
	err    string // why it failed
}

// startChain starts generation 1 of sys and waits until it is ready.
// tlsEnv, if not empty, gives the servers a certificate (serverTLS's env):
// they serve TLS on a second listener too.
func startChain(ctx context.Context, r *reap.Reaper, sys system, tlsEnv []string) (*chain, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	c := &chain{sys: sys, reaper: r, events: eventlog.New(eventName), out: pw}
	c.env = append(os.Environ(), envRole+"=server", envSystem+"="+sys.name)
	c.env = append(c.env, tlsEnv...)
	if sys.takeover {
		if c.dir, err = os.MkdirTemp("", "drainbench"); err != nil {
			pr.Close()
			pw.Close()
			return nil, err
		}
		c.env = append(c.env, envTakeover+"="+filepath.Join(c.dir, "takeover.sock"))
	}
	if sys.fixedAddr {
		fixed := []string{envAddr}
		if len(tlsEnv) > 0 {
			fixed = append(fixed, envTLSAddr)
		}
		for _, name := range fixed {
			addr, err := freeAddr()
			if err != nil {
				pr.Close()
				pw.Close()
				return nil, err
			}
			c.env = append(c.env, name+"="+addr)
		}
	}
	go c.events.Read(pr)
	pid, err := c.startProcess(1)
	if sys.selfUpgrade {
		c.closeOut() // the servers hold the write end: end-of-file once all are gone
	}
	if err != nil {
		c.closeOut()
		return nil, fmt.Errorf("start the server: %w", err)
	}
	c.first = pid
	wctx, cancel := context.WithTimeout(ctx, firstReadyWait)
	defer cancel()
	ready, _, err := c.events.Wait(wctx, 0, func(e serverEvent) bool { return readyOf(1)(e) || e.Event == "error" })
	if err == nil && ready.Event == "error" {
		err = errors.New(ready.Err)
	}
	if err != nil {
		c.stop() // reaps what was started
		return nil, fmt.Errorf("generation 1 (pid %d) did not become ready: %w", c.first, err)
	}
	c.cur = ready
	return c, nil
}

// startProcess starts a server process of generation gen and returns its
// PID.
func (c *chain) startProcess(gen uint64) (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(slices.Clone(c.env), envGen+"="+strconv.FormatUint(gen, 10))
	cmd.Stdout, cmd.Stderr = c.out, os.Stderr
	if err := c.reaper.Start(cmd); err != nil {
		return 0, err
	}
	return cmd.Process.Pid, nil
}

// closeOut closes the driver's write end of the pipe: from then on, the
// output ends when the last server exits.
func (c *chain) closeOut() {
	if c.out != nil {
		c.out.Close()
		c.out = nil
	}
}

// freeAddr reserves a loopback port for the systems that bind one anew in
// every process: the kernel picks a free one, which is released at once.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// upgrade replaces the serving generation, after mark(): by SIGHUP for the
// systems that upgrade themselves, by starting and stopping processes
// otherwise. It waits for the successor to be ready or for the upgrade to
// fail.
func (c *chain) upgrade(ctx context.Context, n int, mark func()) upgradeResult {
	from := c.cur
	res := upgradeResult{n: n, from: from.Gen, fromPID: from.PID}
	if c.sys.waitOldExit && c.old != 0 {
		// Not part of the hand-off: tableflip refuses an upgrade until the
		// previous generation has exited.
		if err := c.waitExit(ctx, c.old); err != nil {
			res.err = err.Error()
			return res
		}
	}
	if mark != nil {
		mark()
	}
	res.trigger = time.Now()
	wctx, cancel := context.WithTimeout(ctx, upgradeWait)
	defer cancel()
	var e serverEvent
	var err error
	switch {
	case c.sys.selfUpgrade:
		if err := c.reaper.Signal(from.PID, syscall.SIGHUP); err != nil {
			res.err = fmt.Sprintf("SIGHUP to generation %d (pid %d): %v", from.Gen, from.PID, err)
			return res
		}
		next, failed := readyOf(from.Gen+1), failedUpgradeOf(from.Gen)
		e, _, err = c.events.Wait(wctx, 0, func(e serverEvent) bool { return next(e) || failed(e) })
	case c.sys.takeover:
		// The old generation ends by itself once the taker is ready.
		e, err = c.startNext(wctx, from.Gen+1)
	case c.sys.stopFirst:
		if err := c.reaper.Signal(from.PID, syscall.SIGTERM); err != nil {
			res.err = fmt.Sprintf("SIGTERM to generation %d (pid %d): %v", from.Gen, from.PID, err)
			return res
		}
		if err := c.waitExit(wctx, from.PID); err != nil {
			res.err = err.Error()
			return res
		}
		e, err = c.startNext(wctx, from.Gen+1)
	default: // start the new process first, then stop the old one
		e, err = c.startNext(wctx, from.Gen+1)
		if err == nil && e.Event == "ready" {
			if serr := c.reaper.Signal(from.PID, syscall.SIGTERM); serr != nil {
				res.err = fmt.Sprintf("SIGTERM to generation %d (pid %d): %v", from.Gen, from.PID, serr)
			}
		}
	}
	switch {
	case err != nil:
		res.err = fmt.Sprintf("generation %d (pid %d): no successor within %v: %v", from.Gen, from.PID, upgradeWait, err)
	case e.Event == "ready":
		res.handoff = time.Unix(0, e.UnixNS).Sub(res.trigger)
		c.cur = e
		c.old = from.PID
		// Under load the first accept follows at once; wait briefly.
		actx, acancel := context.WithTimeout(ctx, acceptWait)
		a, _, aerr := c.events.Wait(actx, 0, func(a serverEvent) bool { return a.Event == "accept" && a.PID == e.PID })
		acancel()
		if aerr == nil {
			res.firstAccept = time.Unix(0, a.UnixNS).Sub(res.trigger)
		}
		if e.Marks != nil && !c.sys.takeover { // molt, tableflip: the old generation reports right after (a taken-over one calls no Upgrade)
			uctx, ucancel := context.WithTimeout(ctx, acceptWait)
			u, _, uerr := c.events.Wait(uctx, 0, func(u serverEvent) bool { return u.Event == "upgrade" && u.PID == from.PID && u.OK })
			ucancel()
			if uerr == nil {
				res.phases = upgradePhases(res.trigger, u.Marks, e.Marks)
			}
		}
	case e.Event == "error":
		res.err = fmt.Sprintf("pid %d: %s", e.PID, e.Err)
	default:
		res.err = fmt.Sprintf("generation %d (pid %d): upgrade failed: %s", from.Gen, from.PID, e.Err)
	}
	return res
}

// startNext starts generation gen and waits for its ready event (or an
// error event).
func (c *chain) startNext(ctx context.Context, gen uint64) (serverEvent, error) {
	if _, err := c.startProcess(gen); err != nil {
		return serverEvent{}, err
	}
	e, _, err := c.events.Wait(ctx, 0, func(e serverEvent) bool { return readyOf(gen)(e) || e.Event == "error" })
	return e, err
}

// waitExit waits for the exit event of the process pid.
func (c *chain) waitExit(ctx context.Context, pid int) error {
	wctx, cancel := context.WithTimeout(ctx, stopWait)
	defer cancel()
	if _, _, err := c.events.Wait(wctx, 0, func(e serverEvent) bool { return e.Event == "exit" && e.PID == pid }); err != nil {
		return fmt.Errorf("pid %d did not exit: %w", pid, err)
	}
	return nil
}

// chainEnd is what became of a chain's processes.
type chainEnd struct {
	generations int             // generations that became ready
	drains      []time.Duration // each generation's drain, from its exit event
	calls       []time.Duration // each successful Upgrade call, as the old generation timed it
	problems    []string        // generations that failed, did not exit cleanly, or were left behind
}

// stop sends SIGTERM to the serving generation, waits for every process
// to be gone, kills and reports what is left, and checks that every
// generation reported a clean exit.
func (c *chain) stop() chainEnd {
	var end chainEnd
	pid := c.first
	if c.cur.PID != 0 {
		pid = c.cur.PID
	}
	if err := c.reaper.Signal(pid, syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		end.problems = append(end.problems, fmt.Sprintf("SIGTERM to pid %d: %v", pid, err))
	}
	c.closeOut() // no process is started any more
	if c.dir != "" {
		defer os.RemoveAll(c.dir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopWait)
	defer cancel()
	if !c.reaper.WaitAllGone(ctx) {
		for _, p := range c.reaper.KillLeft(killGrace) {
			end.problems = append(end.problems, "left behind and killed: "+p.String())
		}
	}
	// Every server holds the pipe: it ends when the last one has exited
	// (the only sign of that where the reaper cannot see them).
	select {
	case <-c.events.Done():
	case <-ctx.Done():
		select {
		case <-c.events.Done():
		case <-time.After(killGrace):
			end.problems = append(end.problems, "the servers' output did not end: some process still holds it")
		}
	}
	exits := map[int]serverEvent{}
	for _, e := range c.events.All("exit") {
		exits[e.PID] = e
		end.drains = append(end.drains, time.Duration(e.DrainUS)*time.Microsecond)
	}
	for _, e := range c.events.All("upgrade") {
		if e.OK {
			end.calls = append(end.calls, time.Duration(e.TookUS)*time.Microsecond)
		}
	}
	for _, e := range c.events.All("error") {
		end.problems = append(end.problems, fmt.Sprintf("server pid %d: %s", e.PID, e.Err))
	}
	for _, r := range c.events.All("ready") {
		end.generations++
		x, ok := exits[r.PID]
		switch {
		case !ok:
			end.problems = append(end.problems, fmt.Sprintf("generation %d (pid %d) did not report its exit", r.Gen, r.PID))
		case x.Err != "":
			end.problems = append(end.problems, fmt.Sprintf("generation %d (pid %d): drain: %s", r.Gen, r.PID, x.Err))
		}
	}
	return end
}

// oldExits returns, for each successful upgrade, how long after its
// trigger the replaced generation exited (its exit event), once the chain
// has stopped.
func (c *chain) oldExits(ups []upgradeResult) []time.Duration {
	exits := map[int]serverEvent{}
	for _, e := range c.events.All("exit") {
		exits[e.PID] = e
	}
	var out []time.Duration
	for _, u := range ups {
		if x, ok := exits[u.fromPID]; ok && u.err == "" {
			out = append(out, time.Unix(0, x.UnixNS).Sub(u.trigger))
		}
	}
	return out
}
