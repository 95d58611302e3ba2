package main

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/moltgo/molt/internal/reap"
)

// The h2load phase runs h2load (Debian's nghttp2-client), an HTTP/2 load
// generator not written here, against each system: a fresh server per
// run, one upgrade in the middle of it. One upgrade per run, because
// h2load does not reconnect after a GOAWAY: once every connection has
// one, the run measures nothing more.
//
// h2load's "failed" and "errored" counts are not lost requests: they also
// count the requests it did not start itself once a GOAWAY arrived (up to
// -m per connection), so even a server that answers every stream it got
// shows some. Side by side, in one run and with the same flags, they
// still compare the systems; the figure that counts lost streams is the
// h2raw/h2tls kinds' (and nghttpcheck's).
const (
	h2loadDuration  = 3 * time.Second
	h2loadUpgradeAt = time.Second
	h2loadOverhead  = 20 * time.Second // a server to start and stop, h2load to end
)

// h2loadArgs are h2load's flags, without the URL: 8 connections, 10
// streams each, for h2loadDuration.
var h2loadArgs = []string{"-c8", "-m10", "-D", strconv.Itoa(int(h2loadDuration / time.Second))}

// h2loadResult is one h2load run.
type h2loadResult struct {
	sys      string
	command  string
	output   string
	status   string // how h2load ended
	upgrade  upgradeResult
	counts   h2loadCounts
	end      chainEnd
	problems []string
}

// h2loadCounts is h2load's "requests:" line.
type h2loadCounts struct {
	total, started, done, succeeded, failed, errored, timeout int64
	ok                                                        bool // the line was there
}

var h2loadRequests = regexp.MustCompile(`requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)

func parseH2load(out string) h2loadCounts {
	m := h2loadRequests.FindStringSubmatch(out)
	if m == nil {
		return h2loadCounts{}
	}
	n := make([]int64, 7)
	for i := range n {
		n[i], _ = strconv.ParseInt(m[i+1], 10, 64)
	}
	return h2loadCounts{n[0], n[1], n[2], n[3], n[4], n[5], n[6], true}
}

// h2loadBudget is the time the h2load phase may take.
func (c config) h2loadBudget() time.Duration {
	return time.Duration(c.h2loadRuns*len(c.systems)) * (h2loadDuration + h2loadOverhead)
}

// runH2loadPhase runs h2load cfg.h2loadRuns times against each system, if
// h2load is installed.
func runH2loadPhase(ctx context.Context, cfg config, r *reap.Reaper) ([]h2loadResult, bool) {
	if cfg.h2loadRuns == 0 {
		return nil, false
	}
	path, err := exec.LookPath("h2load")
	if err != nil {
		fmt.Println("drainbench: h2load is not installed: skipping the h2load phase")
		return nil, true
	}
	var out []h2loadResult
	for _, sys := range cfg.systems {
		for i := 0; i < cfg.h2loadRuns && ctx.Err() == nil; i++ {
			fmt.Printf("drainbench: h2load phase (%s), run %d of %d\n", sys.name, i+1, cfg.h2loadRuns)
			out = append(out, runH2load(ctx, r, path, sys))
		}
	}
	return out, true
}

func runH2load(ctx context.Context, r *reap.Reaper, path string, sys system) h2loadResult {
	res := h2loadResult{sys: sys.name}
	ch, err := startChain(ctx, r, sys, nil) // h2c: h2load's http:// is HTTP/2 with prior knowledge
	if err != nil {
		res.problems = append(res.problems, err.Error())
		return res
	}
	defer func() { res.end = ch.stop() }()
	args := append(slices.Clone(h2loadArgs), "http://"+ch.cur.Addr+"/")
	res.command = "h2load " + strings.Join(args, " ")
	run, err := startOutside(r, path, args)
	if err != nil {
		res.problems = append(res.problems, err.Error())
		return res
	}
	if sleepUntil(ctx, time.Now().Add(h2loadUpgradeAt)) {
		res.upgrade = ch.upgrade(ctx, 1, nil)
	}
	res.status, res.output = run.wait(ctx, h2loadDuration+15*time.Second)
	res.counts = parseH2load(res.output)
	return res
}

// h2loadSection renders the h2load runs: per system, each run's counts.
func (r *report) h2loadSection(b *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	if !r.h2loadRan {
		return
	}
	p("\n### h2load (outside HTTP/2 client, every system)\n\n")
	if len(r.h2load) == 0 {
		p("h2load is not installed (`apt-get install -y nghttp2-client`): not run.\n")
		return
	}
	p("`h2load %s URL` against a fresh server per run, one upgrade %v into it (h2load does not reconnect after a GOAWAY). ", strings.Join(h2loadArgs, " "), h2loadUpgradeAt)
	p("**Its failed/errored counts are not lost requests**: they include the requests h2load did not start itself once a GOAWAY arrived; compare them side by side only. Lost streams are counted by the h2raw/h2tls kinds.\n\n")
	p("| system | run | total | started | done | succeeded | failed | errored | timeout | upgrade |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	run := map[string]int{}
	for _, h := range r.h2load {
		run[h.sys]++
		up := "ok, hand-off " + ms(h.upgrade.handoff)
		if h.upgrade.err != "" {
			up = "**failed:** " + h.upgrade.err
		}
		c := h.counts
		if !c.ok {
			p("| %s | %d | no \"requests:\" line (h2load %s) | | | | | | | %s |\n", h.sys, run[h.sys], h.status, up)
		} else {
			p("| %s | %d | %d | %d | %d | %d | %d | %d | %d | %s |\n", h.sys, run[h.sys],
				c.total, c.started, c.done, c.succeeded, c.failed, c.errored, c.timeout, up)
		}
		for _, s := range append(slices.Clone(h.problems), h.end.problems...) {
			p("\n- **problem (%s run %d):** %s\n", h.sys, run[h.sys], s)
		}
	}
}
