package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/moltgo/molt/internal/reap"
)

// driver runs the demo: it starts the first server generation, puts it
// under load, upgrades it, stops it and checks what is left.
type driver struct {
	cfg    config
	tty    bool // standard output is a terminal: show live progress
	events *eventLog
	reaper *reap.Reaper
	first  int // PID of the first generation
	load   *load

	mu       sync.Mutex // protects the fields below
	loadTook time.Duration
	upgrades []upgradeResult
	problems []string       // anything else that went wrong
	left     []reap.Process // processes killed because they outlived the demo
}

// upgradeResult is what happened to one upgrade the driver asked for.
type upgradeResult struct {
	n    int
	from event         // the ready event of the generation asked to upgrade
	to   event         // the ready event of its successor, if it took over
	ok   bool          // the successor took over
	err  string        // why not
	took time.Duration // the Upgrade call, as the server measured it
}

// runDriver runs the demo and returns the exit status.
func runDriver(cfg config) int {
	start := time.Now()
	deadline := start.Add(cfg.timeout)
	sigCtx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	runCtx, cancel := context.WithDeadlineCause(sigCtx, deadline.Add(-cfg.cleanupReserve()),
		fmt.Errorf("-timeout %v reached", cfg.timeout))
	defer cancel()

	d := &driver{cfg: cfg, tty: isTerminal(os.Stdout), events: newEventLog()}
	var err error
	if d.reaper, err = reap.New(); err != nil {
		fmt.Fprintf(os.Stderr, "molt-demo: %v\n", err)
		return 1
	}
	if err := d.startServer(); err != nil {
		fmt.Fprintf(os.Stderr, "molt-demo: %v\n", err)
		return 1
	}
	d.run(runCtx)
	d.shutdown(deadline)
	return d.report(os.Stdout)
}

// startServer starts generation 1: this executable with -serve, its
// standard output a pipe that every later generation inherits.
func (d *driver) startServer() error {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, "-serve", "-addr", d.cfg.addr)
	cmd.Stdout = w
	cmd.Stderr = os.Stderr
	err = d.reaper.Start(cmd) // in a process group of its own; the reaper reaps it
	w.Close()                 // the servers hold the write end: end-of-file once all are gone
	if err != nil {
		r.Close()
		return fmt.Errorf("start the server: %w", err)
	}
	d.first = cmd.Process.Pid
	go d.events.read(r)
	return nil
}

// run waits for generation 1, runs the load for the configured duration
// and the upgrades at evenly spaced times within it.
func (d *driver) run(ctx context.Context) {
	readyCtx, cancel := context.WithTimeout(ctx, readyTimeout)
	first, err := d.events.waitFrom(readyCtx, 0, readyOf(1))
	cancel()
	if err != nil {
		d.problem("generation 1 (pid %d) did not become ready: %v", d.first, err)
		return
	}

	loadStart := time.Now()
	loadEnd := loadStart.Add(d.cfg.duration)
	d.load = startLoad(ctx, "http://"+first.Addr+"/", d.cfg.clients, loadEnd)
	stopProgress := d.showProgress(loadStart)

	for n := 1; n <= d.cfg.upgrades; n++ {
		at := loadStart.Add(d.cfg.duration * time.Duration(n) / time.Duration(d.cfg.upgrades+1))
		if !sleepUntil(ctx, at) {
			break
		}
		d.upgrade(ctx, n)
	}
	if !sleepUntil(ctx, loadEnd) {
		d.problem("stopped early: %v", context.Cause(ctx))
	}
	d.load.finish()
	stopProgress()

	d.mu.Lock()
	d.loadTook = d.load.took()
	d.mu.Unlock()
}

// upgrade asks the newest generation to upgrade (SIGHUP) and waits for
// the outcome: its upgrade event and, on success, its successor's ready
// event.
func (d *driver) upgrade(ctx context.Context, n int) {
	from, _ := d.events.latestReady()
	r := upgradeResult{n: n, from: from}
	defer func() { d.addUpgrade(r) }()

	mark := d.events.len()
	if err := d.reaper.Signal(from.PID, syscall.SIGHUP); err != nil {
		r.err = fmt.Sprintf("SIGHUP to pid %d: %v", from.PID, err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, upgradeTimeout+10*time.Second)
	defer cancel()
	ev, err := d.events.waitFrom(ctx, mark, func(e event) bool { return e.Event == "upgrade" && e.PID == from.PID })
	if err != nil {
		r.err = fmt.Sprintf("no upgrade event from pid %d: %v", from.PID, err)
		return
	}
	r.took = time.Duration(ev.DurationUS) * time.Microsecond
	if !ev.OK {
		r.err = ev.Error
		return
	}
	next, err := d.events.waitFrom(ctx, 0, readyOf(from.Gen+1))
	if err != nil {
		r.err = fmt.Sprintf("Upgrade succeeded but generation %d did not say it is ready: %v", from.Gen+1, err)
		return
	}
	r.to, r.ok = next, true
}

func (d *driver) addUpgrade(r upgradeResult) {
	d.mu.Lock()
	d.upgrades = append(d.upgrades, r)
	d.mu.Unlock()
	if d.tty {
		return // the progress line shows it
	}
	if r.ok {
		fmt.Printf("upgrade %d/%d: gen %d (pid %d) -> gen %d (pid %d), Upgrade took %s\n",
			r.n, d.cfg.upgrades, r.from.Gen, r.from.PID, r.to.Gen, r.to.PID, ms(r.took))
	} else {
		fmt.Printf("upgrade %d/%d: gen %d (pid %d) FAILED: %s\n", r.n, d.cfg.upgrades, r.from.Gen, r.from.PID, r.err)
	}
}

// shutdown stops the newest generation with SIGTERM and waits, until
// deadline at the latest, for every server process to be gone. What is
// left is killed and reported.
func (d *driver) shutdown(deadline time.Time) {
	killGrace := min(5*time.Second, d.cfg.cleanupReserve()/4)
	ctx, cancel := context.WithTimeout(context.Background(),
		min(drainTimeout, time.Until(deadline.Add(-killGrace))))
	defer cancel()

	pid := d.first
	if last, ok := d.events.latestReady(); ok {
		pid = last.PID
	}
	if err := d.reaper.Signal(pid, syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		d.problem("SIGTERM to pid %d: %v", pid, err)
	}
	var left []reap.Process
	if !d.reaper.WaitAllGone(ctx) {
		left = d.reaper.KillLeft(killGrace)
	}

	// Every server holds the output pipe: it ends when the last one exits.
	// It is also the only sign of their exit where the reaper cannot see
	// them all.
	endCtx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	select {
	case <-d.events.done:
	case <-ctx.Done():
		select {
		case <-d.events.done:
		case <-endCtx.Done():
			d.problem("the servers' output did not end: a process still holds it")
		}
	}

	d.mu.Lock()
	d.left = left
	d.mu.Unlock()
}

func (d *driver) problem(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.problems = append(d.problems, fmt.Sprintf(format, args...))
}

// showProgress rewrites one line with the run's progress while the load
// runs, if standard output is a terminal. The returned function stops it
// and clears the line.
func (d *driver) showProgress(start time.Time) (stop func()) {
	if !d.tty {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	width := 0
	show := func(line string) {
		pad := max(0, width-len(line))
		width = len(line)
		fmt.Printf("\r%s%*s", line, pad, "")
	}
	wg.Go(func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			ok, failed := d.load.totals()
			d.mu.Lock()
			upgrades := len(d.upgrades)
			d.mu.Unlock()
			cur, _ := d.events.latestReady()
			show(fmt.Sprintf("%5.1fs  requests %d ok, %d failed  upgrades %d/%d  serving: gen %d (pid %d)",
				time.Since(start).Seconds(), ok, failed, upgrades, d.cfg.upgrades, cur.Gen, cur.PID))
			select {
			case <-tick.C:
			case <-done:
				return
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
		show("")
		fmt.Print("\r")
	}
}

func readyOf(gen uint64) func(event) bool {
	return func(e event) bool { return e.Event == "ready" && e.Gen == gen }
}

// sleepUntil waits until t and reports true, or false if ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
