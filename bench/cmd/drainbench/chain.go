package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/moltgo/molt/bench/internal/proc"
)

const (
	// firstReadyWait bounds the start of generation 1, upgradeWait one
	// upgrade (the server's own bound is serverReadyTimeout).
	firstReadyWait = 30 * time.Second
	upgradeWait    = serverReadyTimeout + 10*time.Second
	// stopWait bounds the stop of a chain: the last generation's drain
	// (serverDrainTimeout) and every older one still draining.
	stopWait = serverDrainTimeout + 5*time.Second
	// killGrace is how long killed processes get to be reaped.
	killGrace = 5 * time.Second
)

// chain is one server: generation 1, started by the driver, and its
// successors, all printing on one pipe.
type chain struct {
	reaper *proc.Reaper
	events *eventLog
	first  int         // generation 1's PID
	cur    serverEvent // the ready event of the generation serving now
}

// upgradeResult is one upgrade the driver asked for.
type upgradeResult struct {
	n       int
	from    uint64        // the generation asked to upgrade
	trigger time.Time     // SIGHUP sent
	handoff time.Duration // SIGHUP → the successor's Ready returned (its ready event)
	err     string        // why it failed
}

// startChain starts generation 1 and waits until it is ready.
func startChain(ctx context.Context, r *proc.Reaper) (*chain, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envRole+"=server")
	cmd.Stdout, cmd.Stderr = pw, os.Stderr
	err = r.Start(cmd)
	pw.Close() // the servers hold the write end: end-of-file once all are gone
	if err != nil {
		pr.Close()
		return nil, fmt.Errorf("start the server: %w", err)
	}
	c := &chain{reaper: r, events: newEventLog(), first: cmd.Process.Pid}
	go c.events.read(pr)
	wctx, cancel := context.WithTimeout(ctx, firstReadyWait)
	defer cancel()
	ready, err := c.events.wait(wctx, func(e serverEvent) bool { return readyOf(1)(e) || e.Event == "error" })
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

// upgrade sends SIGHUP to the serving generation, after mark(), and waits
// for its successor to be ready or for the upgrade to fail.
func (c *chain) upgrade(ctx context.Context, n int, mark func()) upgradeResult {
	from := c.cur
	res := upgradeResult{n: n, from: from.Gen}
	if mark != nil {
		mark()
	}
	res.trigger = time.Now()
	if err := c.reaper.Signal(from.PID, syscall.SIGHUP); err != nil {
		res.err = fmt.Sprintf("SIGHUP to generation %d (pid %d): %v", from.Gen, from.PID, err)
		return res
	}
	wctx, cancel := context.WithTimeout(ctx, upgradeWait)
	defer cancel()
	next := readyOf(from.Gen + 1)
	failed := failedUpgradeOf(from.Gen)
	e, err := c.events.wait(wctx, func(e serverEvent) bool { return next(e) || failed(e) })
	switch {
	case err != nil:
		res.err = fmt.Sprintf("generation %d (pid %d): no successor within %v: %v", from.Gen, from.PID, upgradeWait, err)
	case e.Event == "ready":
		res.handoff = time.Unix(0, e.UnixNS).Sub(res.trigger)
		c.cur = e
	case e.Event == "error":
		res.err = fmt.Sprintf("pid %d: %s", e.PID, e.Err)
	default:
		res.err = fmt.Sprintf("generation %d (pid %d): upgrade failed: %s", from.Gen, from.PID, e.Err)
	}
	return res
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
	ctx, cancel := context.WithTimeout(context.Background(), stopWait)
	defer cancel()
	if !c.reaper.WaitAllGone(ctx) {
		for _, p := range c.reaper.KillLeft(killGrace) {
			end.problems = append(end.problems, "left behind and killed: "+p)
		}
	}
	// Every server holds the pipe: it ends when the last one has exited
	// (the only sign of that where the reaper cannot see them).
	select {
	case <-c.events.done:
	case <-ctx.Done():
		select {
		case <-c.events.done:
		case <-time.After(killGrace):
			end.problems = append(end.problems, "the servers' output did not end: some process still holds it")
		}
	}
	exits := map[int]serverEvent{}
	for _, e := range c.events.all("exit") {
		exits[e.PID] = e
		end.drains = append(end.drains, time.Duration(e.DrainUS)*time.Microsecond)
	}
	for _, e := range c.events.all("upgrade") {
		if e.OK {
			end.calls = append(end.calls, time.Duration(e.TookUS)*time.Microsecond)
		}
	}
	for _, e := range c.events.all("error") {
		end.problems = append(end.problems, fmt.Sprintf("server pid %d: %s", e.PID, e.Err))
	}
	for _, r := range c.events.all("ready") {
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
