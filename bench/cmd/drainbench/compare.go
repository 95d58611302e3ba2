package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// systemFigures are the numbers of one system, its short kinds of client
// together.
type systemFigures struct {
	requests, failed     int64
	failedByKind         []int64 // in the order of the kinds
	upgrades             int     // upgrades that succeeded
	handoffs             []time.Duration
	firstAccepts         []time.Duration // trigger → the successor's first accept, where seen
	rateSteady           float64         // successful requests per second
	rateAround           float64
	worstRate            float64 // the lowest rate in the window of a single upgrade
	steady, around       hist    // latencies of successful requests
	p99Steady, p99Around time.Duration
}

// combined sums the figures of l's short kinds (all of them take part in
// every upgrade's window).
func (l *loadResult) combined() systemFigures {
	var f systemFigures
	for _, u := range l.upgrades {
		if u.err == "" {
			f.upgrades++
			f.handoffs = append(f.handoffs, u.handoff)
			if u.firstAccept > 0 {
				f.firstAccepts = append(f.firstAccepts, u.firstAccept)
			}
		}
	}
	for i, k := range l.kinds {
		kf := l.figures(i)
		f.requests += kf.requests
		f.failed += kf.failed
		f.failedByKind = append(f.failedByKind, kf.failed)
		if k.long {
			continue
		}
		f.rateSteady += kf.rateSteady
		f.rateAround += kf.rateAround
		f.steady.merge(kf.steady)
		f.around.merge(kf.around)
	}
	f.p99Steady, f.p99Around = f.steady.quantile(0.99), f.around.quantile(0.99)
	l.rec.mu.Lock()
	triggers := slices.Clone(l.rec.triggers)
	l.rec.mu.Unlock()
	slots := l.okSlots()
	f.worstRate = math.Inf(1)
	for _, t := range triggers {
		f.worstRate = min(f.worstRate, windowRate(slots, t))
	}
	return f
}

// perUpgrade renders n per upgrade.
func perUpgrade(n int64, upgrades int) string {
	if upgrades == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f", float64(n)/float64(upgrades))
}

// comparison renders the table of every system side by side.
func (r *report) comparison(b *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("\n### Side by side\n\n")
	p("The same server (handlers, HTTP settings) and the same load, one system after the other. ")
	p("Failed = requests that got an error or a wrong answer; hand-off = trigger → the new process ready; first accept = trigger → the new process accepted its first connection (when it starts serving; it may come before ready); ")
	p("old process exited = trigger → the replaced process's exit; dip = 1 − (requests/s within ±%v of an upgrade) / (requests/s without upgrades), all kinds together; worst = the same for the single upgrade whose 1 s window had the fewest; p99 = latency of successful requests.\n\n", aroundHalf)
	var kindNames []string
	for _, k := range r.loads[0].kinds {
		kindNames = append(kindNames, k.name)
	}
	p("| system | requests | failed | failed per upgrade | failed by kind (%s) | hand-off p50 | hand-off p99 | first accept p50 | first accept p99 | old process exited p50 | dip | worst upgrade dip | p99 steady | p99 around | p99 around/steady |\n",
		strings.Join(kindNames, " / "))
	p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	figs := map[string]systemFigures{}
	for _, l := range r.loads {
		if l.rec == nil {
			p("| %s | did not run | | | | | | | | | | | | | |\n", l.sys.name)
			continue
		}
		f := l.combined()
		figs[l.sys.name] = f
		var byKind []string
		for _, n := range f.failedByKind {
			byKind = append(byKind, fmt.Sprint(n))
		}
		p("| %s | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			l.sys.name, f.requests, f.failed, perUpgrade(f.failed, f.upgrades), strings.Join(byKind, " / "),
			ms(quantile(f.handoffs, 0.5)), ms(quantile(f.handoffs, 0.99)),
			ms(quantile(f.firstAccepts, 0.5)), ms(quantile(f.firstAccepts, 0.99)), ms(quantile(l.oldExits, 0.5)),
			dip(f.rateAround, f.rateSteady), dip(f.worstRate, f.rateSteady),
			ms(f.p99Steady), ms(f.p99Around), ratio(f.p99Around, f.p99Steady))
	}
	r.countingCauses(b)
	m, ok := figs["molt"]
	if !ok {
		return
	}
	p("\n")
	for _, l := range r.loads {
		o, ok := figs[l.sys.name]
		if !ok || l.sys.name == "molt" {
			continue
		}
		p("- molt vs %s: %d vs %d failed requests; hand-off p50 %s vs %s (molt/%s = %s), p99 %s vs %s; first accept p50 %s vs %s\n",
			l.sys.name, m.failed, o.failed, ms(quantile(m.handoffs, 0.5)), ms(quantile(o.handoffs, 0.5)),
			l.sys.name, ratio(quantile(m.handoffs, 0.5), quantile(o.handoffs, 0.5)),
			ms(quantile(m.handoffs, 0.99)), ms(quantile(o.handoffs, 0.99)),
			ms(quantile(m.firstAccepts, 0.5)), ms(quantile(o.firstAccepts, 0.5)))
	}
	if r.cfg.chart != "" {
		p("\n![successful requests per 100 ms, every system](%s)\n", r.cfg.chart)
	}
}

// quantile returns the q-quantile of ds (0 if empty).
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, max(0, int(math.Ceil(q*float64(len(s))))-1))]
}

// countingCauses renders the failures of the counting HTTP/2 clients of
// every system by cause, and their dial errors.
func (r *report) countingCauses(b *strings.Builder) {
	var lines []string
	for _, l := range r.loads {
		if l.rec == nil {
			continue
		}
		var parts []string
		for _, k := range l.kinds {
			if k.counting {
				parts = append(parts, fmt.Sprintf("%s: %d of %d streams failed (%s), %d aborted at the stop, %d dial errors",
					k.id, k.counts.Failed(), k.counts.Sent, k.counts.Causes(), k.counts.Aborted(), k.counts.DialErrors()))
			}
		}
		if len(parts) > 0 {
			lines = append(lines, fmt.Sprintf("- %s: %s\n", l.sys.name, strings.Join(parts, "; ")))
		}
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(b, "\nHTTP/2 streams of the counting clients (h2count, which never resends a stream), failures by cause:\n\n%s", strings.Join(lines, ""))
}
