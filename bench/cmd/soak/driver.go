package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/moltgo/molt/bench/internal/machine"
	"github.com/moltgo/molt/internal/reap"
)

const (
	// cleanupReserve is the part of -timeout kept for stopping the
	// service after the last upgrade.
	cleanupReserve = stopWait + killGrace + 5*time.Second
	// sampleTimeout bounds one GET /debug/soak.
	sampleTimeout = 5 * time.Second
)

// minTimeout is the shortest -timeout that leaves room for generation 1,
// the baseline, one upgrade, the end sample and the clean-up.
func (c config) minTimeout() time.Duration {
	return firstReadyWait + 2*c.warmup + cleanupReserve + 10*time.Second
}

// point is one sample of the serving process in the series.
type point struct {
	label string // "base", "up N", "fail N.i" or "end"
	at    time.Duration
	s     sample
}

// failRun is one serving process that went through -fail-run failed
// upgrades: its sample before the first and after the last.
type failRun struct {
	before, after sample
}

// driver holds the run's state.
type driver struct {
	cfg     config
	start   time.Time
	svc     *service
	load    *load
	sampler *http.Client
	base    string // the service's URL

	points   []point
	runs     []failRun
	steps    []step
	okUps    int // intended upgrades that succeeded
	okFails  int // intended failures that failed cleanly
	problems []string
}

// runDriver runs the soak and returns the exit status.
func runDriver(cfg config) int {
	d := &driver{cfg: cfg, start: time.Now()}
	mach := machine.Describe() // before the load, for its load average
	r, err := reap.New()
	if err != nil {
		fmt.Fprintf(os.Stderr, "soak: %v\n", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "molt-soak-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "soak: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	// The last resort: whatever hangs, the run ends and leaves nothing.
	watchdog := time.AfterFunc(cfg.timeout, func() {
		fmt.Fprintf(os.Stderr, "soak: -timeout %v reached; killing every process left\n", cfg.timeout)
		for _, p := range r.KillLeft(killGrace) {
			fmt.Fprintf(os.Stderr, "soak: killed %s\n", p)
		}
		os.RemoveAll(dir)
		os.Exit(3)
	})
	defer watchdog.Stop()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fails := "no failed upgrades on purpose"
	if cfg.failEvery > 0 {
		fails = fmt.Sprintf("%d failed upgrades on purpose (%d after every %d)", cfg.failedPlanned(), cfg.failRun, cfg.failEvery)
	}
	fmt.Printf("soak: %d upgrades under load from %d clients; %s; timeout %v\n", cfg.upgrades, cfg.clients, fails, cfg.timeout)
	end := d.run(ctx, r, filepath.Join(dir, "fail-init"))
	rep := &report{d: d, machine: mach, end: end, took: time.Since(d.start)}
	text := rep.markdown()
	fmt.Print("\n" + text)
	if cfg.out != "" {
		if err := os.WriteFile(cfg.out, []byte(text), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "soak: %v\n", err)
			return 1
		}
	}
	if !rep.passed() {
		fmt.Fprintln(os.Stderr, "soak: FAILED (see above)")
		return 1
	}
	return 0
}

// run starts the service and the load, takes the baseline, performs the
// upgrades with their samples, takes the end sample and stops everything.
func (d *driver) run(ctx context.Context, r *reap.Reaper, failFile string) serviceEnd {
	cfg := d.cfg
	svc, err := startService(ctx, r, failFile)
	if err != nil {
		d.problem("%v", err)
		return serviceEnd{}
	}
	d.svc = svc
	d.base = "http://" + svc.cur.Addr
	d.sampler = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: sampleTimeout}
	hardEnd := d.start.Add(cfg.timeout)
	// Upgrades stop being started when only the reserve is left, so that
	// the end sample and the clean-up happen before the watchdog fires.
	softEnd := hardEnd.Add(-cleanupReserve - cfg.warmup - 5*time.Second)
	d.load = startLoad(ctx, d.base, cfg.clients, hardEnd)

	if !sleepCtx(ctx, cfg.warmup) || !d.take(ctx, "base") {
		if ctx.Err() != nil {
			d.problem("interrupted: %v", context.Cause(ctx))
		}
		return d.finish()
	}
	reportEvery := max(1, cfg.upgrades/20)
	for n := 1; n <= cfg.upgrades; n++ {
		if time.Now().After(softEnd) {
			d.problem("-timeout %v: no time left for upgrade %d of %d", cfg.timeout, n, cfg.upgrades)
			break
		}
		if !d.step(ctx, fmt.Sprintf("up %d", n), false) {
			break
		}
		if cfg.failEvery > 0 && n%cfg.failEvery == 0 && !d.failRun(ctx, n) {
			break
		}
		if n%reportEvery == 0 || n == cfg.upgrades {
			p := d.points[len(d.points)-1].s
			fmt.Printf("soak: %d/%d upgrades, %d failed on purpose; gen %d pid %d: fds %d, goroutines %d, RSS %s (%d connections); %v\n",
				n, cfg.upgrades, d.okFails, p.Gen, p.PID, p.ownFDs(), p.ownGoroutines(), formatRSS(p.RSSKB), p.ConnFDs,
				time.Since(d.start).Round(100*time.Millisecond))
		}
	}
	// The end is sampled at the same age and under the same load as the
	// baseline: -warmup after the last process began serving alone.
	d.load.setWhere("end")
	if sleepCtx(ctx, cfg.warmup) {
		d.take(ctx, "end")
	}
	if ctx.Err() != nil {
		d.problem("interrupted: %v", context.Cause(ctx))
	}
	return d.finish()
}

// failRun puts the serving process through -fail-run failed upgrades,
// sampling it after each.
func (d *driver) failRun(ctx context.Context, n int) bool {
	before := d.points[len(d.points)-1].s
	for i := 1; i <= d.cfg.failRun; i++ {
		if !d.step(ctx, fmt.Sprintf("fail %d.%d", n, i), true) {
			return false
		}
	}
	d.runs = append(d.runs, failRun{before: before, after: d.points[len(d.points)-1].s})
	return true
}

// step performs one upgrade and samples the serving process after it. It
// reports false if the soak cannot go on.
func (d *driver) step(ctx context.Context, label string, wantFail bool) bool {
	d.load.setWhere(label)
	st := d.svc.upgrade(ctx, wantFail)
	d.steps = append(d.steps, st)
	if st.problem != "" {
		d.problem("%s: %s", label, st.problem)
		return false
	}
	if wantFail {
		d.okFails++
	} else {
		d.okUps++
	}
	// A measurement setting, not a synchronisation: the predecessor (or
	// the failed successor) is already gone; this lets the goroutines that
	// watched it (molt's channel reader, the waiter) finish, as they would
	// for a process sampled at any later time.
	return sleepCtx(ctx, d.cfg.settle) && d.take(ctx, label)
}

// take samples the serving process and checks that it is the one the
// driver believes serves.
func (d *driver) take(ctx context.Context, label string) bool {
	s, err := d.sample(ctx)
	if err == nil && s.PID != d.svc.cur.PID {
		err = fmt.Errorf("answered by pid %d, but generation %d (pid %d) should serve alone", s.PID, d.svc.cur.Gen, d.svc.cur.PID)
	}
	if err != nil {
		d.problem("%s: sample: %v", label, err)
		return false
	}
	d.points = append(d.points, point{label: label, at: time.Since(d.start), s: s})
	return true
}

// sample asks the serving process for its measurements, on a connection
// of its own.
func (d *driver) sample(ctx context.Context) (sample, error) {
	var s sample
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.base+statsPath, nil)
	if err != nil {
		return s, err
	}
	resp, err := d.sampler.Do(req)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("status %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return s, fmt.Errorf("decode: %w", err)
	}
	return s, nil
}

// finish stops the load (requests in flight complete and count), then the
// service.
func (d *driver) finish() serviceEnd {
	d.load.setWhere("stop")
	d.load.finish()
	return d.svc.stop()
}

func (d *driver) problem(format string, args ...any) {
	p := fmt.Sprintf(format, args...)
	fmt.Fprintf(os.Stderr, "soak: %s\n", p)
	d.problems = append(d.problems, p)
}

// sleepCtx waits for t and reports true, or false if ctx ended first.
func sleepCtx(ctx context.Context, t time.Duration) bool {
	timer := time.NewTimer(t)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}
