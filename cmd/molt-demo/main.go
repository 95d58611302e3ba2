// Command molt-demo shows molt replacing a running HTTP server's process
// again and again, under load, without failing a request.
//
// By default molt-demo is the driver. It starts its own executable again
// with the hidden -serve flag as generation 1 of a small HTTP server whose
// every response names the process and generation that served it ("pid 123
// gen 4"). It then sends requests from two kinds of clients — keep-alive
// clients, which reuse their connections, and new-connection clients, which
// open one per request — and meanwhile asks the serving generation to
// upgrade itself (SIGHUP) at evenly spaced times. On each upgrade the server
// starts the same executable again; the new process inherits the listening
// socket from molt and says it is ready, and the old one drains its
// connections (molt/drain) and exits.
//
// At the end the driver stops the load, sends SIGTERM to the last
// generation and checks that every server process has exited. On Linux the
// driver is a child subreaper: each generation whose parent exits is
// re-parented to the driver, which reaps them all, and any process still
// alive 30 seconds after SIGTERM is reported as left behind and killed.
// The driver prints a report and exits with status 0 only if every request
// succeeded, every upgrade succeeded, every generation exited cleanly and
// nothing was left behind; otherwise with status 1.
//
// Usage:
//
//	go run ./cmd/molt-demo [flags]
//
// The flags are:
//
//	-upgrades N   number of upgrades, spread evenly over the load (default 10)
//	-clients N    number of clients of each kind (default 8)
//	-duration D   how long the load runs (default 10s)
//	-timeout D    hard bound on the whole run, clean-up included (default 2m)
//	-addr A       TCP address the server listens on (default 127.0.0.1:0: the
//	              port the kernel chooses is kept across upgrades)
//
// The server role (-serve) prints one JSON object per line on standard
// output for each event — "ready" (pid, gen, addr), "upgrade" (ok, error,
// duration_us, pid) and "exit" (pid, reason) — and the driver reads them
// from a pipe that every generation shares. The server upgrades on SIGHUP
// and drains and stops on SIGTERM or SIGINT.
//
// molt needs Unix descriptor passing: on Windows molt-demo only says so. On
// systems other than Linux it runs without the subreaper: it reaps only
// generation 1, the process it started itself, and learns that the others
// are gone when their shared output pipe ends; of the processes left
// behind it can report only generation 1. Package internal/reap does the
// reaping, for the benchmarks in bench/ too.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"time"
)

// config is the driver's command line.
type config struct {
	upgrades int
	clients  int
	duration time.Duration
	timeout  time.Duration
	addr     string
}

func main() {
	var (
		cfg   config
		serve bool
	)
	flag.IntVar(&cfg.upgrades, "upgrades", 10, "number of upgrades, spread evenly over the load")
	flag.IntVar(&cfg.clients, "clients", 8, "number of clients of each kind (keep-alive, new-connection)")
	flag.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long the load runs")
	flag.DurationVar(&cfg.timeout, "timeout", 2*time.Minute, "hard bound on the whole run, clean-up included")
	flag.StringVar(&cfg.addr, "addr", "127.0.0.1:0", "TCP address the server listens on")
	flag.BoolVar(&serve, "serve", false, "internal: play one server generation")
	flag.Usage = usage
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "molt-demo: unexpected arguments: %q\n", flag.Args())
		usage()
		os.Exit(2)
	}

	if runtime.GOOS == "windows" {
		fmt.Fprintln(os.Stderr, "molt-demo: molt is not supported on Windows (it passes sockets between processes with Unix descriptor passing)")
		os.Exit(1)
	}
	if serve {
		os.Exit(runServer(cfg.addr))
	}
	if err := cfg.check(); err != nil {
		fmt.Fprintf(os.Stderr, "molt-demo: %v\n", err)
		os.Exit(2)
	}
	os.Exit(runDriver(cfg))
}

// usage prints the flags, except the internal -serve.
func usage() {
	out := flag.CommandLine.Output()
	fmt.Fprintln(out, "usage: molt-demo [flags]")
	fmt.Fprintln(out, "Upgrades an HTTP server's process again and again under load and reports every failed request.")
	flag.VisitAll(func(f *flag.Flag) {
		if f.Name == "serve" {
			return
		}
		fmt.Fprintf(out, "  -%s %s\n    \t%s (default %s)\n", f.Name, valueName(f), f.Usage, f.DefValue)
	})
}

func valueName(f *flag.Flag) string {
	name, _ := flag.UnquoteUsage(f)
	return name
}

func (c config) check() error {
	switch {
	case c.upgrades < 0:
		return fmt.Errorf("-upgrades %d: must not be negative", c.upgrades)
	case c.clients < 1:
		return fmt.Errorf("-clients %d: need at least one client of each kind", c.clients)
	case c.duration <= 0:
		return fmt.Errorf("-duration %v: must be positive", c.duration)
	case c.duration >= c.runBudget():
		return fmt.Errorf("-timeout %v leaves %v for the load and the upgrades (the rest is kept for the clean-up); it must exceed -duration %v",
			c.timeout, c.runBudget(), c.duration)
	}
	return nil
}

// cleanupReserve is the part of -timeout kept for stopping the servers
// and checking that they are gone.
func (c config) cleanupReserve() time.Duration {
	return min(c.timeout/4, 35*time.Second)
}

// runBudget is the part of -timeout for the load and the upgrades.
func (c config) runBudget() time.Duration { return c.timeout - c.cleanupReserve() }
