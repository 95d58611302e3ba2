package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

const (
	// tolerance is how far the serving process's fds and goroutines
	// (connections set apart) may be from the baseline at the end, and how
	// much they may grow, in the median, over a run of failed upgrades.
	// Both counts are exact, so a leak shows as growth with the number of
	// upgrades (every 1,000 upgrades would add 1,000); the tolerance only
	// absorbs what a single sample can catch in passing: a goroutine that
	// is about to end (a waiter, the reader of a channel that just
	// closed), a descriptor opened and closed in the same instant.
	tolerance = 2
	// rssFactor bounds the RSS at the end: at most this factor times the
	// baseline. RSS is noisy: the Go heap grows to twice its live size
	// before a collection (GOGC=100), the runtime returns freed pages to
	// the kernel lazily, and a sample lands anywhere in that cycle. A leak
	// of a few megabytes on a server of about ten still exceeds it.
	rssFactor = 1.5
)

// stat summarises one series.
type stat struct {
	start, end, min, max int64
	argMin, argMax       int // the first index of the minimum and of the maximum
}

// summarize returns the summary of vals, which must not be empty.
func summarize(vals []int64) stat {
	s := stat{start: vals[0], end: vals[len(vals)-1], min: vals[0], max: vals[0]}
	for i, v := range vals {
		if v < s.min {
			s.min, s.argMin = v, i
		}
		if v > s.max {
			s.max, s.argMax = v, i
		}
	}
	return s
}

// pickRows chooses which of n samples to print: about rows of them, evenly
// spaced, plus the first, the last and those in keep.
func pickRows(n, rows int, keep ...int) []int {
	if n == 0 {
		return nil
	}
	every := max(1, (n+rows-1)/rows)
	var out []int
	for i := 0; i < n; i += every {
		out = append(out, i)
	}
	out = append(out, n-1)
	for _, k := range keep {
		if k >= 0 && k < n {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// checkCount compares an exact count at the end with its baseline.
func checkCount(base, end int64) (bool, string) {
	diff := end - base
	ok := diff >= -tolerance && diff <= tolerance
	return ok, fmt.Sprintf("end − baseline = %+d (tolerance ±%d)", diff, tolerance)
}

// checkRSS compares the RSS at the end with its baseline; a negative value
// means it was not measured (no /proc), which passes.
func checkRSS(base, end int64) (bool, string) {
	if base <= 0 || end < 0 {
		return true, "n/a (not measured on this system)"
	}
	ratio := float64(end) / float64(base)
	return ratio <= rssFactor, fmt.Sprintf("end / baseline = %.2f (limit %.1f)", ratio, rssFactor)
}

// checkGrowth judges the growth of a count over runs of failed upgrades,
// by its median: a leak per failed upgrade grows every run, noise only a
// few.
func checkGrowth(growth []int64) (bool, string) {
	if len(growth) == 0 {
		return true, "no runs"
	}
	m := median(growth)
	s := summarize(growth)
	var sum int64
	for _, g := range growth {
		sum += g
	}
	return m >= -tolerance && m <= tolerance,
		fmt.Sprintf("median %+d, min %+d, max %+d, sum %+d over %s (tolerance ±%d for the median)",
			m, s.min, s.max, sum, processes(len(growth)), tolerance)
}

// processes renders "1 process", "2 processes".
func processes(n int) string {
	if n == 1 {
		return "1 process"
	}
	return fmt.Sprintf("%d processes", n)
}

// median returns the middle value of xs (the upper one for an even count).
func median(xs []int64) int64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// formatRSS renders kB as MB, or "n/a".
func formatRSS(kb int64) string {
	if kb < 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f MB", float64(kb)/1024)
}

// withoutNumber drops the descriptor number from an OwnFDs entry
// ("6 unix stream socket" → "unix stream socket"): numbers differ between
// processes that hold the same things.
func withoutNumber(s string) string {
	if _, rest, ok := strings.Cut(s, " "); ok {
		return rest
	}
	return s
}

// withoutState drops the state from an Own entry ("main.main [select]" →
// "main.main"): it changes from one instant to the next.
func withoutState(s string) string {
	if i := strings.LastIndex(s, " ["); i >= 0 {
		return s[:i]
	}
	return s
}

// tally renders a list as its distinct entries with their counts, sorted:
// "pipe ×3, tcp listener".
func tally(xs []string, key func(string) string) string {
	counts := map[string]int{}
	for _, x := range xs {
		counts[key(x)]++
	}
	keys := slices.Sorted(maps.Keys(counts))
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k
		if counts[k] > 1 {
			out[i] += fmt.Sprintf(" ×%d", counts[k])
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

// diff renders what b holds more ("+") and less ("−") than a, by key.
func diff(a, b []string, key func(string) string) string {
	counts := map[string]int{}
	for _, x := range a {
		counts[key(x)]--
	}
	for _, x := range b {
		counts[key(x)]++
	}
	var out []string
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		switch n := counts[k]; {
		case n > 0:
			out = append(out, fmt.Sprintf("+%d %s", n, k))
		case n < 0:
			out = append(out, fmt.Sprintf("−%d %s", -n, k))
		}
	}
	if len(out) == 0 {
		return "nothing"
	}
	return strings.Join(out, ", ")
}
