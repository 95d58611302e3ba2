package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/moltgo/molt/bench/internal/machine"
	"github.com/moltgo/molt/internal/reap"
)

// report renders the results of a run.
type report struct {
	cfg     config
	machine machine.Info
	loads   []*loadResult // one per system, in the order of -systems
	wrk     []wrkResult
	// h2load: the h2load phase's runs; h2loadRan: it was asked for.
	h2load    []h2loadResult
	h2loadRan bool
	took      time.Duration
}

// kindFigures are the numbers of one kind of client.
type kindFigures struct {
	requests, failed, retries int64
	steady, around            *hist
	rateSteady, rateAround    float64 // successful requests per second
	worstRate                 float64 // the lowest rate in the window of a single upgrade
	worstAt                   int     // that upgrade's number
	errs                      []*errText
	otherErrs                 int
}

// figures computes the numbers of kind i.
func (l *loadResult) figures(i int) kindFigures {
	ks := l.rec.kinds[i]
	ks.mu.Lock()
	defer ks.mu.Unlock()
	l.rec.mu.Lock()
	triggers, end := slices.Clone(l.rec.triggers), l.rec.end
	l.rec.mu.Unlock()
	f := kindFigures{
		requests: ks.ok + ks.failed, failed: ks.failed, retries: ks.retries,
		steady: &ks.steady, around: &ks.around, errs: ks.errs, otherErrs: ks.otherErrs,
	}
	aroundT := aroundTime(triggers, l.rec.measure, end)
	steadyT := end - l.rec.measure - aroundT
	if steadyT > 0 {
		f.rateSteady = float64(ks.steady.n) / steadyT.Seconds()
	}
	if aroundT > 0 {
		f.rateAround = float64(ks.around.n) / aroundT.Seconds()
	}
	f.worstRate = math.Inf(1)
	for n, t := range triggers {
		if r := ks.windowRate(t); r < f.worstRate {
			f.worstRate, f.worstAt = r, n+1
		}
	}
	return f
}

// worst describes the upgrade whose window had the lowest rate: its dip
// (short) or its rate and dip.
func (f kindFigures) worst(k *kind, short bool) string {
	switch {
	case k.long:
		return "n/a (requests of ~2 s)"
	case f.worstAt == 0:
		return "n/a"
	case short:
		return fmt.Sprintf("%s (#%d)", dip(f.worstRate, f.rateSteady), f.worstAt)
	}
	return fmt.Sprintf("%.1f, %s (upgrade #%d)", f.worstRate, dip(f.worstRate, f.rateSteady), f.worstAt)
}

// dip is the throughput dip around upgrades; not for long requests,
// whose few starts per second say little about throughput.
func (f kindFigures) dip(k *kind) string {
	if k.long {
		return "n/a (requests of ~2 s)"
	}
	return dip(f.rateAround, f.rateSteady)
}

// dip returns 1 - rate/steady as a percentage.
func dip(rate, steady float64) string {
	if steady == 0 || math.IsInf(rate, 0) {
		return "n/a"
	}
	return fmt.Sprintf("%.1f%%", 100*(1-rate/steady))
}

// passed reports whether the run passed: every system ran every upgrade
// and left nothing behind, and no request to molt failed. Failed requests
// of the other systems are what the comparison measures.
func (r *report) passed() bool {
	if len(r.loads) != len(r.cfg.systems) {
		return false
	}
	for _, l := range r.loads {
		if !l.ran(r.cfg.upgrades) {
			return false
		}
		for i, k := range l.kinds {
			if f := l.figures(i); f.requests == 0 || (f.failed > 0 && l.sys.name == "molt") {
				return false
			}
			// A connection molt refused is a failure too, although the
			// counting client sent no stream on it.
			if k.counting && k.counts.DialErrors() > 0 && l.sys.name == "molt" {
				return false
			}
		}
	}
	for _, w := range r.wrk {
		if !w.ok() {
			return false
		}
	}
	for _, h := range r.h2load {
		if h.sys == "molt" && (h.upgrade.err != "" || !h.counts.ok || len(h.problems)+len(h.end.problems) > 0) {
			return false
		}
	}
	return true
}

// markdown renders the whole report.
func (r *report) markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	verdict := "PASS: no request failed, every upgrade and drain succeeded, nothing was left behind"
	if !r.passed() {
		verdict = "FAIL: see the problems below"
	}
	if len(r.cfg.systems) > 1 {
		verdict = "PASS: no request to molt failed, every upgrade of every system succeeded, nothing was left behind"
		if !r.passed() {
			verdict = "FAIL: see the problems below (failed requests of the other systems alone do not fail the run)"
		}
	}
	p("## drainbench results\n\n")
	p("**%s.**\n\n", verdict)
	p("- command: `%s` (in `bench/`)\n", r.cfg.command)
	p("- machine: %s\n", r.machine)
	var names []string
	for _, s := range r.cfg.systems {
		names = append(names, s.name)
	}
	p("- run: systems %s, one after the other; each: %d upgrades asked, one every %v after %v of warm-up and %v steady; %v steady after; %d clients of each kind (%s), %d streams; whole run %v\n",
		strings.Join(names, ", "), r.cfg.upgrades, r.cfg.interval, warmup, r.cfg.steady, r.cfg.steady, r.cfg.clients, strings.Join(r.cfg.kinds, ", "), r.cfg.streams, r.took.Round(time.Second))
	if len(r.loads) > 1 {
		r.comparison(&b)
	}
	for _, l := range r.loads {
		h := ""
		if len(r.loads) > 1 {
			p("\n### %s\n\n%s.\n", l.sys.name, l.sys.note)
			h = l.sys.name + ": "
		}
		if l.rec != nil {
			p("\n- the load began at %s (the origin of the \"+s\" times below)\n", l.rec.t0.UTC().Format("15:04:05.000000 UTC"))
		}
		for _, s := range l.problems {
			p("- **problem:** %s\n", s)
		}
		if l.rec != nil {
			loadTables(&b, l, h)
			failures(&b, l, h)
			r.upgradeFigures(&b, l, h)
			p("\n#### %sThroughput over time (load phase)\n\nSuccessful requests per second of the short kinds together, by start time, with the upgrades triggered in that second:\n\n```\n%s```\n", h, l.series())
		}
	}
	r.wrkSection(&b)
	r.h2loadSection(&b)
	return b.String()
}

func loadTables(b *strings.Builder, l *loadResult, h string) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("\n#### %sRequests (load phase)\n\n", h)
	p("\"around\" = requests that started within ±%v of an upgrade's trigger; \"steady\" = the others (after the %v warm-up). Latencies of successful requests; rates count successful requests per second of steady or around time; \"worst upgrade\" is the lowest rate in the 1 s window of a single upgrade.\n\n",
		aroundHalf, warmup)
	p("| kind | requests | failed | retries | p50 steady | p50 around | p99 steady | p99 around | req/s steady | req/s around | dip | worst upgrade dip |\n")
	p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for i, k := range l.kinds {
		f := l.figures(i)
		p("| %s | %d | %d | %d | %s | %s | %s | %s | %.0f | %.0f | %s | %s |\n", k.name, f.requests, f.failed, f.retries,
			ms(f.steady.quantile(0.5)), ms(f.around.quantile(0.5)), ms(f.steady.quantile(0.99)), ms(f.around.quantile(0.99)),
			f.rateSteady, f.rateAround, f.dip(k), f.worst(k, true))
	}
	for i, k := range l.kinds {
		f := l.figures(i)
		p("\n##### %s%s\n\n%s; %d concurrent clients.\n\n", h, k.name, k.note, k.workers)
		p("| | steady | around an upgrade |\n|---|---:|---:|\n")
		p("| requests measured (ok) | %d | %d |\n", f.steady.n, f.around.n)
		p("| p50 latency | %s | %s |\n", ms(f.steady.quantile(0.5)), ms(f.around.quantile(0.5)))
		p("| p99 latency | %s | %s |\n", ms(f.steady.quantile(0.99)), ms(f.around.quantile(0.99)))
		p("| max latency | %s | %s |\n", ms(f.steady.max), ms(f.around.max))
		p("| p99 around / p99 steady | | %s |\n", ratio(f.around.quantile(0.99), f.steady.quantile(0.99)))
		p("| requests/s | %.1f | %.1f |\n", f.rateSteady, f.rateAround)
		p("| throughput dip (1 - around/steady) | | %s |\n", f.dip(k))
		p("| worst single upgrade: requests/s, dip | | %s |\n", f.worst(k, false))
		p("| requests in all (warm-up included), failed, transparent retries | %d, %d, %d | |\n", f.requests, f.failed, f.retries)
	}
}

func failures(b *strings.Builder, l *loadResult, h string) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("\n#### %sFailed requests\n\n", h)
	l.rec.mu.Lock()
	triggers := slices.Clone(l.rec.triggers)
	l.rec.mu.Unlock()
	anyFailed := false
	for i, k := range l.kinds {
		f := l.figures(i)
		if f.failed == 0 {
			continue
		}
		anyFailed = true
		p("- **%s**: %d failed\n", k.name, f.failed)
		for _, e := range f.errs {
			p("  - %d × `%s`: first at %s, last at %s; the first on %s\n",
				e.count, e.text, when(e.first, triggers), when(e.last, triggers), e.detail)
		}
		if f.otherErrs > 0 {
			p("  - %d more with other texts\n", f.otherErrs)
		}
	}
	if !anyFailed {
		p("None.\n")
	}
	countingKinds(b, l)
}

// countingKinds renders what the counting HTTP/2 clients saw: every
// stream sent, and how each ended.
func countingKinds(b *strings.Builder, l *loadResult) {
	first := true
	for _, k := range l.kinds {
		if !k.counting {
			continue
		}
		if first {
			fmt.Fprintf(b, "\nThe counting HTTP/2 clients (h2count) account for every stream they sent: answered, failed by cause, or aborted when the load stopped (still open %v after it; not failures). A dial error sent no stream: it is not a failed request.\n\n", h2StopGrace)
			first = false
		}
		fmt.Fprintf(b, "- **%s**: %s\n", k.name, countingSummary(k.counts))
	}
}

// when describes a time of the load by its nearest upgrade.
func when(t time.Duration, triggers []time.Duration) string {
	s := fmt.Sprintf("+%.3f s", t.Seconds())
	best := -1
	for i, tr := range triggers {
		if best < 0 || (t-tr).Abs() < (t-triggers[best]).Abs() {
			best = i
		}
	}
	if best < 0 {
		return s
	}
	d := t - triggers[best]
	rel := "after"
	if d < 0 {
		rel, d = "before", -d
	}
	return fmt.Sprintf("%s (%s %s upgrade #%d)", s, ms(d), rel, best+1)
}

func (r *report) upgradeFigures(b *strings.Builder, l *loadResult, h string) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("\n#### %sUpgrades (load phase)\n\n", h)
	var handoffs, firstAccepts []time.Duration
	var failed []string
	for _, u := range l.upgrades {
		if u.err != "" {
			failed = append(failed, fmt.Sprintf("#%d: %s", u.n, u.err))
			continue
		}
		handoffs = append(handoffs, u.handoff)
		if u.firstAccept > 0 {
			firstAccepts = append(firstAccepts, u.firstAccept)
		}
	}
	p("- upgrades: %d asked, %d ran, %d succeeded\n", r.cfg.upgrades, len(l.upgrades), len(handoffs))
	for _, f := range failed {
		p("  - **failed** %s\n", f)
	}
	p("- hand-off, %s → the new process ready (exec and start-up included): %s\n", l.sys.trigger(), spread(handoffs))
	p("- first accept, %s → the new process accepted its first connection: %s\n", l.sys.trigger(), spread(firstAccepts))
	if line := phaseLine(l.upgrades); line != "" {
		p("- the hand-off phase by phase, p50 / p99 (each from the mark before): %s\n", line)
	}
	p("- the replaced process exited, after the trigger: %s\n", spread(l.oldExits))
	if l.sys.selfUpgrade {
		p("- Upgrade() call in the old generation (start of the successor → its readiness confirmed): %s\n", spread(l.end.calls))
	}
	p("- drain of each generation (told to stop → its drain or Shutdown returned): %s over %d generations\n", spread(l.end.drains), len(l.end.drains))
	p("- processes: %d generations became ready; ", l.end.generations)
	if len(l.end.problems) == 0 {
		p("every one drained, exited cleanly and was reaped; none was left behind")
		if !reap.SeesEveryProcess {
			p(" (only the end of the shared output pipe was checked on this platform)")
		}
		p(".\n")
	} else {
		p("**problems:**\n")
		for _, s := range l.end.problems {
			p("  - %s\n", s)
		}
	}
}

func (r *report) wrkSection(b *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	if !r.cfg.wrk {
		return
	}
	p("\n### wrk (outside client, molt)\n\n")
	if len(r.wrk) == 0 {
		p("wrk is not installed (`apt-get install -y wrk`): not run.\n")
		return
	}
	for _, w := range r.wrk {
		ok := 0
		var handoffs []time.Duration
		for _, u := range w.upgrades {
			if u.err == "" {
				ok++
				handoffs = append(handoffs, u.handoff)
			}
		}
		p("#### %s\n\n`%s`, against a fresh server, %d/%d upgrades succeeded during the run (hand-off %s); wrk %s.\n\n",
			w.mode, w.command, ok, len(w.upgrades), spread(handoffs), w.status)
		p("- socket errors: `%s`\n", w.socketErrors())
		if n := w.non2xx(); n != "" {
			p("- `%s`\n", n)
		} else {
			p("- non-2xx/3xx responses: none (no \"Non-2xx\" line)\n")
		}
		for _, s := range append(slices.Clone(w.problems), w.end.problems...) {
			p("- **problem:** %s\n", s)
		}
		for _, u := range w.upgrades {
			if u.err != "" {
				p("- **upgrade #%d failed:** %s\n", u.n, u.err)
			}
		}
		p("\n```\n%s```\n\n", w.output)
	}
}

// spread renders p50/p99/max of ds.
func spread(ds []time.Duration) string {
	if len(ds) == 0 {
		return "n/a"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	q := func(f float64) time.Duration { return s[min(len(s)-1, int(math.Ceil(f*float64(len(s))))-1)] }
	return fmt.Sprintf("p50 %s, p99 %s, max %s", ms(q(0.5)), ms(q(0.99)), ms(s[len(s)-1]))
}

// ms renders a duration in milliseconds (µs below one).
func ms(d time.Duration) string {
	switch {
	case d == 0:
		return "–"
	case d < time.Millisecond:
		return fmt.Sprintf("%d µs", d.Microseconds())
	case d < 10*time.Second:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func ratio(a, b time.Duration) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", float64(a)/float64(b))
}
