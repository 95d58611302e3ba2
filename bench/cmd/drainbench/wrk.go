package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/moltgo/molt/internal/reap"
)

// wrkResult is one run of wrk against a server that upgrades meanwhile.
type wrkResult struct {
	mode     string // "keep-alive" or "Connection: close"
	command  string
	output   string // wrk's standard output and error
	status   string // how wrk ended
	upgrades []upgradeResult
	end      chainEnd
	problems []string
}

// socketErrors returns wrk's "Socket errors:" line, or a note that it
// printed none (which means no socket error).
func (w wrkResult) socketErrors() string {
	if l := w.line("Socket errors:"); l != "" {
		return l
	}
	return "(no \"Socket errors\" line: 0 socket errors)"
}

// non2xx returns wrk's "Non-2xx or 3xx responses:" line, or "".
func (w wrkResult) non2xx() string { return w.line("Non-2xx") }

func (w wrkResult) line(prefix string) string {
	for l := range strings.Lines(w.output) {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// ok reports whether wrk saw no error and every upgrade succeeded.
func (w wrkResult) ok() bool {
	if w.status != "exit status 0" || w.line("Socket errors:") != "" || w.non2xx() != "" ||
		len(w.problems) > 0 || len(w.end.problems) > 0 || !strings.Contains(w.output, "Requests/sec:") {
		return false
	}
	for _, u := range w.upgrades {
		if u.err != "" {
			return false
		}
	}
	return true
}

// runWrkPhase runs wrk keep-alive and with "Connection: close", each
// against a fresh server chain, if wrk is installed.
func runWrkPhase(ctx context.Context, cfg config, r *reap.Reaper) []wrkResult {
	path, err := exec.LookPath("wrk")
	if err != nil {
		fmt.Println("drainbench: wrk is not installed: skipping the wrk phase")
		return nil
	}
	var out []wrkResult
	for _, mode := range []string{"keep-alive", "Connection: close"} {
		if ctx.Err() != nil {
			break
		}
		fmt.Printf("drainbench: wrk phase (%s): %v, an upgrade every %v\n", mode, cfg.wrkDuration, cfg.interval)
		out = append(out, runWrk(ctx, cfg, r, path, mode))
	}
	return out
}

func runWrk(ctx context.Context, cfg config, r *reap.Reaper, path, mode string) wrkResult {
	res := wrkResult{mode: mode}
	molt := cfg.molt()
	ch, err := startChain(ctx, r, molt, nil) // wrk speaks HTTP/1.1 only
	if err != nil {
		res.problems = append(res.problems, err.Error())
		return res
	}
	defer func() { res.end = ch.stop() }()

	secs := int(cfg.wrkDuration.Round(time.Second) / time.Second)
	args := []string{"-t2", "-c64", "-d" + strconv.Itoa(secs) + "s", "--latency"}
	if mode == "Connection: close" {
		args = append(args, "-H", "Connection: close")
	}
	args = append(args, "http://"+ch.cur.Addr+"/")
	res.command = "wrk " + strings.Join(quoteArgs(args), " ")
	run, err := startOutside(r, path, args)
	if err != nil {
		res.problems = append(res.problems, err.Error())
		return res
	}
	start := time.Now()
	// Upgrades from one interval after the start until one interval
	// before wrk's end.
	for n := 1; ; n++ {
		at := start.Add(time.Duration(n) * cfg.interval)
		if at.After(start.Add(time.Duration(secs)*time.Second - cfg.interval)) {
			break
		}
		if !sleepUntil(ctx, at) {
			break
		}
		u := ch.upgrade(ctx, n, nil)
		res.upgrades = append(res.upgrades, u)
		if u.err != "" {
			fmt.Fprintf(os.Stderr, "drainbench: wrk phase: upgrade %d: %s\n", n, u.err)
		}
	}
	res.status, res.output = run.wait(ctx, time.Duration(secs)*time.Second+15*time.Second)
	return res
}

// quoteArgs quotes the arguments that hold spaces, for a shell.
func quoteArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.Contains(a, " ") {
			a = "'" + a + "'"
		}
		out[i] = a
	}
	return out
}
