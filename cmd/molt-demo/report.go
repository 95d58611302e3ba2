package main

import (
	"cmp"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/moltgo/molt/internal/reap"
)

// maxPIDsShown is how many serving PIDs the report lists.
const maxPIDsShown = 12

// report prints the results and returns the exit status: 0 only if every
// request and every upgrade succeeded, every generation exited cleanly,
// nothing was left behind and nothing else went wrong.
func (d *driver) report(w io.Writer) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	pass := len(d.problems) == 0
	row := func(label, format string, args ...any) {
		fmt.Fprintf(w, "  %-18s %s\n", label, fmt.Sprintf(format, args...))
	}

	fmt.Fprintf(w, "molt demo: %s under load for %s (%d keep-alive + %d new-connection clients)\n",
		plural(d.cfg.upgrades, "upgrade", "upgrades"), d.loadTook.Round(100*time.Millisecond), d.cfg.clients, d.cfg.clients)

	// Requests.
	fmt.Fprintf(w, "  %-18s %10s %10s %8s\n", "client kind", "requests", "ok", "failed")
	var kinds []*kindStats
	if d.load != nil {
		kinds = d.load.kinds
	}
	total := int64(0)
	for _, k := range kinds {
		ok, failed := k.ok.Load(), k.failed.Load()
		total += ok + failed
		fmt.Fprintf(w, "  %-18s %10d %10d %8d\n", k.name, ok+failed, ok, failed)
		pass = pass && failed == 0
	}
	if total == 0 {
		pass = false
	}

	// Upgrades.
	var took []time.Duration
	for _, u := range d.upgrades {
		if u.ok {
			took = append(took, u.took)
		}
	}
	row("upgrades done", "%d/%d", len(took), d.cfg.upgrades)
	pass = pass && len(took) == d.cfg.upgrades
	if len(took) > 0 {
		slices.Sort(took)
		row("Upgrade() time", "p50 %s   max %s", ms(took[(len(took)-1)/2]), ms(took[len(took)-1]))
	}

	// Generations.
	gens := d.events.all("ready")
	slices.SortFunc(gens, func(a, b event) int { return cmp.Compare(a.Gen, b.Gen) })
	row("served by PIDs", "%s", d.servedBy(kinds, gens))
	unclean := d.uncleanExits(gens)
	row("generations", "%d started, %d exited cleanly", len(gens), len(gens)-len(unclean))
	pass = pass && len(unclean) == 0
	var leftPIDs []int
	for _, p := range d.left {
		leftPIDs = append(leftPIDs, p.PID)
	}
	if reap.SeesEveryProcess || len(d.left) > 0 {
		row("left behind", "%s%s", plural(len(d.left), "process", "processes"), pidList(leftPIDs, " (killed: ", ")"))
		pass = pass && len(d.left) == 0
	} else {
		row("left behind", "not checked on %s (needs Linux's child subreaper)", runtime.GOOS)
	}

	// Details of what went wrong.
	for _, k := range kinds {
		if n := k.abandoned.Load(); n > 0 {
			fmt.Fprintf(w, "  %s: %d requests in flight when the run was cut short, not counted\n", k.name, n)
		}
		k.mu.Lock()
		for _, msg := range k.errs {
			fmt.Fprintf(w, "  %s error (%dx): %s\n", k.name, k.errN[msg], msg)
		}
		k.mu.Unlock()
	}
	for _, u := range d.upgrades {
		if !u.ok {
			fmt.Fprintf(w, "  upgrade %d of gen %d (pid %d) failed: %s\n", u.n, u.from.Gen, u.from.PID, u.err)
		}
	}
	for _, s := range unclean {
		fmt.Fprintf(w, "  %s\n", s)
	}
	for _, p := range d.left {
		fmt.Fprintf(w, "  left behind and killed: %v\n", p)
	}
	if status, ok := d.reaper.Status(d.first); ok && len(gens) == 0 {
		fmt.Fprintf(w, "  gen 1 (pid %d) ended with %s\n", d.first, status)
	}
	for _, p := range d.problems {
		fmt.Fprintf(w, "  problem: %s\n", p)
	}

	if pass {
		fmt.Fprintln(w, "PASS")
		return 0
	}
	fmt.Fprintln(w, "FAIL")
	return 1
}

// servedBy lists the PIDs that answered requests, oldest generation first.
func (d *driver) servedBy(kinds []*kindStats, gens []event) string {
	order := map[int]uint64{}
	for _, g := range gens {
		order[g.PID] = g.Gen
	}
	var pids []int
	for _, k := range kinds {
		k.mu.Lock()
		for pid := range k.served {
			if !slices.Contains(pids, pid) {
				pids = append(pids, pid)
			}
		}
		k.mu.Unlock()
	}
	slices.SortFunc(pids, func(a, b int) int {
		ga, oka := order[a]
		gb, okb := order[b]
		if oka != okb { // PIDs of no known generation last
			if oka {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(ga, gb), cmp.Compare(a, b))
	})
	return strconv.Itoa(len(pids)) + pidList(pids, " (", ")")
}

// uncleanExits describes every generation that did not exit as it should:
// after printing its exit event, with a drain that finished, for the
// expected reason (upgraded, or the final SIGTERM for the newest), and
// with status 0 where the driver reaped it.
func (d *driver) uncleanExits(gens []event) []string {
	exits := map[int]event{}
	for _, e := range d.events.all("exit") {
		exits[e.PID] = e
	}
	var out []string
	for i, g := range gens {
		want := "upgraded"
		if i == len(gens)-1 {
			want = "signal: terminated"
		}
		status, reaped := d.reaper.Status(g.PID)
		e, exited := exits[g.PID]
		switch {
		case !exited && reaped:
			out = append(out, fmt.Sprintf("gen %d (pid %d) ended without an exit event: %s", g.Gen, g.PID, status))
		case !exited:
			out = append(out, fmt.Sprintf("gen %d (pid %d) printed no exit event", g.Gen, g.PID))
		case e.DrainError != "":
			out = append(out, fmt.Sprintf("gen %d (pid %d) did not finish its drain: %s", g.Gen, g.PID, e.DrainError))
		case e.Reason != want:
			out = append(out, fmt.Sprintf("gen %d (pid %d) exited for %q, want %q", g.Gen, g.PID, e.Reason, want))
		case reaped && status != "exit status 0":
			out = append(out, fmt.Sprintf("gen %d (pid %d) ended with %s", g.Gen, g.PID, status))
		}
	}
	return out
}

// pidList formats pids between prefix and suffix, or "" for none.
func pidList(pids []int, prefix, suffix string) string {
	if len(pids) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString(prefix)
	for i, pid := range pids {
		if i == maxPIDsShown {
			b.WriteString(" ...")
			break
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.Itoa(pid))
	}
	b.WriteString(suffix)
	return b.String()
}

// plural formats n with the singular or plural noun.
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// ms formats d in milliseconds with one decimal.
func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + "ms"
}
