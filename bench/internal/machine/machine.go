// Package machine describes the machine a benchmark ran on, for its
// report.
package machine

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

// Info describes where the benchmark ran.
type Info struct {
	cpus     int
	cpuModel string
	kernel   string
	goVer    string
	loadAvg  string // at the start: other processes may have been running
	date     string
}

// Describe describes this machine now: its CPUs, Go, the kernel and the
// load average.
func Describe() Info {
	m := Info{
		cpus:    runtime.NumCPU(),
		goVer:   runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
		kernel:  readTrimmed("/proc/sys/kernel/osrelease"),
		loadAvg: readTrimmed("/proc/loadavg"),
		date:    time.Now().UTC().Format("2006-01-02 15:04 UTC"),
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpuModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// String is one line for a report: "2 CPUs (nproc), <model>, go1.26 linux/amd64, ...".
func (m Info) String() string {
	s := fmt.Sprintf("%d CPUs (nproc)", m.cpus)
	if m.cpuModel != "" {
		s += ", " + m.cpuModel
	}
	s += ", " + m.goVer
	if m.kernel != "" {
		s += ", Linux " + m.kernel
	}
	if m.loadAvg != "" {
		s += ", load average at the start " + strings.Join(strings.Fields(m.loadAvg)[:3], " ")
	}
	return s + ", " + m.date
}

func readTrimmed(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
