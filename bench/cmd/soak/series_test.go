package main

import (
	"slices"
	"strings"
	"testing"
)

func TestSummarize(t *testing.T) {
	got := summarize([]int64{5, 3, 9, 3, 9, 6})
	want := stat{start: 5, end: 6, min: 3, max: 9, argMin: 1, argMax: 2}
	if got != want {
		t.Errorf("summarize = %+v; want %+v", got, want)
	}
}

func TestPickRows(t *testing.T) {
	for _, tc := range []struct {
		n, rows int
		keep    []int
		want    []int
	}{
		{0, 5, nil, nil},
		{1, 5, nil, []int{0}},
		{4, 10, nil, []int{0, 1, 2, 3}},
		{10, 3, nil, []int{0, 4, 8, 9}},
		{10, 3, []int{5, 9, 42, -1}, []int{0, 4, 5, 8, 9}},
	} {
		if got := pickRows(tc.n, tc.rows, tc.keep...); !slices.Equal(got, tc.want) {
			t.Errorf("pickRows(%d, %d, %v) = %v; want %v", tc.n, tc.rows, tc.keep, got, tc.want)
		}
	}
}

func TestCheckCount(t *testing.T) {
	for _, tc := range []struct {
		base, end int64
		ok        bool
	}{
		{10, 10, true},
		{10, 10 + tolerance, true},
		{10, 10 - tolerance, true},
		{10, 11 + tolerance, false},
		{10, 9 - tolerance, false},
		{10, 1010, false}, // one per upgrade
	} {
		if ok, detail := checkCount(tc.base, tc.end); ok != tc.ok {
			t.Errorf("checkCount(%d, %d) = %v (%s); want %v", tc.base, tc.end, ok, detail, tc.ok)
		}
	}
}

func TestCheckRSS(t *testing.T) {
	for _, tc := range []struct {
		base, end int64
		ok        bool
	}{
		{10000, 10000, true},
		{10000, 5000, true},
		{10000, 15000, true}, // exactly the factor
		{10000, 15001, false},
		{-1, -1, true}, // not measured here
	} {
		if ok, detail := checkRSS(tc.base, tc.end); ok != tc.ok {
			t.Errorf("checkRSS(%d, %d) = %v (%s); want %v", tc.base, tc.end, ok, detail, tc.ok)
		}
	}
}

func TestCheckGrowth(t *testing.T) {
	for _, tc := range []struct {
		growth []int64
		ok     bool
	}{
		{nil, true},
		{[]int64{0, 0, 1, -1, 0}, true},
		{[]int64{0, 0, 9, 0, 0}, true},  // one process caught something in passing
		{[]int64{5, 5, 5, 4, 5}, false}, // one per failed upgrade, -fail-run 5
		{[]int64{3, 3, 0, 3}, false},
	} {
		if ok, detail := checkGrowth(tc.growth); ok != tc.ok {
			t.Errorf("checkGrowth(%v) = %v (%s); want %v", tc.growth, ok, detail, tc.ok)
		}
	}
}

func TestDiffAndTally(t *testing.T) {
	base := []string{"0 /dev/null", "1 pipe", "2 pipe", "5 tcp listener"}
	end := []string{"0 /dev/null", "1 pipe", "2 pipe", "6 unix stream socket", "9 tcp listener"}
	if got, want := diff(base, end, withoutNumber), "+1 unix stream socket"; got != want {
		t.Errorf("diff = %q; want %q", got, want)
	}
	if got, want := diff(end, end, withoutNumber), "nothing"; got != want {
		t.Errorf("diff of equal lists = %q; want %q", got, want)
	}
	if got, want := tally(base, withoutNumber), "/dev/null, pipe ×2, tcp listener"; got != want {
		t.Errorf("tally = %q; want %q", got, want)
	}
	own := []string{"main.main [select]", "os/signal.loop [syscall]"}
	later := []string{"main.main [runnable]", "molt.(*successor).wait [syscall]", "os/signal.loop [syscall]"}
	if got := diff(own, later, withoutState); !strings.Contains(got, "+1 molt.(*successor).wait") || strings.Contains(got, "main.main") {
		t.Errorf("diff of goroutines = %q", got)
	}
}
