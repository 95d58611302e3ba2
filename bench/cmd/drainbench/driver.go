package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moltgo/molt/bench/internal/machine"
	"github.com/moltgo/molt/internal/reap"
)

const (
	// warmup: requests that start in the load's first second are counted
	// (a failure is a failure) but not measured.
	warmup = time.Second
	// cleanupReserve is the part of -timeout kept for stopping the last
	// chain after the load phase.
	cleanupReserve = stopWait + killGrace + 5*time.Second
	// wrkOverhead is the time a wrk run takes beyond its duration: a
	// server chain to start and to stop.
	wrkOverhead = firstReadyWait/2 + stopWait
)

// loadResult is what the load phase of one system measured.
type loadResult struct {
	sys      system
	kinds    []*kind
	rec      *recorder
	upgrades []upgradeResult
	end      chainEnd
	oldExits []time.Duration // per successful upgrade: trigger → the replaced generation exited
	problems []string        // the phase itself went wrong
}

// runDriver runs the benchmark and returns the exit status.
func runDriver(cfg config) int {
	start := time.Now()
	mach := machine.Describe() // before the load, for its load average
	r, err := reap.New()
	if err != nil {
		fmt.Fprintf(os.Stderr, "drainbench: %v\n", err)
		return 1
	}
	// The last resort: whatever hangs, the run ends and leaves nothing.
	watchdog := time.AfterFunc(cfg.timeout, func() {
		fmt.Fprintf(os.Stderr, "drainbench: -timeout %v reached; killing every process left\n", cfg.timeout)
		for _, p := range r.KillLeft(killGrace) {
			fmt.Fprintf(os.Stderr, "drainbench: killed %s\n", p)
		}
		os.Exit(3)
	})
	defer watchdog.Stop()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	st, err := newServerTLS()
	if err != nil {
		fmt.Fprintf(os.Stderr, "drainbench: the servers' certificate: %v\n", err)
		return 1
	}
	defer st.close()
	rep := report{cfg: cfg, machine: mach}
	for _, sys := range cfg.systems {
		if ctx.Err() != nil {
			break
		}
		fmt.Printf("drainbench: load phase (%s): %d upgrades every %v, %d clients of each kind (%s), %d streams (about %v)\n",
			sys.name, cfg.upgrades, cfg.interval, cfg.clients, strings.Join(cfg.kinds, ", "), cfg.streams, cfg.plannedLoad().Round(time.Second))
		rep.loads = append(rep.loads, runLoad(ctx, cfg, r, sys, st))
	}
	if cfg.wrk && ctx.Err() == nil {
		rep.wrk = runWrkPhase(ctx, cfg, r)
	}
	if ctx.Err() == nil {
		rep.h2load, rep.h2loadRan = runH2loadPhase(ctx, cfg, r)
	}
	rep.took = time.Since(start)
	if cfg.chart != "" {
		if err := rep.chart(cfg.chart); err != nil {
			fmt.Fprintf(os.Stderr, "drainbench: chart: %v\n", err)
			return 1
		}
	}
	text := rep.markdown()
	fmt.Print("\n" + text)
	if cfg.out != "" {
		if err := os.WriteFile(cfg.out, []byte(text), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "drainbench: %v\n", err)
			return 1
		}
	}
	if !rep.passed() {
		fmt.Fprintln(os.Stderr, "drainbench: FAILED (see above)")
		return 1
	}
	return 0
}

// runLoad runs the load phase of one system: a chain under load from
// every kind of client, -steady without upgrades, the upgrades, -steady
// again.
func runLoad(ctx context.Context, cfg config, r *reap.Reaper, sys system, st *serverTLS) *loadResult {
	lr := &loadResult{sys: sys, kinds: clientKinds(cfg.clients, cfg.streams, cfg.kinds, st.client)}
	ch, err := startChain(ctx, r, sys, st.env)
	if err != nil {
		lr.problems = append(lr.problems, err.Error())
		return lr
	}
	// Every system keeps its addresses across upgrades: inherited, or
	// fixed by the driver.
	srv := serverAddrs{plain: ch.cur.Addr, tls: ch.cur.TLSAddr}

	t0 := time.Now()
	hardEnd := t0.Add(cfg.duration)
	lr.rec = newRecorder(t0, warmup, len(lr.kinds))
	stopLoad := make(chan struct{})
	var clients sync.WaitGroup
	for i, k := range lr.kinds {
		// ctx, not a context that stopLoad ends: a request in flight at
		// the end finishes and counts.
		k.run(ctx, &clients, stopLoad, hardEnd, srv, lr.rec, i)
	}
	classified := make(chan struct{})
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				lr.rec.classify(false)
			case <-classified:
				return
			}
		}
	}()

	first := t0.Add(warmup + cfg.steady)
	for n := 1; n <= cfg.upgrades; n++ {
		at := first.Add(time.Duration(n-1) * cfg.interval)
		if late := time.Until(at); late < 0 && time.Now().Add(cfg.steady).After(hardEnd) {
			lr.problems = append(lr.problems, fmt.Sprintf("-duration %v reached: only %d of %d upgrades ran (the upgrades fell %v behind schedule)",
				cfg.duration, n-1, cfg.upgrades, -late.Round(time.Millisecond)))
			break
		}
		if !sleepUntil(ctx, at) {
			break
		}
		res := ch.upgrade(ctx, n, func() { lr.rec.trigger() })
		lr.upgrades = append(lr.upgrades, res)
		if res.err != "" {
			fmt.Fprintf(os.Stderr, "drainbench: upgrade %d: %s\n", n, res.err)
			if ctx.Err() != nil {
				break
			}
		}
		if n%10 == 0 || n == cfg.upgrades {
			fmt.Printf("drainbench: %s: %d/%d upgrades, serving: generation %d (pid %d)\n", sys.name, n, cfg.upgrades, ch.cur.Gen, ch.cur.PID)
		}
	}
	end := time.Now().Add(cfg.steady)
	if end.After(hardEnd) {
		end = hardEnd
	}
	if !sleepUntil(ctx, end) {
		lr.problems = append(lr.problems, fmt.Sprintf("stopped early: %v", context.Cause(ctx)))
	}
	close(stopLoad)
	lr.rec.stop()
	clients.Wait()
	close(classified)
	lr.rec.finish()
	for _, k := range lr.kinds {
		if k.client != nil {
			k.client.CloseIdleConnections()
		}
	}
	lr.end = ch.stop()
	lr.oldExits = ch.oldExits(lr.upgrades)
	return lr
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

// ran reports whether the load phase ran as planned: every upgrade
// succeeded, no problem, nothing left behind.
func (l *loadResult) ran(upgrades int) bool {
	if len(l.problems) > 0 || l.rec == nil || len(l.end.problems) > 0 || len(l.upgrades) != upgrades {
		return false
	}
	for _, u := range l.upgrades {
		if u.err != "" {
			return false
		}
	}
	return true
}
