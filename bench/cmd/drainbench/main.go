// Command drainbench measures what clients see while a molt service
// replaces its process again and again under saturating load.
//
// One binary plays two roles. As the server (environment variable
// DRAINBENCH_ROLE=server, set by the driver only) it is a molt service:
// an HTTP/1.1 and h2c server on a loopback port inherited across upgrades,
// and an HTTP/2 and HTTP/1.1 server over TLS on a second one (with the
// self-signed certificate whose PEM files the driver names in
// DRAINBENCH_TLS_CERT and DRAINBENCH_TLS_KEY), drained with molt/drain,
// which upgrades itself on SIGHUP, stops on SIGTERM and prints one JSON
// line per event on standard output. Its handlers are
// GET / (a tiny body), POST /echo (replies with the length of the body it
// read) and GET /stream (about 2 s: a chunk every 100 ms); anything else is
// answered 400 with the method and path the server read, which shows a
// request parsed from the wrong place in the byte stream.
//
// As the driver (the default) it starts generation 1, puts it under load
// from seven kinds of clients at once, and sends the serving generation
// SIGHUP at a fixed interval:
//
//	keep-alive GET     -clients goroutines sharing one keep-alive Transport
//	keep-alive POST    -clients goroutines, 1 KB body that cannot be rewound,
//	                   so Go's Transport never retries a request
//	Connection: close  -clients goroutines, a new connection per request
//	HTTP/2 (h2c) POST  -clients goroutines multiplexed on h2c connections
//	                   by Go's Transport (which resends refused streams)
//	h2raw              -clients concurrent streams of GET / from our own
//	                   HTTP/2 client (bench/internal/h2count), h2c: it never
//	                   resends a stream and counts every one it sent, with
//	                   the cause of each failure (a stream above a GOAWAY's
//	                   last stream id, a reset, a non-2xx status, a closed
//	                   connection, a timeout); a failed dial is counted
//	                   apart, as no stream was lost on it
//	h2tls              the same over TLS, on the server's second listener
//	streaming          -streams goroutines, back-to-back 2 s responses whose
//	                   whole body is checked
//
// The load runs -steady without upgrades, then the upgrades, then -steady
// again. A request counts as "around" an upgrade if it started within
// ±500 ms of a SIGHUP, as "steady" otherwise. For every kind the driver
// reports requests, failures (with their first distinct error texts and
// when they happened), transparent retries of Go's Transport, p50/p99/max
// latency steady and around, requests per second steady and around and the
// dip between them (1 - around/steady; also for the worst single upgrade).
// For the upgrades it reports the hand-off time (SIGHUP sent → the new
// generation's Ready returned) and every generation's drain duration.
//
// Latencies go into log-linear histograms (1 µs resolution below 256 µs,
// then 128 buckets per power of two: at most 0.8% relative error, about
// 35 KB per histogram), and request counts into 10 ms time slots; no
// per-request record is kept longer than the 0.7 s needed to classify it.
//
// With -systems, the same server and the same load are run against other
// ways of replacing a process, one after the other: tableflip v1.2.3 as in
// its net/http example (SIGHUP → Upgrade; the old process waits for Exit,
// then calls server.Shutdown), a naive restart (SIGTERM, graceful
// Shutdown, exit, then a new process binds the port) and an SO_REUSEPORT
// overlap (the new process binds the port too, and once it is ready the old
// one gets SIGTERM). The report then starts with a table of every system
// side by side: requests, failures (total, per upgrade, per kind),
// hand-off p50/p99, time until the replaced process exited, throughput dip
// and p99 latency around upgrades against steady state. -chart draws the
// successful requests per 100 ms of every system over time, with the
// upgrades marked (PNG or SVG, with gonum/plot). -compare stands for the
// side-by-side run of every system (about four minutes), with the
// HTTP/1.1 kinds and the two counting HTTP/2 kinds. Every system serves
// the TLS listener too: tableflip through a second upg.Listen ("tcp4", so
// that its name differs from the first's), the naive and SO_REUSEPORT
// servers on a second fixed address. Only a failed request to molt (or a
// connection molt refused to a counting client) fails the run; the
// others' failures are what is measured.
//
// With -wrk and wrk(1) installed, it then runs wrk against a fresh molt
// server, keep-alive and with "Connection: close", while upgrading it every
// -interval, and reports wrk's "Socket errors" and "Non-2xx" lines.
//
// With -takeover, molt is upgraded by takeovers instead of SIGHUP, in
// every phase: the driver starts each new process, which takes over
// through the serving generation's takeover socket (Options.TakeoverSocket
// and TakeoverFrom), and the old generation drains and exits by itself.
//
// On Linux the driver is a child subreaper: every generation ends up as
// its child when its parent exits, and is reaped by it. At the end the
// driver stops the last generation with SIGTERM, waits for every process to
// be gone, and kills and reports any process left behind. It exits with
// status 0 only if no request to molt failed, every upgrade and drain
// succeeded and nothing was left behind; results are printed and, with
// -out, written as Markdown.
//
// Usage:
//
//	go run ./cmd/drainbench [-upgrades 100] [-clients 64] [-streams 10] \
//	    [-interval 500ms] [-steady 5s] [-duration 3m] [-timeout 6m] \
//	    [-wrk] [-wrk-duration 10s] [-h2load 0] [-takeover] [-out results.md]
//	go run ./cmd/drainbench -compare [-chart compare.svg] [-out compare.md]
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// envRole selects the server role; the driver sets it for generation 1,
// and molt passes the environment on to every successor.
const envRole = "DRAINBENCH_ROLE"

// config is the driver's command line.
type config struct {
	systems     []system
	kinds       []string
	upgrades    int
	clients     int
	streams     int
	interval    time.Duration
	steady      time.Duration
	duration    time.Duration
	timeout     time.Duration
	wrk         bool
	takeover    bool // molt is upgraded by takeovers (system.byTakeover)
	wrkDuration time.Duration
	h2loadRuns  int // h2load runs per system; 0: no h2load phase
	out         string
	chart       string
	command     string // the command line, for the report
}

// comparePreset are the flag values -compare stands for, unless set
// explicitly: every system, the three HTTP/1.1 kinds every server speaks
// the same way and the two counting HTTP/2 kinds (which never resend a
// stream), 50 upgrades a second apart (about 4 minutes in all).
var comparePreset = [][2]string{
	{"systems", "molt,tableflip,naive,reuseport"},
	{"kinds", "get,post,close,h2raw,h2tls"},
	{"streams", "0"},
	{"upgrades", "50"},
	{"interval", "1s"},
	{"steady", "4s"},
	{"duration", "90s"},
	{"timeout", "10m"},
	{"wrk", "false"},
}

func main() {
	if os.Getenv(envRole) == "server" {
		os.Exit(runServer())
	}
	var cfg config
	var systemList, kindList string
	var compare bool
	flag.BoolVar(&compare, "compare", false, "compare every system: stands for "+presetText()+" (flags given explicitly win)")
	flag.StringVar(&systemList, "systems", "molt", "the systems to measure one after the other, separated by commas: "+systemNames())
	flag.StringVar(&kindList, "kinds", strings.Join(kindIDs, ","), "the kinds of clients, separated by commas: get (keep-alive GET), post (keep-alive POST, no retry), close (Connection: close), h2 (h2c POST, Go's client), h2raw (h2c GET, counting client that never resends), h2tls (HTTP/2 over TLS GET, counting client), stream (~2 s streaming GET)")
	flag.StringVar(&cfg.chart, "chart", "", "draw successful requests per 100 ms of every system, with the upgrades, into this PNG or SVG file")
	flag.IntVar(&cfg.upgrades, "upgrades", 100, "number of upgrades")
	flag.IntVar(&cfg.clients, "clients", 64, "concurrent clients of each kind (keep-alive GET, keep-alive POST, Connection: close, HTTP/2; for the counting HTTP/2 kinds: concurrent streams, over up to 8 connections)")
	flag.IntVar(&cfg.streams, "streams", 10, "concurrent clients of long (~2 s) streaming responses")
	flag.DurationVar(&cfg.interval, "interval", 500*time.Millisecond, "time between two upgrades")
	flag.DurationVar(&cfg.steady, "steady", 5*time.Second, "load without upgrades before the first and after the last upgrade")
	flag.DurationVar(&cfg.duration, "duration", 3*time.Minute, "bound on the load phase; upgrades that do not fit are not run (and reported)")
	flag.DurationVar(&cfg.timeout, "timeout", 6*time.Minute, "hard bound on the whole run, wrk phase and clean-up included")
	flag.BoolVar(&cfg.wrk, "wrk", true, "also run wrk(1) against a fresh server while it upgrades, if wrk is installed")
	flag.DurationVar(&cfg.wrkDuration, "wrk-duration", 10*time.Second, "length of each wrk run")
	flag.IntVar(&cfg.h2loadRuns, "h2load", 0, "also run h2load (nghttp2-client) this many times against each system, one upgrade per run, if h2load is installed")
	flag.BoolVar(&cfg.takeover, "takeover", false, "upgrade molt by takeovers: the driver starts each new process, which takes over through the serving one's takeover socket, instead of sending SIGHUP")
	flag.StringVar(&cfg.out, "out", "", "write the results as Markdown to this file")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "drainbench: unexpected arguments %q\n", flag.Args())
		flag.Usage()
		os.Exit(2)
	}
	if compare {
		applyPreset()
	}
	var err error
	if cfg.systems, err = parseSystems(systemList); err == nil {
		cfg.kinds, err = parseKinds(kindList)
	}
	for i, s := range cfg.systems {
		if s.name == "molt" {
			cfg.systems[i] = cfg.molt() // by takeovers with -takeover
		}
	}
	if err == nil {
		err = cfg.check()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "drainbench: %v\n", err)
		os.Exit(2)
	}
	if runtime.GOOS == "windows" {
		fmt.Fprintln(os.Stderr, "drainbench: molt needs Unix descriptor passing; Windows is not supported")
		os.Exit(1)
	}
	cfg.command = commandLine()
	os.Exit(runDriver(cfg))
}

func (c config) check() error {
	switch {
	case c.upgrades < 0:
		return fmt.Errorf("-upgrades %d: must not be negative", c.upgrades)
	case c.clients < 1 || c.clients > 4096:
		return fmt.Errorf("-clients %d: must be between 1 and 4096", c.clients)
	case c.streams < 0 || c.streams > 4096:
		return fmt.Errorf("-streams %d: must be between 0 and 4096", c.streams)
	case c.interval < 10*time.Millisecond:
		return fmt.Errorf("-interval %v: must be at least 10ms", c.interval)
	case c.steady < time.Second:
		return fmt.Errorf("-steady %v: must be at least 1s", c.steady)
	case c.h2loadRuns < 0 || c.h2loadRuns > 100:
		return fmt.Errorf("-h2load %d: must be between 0 and 100", c.h2loadRuns)
	case c.wrkDuration < time.Second:
		return fmt.Errorf("-wrk-duration %v: must be at least 1s", c.wrkDuration)
	case c.duration < c.plannedLoad():
		return fmt.Errorf("-duration %v is shorter than the planned load (%v: warm-up, 2 × -steady, -upgrades × -interval)",
			c.duration, c.plannedLoad())
	case c.timeout < c.budget():
		return fmt.Errorf("-timeout %v must be at least (-duration + %v for the clean-up) per system + %v for the wrk phase + %v for the h2load phase (%v)",
			c.timeout, cleanupReserve, c.wrkBudget(), c.h2loadBudget(), c.budget())
	case c.chart != "" && !strings.HasSuffix(c.chart, ".png") && !strings.HasSuffix(c.chart, ".svg"):
		return fmt.Errorf("-chart %q: the name must end in .png or .svg", c.chart)
	}
	return nil
}

// plannedLoad is how long the load phase takes when every upgrade keeps to
// the schedule.
func (c config) plannedLoad() time.Duration {
	return warmup + 2*c.steady + time.Duration(c.upgrades)*c.interval
}

// budget is the longest the whole run may take by its bounds.
func (c config) budget() time.Duration {
	return time.Duration(len(c.systems))*(c.duration+cleanupReserve) + c.wrkBudget() + c.h2loadBudget()
}

// wrkBudget is the time the wrk phase may take: two runs, each with a
// server to start and stop.
func (c config) wrkBudget() time.Duration {
	if !c.wrk || !slices.ContainsFunc(c.systems, func(s system) bool { return s.name == "molt" }) {
		return 0
	}
	return 2 * (c.wrkDuration + wrkOverhead)
}

// commandLine renders how the driver was started, for the report.
func commandLine() string {
	s := "go run ./cmd/drainbench"
	for _, a := range os.Args[1:] {
		s += " " + a
	}
	return s
}

// applyPreset sets the flags of comparePreset that were not given.
func applyPreset() {
	given := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, kv := range comparePreset {
		if !given[kv[0]] {
			if err := flag.Set(kv[0], kv[1]); err != nil {
				panic(err) // the preset's values parse
			}
		}
	}
}

func presetText() string {
	var parts []string
	for _, kv := range comparePreset {
		parts = append(parts, "-"+kv[0]+" "+kv[1])
	}
	return strings.Join(parts, " ")
}

// parseKinds parses the -kinds flag.
func parseKinds(list string) ([]string, error) {
	var out []string
	for _, id := range strings.Split(list, ",") {
		id = strings.TrimSpace(id)
		switch {
		case !slices.Contains(kindIDs, id):
			return nil, fmt.Errorf("-kinds: unknown kind %q (known: %s)", id, strings.Join(kindIDs, ", "))
		case slices.Contains(out, id):
			return nil, fmt.Errorf("-kinds: %q named twice", id)
		}
		out = append(out, id)
	}
	return out, nil
}
