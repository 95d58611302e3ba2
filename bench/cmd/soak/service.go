package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/moltgo/molt/bench/internal/eventlog"
	"github.com/moltgo/molt/internal/reap"
)

const (
	// firstReadyWait bounds the start of generation 1; upgradeWait one
	// upgrade (the server's own bound is serverReadyTimeout); exitWait the
	// drain and exit of an old generation (its bound is serverDrainTimeout).
	firstReadyWait = 30 * time.Second
	upgradeWait    = serverReadyTimeout + 10*time.Second
	exitWait       = serverDrainTimeout + 5*time.Second
	// stopWait bounds the stop of the service at the end; killGrace is how
	// long killed processes get to be reaped.
	stopWait  = serverDrainTimeout + 5*time.Second
	killGrace = 5 * time.Second
	// goneWait bounds the poll for a process to disappear where the
	// reaper cannot wait for it.
	goneWait = 5 * time.Second
)

// service is the molt service under test: generation 1, started by the
// driver, and its successors, all printing on one pipe.
type service struct {
	reaper   *reap.Reaper
	events   *eventlog.Log[serverEvent]
	failFile string      // exists while a successor is meant to fail
	first    int         // generation 1's PID
	cur      serverEvent // the ready event of the generation serving now
}

// step is the outcome of one upgrade the driver asked for.
type step struct {
	wantFail bool
	failed   bool          // the upgrade failed (as intended or not)
	handoff  time.Duration // SIGHUP → the successor's ready event (successful upgrades)
	cycle    time.Duration // SIGHUP → old generation reaped, or failed successor gone
	problem  string        // what went wrong; "" if all went as intended
}

// startService starts generation 1 and waits until it is ready.
func startService(ctx context.Context, r *reap.Reaper, failFile string) (*service, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envRole+"=server", envFailFile+"="+failFile)
	cmd.Stdout, cmd.Stderr = pw, os.Stderr
	err = r.Start(cmd)
	pw.Close() // the servers hold the write end: end-of-file once all are gone
	if err != nil {
		pr.Close()
		return nil, fmt.Errorf("start the server: %w", err)
	}
	s := &service{reaper: r, events: eventlog.New(eventName), failFile: failFile, first: cmd.Process.Pid}
	go s.events.Read(pr)
	wctx, cancel := context.WithTimeout(ctx, firstReadyWait)
	defer cancel()
	e, _, err := s.events.Wait(wctx, 0, func(e serverEvent) bool {
		return (e.Event == "ready" && e.Gen == 1) || e.Event == "error"
	})
	if err == nil && e.Event == "error" {
		err = errors.New(e.Err)
	}
	if err != nil {
		s.stop() // reaps what was started
		return nil, fmt.Errorf("generation 1 (pid %d) did not become ready: %w", s.first, err)
	}
	s.cur = e
	return s, nil
}

// upgrade asks the serving generation to upgrade, to a successor that
// fails during init if wantFail, and waits until the upgrade is over: the
// old generation drained, exited and was reaped, or the failed successor
// is gone.
func (s *service) upgrade(ctx context.Context, wantFail bool) step {
	st := step{wantFail: wantFail}
	from := s.cur
	if wantFail {
		if err := os.WriteFile(s.failFile, nil, 0o644); err != nil {
			st.problem = fmt.Sprintf("create the flag file: %v", err)
			return st
		}
		// Only successors started before the report of this upgrade see
		// it: the next upgrade is meant to succeed.
		defer os.Remove(s.failFile)
	}
	pos := s.events.Len()
	trigger := time.Now()
	if err := s.reaper.Signal(from.PID, syscall.SIGHUP); err != nil {
		st.problem = fmt.Sprintf("SIGHUP to generation %d (pid %d): %v", from.Gen, from.PID, err)
		return st
	}
	wctx, cancel := context.WithTimeout(ctx, upgradeWait)
	defer cancel()
	e, _, err := s.events.Wait(wctx, pos, func(e serverEvent) bool {
		return (e.Event == "ready" && e.Gen == from.Gen+1) ||
			(e.Event == "upgrade" && e.PID == from.PID && !e.OK) || e.Event == "error"
	})
	switch {
	case err != nil:
		st.problem = fmt.Sprintf("generation %d (pid %d): no successor and no failure within %v: %v", from.Gen, from.PID, upgradeWait, err)
	case e.Event == "error":
		st.problem = fmt.Sprintf("server pid %d: %s", e.PID, e.Err)
	case e.Event == "ready":
		st.handoff = time.Unix(0, e.UnixNS).Sub(trigger)
		s.cur = e
		if wantFail {
			st.problem = fmt.Sprintf("generation %d (pid %d): the upgrade meant to fail succeeded (successor pid %d)", from.Gen, from.PID, e.PID)
		}
		if p := s.waitExit(ctx, from, pos); p != "" && st.problem == "" {
			st.problem = p
		}
	default: // the upgrade failed
		st.failed = true
		if !wantFail {
			st.problem = fmt.Sprintf("generation %d (pid %d): upgrade failed: %s", from.Gen, from.PID, e.Err)
			break
		}
		st.problem = s.checkFailure(ctx, from, pos, e)
	}
	st.cycle = time.Since(trigger)
	return st
}

// waitExit waits until the old generation old has reported its exit and
// has been reaped, and says what was wrong with it.
func (s *service) waitExit(ctx context.Context, old serverEvent, pos int) string {
	wctx, cancel := context.WithTimeout(ctx, exitWait)
	defer cancel()
	x, _, err := s.events.Wait(wctx, pos, func(e serverEvent) bool { return e.Event == "exit" && e.PID == old.PID })
	if err != nil {
		return fmt.Sprintf("generation %d (pid %d) did not report its exit within %v: %v", old.Gen, old.PID, exitWait, err)
	}
	if x.Err != "" {
		return fmt.Sprintf("generation %d (pid %d): drain: %s", old.Gen, old.PID, x.Err)
	}
	if !reap.SeesEveryProcess {
		if !waitGone(wctx, old.PID) {
			return fmt.Sprintf("generation %d (pid %d) still exists after its exit event", old.Gen, old.PID)
		}
		return ""
	}
	status, err := s.reaper.WaitPID(wctx, old.PID)
	switch {
	case err != nil:
		return fmt.Sprintf("generation %d (pid %d) was not reaped within %v of its upgrade: %v", old.Gen, old.PID, exitWait, err)
	case status != "exit status 0":
		return fmt.Sprintf("generation %d (pid %d): %s", old.Gen, old.PID, status)
	}
	return ""
}

// checkFailure checks that an upgrade meant to fail failed cleanly: for
// the intended reason (the successor reported it and exited with status
// 1), with the successor reaped by the old generation, which still serves
// (the driver's sample checks that it answers).
func (s *service) checkFailure(ctx context.Context, from serverEvent, pos int, up serverEvent) string {
	pid := up.SuccessorPID
	if pid == 0 {
		return fmt.Sprintf("generation %d (pid %d): the upgrade failed before a successor started: %s", from.Gen, from.PID, up.Err)
	}
	// The successor wrote its line before it exited, and the old
	// generation wrote its report after that: the line is in the log.
	if _, ok := s.events.Find(pos, func(e serverEvent) bool { return e.Event == "init-failed" && e.PID == pid }); !ok {
		return fmt.Sprintf("generation %d (pid %d): successor pid %d failed, but not on purpose: %s", from.Gen, from.PID, pid, up.Err)
	}
	if !strings.Contains(up.Err, "exit status 1") {
		return fmt.Sprintf("generation %d (pid %d): successor pid %d: want exit status 1 in the error, got %q", from.Gen, from.PID, pid, up.Err)
	}
	// molt promises a failed successor reaped when Upgrade returns: it
	// must not exist, not even as a zombie.
	if !processGone(pid) {
		wctx, cancel := context.WithTimeout(ctx, goneWait)
		defer cancel()
		gone := waitGone(wctx, pid)
		if !gone {
			return fmt.Sprintf("generation %d (pid %d): failed successor pid %d still exists %v after the upgrade returned", from.Gen, from.PID, pid, goneWait)
		}
		return fmt.Sprintf("generation %d (pid %d): failed successor pid %d still existed when the upgrade returned (gone later)", from.Gen, from.PID, pid)
	}
	return ""
}

// waitGone polls until pid no longer exists, and reports whether that
// happened before ctx ended.
func waitGone(ctx context.Context, pid int) bool {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !processGone(pid) {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return processGone(pid)
		}
	}
	return true
}

// leftBehind starts the report of a process that was still alive at the
// end.
const leftBehind = "left behind and killed: "

// serviceEnd is what became of the service's processes.
type serviceEnd struct {
	generations int             // generations that became ready
	initFailed  int             // successors that failed on purpose
	okUpgrades  int             // upgrades reported successful by their old generation
	drains      []time.Duration // each generation's drain, from its exit event
	problems    []string        // generations that failed, did not exit cleanly, or were left behind
}

// stop sends SIGTERM to the serving generation, waits for every process
// to be gone, kills and reports what is left, and checks that every
// generation reported a clean exit.
func (s *service) stop() serviceEnd {
	var end serviceEnd
	pid := s.first
	if s.cur.PID != 0 {
		pid = s.cur.PID
	}
	if err := s.reaper.Signal(pid, syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		end.problems = append(end.problems, fmt.Sprintf("SIGTERM to pid %d: %v", pid, err))
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopWait)
	defer cancel()
	if !s.reaper.WaitAllGone(ctx) {
		for _, p := range s.reaper.KillLeft(killGrace) {
			end.problems = append(end.problems, leftBehind+p.String())
		}
	}
	// Every server holds the pipe: it ends when the last one has exited
	// (the only sign of that where the reaper cannot see them all).
	select {
	case <-s.events.Done():
	case <-ctx.Done():
		select {
		case <-s.events.Done():
		case <-time.After(killGrace):
			end.problems = append(end.problems, "the servers' output did not end: some process still holds it")
		}
	}
	exits := map[int]serverEvent{}
	for _, e := range s.events.All("exit") {
		exits[e.PID] = e
		end.drains = append(end.drains, time.Duration(e.DrainUS)*time.Microsecond)
	}
	for _, e := range s.events.All("error") {
		end.problems = append(end.problems, fmt.Sprintf("server pid %d: %s", e.PID, e.Err))
	}
	for _, e := range s.events.All("upgrade") {
		if e.OK {
			end.okUpgrades++
		}
	}
	end.initFailed = len(s.events.All("init-failed"))
	for _, r := range s.events.All("ready") {
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
