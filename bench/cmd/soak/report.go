package main

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/moltgo/molt/bench/internal/machine"
	"github.com/moltgo/molt/internal/reap"
)

// report renders the results of a run and judges them.
type report struct {
	d       *driver
	machine machine.Info
	end     serviceEnd
	took    time.Duration
	checks  []check // filled by markdown
}

// check is one assertion of the run.
type check struct {
	what   string
	ok     bool
	detail string
}

func (r *report) add(what string, ok bool, detail string) {
	r.checks = append(r.checks, check{what, ok, detail})
}

// passed reports whether every check passed; markdown must have run.
func (r *report) passed() bool {
	if len(r.checks) == 0 {
		return false
	}
	for _, c := range r.checks {
		if !c.ok {
			return false
		}
	}
	return true
}

// markdown renders the report and runs the checks.
func (r *report) markdown() string {
	d, cfg := r.d, r.d.cfg
	var b strings.Builder
	fmt.Fprintf(&b, "# molt soak: %d upgrades under load\n\n", cfg.upgrades)
	fmt.Fprintf(&b, "- command: `%s`\n", cfg.command)
	fmt.Fprintf(&b, "- machine: %s\n", r.machine)
	fmt.Fprintf(&b, "- took: %v\n", r.took.Round(100*time.Millisecond))
	r.upgrades(&b)
	r.requests(&b)
	r.processes(&b)
	if len(d.points) > 0 {
		r.series(&b)
		r.failRuns(&b)
	} else {
		r.add("samples", false, "none taken")
	}
	if len(d.problems) > 0 {
		fmt.Fprintf(&b, "\n## Problems\n\n")
		for _, p := range d.problems {
			fmt.Fprintf(&b, "- %s\n", p)
		}
	}
	r.add("the run itself", len(d.problems) == 0, fmt.Sprintf("%d problems", len(d.problems)))

	fmt.Fprintf(&b, "\n## Checks\n\n")
	for _, c := range r.checks {
		mark := "ok"
		if !c.ok {
			mark = "FAILED"
		}
		fmt.Fprintf(&b, "- %s: %s: %s\n", mark, c.what, c.detail)
	}
	verdict := "PASSED"
	if !r.passed() {
		verdict = "FAILED"
	}
	fmt.Fprintf(&b, "\n**%s**\n", verdict)
	return b.String()
}

// upgrades reports the upgrades and their times.
func (r *report) upgrades(b *strings.Builder) {
	d, cfg := r.d, r.d.cfg
	var handoffs, cycles, failCycles []time.Duration
	for _, st := range d.steps {
		switch {
		case st.problem != "":
		case st.wantFail:
			failCycles = append(failCycles, st.cycle)
		default:
			handoffs = append(handoffs, st.handoff)
			cycles = append(cycles, st.cycle)
		}
	}
	fmt.Fprintf(b, "- upgrades: %d of %d succeeded; hand-off (SIGHUP → successor ready) %s; whole upgrade (SIGHUP → old generation drained, exited 0 and reaped) %s\n",
		d.okUps, cfg.upgrades, quantiles(handoffs), quantiles(cycles))
	fmt.Fprintf(b, "- failed on purpose: %d of %d failed cleanly (successor exited 1 during init, was reaped, the old process served on); SIGHUP → failure reported %s\n",
		d.okFails, cfg.failedPlanned(), quantiles(failCycles))
	fmt.Fprintf(b, "- drains (old generation: Exit closed → drained): %s\n", quantiles(r.end.drains))
	// The servers' own reports must agree with what the driver saw.
	r.add("intended upgrades", d.okUps == cfg.upgrades && r.end.okUpgrades == d.okUps,
		fmt.Sprintf("%d of %d succeeded; %d reported successful by the old generations", d.okUps, cfg.upgrades, r.end.okUpgrades))
	r.add("intended failures", d.okFails == cfg.failedPlanned() && r.end.initFailed == d.okFails,
		fmt.Sprintf("%d of %d failed cleanly; %d successors reported failing on purpose", d.okFails, cfg.failedPlanned(), r.end.initFailed))
}

// requests reports the load.
func (r *report) requests(b *strings.Builder) {
	l := r.d.load
	if l == nil {
		r.add("requests", false, "no load ran")
		return
	}
	ok, failed := l.totals()
	fmt.Fprintf(b, "- requests: %d ok, %d failed\n", ok, failed)
	for _, k := range l.kinds {
		fmt.Fprintf(b, "  - %s (%d clients): %d ok, %d failed\n", k.name, k.workers, k.ok.Load(), k.failed.Load())
		k.mu.Lock()
		for _, e := range k.errs {
			fmt.Fprintf(b, "    - %d× (first at %s): %s\n", e.count, e.first, e.text)
		}
		k.mu.Unlock()
	}
	r.add("failed requests", failed == 0 && ok > 0, fmt.Sprintf("%d failed, %d ok", failed, ok))
}

// processes reports what became of the processes.
func (r *report) processes(b *strings.Builder) {
	e := r.end
	left := "nothing left behind"
	switch {
	case !reap.SeesEveryProcess:
		left = "left-behind check limited to the driver's own children on this system"
	case slices.ContainsFunc(e.problems, func(p string) bool { return strings.HasPrefix(p, leftBehind) }):
		left = "processes left behind (killed)"
	}
	fmt.Fprintf(b, "- processes: %d generations served, %d upgrades reported successful, %d successors failed on purpose; %s\n",
		e.generations, e.okUpgrades, e.initFailed, left)
	for _, p := range e.problems {
		fmt.Fprintf(b, "  - %s\n", p)
	}
	detail := "every generation drained and exited 0, and nothing was left behind"
	if len(e.problems) > 0 {
		detail = fmt.Sprintf("%d problems at the stop (above)", len(e.problems))
	}
	r.add("processes", len(e.problems) == 0 && e.generations > 0, detail)
}

// series prints the three series and checks the end against the baseline.
func (r *report) series(b *strings.Builder) {
	d, cfg := r.d, r.d.cfg
	pts := d.points
	fds := make([]int64, len(pts))
	gos := make([]int64, len(pts))
	rss := make([]int64, len(pts))
	for i, p := range pts {
		fds[i], gos[i], rss[i] = int64(p.s.ownFDs()), int64(p.s.ownGoroutines()), p.s.RSSKB
	}
	sf, sg, sr := summarize(fds), summarize(gos), summarize(rss)

	fmt.Fprintf(b, "\n## The serving process: fds, goroutines, RSS\n\n")
	fmt.Fprintf(b, "%d samples of the process serving at the time (GET %s), each after the old generation or the failed successor was gone and %v of settling; `base` is generation 1 and `end` the last generation, each after %v of load. fds and goroutines leave out the client connections and the goroutines serving them (their count is the conns column; totals in parentheses).\n\n",
		len(pts), statsPath, cfg.settle, cfg.warmup)
	fmt.Fprintf(b, "| sample | t | gen | pid | conns | fds (all) | goroutines (all) | RSS | |\n")
	fmt.Fprintf(b, "|---|---:|---:|---:|---:|---:|---:|---:|---|\n")
	notes := map[int][]string{}
	for _, m := range []struct {
		name string
		st   stat
	}{{"fds", sf}, {"goroutines", sg}, {"RSS", sr}} {
		if m.st.min == m.st.max {
			continue // constant: every row would qualify
		}
		notes[m.st.argMin] = append(notes[m.st.argMin], "min "+m.name)
		notes[m.st.argMax] = append(notes[m.st.argMax], "max "+m.name)
	}
	for _, i := range pickRows(len(pts), cfg.rows, sf.argMin, sf.argMax, sg.argMin, sg.argMax, sr.argMin, sr.argMax) {
		p := pts[i]
		fmt.Fprintf(b, "| %s | %.1fs | %d | %d | %d | %d (%d) | %d (%d) | %s | %s |\n",
			p.label, p.at.Seconds(), p.s.Gen, p.s.PID, p.s.ConnFDs, p.s.ownFDs(), p.s.FDs,
			p.s.ownGoroutines(), p.s.Goroutines, formatRSS(p.s.RSSKB), strings.Join(notes[i], ", "))
	}
	fmt.Fprintf(b, "\n")
	fmt.Fprintf(b, "- fds (without connections): start %d, end %d, min %d, max %d\n", sf.start, sf.end, sf.min, sf.max)
	fmt.Fprintf(b, "- goroutines (without connection-serving ones): start %d, end %d, min %d, max %d\n", sg.start, sg.end, sg.min, sg.max)
	fmt.Fprintf(b, "- RSS: start %s, end %s, min %s, max %s\n", formatRSS(sr.start), formatRSS(sr.end), formatRSS(sr.min), formatRSS(sr.max))

	first, last := pts[0], pts[len(pts)-1]
	if first.label != "base" || last.label != "end" {
		r.add("end versus baseline", false, "the baseline or the end sample is missing")
		return
	}
	fmt.Fprintf(b, "\nWhat the process holds for itself:\n\n")
	fmt.Fprintf(b, "- baseline (generation %d): fds: %s; goroutines: %s\n",
		first.s.Gen, tally(first.s.OwnFDs, withoutNumber), tally(first.s.Own, withoutState))
	fmt.Fprintf(b, "- end (generation %d) compared with the baseline: fds: %s; goroutines: %s\n",
		last.s.Gen, diff(first.s.OwnFDs, last.s.OwnFDs, withoutNumber), diff(first.s.Own, last.s.Own, withoutState))
	// The extremes in between, if any, say what a sample can catch.
	if i := sf.argMax; i != 0 && i != len(pts)-1 && sf.max != sf.end {
		fmt.Fprintf(b, "- most fds, %s (generation %d), compared with the baseline: %s\n",
			pts[i].label, pts[i].s.Gen, diff(first.s.OwnFDs, pts[i].s.OwnFDs, withoutNumber))
	}
	if i := sg.argMax; i != 0 && i != len(pts)-1 && sg.max != sg.end {
		fmt.Fprintf(b, "- most goroutines, %s (generation %d), compared with the baseline: %s\n",
			pts[i].label, pts[i].s.Gen, diff(first.s.Own, pts[i].s.Own, withoutState))
	}
	ok, detail := checkCount(sf.start, sf.end)
	r.add("fds at the end", ok, detail)
	ok, detail = checkCount(sg.start, sg.end)
	r.add("goroutines at the end", ok, detail)
	ok, detail = checkRSS(sr.start, sr.end)
	r.add("RSS at the end", ok, detail)
}

// failRuns reports the processes that went through failed upgrades.
func (r *report) failRuns(b *strings.Builder) {
	d, cfg := r.d, r.d.cfg
	if len(d.runs) == 0 {
		return
	}
	var fds, gos, rss []int64
	for _, run := range d.runs {
		fds = append(fds, int64(run.after.ownFDs()-run.before.ownFDs()))
		gos = append(gos, int64(run.after.ownGoroutines()-run.before.ownGoroutines()))
		if run.before.RSSKB >= 0 && run.after.RSSKB >= 0 {
			rss = append(rss, run.after.RSSKB-run.before.RSSKB)
		}
	}
	fmt.Fprintf(b, "\n## The same process through failed upgrades\n\n")
	fmt.Fprintf(b, "%s went through %d failed upgrades each (%d in all); growth from the sample before the first to the sample after the last:\n\n",
		processes(len(d.runs)), cfg.failRun, len(d.runs)*cfg.failRun)
	okF, detailF := checkGrowth(fds)
	okG, detailG := checkGrowth(gos)
	fmt.Fprintf(b, "- fds: %s\n", detailF)
	fmt.Fprintf(b, "- goroutines: %s\n", detailG)
	if len(rss) > 0 {
		s := summarize(rss)
		fmt.Fprintf(b, "- RSS (not judged: a run starts right after the process began serving, while its RSS still grows under the load; compare the `up` samples with `base`): median %+d kB, min %+d kB, max %+d kB\n",
			median(rss), s.min, s.max)
	}
	r.add("fds over failed upgrades", okF, detailF)
	r.add("goroutines over failed upgrades", okG, detailG)
}

// quantiles renders p50 and max of ds.
func quantiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "n/a"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return fmt.Sprintf("p50 %v, p90 %v, max %v", round(s[len(s)/2]), round(s[len(s)*9/10]), round(s[len(s)-1]))
}

func round(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(10 * time.Millisecond)
}
