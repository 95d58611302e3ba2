package main

import (
	"fmt"
	"strings"
	"time"
)

// seriesStep is the resolution of the throughput-over-time section.
const seriesStep = time.Second

// series renders, for every second of the load, the successful requests
// per second of the short kinds together, and the SIGHUPs sent in it: a
// dip, or noise from other processes, shows at a glance.
func (l *loadResult) series() string {
	l.rec.mu.Lock()
	triggers, end := l.rec.triggers, l.rec.end
	l.rec.mu.Unlock()
	perStep := int(seriesStep / slotWidth)
	steps := int((end + seriesStep - 1) / seriesStep)
	counts := make([]int, steps)
	for j, n := range l.okSlots() {
		if j/perStep < steps {
			counts[j/perStep] += n
		}
	}
	sighups := make([]int, steps)
	for _, t := range triggers {
		if i := int(t / seriesStep); i < steps {
			sighups[i]++
		}
	}
	trig := "SIGHUP"
	if !l.sys.selfUpgrade {
		trig = "upgrade"
	}
	var b strings.Builder
	for i, n := range counts {
		width := seriesStep
		if rest := end - time.Duration(i)*seriesStep; rest < width {
			width = rest // the last, partial second
		}
		phase := ""
		switch {
		case time.Duration(i+1)*seriesStep <= l.rec.measure:
			phase = "  warm-up"
		case sighups[i] > 0:
			phase = fmt.Sprintf("  %d %s", sighups[i], trig)
		}
		fmt.Fprintf(&b, "%4ds %8.0f req/s%s\n", i, float64(n)/width.Seconds(), phase)
	}
	return b.String()
}

// okSlots returns the successful requests of the short kinds together
// per slotWidth of the load, by start time.
func (l *loadResult) okSlots() []int {
	var out []int
	for i, k := range l.kinds {
		if k.long {
			continue
		}
		ks := l.rec.kinds[i]
		ks.mu.Lock()
		for len(out) < len(ks.slots) {
			out = append(out, 0)
		}
		for j, s := range ks.slots {
			out[j] += int(s.ok)
		}
		ks.mu.Unlock()
	}
	return out
}

// windowRate returns the requests per second in slots that started within
// aroundHalf of t.
func windowRate(slots []int, t time.Duration) float64 {
	lo := max(int((t-aroundHalf)/slotWidth), 0)
	hi := min(int((t+aroundHalf)/slotWidth), len(slots))
	if hi <= lo {
		return 0
	}
	n := 0
	for _, c := range slots[lo:hi] {
		n += c
	}
	return float64(n) / (time.Duration(hi-lo) * slotWidth).Seconds()
}
