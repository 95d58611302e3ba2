//go:build linux

package handoff

import (
	"flag"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	listenerCounts = flag.String("handoff.listeners", "1,10,100,1000,10000",
		"comma-separated listener counts of BenchmarkHandoff")
	cpuProfileDir = flag.String("handoff.cpuprofile", "",
		"directory for CPU profiles of each generation's part of every hand-off")
)

// BenchmarkHandoff measures upgrades of a process holding N listeners, per
// system and N; see the package documentation for what is timed.
func BenchmarkHandoff(b *testing.B) {
	counts, err := parseCounts(*listenerCounts)
	if err != nil {
		b.Fatal(err)
	}
	profileDir := ""
	if *cpuProfileDir != "" {
		if profileDir, err = filepath.Abs(*cpuProfileDir); err != nil {
			b.Fatal(err)
		}
	}
	for _, system := range systemNames {
		b.Run(system, func(b *testing.B) {
			for _, n := range counts {
				b.Run(fmt.Sprintf("listeners=%d", n), func(b *testing.B) {
					benchHandoff(b, system, n, profileDir)
				})
			}
		})
	}
}

func benchHandoff(b *testing.B, system string, n int, profileDir string) {
	c := startChain(b, system, n, profileDir)
	var handoff, successor time.Duration
	sums := newPhaseSums()
	upgrades := 0
	for b.Loop() {
		res := c.upgrade(b.StopTimer, b.StartTimer)
		handoff += res.handoff
		successor += res.successor
		sums.add(res.marks)
		upgrades++
	}
	b.ReportMetric(float64(handoff.Nanoseconds())/float64(upgrades), "handoff-ns/op")
	b.ReportMetric(float64(successor.Nanoseconds())/float64(upgrades), "successor-ns/op")
	sums.report(b.ReportMetric)
}

func parseCounts(s string) ([]int, error) {
	var counts []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-handoff.listeners: %q is not a positive number", f)
		}
		counts = append(counts, n)
	}
	return counts, nil
}

// TestHandoff upgrades a chain of each system twice at 10 listeners (the
// second time from a generation whose parent has exited, which tableflip
// requires) and checks that the successor serves the same sockets.
func TestHandoff(t *testing.T) {
	const n = 10
	for _, system := range systemNames {
		t.Run(system, func(t *testing.T) {
			c := startChain(t, system, n, "")
			for range 2 {
				res := c.upgrade(func() {}, func() {})
				if res.successor <= 0 || res.handoff <= res.successor || res.observed <= 0 {
					t.Errorf("upgrade times %+v, want positive ones", res)
				}
				t.Logf("pid %d serves after a hand-off of %v (%v of it in its TestMain; %v seen by the driver)",
					c.servingPID, res.handoff, res.successor, res.observed)
				// The old generation has exited: only the new one holds
				// the ports now, and they accept (into the backlog).
				for _, addr := range []string{c.serving.first, c.serving.last} {
					conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
					if err != nil {
						t.Fatalf("after the upgrade to pid %d: %v", c.servingPID, err)
					}
					conn.Close()
				}
			}
		})
	}
}
